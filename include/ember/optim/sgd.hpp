#pragma once
/// @file
/// Stochastic gradient descent with optional momentum, dampening, Nesterov momentum, weight
/// decay and maximize: torch.optim.SGD's update, in its order of operations.
///
/// @code
/// ember::optim::sgd opt(model.parameters(), {.lr = 0.01, .momentum = 0.9}); // model's device
/// @endcode

#include "ember/optim/optimizer.hpp"

#include <cmath>
#include <limits>

namespace ember::optim
{

/// @brief torch.optim.SGD's arguments. `lr` has no default, as in PyTorch: leaving it out
/// throws value_error.
struct sgd_options
{
    double lr = std::numeric_limits<double>::quiet_NaN();
    double momentum = 0;
    double dampening = 0;
    double weight_decay = 0;
    bool nesterov = false;
    bool maximize = false;
};

/// @brief One parameter's SGD state: the momentum buffer (in the device's memory), absent
/// until momentum is used (PyTorch stores None in its place when momentum is 0).
template <class T, class Device = cpu>
struct sgd_state
{
    bool initialized = false;
    bool has_momentum_buffer = false;
    typename Device::template vector_type<T> momentum_buffer;
};

/// @brief torch.optim.SGD over parameters of element type T on `Device`.
template <class T = float, class Device = cpu>
class sgd : public optimizer<sgd<T, Device>, T, sgd_options, sgd_state<T, Device>, Device>
{
    using base_type = optimizer<sgd<T, Device>, T, sgd_options, sgd_state<T, Device>, Device>;
    using state_type = sgd_state<T, Device>;
    friend base_type;

public:
    using typename base_type::group_type;
    static constexpr std::string_view name = "sgd";

    /// @brief One group holding `params` (what `model.parameters()` returns).
    sgd(std::vector<nn::param_ref<T, Device>> params, const sgd_options& options)
        : base_type(detail::single_group(std::move(params), options, name))
    {
    }
    /// @brief Several groups, each with its own options, whole (see add_param_group); the
    /// first group's are defaults().
    explicit sgd(std::vector<group_type> groups) : base_type(std::move(groups)) {}

private:
    static void check_options(const sgd_options& o, std::string_view where);
    static void write_options(const sgd_options& o, ordered_dict<state_value>& out);
    static sgd_options read_options(detail::dict_reader& in);
    static void update(const sgd_options& o, std::span<T> value, const nn::grad_view<T>& grad,
                       state_type& s, std::size_t index);
    static void write_state(const state_type& s, const std::vector<std::int64_t>& shape,
                            ordered_dict<state_value>& out);
    static state_type read_state(detail::dict_reader& in, const sgd_options& o,
                                 const std::vector<std::int64_t>& shape);
};

template <class T, class Device>
sgd(std::vector<nn::param_ref<T, Device>>, const sgd_options&) -> sgd<T, Device>;
template <class T, class Device>
sgd(std::vector<param_group<T, sgd_options, Device>>) -> sgd<T, Device>;

/*******************
 * implementation  *
 *******************/

template <class T, class Device>
void sgd<T, Device>::check_options(const sgd_options& o, std::string_view where)
{
    const std::string at = std::string(where) + ": ";
    if (std::isnan(o.lr))
        throw value_error(at + "lr is required (torch.optim.SGD has no default learning rate)");
    if (o.lr < 0.0)
        throw value_error(at + "Invalid learning rate: " + detail::repr(o.lr));
    if (o.momentum < 0.0)
        throw value_error(at + "Invalid momentum value: " + detail::repr(o.momentum));
    if (o.weight_decay < 0.0)
        throw value_error(at + "Invalid weight_decay value: " + detail::repr(o.weight_decay));
    if (o.nesterov && (o.momentum <= 0 || o.dampening != 0))
        throw value_error(at + "Nesterov momentum requires a momentum and zero dampening");
}

template <class T, class Device>
void sgd<T, Device>::write_options(const sgd_options& o, ordered_dict<state_value>& out)
{
    out.insert("lr", o.lr);
    out.insert("momentum", detail::int_if_zero(o.momentum));
    out.insert("dampening", detail::int_if_zero(o.dampening));
    out.insert("weight_decay", detail::int_if_zero(o.weight_decay));
    out.insert("nesterov", o.nesterov);
    out.insert("maximize", o.maximize);
    out.insert("foreach", std::monostate{});
    out.insert("differentiable", false);
}

template <class T, class Device>
sgd_options sgd<T, Device>::read_options(detail::dict_reader& in)
{
    sgd_options o;
    o.lr = in.number("lr");
    o.momentum = in.number("momentum");
    o.dampening = in.number("dampening");
    o.weight_decay = in.number("weight_decay");
    // PyTorch's __setstate__ fills these in for state_dicts saved by older versions.
    o.nesterov = in.boolean("nesterov", false);
    o.maximize = in.boolean("maximize", false);
    in.ignored_flag("foreach");
    in.ignored_flag("differentiable");
    in.ignored_flag("fused");
    return o;
}

namespace detail
{

template <class T>
struct sgd_scalars
{
    T sign, weight_decay, buffer_momentum, keep, momentum, neg_lr;
};

// An SGD step's arrays (the parameter's, its gradient's, its state's) and scalars;
// part_from(first) is the same from element `first` on (a part of the parameter).
template <class T>
struct sgd_arrays
{
    T* x;
    const T* g;
    T* buf;
    sgd_scalars<T> k;

