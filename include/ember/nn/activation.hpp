#pragma once
/// @file
/// Activation modules: relu, leaky_relu, sigmoid, tanh, gelu (elementwise, any rank) and
/// softmax, log_softmax (over the last axis). Each computes what PyTorch's module of the same
/// name computes, with PyTorch's gradient formulas, on any device: the formulas are kernels
/// (see device/kernel.hpp), one loop body per element or per row.
///
/// `nn::tanh` and `nn::sigmoid` are classes, named after torch.nn.Tanh and torch.nn.Sigmoid.
/// Inside namespace ember::nn an unqualified call `tanh(x)` therefore finds the class, not the
/// function (and suppresses argument-dependent lookup): write `std::tanh` or `xt::tanh` there.

#include "ember/core/error.hpp"
#include "ember/core/tensor.hpp"
#include "ember/device/cpu.hpp"
#include "ember/device/kernel.hpp"
#include "ember/nn/module.hpp"

#include <cmath>
#include <cstddef>
#include <numbers>
#include <string>
#include <string_view>

namespace ember::nn
{

namespace detail
{
/// Shared plumbing of the elementwise activations: output and gradient buffers, the shape check
/// and the no_grad rule. `Derived` provides `function_type function() const`, a value the
/// kernels copy, whose `EMBER_HOST_DEVICE` members are `T apply(T x)` and
/// `T derivative(T x, T y)` (x the input, y the output), and `static constexpr bool
/// needs_input`: when false, backward reads only the output, which forward keeps anyway, so
/// nothing extra is cached. Such a function may also provide `T gradient(T dy, T y)`, used
/// instead of `dy * derivative(x, y)`.
template <class Derived, class T, std::size_t N, class Device>
class elementwise : public nn::module<Derived, Device>
{
public:
    using value_type = T;
    using device_type = Device;
    using tensor_type = typename Device::template tensor_type<T, N>;

    template <class V>
    void visit(V&&)
    {
    }

    const tensor_type& forward(const tensor_type& x);
    const tensor_type& backward(const tensor_type& dy);

private:
    bool m_cached = false;
    tensor_type m_input;
    tensor_type m_output;
    tensor_type m_input_grad;
};
} // namespace detail

/// @brief max(0, x) (torch.nn.ReLU).
template <class T = float, std::size_t N = 2, class Device = cpu>
class relu : public detail::elementwise<relu<T, N, Device>, T, N, Device>
{
public:
    static constexpr std::string_view name = "relu";
    static constexpr bool needs_input = false;

    /// @brief The formulas, as kernels use them.
    struct function_type
    {
        // `x < 0 ? 0 : x` lets NaN through, as torch.relu does.
        EMBER_HOST_DEVICE T apply(T x) const noexcept { return x < T(0) ? T(0) : x; }
        EMBER_HOST_DEVICE T derivative(T, T y) const noexcept { return y <= T(0) ? T(0) : T(1); }
        // PyTorch's threshold_backward: exactly 0 where y <= 0 (g * 0 would be NaN for an
        // infinite g), else the gradient, which a NaN output lets through. A select, which
        // vectorizes; g * derivative() kept a branch that mispredicts on every other element.
        EMBER_HOST_DEVICE T gradient(T g, T y) const noexcept { return y <= T(0) ? T(0) : g; }
    };
    function_type function() const noexcept { return {}; }
};

/// @brief x for x > 0, negative_slope * x otherwise (torch.nn.LeakyReLU).
template <class T = float, std::size_t N = 2, class Device = cpu>
class leaky_relu : public detail::elementwise<leaky_relu<T, N, Device>, T, N, Device>
{
public:
    static constexpr std::string_view name = "leaky_relu";
    static constexpr bool needs_input = true;

    explicit leaky_relu(double negative_slope = 0.01) noexcept
        : m_slope(static_cast<T>(negative_slope))
    {
    }
    T negative_slope() const noexcept { return m_slope; }

    /// @brief The formulas, as kernels use them.
    struct function_type
    {
        T slope;
        EMBER_HOST_DEVICE T apply(T x) const noexcept { return x > T(0) ? x : x * slope; }
        EMBER_HOST_DEVICE T derivative(T x, T) const noexcept { return x > T(0) ? T(1) : slope; }
    };
    function_type function() const noexcept { return {m_slope}; }

private:
    T m_slope;
};

/// @brief 1 / (1 + exp(-x)) (torch.nn.Sigmoid).
template <class T = float, std::size_t N = 2, class Device = cpu>
class sigmoid : public detail::elementwise<sigmoid<T, N, Device>, T, N, Device>
{
public:
    static constexpr std::string_view name = "sigmoid";
    static constexpr bool needs_input = false;

