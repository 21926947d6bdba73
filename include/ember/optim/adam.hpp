#pragma once
/// @file
/// Adam and AdamW: torch.optim.Adam's and torch.optim.AdamW's updates (single-tensor path of
/// PyTorch 1.13), in their order of operations. They differ in weight decay only: Adam adds
/// `weight_decay * param` to the gradient (an L2 penalty), AdamW shrinks the parameter by
/// `lr * weight_decay` before the update (decoupled) and defaults to weight_decay 0.01.
///
/// @code
/// ember::optim::adam opt(model.parameters(), {.lr = 1e-3});
/// ember::optim::adamw opt2(model.parameters(), {.lr = 1e-3, .betas = {0.9, 0.95}});
/// @endcode

#include "ember/optim/optimizer.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <type_traits>

namespace ember::optim
{

/// @brief torch.optim.Adam's arguments.
struct adam_options
{
    double lr = 1e-3;
    std::array<double, 2> betas = {0.9, 0.999};
    double eps = 1e-8;
    double weight_decay = 0;
    bool amsgrad = false;
    bool maximize = false;
};

/// @brief torch.optim.AdamW's arguments (weight decay is decoupled and defaults to 0.01).
struct adamw_options
{
    double lr = 1e-3;
    std::array<double, 2> betas = {0.9, 0.999};
    double eps = 1e-8;
    double weight_decay = 1e-2;
    bool amsgrad = false;
    bool maximize = false;
};

/// @brief One parameter's Adam/AdamW state, its buffers in the device's memory. `step` is a
/// float as in PyTorch, whose step is a float32 tensor.
template <class T, class Device = cpu>
struct adam_state
{
    using vector_type = typename Device::template vector_type<T>;

    bool initialized = false;
    bool has_max_exp_avg_sq = false;
    float step = 0;
    vector_type exp_avg;
    vector_type exp_avg_sq;
    vector_type max_exp_avg_sq;
};

namespace detail
{
// The Adam family's common parts; Decoupled selects AdamW's weight decay.
template <class T, class Device, bool Decoupled, class Options>
struct adam_impl
{
    using state_type = adam_state<T, Device>;

    static void check_options(const Options& o, std::string_view where);
    static void write_options(const Options& o, ordered_dict<state_value>& out);
    static Options read_options(dict_reader& in);
    static void update(std::string_view name, const Options& o, std::span<T> value,
                       const nn::grad_view<T>& grad, state_type& s, std::size_t index);
    static void write_state(const state_type& s, const std::vector<std::int64_t>& shape,
                            ordered_dict<state_value>& out);
    static state_type read_state(dict_reader& in, const Options& o,
                                 const std::vector<std::int64_t>& shape);
};
} // namespace detail

/// @brief torch.optim.Adam over parameters of element type T on `Device`.
template <class T = float, class Device = cpu>
class adam : public optimizer<adam<T, Device>, T, adam_options, adam_state<T, Device>, Device>
{
    using base_type = optimizer<adam<T, Device>, T, adam_options, adam_state<T, Device>, Device>;
    using impl = detail::adam_impl<T, Device, false, adam_options>;
    using state_type = adam_state<T, Device>;
    friend base_type;

public:
    using typename base_type::group_type;
    static constexpr std::string_view name = "adam";

    /// @brief One group holding `params` (what `model.parameters()` returns).
    explicit adam(std::vector<nn::param_ref<T, Device>> params, const adam_options& options = {})
        : base_type(detail::single_group(std::move(params), options, name))
    {
    }
    /// @brief Several groups, each with its own options, whole (see add_param_group); the
    /// first group's are defaults().
    explicit adam(std::vector<group_type> groups) : base_type(std::move(groups)) {}

private:
    static void check_options(const adam_options& o, std::string_view where)
    {
        impl::check_options(o, where);
    }
    static void write_options(const adam_options& o, ordered_dict<state_value>& out)
    {
        impl::write_options(o, out);
    }
    static adam_options read_options(detail::dict_reader& in) { return impl::read_options(in); }
    static void update(const adam_options& o, std::span<T> value, const nn::grad_view<T>& grad,
                       state_type& s, std::size_t index)
    {
        impl::update(name, o, value, grad, s, index);
    }
    static void write_state(const state_type& s, const std::vector<std::int64_t>& shape,
                            ordered_dict<state_value>& out)
    {
        impl::write_state(s, shape, out);
    }
    static state_type read_state(detail::dict_reader& in, const adam_options& o,
                                 const std::vector<std::int64_t>& shape)
    {
        return impl::read_state(in, o, shape);
    }
};

/// @brief torch.optim.AdamW over parameters of element type T on `Device`.
template <class T = float, class Device = cpu>
class adamw : public optimizer<adamw<T, Device>, T, adamw_options, adam_state<T, Device>, Device>
{
    using base_type = optimizer<adamw<T, Device>, T, adamw_options, adam_state<T, Device>, Device>;
    using impl = detail::adam_impl<T, Device, true, adamw_options>;
    using state_type = adam_state<T, Device>;
    friend base_type;

public:
    using typename base_type::group_type;
    static constexpr std::string_view name = "adamw";

