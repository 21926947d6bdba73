// The README's first example, compiled with the others so it cannot rot.
#include <cstdio>
#include <ember/ember.hpp>
namespace nn = ember::nn;

int main()
{
    ember::manual_seed(42); // the same draws as torch.manual_seed(42)
    nn::sequential model{nn::linear(784, 256), nn::relu(), nn::linear(256, 10)};
    nn::cross_entropy_loss criterion;
    ember::optim::sgd optimizer(model.parameters(), {.lr = 0.01, .momentum = 0.9});

    ember::tensor<float, 2> x = ember::randn<float>({64, 784});
    ember::tensor<std::int64_t, 1> y = xt::zeros<std::int64_t>({64});
    for (int step = 0; step < 100; ++step)
    {
        float loss = criterion(model(x), y); // forward
        optimizer.zero_grad();
        model.backward(criterion.backward()); // backward
        optimizer.step();
        if (step % 20 == 0)
            std::printf("step %d: loss %.4f\n", step, loss);
    }
    ember::save(model.state_dict(), "model.ember");

    model.eval();
    ember::no_grad guard; // with torch.no_grad():
    const auto& logits = model(x);
    std::printf("logits: %zu x %zu\n", logits.shape(0), logits.shape(1));
}
