#pragma once
/// @file
/// What every loss shares (users name the losses, not these): the reduction, the per-element
/// losses, the cached gradient and both backward()s, and the loop of the elementwise losses.
/// A concrete loss derives from one of the bases and supplies its `name` plus one function per
/// element (or per row, for the class-index losses) that returns the loss and its derivative.
///
/// forward() computes the gradient it will be asked for while it has every operand at hand, so
/// backward() costs nothing and nothing of the input or target is copied; under no_grad it
/// computes the loss only.
///
/// The loops run through the loss's `Device` policy (device/kernel.hpp), so every loss is
/// written once for every device. The per-element (per-row) function is a static
/// EMBER_HOST_DEVICE function that takes the loss's options as a small copyable `params_type`
/// value: kernels capture values and pointers, never the loss. On cpu the sum of the losses
/// accumulates left to right, as a plain loop does.

#include "ember/core/error.hpp"
#include "ember/core/grad_mode.hpp"
#include "ember/core/tensor.hpp"
#include "ember/detail/precompiled.hpp"
#include "ember/device/cpu.hpp"
#include "ember/device/kernel.hpp"
#include "ember/loss/reduction.hpp"

#include <cstddef>
#include <limits>
#include <string>
#include <type_traits>

// EMBER_ELEMENTWISE_LOSS_INSTANCE(EXTERN, NAME, DEVICE): elementwise loss NAME over rank-2 float
// tensors on DEVICE and its bases, as an explicit instantiation declaration (EXTERN = extern) or
// definition (EXTERN empty). The lesson's losses wrap it (or, for class indices, its like) as
// EMBER_<NAME>_INSTANCES(EXTERN, DEVICE).
#define EMBER_ELEMENTWISE_LOSS_INSTANCE(EXTERN, NAME, DEVICE)                                      \
    EXTERN template class ember::nn::detail::loss_base<ember::nn::NAME<float, 2, DEVICE>, float,   \
                                                       2, 2, DEVICE>;                              \
    EXTERN template class ember::nn::detail::elementwise_loss<ember::nn::NAME<float, 2, DEVICE>,   \
                                                              float, 2, DEVICE>;                   \
    EXTERN template class ember::nn::NAME<float, 2, DEVICE>;

// EMBER_LOSS_EXTERN(INSTANCES): at the end of a loss's header, its instances declared extern
// where ember's precompiled part compiles them (EMBER_PRECOMPILED_EXTERN), as the optimizers'.
#if defined(EMBER_PRECOMPILED_THRUST_OMP)
#include "ember/device/thrust_omp.hpp"
#endif
#define EMBER_LOSS_EXTERN(INSTANCES) EMBER_PRECOMPILED_EXTERN(INSTANCES)

namespace ember::nn::detail
{

// Losses of float tensors are summed in double: a mean over a large batch keeps its digits.
template <class T>
using loss_accumulator_t = std::conditional_t<(sizeof(T) < sizeof(double)), double, T>;

/// @brief The `params_type` of a loss whose element function needs no options.
struct no_params
{
};

/// @brief Reduction, per-element losses and backward, shared by every loss. `InRank` is the
/// input's rank, `LossRank` that of the per-element losses (equal, except for class indices).
template <class Derived, class T, std::size_t InRank, std::size_t LossRank, class Device>
class loss_base
{
public:
    using value_type = T;
    using device_type = Device;
    using input_type = typename Device::template tensor_type<T, InRank>;
    using loss_type = typename Device::template tensor_type<T, LossRank>;

    /// @brief How forward() folds the per-element losses.
    nn::reduction reduction() const noexcept { return m_reduction; }

    /// @brief Per-element losses of the last forward(), unreduced, whatever the reduction.
    const loss_type& losses() const noexcept { return m_losses; }

    /// @brief Gradient of what the last forward() returned (the mean, the sum, or with
    /// reduction::none the sum of losses()) with respect to its input.
    /// @throws ember::error unless a forward() ran with gradients enabled.
    const input_type& backward() const;

