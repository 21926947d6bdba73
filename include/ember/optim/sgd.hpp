#pragma once
/// @file
/// Stochastic gradient descent with optional momentum, dampening, Nesterov momentum, weight
/// decay and maximize: torch.optim.SGD's update, in its order of operations.
///
/// @code
/// ember::optim::sgd opt(model.parameters(), {.lr = 0.01, .momentum = 0.9});
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

/// @brief One parameter's SGD state: the momentum buffer, absent until momentum is used
/// (PyTorch stores None in its place when momentum is 0).
template <class T>
struct sgd_state
{
    bool initialized = false;
    bool has_momentum_buffer = false;
    std::vector<T> momentum_buffer;
};

/// @brief torch.optim.SGD over parameters of element type T.
template <class T = float>
class sgd : public optimizer<sgd<T>, T, sgd_options, sgd_state<T>>
{
    using base_type = optimizer<sgd<T>, T, sgd_options, sgd_state<T>>;
    friend base_type;

public:
    using typename base_type::group_type;
    static constexpr std::string_view name = "sgd";

    /// @brief One group holding `params` (what `model.parameters()` returns).
    sgd(std::vector<nn::param_ref<T>> params, const sgd_options& options)
        : base_type(detail::single_group(std::move(params), options, name))
    {
    }
    /// @brief Several groups, each with its own options.
    explicit sgd(std::vector<group_type> groups) : base_type(std::move(groups)) {}

private:
    static void check_options(const sgd_options& o, std::string_view where);
    static void write_options(const sgd_options& o, ordered_dict<state_value>& out);
    static sgd_options read_options(detail::dict_reader& in);
    static void update(const sgd_options& o, std::span<T> value, std::span<const T> grad,
                       sgd_state<T>& s, std::size_t index);
    static void write_state(const sgd_state<T>& s, const std::vector<std::int64_t>& shape,
                            ordered_dict<state_value>& out);
    static sgd_state<T> read_state(detail::dict_reader& in, const sgd_options& o,
                                   const std::vector<std::int64_t>& shape);
};

template <class T>
sgd(std::vector<nn::param_ref<T>>, const sgd_options&) -> sgd<T>;
template <class T>
sgd(std::vector<param_group<T, sgd_options>>) -> sgd<T>;

/*******************
 * implementation  *
 *******************/

template <class T>
void sgd<T>::check_options(const sgd_options& o, std::string_view where)
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

template <class T>
void sgd<T>::write_options(const sgd_options& o, ordered_dict<state_value>& out)
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

template <class T>
sgd_options sgd<T>::read_options(detail::dict_reader& in)
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
    return o;
}

namespace detail
{
// One SGD step over n elements. On the first step with momentum the buffer is zero and
// buffer_momentum 0, keep 1, so it becomes a copy of d, as PyTorch's clone.
template <class T, bool Decay, bool Momentum, bool Nesterov>
void sgd_kernel(std::size_t n, T* __restrict x, const T* __restrict g, T* __restrict buf, T sign,
                T weight_decay, T buffer_momentum, T keep, T momentum, T neg_lr)
{
    for (std::size_t i = 0; i < n; ++i)
    {
        T d = sign * g[i]; // maximize: -grad
        if constexpr (Decay)
            d = add_scaled(d, weight_decay, x[i]); // d_p.add(param, alpha=weight_decay)
        if constexpr (Momentum)
        {
            buf[i] = add_scaled(buf[i] * buffer_momentum, keep, d); // mul_().add_(alpha=1-τ)
            if constexpr (Nesterov)
                d = add_scaled(d, momentum, buf[i]);
            else
                d = buf[i];
        }
        x[i] = add_scaled(x[i], neg_lr, d); // param.add_(d_p, alpha=-lr)
    }
}
} // namespace detail

template <class T>
void sgd<T>::update(const sgd_options& o, std::span<T> value, std::span<const T> grad,
                    sgd_state<T>& s, std::size_t index)
{
    const std::size_t n = value.size();
    const bool use_momentum = o.momentum != 0;
    bool first = false;
    s.initialized = true;
    if (use_momentum)
    {
        if (!s.has_momentum_buffer)
        {
            s.momentum_buffer.assign(n, T(0));
            s.has_momentum_buffer = true;
            first = true;
        }
        detail::check_state_size(name, index, "momentum_buffer", s.momentum_buffer.size(), n);
    }
    // Scalars are Python floats in PyTorch, rounded to T by the tensor ops.
    const T sign = o.maximize ? T(-1) : T(1);
    const T weight_decay = static_cast<T>(o.weight_decay);
    const T momentum = static_cast<T>(o.momentum);
    const T buffer_momentum = first ? T(0) : momentum;
    const T keep = first ? T(1) : static_cast<T>(1 - o.dampening);
    const T neg_lr = static_cast<T>(-o.lr);
    T* x = value.data();
    const T* g = grad.data();
    T* buf = s.momentum_buffer.data();
    detail::with_flags(
        [&]<bool Decay, bool Momentum, bool Nesterov>()
        {
            detail::sgd_kernel<T, Decay, Momentum, Nesterov>(
                n, x, g, buf, sign, weight_decay, buffer_momentum, keep, momentum, neg_lr);
        },
        o.weight_decay != 0, use_momentum, o.nesterov);
}

template <class T>
void sgd<T>::write_state(const sgd_state<T>& s, const std::vector<std::int64_t>& shape,
                         ordered_dict<state_value>& out)
{
    if (s.has_momentum_buffer)
        out.insert("momentum_buffer",
                   detail::to_host(std::span<const T>(s.momentum_buffer), shape));
    else
        out.insert("momentum_buffer", std::monostate{});
}

template <class T>
sgd_state<T> sgd<T>::read_state(detail::dict_reader& in, const sgd_options&,
                                const std::vector<std::int64_t>& shape)
{
    sgd_state<T> s;
    s.initialized = true;
    if (const host_tensor* t = in.tensor<T>("momentum_buffer", shape, true, true))
    {
        auto data = t->data<T>();
        s.momentum_buffer.assign(data.begin(), data.end());
        s.has_momentum_buffer = true;
    }
    return s;
}

} // namespace ember::optim
