#pragma once
/// @file
/// Classification losses over class indices: `torch.nn.CrossEntropyLoss` on logits and
/// `torch.nn.NLLLoss` on log-probabilities, for an input of shape [batch, C] and a target of
/// batch class indices (int64, like torch.long).

#include "ember/core/error.hpp"
#include "ember/loss/loss_base.hpp"

#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ember::nn
{

/// @brief Options of cross_entropy_loss. A target equal to `ignore_index` contributes no loss
/// and no gradient, and the mean is over the other samples. `label_smoothing` in [0, 1] mixes
/// the one-hot target with the uniform distribution over the C classes.
struct cross_entropy_options
{
    std::int64_t ignore_index = -100;
    double label_smoothing = 0.0;
};

/// @brief Options of nll_loss: as cross_entropy_options, without smoothing.
struct nll_options
{
    std::int64_t ignore_index = -100;
};

namespace detail
{
/// @brief How many targets count toward the mean and how many are out of range: the
/// accumulator of the one pass that checks the targets on the device.
struct target_count
{
    std::size_t valid = 0;
    std::size_t bad = 0;

    target_count() = default;
    EMBER_HOST_DEVICE explicit target_count(int) noexcept {}
    EMBER_HOST_DEVICE target_count(std::size_t v, std::size_t b) noexcept : valid(v), bad(b) {}

    EMBER_HOST_DEVICE target_count& operator+=(const target_count& o) noexcept
    {
        valid += o.valid;
        bad += o.bad;
        return *this;
    }
    EMBER_HOST_DEVICE friend target_count operator+(target_count a, const target_count& b) noexcept
    {
        return a += b;
    }
};

/// @brief Base of the class-index losses: checks targets, skips ignored samples, reduces.
/// `Derived` provides a `params_type`, `params()` and `static EMBER_HOST_DEVICE T row(const T*
/// x, std::size_t classes, std::size_t target, T* dx, T scale, params_type p)` returning one
/// sample's loss and, when `dx` is not null, writing `scale` times the derivative of that loss with
/// respect to the row's C inputs.
template <class Derived, class T, class Device>
class class_index_loss : public loss_base<Derived, T, 2, 1, Device>
{
    using base_type = loss_base<Derived, T, 2, 1, Device>;

public:
    using typename base_type::input_type;
    using target_type = typename Device::template tensor_type<std::int64_t, 1>;

    /// @brief The loss of scores `input` [batch, C] against class indices `target` [batch],
    /// reduced (mean: over the samples not ignored); records what backward() needs unless a
    /// no_grad guard is alive.
    /// @throws shape_error when target's length is not batch; value_error for a target outside
    /// [0, C) that is not ignore_index, naming it and its position.
    T forward(const input_type& input, const target_type& target);

    /// @brief `loss(input, target)` is `loss.forward(input, target)`.
    T operator()(const input_type& input, const target_type& target)
    {
        return forward(input, target);
    }

protected:
    class_index_loss(nn::reduction r, std::int64_t ignore_index) noexcept
        : base_type(r), m_ignore_index(ignore_index)
    {
    }

    // Throws the value_error naming the first target out of range (kernels cannot throw).
    [[noreturn]] void throw_bad_target(const target_type& target, std::size_t classes) const;

    std::int64_t m_ignore_index;
};
} // namespace detail

/// @brief `torch.nn.CrossEntropyLoss` for logits [batch, C] and class indices [batch]:
/// per sample, (1 - s) (-log p_target) + (s / C) sum_c (-log p_c), p = softmax(row), s the
/// label smoothing; 0 for ignored samples.
///
/// forward(input, target) returns the mean over the samples not ignored (or the sum); with
/// reduction::none it returns the sum and losses() holds one loss per sample. backward() is
/// the gradient of what forward() returned; backward(grad_output) (reduction::none) weights
/// each sample. On a device, logits, targets (int64), losses() and backward() are
/// `Device::tensor_type`s.
/// @code
/// ember::nn::cross_entropy_loss<> loss_fn({.label_smoothing = 0.1});
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
    static constexpr std::string_view name = "cross_entropy_loss";

    /// @throws value_error unless 0 <= label_smoothing <= 1.
    explicit cross_entropy_loss(nn::reduction r = nn::reduction::mean,
                                cross_entropy_options options = {});
    explicit cross_entropy_loss(cross_entropy_options options)
        : cross_entropy_loss(nn::reduction::mean, options)
    {
    }

    const cross_entropy_options& options() const noexcept { return m_options; }

    /// @brief One sample's loss and, when `dx` is not null, `scale` times its gradient
    /// (callable in kernels).
    static EMBER_HOST_DEVICE T row(const T* x, std::size_t classes, std::size_t target, T* dx,
                                   T scale, params_type p) noexcept;

private:
    params_type params() const noexcept { return {m_options.label_smoothing}; }

    cross_entropy_options m_options;
};

