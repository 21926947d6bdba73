#pragma once
/// @file
/// RMSprop, optionally centered and with momentum: torch.optim.RMSprop's update (single-tensor
/// path of PyTorch 1.13), in its order of operations.
///
/// @code
/// ember::optim::rmsprop opt(model.parameters(), {.lr = 1e-2, .momentum = 0.9});
/// @endcode

#include "ember/optim/optimizer.hpp"

#include <algorithm>
#include <cmath>

namespace ember::optim
{

/// @brief torch.optim.RMSprop's arguments.
struct rmsprop_options
{
    double lr = 1e-2;
    double alpha = 0.99;
    double eps = 1e-8;
    double weight_decay = 0;
    double momentum = 0;
    bool centered = false;
    bool maximize = false;
};

/// @brief One parameter's RMSprop state; `step` is an int as in PyTorch. The momentum buffer
/// exists when momentum > 0 and the gradient average when centered.
template <class T>
struct rmsprop_state
{
    bool initialized = false;
    bool has_momentum_buffer = false;
    bool has_grad_avg = false;
    std::int64_t step = 0;
    std::vector<T> square_avg;
    std::vector<T> momentum_buffer;
    std::vector<T> grad_avg;
};

/// @brief torch.optim.RMSprop over parameters of element type T.
template <class T = float>
class rmsprop : public optimizer<rmsprop<T>, T, rmsprop_options, rmsprop_state<T>>
{
    using base_type = optimizer<rmsprop<T>, T, rmsprop_options, rmsprop_state<T>>;
    friend base_type;

public:
    using typename base_type::group_type;
    static constexpr std::string_view name = "rmsprop";

