#pragma once
/// @file
/// cereal support for ember's state types: host_tensor, state_dict (any ordered_dict),
/// generator_state and optimizer_state. One `save`/`load` pair per type serves every cereal
/// archive — binary, portable binary, JSON, XML — and users' own cereal types can hold these
/// as members. Every type carries an explicit cereal version from the first release.
///
/// Loading from a binary archive never allocates more than the input can hold: ember's file
/// loaders set a byte budget (detail::load_budget) to the payload size, and every length read
/// from the archive is checked against what remains before anything is allocated. (cereal's own
/// string and vector loaders trust the length they read; ember's types do not use them.)

#include "ember/core/error.hpp"
#include "ember/core/generator.hpp"
#include "ember/core/host_tensor.hpp"
#include "ember/core/ordered_dict.hpp"
#include "ember/core/state_dict.hpp"
#include "ember/optim/optimizer_state.hpp"

#include <cereal/cereal.hpp>
#include <cereal/types/array.hpp>
#include <cereal/types/string.hpp>

#include <concepts>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

namespace ember
{

namespace detail
{

/// Bytes a binary load may still allocate on this thread; unlimited unless a loader set it.
inline std::size_t& load_budget() noexcept
{
    thread_local std::size_t remaining = std::numeric_limits<std::size_t>::max();
    return remaining;
}

/// Sets the load budget for its lifetime (ember's file loaders use it around a cereal load).
class scoped_load_budget
{
public:
    explicit scoped_load_budget(std::size_t bytes) noexcept : m_previous(load_budget())
    {
        load_budget() = bytes;
    }
    ~scoped_load_budget() { load_budget() = m_previous; }
    scoped_load_budget(const scoped_load_budget&) = delete;
    scoped_load_budget& operator=(const scoped_load_budget&) = delete;

private:
    std::size_t m_previous;
};

/// Throws format_error unless `count` elements of `element_size` bytes fit in the budget, and
/// takes them from it. Every such element must be read from the input, so the sum of all
/// allocations can never exceed the input's size.
inline void reserve_from_budget(std::uint64_t count, std::size_t element_size,
                                std::string_view what)
{
    std::size_t& budget = load_budget();
    if (element_size != 0 && count > budget / element_size)
        throw format_error(std::string(what) + " declares " + std::to_string(count) +
                           " elements of " + std::to_string(element_size) +
                           " bytes, more than the " + std::to_string(budget) +
                           " bytes left in the input");
    if (budget != std::numeric_limits<std::size_t>::max())
        budget -= static_cast<std::size_t>(count) * element_size;
}

template <class Archive>
inline constexpr bool is_text_archive_v = cereal::traits::is_text_archive<Archive>::value;

/// Runs `body` inside a named node of a text archive (JSON object member, XML element); binary
/// archives have no nodes, so there it just runs `body`.
template <class Archive, class F>
void in_node(Archive& ar, const char* name, F&& body)
{
    if constexpr (is_text_archive_v<Archive>)
    {
        if (name)
            ar.setNextName(name);
        ar.startNode();
        body();
        ar.finishNode();
    }
    else
        body();
}

template <class Archive>
void save_string(Archive& ar, const char* name, const std::string& s)
{
    if constexpr (is_text_archive_v<Archive>)
        ar(cereal::make_nvp(name, s));
    else
    {
        ar(cereal::make_size_tag(static_cast<cereal::size_type>(s.size())));
        ar(cereal::binary_data(s.data(), s.size()));
    }
}

template <class Archive>
void load_string(Archive& ar, const char* name, std::string& s, std::string_view what)
{
    if constexpr (is_text_archive_v<Archive>)
        ar(cereal::make_nvp(name, s));
    else
    {
        cereal::size_type n = 0;
        ar(cereal::make_size_tag(n));
        reserve_from_budget(n, 1, what);
        s.resize(static_cast<std::size_t>(n));
        ar(cereal::binary_data(s.data(), s.size()));
    }
}

template <class Archive, class T>
void save_vector(Archive& ar, const std::vector<T>& v)
{
    ar(cereal::make_size_tag(static_cast<cereal::size_type>(v.size())));
    if constexpr (is_text_archive_v<Archive>)
        for (const auto& x : v)
            ar(x);
    else
        ar(cereal::binary_data(v.data(), v.size() * sizeof(T)));
}

template <class Archive, class T>
void load_vector(Archive& ar, std::vector<T>& v, std::string_view what)
{
    cereal::size_type n = 0;
    ar(cereal::make_size_tag(n));
    reserve_from_budget(n, sizeof(T), what);
    v.resize(static_cast<std::size_t>(n));
    if constexpr (is_text_archive_v<Archive>)
        for (auto& x : v)
            ar(x);
    else
        ar(cereal::binary_data(v.data(), v.size() * sizeof(T)));
}

inline dtype parse_dtype(std::string_view name)
{
    for (auto d : {dtype::float32, dtype::float64, dtype::int64, dtype::int32, dtype::int16,
                   dtype::int8, dtype::uint8, dtype::boolean, dtype::float16, dtype::bfloat16})
        if (dtype_name(d) == name)
            return d;
    throw format_error("unknown dtype '" + std::string(name) + "'");
}

// Tensor elements as their own width, so a portable archive swaps bytes per element.
template <class Archive, class Bytes>
void tensor_elements(Archive& ar, dtype type, Bytes* bytes, std::size_t nbytes)
{
    auto as = [&](auto tag)
    {
        using U = decltype(tag);
        using P = std::conditional_t<std::is_const_v<Bytes>, const U*, U*>;
        auto* p = reinterpret_cast<P>(bytes);
        std::size_t n = nbytes / sizeof(U);
        if constexpr (is_text_archive_v<Archive>)
        {
            for (std::size_t i = 0; i < n; ++i)
                ar(const_cast<U&>(p[i]));
        }
        else
            ar(cereal::binary_data(const_cast<U*>(p), nbytes));
    };
    switch (type)
    {
    case dtype::float32:
        as(float{});
        break;
    case dtype::float64:
        as(double{});
        break;
    case dtype::int64:
        as(std::int64_t{});
        break;
    case dtype::int32:
        as(std::int32_t{});
        break;
    case dtype::int16:
        as(std::int16_t{});
        break;
    case dtype::int8:
        as(std::int8_t{});
        break;
    case dtype::uint8:
    case dtype::boolean:
        as(std::uint8_t{});
        break;
    case dtype::float16:
    case dtype::bfloat16:
        as(std::uint16_t{});
        break;
    }
}

} // namespace detail

/// The largest rank ember reads (PyTorch's own limit).
inline constexpr std::size_t max_tensor_rank = 64;

template <class Archive>
void save(Archive& ar, const host_tensor& t, std::uint32_t /*version*/)
{
    detail::save_string(ar, "dtype", std::string(dtype_name(t.dtype())));
    detail::in_node(ar, "shape", [&] { detail::save_vector(ar, t.shape()); });
    detail::in_node(ar, "data",
                    [&]
                    {
                        if constexpr (detail::is_text_archive_v<Archive>)
                            ar(cereal::make_size_tag(static_cast<cereal::size_type>(t.numel())));
                        detail::tensor_elements(ar, t.dtype(), t.bytes().data(), t.nbytes());
                    });
}

template <class Archive>
void load(Archive& ar, host_tensor& t, std::uint32_t version)
{
    if (version > 1)
        throw format_error("tensor record version " + std::to_string(version) +
                           " is newer than this build reads (1)");
    std::string name;
    detail::load_string(ar, "dtype", name, "tensor dtype");
    dtype type = detail::parse_dtype(name);

    std::vector<std::int64_t> shape;
    detail::in_node(
        ar, "shape",
        [&]
        {
            {
                cereal::size_type rank = 0;
                ar(cereal::make_size_tag(rank));
                if (rank > max_tensor_rank)
                    throw format_error("tensor rank " + std::to_string(rank) + " exceeds " +
                                       std::to_string(max_tensor_rank));
                detail::reserve_from_budget(rank, sizeof(std::int64_t), "tensor shape");
                shape.resize(static_cast<std::size_t>(rank));
                if constexpr (detail::is_text_archive_v<Archive>)
                    for (auto& d : shape)
                        ar(d);
                else
                    ar(cereal::binary_data(shape.data(), shape.size() * sizeof(std::int64_t)));
            }
        });

    std::size_t numel = 0;
    try
    {
        numel = host_tensor::checked_numel(shape, dtype_size(type));
    }
    catch (const value_error& e)
    {
        throw format_error(e.what());
    }
    detail::in_node(ar, "data",
                    [&]
                    {
                        if constexpr (detail::is_text_archive_v<Archive>)
                        {
                            cereal::size_type n = 0;
                            ar(cereal::make_size_tag(n));
                            if (n != numel)
                                throw format_error("tensor of shape " + shape_string(shape) +
                                                   " holds " + std::to_string(n) +
                                                   " elements, expected " + std::to_string(numel));
                        }
                        else
                            detail::reserve_from_budget(numel, dtype_size(type),
                                                        "tensor of shape " + shape_string(shape));
                        host_tensor loaded(type, std::move(shape));
                        detail::tensor_elements(ar, type, loaded.bytes().data(), loaded.nbytes());
                        t = std::move(loaded);
                    });
}

/// An ordered_dict is a list of (key, value) items, so its order survives every archive. In
/// text archives the list sits in an "items" member, beside cereal's version member.
template <class Archive, class V>
void save(Archive& ar, const ordered_dict<V>& d, std::uint32_t /*version*/)
{
    detail::in_node(ar, "items",
                    [&]
                    {
                        ar(cereal::make_size_tag(static_cast<cereal::size_type>(d.size())));
                        for (const auto& [key, value] : d)
                            detail::in_node(ar, nullptr,
                                            [&]
                                            {
                                                detail::save_string(ar, "key", key);
                                                ar(cereal::make_nvp("value", value));
                                            });
                    });
}

template <class Archive, class V>
void load(Archive& ar, ordered_dict<V>& d, std::uint32_t version)
{
    if (version > 1)
        throw format_error("dictionary record version " + std::to_string(version) +
                           " is newer than this build reads (1)");
    ordered_dict<V> loaded;
    detail::in_node(ar, "items",
                    [&]
                    {
                        cereal::size_type n = 0;
                        ar(cereal::make_size_tag(n));
                        for (cereal::size_type i = 0; i < n; ++i)
                        {
                            std::string key;
                            V value{};
                            detail::in_node(ar, nullptr,
                                            [&]
                                            {
                                                detail::load_string(ar, "key", key,
                                                                    "dictionary key");
                                                ar(cereal::make_nvp("value", value));
                                            });
                            if (loaded.contains(key))
                                throw format_error("duplicate key '" + key + "'");
                            loaded.insert(std::move(key), std::move(value));
                        }
                    });
    d = std::move(loaded);
}

template <class Archive>
void serialize(Archive& ar, generator_state& s, std::uint32_t version)
{
    if (version > 1)
        throw format_error("generator state version " + std::to_string(version) +
                           " is newer than this build reads (1)");
    ar(cereal::make_nvp("seed", s.seed), cereal::make_nvp("mt", s.mt),
       cereal::make_nvp("index", s.index), cereal::make_nvp("has_next_normal", s.has_next_normal),
       cereal::make_nvp("next_normal", s.next_normal));
    if (s.index > s.mt.size())
        throw format_error("generator state index " + std::to_string(s.index) +
                           " is past the end of its 624-word state");
}

} // namespace ember