/// @brief `torch.nn.NLLLoss` for log-probabilities [batch, C] (log_softmax's output) and class
/// indices [batch]: -input[i, target[i]] per sample, 0 for ignored ones. forward(), losses()
/// and backward() behave as for cross_entropy_loss.
template <class T = float, class Device = cpu>
class nll_loss : public detail::class_index_loss<nll_loss<T, Device>, T, Device>
{
    using base_type = detail::class_index_loss<nll_loss<T, Device>, T, Device>;
    friend base_type;

public:
    using params_type = detail::no_params;
    static constexpr std::string_view name = "nll_loss";

    explicit nll_loss(nn::reduction r = nn::reduction::mean, nll_options options = {}) noexcept
        : base_type(r, options.ignore_index), m_options(options)
    {
    }
    explicit nll_loss(nll_options options) noexcept : nll_loss(nn::reduction::mean, options) {}

    const nll_options& options() const noexcept { return m_options; }

    /// @brief One sample's loss and, when `dx` is not null, `scale` times its gradient
    /// (callable in kernels).
    static EMBER_HOST_DEVICE T row(const T* x, std::size_t classes, std::size_t target, T* dx,
                                   T scale, params_type) noexcept
    {
        if (dx)
        {
            for (std::size_t c = 0; c < classes; ++c)
                dx[c] = T(0);
            dx[target] = -scale;
        }
        return -x[target];
    }

private:
    params_type params() const noexcept { return {}; }

    nll_options m_options;
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
    // Validate every target before computing anything, and count what the mean divides by.
    const std::int64_t* t = target.data();
    const std::int64_t ignore = m_ignore_index;
    const target_count counted = Device::template sum<target_count>(
        batch, EMBER_KERNEL(std::size_t i)->target_count {
            if (t[i] == ignore)
                return target_count(0, 0);
            const bool bad = t[i] < 0 || static_cast<std::uint64_t>(t[i]) >= classes;
            return bad ? target_count(0, 1) : target_count(1, 0);
        });
    if (counted.bad != 0)
        throw_bad_target(target, classes);
    const std::size_t count = counted.valid;
    resize_if_needed(this->m_losses, target.shape());
    if (caching)
        resize_if_needed(this->m_local, input.shape());
    const T scale = this->gradient_scale(count);
    const typename Derived::params_type p = static_cast<const Derived&>(*this).params();
    const T* x = input.data();
    T* l = this->m_losses.data();
    T* g = caching ? this->m_local.data() : nullptr;
    // One sample per kernel call, its C classes in order.
    const acc_type sum = Device::template sum<acc_type>(
        batch, EMBER_KERNEL(std::size_t i)->acc_type {
            T* dx = g ? g + i * classes : nullptr;
            if (t[i] == ignore)
            {
                l[i] = 0;
                if (dx)
                    for (std::size_t c = 0; c < classes; ++c)
                        dx[c] = T(0);
                return acc_type(0); // adds nothing: the sum stays bit for bit a plain loop's
            }
            const T li = Derived::row(x + i * classes, classes, static_cast<std::size_t>(t[i]), dx,
                                      scale, p);
            l[i] = li;
            return li;
        });
    return this->end_forward(sum, count, caching);
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
cross_entropy_loss<T, Device>::cross_entropy_loss(nn::reduction r, cross_entropy_options options)
    : base_type(r, options.ignore_index), m_options(options)
{
    if (!(options.label_smoothing >= 0 && options.label_smoothing <= 1))
        throw value_error("cross_entropy_loss: label_smoothing must be in [0, 1], got " +
                          std::to_string(options.label_smoothing));
}

template <class T, class Device>
EMBER_HOST_DEVICE T cross_entropy_loss<T, Device>::row(const T* x, std::size_t classes,
                                                       std::size_t target, T* dx, T scale,
                                                       params_type p) noexcept
{
    using acc = detail::loss_accumulator_t<T>;
    // log p_c = x_c - lse, lse = log sum_c e^x_c, taken about the row's maximum (the first
    // maximum, as std::max_element picks it; classes > 0 since target < classes).
    const T top = ember::detail::row_max(x, classes);
    acc sum_exp = 0;
    acc sum_x = 0;
    for (std::size_t c = 0; c < classes; ++c)
    {
        sum_exp += std::exp(static_cast<acc>(x[c]) - top);
        sum_x += x[c];
    }
    const acc lse = top + std::log(sum_exp);
    const acc s = p.label_smoothing;
    const acc k = static_cast<acc>(classes);
    acc loss = lse - x[target];
    if (s > 0) // PyTorch's smoothed branch; without it, exactly nll of log_softmax
        loss = (1 - s) * loss + (s / k) * (k * lse - sum_x);
    if (dx)
        // d loss / d x_c = p_c - q_c, q the smoothed target distribution.
        for (std::size_t c = 0; c < classes; ++c)
        {
            const acc q = (c == target ? 1 - s : 0) + s / k;
            dx[c] = static_cast<T>(scale * (std::exp(x[c] - lse) - q));
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
