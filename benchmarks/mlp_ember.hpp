#pragma once
/// @file
/// The MLP 784-256-256-10 in ember: the model with common.hpp's weights, one batch of its data,
/// and its training step (forward, cross-entropy, zero_grad, backward, step), as bench_ember and
/// bench_interleaved run it.

#include "common.hpp"
#include "mlp_products.hpp"

#include <ember/core/tensor.hpp>
#include <ember/loss/cross_entropy.hpp>
#include <ember/nn/activation.hpp>
#include <ember/nn/linear.hpp>
#include <ember/nn/sequential.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace bench
{

inline ember::tensor<float, 2> ember_tensor(const std::vector<float>& v, std::size_t rows,
                                            std::size_t cols)
{
    auto t = ember::tensor<float, 2>::from_shape({rows, cols});
    std::copy(v.begin(), v.end(), t.data());
    return t;
}

inline auto ember_mlp()
{
    namespace nn = ember::nn;
    nn::sequential model{nn::linear(784, 256), nn::relu(), nn::linear(256, 256), nn::relu(),
                         nn::linear(256, 10)};
    auto load = [](auto& layer, int i)
    {
        const auto init = mlp_layer(i);
        std::copy(init.weight.begin(), init.weight.end(), layer.weight.value.data());
        std::copy(init.bias.begin(), init.bias.end(), layer.bias.value.data());
    };
    load(model.get<0>(), 0);
    load(model.get<2>(), 1);
    load(model.get<4>(), 2);
    return model;
}

struct ember_mlp_data
{
    ember::tensor<float, 2> x;
    ember::tensor<std::int64_t, 1> y;

    explicit ember_mlp_data(std::size_t batch)
        : x(ember_tensor(mlp_inputs(batch), batch, mlp_in)),
          y(ember::tensor<std::int64_t, 1>::from_shape({batch}))
    {
        const auto t = mlp_targets(batch);
        std::copy(t.begin(), t.end(), y.data());
    }
};

/// A fresh model, its optimizer and one batch; step() trains one step on it. The input is data:
/// like PyTorch for an input without requires_grad, ember then skips the first layer's input
/// gradient (requires_input_grad(false)); `input_grad` measures the cost of not saying so.
template <class Optimizer>
class ember_mlp_trainer
{
public:
    template <class Options>
    ember_mlp_trainer(std::size_t batch, const Options& options, bool input_grad = false)
        : m_model(model(input_grad)), m_optimizer(m_model.parameters(), options), m_data(batch)
    {
    }

    float step()
    {
        const auto& logits = m_model(m_data.x);
        const float loss = m_loss(logits, m_data.y);
        m_optimizer.zero_grad();
        m_model.backward(m_loss.backward());
        m_optimizer.step();
        return loss;
    }

    /// The optimizer's update alone, on the gradients that are there.
    void update() { m_optimizer.step(); }

    /// The three layers' weights and gradients, for mlp_products to work on, which at batch 1
    /// keeps the weights' gradients as outer products, as the step's backward does. The biases'
    /// gradients are made too (zeros), so that update() steps every parameter, as a step does
    /// (a parameter with no gradient at all is skipped, as PyTorch skips a None grad).
    mlp_weights weights()
    {
        auto& l0 = m_model.template get<0>();
        auto& l1 = m_model.template get<2>();
        auto& l2 = m_model.template get<4>();
        l0.bias.grad();
        l1.bias.grad();
        l2.bias.grad();
        const std::array layers{&l0.weight, &l1.weight, &l2.weight};
        auto keep_outer = [layers](int layer, const float* dy, const float* x)
        {
            auto* w = layers[static_cast<std::size_t>(layer)];
            w->zero_grad(); // as the step's zero_grad() before its backward
            w->keep_grad_as_outer({dy, w->value.shape()[0]}, {x, w->value.shape()[1]});
        };
        return {{l0.weight.value.data(), l1.weight.value.data(), l2.weight.value.data()},
                {l0.weight.grad().data(), l1.weight.grad().data(), l2.weight.grad().data()},
                keep_outer};
    }

private:
    static decltype(ember_mlp()) model(bool input_grad)
    {
        auto m = ember_mlp();
        m.requires_input_grad(input_grad);
        return m;
    }

    decltype(ember_mlp()) m_model;
    ember::nn::cross_entropy_loss<float> m_loss;
    Optimizer m_optimizer;
    ember_mlp_data m_data;
};

} // namespace bench
