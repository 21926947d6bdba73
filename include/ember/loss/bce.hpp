#pragma once
/// @file
/// Binary cross-entropy: `torch.nn.BCELoss` on probabilities and `torch.nn.BCEWithLogitsLoss`
/// on logits (the stable one to train with: it never takes the log of a rounded sigmoid), each
/// with PyTorch's optional `weight` per element, given as one weight for every element or one
/// per class (the input's last dimension).

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

namespace detail
{
/// @brief Weights by class in `Device` memory, as a kernel reads them: none (`size` 0), one for
/// every element, or one per class, element i's class being i modulo `classes` (the input's
/// last dimension, which the weights run along).
template <class T>
struct class_weights
{
    const T* data = nullptr;
    std::size_t size = 0;
    std::size_t classes = 1;

    EMBER_HOST_DEVICE T operator[](std::size_t i) const noexcept
    {
        return data[size == 1 ? 0 : i % classes];
    }
};

/// @brief `weights` (the loss's `Device` copy of the option named `what`) as a kernel reads
/// them for `input`.
/// @throws shape_error unless they are empty, one, or one per element of input's last dimension.
template <class Weights, class Input>
class_weights<typename Weights::value_type>
fit_class_weights(std::string_view loss, std::string_view what, const Weights& weights,
                  const Input& input);
} // namespace detail

/// @brief Options of bce_loss. `weight`, when not empty, multiplies each element's loss: one
/// weight for every element, or one per class (the input's last dimension), as PyTorch's weight
/// broadcast over the input.
template <class T = float>
struct bce_options
{
    tensor<T, 1> weight{};
};

/// @brief `torch.nn.BCELoss`: -w (y log x + (1 - y) log(1 - x)) per element, for probabilities
/// x and targets y in [0, 1], w the element's weight (1 without). Each log is clamped at -100 as
/// in PyTorch, so x = 0 or 1 gives a finite loss; the gradient is PyTorch's w (x - y) / max(x
/// (1 - x), 1e-12). forward(), losses() and backward() behave as for mse_loss (the mean divides
/// by the number of elements, whatever the weights); the loss keeps its own copy of the weights
/// on `Device`.
/// @throws value_error from forward() for an input or target outside [0, 1], naming it;
/// shape_error for weights that do not fit the input. PyTorch 1.13 refuses such an input too,
/// but not such a target (a target of 2 or NaN gives a loss there); ember refuses both.
template <class T = float, std::size_t N = 2, class Device = cpu>
class bce_loss : public detail::elementwise_loss<bce_loss<T, N, Device>, T, N, Device>
{
    using base_type = detail::elementwise_loss<bce_loss<T, N, Device>, T, N, Device>;
    friend base_type;

public:
    using options_type = bce_options<T>;
    /// @brief What element() needs of the options: the weights in `Device` memory.
    using params_type = detail::class_weights<T>;
    static constexpr std::string_view name = "bce_loss";

    explicit bce_loss(nn::reduction r = nn::reduction::mean, options_type options = {})
        : base_type(r), m_options(std::move(options)), m_weight(to<Device>(m_options.weight))
    {
    }
    explicit bce_loss(options_type options) : bce_loss(nn::reduction::mean, std::move(options)) {}

    const options_type& options() const noexcept { return m_options; }

    /// @brief The loss of element `i` and its derivative `dx` (callable in kernels), for x and
    /// y in [0, 1] (forward() checks them first).
    static EMBER_HOST_DEVICE T element(T x, T y, std::size_t i, T& dx, params_type p) noexcept;

private:
    // Every input and target must be in [0, 1], and the weights must fit the input.
    void prepare(const typename base_type::input_type& input,
                 const typename base_type::target_type& target);
    params_type params() const noexcept { return m_params; }

    options_type m_options;
    typename Device::template tensor_type<T, 1> m_weight;
    params_type m_params; // set by prepare() for the input at hand
};

