#pragma once
/// @file
/// sequential (torch.nn.Sequential): modules applied one after the other, composed at compile
/// time. The chain is a std::tuple, so forward and backward are direct, inlinable calls with
/// no virtual dispatch, and a module whose output does not fit the next one's input fails to
/// compile. All modules run on one device (the first one's `device_type`); a chain that mixes
/// devices fails to compile.
///
/// @code
/// ember::nn::sequential model{ember::nn::linear(784, 256), ember::nn::relu(),
///                             ember::nn::linear(256, 10)};
/// const auto& logits = model(x);          // forward through all three
/// const auto& dx = model.backward(dlogits); // backward in reverse, accumulating grads
/// model.get<0>().weight;                  // state_dict() key "0.weight"
/// @endcode

#include "ember/nn/module.hpp"

#include <array>
#include <cstddef>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>

namespace ember::nn
{

namespace detail
{
// "0", "1", ..., "K-1" laid out once at compile time, so visiting a sequential builds no strings.
template <std::size_t K>
struct index_names
{
    static constexpr std::size_t digits(std::size_t i) noexcept
    {
        std::size_t d = 1;
        for (; i >= 10; i /= 10)
            ++d;
        return d;
    }
    static constexpr std::size_t total() noexcept
    {
        std::size_t t = 0;
        for (std::size_t i = 0; i < K; ++i)
            t += digits(i);
        return t;
    }

    std::array<char, total()> chars{};
    std::array<std::size_t, K + 1> offsets{};

    constexpr index_names() noexcept
    {
        std::size_t pos = 0;
        for (std::size_t i = 0; i < K; ++i)
        {
            offsets[i] = pos;
            const std::size_t d = digits(i);
            std::size_t v = i;
            for (std::size_t k = d; k-- > 0; v /= 10)
                chars[pos + k] = static_cast<char>('0' + v % 10);
            pos += d;
        }
        offsets[K] = pos;
    }

    constexpr std::string_view operator[](std::size_t i) const noexcept
    {
        return {chars.data() + offsets[i], offsets[i + 1] - offsets[i]};
    }
};

// The device a module runs on; void for what is not a module (which another check reports).
template <class M>
struct device_of
{
    using type = void;
};
template <class M>
requires requires
{
    typename M::device_type;
}
struct device_of<M>
{
    using type = typename M::device_type;
};
} // namespace detail

/// @brief Runs `Ms...` in order; its submodules are named "0", "1", ... as in PyTorch.
template <class... Ms>
class sequential
    : public nn::module<sequential<Ms...>,
                        typename std::tuple_element_t<0, std::tuple<Ms...>>::device_type>
{
    static_assert(sizeof...(Ms) >= 1, "ember::nn::sequential: needs at least one module");
    static_assert((is_module_v<Ms> && ...),
                  "ember::nn::sequential: every element must derive from ember::nn::module");

    using first_type = std::tuple_element_t<0, std::tuple<Ms...>>;
    // One device's tensors cannot feed another's module; ember::to<Device> moves whole models.
    static_assert(
        (std::is_same_v<typename detail::device_of<Ms>::type, typename first_type::device_type> &&
         ...),
        "ember: all layers of a sequential must be on the same device");
    // A float module next to a double one would convert (and allocate) at every call.
    static_assert((std::is_same_v<module_value_t<Ms>, module_value_t<first_type>> && ...),
                  "ember::nn::sequential: all modules must share one value_type; write "
                  "nn::relu<double>() next to nn::linear<double>(...)");

public:
    /// Element type of the first module's parameters (what parameters() hands out).
    using value_type = module_value_t<first_type>;

    /// @brief Number of modules in the chain.
    static constexpr std::size_t size() noexcept { return sizeof...(Ms); }

    explicit sequential(Ms... modules) : m_modules(std::move(modules)...) {}

    /// @brief The I-th module (PyTorch's `model[I]`).
    template <std::size_t I>
    auto& get() noexcept
    {
        return std::get<I>(m_modules);
    }
    template <std::size_t I>
    const auto& get() const noexcept
    {
        return std::get<I>(m_modules);
    }

    template <class V>
    void visit(V&& v)
    {
        visit_all(v, std::index_sequence_for<Ms...>{});
    }

    /// @brief Each module's forward on the previous one's output; returns the last output.
    template <class X>
    decltype(auto) forward(const X& x)
    {
        return forward_from<0>(x);
    }

    /// @brief Each module's backward in reverse order; returns the gradient for the input.
    template <class G>
    decltype(auto) backward(const G& dy)
    {
        return backward_from<sizeof...(Ms) - 1>(dy);
    }

    bool requires_input_grad() const noexcept { return this->m_requires_input_grad; }

    /// @brief module::requires_input_grad(bool), passed on. Off, the modules that see only this
    /// chain's input (the first one, and those behind modules without trainable parameters)
    /// are told their input gradient is not needed, and backward() stops after the last module
    /// that learns something, returning an empty tensor. Call it again after changing which
    /// parameters require grad.
    void requires_input_grad(bool required);

private:
    template <class V, std::size_t... I>
    void visit_all(V& v, std::index_sequence<I...>)
    {
        (v(s_names[I], std::get<I>(m_modules)), ...);
    }

    template <std::size_t I, class X>
    decltype(auto) forward_from(const X& x)
    {
        if constexpr (I + 1 == sizeof...(Ms))
            return std::get<I>(m_modules).forward(x);
        else
            return forward_from<I + 1>(std::get<I>(m_modules).forward(x));
    }

    template <std::size_t I, class G>
    decltype(auto) backward_from(const G& dy)
    {
        if constexpr (I == 0)
            return std::get<0>(m_modules).backward(dy);
        else
        {
            const auto& dx = std::get<I>(m_modules).backward(dy);
            using result_type = decltype(backward_from<I - 1>(dx));
            if (m_no_input_grad[I]) // nothing before module I learns or needs a gradient
                return empty_result<result_type>();
            return backward_from<I - 1>(dx);
        }
    }

    template <class R>
    static R empty_result()
    {
        if constexpr (std::is_reference_v<R>)
        {
            static const std::remove_cvref_t<R> none{};
            return none;
        }
        else
            return R{};
    }

    template <std::size_t... I>
    void set_input_grads(bool required, std::index_sequence<I...>);

    static constexpr detail::index_names<sizeof...(Ms)> s_names{};

    std::tuple<Ms...> m_modules;
    // m_no_input_grad[I]: module I's input gradient is not needed (see requires_input_grad).
    std::array<bool, sizeof...(Ms)> m_no_input_grad{};
};

/*******************
 * implementation  *
 *******************/

template <class... Ms>
void sequential<Ms...>::requires_input_grad(bool required)
{
    this->m_requires_input_grad = required;
    set_input_grads(required, std::index_sequence_for<Ms...>{});
}

template <class... Ms>
template <std::size_t... I>
void sequential<Ms...>::set_input_grads(bool required, std::index_sequence<I...>)
{
    // Module I's input gradient is needed when the chain's is (I == 0), or when some module
    // before I has a parameter that requires grad: backward has to reach it.
    bool needed = required;
    auto learns = [](auto& m)
    {
        bool any = false;
        auto f = [&any](std::string_view, auto& member)
        {
            if constexpr (is_parameter_v<decltype(member)>)
                any = any || member.requires_grad;
        };
        detail::walk<false>(m, std::string(), f);
        return any;
    };
    ((m_no_input_grad[I] = !needed, std::get<I>(m_modules).requires_input_grad(needed),
      needed = needed || learns(std::get<I>(m_modules))),
     ...);
}

} // namespace ember::nn
