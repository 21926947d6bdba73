#pragma once
/// @file
/// Classification losses over class indices: `torch.nn.CrossEntropyLoss` on logits and
/// `torch.nn.NLLLoss` on log-probabilities, for an input of shape [batch, C] and a target of
/// batch class indices (int64, like torch.long), each with an optional weight per class.

#include "ember/core/error.hpp"
#include "ember/device/transfer.hpp"
#include "ember/loss/loss_base.hpp"

#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ember::nn
{

/// @brief Options of cross_entropy_loss. A target equal to `ignore_index` contributes no loss
/// and no gradient, and the mean is over the other samples. `label_smoothing` in [0, 1] mixes
/// the one-hot target with the uniform distribution over the C classes. `weight`, when not
/// empty, holds one weight per class (PyTorch's weight of shape [C]): a sample's loss is
/// multiplied by its target's weight (each class's smoothing term by its own), and the mean
/// divides by the sum of the counted targets' weights instead of their number. (`weight` comes
/// last, not first as in PyTorch, so that options written by position before it existed keep
/// their meaning.)
template <class T = float>
struct cross_entropy_options
{
    std::int64_t ignore_index = -100;
    double label_smoothing = 0.0;
    tensor<T, 1> weight{};
};

/// @brief Options of nll_loss: as cross_entropy_options, without smoothing.
template <class T = float>
struct nll_options
{
    std::int64_t ignore_index = -100;
    tensor<T, 1> weight{};
};

namespace detail
{
/// @brief How many targets count toward the mean, their total weight (what the mean divides
/// by: their number when the classes have no weights) and how many are out of range: the
/// accumulator of the one pass that checks the targets on the device.
template <class W>
struct target_count
{
    std::size_t valid = 0;
    std::size_t bad = 0;
    W weight = 0;

    target_count() = default;
    EMBER_HOST_DEVICE explicit target_count(int) noexcept {}
    EMBER_HOST_DEVICE target_count(std::size_t v, std::size_t b, W w) noexcept
        : valid(v), bad(b), weight(w)
    {
    }

    EMBER_HOST_DEVICE target_count& operator+=(const target_count& o) noexcept
    {
        valid += o.valid;
        bad += o.bad;
        weight += o.weight;
        return *this;
    }
    EMBER_HOST_DEVICE friend target_count operator+(target_count a, const target_count& b) noexcept
    {
        return a += b;
    }
};

/// @brief Base of the class-index losses: checks targets and class weights, skips ignored
/// samples, reduces. `Derived` provides a `params_type`, `params()` and `static
/// EMBER_HOST_DEVICE T row(const T* x, std::size_t classes, std::size_t target, const T* weight,
/// T* dx, T scale, params_type p)` returning one sample's loss and, when `dx` is not null,
/// writing `scale` times the derivative of that loss with respect to the row's C inputs;
/// `weight` holds the C class weights in `Device` memory, or is null when there are none.
template <class Derived, class T, class Device>
class class_index_loss : public loss_base<Derived, T, 2, 1, Device>
{
    using base_type = loss_base<Derived, T, 2, 1, Device>;

public:
    using typename base_type::input_type;
    using target_type = typename Device::template tensor_type<std::int64_t, 1>;

    /// @brief The loss of scores `input` [batch, C] against class indices `target` [batch],
    /// reduced (mean: over the samples not ignored, weighed by their classes' weights); records
    /// what backward() needs unless a no_grad guard is alive.
    /// @throws shape_error when target's length is not batch, or when there are class weights
    /// but not C of them; value_error for a target outside [0, C) that is not ignore_index,
    /// naming it and its position.
    T forward(const input_type& input, const target_type& target);

    /// @brief `loss(input, target)` is `loss.forward(input, target)`.
    T operator()(const input_type& input, const target_type& target)
    {
        return forward(input, target);
    }

protected:
    class_index_loss(nn::reduction r, std::int64_t ignore_index, const tensor<T, 1>& weight)
        : base_type(r), m_ignore_index(ignore_index), m_weight(to<Device>(weight))
    {
    }

    // Throws the value_error naming the first target out of range (kernels cannot throw).
    [[noreturn]] void throw_bad_target(const target_type& target, std::size_t classes) const;

    std::int64_t m_ignore_index;
    typename Device::template tensor_type<T, 1> m_weight; // the class weights, on Device
};
} // namespace detail

/// @brief `torch.nn.CrossEntropyLoss` for logits [batch, C] and class indices [batch]:
/// per sample, (1 - s) w_target (-log p_target) + (s / C) sum_c w_c (-log p_c), p =
/// softmax(row), s the label smoothing, w the class weights (all 1 without); 0 for ignored
/// samples.
///
/// forward(input, target) returns the mean over the samples not ignored (divided by the sum of
/// their targets' weights, as PyTorch does) or the sum; with reduction::none it returns the sum
/// and losses() holds one loss per sample. backward() is the gradient of what forward()
/// returned; backward(grad_output) (reduction::none) weights each sample. On a device, logits,
/// targets (int64), losses() and backward() are `Device::tensor_type`s; the options stay on the
/// host (options()), and the loss keeps its own copy of the weights on `Device`.
/// @code
/// ember::nn::cross_entropy_loss<> loss_fn({.label_smoothing = 0.1, .weight = {1.f, 4.f, 1.f}});
/// float loss = loss_fn(logits, labels);
/// model.backward(loss_fn.backward());
/// @endcode
template <class T = float, class Device = cpu>
class cross_entropy_loss : public detail::class_index_loss<cross_entropy_loss<T, Device>, T, Device>
{
    using base_type = detail::class_index_loss<cross_entropy_loss<T, Device>, T, Device>;
    friend base_type;

public:
    /// @brief What row() needs of the options.
    struct params_type
    {
        detail::loss_accumulator_t<T> label_smoothing;
    };
    using options_type = cross_entropy_options<T>;
    static constexpr std::string_view name = "cross_entropy_loss";

    /// @throws value_error unless 0 <= label_smoothing <= 1.
    explicit cross_entropy_loss(nn::reduction r = nn::reduction::mean, options_type options = {});
    explicit cross_entropy_loss(options_type options)
        : cross_entropy_loss(nn::reduction::mean, std::move(options))
    {
    }

    const options_type& options() const noexcept { return m_options; }

    /// @brief One sample's loss and, when `dx` is not null, `scale` times its gradient
    /// (callable in kernels).
    static EMBER_HOST_DEVICE T row(const T* x, std::size_t classes, std::size_t target,
                                   const T* weight, T* dx, T scale, params_type p) noexcept;

private:
    params_type params() const noexcept { return {m_options.label_smoothing}; }

    options_type m_options;
};

/// @brief `torch.nn.NLLLoss` for log-probabilities [batch, C] (log_softmax's output) and class
/// indices [batch]: -w_target input[i, target[i]] per sample, w the class weights (1 without),
/// 0 for ignored ones. forward(), losses() and backward() behave as for cross_entropy_loss.
template <class T = float, class Device = cpu>
class nll_loss : public detail::class_index_loss<nll_loss<T, Device>, T, Device>
{
    using base_type = detail::class_index_loss<nll_loss<T, Device>, T, Device>;
    friend base_type;

public:
    using params_type = detail::no_params;
    using options_type = nll_options<T>;
    static constexpr std::string_view name = "nll_loss";

    explicit nll_loss(nn::reduction r = nn::reduction::mean, options_type options = {})
        : base_type(r, options.ignore_index, options.weight), m_options(std::move(options))
    {
    }
    explicit nll_loss(options_type options) : nll_loss(nn::reduction::mean, std::move(options)) {}

    const options_type& options() const noexcept { return m_options; }

    /// @brief One sample's loss and, when `dx` is not null, `scale` times its gradient
    /// (callable in kernels).
    static EMBER_HOST_DEVICE T row(const T* x, std::size_t classes, std::size_t target,
                                   const T* weight, T* dx, T scale, params_type) noexcept
    {
        const T w = weight ? weight[target] : T(1); // times 1: the unweighted loss, exactly
        if (dx)
        {
            for (std::size_t c = 0; c < classes; ++c)
                dx[c] = T(0);
            dx[target] = -(scale * w);
        }
        return -(w * x[target]);
    }

private:
    params_type params() const noexcept { return {}; }

    options_type m_options;
};

/*******************
 * implementation  *
 *******************/

namespace detail
{
template <class Derived, class T, class Device>
T class_index_loss<Derived, T, Device>::forward(const input_type& input, const target_type& target)
{
    using acc_type = loss_accumulator_t<T>;
    const bool caching = this->begin_forward();
    const std::size_t batch = input.shape()[0];
    const std::size_t classes = input.shape()[1];
    if (target.size() != batch)
        throw shape_error(this->loss_name() + ": target of shape " + shape_string(target.shape()) +
                          " does not match input of shape " + shape_string(input.shape()) +
                          ": expected [" + std::to_string(batch) + "]");
    if (m_weight.size() != 0 && m_weight.size() != classes)
        throw shape_error(this->loss_name() + ": weight of shape " +
                          shape_string(m_weight.shape()) + " does not fit input of shape " +
                          shape_string(input.shape()) + ": expected one weight per class, [" +
                          std::to_string(classes) + "]");
    // Validate every target before computing anything, and count what the mean divides by.
    using count_type = target_count<acc_type>;
    const std::int64_t* t = target.data();
    const std::int64_t ignore = m_ignore_index;
    const T* w = m_weight.size() == 0 ? nullptr : m_weight.data();
    const count_type counted = Device::template sum<count_type>(
        batch, EMBER_KERNEL(std::size_t i)->count_type {
            if (t[i] == ignore)
                return count_type(0, 0, 0);
            if (t[i] < 0 || static_cast<std::uint64_t>(t[i]) >= classes)
                return count_type(0, 1, 0);
            return count_type(1, 0, w ? static_cast<acc_type>(w[t[i]]) : acc_type(1));
        });
    if (counted.bad != 0)
        throw_bad_target(target, classes);
    resize_if_needed(this->m_losses, target.shape());
    if (caching)
    {
        resize_if_needed(this->m_local, input.shape());
        resize_if_needed(this->m_kept, target.shape());
    }
    // The mean divides by the targets' total weight (their number without weights).
    const T scale = this->gradient_scale(counted.weight, counted.valid);
    const typename Derived::params_type p = static_cast<const Derived&>(*this).params();
    const T* x = input.data();
    T* l = this->m_losses.data();
    T* g = caching ? this->m_local.data() : nullptr;
    T* kept = caching ? this->m_kept.data() : nullptr;
    // One sample per kernel call, its C classes in order.
    const acc_type sum = Device::template sum<acc_type>(
        batch, EMBER_KERNEL(std::size_t i)->acc_type {
            T* dx = g ? g + i * classes : nullptr;
            if (kept)
                kept[i] = t[i] == ignore ? T(0) : T(1);
            if (t[i] == ignore)
            {
                l[i] = 0;
                if (dx)
                    for (std::size_t c = 0; c < classes; ++c)
                        dx[c] = T(0);
                return acc_type(0); // adds nothing: the sum stays bit for bit a plain loop's
            }
            const T li = Derived::row(x + i * classes, classes, static_cast<std::size_t>(t[i]), w,
                                      dx, scale, p);
            l[i] = li;
            return li;
        });
    return this->end_forward(sum, counted.weight, caching);
}

template <class Derived, class T, class Device>
void class_index_loss<Derived, T, Device>::throw_bad_target(const target_type& target,
                                                            std::size_t classes) const
{
    std::vector<std::int64_t> t(target.size());
    Device::download(target.data(), t.size(), t.data());
    // forward() counted at least one, so the search ends on it.
    std::size_t i = 0;
    while (i + 1 < t.size() &&
           (t[i] == m_ignore_index || (t[i] >= 0 && static_cast<std::uint64_t>(t[i]) < classes)))
        ++i;
    throw value_error(this->loss_name() + ": target " + std::to_string(t[i]) + " at position " +
                      std::to_string(i) + " is out of range for " + std::to_string(classes) +
                      " classes: expected 0 <= target < " + std::to_string(classes) +
                      " or ignore_index (" + std::to_string(m_ignore_index) + ")");
}
} // namespace detail

template <class T, class Device>
cross_entropy_loss<T, Device>::cross_entropy_loss(nn::reduction r, options_type options)
    : base_type(r, options.ignore_index, options.weight), m_options(std::move(options))
{
    if (!(m_options.label_smoothing >= 0 && m_options.label_smoothing <= 1))
        throw value_error("cross_entropy_loss: label_smoothing must be in [0, 1], got " +
                          std::to_string(m_options.label_smoothing));
}

template <class T, class Device>
EMBER_HOST_DEVICE T cross_entropy_loss<T, Device>::row(const T* x, std::size_t classes,
                                                       std::size_t target, const T* weight, T* dx,
                                                       T scale, params_type p) noexcept
{
    using acc = detail::loss_accumulator_t<T>;
    // log p_c = x_c - lse, lse = log sum_c e^x_c, taken about the row's maximum (the first
    // maximum, as std::max_element picks it; classes > 0 since target < classes).
    const T top = ember::detail::row_max(x, classes);
    const acc s = p.label_smoothing;
    const acc k = static_cast<acc>(classes);
    // Without weights every w_c is 1, W is k and the sums below are exact multiples of 1, so
    // the unweighted loss comes out of the same arithmetic bit for bit.
    auto w = [weight](std::size_t c) { return weight ? static_cast<acc>(weight[c]) : acc(1); };
    acc sum_exp = 0;
    acc sum_wx = 0; // sum_c w_c x_c, for the smoothed term
    acc sum_w = weight ? 0 : k;
    for (std::size_t c = 0; c < classes; ++c)
    {
        sum_exp += std::exp(static_cast<acc>(x[c]) - top);
        sum_wx += w(c) * x[c];
        if (weight)
            sum_w += w(c);
    }
    const acc lse = top + std::log(sum_exp);
    const acc wt = w(target);
    acc loss = wt * (lse - x[target]);
    if (s > 0) // PyTorch's smoothed branch; without it, exactly nll of log_softmax
        loss = (1 - s) * loss + (s / k) * (sum_w * lse - sum_wx);
    if (dx)
    {
        // d loss / d x_c = m p_c - q_c: q_c = (1 - s) w_t [c = t] + (s / C) w_c, and m = sum_c
        // q_c, which is 1 without weights.
        const acc m = weight ? (1 - s) * wt + (s / k) * sum_w : acc(1);
        for (std::size_t c = 0; c < classes; ++c)
        {
            const acc q = (c == target ? (1 - s) * wt : 0) + (s / k) * w(c);
            dx[c] = static_cast<T>(scale * (m * std::exp(x[c] - lse) - q));
        }
    }
    return static_cast<T>(loss);
}

} // namespace ember::nn

// Over float scores, compiled once by ember's precompiled part (EMBER_LOSS_EXTERN).
#define EMBER_CROSS_ENTROPY_INSTANCES(EXTERN, DEVICE)                                              \
    EXTERN template class ember::nn::detail::loss_base<                                            \
        ember::nn::cross_entropy_loss<float, DEVICE>, float, 2, 1, DEVICE>;                        \
    EXTERN template class ember::nn::detail::class_index_loss<                                     \
        ember::nn::cross_entropy_loss<float, DEVICE>, float, DEVICE>;                              \
    EXTERN template class ember::nn::cross_entropy_loss<float, DEVICE>;
EMBER_LOSS_EXTERN(EMBER_CROSS_ENTROPY_INSTANCES)
