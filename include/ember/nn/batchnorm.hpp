#pragma once
/// @file
/// batch_norm1d (torch.nn.BatchNorm1d over [N, C]): normalises each channel by the batch's
/// mean and biased variance while training, updating running estimates (with the unbiased
/// variance, as PyTorch does); in evaluation it normalises by the running estimates.

#include "ember/core/error.hpp"
#include "ember/core/tensor.hpp"
#include "ember/nn/module.hpp"
#include "ember/nn/parameter.hpp"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace ember::nn
{

/// @brief Batch normalisation over the channels of an [N, C] input (torch.nn.BatchNorm1d).
///
/// State, under PyTorch's names: parameters `weight` (ones) and `bias` (zeros) when `affine`;
/// buffers `running_mean` (zeros), `running_var` (ones) and the 0-d int64
/// `num_batches_tracked` when `track_running_stats`. Without running statistics, the batch's
/// own statistics are used in evaluation too.
template <class T = float>
class batch_norm1d : public module<batch_norm1d<T>>
{
    static_assert(std::is_floating_point_v<T>, "ember::nn::batch_norm1d: T must be a float type");

public:
    using value_type = T;
    using tensor_type = tensor<T, 2>;

    parameter<T, 1> weight;
    parameter<T, 1> bias;
    buffer<T, 1> running_mean;
    buffer<T, 1> running_var;
    buffer<std::int64_t, 0> num_batches_tracked;

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

    bool m_cached = false;
    bool m_batch_stats = false; // whether the cached forward normalised by batch statistics
    tensor_type m_output;
    tensor_type m_xhat;
    tensor_type m_input_grad;
    // Per channel, sized at construction: statistics, the fused scale and shift, and the
    // backward sums, so forward and backward allocate nothing.
    std::vector<T> m_mean;
    std::vector<T> m_invstd;
    std::vector<T> m_alpha;
    std::vector<T> m_beta;
    std::vector<double> m_sum;
    std::vector<double> m_sum2;
};

/*******************
 * implementation  *
 *******************/

template <class T>
batch_norm1d<T>::batch_norm1d(std::size_t num_features, double eps, std::optional<double> momentum,
                              bool affine, bool track_running_stats)
    : weight(tensor<T, 1>::from_shape({affine ? num_features : 0})),
      bias(tensor<T, 1>::from_shape({affine ? num_features : 0})),
      running_mean(tensor<T, 1>::from_shape({track_running_stats ? num_features : 0})),
      running_var(tensor<T, 1>::from_shape({track_running_stats ? num_features : 0})),
      num_batches_tracked(tensor<std::int64_t, 0>(0)), m_features(num_features), m_eps(eps),
      m_momentum(momentum), m_affine(affine), m_track(track_running_stats), m_mean(num_features),
      m_invstd(num_features), m_alpha(num_features), m_beta(num_features), m_sum(num_features),
      m_sum2(num_features)
{
    reset_parameters();
}

template <class T>
void batch_norm1d<T>::reset_running_stats()
{
    running_mean.value.fill(T(0));
    running_var.value.fill(T(1));
    num_batches_tracked.value() = 0;
}

template <class T>
void batch_norm1d<T>::reset_parameters()
{
    reset_running_stats();
    weight.value.fill(T(1));
    bias.value.fill(T(0));
}

template <class T>
auto batch_norm1d<T>::forward(const tensor_type& x) -> const tensor_type&
{
    const std::size_t n = x.shape()[0];
    const std::size_t c = m_features;
    if (x.shape()[1] != c)
        throw shape_error("batch_norm1d: input of shape " + shape_string(x.shape()) +
                          ", expected [N, " + std::to_string(c) + "]");
    const bool batch_stats = this->is_training() || !m_track;
    if (batch_stats && n < 2)
        throw value_error("batch_norm1d: expected more than 1 value per channel when training, "
                          "got input of shape " +
                          shape_string(x.shape()));
    const T* in = x.data();
    if (batch_stats)
    {
        // Two passes accumulating in double, like PyTorch's CPU kernel.
        std::fill(m_sum.begin(), m_sum.end(), 0.0);
        std::fill(m_sum2.begin(), m_sum2.end(), 0.0);
        for (std::size_t i = 0; i < n; ++i)
            for (std::size_t j = 0; j < c; ++j)
                m_sum[j] += in[i * c + j];
        for (std::size_t j = 0; j < c; ++j)
            m_mean[j] = static_cast<T>(m_sum[j] / static_cast<double>(n));
        for (std::size_t i = 0; i < n; ++i)
            for (std::size_t j = 0; j < c; ++j)
            {
                const T d = in[i * c + j] - m_mean[j];
                m_sum2[j] += d * d;
            }
        double factor = 0.0;
        const bool update = this->is_training() && m_track;
        if (update)
        {
            std::int64_t& tracked = num_batches_tracked.value();
            ++tracked;
            factor = m_momentum ? *m_momentum : 1.0 / static_cast<double>(tracked);
        }
        for (std::size_t j = 0; j < c; ++j)
        {
            // Rounded to T and divided in T where PyTorch's kernel does, so float agrees too.
            const T var_sum = static_cast<T>(m_sum2[j]);
            const T var = var_sum / static_cast<T>(n);
            m_invstd[j] = static_cast<T>(1.0 / std::sqrt(static_cast<double>(var) + m_eps));
            if (update)
            {
                T& rm = running_mean.value(j);
                T& rv = running_var.value(j);
                const double unbiased = var_sum / static_cast<T>(n - 1);
                rm = static_cast<T>(factor * m_mean[j] + (1.0 - factor) * rm);
                rv = static_cast<T>(factor * unbiased + (1.0 - factor) * rv);
            }
        }
    }
    else
    {
        for (std::size_t j = 0; j < c; ++j)
        {
            m_mean[j] = running_mean.value(j);
            m_invstd[j] = T(1) / std::sqrt(running_var.value(j) + static_cast<T>(m_eps));
        }
    }
    // y = x * alpha + beta with alpha = invstd * weight, beta = bias - mean * alpha (PyTorch's
    // fused form).
    for (std::size_t j = 0; j < c; ++j)
    {
        const T w = m_affine ? weight.value(j) : T(1);
        const T b = m_affine ? bias.value(j) : T(0);
        m_alpha[j] = m_invstd[j] * w;
        m_beta[j] = b - m_mean[j] * m_alpha[j];
    }
    resize_if_needed(m_output, x.shape());
    T* out = m_output.data();
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = 0; j < c; ++j)
            out[i * c + j] = in[i * c + j] * m_alpha[j] + m_beta[j];

    m_cached = this->caching();
    if (m_cached)
    {
        m_batch_stats = batch_stats;
        resize_if_needed(m_xhat, x.shape());
        T* xhat = m_xhat.data();
        for (std::size_t i = 0; i < n; ++i)
            for (std::size_t j = 0; j < c; ++j)
                xhat[i * c + j] = (in[i * c + j] - m_mean[j]) * m_invstd[j];
    }
    return m_output;
}

