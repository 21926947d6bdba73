#pragma once
/// @file
/// The module base. A module names its parameters, buffers and submodules in one member
/// template, the way a cereal type names its members:
///
/// @code
/// template <class V> void visit(V&& v) { v("weight", weight); v("bias", bias); v("fc1", fc1); }
/// @endcode
///
/// That single list drives state_dict(), load_state_dict(), parameters(), train()/eval() and
/// zero_grad(). Names nest PyTorch's way: a submodule `fc1` contributes `fc1.weight`.
/// Forward and backward are the derived module's own `forward(x)` and `backward(dy)`: forward
/// caches what backward needs unless a no_grad guard is alive; backward accumulates parameter
/// gradients and returns the gradient with respect to the input.

#include "ember/core/error.hpp"
#include "ember/core/grad_mode.hpp"
#include "ember/core/state_dict.hpp"
#include "ember/detail/precompiled.hpp"
#include "ember/device/cpu.hpp"
#include "ember/nn/parameter.hpp"

#include <algorithm>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace ember::nn
{

/// @brief Tag base of every module, so visitors can tell submodules from tensors.
struct module_tag
{
};

template <class X>
inline constexpr bool is_module_v = std::is_base_of_v<module_tag, std::remove_cvref_t<X>>;

namespace detail
{
template <class M>
struct module_value
{
    using type = float;
};
template <class M>
requires requires
{
    typename M::value_type;
}
struct module_value<M>
{
    using type = typename M::value_type;
};

template <class X>
inline constexpr bool always_false = false;

// Walks a module tree in PyTorch's order, whatever order visit() names things in: a module's
// parameters, then its buffers, then each submodule with its own (state_dict(),
// parameters(), and so an optimizer's parameter indices, agree with PyTorch's). With Named,
// `f(full_name, member)` gets PyTorch's dotted names; without, it gets an empty name and no
// string is built, so per-step walks (zero_grad) allocate nothing.
template <bool Named, class M, class F>
void walk(M& m, const std::string& prefix, F& f)
{
    enum pass
    {
        parameters,
        buffers,
        submodules
    };
    for (const pass p : {parameters, buffers, submodules})
        m.visit(
            [&](std::string_view name, auto& member)
            {
                using X = std::remove_cvref_t<decltype(member)>;
                static_assert(is_parameter_v<X> || is_buffer_v<X> || is_module_v<X>,
                              "ember: visit() may only name parameters, buffers and modules");
                const pass kind = is_parameter_v<X> ? parameters
                                  : is_buffer_v<X>  ? buffers
                                                    : submodules;
                if (kind != p)
                    return;
                if constexpr (Named)
                {
                    std::string full = prefix;
                    full += name;
                    f(std::string_view(full), member);
                    if constexpr (is_module_v<X>)
                        walk<true>(member, full + ".", f);
                }
                else
                {
                    f(std::string_view{}, member);
                    if constexpr (is_module_v<X>)
                        walk<false>(member, prefix, f);
                }
            });
}
} // namespace detail

/// @brief Element type a module's parameters use: its `value_type` if it declares one, else
/// float.
template <class M>
using module_value_t = typename detail::module_value<M>::type;

namespace detail
{
// parameters<T>() with T left void means the module's value_type, looked up at the call. A
// default argument naming module_value_t<Derived> would be evaluated when module<Derived> is
// instantiated, while Derived is still incomplete, and so always give float.
template <class T, class M>
struct param_value
{
    using type = T;
};
template <class M>
struct param_value<void, M>
{
    using type = module_value_t<M>;
};
template <class T, class M>
using param_value_t = typename param_value<T, M>::type;
} // namespace detail

/// @brief What load_state_dict(sd, false) found: keys the module has that `sd` lacks, and keys
/// of `sd` the module does not have (PyTorch's `_IncompatibleKeys`).
struct load_result
{
    std::vector<std::string> missing_keys;
    std::vector<std::string> unexpected_keys;
};

namespace detail
{
// load_state_dict's checks, out of its walk: not templates, so that each module type and
// device compiles only the walk, not the messages.

/// @brief Throws dtype_error or shape_error unless the state_dict's entry for `name` (dtype
/// `have`, shape `have_shape`) fits the module's parameter or buffer (`want`, `want_shape`).
void check_load_entry(std::string_view name, dtype have,
                      const std::vector<std::int64_t>& have_shape, dtype want,
                      const std::vector<std::int64_t>& want_shape);

/// @brief After the check pass: with `strict`, key_error naming every missing and unexpected
/// key in `result`.
void check_load_keys(const load_result& result, bool strict);

/// @brief Whether an entry of dtype `have` loads into a T by conversion, as PyTorch's
/// load_state_dict copies with a cast: float32 and float64 into a floating parameter or buffer
/// (a double run's weights into a float model, rounded to nearest; the other way, exactly).
template <class T>
bool load_converts(dtype have) noexcept
{
    return std::is_floating_point_v<T> && have != dtype_of<T>() &&
           (have == dtype::float32 || have == dtype::float64);
}

/// @brief `src` (float32 or float64) converted to T, element by element.
template <class T, class Source>
host_tensor converted_to(const Source& src)
{
    host_tensor out = host_tensor::empty(dtype_of<T>(), src.shape());
    const std::span<T> to = out.template data<T>();
    if (src.dtype() == dtype::float32)
        std::transform(src.template data<float>().begin(), src.template data<float>().end(),
                       to.begin(), [](float x) { return static_cast<T>(x); });
    else
        std::transform(src.template data<double>().begin(), src.template data<double>().end(),
                       to.begin(), [](double x) { return static_cast<T>(x); });
    return out;
}

// Out of line where ember is precompiled (src/ember_precompiled.cpp).
#if EMBER_SHARED_DEFINITIONS
EMBER_PRECOMPILED_INLINE void check_load_entry(std::string_view name, dtype have,
                                               const std::vector<std::int64_t>& have_shape,
                                               dtype want,
                                               const std::vector<std::int64_t>& want_shape)
{
    if (have != want)
        throw dtype_error("load_state_dict: dtype mismatch for '" + std::string(name) +
                          "': the state_dict holds " + std::string(dtype_name(have)) +
                          ", the model expects " + std::string(dtype_name(want)) +
                          " (float32 and float64 convert to a float32 or float64 parameter)");
    if (have_shape != want_shape)
        throw shape_error("load_state_dict: size mismatch for '" + std::string(name) +
                          "': copying a tensor of shape " + shape_string(have_shape) +
                          " from the state_dict, the shape in the current model is " +
                          shape_string(want_shape));
}

EMBER_PRECOMPILED_INLINE void check_load_keys(const load_result& result, bool strict)
{
    if (strict && (!result.missing_keys.empty() || !result.unexpected_keys.empty()))
    {
        std::string msg = "load_state_dict: error(s) in loading state_dict:";
        if (!result.missing_keys.empty())
        {
            msg += " missing key(s):";
            for (const auto& k : result.missing_keys)
                msg += " '" + k + "'";
            msg += ".";
        }
        if (!result.unexpected_keys.empty())
        {
            msg += " unexpected key(s):";
            for (const auto& k : result.unexpected_keys)
                msg += " '" + k + "'";
            msg += ".";
        }
        throw key_error(msg);
    }
}
#endif
} // namespace detail

/// @brief CRTP base of every module. `Derived` provides `visit(v)`, `forward` and `backward`.
template <class Derived, class Device = cpu>
class module : public module_tag
{
public:
    using device_type = Device;

    /// @brief Training mode on (or off) for this module, then each submodule's train(mode) (a
    /// module may define its own, as in PyTorch, and pass it on).
    void train(bool mode = true);
    /// @brief Evaluation mode: Dropout passes through, BatchNorm uses its running statistics.
    void eval() { train(false); }
    bool is_training() const noexcept { return m_training; }

    /// @brief Sets every parameter's gradient to zero (lazily: the next backward overwrites it;
    /// see nn::parameter); with `set_to_none`, to None, as PyTorch's
    /// `model.zero_grad(set_to_none=True)`.
    void zero_grad(bool set_to_none = false);

    /// @brief Whether backward() must return the gradient with respect to the input (true by
    /// default). A model's input is usually data, whose gradient nobody reads; with this off a
    /// module may skip computing it, as PyTorch does for an input that does not require grad.
    /// nn::linear then skips its largest matrix product and backward() returns an empty tensor;
    /// nn::sequential passes the setting on to the modules that see only its input.
    bool requires_input_grad() const noexcept { return m_requires_input_grad; }
    void requires_input_grad(bool required) noexcept { m_requires_input_grad = required; }

    /// @brief Parameters and buffers by name, as host tensors, in declaration order.
    ember::state_dict state_dict() const;

    /// @brief Copies `sd` into the parameters and buffers. Nothing changes unless everything
    /// fits: a shape or dtype mismatch throws, naming the key and both shapes; with `strict`,
    /// missing or unexpected keys throw key_error listing them; without, they are returned.
    /// float32 and float64 entries convert to float32 or float64 parameters and buffers, as
    /// PyTorch casts on loading; other dtypes must match.
    load_result load_state_dict(const ember::state_dict& sd, bool strict = true)
    {
        return load_state_dict_from(sd, strict);
    }
    /// @brief The same from views (ember::load(model, path) passes a mapped file's tensors).
    load_result load_state_dict(const ember::state_dict_view& sd, bool strict = true)
    {
        return load_state_dict_from(sd, strict);
    }

    /// @brief Views of the parameters and buffers by name, in state_dict order, with no copy:
    /// what `ember::save(model, path)` writes. Valid while the module lives and its tensors
    /// keep their shapes. For devices whose memory the host reads (cpu, Thrust on the host);
    /// on others, state_dict() copies to the host.
    ember::state_dict_view state_dict_view() const requires Device::host_memory;

    /// @brief Handles on every parameter of element type T, in state_dict order (for optimizers).
    template <class T = void>
    std::vector<param_ref<detail::param_value_t<T, Derived>, Device>> parameters();

    /// @brief (name, handle) pairs, like named_parameters() in PyTorch.
    template <class T = void>
    std::vector<std::pair<std::string, param_ref<detail::param_value_t<T, Derived>, Device>>>
    named_parameters();

    /// @brief Number of learned scalars.
    std::size_t num_parameters();

    /// @brief `model(x)` is `model.forward(x)`.
    template <class... Args>
    decltype(auto) operator()(Args&&... args)
    {
        return derived().forward(std::forward<Args>(args)...);
    }

protected:
    Derived& derived() noexcept { return static_cast<Derived&>(*this); }
    const Derived& derived() const noexcept { return static_cast<const Derived&>(*this); }

    /// @brief True when forward should keep what backward needs: training or not, but only
    /// while gradients are enabled on this thread.
    static bool caching() noexcept { return is_grad_enabled(); }

    bool m_training = true;
    bool m_requires_input_grad = true;

    template <class, class>
    friend class module;

private:
    template <class V>
    load_result load_state_dict_from(const ordered_dict<V>& sd, bool strict);
};

/*******************
 * implementation  *
 *******************/

template <class Derived, class Device>
void module<Derived, Device>::train(bool mode)
{
    m_training = mode;
    // Each submodule's own train(), as PyTorch calls child.train(mode): a module that defines
    // train() (one keeping its batch norm in eval, say) is asked, not overruled; each passes
    // it on to its own submodules.
    derived().visit(
        [mode](std::string_view, auto& member)
        {
            if constexpr (is_module_v<decltype(member)>)
                member.train(mode);
        });
}

template <class Derived, class Device>
void module<Derived, Device>::zero_grad(bool set_to_none)
{
    auto f = [set_to_none](std::string_view, auto& member)
    {
        if constexpr (is_parameter_v<decltype(member)>)
            member.zero_grad(set_to_none);
    };
    detail::walk<false>(derived(), std::string(), f);
}

template <class Derived, class Device>
ember::state_dict module<Derived, Device>::state_dict() const
{
    ember::state_dict sd;
    auto f = [&sd](std::string_view name, auto& member)
    {
        using X = std::remove_cvref_t<decltype(member)>;
        if constexpr (is_parameter_v<X> || is_buffer_v<X>)
            sd.insert(std::string(name), X::device_type::to_host(member.value));
    };
    // visit() is not const (it hands out references for writing too); here it is only read.
    detail::walk<true>(const_cast<Derived&>(derived()), std::string(), f);
    return sd;
}

template <class Derived, class Device>
ember::state_dict_view module<Derived, Device>::state_dict_view() const requires Device::host_memory
{
    ember::state_dict_view sd;
    auto f = [&sd](std::string_view name, auto& member)
    {
        using X = std::remove_cvref_t<decltype(member)>;
        if constexpr (is_parameter_v<X> || is_buffer_v<X>)
        {
            static_assert(X::device_type::host_memory,
                          "ember: state_dict_view(): a submodule lives on a device whose memory "
                          "the host cannot read; use state_dict()");
            using T = typename X::value_type;
            const auto& s = member.value.shape();
            const auto* p = reinterpret_cast<const std::byte*>(member.value.data());
            sd.insert(std::string(name),
                      host_tensor_view(dtype_of<T>(), std::vector<std::int64_t>(s.begin(), s.end()),
                                       {p, member.value.size() * sizeof(T)}));
        }
    };
    detail::walk<true>(const_cast<Derived&>(derived()), std::string(), f);
    return sd;
}

template <class Derived, class Device>
template <class V>
load_result module<Derived, Device>::load_state_dict_from(const ordered_dict<V>& sd, bool strict)
{
    load_result result;
    std::vector<std::string> matched;
    // First pass: check everything, change nothing.
    auto check = [&](std::string_view name, auto& member)
    {
        using X = std::remove_cvref_t<decltype(member)>;
        if constexpr (is_parameter_v<X> || is_buffer_v<X>)
        {
            const V* src = sd.find(name);
            if (!src)
            {
                result.missing_keys.emplace_back(name);
                return;
            }
            using T = typename X::value_type;
            const auto& shape = member.value.shape();
            const dtype have =
                detail::load_converts<T>(src->dtype()) ? dtype_of<T>() : src->dtype();
            detail::check_load_entry(name, have, src->shape(), dtype_of<T>(),
                                     std::vector<std::int64_t>(shape.begin(), shape.end()));
            matched.emplace_back(name);
        }
    };
    detail::walk<true>(derived(), std::string(), check);
    for (const auto& [key, value] : sd)
        if (std::find(matched.begin(), matched.end(), key) == matched.end())
            result.unexpected_keys.push_back(key);
    detail::check_load_keys(result, strict);
    // Second pass: everything fits, copy.
    auto copy = [&](std::string_view name, auto& member)
    {
        using X = std::remove_cvref_t<decltype(member)>;
        if constexpr (is_parameter_v<X> || is_buffer_v<X>)
        {
            using T = typename X::value_type;
            if (const V* src = sd.find(name); src && detail::load_converts<T>(src->dtype()))
                X::device_type::copy_from_host(detail::converted_to<T>(*src), member.value, name);
            else if (src)
                X::device_type::copy_from_host(*src, member.value, name);
        }
    };
    detail::walk<true>(derived(), std::string(), copy);
    return result;
}

template <class Derived, class Device>
template <class T>
std::vector<std::pair<std::string, param_ref<detail::param_value_t<T, Derived>, Device>>>
nn::module<Derived, Device>::named_parameters()
{
    using U = detail::param_value_t<T, Derived>;
    std::vector<std::pair<std::string, param_ref<U, Device>>> out;
    auto f = [&out](std::string_view name, auto& member)
    {
        using X = std::remove_cvref_t<decltype(member)>;
        if constexpr (is_parameter_v<X>)
        {
            static_assert(std::is_same_v<typename X::value_type, U>,
                          "ember: parameters<T>(): the module has a parameter of another type");
            out.emplace_back(std::string(name), param_ref<U, Device>(member));
        }
    };
    detail::walk<true>(derived(), std::string(), f);
    return out;
}

template <class Derived, class Device>
template <class T>
std::vector<param_ref<detail::param_value_t<T, Derived>, Device>>
nn::module<Derived, Device>::parameters()
{
    using U = detail::param_value_t<T, Derived>;
    std::vector<param_ref<U, Device>> out;
    auto f = [&out](std::string_view, auto& member)
    {
        using X = std::remove_cvref_t<decltype(member)>;
        if constexpr (is_parameter_v<X>)
        {
            static_assert(std::is_same_v<typename X::value_type, U>,
                          "ember: parameters<T>(): the module has a parameter of another type");
            out.emplace_back(member);
        }
    };
    detail::walk<false>(derived(), std::string(), f);
    return out;
}

template <class Derived, class Device>
std::size_t module<Derived, Device>::num_parameters()
{
    std::size_t n = 0;
    auto f = [&n](std::string_view, auto& member)
    {
        if constexpr (is_parameter_v<decltype(member)>)
            n += member.value.size();
    };
    detail::walk<false>(derived(), std::string(), f);
    return n;
}

} // namespace ember::nn
