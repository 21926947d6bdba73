#pragma once
/// @file
/// Gradient clipping, PyTorch's torch.nn.utils.clip_grad_norm_ and clip_grad_value_, over the
/// parameters an optimizer holds, on whatever device they live.
///
/// ```cpp
/// loss_fn.backward(); model.backward(loss_fn.grad());
/// const float norm = ember::nn::clip_grad_norm_(model.parameters(), 1.0);
/// opt.step();
/// ```
///
/// As in PyTorch, frozen parameters (requires_grad false, whose grad PyTorch leaves None) and
/// parameters no backward has reached (has_grad() false: a None grad) are skipped. (One
/// difference: a parameter frozen after a backward keeps its gradient in PyTorch, which counts it
/// until `zero_grad(set_to_none=True)`; ember skips every frozen parameter, as its optimizers do,
/// since a hand-written backward may write a frozen parameter's gradient.) The total norm
/// is the norm of the per-parameter norms, each rounded to the grads' type; and the grads are
/// scaled by min(max_norm / (total_norm + 1e-6), 1) computed in that type as PyTorch computes it
/// (`(1 / (total_norm + 1e-6)) * max_norm`). Sums accumulate in double, so a float32 norm is
/// the more accurate one and differs from PyTorch's, which sums in float32, by as much as its
/// float32 sums are off: a few ulps for small tensors, hundreds for 1-norms over 75,000
/// elements (47757.578 against 47758.078; relative 2.6e-5 for p = 0.5), and the clipped
/// gradients with it. Float64 norms agree with PyTorch's to an ulp. Each sum is rounded to the
/// grads' type before its root, so a sum PyTorch's overflows (float grads whose 2-norm passes
/// 1.8e19) makes the norm infinite as in PyTorch. Unlike 1.13, a negative max_norm or
/// clip_value is refused (1.13 flips the gradients' signs).

#include "ember/core/error.hpp"
#include "ember/device/kernel.hpp"
#include "ember/nn/parameter.hpp"

#include <cmath>
#include <cstddef>
#include <limits>
#include <span>
#include <string>
#include <vector>

namespace ember::nn
{

/// @brief Scales the gradients of `params` so that their total `norm_type`-norm (as if they
/// were one vector; `norm_type` may be infinity) is at most `max_norm`; returns the total
/// norm before clipping. With `error_if_nonfinite`, a NaN or infinite total norm throws
/// value_error and leaves the gradients as they were. Throws value_error for a negative or NaN
/// max_norm and a NaN norm_type.
template <class T, class Device>
T clip_grad_norm_(const std::vector<param_ref<T, Device>>& params, double max_norm,
                  double norm_type = 2.0, bool error_if_nonfinite = false);

/// @brief Clamps every gradient element of `params` into [-clip_value, clip_value] (NaN stays
/// NaN). Throws value_error for a negative or NaN clip_value.
template <class T, class Device>
void clip_grad_value_(const std::vector<param_ref<T, Device>>& params, double clip_value);

/*******************
 * implementation  *
 *******************/

namespace detail
{

/// @brief The largest (or smallest) |x| of a range, shaped as a sum so that Device::sum
/// reduces it on every device: `+` keeps the extreme, NaN wins (like torch.max), and Acc(0)
/// is the empty value.
template <class T, bool Largest>
struct abs_extreme
{
    T value = T(0);
    bool empty = true;

    EMBER_HOST_DEVICE abs_extreme() noexcept {}
    EMBER_HOST_DEVICE explicit abs_extreme(int) noexcept {}
    EMBER_HOST_DEVICE abs_extreme(T v, bool) noexcept : value(v), empty(false) {}

