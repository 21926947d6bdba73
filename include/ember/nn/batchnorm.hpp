#pragma once
/// @file
/// batch_norm1d (torch.nn.BatchNorm1d over [N, C]): normalises each channel by the batch's
/// mean and biased variance while training, updating running estimates (with the unbiased
/// variance, as PyTorch does); in evaluation it normalises by the running estimates.
///
/// On every device the statistics are one kernel over the channels (over small groups of
/// neighbouring channels in host memory), each channel summing its column in batch order (in
/// double, as PyTorch's CPU kernel does), and the normalisation one kernel over the rows; cpu
/// runs both in index order.

#include "ember/core/error.hpp"
#include "ember/core/tensor.hpp"
#include "ember/device/cpu.hpp"
#include "ember/device/kernel.hpp"
#include "ember/nn/module.hpp"
#include "ember/nn/parameter.hpp"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace ember::nn
{

/// @brief Batch normalisation over the channels of an [N, C] input (torch.nn.BatchNorm1d).
///
/// State, under PyTorch's names: parameters `weight` (ones) and `bias` (zeros) when `affine`;
/// buffers `running_mean` (zeros), `running_var` (ones) and the 0-d int64
/// `num_batches_tracked` when `track_running_stats`. Without running statistics, the batch's
/// own statistics are used in evaluation too.
template <class T = float, class Device = cpu>
class batch_norm1d : public nn::module<batch_norm1d<T, Device>, Device>
{
    static_assert(std::is_floating_point_v<T>, "ember::nn::batch_norm1d: T must be a float type");

public:
    using value_type = T;
    using device_type = Device;
    using tensor_type = typename Device::template tensor_type<T, 2>;

    parameter<T, 1, Device> weight;
    parameter<T, 1, Device> bias;
    buffer<T, 1, Device> running_mean;
    buffer<T, 1, Device> running_var;
    buffer<std::int64_t, 0, Device> num_batches_tracked;

    /// @brief `momentum` std::nullopt means a cumulative average over all batches seen
    /// (PyTorch's momentum=None).
    explicit batch_norm1d(std::size_t num_features, double eps = 1e-5,
                          std::optional<double> momentum = 0.1, bool affine = true,
                          bool track_running_stats = true);

    std::size_t num_features() const noexcept { return m_features; }
    double eps() const noexcept { return m_eps; }
    std::optional<double> momentum() const noexcept { return m_momentum; }
    bool affine() const noexcept { return m_affine; }
    bool track_running_stats() const noexcept { return m_track; }

    /// @brief running_mean = 0, running_var = 1, num_batches_tracked = 0.
    void reset_running_stats();
    /// @brief reset_running_stats(), then weight = 1, bias = 0.
    void reset_parameters();

    template <class V>
    void visit(V&& v)
    {
        if (m_affine)
        {
            v("weight", weight);
            v("bias", bias);
        }
        if (m_track)
        {
            v("running_mean", running_mean);
            v("running_var", running_var);
            v("num_batches_tracked", num_batches_tracked);
        }
    }

    /// @brief Throws shape_error unless x is [N, num_features], and value_error when batch
    /// statistics are needed but N < 2.
    const tensor_type& forward(const tensor_type& x);
    const tensor_type& backward(const tensor_type& dy);

private:
    std::size_t m_features;
    double m_eps;
    std::optional<double> m_momentum;
    bool m_affine;
    bool m_track;

    using channel_type = typename Device::template tensor_type<T, 1>;
    using sum_type = typename Device::template tensor_type<double, 1>;

    bool m_cached = false;
    bool m_batch_stats = false; // whether the cached forward normalised by batch statistics
    tensor_type m_output;
    tensor_type m_xhat;
    tensor_type m_input_grad;
    // Per channel, on the device, sized at construction: statistics, the fused scale and
    // shift, and the backward sums, so forward and backward allocate nothing.
    channel_type m_mean;
    channel_type m_invstd;
    channel_type m_alpha;
    channel_type m_beta;
    sum_type m_sum;
    sum_type m_sum2;
};

/*******************
 * implementation  *
 *******************/

namespace detail
{
// Channels per statistics kernel call: one per GPU thread; on the host, a cache line's worth of
// neighbouring channels, so each pass over the batch reads rows contiguously instead of
// striding down one column. Each channel still adds its own column in batch order, so the
// grouping changes no result.
template <class Device>
inline constexpr std::size_t channel_group = Device::host_memory ? 16 : 1;

template <class Device>
constexpr std::size_t channel_groups(std::size_t channels) noexcept
{
    return (channels + channel_group<Device> - 1) / channel_group<Device>;
}
} // namespace detail

template <class T, class Device>
batch_norm1d<T, Device>::batch_norm1d(std::size_t num_features, double eps,
                                      std::optional<double> momentum, bool affine,
                                      bool track_running_stats)
    : weight(channel_type::from_shape({affine ? num_features : 0})),
      bias(channel_type::from_shape({affine ? num_features : 0})),
      running_mean(channel_type::from_shape({track_running_stats ? num_features : 0})),
      running_var(channel_type::from_shape({track_running_stats ? num_features : 0})),
      num_batches_tracked(Device::template tensor_type<std::int64_t, 0>::from_shape({})),
      m_features(num_features), m_eps(eps), m_momentum(momentum), m_affine(affine),
      m_track(track_running_stats), m_mean(channel_type::from_shape({num_features})),
      m_invstd(channel_type::from_shape({num_features})),
      m_alpha(channel_type::from_shape({num_features})),
      m_beta(channel_type::from_shape({num_features})), m_sum(sum_type::from_shape({num_features})),
      m_sum2(sum_type::from_shape({num_features}))
{
    reset_parameters();
}

template <class T, class Device>
void batch_norm1d<T, Device>::reset_running_stats()
{
    running_mean.value.fill(T(0));
    running_var.value.fill(T(1));
    num_batches_tracked.value.fill(0);
}

template <class T, class Device>
void batch_norm1d<T, Device>::reset_parameters()
{
    reset_running_stats();
    weight.value.fill(T(1));
    bias.value.fill(T(0));
}

template <class T, class Device>
auto batch_norm1d<T, Device>::forward(const tensor_type& x) -> const tensor_type&
{
    const std::size_t n = x.shape()[0];
    const std::size_t c = m_features;
    if (x.shape()[1] != c)
        throw shape_error("batch_norm1d: input of shape " + shape_string(x.shape()) +
                          ", expected [N, " + std::to_string(c) + "]");
    const bool batch_stats = this->is_training() || !m_track;
    // An empty batch is an empty output, as in PyTorch (which still counts it in
    // num_batches_tracked, and leaves the running statistics as they are); one row has no
    // variance.
    if (batch_stats && n == 1)
        throw value_error("batch_norm1d: expected more than 1 value per channel when training, "
                          "got input of shape " +
                          shape_string(x.shape()));
    const T* in = x.data();
    T* mean = m_mean.data();
    T* invstd = m_invstd.data();
    T* alpha = m_alpha.data();
    T* beta = m_beta.data();
    T* rm = running_mean.value.data();
    T* rv = running_var.value.data();
    const T* w = weight.value.data();
    const T* b = bias.value.data();
    const bool affine = m_affine;
    const double eps = m_eps;
    if (batch_stats)
    {
        const bool update = this->is_training() && m_track;
        std::int64_t* tracked = num_batches_tracked.value.data();
        if (update)
            Device::for_each(
                1, EMBER_KERNEL(std::size_t) { ++tracked[0]; });
        const bool cumulative = !m_momentum;
        const double momentum = m_momentum ? *m_momentum : 0.0;
        Device::for_each(
            n == 0 ? 0 : detail::channel_groups<Device>(c), EMBER_KERNEL(std::size_t q) {
                constexpr std::size_t group = detail::channel_group<Device>;
                const std::size_t j0 = q * group;
                const std::size_t width = c - j0 < group ? c - j0 : group;
                // Two passes accumulating in double, like PyTorch's CPU kernel; each channel
                // adds its column in batch order.
                double sum[group];
                double sum2[group];
                T m[group] = {}; // only [0, width) is used; zeroed for GCC's maybe-uninitialized
                for (std::size_t k = 0; k < width; ++k)
                    sum[k] = 0.0;
                for (std::size_t i = 0; i < n; ++i)
                    for (std::size_t k = 0; k < width; ++k)
                        sum[k] += in[i * c + j0 + k];
                for (std::size_t k = 0; k < width; ++k)
                {
                    m[k] = static_cast<T>(sum[k] / static_cast<double>(n));
                    sum2[k] = 0.0;
                }
                for (std::size_t i = 0; i < n; ++i)
                    for (std::size_t k = 0; k < width; ++k)
                    {
                        const T d = in[i * c + j0 + k] - m[k];
                        sum2[k] += d * d;
                    }
                for (std::size_t k = 0; k < width; ++k)
                {
                    const std::size_t j = j0 + k;
                    // Rounded to T and divided in T where PyTorch's kernel does, so float
                    // agrees too.
                    const T var_sum = static_cast<T>(sum2[k]);
                    const T var = var_sum / static_cast<T>(n);
                    const T is = static_cast<T>(1.0 / std::sqrt(static_cast<double>(var) + eps));
                    if (update)
                    {
                        const double factor =
                            cumulative ? 1.0 / static_cast<double>(tracked[0]) : momentum;
                        const double unbiased = var_sum / static_cast<T>(n - 1);
                        rm[j] = static_cast<T>(factor * m[k] + (1.0 - factor) * rm[j]);
                        rv[j] = static_cast<T>(factor * unbiased + (1.0 - factor) * rv[j]);
                    }
                    mean[j] = m[k];
                    invstd[j] = is;
                    // y = x * alpha + beta with alpha = invstd * weight, beta = bias - mean *
                    // alpha (PyTorch's fused form).
                    alpha[j] = is * (affine ? w[j] : T(1));
                    beta[j] = (affine ? b[j] : T(0)) - m[k] * alpha[j];
                }
            });
    }
    else
    {
        Device::for_each(
            c, EMBER_KERNEL(std::size_t j) {
                const T m = rm[j];
                const T is = T(1) / std::sqrt(rv[j] + static_cast<T>(eps));
                mean[j] = m;
                invstd[j] = is;
                alpha[j] = is * (affine ? w[j] : T(1));
                beta[j] = (affine ? b[j] : T(0)) - m * alpha[j];
            });
    }
    resize_if_needed(m_output, x.shape());
    m_cached = this->caching();
    m_batch_stats = batch_stats;
    if (m_cached)
        resize_if_needed(m_xhat, x.shape());
    T* out = m_output.data();
    T* xhat = m_cached ? m_xhat.data() : nullptr;
    Device::for_each(
        n, EMBER_KERNEL(std::size_t i) {
            // x-hat first: x may be this module's own output (bn(bn(x))), which the row's
            // output overwrites.
            if (xhat)
                for (std::size_t j = 0; j < c; ++j)
                    xhat[i * c + j] = (in[i * c + j] - mean[j]) * invstd[j];
            for (std::size_t j = 0; j < c; ++j)
                out[i * c + j] = in[i * c + j] * alpha[j] + beta[j];
        });
    return m_output;
}

template <class T, class Device>
auto batch_norm1d<T, Device>::backward(const tensor_type& dy) -> const tensor_type&
{
    if (!m_cached)
        throw error("batch_norm1d: backward() needs a forward() run with gradients enabled; the "
                    "last forward ran under no_grad or never ran");
    check_shape(dy.shape(), m_output.shape(), "batch_norm1d: backward gradient");
    const std::size_t n = dy.shape()[0];
    const std::size_t c = m_features;
    const T* g = dy.data();
    const T* xhat = m_xhat.data();
    double* sum = m_sum.data();   // sum of dy per channel
    double* sum2 = m_sum2.data(); // sum of dy * xhat per channel
    T* alpha = m_alpha.data();
    const T* invstd = m_invstd.data();
    const T* w = weight.value.data();
    T* wg = m_affine && weight.requires_grad ? weight.grad().data() : nullptr;
    T* bg = m_affine && bias.requires_grad ? bias.grad().data() : nullptr;
    const bool affine = m_affine;
    Device::for_each(
        detail::channel_groups<Device>(c), EMBER_KERNEL(std::size_t q) {
            constexpr std::size_t group = detail::channel_group<Device>;
            const std::size_t j0 = q * group;
            const std::size_t width = c - j0 < group ? c - j0 : group;
            double s[group];
            double s2[group];
            for (std::size_t k = 0; k < width; ++k)
            {
                s[k] = 0.0;
                s2[k] = 0.0;
            }
            for (std::size_t i = 0; i < n; ++i)
                for (std::size_t k = 0; k < width; ++k)
                {
                    const std::size_t e = i * c + j0 + k;
                    s[k] += g[e];
                    s2[k] += static_cast<double>(g[e]) * xhat[e];
                }
            for (std::size_t k = 0; k < width; ++k)
            {
                const std::size_t j = j0 + k;
                sum[j] = s[k];
                sum2[j] = s2[k];
                if (wg)
                    wg[j] += static_cast<T>(s2[k]);
                if (bg)
                    bg[j] += static_cast<T>(s[k]);
                alpha[j] = (affine ? w[j] : T(1)) * invstd[j];
            }
        });
    resize_if_needed(m_input_grad, dy.shape());
    T* dx = m_input_grad.data();
    if (m_batch_stats)
    {
        // The mean and variance depend on every row, hence the two correction terms:
        // dx = w invstd / N (N dy - sum(dy) - xhat sum(dy xhat)).
        const T inv_n = T(1) / static_cast<T>(n);
        Device::for_each(
            n, EMBER_KERNEL(std::size_t i) {
                for (std::size_t j = 0; j < c; ++j)
                {
                    const std::size_t k = i * c + j;
                    dx[k] = alpha[j] * (g[k] - static_cast<T>(sum[j]) * inv_n -
                                        xhat[k] * static_cast<T>(sum2[j]) * inv_n);
                }
            });
    }
    else
    {
        Device::for_each(
            n, EMBER_KERNEL(std::size_t i) {
                for (std::size_t j = 0; j < c; ++j)
                    dx[i * c + j] = g[i * c + j] * alpha[j];
            });
    }
    return m_input_grad;
}

} // namespace ember::nn