    /// @brief One group holding `params` (what `model.parameters()` returns).
    explicit adamw(std::vector<nn::param_ref<T, Device>> params, const adamw_options& options = {})
        : base_type(detail::single_group(std::move(params), options, name))
    {
    }
    /// @brief Several groups, each with its own options, whole (see add_param_group); the
    /// first group's are defaults().
    explicit adamw(std::vector<group_type> groups) : base_type(std::move(groups)) {}

private:
    static void check_options(const adamw_options& o, std::string_view where)
    {
        impl::check_options(o, where);
    }
    static void write_options(const adamw_options& o, ordered_dict<state_value>& out)
    {
        impl::write_options(o, out);
    }
    static adamw_options read_options(detail::dict_reader& in) { return impl::read_options(in); }
    static void update(const adamw_options& o, std::span<T> value, const nn::grad_view<T>& grad,
                       state_type& s, std::size_t index)
    {
        impl::update(name, o, value, grad, s, index);
    }
    static void write_state(const state_type& s, const std::vector<std::int64_t>& shape,
                            ordered_dict<state_value>& out)
    {
        impl::write_state(s, shape, out);
    }
    static state_type read_state(detail::dict_reader& in, const adamw_options& o,
                                 const std::vector<std::int64_t>& shape)
    {
        return impl::read_state(in, o, shape);
    }
};

template <class T, class Device>
adam(std::vector<nn::param_ref<T, Device>>) -> adam<T, Device>;
template <class T, class Device>
adam(std::vector<nn::param_ref<T, Device>>, const adam_options&) -> adam<T, Device>;
template <class T, class Device>
adam(std::vector<param_group<T, adam_options, Device>>) -> adam<T, Device>;
template <class T, class Device>
adamw(std::vector<nn::param_ref<T, Device>>) -> adamw<T, Device>;
template <class T, class Device>
adamw(std::vector<nn::param_ref<T, Device>>, const adamw_options&) -> adamw<T, Device>;
template <class T, class Device>
adamw(std::vector<param_group<T, adamw_options, Device>>) -> adamw<T, Device>;

/*******************
 * implementation  *
 *******************/

namespace detail
{

template <class T>
struct adam_scalars
{
    T sign, weight_decay, shrink, beta1, beta2, one_minus_beta1, one_minus_beta2;
    T bias_correction2_sqrt, eps, neg_step_size;
    double inverse_bias_correction2_sqrt; // for divided_by_bias_correction