    /// @brief One group holding `params` (what `model.parameters()` returns).
    explicit rmsprop(std::vector<nn::param_ref<T>> params, const rmsprop_options& options = {})
        : base_type(detail::single_group(std::move(params), options, name))
    {
    }
    /// @brief Several groups, each with its own options.
    explicit rmsprop(std::vector<group_type> groups) : base_type(std::move(groups)) {}

private:
    static void check_options(const rmsprop_options& o, std::string_view where);
    static void write_options(const rmsprop_options& o, ordered_dict<state_value>& out);
    static rmsprop_options read_options(detail::dict_reader& in);
    static void update(const rmsprop_options& o, std::span<T> value, std::span<const T> grad,
                       rmsprop_state<T>& s, std::size_t index);
    static void write_state(const rmsprop_state<T>& s, const std::vector<std::int64_t>& shape,
                            ordered_dict<state_value>& out);
    static rmsprop_state<T> read_state(detail::dict_reader& in, const rmsprop_options& o,
                                       const std::vector<std::int64_t>& shape);
};

template <class T>
rmsprop(std::vector<nn::param_ref<T>>) -> rmsprop<T>;
template <class T>
rmsprop(std::vector<nn::param_ref<T>>, const rmsprop_options&) -> rmsprop<T>;
template <class T>
rmsprop(std::vector<param_group<T, rmsprop_options>>) -> rmsprop<T>;

/*******************
 * implementation  *
 *******************/

namespace detail
{

template <class T>
struct rmsprop_scalars
{
    T sign, weight_decay, alpha, one_minus_alpha, eps, momentum, neg_lr;
};

// One RMSprop step over n elements, in PyTorch's order of operations, block by block so that
// the square roots go through sqrt_inplace.
template <class T, bool Decay, bool Centered, bool Momentum>
void rmsprop_kernel(std::size_t n, T* __restrict x, const T* __restrict g, T* __restrict sq,
                    T* __restrict buf, T* __restrict ga, const rmsprop_scalars<T> k)
{
    T root[sqrt_block_size];
    T grad[sqrt_block_size];
    for (std::size_t start = 0; start < n; start += sqrt_block_size)
    {
        const std::size_t len = std::min(sqrt_block_size, n - start);
        for (std::size_t j = 0, i = start; j < len; ++j, ++i)
        {
            T gi = k.sign * g[i]; // maximize: -grad
            if constexpr (Decay)
                gi = add_scaled(gi, k.weight_decay, x[i]); // grad.add(param, alpha=weight_decay)
            sq[i] = sq[i] * k.alpha + k.one_minus_alpha * gi * gi; // mul_().addcmul_()
            if constexpr (Centered)
            {
                ga[i] = add_scaled(ga[i] * k.alpha, k.one_minus_alpha, gi);
                root[j] = sq[i] + T(-1) * ga[i] * ga[i]; // addcmul(value=-1)
            }
            else
                root[j] = sq[i];
            grad[j] = gi;
        }
        sqrt_inplace(root, len);
        for (std::size_t j = 0, i = start; j < len; ++j, ++i)
        {
            const T avg = root[j] + k.eps; // .sqrt_().add_(eps)
            if constexpr (Momentum)
            {
                buf[i] = buf[i] * k.momentum + grad[j] / avg; // mul_().addcdiv_()
                x[i] = add_scaled(x[i], k.neg_lr, buf[i]);    // param.add_(buf, alpha=-lr)
            }
            else
                x[i] = x[i] + k.neg_lr * grad[j] / avg; // addcdiv_(value=-lr)
        }
    }
}

} // namespace detail

template <class T>
void rmsprop<T>::check_options(const rmsprop_options& o, std::string_view where)
{
    const std::string at = std::string(where) + ": ";
    if (!(0.0 <= o.lr))
        throw value_error(at + "Invalid learning rate: " + detail::repr(o.lr));
    if (!(0.0 <= o.eps))
        throw value_error(at + "Invalid epsilon value: " + detail::repr(o.eps));
    if (!(0.0 <= o.momentum))
        throw value_error(at + "Invalid momentum value: " + detail::repr(o.momentum));
    if (!(0.0 <= o.weight_decay))
        throw value_error(at + "Invalid weight_decay value: " + detail::repr(o.weight_decay));
    if (!(0.0 <= o.alpha))
        throw value_error(at + "Invalid alpha value: " + detail::repr(o.alpha));
}

template <class T>
void rmsprop<T>::write_options(const rmsprop_options& o, ordered_dict<state_value>& out)
{
    out.insert("lr", o.lr);
    out.insert("momentum", detail::int_if_zero(o.momentum));
    out.insert("alpha", o.alpha);
    out.insert("eps", o.eps);
    out.insert("centered", o.centered);
    out.insert("weight_decay", detail::int_if_zero(o.weight_decay));
    out.insert("foreach", std::monostate{});
    out.insert("maximize", o.maximize);
    out.insert("differentiable", false);
}

template <class T>
rmsprop_options rmsprop<T>::read_options(detail::dict_reader& in)
{
    rmsprop_options o;
    o.lr = in.number("lr");
    o.alpha = in.number("alpha");
    o.eps = in.number("eps");
    o.weight_decay = in.number("weight_decay");
    // PyTorch's __setstate__ fills these in for state_dicts saved by older versions.
    o.momentum = in.number("momentum", 0.0);
    o.centered = in.boolean("centered", false);
    o.maximize = in.boolean("maximize", false);
    in.ignored_flag("foreach");
    in.ignored_flag("differentiable");
    return o;
}

template <class T>
void rmsprop<T>::update(const rmsprop_options& o, std::span<T> value, std::span<const T> grad,
                        rmsprop_state<T>& s, std::size_t index)
{
    const std::size_t n = value.size();
    const bool use_momentum = o.momentum > 0;
    const bool centered = o.centered;
    if (!s.initialized)
    {
        s.square_avg.assign(n, T(0));
        s.initialized = true;
    }
    // PyTorch creates these at the first step; creating them when momentum or centered is
    // switched on later also covers what PyTorch fails on.
    if (use_momentum && !s.has_momentum_buffer)
    {
        s.momentum_buffer.assign(n, T(0));
        s.has_momentum_buffer = true;
    }
    if (centered && !s.has_grad_avg)
    {
        s.grad_avg.assign(n, T(0));
        s.has_grad_avg = true;
    }
    detail::check_state_size(name, index, "square_avg", s.square_avg.size(), n);
    if (use_momentum)
        detail::check_state_size(name, index, "momentum_buffer", s.momentum_buffer.size(), n);
    if (centered)
        detail::check_state_size(name, index, "grad_avg", s.grad_avg.size(), n);
    s.step += 1;
    // Scalars are Python floats in PyTorch, rounded to T by the tensor ops.
    detail::rmsprop_scalars<T> k;
    k.sign = o.maximize ? T(-1) : T(1);
    k.weight_decay = static_cast<T>(o.weight_decay);
    k.alpha = static_cast<T>(o.alpha);
    k.one_minus_alpha = static_cast<T>(1 - o.alpha);
    k.eps = static_cast<T>(o.eps);
    k.momentum = static_cast<T>(o.momentum);
    k.neg_lr = static_cast<T>(-o.lr);
    T* x = value.data();
    const T* g = grad.data();
    T* sq = s.square_avg.data();
    T* buf = s.momentum_buffer.data();
    T* ga = s.grad_avg.data();
    detail::with_flags(
        [&]<bool Decay, bool Centered, bool Momentum>()
        { detail::rmsprop_kernel<T, Decay, Centered, Momentum>(n, x, g, sq, buf, ga, k); },
        o.weight_decay != 0, centered, use_momentum);
}

template <class T>
void rmsprop<T>::write_state(const rmsprop_state<T>& s, const std::vector<std::int64_t>& shape,
                             ordered_dict<state_value>& out)
{
    out.insert("step", s.step);
    out.insert("square_avg", detail::to_host(std::span<const T>(s.square_avg), shape));
    if (s.has_momentum_buffer)
        out.insert("momentum_buffer",
                   detail::to_host(std::span<const T>(s.momentum_buffer), shape));
    if (s.has_grad_avg)
        out.insert("grad_avg", detail::to_host(std::span<const T>(s.grad_avg), shape));
}

template <class T>
rmsprop_state<T> rmsprop<T>::read_state(detail::dict_reader& in, const rmsprop_options& o,
                                        const std::vector<std::int64_t>& shape)
{
    rmsprop_state<T> s;
    s.initialized = true;
    s.step = static_cast<std::int64_t>(in.step("step"));
    auto copy = [](const host_tensor* t, std::vector<T>& out)
    {
        auto data = t->data<T>();
        out.assign(data.begin(), data.end());
    };
    copy(in.tensor<T>("square_avg", shape, true), s.square_avg);
    if (const host_tensor* t = in.tensor<T>("momentum_buffer", shape, o.momentum > 0))
    {
        copy(t, s.momentum_buffer);
        s.has_momentum_buffer = true;
    }
    if (const host_tensor* t = in.tensor<T>("grad_avg", shape, o.centered))
    {
        copy(t, s.grad_avg);
        s.has_grad_avg = true;
    }
    return s;
}

} // namespace ember::optim