    friend EMBER_HOST_DEVICE abs_extreme operator+(const abs_extreme& a,
                                                   const abs_extreme& b) noexcept
    {
        if (a.empty)
            return b;
        if (b.empty)
            return a;
        if (a.value != a.value)
            return a;
        if (b.value != b.value)
            return b;
        if constexpr (Largest)
            return b.value > a.value ? b : a;
        else
            return b.value < a.value ? b : a;
    }
    EMBER_HOST_DEVICE abs_extreme& operator+=(const abs_extreme& b) noexcept
    {
        *this = *this + b;
        return *this;
    }
};

/// @brief max |g[i]| (Largest) or min |g[i]| over n > 0 elements of device memory.
template <bool Largest, class Device, class T>
T abs_extreme_of(const T* g, std::size_t n)
{
    using acc = abs_extreme<T, Largest>;
    return Device::template sum<acc>(
               n,
               EMBER_KERNEL(std::size_t i) {
                   const T x = g[i];
                   return acc(x < T(0) ? -x : x, true);
               })
        .value;
}

/// @brief `s` rounded to T, where PyTorch's sum in T would overflow to infinity.
template <class T>
double rounded_sum(double s) noexcept
{
    return static_cast<double>(static_cast<T>(s));
}

/// @brief torch.norm(g, p) for finite p, accumulated in double: the sum of |g|^p, rounded to T
/// (rounded_sum), then its 1/p-th power (sqrt for p = 2; the count of non-zeros for p = 0).
template <class Device, class T>
double finite_norm(const T* g, std::size_t n, double p)
{
    if (p == 2)
        return std::sqrt(rounded_sum<T>(Device::template sum<double>(
            n, EMBER_KERNEL(std::size_t i) {
                const double x = static_cast<double>(g[i]);
                return x * x;
            })));
    if (p == 1)
        return Device::template sum<double>(
            n, EMBER_KERNEL(std::size_t i) { return std::fabs(static_cast<double>(g[i])); });
    if (p == 0)
        return Device::template sum<double>(
            n, EMBER_KERNEL(std::size_t i) { return g[i] != T(0) ? 1.0 : 0.0; });
    const double s = Device::template sum<double>(
        n,
        EMBER_KERNEL(std::size_t i) { return std::pow(std::fabs(static_cast<double>(g[i])), p); });
    return std::pow(rounded_sum<T>(s), 1.0 / p);
}

/// @brief |v|^p as finite_norm adds it up (for the norm of the per-parameter norms).
inline double norm_term(double v, double p)
{
    const double x = std::fabs(v);
    if (p == 2)
        return x * x;
    if (p == 1)
        return x;
    if (p == 0)
        return x != 0 ? 1.0 : 0.0;
    return std::pow(x, p);
}

/// @brief The norm from its sum of norm_terms.
inline double norm_from_sum(double s, double p)
{
    if (p == 2)
        return std::sqrt(s);
    if (p == 1 || p == 0)
        return s;
    return std::pow(s, 1.0 / p);
}

template <class Device, class T>
void scale_grad(T* g, std::size_t n, T coef)
{
    Device::for_each(
        n, EMBER_KERNEL(std::size_t i) { g[i] = g[i] * coef; });
}

template <class Device, class T>
void clamp_grad(T* g, std::size_t n, T lo, T hi)
{
    Device::for_each(
        n, EMBER_KERNEL(std::size_t i) {
            const T x = g[i];
            g[i] = x < lo ? lo : (x > hi ? hi : x); // NaN fails both tests and stays
        });
}

} // namespace detail

template <class T, class Device>
T clip_grad_norm_(const std::vector<param_ref<T, Device>>& params, double max_norm,
                  double norm_type, bool error_if_nonfinite)
{
    if (!(max_norm >= 0))
        throw value_error("clip_grad_norm_: max_norm must be >= 0, got " +
                          std::to_string(max_norm));
    if (std::isnan(norm_type))
        throw value_error("clip_grad_norm_: norm_type is NaN");

    // One norm per parameter, rounded to T as PyTorch's per-parameter norm tensors are, then
    // the norm of those, accumulated as they come (nothing allocated).
    const bool inf_norm = std::isinf(norm_type);
    detail::abs_extreme<T, true> largest;
    detail::abs_extreme<T, false> smallest;
    double sum = 0;
    bool any = false;
    for (const auto& p : params)
    {
        if (!p.requires_grad() || !p.has_grad()) // PyTorch leaves out grads that are None
            continue;
        const std::span<T> g = p.grad();
        any = true;
        if (!inf_norm)
        {
            const T n = static_cast<T>(detail::finite_norm<Device>(g.data(), g.size(), norm_type));
            sum += detail::norm_term(static_cast<double>(n), norm_type);
        }
        else if (g.empty())
            continue;
        else if (norm_type > 0)
            largest += detail::abs_extreme<T, true>(
                detail::abs_extreme_of<true, Device>(g.data(), g.size()), true);
        else
            smallest += detail::abs_extreme<T, false>(
                detail::abs_extreme_of<false, Device>(g.data(), g.size()), true);
    }
    if (!any)
        return T(0);
    const T total =
        !inf_norm ? static_cast<T>(detail::norm_from_sum(detail::rounded_sum<T>(sum), norm_type))
        : norm_type > 0 ? largest.value
                        : smallest.value;

    if (error_if_nonfinite && !std::isfinite(total))
        throw value_error("clip_grad_norm_: the total norm of order " + std::to_string(norm_type) +
                          " for gradients from `parameters` is non-finite (" +
                          std::to_string(total) +
                          "), so it cannot be clipped. To scale the gradients by the non-finite "
                          "norm anyway, pass error_if_nonfinite = false");

    // PyTorch: clamp(max_norm / (total_norm + 1e-6), max=1), where `scalar / tensor` is
    // `tensor.reciprocal() * scalar`, all in the grads' type.
    T coef = (T(1) / (total + static_cast<T>(1e-6))) * static_cast<T>(max_norm);
    if (coef > T(1))
        coef = T(1);
    if (coef == T(1))
        return total; // multiplying by 1 changes nothing
    for (const auto& p : params)
        if (p.requires_grad() && p.has_grad())
        {
            const std::span<T> g = p.grad();
            detail::scale_grad<Device>(g.data(), g.size(), coef);
        }
    return total;
}

template <class T, class Device>
void clip_grad_value_(const std::vector<param_ref<T, Device>>& params, double clip_value)
{
    if (!(clip_value >= 0))
        throw value_error("clip_grad_value_: clip_value must be >= 0, got " +
                          std::to_string(clip_value));
    const T hi = static_cast<T>(clip_value);
    for (const auto& p : params)
        if (p.requires_grad() && p.has_grad())
        {
            const std::span<T> g = p.grad();
            detail::clamp_grad<Device>(g.data(), g.size(), T(-hi), hi);
        }
}

} // namespace ember::nn
