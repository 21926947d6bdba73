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

/// @brief One parameter's RMSprop state, its buffers in the device's memory; `step` is an int
/// as in PyTorch. The momentum buffer exists when momentum > 0 and the gradient average when
/// centered.
template <class T, class Device = cpu>
struct rmsprop_state
{
    using vector_type = typename Device::template vector_type<T>;

    bool initialized = false;
    bool has_momentum_buffer = false;
    bool has_grad_avg = false;
    std::int64_t step = 0;
    vector_type square_avg;
    vector_type momentum_buffer;
    vector_type grad_avg;
};

/// @brief torch.optim.RMSprop over parameters of element type T on `Device`.
template <class T = float, class Device = cpu>
class rmsprop
    : public optimizer<rmsprop<T, Device>, T, rmsprop_options, rmsprop_state<T, Device>, Device>
{
    using base_type =
        optimizer<rmsprop<T, Device>, T, rmsprop_options, rmsprop_state<T, Device>, Device>;
    using state_type = rmsprop_state<T, Device>;
    friend base_type;

public:
    using typename base_type::group_type;
    static constexpr std::string_view name = "rmsprop";

    /// @brief One group holding `params` (what `model.parameters()` returns).
    explicit rmsprop(std::vector<nn::param_ref<T, Device>> params,
                     const rmsprop_options& options = {})
        : base_type(detail::single_group(std::move(params), options, name))
    {
    }
    /// @brief Several groups, each with its own options, whole (see add_param_group); the
    /// first group's are defaults().
    explicit rmsprop(std::vector<group_type> groups) : base_type(std::move(groups)) {}

private:
    static void check_options(const rmsprop_options& o, std::string_view where);
    static void write_options(const rmsprop_options& o, ordered_dict<state_value>& out);
    static rmsprop_options read_options(detail::dict_reader& in);
    static void update(const rmsprop_options& o, std::span<T> value, const nn::grad_view<T>& grad,
                       state_type& s, std::size_t index);
    static void write_state(const state_type& s, const std::vector<std::int64_t>& shape,
                            ordered_dict<state_value>& out);
    static state_type read_state(detail::dict_reader& in, const rmsprop_options& o,
                                 const std::vector<std::int64_t>& shape);
};

template <class T, class Device>
rmsprop(std::vector<nn::param_ref<T, Device>>) -> rmsprop<T, Device>;
template <class T, class Device>
rmsprop(std::vector<nn::param_ref<T, Device>>, const rmsprop_options&) -> rmsprop<T, Device>;
template <class T, class Device>
rmsprop(std::vector<param_group<T, rmsprop_options, Device>>) -> rmsprop<T, Device>;

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

// An RMSprop step's arrays (the parameter's, its gradient's, its state's) and scalars;
// part_from(first) is the same from element `first` on (a part of the parameter).
template <class T>
struct rmsprop_arrays
{
    T* x;
    const T* g;
    T* sq;
    T* buf;
    T* ga;
    rmsprop_scalars<T> k;

    rmsprop_arrays part_from(std::size_t first) const
    {
        return {x + first,           shifted(g, first),  shifted(sq, first),
                shifted(buf, first), shifted(ga, first), k};
    }
};

// One RMSprop step over elements [begin, end), at most Block of them, in PyTorch's order of
// operations; the square roots are taken together by sqrt_inplace. Isa: the dispatched variant
// it is inlined into (see blockwise_step). run() takes the arrays as __restrict__ parameters,
// which is what lets its loops vectorize.
template <class T, bool Decay, bool Centered, bool Momentum>
struct rmsprop_kernel : rmsprop_arrays<T>
{
    template <std::size_t Block, simd_isa Isa>
    EMBER_SIMD_INLINE EMBER_HOST_DEVICE void block(std::size_t begin, std::size_t end) const
    {
        run<Block, Isa>(begin, end, this->x, this->g, this->sq, this->buf, this->ga, this->k);
    }