namespace ember::optim
{

template <class Archive>
void save(Archive& ar, const param_group_state& g, std::uint32_t /*version*/)
{
    ar(cereal::make_nvp("options", g.options));
    ember::detail::in_node(ar, "params", [&] { ember::detail::save_vector(ar, g.params); });
}

template <class Archive>
void load(Archive& ar, param_group_state& g, std::uint32_t version)
{
    if (version > 1)
        throw format_error("parameter group version " + std::to_string(version) +
                           " is newer than this build reads (1)");
    ar(cereal::make_nvp("options", g.options));
    ember::detail::in_node(ar, "params",
                           [&] { ember::detail::load_vector(ar, g.params, "parameter group"); });
}

template <class Archive>
void save(Archive& ar, const optimizer_state& s, std::uint32_t /*version*/)
{
    ember::detail::in_node(
        ar, "state",
        [&]
        {
            ar(cereal::make_size_tag(static_cast<cereal::size_type>(s.state.size())));
            for (const auto& [index, entries] : s.state)
                ember::detail::in_node(ar, nullptr,
                                       [&] {
                                           ar(cereal::make_nvp("index", index),
                                              cereal::make_nvp("entries", entries));
                                       });
        });
    ember::detail::in_node(
        ar, "param_groups",
        [&]
        {
            ar(cereal::make_size_tag(static_cast<cereal::size_type>(s.param_groups.size())));
            for (const auto& g : s.param_groups)
                ar(g);
        });
}

template <class Archive>
void load(Archive& ar, optimizer_state& s, std::uint32_t version)
{
    if (version > 1)
        throw format_error("optimizer state version " + std::to_string(version) +
                           " is newer than this build reads (1)");
    optimizer_state loaded;
    ember::detail::in_node(ar, "state",
                           [&]
                           {
                               cereal::size_type n = 0;
                               ar(cereal::make_size_tag(n));
                               for (cereal::size_type i = 0; i < n; ++i)
                               {
                                   std::int64_t index = 0;
                                   ordered_dict<state_value> entries;
                                   ember::detail::in_node(
                                       ar, nullptr,
                                       [&] {
                                           ar(cereal::make_nvp("index", index),
                                              cereal::make_nvp("entries", entries));
                                       });
                                   if (!loaded.state.emplace(index, std::move(entries)).second)
                                       throw format_error("optimizer state lists parameter " +
                                                          std::to_string(index) + " twice");
                               }
                           });
    ember::detail::in_node(ar, "param_groups",
                           [&]
                           {
                               cereal::size_type n = 0;
                               ar(cereal::make_size_tag(n));
                               ember::detail::reserve_from_budget(n, 1, "optimizer param_groups");
                               for (cereal::size_type i = 0; i < n; ++i)
                               {
                                   param_group_state g;
                                   ar(g);
                                   loaded.param_groups.push_back(std::move(g));
                               }
                           });
    s = std::move(loaded);
}

} // namespace ember::optim

