#pragma once
/// @file
/// cereal support for ember::value (hyperparameters, user extras, scheduler and data-loader
/// state). Included by ember/serialize/cereal.hpp; including either is enough.
///
/// A value is its kind, then its content: in text archives `{"kind": "float", "value": 0.01}`
/// (kinds are Python's type names: None, bool, int, float, str, tensor, list, dict), in binary
/// archives a one-byte kind code. Floats round-trip exactly (see cereal.hpp), lists and dicts
/// recursively, to at most max_value_depth levels so a hostile file cannot exhaust the stack.

#include "ember/serialize/cereal.hpp"

#include "ember/core/value.hpp"

#include <concepts>
#include <cstdint>
#include <string>

namespace ember
{

/// The deepest nesting of lists and dicts a value may have to be saved or loaded.
inline constexpr std::size_t max_value_depth = 64;

namespace detail
{

/// Counts value nesting on this thread for as long as it lives; past max_value_depth it throws
/// format_error while loading (a hostile file), value_error while saving (a value that could
/// not be loaded back).
class value_depth_guard
{
public:
    explicit value_depth_guard(bool loading)
    {
        if (++depth() <= max_value_depth)
            return;
        --depth();
        const std::string what =
            "values nested deeper than " + std::to_string(max_value_depth) + " levels";
        if (loading)
            throw format_error(what);
        throw value_error(what);
    }
    ~value_depth_guard() { --depth(); }
    value_depth_guard(const value_depth_guard&) = delete;
    value_depth_guard& operator=(const value_depth_guard&) = delete;

private:
    static std::size_t& depth() noexcept
    {
        thread_local std::size_t d = 0;
        return d;
    }
};

inline constexpr const char* value_kind_names[] = {"None", "bool",   "int",  "float",
                                                   "str",  "tensor", "list", "dict"};

} // namespace detail

// Constrained to the exact type: value converts implicitly from ints, strings, tensors and
// dicts, and an unconstrained `const value&` overload would compete with theirs.
template <class Archive, std::same_as<value> V>
void save(Archive& ar, const V& v, std::uint32_t /*version*/)
{
    detail::value_depth_guard depth(/*loading=*/false);
    const auto kind = static_cast<std::uint8_t>(v.data().index());
    if constexpr (detail::is_text_archive_v<Archive>)
        ar(cereal::make_nvp("kind", std::string(detail::value_kind_names[kind])));
    else
        ar(kind);
    std::visit(
        [&](const auto& x)
        {
            using X = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<X, std::monostate>)
                return;
            else if constexpr (std::is_same_v<X, double>)
                detail::save_double(ar, "value", x);
            else if constexpr (std::is_same_v<X, std::string>)
                detail::save_string(ar, "value", x);
            else if constexpr (std::is_same_v<X, value::list>)
                detail::in_node(
                    ar, "value",
                    [&]
                    {
                        ar(cereal::make_size_tag(static_cast<cereal::size_type>(x.size())));
                        for (const value& item : x)
                            ar(item);
                    });
            else
                ar(cereal::make_nvp("value", x));
        },
        v.data());
}

template <class Archive, std::same_as<value> V>
void load(Archive& ar, V& v, std::uint32_t version)
{
    detail::check_version(version, 1, "value record");
    detail::value_depth_guard depth(/*loading=*/true);
    std::size_t kind = 0;
    if constexpr (detail::is_text_archive_v<Archive>)
    {
        std::string name;
        detail::load_string(ar, "kind", name, "value kind");
        kind = std::size(detail::value_kind_names);
        for (std::size_t k = 0; k < std::size(detail::value_kind_names); ++k)
            if (name == detail::value_kind_names[k])
                kind = k;
        if (kind == std::size(detail::value_kind_names))
            throw format_error("unknown value kind '" + name + "'");
    }
    else
    {
        std::uint8_t code = 0;
        ar(code);
        if (code >= std::size(detail::value_kind_names))
            throw format_error("unknown value kind code " + std::to_string(code));
        kind = code;
    }
    auto member = [&](auto x)
    {
        ar(cereal::make_nvp("value", x));
        v = value(std::move(x));
    };
    switch (kind)
    {
    case 0:
        v = value();
        break;
    case 1:
    {
        bool b = false;
        detail::load_bool(ar, "value", b);
        v = value(b);
        break;
    }
    case 2:
        member(std::int64_t{0});
        break;
    case 3:
    {
        double d = 0;
        detail::load_double(ar, "value", d);
        v = value(d);
        break;
    }
    case 4:
    {
        std::string s;
        detail::load_string(ar, "value", s, "string value");
        v = value(std::move(s));
        break;
    }
    case 5:
        member(host_tensor{});
        break;
    case 6:
    {
        value::list items;
        detail::in_node(ar, "value",
                        [&]
                        {
                            cereal::size_type n = 0;
                            ar(cereal::make_size_tag(n));
                            // Each item takes at least a byte of input; no reserve(n), which
                            // would trust n.
                            detail::reserve_from_budget(n, 1, "list");
                            for (cereal::size_type i = 0; i < n; ++i)
                            {
                                value item;
                                detail::in_context("list item " + std::to_string(i),
                                                   [&] { ar(item); });
                                items.push_back(std::move(item));
                            }
                        });
        v = value(std::move(items));
        break;
    }
    default:
        member(value::dict{});
        break;
    }
}

} // namespace ember

CEREAL_CLASS_VERSION(ember::value, 1);
CEREAL_CLASS_VERSION(ember::ordered_dict<ember::value>, 1);