    template <std::size_t Block, simd_isa Isa>
    static EMBER_SIMD_INLINE EMBER_HOST_DEVICE void
    run(std::size_t begin, std::size_t end, T* __restrict__ x, const T* __restrict__ g,
        T* __restrict__ sq, T* __restrict__ buf, T* __restrict__ ga, const rmsprop_scalars<T> k)
    {
        EMBER_NO_FP_CONTRACT
        T root[Block];
        T grad[Block];
        const std::size_t len = end - begin;
        for (std::size_t j = 0, i = begin; j < len; ++j, ++i)
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
        sqrt_inplace<Isa>(root, len);
        for (std::size_t j = 0, i = begin; j < len; ++j, ++i)
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
};

// rmsprop_kernel with the flags with_flags picks (a named functor: see sgd_launch).
template <class Device, class T>
struct rmsprop_launch
{
    std::size_t n;
    rmsprop_arrays<T> arrays;
    nn::grad_view<T> grad; // arrays.g is grad.dense

    template <bool Decay, bool Centered, bool Momentum>
    void operator()() const
    {
        update_in_parts<Device>(
            n,
            [&](std::size_t first, std::size_t last) {
                grad_pieces<Device, rmsprop_kernel<T, Decay, Centered, Momentum>>(grad, arrays,
                                                                                  first, last);
            });
    }
};

} // namespace detail

template <class T, class Device>
void rmsprop<T, Device>::check_options(const rmsprop_options& o, std::string_view where)
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

template <class T, class Device>
void rmsprop<T, Device>::write_options(const rmsprop_options& o, ordered_dict<state_value>& out)
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

template <class T, class Device>
rmsprop_options rmsprop<T, Device>::read_options(detail::dict_reader& in)
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
    in.ignored_flag("capturable");
    return o;
}

template <class T, class Device>
void rmsprop<T, Device>::update(const rmsprop_options& o, std::span<T> value,
                                const nn::grad_view<T>& grad, state_type& s, std::size_t index)
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
    detail::with_flags(
        detail::rmsprop_launch<Device, T>{n,
                                          {value.data(), grad.dense, detail::data_of(s.square_avg),
                                           detail::data_of(s.momentum_buffer),
                                           detail::data_of(s.grad_avg), k},
                                          grad},
        o.weight_decay != 0, centered, use_momentum);
}

template <class T, class Device>
void rmsprop<T, Device>::write_state(const state_type& s, const std::vector<std::int64_t>& shape,
                                     ordered_dict<state_value>& out)
{
    out.insert("step", s.step);
    out.insert("square_avg", detail::to_host<Device>(s.square_avg, shape));
    if (s.has_momentum_buffer)
        out.insert("momentum_buffer", detail::to_host<Device>(s.momentum_buffer, shape));
    if (s.has_grad_avg)
        out.insert("grad_avg", detail::to_host<Device>(s.grad_avg, shape));
}

template <class T, class Device>
auto rmsprop<T, Device>::read_state(detail::dict_reader& in, const rmsprop_options& o,
                                    const std::vector<std::int64_t>& shape) -> state_type
{
    state_type s;
    s.initialized = true;
    s.step = static_cast<std::int64_t>(in.step("step"));
    detail::from_host<Device>(*in.tensor<T>("square_avg", shape, true), s.square_avg);
    if (const host_tensor* t = in.tensor<T>("momentum_buffer", shape, o.momentum > 0))
    {
        detail::from_host<Device>(*t, s.momentum_buffer);
        s.has_momentum_buffer = true;
    }
    if (const host_tensor* t = in.tensor<T>("grad_avg", shape, o.centered))
    {
        detail::from_host<Device>(*t, s.grad_avg);
        s.has_grad_avg = true;
    }
    return s;
}

} // namespace ember::optim

// RMSprop over float on DEVICE, compiled once by ember's precompiled part
// (EMBER_OPTIMIZER_EXTERN).
#define EMBER_RMSPROP_INSTANCES(EXTERN, DEVICE)                                                    \
    EMBER_OPTIMIZER_INSTANCE(EXTERN, rmsprop, rmsprop_options, rmsprop_state, DEVICE)
EMBER_OPTIMIZER_EXTERN(EMBER_RMSPROP_INSTANCES)
