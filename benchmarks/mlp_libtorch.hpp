#pragma once
/// @file
/// The MLP 784-256-256-10 in LibTorch, written the way a LibTorch user writes it: the model with
/// common.hpp's weights, one batch of its data, and its training step, as bench_libtorch and
/// bench_interleaved run it.

#include "common.hpp"

#include <torch/torch.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace bench
{

inline torch::Tensor torch_tensor(const std::vector<float>& v, std::int64_t rows, std::int64_t cols)
{
    return torch::from_blob(const_cast<float*>(v.data()), {rows, cols}, torch::kFloat32).clone();
}

inline torch::nn::Sequential torch_mlp()
{
    namespace nn = torch::nn;
    nn::Sequential model(nn::Linear(784, 256), nn::ReLU(), nn::Linear(256, 256), nn::ReLU(),
                         nn::Linear(256, 10));
    torch::NoGradGuard no_grad;
    const int layers[] = {0, 2, 4};
    for (int i = 0; i < 3; ++i)
    {
        const auto init = mlp_layer(i);
        auto* linear = model[static_cast<std::size_t>(layers[i])]->as<nn::Linear>();
        linear->weight.copy_(torch_tensor(init.weight, static_cast<std::int64_t>(init.out),
                                          static_cast<std::int64_t>(init.in)));
        linear->bias.copy_(
            torch_tensor(init.bias, 1, static_cast<std::int64_t>(init.out)).view(-1));
    }
    return model;
}

struct torch_mlp_data
{
    torch::Tensor x, y;
    explicit torch_mlp_data(std::size_t batch)
    {
        const auto b = static_cast<std::int64_t>(batch);
        x = torch_tensor(mlp_inputs(batch), b, static_cast<std::int64_t>(mlp_in));
        auto t = mlp_targets(batch);
        y = torch::from_blob(t.data(), {b}, torch::kInt64).clone();
    }
};

/// A fresh model, its optimizer and one batch; step() trains one step on it.
template <class Optimizer>
class torch_mlp_trainer
{
public:
    template <class Options>
    torch_mlp_trainer(std::size_t batch, const Options& options)
        : m_model(torch_mlp()), m_optimizer(m_model->parameters(), options), m_data(batch)
    {
    }

    torch::Tensor step()
    {
        auto logits = m_model->forward(m_data.x);
        auto loss = torch::nn::functional::cross_entropy(logits, m_data.y);
        m_optimizer.zero_grad();
        loss.backward();
        m_optimizer.step();
        return loss;
    }

private:
    torch::nn::Sequential m_model;
    Optimizer m_optimizer;
    torch_mlp_data m_data;
};

} // namespace bench
