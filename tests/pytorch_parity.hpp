// The model, batches and training loop of the training-parity checks with PyTorch: ember's
// side of scripts/golden_parity.py's mlp(), train() and eval_output(). Used by
// tests/test_pytorch_parity.cpp (PyTorch -> ember, from committed files) and by torch_tool's
// `parity` command (ember -> PyTorch, the 'pytorch_parity_live' test).
#pragma once

#include <ember/core/generator.hpp>
#include <ember/core/grad_mode.hpp>
#include <ember/core/host_tensor.hpp>
#include <ember/core/state_dict.hpp>
#include <ember/core/tensor.hpp>
#include <ember/loss/mse.hpp>
#include <ember/nn/layers.hpp>
#include <ember/optim/optimizers.hpp>

#include "golden/parity.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

namespace parity
{

namespace g = golden::parity;

/// @brief nn.Sequential(Linear, ReLU, BatchNorm1d, Dropout, Linear) of golden/parity.hpp's
/// sizes, initialised from the default generator (as torch.nn draws).
inline auto mlp()
{
    namespace nn = ember::nn;
    return nn::sequential{nn::linear(g::in_features, g::hidden), nn::relu(),
                          nn::batch_norm1d(g::hidden), nn::dropout(g::dropout),
                          nn::linear(g::hidden, g::out_features)};
}
using model_type = decltype(mlp());

/// @brief A [rows, cols] float32 batch as golden_parity.randn draws it: float64 normals, rounded.
/// (PyTorch's float32 randn of 16 or more elements depends on the CPU: an AVX2 kernel with its
/// own vector log and sincos where the CPU has AVX2, which ember's generator does not repeat.)
inline ember::tensor<float, 2> randn(std::size_t rows, std::size_t cols, ember::generator& gen)
{
    const ember::tensor<double, 2> d = ember::randn<double>({rows, cols}, gen);
    ember::tensor<float, 2> f = ember::tensor<float, 2>::from_shape({rows, cols});
    for (std::size_t i = 0; i < d.size(); ++i)
        f.data()[i] = static_cast<float>(d.data()[i]);
    return f;
}

/// @brief `steps` training steps of MSE on randn batches from `data` (x then y, as
/// golden_parity.train draws them); returns the losses.
template <class Optimizer>
std::vector<float> train(model_type& model, Optimizer& optimizer, std::size_t steps,
                         ember::generator& data)
{
    model.train();
    ember::nn::mse_loss<float> criterion;
    std::vector<float> losses;
    losses.reserve(steps);
    for (std::size_t i = 0; i < steps; ++i)
    {
        const ember::tensor<float, 2> x = randn(g::batch, g::in_features, data);
        const ember::tensor<float, 2> y = randn(g::batch, g::out_features, data);
        optimizer.zero_grad();
        losses.push_back(criterion(model(x), y));
        model.backward(criterion.backward());
        optimizer.step();
    }
    return losses;
}

/// @brief The eval-mode output on the eval batch (randn from eval_seed); leaves the model in
/// training mode.
inline ember::tensor<float, 2> eval_output(model_type& model)
{
    ember::generator gen(g::eval_seed);
    const ember::tensor<float, 2> x = randn(g::eval_batch, g::in_features, gen);
    model.eval();
    ember::tensor<float, 2> out;
    {
        ember::no_grad guard;
        out = model(x);
    }
    model.train();
    return out;
}

/// @brief |a - b| / |b|, with 0 / 0 = 0.
inline double relative_difference(double a, double b)
{
    const double d = std::abs(a - b);
    return d == 0 ? 0.0 : d / std::abs(b);
}

/// @brief The largest relative_difference over two equally long arrays.
template <class A, class B>
double max_relative_difference(const A& actual, const B& expected)
{
    double worst = 0;
    const auto n = std::min<std::size_t>(std::size(actual), std::size(expected));
    for (std::size_t i = 0; i < n; ++i)
        worst = std::max(worst, relative_difference(static_cast<double>(std::data(actual)[i]),
                                                    static_cast<double>(std::data(expected)[i])));
    return worst;
}

/// @brief max |a - b| over max |b|: the difference relative to the tensor's scale, the
/// measure the parity checks hold to 1e-5 (parameters) and 1e-6 (eval-mode outputs).
template <class A, class B>
double scaled_difference(const A& actual, const B& expected)
{
    double diff = 0, scale = 0;
    const auto n = std::min<std::size_t>(std::size(actual), std::size(expected));
    for (std::size_t i = 0; i < n; ++i)
    {
        const double a = std::data(actual)[i], b = std::data(expected)[i];
        diff = std::max(diff, std::abs(a - b));
        scale = std::max(scale, std::abs(b));
    }
    return diff == 0 ? 0.0 : diff / scale;
}

} // namespace parity