    /// @brief With reduction::none: gradient of `sum(grad_output * losses())` with respect to
    /// the input, for an upstream gradient per element of losses().
    /// @throws ember::error without a recorded forward() or with another reduction;
    /// shape_error when `grad_output` is not shaped like losses().
    const input_type& backward(const loss_type& grad_output);

protected:
    explicit loss_base(nn::reduction r) noexcept : m_reduction(r) {}

    // Starts a forward: forgets the previous gradient (a forward that throws or runs under
    // no_grad leaves nothing for backward) and says whether to compute one.
    bool begin_forward() noexcept;
    // Multiplier turning per-element derivatives into derivatives of forward()'s result, for a
    // mean that divides by `divisor` (the number of elements, or their total weight) over
    // `count` elements: 0 when there are none; NaN when there are some but their weights add up
    // to 0 (PyTorch's 0 times 1/0).
    T gradient_scale(loss_accumulator_t<T> divisor, std::size_t count) const noexcept;
    // Folds `sum`, the sum of the losses, by the reduction: a mean divides it by `divisor`, and
    // is NaN where that is 0 (PyTorch's 0/0, whatever else was added to the sum).
    T end_forward(loss_accumulator_t<T> sum, loss_accumulator_t<T> divisor, bool cached) noexcept;

    static std::string loss_name() { return std::string(Derived::name); }
    void require_forward(const char* call) const;

    nn::reduction m_reduction;
    loss_type m_losses;
    input_type m_local; // d(forward's result)/d(input), filled by forward() when recording
    input_type m_grad;  // backward(grad_output)'s result
    // Per loss element, 0 where backward(grad_output) must leave the input's gradient exactly 0
    // whatever the upstream gradient (PyTorch never writes an ignored target's row, so an
    // infinite or NaN upstream gradient does not become NaN there), else 1. Empty for the
    // losses that ignore nothing.
    loss_type m_kept;
    bool m_cached = false;
};

/// @brief Base of the losses whose target is shaped like the input and whose loss is a
/// function of one (input, target) pair per element. `Derived` provides a `params_type` (what
/// the element function needs of the options; detail::no_params when nothing), `params()` and
/// `static EMBER_HOST_DEVICE T element(T x, T y, std::size_t i, T& dx, params_type p)`
/// returning the loss and setting its derivative; it may hide `prepare(input, target)` to check
/// its options and the values against the input before anything is computed.
template <class Derived, class T, std::size_t N, class Device>
class elementwise_loss : public loss_base<Derived, T, N, N, Device>
{
    using base_type = loss_base<Derived, T, N, N, Device>;

public:
    using typename base_type::input_type;
    using target_type = typename Device::template tensor_type<T, N>;

    /// @brief The loss of `input` against `target` (same shape), reduced; records what
    /// backward() needs unless a no_grad guard is alive.
    /// @throws shape_error when the shapes differ.
    T forward(const input_type& input, const target_type& target);