    sgd_arrays part_from(std::size_t first) const
    {
        return {x + first, shifted(g, first), shifted(buf, first), k};
    }
};

// One SGD step over elements [begin, end) (see blockwise_step; it needs no scratch, so Block and
// Isa change nothing in it). On the first step with momentum the buffer is zero and
// buffer_momentum 0, keep 1, so it becomes a copy of d, as PyTorch's clone. run() takes the
// arrays as __restrict__ parameters, which is what lets its loop vectorize.
template <class T, bool Decay, bool Momentum, bool Nesterov>
struct sgd_kernel : sgd_arrays<T>
{
    template <std::size_t Block, simd_isa Isa>
    EMBER_SIMD_INLINE EMBER_HOST_DEVICE void block(std::size_t begin, std::size_t end) const
    {
        run(begin, end, this->x, this->g, this->buf, this->k);
    }

    static EMBER_SIMD_INLINE EMBER_HOST_DEVICE void run(std::size_t begin, std::size_t end,
                                                        T* __restrict__ x, const T* __restrict__ g,
                                                        T* __restrict__ buf, const sgd_scalars<T> k)
    {
        EMBER_NO_FP_CONTRACT
        for (std::size_t i = begin; i < end; ++i)
        {
            T d = k.sign * g[i]; // maximize: -grad
            if constexpr (Decay)
                d = add_scaled(d, k.weight_decay, x[i]); // d_p.add(param, alpha=weight_decay)
            if constexpr (Momentum)
            {
                buf[i] = add_scaled(buf[i] * k.buffer_momentum, k.keep, d); // mul_().add_(1-τ)
                if constexpr (Nesterov)
                    d = add_scaled(d, k.momentum, buf[i]);
                else
                    d = buf[i];
            }
            x[i] = add_scaled(x[i], k.neg_lr, d); // param.add_(d_p, alpha=-lr)
        }
    }
};

// sgd_kernel with the flags with_flags picks. A named functor, not a generic lambda in update():
// nvcc rewrites a member of a class template with default arguments that contains one into
// code g++ rejects.
template <class Device, class T>
struct sgd_launch
{
    std::size_t n;
    sgd_arrays<T> arrays;
    nn::grad_view<T> grad; // arrays.g is grad.dense

    template <bool Decay, bool Momentum, bool Nesterov>
    void operator()() const
    {
        update_in_parts<Device>(n,
                                [&](std::size_t first, std::size_t last) {
                                    grad_pieces<Device, sgd_kernel<T, Decay, Momentum, Nesterov>>(
                                        grad, arrays, first, last);
                                });
    }
};

} // namespace detail

template <class T, class Device>
void sgd<T, Device>::update(const sgd_options& o, std::span<T> value, const nn::grad_view<T>& grad,
                            state_type& s, std::size_t index)
{
    const std::size_t n = value.size();
    const bool use_momentum = o.momentum != 0;
    bool first = false;
    s.initialized = true;
    if (use_momentum)
    {
        if (!s.has_momentum_buffer)
        {
            // PyTorch's first buffer is a clone of d; -0 * 0 + d is d bit for bit, a -0 in d
            // included, where +0 would turn it into +0.
            s.momentum_buffer.assign(n, T(-0.0));
            s.has_momentum_buffer = true;
            first = true;
        }
        detail::check_state_size(name, index, "momentum_buffer", s.momentum_buffer.size(), n);
    }
    // Scalars are Python floats in PyTorch, rounded to T by the tensor ops.
    detail::sgd_scalars<T> k;
    k.sign = o.maximize ? T(-1) : T(1);
    k.weight_decay = static_cast<T>(o.weight_decay);
    k.momentum = static_cast<T>(o.momentum);
    k.buffer_momentum = first ? T(0) : k.momentum;
    k.keep = first ? T(1) : static_cast<T>(1 - o.dampening);
    k.neg_lr = static_cast<T>(-o.lr);
    detail::with_flags(
        detail::sgd_launch<Device, T>{
            n, {value.data(), grad.dense, detail::data_of(s.momentum_buffer), k}, grad},
        o.weight_decay != 0, use_momentum, o.nesterov);
}

template <class T, class Device>
void sgd<T, Device>::write_state(const state_type& s, const std::vector<std::int64_t>& shape,
                                 ordered_dict<state_value>& out)
{
    if (s.has_momentum_buffer)
        out.insert("momentum_buffer", detail::to_host<Device>(s.momentum_buffer, shape));
    else
        out.insert("momentum_buffer", std::monostate{});
}

template <class T, class Device>
auto sgd<T, Device>::read_state(detail::dict_reader& in, const sgd_options&,
                                const std::vector<std::int64_t>& shape) -> state_type
{
    state_type s;
    s.initialized = true;
    if (const host_tensor* t = in.tensor<T>("momentum_buffer", shape, true, true))
    {
        detail::from_host<Device>(*t, s.momentum_buffer);
        s.has_momentum_buffer = true;
    }
    return s;
}

} // namespace ember::optim

// SGD over float on DEVICE, compiled once by ember's precompiled part (EMBER_OPTIMIZER_EXTERN).
#define EMBER_SGD_INSTANCES(EXTERN, DEVICE)                                                        \
    EMBER_OPTIMIZER_INSTANCE(EXTERN, sgd, sgd_options, sgd_state, DEVICE)
EMBER_OPTIMIZER_EXTERN(EMBER_SGD_INSTANCES)