// state_value is a std::variant, so argument-dependent lookup searches namespace std, not
// ember::optim; cereal also looks in its own namespace, which is where these must live.
// (Do not include cereal/types/variant.hpp beside this header for the same archive: its
// generic std::variant functions would compete with these.)
namespace cereal
{

inline constexpr const char* ember_state_value_kinds[] = {"none",  "bool",   "int",
                                                          "float", "floats", "tensor"};

// Constrained to the exact type: an unconstrained `const state_value&` parameter would accept
// anything convertible to the variant (every integer) and make cereal's lookup ambiguous.
template <class Archive, std::same_as<ember::optim::state_value> V>
void save(Archive& ar, const V& v, std::uint32_t /*version*/)
{
    ar(cereal::make_nvp("kind", std::string(ember_state_value_kinds[v.index()])));
    std::visit(
        [&](const auto& x)
        {
            using X = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<X, std::monostate>)
                return;
            else if constexpr (std::is_same_v<X, std::vector<double>>)
            {
                ember::detail::in_node(ar, "value", [&] { ember::detail::save_vector(ar, x); });
            }
            else
                ar(cereal::make_nvp("value", x));
        },
        v);
}

template <class Archive, std::same_as<ember::optim::state_value> V>
void load(Archive& ar, V& v, std::uint32_t version)
{
    if (version > 1)
        throw ember::format_error("optimizer value version " + std::to_string(version) +
                                  " is newer than this build reads (1)");
    std::string kind;
    ember::detail::load_string(ar, "kind", kind, "optimizer value kind");
    auto value = [&](auto x)
    {
        ar(cereal::make_nvp("value", x));
        v = std::move(x);
    };
    if (kind == "none")
        v = std::monostate{};
    else if (kind == "bool")
        value(false);
    else if (kind == "int")
        value(std::int64_t{0});
    else if (kind == "float")
        value(0.0);
    else if (kind == "tensor")
        value(ember::host_tensor{});
    else if (kind == "floats")
    {
        std::vector<double> x;
        ember::detail::in_node(ar, "value",
                               [&] { ember::detail::load_vector(ar, x, "optimizer option list"); });
        v = std::move(x);
    }
    else
        throw ember::format_error("unknown optimizer value kind '" + kind + "'");
}

} // namespace cereal

CEREAL_CLASS_VERSION(ember::host_tensor, 1);
CEREAL_CLASS_VERSION(ember::ordered_dict<ember::host_tensor>, 1);
CEREAL_CLASS_VERSION(ember::ordered_dict<ember::optim::state_value>, 1);
CEREAL_CLASS_VERSION(ember::generator_state, 1);
CEREAL_CLASS_VERSION(ember::optim::state_value, 1);
CEREAL_CLASS_VERSION(ember::optim::param_group_state, 1);
CEREAL_CLASS_VERSION(ember::optim::optimizer_state, 1);
