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

#include "ember/core/error.hpp"
#include "ember/core/grad_mode.hpp"
#include "ember/core/tensor.hpp"
#include "ember/loss/reduction.hpp"

#include <cstddef>
#include <string>
#include <type_traits>

namespace ember::nn::detail
{

// Losses of float tensors are summed in double: a mean over a large batch keeps its digits.
template <class T>
using loss_accumulator_t = std::conditional_t<(sizeof(T) < sizeof(double)), double, T>;

/// @brief Reduction, per-element losses and backward, shared by every loss. `InRank` is the
/// input's rank, `LossRank` that of the per-element losses (equal, except for class indices).
template <class Derived, class T, std::size_t InRank, std::size_t LossRank>
class loss_base
{
public:
    using value_type = T;
    using input_type = tensor<T, InRank>;
    using loss_type = tensor<T, LossRank>;

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
    // Multiplier turning per-element derivatives into derivatives of forward()'s result.
    T gradient_scale(std::size_t count) const noexcept;
    // Folds `sum`, the sum of `count` losses, by the reduction.
    T end_forward(loss_accumulator_t<T> sum, std::size_t count, bool cached) noexcept;

    static std::string loss_name() { return std::string(Derived::name); }
    void require_forward(const char* call) const;

    nn::reduction m_reduction;
    loss_type m_losses;
    input_type m_local; // d(forward's result)/d(input), filled by forward() when recording
    input_type m_grad;  // backward(grad_output)'s result
    bool m_cached = false;
};

/// @brief Base of the losses whose target is shaped like the input and whose loss is a
/// function of one (input, target) pair per element. `Derived` provides
/// `T element(T x, T y, std::size_t i, T& dx)` returning the loss and setting its derivative,
/// and may hide `prepare(input)` to check its options against the input.
template <class Derived, class T, std::size_t N>
class elementwise_loss : public loss_base<Derived, T, N, N>
{
    using base_type = loss_base<Derived, T, N, N>;

public:
    using typename base_type::input_type;
    using target_type = tensor<T, N>;

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
    void prepare(const input_type&) {}
};

/*******************
 * implementation  *
 *******************/

template <class Derived, class T, std::size_t I, std::size_t L>
bool loss_base<Derived, T, I, L>::begin_forward() noexcept
{
    m_cached = false;
    return is_grad_enabled();
}

template <class Derived, class T, std::size_t I, std::size_t L>
T loss_base<Derived, T, I, L>::gradient_scale(std::size_t count) const noexcept
{
    if (m_reduction != nn::reduction::mean)
        return T(1);
    return count == 0 ? T(0) : T(1) / static_cast<T>(count);
}

template <class Derived, class T, std::size_t I, std::size_t L>
T loss_base<Derived, T, I, L>::end_forward(loss_accumulator_t<T> sum, std::size_t count,
                                           bool cached) noexcept
{
    m_cached = cached;
    if (m_reduction == nn::reduction::mean)
        return static_cast<T>(sum / static_cast<loss_accumulator_t<T>>(count)); // 0/0: NaN
    return static_cast<T>(sum);
}

template <class Derived, class T, std::size_t I, std::size_t L>
void loss_base<Derived, T, I, L>::require_forward(const char* call) const
{
    if (!m_cached)
        throw error(loss_name() + ": " + call +
                    " called without a forward() that recorded gradients (call forward() first, "
                    "outside any no_grad guard)");
}

template <class Derived, class T, std::size_t I, std::size_t L>
auto loss_base<Derived, T, I, L>::backward() const -> const input_type&
{
    require_forward("backward()");
    return m_local;
}

template <class Derived, class T, std::size_t I, std::size_t L>
auto loss_base<Derived, T, I, L>::backward(const loss_type& grad_output) -> const input_type&
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
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t k = i * per; k < (i + 1) * per; ++k)
            out[k] = g[i] * local[k];
    return m_grad;
}

template <class Derived, class T, std::size_t N>
T elementwise_loss<Derived, T, N>::forward(const input_type& input, const target_type& target)
{
    const bool caching = this->begin_forward();
    if (input.shape() != target.shape())
        throw shape_error(this->loss_name() + ": input of shape " + shape_string(input.shape()) +
                          " and target of shape " + shape_string(target.shape()) +
                          " must have the same shape");
    Derived& self = static_cast<Derived&>(*this);
    self.prepare(input);
    resize_if_needed(this->m_losses, input.shape());
    const std::size_t n = input.size();
    const T* x = input.data();
    const T* y = target.data();
    T* l = this->m_losses.data();
    loss_accumulator_t<T> sum = 0;
    if (caching)
    {
        resize_if_needed(this->m_local, input.shape());
        const T scale = this->gradient_scale(n);
        T* g = this->m_local.data();
        for (std::size_t i = 0; i < n; ++i)
        {
            T dx = 0;
            l[i] = self.element(x[i], y[i], i, dx);
            g[i] = dx * scale;
            sum += l[i];
        }
    }
    else
    {
        for (std::size_t i = 0; i < n; ++i)
        {
            T dx = 0;
            l[i] = self.element(x[i], y[i], i, dx);
            sum += l[i];
        }
    }
    return this->end_forward(sum, n, caching);
}

} // namespace ember::nn::detail
