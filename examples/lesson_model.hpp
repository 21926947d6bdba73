#pragma once
// The lesson's data (step 2) and LinearRegressionModel (step 3), shared by the examples that
// train it: two named parameters and hand-written forward and backward, one kernel each, so the
// same model runs on every device.
#include <ember/core/error.hpp>
#include <ember/core/generator.hpp>
#include <ember/core/tensor.hpp>
#include <ember/device/cpu.hpp>
#include <ember/device/kernel.hpp>
#include <ember/device/transfer.hpp>
#include <ember/nn/module.hpp>
#include <ember/nn/parameter.hpp>
#include <ember/plot/svg.hpp>

#include <cstddef>
#include <cstdio>
#include <vector>

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
        float *gw = weight.grad().data(), *gb = bias.grad().data();
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

/// Rows [from, to) of `t`, as a tensor of their own: X[from:to] in Python.
inline ember::tensor<float, 2> rows(const ember::tensor<float, 2>& t, std::size_t from,
                                    std::size_t to)
{
    return ember::tensor<float, 2>(xt::view(t, xt::range(from, to), xt::all()));
}

/// A column tensor's values as doubles, as plot::axes takes them.
inline std::vector<double> column(const ember::tensor<float, 2>& t)
{
    return std::vector<double>(t.begin(), t.end());
}

/// The lesson's three splits as scatter plots: train in blue, validation green, test red.
inline void scatter_splits(ember::plot::axes& ax, const ember::tensor<float, 2>& X_train,
                           const ember::tensor<float, 2>& y_train,
                           const ember::tensor<float, 2>& X_val,
                           const ember::tensor<float, 2>& y_val,
                           const ember::tensor<float, 2>& X_test,
                           const ember::tensor<float, 2>& y_test)
{
    ax.scatter(column(X_train), column(y_train),
               {.label = "Train data", .color = "b", .alpha = 0.6});
    ax.scatter(column(X_val), column(y_val), {.label = "Val data", .color = "g", .alpha = 0.6});
    ax.scatter(column(X_test), column(y_test), {.label = "Test data", .color = "r", .alpha = 0.6});
}

/// What an example's main() does: runs `run` and turns an ember::error into its message on
/// stderr and exit status 1.
template <class F>
int run_reporting_errors(F&& run)
{
    try
    {
        return run();
    }
    catch (const ember::error& e)
    {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