template <class T>
auto batch_norm1d<T>::backward(const tensor_type& dy) -> const tensor_type&
{
    if (!m_cached)
        throw error("batch_norm1d: backward() needs a forward() run with gradients enabled; the "
                    "last forward ran under no_grad or never ran");
    check_shape(dy.shape(), m_output.shape(), "batch_norm1d: backward gradient");
    const std::size_t n = dy.shape()[0];
    const std::size_t c = m_features;
    const T* g = dy.data();
    const T* xhat = m_xhat.data();
    // m_sum: sum of dy per channel; m_sum2: sum of dy * xhat per channel.
    std::fill(m_sum.begin(), m_sum.end(), 0.0);
    std::fill(m_sum2.begin(), m_sum2.end(), 0.0);
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = 0; j < c; ++j)
        {
            m_sum[j] += g[i * c + j];
            m_sum2[j] += static_cast<double>(g[i * c + j]) * xhat[i * c + j];
        }
    if (m_affine)
    {
        for (std::size_t j = 0; j < c; ++j)
        {
            if (weight.requires_grad)
                weight.grad(j) += static_cast<T>(m_sum2[j]);
            if (bias.requires_grad)
                bias.grad(j) += static_cast<T>(m_sum[j]);
        }
    }
    resize_if_needed(m_input_grad, dy.shape());
    T* dx = m_input_grad.data();
    if (m_batch_stats)
    {
        // The mean and variance depend on every row, hence the two correction terms:
        // dx = w invstd / N (N dy - sum(dy) - xhat sum(dy xhat)).
        const T inv_n = T(1) / static_cast<T>(n);
        for (std::size_t j = 0; j < c; ++j)
            m_alpha[j] = (m_affine ? weight.value(j) : T(1)) * m_invstd[j];
        for (std::size_t i = 0; i < n; ++i)
            for (std::size_t j = 0; j < c; ++j)
            {
                const std::size_t k = i * c + j;
                dx[k] = m_alpha[j] * (g[k] - static_cast<T>(m_sum[j]) * inv_n -
                                      xhat[k] * static_cast<T>(m_sum2[j]) * inv_n);
            }
    }
    else
    {
        for (std::size_t j = 0; j < c; ++j)
            m_alpha[j] = (m_affine ? weight.value(j) : T(1)) * m_invstd[j];
        for (std::size_t i = 0; i < n; ++i)
            for (std::size_t j = 0; j < c; ++j)
                dx[i * c + j] = g[i * c + j] * m_alpha[j];
    }
    return m_input_grad;
}

} // namespace ember::nn