    // bias_correction2_sqrt and what divided_by_bias_correction takes from it, set together.
    void set_bias_correction2_sqrt(T c)
    {
        bias_correction2_sqrt = c;
        inverse_bias_correction2_sqrt = 1.0 / static_cast<double>(c);
    }
};

// x / bias_correction2_sqrt, rounded as that division rounds. For float on the host it is
// float(double(x) * (1 / double(c))), with no division, and exact: the double product is within
// 2^-52 (relative) of x / c, while a quotient of two floats is never a midpoint between two
// floats nor within 2^-49 (relative) of one. (x / c = (X / C) 2^e with 24-bit integers X and C,
// a midpoint is an odd 25-bit M times 2^e', so |X 2^s - M C| is a nonzero integer, C < 2^24.)
// Both therefore round to the same float, overflow to inf included. This assumes
// round-to-nearest, the default; x = sqrt(v) is 0 or normal, and c in (0, 1] is normal.
// Why: on x86 the square root and the update's two divisions queue for one divider, which
// bounds Adam's update; this takes one of the three off it (docs/benchmarks.md). Device code
// keeps the division (many GPUs run doubles slowly), and so does double.
template <class T>
EMBER_SIMD_INLINE EMBER_HOST_DEVICE T divided_by_bias_correction(T x, const adam_scalars<T>& k)
{
#if !defined(__CUDA_ARCH__)
    if constexpr (std::is_same_v<T, float>)
        return static_cast<float>(static_cast<double>(x) * k.inverse_bias_correction2_sqrt);
#endif
    return x / k.bias_correction2_sqrt;
}

// An Adam or AdamW step's arrays (the parameter's, its gradient's, its state's) and scalars;
// part_from(first) is the same from element `first` on (a part of the parameter).
template <class T>
struct adam_arrays
{
    T* x;
    const T* g;
    T* m;
    T* v;
    T* vmax;
    adam_scalars<T> k;

    adam_arrays part_from(std::size_t first) const
    {
        return {x + first,         shifted(g, first),    shifted(m, first),
                shifted(v, first), shifted(vmax, first), k};
    }
};

// One Adam (or, Decoupled, AdamW) step over elements [begin, end), at most Block of them, in
// PyTorch's order of operations; the square roots are taken together by sqrt_inplace. Isa:
// the dispatched variant it is inlined into (see blockwise_step). run() takes the arrays as
// __restrict__ parameters, which is what lets its loops vectorize.
template <class T, bool Decoupled, bool Decay, bool Amsgrad>
struct adam_kernel : adam_arrays<T>
{
    template <std::size_t Block, simd_isa Isa>
    EMBER_SIMD_INLINE EMBER_HOST_DEVICE void block(std::size_t begin, std::size_t end) const
    {
        run<Block, Isa>(begin, end, this->x, this->g, this->m, this->v, this->vmax, this->k);
    }

    template <std::size_t Block, simd_isa Isa>
    static EMBER_SIMD_INLINE EMBER_HOST_DEVICE void
    run(std::size_t begin, std::size_t end, T* __restrict__ x, const T* __restrict__ g,
        T* __restrict__ m, T* __restrict__ v, T* __restrict__ vmax, const adam_scalars<T> k)
    {
        EMBER_NO_FP_CONTRACT
        T root[Block];
        const std::size_t len = end - begin;
        for (std::size_t j = 0, i = begin; j < len; ++j, ++i)
        {
            T gi = k.sign * g[i]; // maximize: -grad
            if constexpr (Decoupled)
                x[i] = x[i] * k.shrink; // param.mul_(1 - lr * weight_decay)
            else if constexpr (Decay)
                gi = add_scaled(gi, k.weight_decay, x[i]); // grad.add(param, alpha=weight_decay)
            m[i] = add_scaled(m[i] * k.beta1, k.one_minus_beta1, gi); // mul_().add_(alpha=1-β1)
            v[i] = v[i] * k.beta2 + k.one_minus_beta2 * gi * gi;      // mul_().addcmul_()
            if constexpr (Amsgrad)
            {
                vmax[i] = maximum(vmax[i], v[i]);
                root[j] = vmax[i];
            }
            else
                root[j] = v[i];
        }
        sqrt_inplace<Isa>(root, len);
        // (sqrt / bias_correction2_sqrt).add_(eps), then addcdiv_(value=-step_size), in one
        // loop: the division's replacement runs beside the other division (in a loop of its own
        // it saved nothing). Once bias_correction2_sqrt rounds to 1 (step 16,600 on with
        // β2 = 0.999), the division changes nothing, bit for bit, and is left out.
        if (k.bias_correction2_sqrt != T(1))
            for (std::size_t j = 0, i = begin; j < len; ++j, ++i)
            {
                const T denom = divided_by_bias_correction(root[j], k) + k.eps;
                x[i] = x[i] + k.neg_step_size * m[i] / denom;
            }
        else
            for (std::size_t j = 0, i = begin; j < len; ++j, ++i)
            {
                const T denom = root[j] + k.eps;
                x[i] = x[i] + k.neg_step_size * m[i] / denom;
            }
    }
};

// adam_kernel with the flags with_flags picks (a named functor: see sgd_launch).
template <class Device, class T, bool Decoupled>
struct adam_launch
{
    std::size_t n;
    adam_arrays<T> arrays;
    nn::grad_view<T> grad; // arrays.g is grad.dense

