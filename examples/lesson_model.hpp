#pragma once
// The lesson's data (step 2) and LinearRegressionModel (step 3), shared by the examples that
// train it: two named parameters and hand-written forward and backward, one kernel each, so the
// same model runs on every device.
#include <ember/ember.hpp>

#include <cstddef>

template <class Device = ember::cpu>
struct LinearRegressionModel : ember::nn::module<LinearRegressionModel<Device>, Device>
{
    using tensor = typename Device::template tensor_type<float, 2>;
    ember::nn::parameter<float, 1, Device> weight{ember::to<Device>(ember::randn<float>({1}))};
    ember::nn::parameter<float, 1, Device> bias{ember::to<Device>(ember::randn<float>({1}))};

    template <class V>
    void visit(V&& v)
    {
        v("weight", weight);
        v("bias", bias);
    }

    // forward(x) = weight * x + bias, one element per kernel call (a GPU thread on cuda)
    const tensor& forward(const tensor& x)
    {
        if (this->caching())
            ember::assign<Device>(m_x, x);
        ember::resize_if_needed(m_y, x.shape());
        const float *w = weight.value.data(), *b = bias.value.data(), *in = x.data();
        float* out = m_y.data();
        Device::for_each(
            x.size(), EMBER_KERNEL(std::size_t i) { out[i] = w[0] * in[i] + b[0]; });
        return m_y;
    }

    // d/dweight = sum(dy * x), d/dbias = sum(dy), d/dx = weight * dy
    const tensor& backward(const tensor& dy)
    {
        const std::size_t n = dy.size();
        const float *g = dy.data(), *xs = m_x.data(), *w = weight.value.data();
        const float dw = Device::template sum<float>(
            n, EMBER_KERNEL(std::size_t i) { return g[i] * xs[i]; });
        const float db = Device::template sum<float>(
            n, EMBER_KERNEL(std::size_t i) { return g[i]; });
        float *gw = weight.grad.data(), *gb = bias.grad.data();
        Device::for_each(
            1, EMBER_KERNEL(std::size_t) {
                gw[0] += dw;
                gb[0] += db;
            });
        ember::resize_if_needed(m_dx, dy.shape());
        float* dx = m_dx.data();
        Device::for_each(
            n, EMBER_KERNEL(std::size_t i) { dx[i] = w[0] * g[i]; });
        return m_dx;
    }

private:
    tensor m_x, m_y, m_dx;
};

/// The lesson's data: X = torch.arange(0, 1, 0.02).unsqueeze(dim=1) (n = 50 points, or the first
/// n) and y = weight * X + bias, each rounded to float as PyTorch rounds them.
struct lesson_data
{
    ember::tensor<float, 2> X;
    ember::tensor<float, 2> y;
};

inline lesson_data make_lesson_data(float weight = 0.7f, float bias = 0.3f, std::size_t n = 50)
{
    lesson_data d{ember::tensor<float, 2>::from_shape({n, 1}), {}};
    for (std::size_t i = 0; i < n; ++i)
        d.X(i, 0) = static_cast<float>(0.02 * static_cast<double>(i));
    d.y = weight * d.X;
    d.y = d.y + bias; // two roundings, as PyTorch's `weight * X + bias`
    return d;
}
