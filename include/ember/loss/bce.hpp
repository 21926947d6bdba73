#pragma once
/// @file
/// Binary cross-entropy: `torch.nn.BCELoss` on probabilities and `torch.nn.BCEWithLogitsLoss`
/// on logits (the stable one to train with: it never takes the log of a rounded sigmoid).

#include "ember/core/error.hpp"
#include "ember/loss/loss_base.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <string_view>
#include <utility>

namespace ember::nn
{

/// @brief `torch.nn.BCELoss`: -(y log x + (1 - y) log(1 - x)) per element, for probabilities x
/// and targets y in [0, 1]. Each log is clamped at -100 as in PyTorch, so x = 0 or 1 gives a
/// finite loss; the gradient is PyTorch's (x - y) / max(x (1 - x), 1e-12).
/// forward(), losses() and backward() behave as for mse_loss.
/// @throws value_error from forward() for an input or target outside [0, 1], naming it.
template <class T = float, std::size_t N = 2>
class bce_loss : public detail::elementwise_loss<bce_loss<T, N>, T, N>
{
    using base_type = detail::elementwise_loss<bce_loss<T, N>, T, N>;
    friend base_type;

public:
    static constexpr std::string_view name = "bce_loss";

    explicit bce_loss(nn::reduction r = nn::reduction::mean) noexcept : base_type(r) {}

private:
    static T element(T x, T y, std::size_t i, T& dx);
};

/// @brief Options of bce_with_logits_loss. `pos_weight`, when not empty, weighs the positive
/// term of each class (the input's last dimension), as PyTorch's pos_weight of shape [C]; one
/// element applies to every class.
template <class T = float>
struct bce_with_logits_options
{
    tensor<T, 1> pos_weight{};
};

/// @brief `torch.nn.BCEWithLogitsLoss`: with p = sigmoid(x), -(w y log p + (1 - y) log(1 - p))
/// per element, w the class's pos_weight (1 without), computed without forming p.
/// forward(), losses() and backward() behave as for mse_loss.
/// @code
/// ember::nn::bce_with_logits_loss<float, 2> loss_fn(ember::nn::reduction::mean,
///                                                  {.pos_weight = {3.f, 1.f, 0.5f}});
/// @endcode
template <class T = float, std::size_t N = 2>
class bce_with_logits_loss : public detail::elementwise_loss<bce_with_logits_loss<T, N>, T, N>
{
    using base_type = detail::elementwise_loss<bce_with_logits_loss<T, N>, T, N>;
    friend base_type;

public:
    using options_type = bce_with_logits_options<T>;
    static constexpr std::string_view name = "bce_with_logits_loss";

    explicit bce_with_logits_loss(nn::reduction r = nn::reduction::mean, options_type options = {})
        : base_type(r), m_options(std::move(options))
    {
    }
    explicit bce_with_logits_loss(options_type options)
        : bce_with_logits_loss(nn::reduction::mean, std::move(options))
    {
    }

    const options_type& options() const noexcept { return m_options; }

private:
    // pos_weight must fit the input's last dimension.
    void prepare(const typename base_type::input_type& input);
    T element(T x, T y, std::size_t i, T& dx) const noexcept;

    options_type m_options;
    std::size_t m_classes = 1;
};

/*******************
 * implementation  *
 *******************/

template <class T, std::size_t N>
T bce_loss<T, N>::element(T x, T y, std::size_t i, T& dx)
{
    if (!(x >= 0 && x <= 1))
        throw value_error("bce_loss: input " + std::to_string(x) + " at position " +
                          std::to_string(i) + " is not a probability in [0, 1]");
    if (!(y >= 0 && y <= 1))
        throw value_error("bce_loss: target " + std::to_string(y) + " at position " +
                          std::to_string(i) + " is not in [0, 1]");
    dx = (x - y) / std::max((T(1) - x) * x, T(1e-12));
    return (y - T(1)) * std::max(T(std::log(T(1) - x)), T(-100)) -
           y * std::max(T(std::log(x)), T(-100));
}

template <class T, std::size_t N>
void bce_with_logits_loss<T, N>::prepare(const typename base_type::input_type& input)
{
    const std::size_t weights = m_options.pos_weight.size();
    if constexpr (N > 0)
        m_classes = input.shape()[N - 1];
    if (weights > 1 && weights != m_classes)
        throw shape_error("bce_with_logits_loss: pos_weight of shape " +
                          shape_string(m_options.pos_weight.shape()) +
                          " does not fit input of shape " + shape_string(input.shape()) +
                          ": expected one weight per class, [" + std::to_string(m_classes) + "]");
}

template <class T, std::size_t N>
T bce_with_logits_loss<T, N>::element(T x, T y, std::size_t i, T& dx) const noexcept
{
    // PyTorch's log(1 + e^-x) = m + log(e^-m + e^(-x-m)), m = max(-x, 0): one of the two
    // exponents is 0, the other -|x|, so nothing overflows and one exp serves the sigmoid too.
    const T m = std::max(-x, T(0));
    const T e = std::exp(-std::abs(x));
    const T log_term = std::log(T(1) + e);
    const T sigmoid = x >= 0 ? T(1) / (T(1) + e) : e / (T(1) + e);
    const std::size_t weights = m_options.pos_weight.size();
    if (weights == 0)
    {
        dx = sigmoid - y;
        return (T(1) - y) * x + m + log_term;
    }
    const T w = m_options.pos_weight.data()[weights == 1 ? 0 : i % m_classes];
    const T wy = w * y;
    dx = (wy + T(1) - y) * sigmoid - wy;
    return (T(1) - y) * x + (T(1) + (w - T(1)) * y) * (log_term + m);
}

} // namespace ember::nn