    template <bool Decay, bool Amsgrad>
    void operator()() const
    {
        update_in_parts<Device>(n,
                                [&](std::size_t first, std::size_t last) {
                                    grad_pieces<Device, adam_kernel<T, Decoupled, Decay, Amsgrad>>(
                                        grad, arrays, first, last);
                                });
    }
};

template <class T, class Device, bool Decoupled, class Options>
void adam_impl<T, Device, Decoupled, Options>::check_options(const Options& o,
                                                             std::string_view where)
{
    const std::string at = std::string(where) + ": ";
    if (!(0.0 <= o.lr))
        throw value_error(at + "Invalid learning rate: " + repr(o.lr));
    if (!(0.0 <= o.eps))
        throw value_error(at + "Invalid epsilon value: " + repr(o.eps));
    for (std::size_t i = 0; i < 2; ++i)
        if (!(0.0 <= o.betas[i] && o.betas[i] < 1.0))
            throw value_error(at + "Invalid beta parameter at index " + std::to_string(i) + ": " +
                              repr(o.betas[i]));
    if (!(0.0 <= o.weight_decay))
        throw value_error(at + "Invalid weight_decay value: " + repr(o.weight_decay));
}

template <class T, class Device, bool Decoupled, class Options>
void adam_impl<T, Device, Decoupled, Options>::write_options(const Options& o,
                                                             ordered_dict<state_value>& out)
{
    // Keys and order as PyTorch 1.13 prints them; Adam and AdamW differ.
    out.insert("lr", o.lr);
    out.insert("betas", std::vector<double>{o.betas[0], o.betas[1]});
    out.insert("eps", o.eps);
    if constexpr (Decoupled)
    {
        out.insert("weight_decay", o.weight_decay);
        out.insert("amsgrad", o.amsgrad);
        out.insert("foreach", std::monostate{});
        out.insert("maximize", o.maximize);
        out.insert("capturable", false);
    }
    else
    {
        out.insert("weight_decay", int_if_zero(o.weight_decay));
        out.insert("amsgrad", o.amsgrad);
        out.insert("maximize", o.maximize);
        out.insert("foreach", std::monostate{});
        out.insert("capturable", false);
        out.insert("differentiable", false);
        out.insert("fused", false);
    }
}

template <class T, class Device, bool Decoupled, class Options>
Options adam_impl<T, Device, Decoupled, Options>::read_options(dict_reader& in)
{
    Options o;
    o.lr = in.number("lr");
    o.betas = in.pair("betas");
    o.eps = in.number("eps");
    o.weight_decay = in.number("weight_decay");
    // PyTorch's __setstate__ fills these in for state_dicts saved by older versions.
    o.amsgrad = in.boolean("amsgrad", false);
    o.maximize = in.boolean("maximize", false);
    // Recent PyTorch marks its Adam (false) and AdamW (true) groups: the other one's state
    // would continue with the other weight decay.
    if (in.boolean("decoupled_weight_decay", Decoupled) != Decoupled)
        throw value_error(in.where("decoupled_weight_decay") + " is " +
                          (Decoupled ? "False: the state is Adam's; load it into optim::adam"
                                     : "True: the state is AdamW's; load it into optim::adamw"));
    in.ignored_flag("foreach");
    in.ignored_flag("capturable");
    in.ignored_flag("differentiable");
    in.ignored_flag("fused");
    return o;
}

template <class T, class Device, bool Decoupled, class Options>
void adam_impl<T, Device, Decoupled, Options>::update(std::string_view name, const Options& o,
                                                      std::span<T> value,
                                                      const nn::grad_view<T>& grad, state_type& s,
                                                      std::size_t index)
{
    const std::size_t n = value.size();
    if (!s.initialized)
    {
        s.exp_avg.assign(n, T(0));
        s.exp_avg_sq.assign(n, T(0));
        s.initialized = true;
    }
    // PyTorch creates max_exp_avg_sq at the first step when amsgrad is on; this also covers
    // amsgrad switched on later, where PyTorch would fail.
    if (o.amsgrad && !s.has_max_exp_avg_sq)
    {
        s.max_exp_avg_sq.assign(n, T(0));
        s.has_max_exp_avg_sq = true;
    }
    check_state_size(name, index, "exp_avg", s.exp_avg.size(), n);
    check_state_size(name, index, "exp_avg_sq", s.exp_avg_sq.size(), n);
    if (o.amsgrad)
        check_state_size(name, index, "max_exp_avg_sq", s.max_exp_avg_sq.size(), n);

    s.step += 1.0f;
    // Scalars in double, as Python computes them, then rounded to T by the tensor ops.
    const double step = s.step;
    const double bias_correction1 = 1 - std::pow(o.betas[0], step);
    const double bias_correction2 = 1 - std::pow(o.betas[1], step);
    const double step_size = o.lr / bias_correction1;
    adam_scalars<T> k;
    k.sign = o.maximize ? T(-1) : T(1);
    k.weight_decay = static_cast<T>(o.weight_decay);
    k.shrink = static_cast<T>(1 - o.lr * o.weight_decay);
    k.beta1 = static_cast<T>(o.betas[0]);
    k.beta2 = static_cast<T>(o.betas[1]);
    k.one_minus_beta1 = static_cast<T>(1 - o.betas[0]);
    k.one_minus_beta2 = static_cast<T>(1 - o.betas[1]);
    k.set_bias_correction2_sqrt(static_cast<T>(std::sqrt(bias_correction2)));
    k.eps = static_cast<T>(o.eps);
    k.neg_step_size = static_cast<T>(-step_size);
    with_flags(
        adam_launch<Device, T, Decoupled>{n,
                                          {value.data(), grad.dense, data_of(s.exp_avg),
                                           data_of(s.exp_avg_sq), data_of(s.max_exp_avg_sq), k},
                                          grad},
        o.weight_decay != 0, o.amsgrad);
}

template <class T, class Device, bool Decoupled, class Options>
void adam_impl<T, Device, Decoupled, Options>::write_state(const state_type& s,
                                                           const std::vector<std::int64_t>& shape,
                                                           ordered_dict<state_value>& out)
{
    host_tensor step(dtype::float32, {});
    step.data<float>()[0] = s.step;
    out.insert("step", std::move(step));
    out.insert("exp_avg", to_host<Device>(s.exp_avg, shape));
    out.insert("exp_avg_sq", to_host<Device>(s.exp_avg_sq, shape));
    if (s.has_max_exp_avg_sq)
        out.insert("max_exp_avg_sq", to_host<Device>(s.max_exp_avg_sq, shape));
}

template <class T, class Device, bool Decoupled, class Options>
auto adam_impl<T, Device, Decoupled, Options>::read_state(dict_reader& in, const Options& o,
                                                          const std::vector<std::int64_t>& shape)
    -> state_type
{
    state_type s;
    s.initialized = true;
    s.step = static_cast<float>(in.step("step"));
    from_host<Device>(*in.tensor<T>("exp_avg", shape, true), s.exp_avg);
    from_host<Device>(*in.tensor<T>("exp_avg_sq", shape, true), s.exp_avg_sq);
    if (const host_tensor* t = in.tensor<T>("max_exp_avg_sq", shape, o.amsgrad))
    {
        from_host<Device>(*t, s.max_exp_avg_sq);
        s.has_max_exp_avg_sq = true;
    }
    return s;
}

} // namespace detail

} // namespace ember::optim

// Adam, AdamW and their common part over float on DEVICE, compiled once by ember's precompiled
// part (EMBER_OPTIMIZER_EXTERN).
#define EMBER_ADAM_INSTANCES(EXTERN, DEVICE)                                                       \
    EXTERN template struct ember::optim::detail::adam_impl<float, DEVICE, false,                   \
                                                           ember::optim::adam_options>;            \
    EXTERN template struct ember::optim::detail::adam_impl<float, DEVICE, true,                    \
                                                           ember::optim::adamw_options>;           \
    EMBER_OPTIMIZER_INSTANCE(EXTERN, adam, adam_options, adam_state, DEVICE)                       \
    EMBER_OPTIMIZER_INSTANCE(EXTERN, adamw, adamw_options, adam_state, DEVICE)
EMBER_OPTIMIZER_EXTERN(EMBER_ADAM_INSTANCES)