/// @brief Options of bce_with_logits_loss. `pos_weight`, when not empty, weighs the positive
/// term of each class (the input's last dimension), as PyTorch's pos_weight of shape [C]; one
/// element applies to every class. `weight`, when not empty, multiplies each element's loss, as
/// bce_options's does. (`weight` comes last, not first as in PyTorch, so that options written by
/// position before it existed keep their meaning.)
template <class T = float>
struct bce_with_logits_options
{
    tensor<T, 1> pos_weight{};
    tensor<T, 1> weight{};
};

/// @brief `torch.nn.BCEWithLogitsLoss`: with p = sigmoid(x), -v (w y log p + (1 - y) log(1 -
/// p)) per element, w the class's pos_weight and v the element's weight (1 without), computed
/// without forming p. forward(), losses() and backward() behave as for mse_loss. The options
/// stay on the host (options()); the loss keeps its own copy of the weights on `Device`.
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
    /// @brief What element() needs of the options: both weights in `Device` memory.
    struct params_type
    {
        detail::class_weights<T> weight;
        detail::class_weights<T> pos_weight;
    };
    static constexpr std::string_view name = "bce_with_logits_loss";

    explicit bce_with_logits_loss(nn::reduction r = nn::reduction::mean, options_type options = {})
        : base_type(r), m_options(std::move(options)), m_weight(to<Device>(m_options.weight)),
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
    // Both weights must fit the input's last dimension.
    void prepare(const typename base_type::input_type& input,
                 const typename base_type::target_type& target);
    params_type params() const noexcept { return m_params; }

    options_type m_options;
    typename Device::template tensor_type<T, 1> m_weight;
    typename Device::template tensor_type<T, 1> m_pos_weight;
    params_type m_params; // set by prepare() for the input at hand
};

/*******************
 * implementation  *
 *******************/

namespace detail
{
template <class Weights, class Input>
class_weights<typename Weights::value_type>
fit_class_weights(std::string_view loss, std::string_view what, const Weights& weights,
                  const Input& input)
{
    std::size_t classes = 1;
    if constexpr (Input::rank > 0)
        classes = input.shape()[Input::rank - 1];
    if (weights.size() > 1 && weights.size() != classes)
        throw shape_error(std::string(loss) + ": " + std::string(what) + " of shape " +
                          shape_string(weights.shape()) + " does not fit input of shape " +
                          shape_string(input.shape()) +
                          ": expected one weight, or one per class, [" + std::to_string(classes) +
                          "]");
    return {weights.size() == 0 ? nullptr : weights.data(), weights.size(), classes};
}

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
    m_params = detail::fit_class_weights(name, "weight", m_weight, input);
    detail::check_probabilities<Device>(input.data(), target.data(), input.size());
}

template <class T, std::size_t N, class Device>
EMBER_HOST_DEVICE T bce_loss<T, N, Device>::element(T x, T y, std::size_t i, T& dx,
                                                    params_type p) noexcept
{
    // PyTorch's EPSILON is a float, 1e-12f, also when T is double.
    dx = (x - y) / std::max((T(1) - x) * x, static_cast<T>(1e-12f));
    const T loss = (y - T(1)) * std::max(T(std::log(T(1) - x)), T(-100)) -
                   y * std::max(T(std::log(x)), T(-100));
    if (p.size == 0)
        return loss;
    const T w = p[i]; // PyTorch weighs the loss and its gradient after computing them
    dx *= w;
    return loss * w;
}

template <class T, std::size_t N, class Device>
void bce_with_logits_loss<T, N, Device>::prepare(const typename base_type::input_type& input,
                                                 const typename base_type::target_type&)
{
    m_params = {detail::fit_class_weights(name, "weight", m_weight, input),
                detail::fit_class_weights(name, "pos_weight", m_pos_weight, input)};
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
    T loss;
    if (p.pos_weight.size == 0)
    {
        dx = sigmoid - y;
        loss = (T(1) - y) * x + m + log_term;
    }
    else
    {
        const T w = p.pos_weight[i];
        const T wy = w * y;
        dx = (wy + T(1) - y) * sigmoid - wy;
        loss = (T(1) - y) * x + (T(1) + (w - T(1)) * y) * (log_term + m);
    }
    if (p.weight.size == 0)
        return loss;
    const T v = p.weight[i];
    dx *= v;
    return loss * v;
}

} // namespace ember::nn