    /// @brief The formulas, as kernels use them.
    struct function_type
    {
        EMBER_HOST_DEVICE T apply(T x) const noexcept { return T(1) / (T(1) + std::exp(-x)); }
        EMBER_HOST_DEVICE T derivative(T, T y) const noexcept { return (T(1) - y) * y; }
    };
    function_type function() const noexcept { return {}; }
};

/// @brief Hyperbolic tangent (torch.nn.Tanh). See the file comment about the name.
template <class T = float, std::size_t N = 2, class Device = cpu>
class tanh : public detail::elementwise<tanh<T, N, Device>, T, N, Device>
{
public:
    static constexpr std::string_view name = "tanh";
    static constexpr bool needs_input = false;

    /// @brief The formulas, as kernels use them.
    struct function_type
    {
        EMBER_HOST_DEVICE T apply(T x) const noexcept { return std::tanh(x); }
        EMBER_HOST_DEVICE T derivative(T, T y) const noexcept { return T(1) - y * y; }
    };
    function_type function() const noexcept { return {}; }
};

/// @brief How gelu evaluates the Gaussian CDF: exactly with erf, or by PyTorch's tanh formula.
enum class gelu_approximation
{
    none,
    tanh
};

/// @brief x * Phi(x) (torch.nn.GELU), exact by default; `gelu("tanh")` or
/// `gelu(gelu_approximation::tanh)` uses 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
template <class T = float, std::size_t N = 2, class Device = cpu>
class gelu : public detail::elementwise<gelu<T, N, Device>, T, N, Device>
{
public:
    static constexpr std::string_view name = "gelu";
    static constexpr bool needs_input = true;

    explicit gelu(gelu_approximation approximate = gelu_approximation::none) noexcept
        : m_approximate(approximate)
    {
    }
    /// @brief PyTorch's spelling: "none" or "tanh"; anything else throws value_error.
    explicit gelu(std::string_view approximate);

    gelu_approximation approximate() const noexcept { return m_approximate; }

    /// @brief The formulas, as kernels use them.
    struct function_type
    {
        bool tanh_approximation;
        EMBER_HOST_DEVICE T apply(T x) const noexcept;
        EMBER_HOST_DEVICE T derivative(T x, T y) const noexcept;
    };
    function_type function() const noexcept { return {m_approximate == gelu_approximation::tanh}; }

private:
    gelu_approximation m_approximate;
};

/// @brief exp(x_i) / sum_j exp(x_j) along the last axis (torch.nn.Softmax(dim=-1)), computed
/// after subtracting each row's maximum so large inputs do not overflow.
template <class T = float, std::size_t N = 2, class Device = cpu>
class softmax : public nn::module<softmax<T, N, Device>, Device>
{
    static_assert(N >= 1, "ember::nn::softmax: the input needs at least one axis");

public:
    using value_type = T;
    using device_type = Device;
    using tensor_type = typename Device::template tensor_type<T, N>;

    template <class V>
    void visit(V&&)
    {
    }
    const tensor_type& forward(const tensor_type& x);
    /// @brief dx = y * (dy - sum(dy * y)) per row.
    const tensor_type& backward(const tensor_type& dy);

private:
    bool m_cached = false;
    tensor_type m_output;
    tensor_type m_input_grad;
};

/// @brief x_i - log(sum_j exp(x_j)) along the last axis (torch.nn.LogSoftmax(dim=-1)),
/// numerically stable.
template <class T = float, std::size_t N = 2, class Device = cpu>
class log_softmax : public nn::module<log_softmax<T, N, Device>, Device>
{
    static_assert(N >= 1, "ember::nn::log_softmax: the input needs at least one axis");

public:
    using value_type = T;
    using device_type = Device;
    using tensor_type = typename Device::template tensor_type<T, N>;

