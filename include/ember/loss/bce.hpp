#pragma once
/// @file
/// Binary cross-entropy: `torch.nn.BCELoss` on probabilities and `torch.nn.BCEWithLogitsLoss`
/// on logits (the stable one to train with: it never takes the log of a rounded sigmoid).

#include "ember/core/error.hpp"
#include "ember/device/transfer.hpp"
#include "ember/loss/loss_base.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ember::nn
{

/// @brief `torch.nn.BCELoss`: -(y log x + (1 - y) log(1 - x)) per element, for probabilities x
/// and targets y in [0, 1]. Each log is clamped at -100 as in PyTorch, so x = 0 or 1 gives a
/// finite loss; the gradient is PyTorch's (x - y) / max(x (1 - x), 1e-12).
/// forward(), losses() and backward() behave as for mse_loss.
/// @throws value_error from forward() for an input or target outside [0, 1], naming it.
template <class T = float, std::size_t N = 2, class Device = cpu>
class bce_loss : public detail::elementwise_loss<bce_loss<T, N, Device>, T, N, Device>
{
    using base_type = detail::elementwise_loss<bce_loss<T, N, Device>, T, N, Device>;
    friend base_type;

public:
    using params_type = detail::no_params;
    static constexpr std::string_view name = "bce_loss";

    explicit bce_loss(nn::reduction r = nn::reduction::mean) noexcept : base_type(r) {}

    /// @brief The loss of one element and its derivative `dx` (callable in kernels), for x and
    /// y in [0, 1] (forward() checks them first).
    static EMBER_HOST_DEVICE T element(T x, T y, std::size_t, T& dx, params_type) noexcept;

private:
    // Every input and target must be in [0, 1].
    void prepare(const typename base_type::input_type& input,
                 const typename base_type::target_type& target);
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
/// forward(), losses() and backward() behave as for mse_loss. The options stay on the host
/// (options()); the loss keeps its own copy of pos_weight on `Device`.
/// @code
/// ember::nn::bce_with_logits_loss<float, 2> loss_fn(ember::nn::reduction::mean,
///                                                  {.pos_weight = {3.f, 1.f, 0.5f}});
/// @endcode
template <class T = float, std::size_t N = 2, class Device = cpu>
class bce_with_logits_loss
    : public detail::elementwise_loss<bce_with_logits_loss<T, N, Device>, T, N, Device>
{
    using base_type = detail::elementwise_loss<bce_with_logits_loss<T, N, Device>, T, N, Device>;
    friend base_type;

public:
    using options_type = bce_with_logits_options<T>;
    /// @brief What element() needs of the options: pos_weight in `Device` memory (null when
    /// empty), its length, and the number of classes it is indexed by.
    struct params_type
    {
        const T* pos_weight;
        std::size_t weights;
        std::size_t classes;
    };
    static constexpr std::string_view name = "bce_with_logits_loss";

    explicit bce_with_logits_loss(nn::reduction r = nn::reduction::mean, options_type options = {})
        : base_type(r), m_options(std::move(options)),
          m_pos_weight(to<Device>(m_options.pos_weight))
    {
    }
    explicit bce_with_logits_loss(options_type options)
        : bce_with_logits_loss(nn::reduction::mean, std::move(options))
    {
    }

    const options_type& options() const noexcept { return m_options; }

    /// @brief The loss of element `i` and its derivative `dx` (callable in kernels).
    static EMBER_HOST_DEVICE T element(T x, T y, std::size_t i, T& dx, params_type p) noexcept;

private:
    // pos_weight must fit the input's last dimension.
    void prepare(const typename base_type::input_type& input,
                 const typename base_type::target_type& target);
    params_type params() const noexcept
    {
        return {m_pos_weight.size() == 0 ? nullptr : m_pos_weight.data(), m_pos_weight.size(),
                m_classes};
    }

    options_type m_options;
    typename Device::template tensor_type<T, 1> m_pos_weight;
    std::size_t m_classes = 1;
};

/*******************
 * implementation  *
 *******************/

namespace detail
{
/// @brief Throws bce_loss's value_error naming the first input, else target, outside [0, 1]
/// (NaN included) among the n elements of `x` and `y` in `Device` memory. Kernels cannot
/// throw: a count runs on the device, and the values come to the host only when one is wrong.
template <class Device, class T>
void check_probabilities(const T* x, const T* y, std::size_t n)
{
    const std::size_t bad = Device::template sum<std::size_t>(
        n, EMBER_KERNEL(std::size_t i)->std::size_t {
            return !(x[i] >= 0 && x[i] <= 1) || !(y[i] >= 0 && y[i] <= 1) ? 1 : 0;
        });
    if (bad == 0)
        return;
    std::vector<T> hx(n);
    std::vector<T> hy(n);
    Device::download(x, n, hx.data());
    Device::download(y, n, hy.data());
    for (std::size_t i = 0; i < n; ++i)
    {
        if (!(hx[i] >= 0 && hx[i] <= 1))
            throw value_error("bce_loss: input " + std::to_string(hx[i]) + " at position " +
                              std::to_string(i) + " is not a probability in [0, 1]");
        if (!(hy[i] >= 0 && hy[i] <= 1))
            throw value_error("bce_loss: target " + std::to_string(hy[i]) + " at position " +
                              std::to_string(i) + " is not in [0, 1]");
    }
}
} // namespace detail

template <class T, std::size_t N, class Device>
void bce_loss<T, N, Device>::prepare(const typename base_type::input_type& input,
                                     const typename base_type::target_type& target)
{
    detail::check_probabilities<Device>(input.data(), target.data(), input.size());
}

template <class T, std::size_t N, class Device>
EMBER_HOST_DEVICE T bce_loss<T, N, Device>::element(T x, T y, std::size_t, T& dx,
                                                    params_type) noexcept
{
    // PyTorch's EPSILON is a float, 1e-12f, also when T is double.
    dx = (x - y) / std::max((T(1) - x) * x, static_cast<T>(1e-12f));
    return (y - T(1)) * std::max(T(std::log(T(1) - x)), T(-100)) -
           y * std::max(T(std::log(x)), T(-100));
}

template <class T, std::size_t N, class Device>
void bce_with_logits_loss<T, N, Device>::prepare(const typename base_type::input_type& input,
                                                 const typename base_type::target_type&)
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

template <class T, std::size_t N, class Device>
EMBER_HOST_DEVICE T bce_with_logits_loss<T, N, Device>::element(T x, T y, std::size_t i, T& dx,
                                                                params_type p) noexcept
{
    // PyTorch's log(1 + e^-x) = m + log(e^-m + e^(-x-m)), m = max(-x, 0): one of the two
    // exponents is 0, the other -|x|, so nothing overflows and one exp serves the sigmoid too.
    const T m = std::max(-x, T(0));
    const T e = std::exp(-std::abs(x));
    const T log_term = std::log(T(1) + e);
    const T sigmoid = x >= 0 ? T(1) / (T(1) + e) : e / (T(1) + e);
    if (p.weights == 0)
    {
        dx = sigmoid - y;
        return (T(1) - y) * x + m + log_term;
    }
    const T w = p.pos_weight[p.weights == 1 ? 0 : i % p.classes];
    const T wy = w * y;
    dx = (wy + T(1) - y) * sigmoid - wy;
    return (T(1) - y) * x + (T(1) + (w - T(1)) * y) * (log_term + m);
}

} // namespace ember::nn
