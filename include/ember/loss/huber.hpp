#pragma once
/// @file
/// `torch.nn.HuberLoss` and `torch.nn.SmoothL1Loss`: quadratic near zero, linear beyond a
/// threshold, so outliers pull with a bounded gradient.

#include "ember/core/error.hpp"
#include "ember/loss/loss_base.hpp"

#include <cmath>
#include <string>
#include <string_view>

namespace ember::nn
{

/// @brief Options of huber_loss: `delta` > 0, where the loss turns from quadratic to linear.
struct huber_options
{
    double delta = 1.0;
};

/// @brief Options of smooth_l1_loss: `beta` >= 0; 0 makes it l1_loss, as in PyTorch (but for
/// the gradient where input equals target: see smooth_l1_loss).
struct smooth_l1_options
{
    double beta = 1.0;
};

/// @brief `torch.nn.HuberLoss`: with d = input - target, 0.5 d^2 where |d| < delta, else
/// delta (|d| - 0.5 delta). forward(), losses() and backward() behave as for mse_loss.
/// @code
/// ember::nn::huber_loss<> loss_fn(ember::nn::reduction::sum, {.delta = 0.5});
/// @endcode
template <class T = float, std::size_t N = 2, class Device = cpu>
class huber_loss : public detail::elementwise_loss<huber_loss<T, N, Device>, T, N, Device>
{
    using base_type = detail::elementwise_loss<huber_loss<T, N, Device>, T, N, Device>;
    friend base_type;

public:
    /// @brief What element() needs of the options, in T.
    struct params_type
    {
        T delta;
    };
    static constexpr std::string_view name = "huber_loss";

    /// @throws value_error unless delta > 0.
    explicit huber_loss(nn::reduction r = nn::reduction::mean, huber_options options = {});
    explicit huber_loss(huber_options options) : huber_loss(nn::reduction::mean, options) {}

    const huber_options& options() const noexcept { return m_options; }

    /// @brief The loss of one element and its derivative `dx` (callable in kernels).
    static EMBER_HOST_DEVICE T element(T x, T y, std::size_t, T& dx, params_type p) noexcept;

private:
    params_type params() const noexcept { return {m_delta}; }

    huber_options m_options;
    T m_delta;
};

/// @brief `torch.nn.SmoothL1Loss`: with d = input - target, 0.5 d^2 / beta where |d| < beta,
/// else |d| - 0.5 beta; beta = 0 is l1_loss, except that its gradient where d = 0 is -1, as
/// PyTorch 1.13's. Equals huber_loss(delta = beta) / beta.
/// forward(), losses() and backward() behave as for mse_loss.
template <class T = float, std::size_t N = 2, class Device = cpu>
class smooth_l1_loss : public detail::elementwise_loss<smooth_l1_loss<T, N, Device>, T, N, Device>
{
    using base_type = detail::elementwise_loss<smooth_l1_loss<T, N, Device>, T, N, Device>;
    friend base_type;

public:
    /// @brief What element() needs of the options, in T.
    struct params_type
    {
        T beta;
    };
    static constexpr std::string_view name = "smooth_l1_loss";

    /// @throws value_error when beta < 0.
    explicit smooth_l1_loss(nn::reduction r = nn::reduction::mean, smooth_l1_options options = {});
    explicit smooth_l1_loss(smooth_l1_options options)
        : smooth_l1_loss(nn::reduction::mean, options)
    {
    }

    const smooth_l1_options& options() const noexcept { return m_options; }

    /// @brief The loss of one element and its derivative `dx` (callable in kernels).
    static EMBER_HOST_DEVICE T element(T x, T y, std::size_t, T& dx, params_type p) noexcept;

private:
    params_type params() const noexcept { return {m_beta}; }

    smooth_l1_options m_options;
    T m_beta;
};

/*******************
 * implementation  *
 *******************/

template <class T, std::size_t N, class Device>
huber_loss<T, N, Device>::huber_loss(nn::reduction r, huber_options options)
    : base_type(r), m_options(options), m_delta(static_cast<T>(options.delta))
{
    if (!(options.delta > 0))
        throw value_error("huber_loss: delta must be positive, got " +
                          std::to_string(options.delta));
}

template <class T, std::size_t N, class Device>
EMBER_HOST_DEVICE T huber_loss<T, N, Device>::element(T x, T y, std::size_t, T& dx,
                                                      params_type p) noexcept
{
    const T d = x - y;
    const T z = std::abs(d);
    if (z < p.delta)
    {
        dx = d;
        return T(0.5) * z * z;
    }
    dx = d < 0 ? -p.delta : (d > 0 ? p.delta : d); // NaN stays NaN, as in PyTorch
    return p.delta * (z - T(0.5) * p.delta);
}

template <class T, std::size_t N, class Device>
smooth_l1_loss<T, N, Device>::smooth_l1_loss(nn::reduction r, smooth_l1_options options)
    : base_type(r), m_options(options), m_beta(static_cast<T>(options.beta))
{
    if (!(options.beta >= 0))
        throw value_error("smooth_l1_loss: beta must be non-negative, got " +
                          std::to_string(options.beta));
}

template <class T, std::size_t N, class Device>
EMBER_HOST_DEVICE T smooth_l1_loss<T, N, Device>::element(T x, T y, std::size_t, T& dx,
                                                          params_type p) noexcept
{
    const T d = x - y;
    const T z = std::abs(d);
    if (z < p.beta) // never for beta = 0, which leaves |d|
    {
        dx = d / p.beta;
        return T(0.5) * z * z / p.beta;
    }
    // PyTorch 1.13's cpu backward: -1 where d <= -beta, 1 where d >= beta, so beta = 0 gives
    // d = 0 the -1 (where l1_loss gives 0); a NaN difference fails both and stays NaN.
    dx = d > 0 ? T(1) : (d <= 0 ? T(-1) : d);
    return z - T(0.5) * p.beta;
}

} // namespace ember::nn