    /// @brief `loss(input, target)` is `loss.forward(input, target)`.
    T operator()(const input_type& input, const target_type& target)
    {
        return forward(input, target);
    }

protected:
    using base_type::base_type;
    void prepare(const input_type&, const target_type&) {}
    no_params params() const noexcept { return {}; }
};

/*******************
 * implementation  *
 *******************/

template <class Derived, class T, std::size_t I, std::size_t L, class Device>
bool loss_base<Derived, T, I, L, Device>::begin_forward() noexcept
{
    m_cached = false;
    return is_grad_enabled();
}

template <class Derived, class T, std::size_t I, std::size_t L, class Device>
T loss_base<Derived, T, I, L, Device>::gradient_scale(loss_accumulator_t<T> divisor,
                                                      std::size_t count) const noexcept
{
    if (m_reduction != nn::reduction::mean)
        return T(1);
    if (count == 0)
        return T(0);
    return divisor == 0 ? std::numeric_limits<T>::quiet_NaN() : T(1) / static_cast<T>(divisor);
}

template <class Derived, class T, std::size_t I, std::size_t L, class Device>
T loss_base<Derived, T, I, L, Device>::end_forward(loss_accumulator_t<T> sum,
                                                   loss_accumulator_t<T> divisor,
                                                   bool cached) noexcept
{
    m_cached = cached;
    if (m_reduction == nn::reduction::mean)
        return divisor == 0 ? std::numeric_limits<T>::quiet_NaN() : static_cast<T>(sum / divisor);
    return static_cast<T>(sum);
}

template <class Derived, class T, std::size_t I, std::size_t L, class Device>
void loss_base<Derived, T, I, L, Device>::require_forward(const char* call) const
{
    if (!m_cached)
        throw error(loss_name() + ": " + call +
                    " called without a forward() that recorded gradients (call forward() first, "
                    "outside any no_grad guard)");
}

template <class Derived, class T, std::size_t I, std::size_t L, class Device>
auto loss_base<Derived, T, I, L, Device>::backward() const -> const input_type&
{
    require_forward("backward()");
    return m_local;
}

template <class Derived, class T, std::size_t I, std::size_t L, class Device>
auto loss_base<Derived, T, I, L, Device>::backward(const loss_type& grad_output)
    -> const input_type&
{
    require_forward("backward(grad_output)");
    if (m_reduction != nn::reduction::none)
        throw error(loss_name() +
                    ": backward(grad_output) takes one gradient per element and needs "
                    "reduction::none, but this loss reduces by '" +
                    std::string(reduction_name(m_reduction)) + "'; call backward()");
    if (grad_output.shape() != m_losses.shape())
        throw shape_error(loss_name() + ": grad_output of shape " +
                          shape_string(grad_output.shape()) + " does not match the losses' shape " +
                          shape_string(m_losses.shape()));
    resize_if_needed(m_grad, m_local.shape());
    const T* g = grad_output.data();
    const T* local = m_local.data();
    T* out = m_grad.data();
    // The upstream gradient of a loss element applies to every input element it was made from:
    // one for elementwise losses, a row of class scores for the class-index ones.
    const std::size_t n = m_losses.size();
    const std::size_t per = n == 0 ? 0 : m_local.size() / n;
    const T* kept = m_kept.size() == n ? m_kept.data() : nullptr;
    Device::for_each(
        n, EMBER_KERNEL(std::size_t i) {
            const T gi = kept && kept[i] == T(0) ? T(0) : g[i];
            for (std::size_t k = i * per; k < (i + 1) * per; ++k)
                out[k] = gi * local[k];
        });
    return m_grad;
}

template <class Derived, class T, std::size_t N, class Device>
T elementwise_loss<Derived, T, N, Device>::forward(const input_type& input,
                                                   const target_type& target)
{
    using acc_type = loss_accumulator_t<T>;
    const bool caching = this->begin_forward();
    if (input.shape() != target.shape())
        throw shape_error(this->loss_name() + ": input of shape " + shape_string(input.shape()) +
                          " and target of shape " + shape_string(target.shape()) +
                          " must have the same shape");
    Derived& self = static_cast<Derived&>(*this);
    self.prepare(input, target);
    const typename Derived::params_type p = self.params();
    resize_if_needed(this->m_losses, input.shape());
    if (caching)
        resize_if_needed(this->m_local, input.shape());
    const std::size_t n = input.size();
    const T scale = this->gradient_scale(static_cast<loss_accumulator_t<T>>(n), n);
    const T* x = input.data();
    const T* y = target.data();
    T* l = this->m_losses.data();
    T* g = caching ? this->m_local.data() : nullptr;
    const acc_type sum = Device::template sum<acc_type>(
        n, EMBER_KERNEL(std::size_t i)->acc_type {
            T dx = 0;
            const T li = Derived::element(x[i], y[i], i, dx, p);
            l[i] = li;
            if (g)
                g[i] = dx * scale;
            return li;
        });
    return this->end_forward(sum, static_cast<acc_type>(n), caching);
}

} // namespace ember::nn::detail