    template <class V>
    void visit(V&&)
    {
    }
    const tensor_type& forward(const tensor_type& x);
    /// @brief dx = dy - exp(y) * sum(dy) per row.
    const tensor_type& backward(const tensor_type& dy);

private:
    bool m_cached = false;
    tensor_type m_output;
    tensor_type m_input_grad;
};

/*******************
 * implementation  *
 *******************/

namespace detail
{
inline void throw_backward_without_forward(std::string_view name)
{
    throw error(std::string(name) +
                ": backward() needs a forward() run with gradients enabled; the last forward "
                "ran under no_grad or never ran");
}

template <class Derived, class T, std::size_t N, class Device>
auto elementwise<Derived, T, N, Device>::forward(const tensor_type& x) -> const tensor_type&
{
    const typename Derived::function_type f = this->derived().function();
    m_cached = this->caching();
    // The input is kept before the output is written: x may be this module's own output
    // (act(act(x))), which the loop below overwrites.
    if constexpr (Derived::needs_input)
        if (m_cached)
            assign<Device>(m_input, x);
    resize_if_needed(m_output, x.shape());
    const T* in = x.data();
    T* out = m_output.data();
    Device::for_each(
        x.size(), EMBER_KERNEL(std::size_t i) { out[i] = f.apply(in[i]); });
    return m_output;
}

template <class Derived, class T, std::size_t N, class Device>
auto elementwise<Derived, T, N, Device>::backward(const tensor_type& dy) -> const tensor_type&
{
    using function_type = typename Derived::function_type;
    const function_type f = this->derived().function();
    if (!m_cached)
        throw_backward_without_forward(Derived::name);
    if (dy.shape() != m_output.shape()) // the message is built only on failure
        check_shape(dy.shape(), m_output.shape(),
                    std::string(Derived::name) + ": backward gradient");
    resize_if_needed(m_input_grad, dy.shape());
    const T* g = dy.data();
    const T* y = m_output.data();
    T* dx = m_input_grad.data();
    const std::size_t n = dy.size();
    if constexpr (Derived::needs_input)
    {
        const T* x = m_input.data();
        Device::for_each(
            n, EMBER_KERNEL(std::size_t i) { dx[i] = g[i] * f.derivative(x[i], y[i]); });
    }
    else if constexpr (requires(const function_type& h) { h.gradient(T(0), T(0)); })
    {
        Device::for_each(
            n, EMBER_KERNEL(std::size_t i) {
                const T gi = g[i]; // both loads unconditional, so the select vectorizes
                const T yi = y[i];
                dx[i] = f.gradient(gi, yi);
            });
    }
    else
    {
        Device::for_each(
            n, EMBER_KERNEL(std::size_t i) { dx[i] = g[i] * f.derivative(T(0), y[i]); });
    }
    return m_input_grad;
}

// Rows of the last axis: a tensor of shape [..., d] is size / d rows of d contiguous values.
template <class S>
std::size_t last_extent(const S& shape) noexcept
{
    return shape[shape.size() - 1];
}
} // namespace detail

template <class T, std::size_t N, class Device>
gelu<T, N, Device>::gelu(std::string_view approximate)
{
    if (approximate == "none")
        m_approximate = gelu_approximation::none;
    else if (approximate == "tanh")
        m_approximate = gelu_approximation::tanh;
    else
        throw value_error("gelu: approximate must be \"none\" or \"tanh\", got \"" +
                          std::string(approximate) + "\"");
}

namespace detail
{
// PyTorch's GeluKernel constants, formed from correctly rounded values exactly as its M_SQRT2,
// M_2_SQRTPI and M_SQRT1_2 macros are (2 / sqrt(pi) and sqrt(2) / 2 are exact scalings).
inline constexpr double gelu_sqrt1_2 = std::numbers::sqrt2 / 2;
inline constexpr double gelu_2_sqrtpi = 2 * std::numbers::inv_sqrtpi;
inline constexpr double gelu_beta = std::numbers::sqrt2 * gelu_2_sqrtpi * 0.5;
inline constexpr double gelu_alpha = gelu_2_sqrtpi * gelu_sqrt1_2 * 0.5;
inline constexpr double gelu_kappa = 0.044715;
} // namespace detail

// The formulas are PyTorch's GeluKernel. On float tensors of more than one element PyTorch
// 1.13 runs a vectorized erf less exact than std::erf: in the tails the two differ by hundreds
// of ulps (x = -3: 384), and ember's is the nearer to the exact value; in double they agree.
template <class T, std::size_t N, class Device>
EMBER_HOST_DEVICE T gelu<T, N, Device>::function_type::apply(T x) const noexcept
{
    if (tanh_approximation)
    {
        const T beta = static_cast<T>(detail::gelu_beta);
        const T kappa = static_cast<T>(detail::gelu_kappa);
        const T x_cube = x * x * x;
        const T inner = beta * (x + kappa * x_cube);
        return T(0.5) * x * (T(1) + std::tanh(inner));
    }
    return x * T(0.5) * (T(1) + std::erf(x * static_cast<T>(detail::gelu_sqrt1_2)));
}

template <class T, std::size_t N, class Device>
EMBER_HOST_DEVICE T gelu<T, N, Device>::function_type::derivative(T x, T) const noexcept
{
    if (tanh_approximation)
    {
        const T beta = static_cast<T>(detail::gelu_beta);
        const T kappa = static_cast<T>(detail::gelu_kappa);
        const T x_sq = x * x;
        const T x_cube = x_sq * x;
        const T inner = beta * (x + kappa * x_cube);
        const T tanh_inner = std::tanh(inner);
        const T left = T(0.5) * x;
        const T right = T(1) + tanh_inner;
        const T left_derivative = T(0.5) * right;
        const T tanh_derivative = T(1) - tanh_inner * tanh_inner;
        const T inner_derivative = beta * (T(1) + T(3) * kappa * x_sq);
        const T right_derivative = left * tanh_derivative * inner_derivative;
        return left_derivative + right_derivative;
    }
    const T cdf = T(0.5) * (T(1) + std::erf(x * static_cast<T>(detail::gelu_sqrt1_2)));
    const T pdf = static_cast<T>(detail::gelu_alpha) * std::exp(T(-0.5) * x * x);
    return cdf + x * pdf;
}

// Softmax and log_softmax run one kernel per row of the last axis, each row in index order
// (on cpu the rows go in order too, so results are what a plain loop gives).

template <class T, std::size_t N, class Device>
auto softmax<T, N, Device>::forward(const tensor_type& x) -> const tensor_type&
{
    resize_if_needed(m_output, x.shape());
    const std::size_t d = detail::last_extent(x.shape());
    const std::size_t rows = d == 0 ? 0 : x.size() / d;
    const T* in = x.data();
    T* out = m_output.data();
    Device::for_each(
        rows, EMBER_KERNEL(std::size_t r) {
            const T* xr = in + r * d;
            T* yr = out + r * d;
            const T mx = ember::detail::row_max(xr, d);
            T sum = 0;
            for (std::size_t j = 0; j < d; ++j)
            {
                yr[j] = std::exp(xr[j] - mx);
                sum += yr[j];
            }
            const T inv = T(1) / sum;
            for (std::size_t j = 0; j < d; ++j)
                yr[j] *= inv;
        });
    m_cached = this->caching();
    return m_output;
}

template <class T, std::size_t N, class Device>
auto softmax<T, N, Device>::backward(const tensor_type& dy) -> const tensor_type&
{
    if (!m_cached)
        detail::throw_backward_without_forward("softmax");
    check_shape(dy.shape(), m_output.shape(), "softmax: backward gradient");
    resize_if_needed(m_input_grad, dy.shape());
    const std::size_t d = detail::last_extent(dy.shape());
    const std::size_t rows = d == 0 ? 0 : dy.size() / d;
    const T* gp = dy.data();
    const T* yp = m_output.data();
    T* dxp = m_input_grad.data();
    Device::for_each(
        rows, EMBER_KERNEL(std::size_t r) {
            const T* g = gp + r * d;
            const T* y = yp + r * d;
            T* dx = dxp + r * d;
            T dot = 0;
            for (std::size_t j = 0; j < d; ++j)
                dot += g[j] * y[j];
            for (std::size_t j = 0; j < d; ++j)
                dx[j] = y[j] * (g[j] - dot);
        });
    return m_input_grad;
}

template <class T, std::size_t N, class Device>
auto log_softmax<T, N, Device>::forward(const tensor_type& x) -> const tensor_type&
{
    resize_if_needed(m_output, x.shape());
    const std::size_t d = detail::last_extent(x.shape());
    const std::size_t rows = d == 0 ? 0 : x.size() / d;
    const T* in = x.data();
    T* out = m_output.data();
    Device::for_each(
        rows, EMBER_KERNEL(std::size_t r) {
            const T* xr = in + r * d;
            T* yr = out + r * d;
            const T mx = ember::detail::row_max(xr, d);
            T sum = 0;
            for (std::size_t j = 0; j < d; ++j)
                sum += std::exp(xr[j] - mx);
            // (x - max) - log(sum), PyTorch's order: x - (max + log(sum)) would round the
            // shift at the scale of max and lose digits for large logits.
            const T log_sum = std::log(sum);
            for (std::size_t j = 0; j < d; ++j)
                yr[j] = (xr[j] - mx) - log_sum;
        });
    m_cached = this->caching();
    return m_output;
}

template <class T, std::size_t N, class Device>
auto log_softmax<T, N, Device>::backward(const tensor_type& dy) -> const tensor_type&
{
    if (!m_cached)
        detail::throw_backward_without_forward("log_softmax");
    check_shape(dy.shape(), m_output.shape(), "log_softmax: backward gradient");
    resize_if_needed(m_input_grad, dy.shape());
    const std::size_t d = detail::last_extent(dy.shape());
    const std::size_t rows = d == 0 ? 0 : dy.size() / d;
    const T* gp = dy.data();
    const T* yp = m_output.data();
    T* dxp = m_input_grad.data();
    Device::for_each(
        rows, EMBER_KERNEL(std::size_t r) {
            const T* g = gp + r * d;
            const T* y = yp + r * d;
            T* dx = dxp + r * d;
            T sum = 0;
            for (std::size_t j = 0; j < d; ++j)
                sum += g[j];
            for (std::size_t j = 0; j < d; ++j)
                dx[j] = g[j] - std::exp(y[j]) * sum;
        });
    return m_input_grad;
}

} // namespace ember::nn
