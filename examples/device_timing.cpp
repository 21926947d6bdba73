// The lesson's exercise 4, "GPU vs CPU: run the complete workflow on both CPU and GPU. Compare
// training time." The same training, written once, runs on every device this program was built
// with and can use: cpu always, cuda when built by nvcc (Meson's cuda option) and a GPU is
// there, thrust_omp when built with Thrust and OpenMP. Two workloads:
// - the lesson's: LinearRegressionModel, 50 points, full batch, 100 epochs. It is tiny, so
//   kernel launches dominate and a GPU loses to the CPU, as it does in PyTorch;
// - a larger one where a GPU earns its keep: an MLP 256 → 1024 → 1024 → 1 on 8192 samples,
//   mini-batches of 1024, Adam, a few epochs.
//
//   build/examples/device_timing [epochs of the MLP, default 5]    writes device_timing.svg
#include <ember/ember.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "lesson_model.hpp"

namespace
{

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point start)
{
    return std::chrono::duration<double>(clock_type::now() - start).count();
}

// Times and the loss curve against elapsed time, for the table and the figure.
struct result
{
    double lesson_seconds;
    float lesson_loss;
    double mlp_seconds;
    float mlp_loss;
    std::vector<double> lesson_ms, lesson_losses, mlp_s, mlp_losses;
};

// The lesson's workflow: 100 epochs of full-batch SGD on y = 0.7 x + 0.3.
template <class Device>
void lesson(result& r)
{
    ember::manual_seed(42);
    const auto data = make_lesson_data(0.7f, 0.3f, 35); // the lesson's training split
    const auto X = ember::to<Device>(data.X), Y = ember::to<Device>(data.y);

    LinearRegressionModel<Device> model;
    ember::nn::mse_loss<float, 2, Device> criterion;
    ember::optim::sgd optimizer(model.parameters(), {.lr = 0.01});
    const auto start = clock_type::now();
    float loss = 0;
    for (int epoch = 0; epoch < 100; ++epoch)
    {
        loss = criterion(model(X), Y);
        optimizer.zero_grad();
        model.backward(criterion.backward());
        optimizer.step();
        r.lesson_ms.push_back(seconds_since(start) * 1e3);
        r.lesson_losses.push_back(loss);
    }
    r.lesson_seconds = seconds_since(start);
    r.lesson_loss = loss;
}

// A regression MLP big enough for a GPU: 8192 samples, 256 features.
template <class Device>
void mlp(result& r, int epochs)
{
    namespace nn = ember::nn;
    ember::manual_seed(0);
    const std::size_t samples = 8192, features = 256, batch = 1024;
    const auto x = ember::randn<float>({samples, features});
    ember::tensor<float, 2> y = ember::tensor<float, 2>::from_shape({samples, 1});
    for (std::size_t i = 0; i < samples; ++i)
        y(i, 0) = 0.5f * x(i, 0) - 0.25f * x(i, 1) + 0.1f * x(i, 2) * x(i, 3);
    // The batches, on the device once, as a DataLoader with pinned memory would feed them.
    std::vector<typename Device::template tensor_type<float, 2>> xs, ys;
    for (std::size_t b = 0; b < samples; b += batch)
    {
        xs.push_back(ember::to<Device>(
            ember::tensor<float, 2>(xt::view(x, xt::range(b, b + batch), xt::all()))));
        ys.push_back(ember::to<Device>(
            ember::tensor<float, 2>(xt::view(y, xt::range(b, b + batch), xt::all()))));
    }

    nn::sequential<nn::linear<float, Device>, nn::relu<float, 2, Device>, nn::linear<float, Device>,
                   nn::relu<float, 2, Device>, nn::linear<float, Device>>
        model(nn::linear<float, Device>(features, 1024), nn::relu<float, 2, Device>(),
              nn::linear<float, Device>(1024, 1024), nn::relu<float, 2, Device>(),
              nn::linear<float, Device>(1024, 1));
    model.requires_input_grad(false);
    nn::mse_loss<float, 2, Device> criterion;
    ember::optim::adam optimizer(model.parameters(), {.lr = 1e-3});
    const auto start = clock_type::now();
    float loss = 0;
    for (int epoch = 0; epoch < epochs; ++epoch)
        for (std::size_t b = 0; b < xs.size(); ++b)
        {
            loss = criterion(model(xs[b]), ys[b]);
            optimizer.zero_grad();
            model.backward(criterion.backward());
            optimizer.step();
            r.mlp_s.push_back(seconds_since(start));
            r.mlp_losses.push_back(loss);
        }
    r.mlp_seconds = seconds_since(start);
    r.mlp_loss = loss;
}

} // namespace

int main(int argc, char** argv)
{
    const int epochs = argc > 1 ? std::atoi(argv[1]) : 5;
    if (epochs <= 0)
    {
        std::fprintf(stderr, "usage: %s [MLP epochs > 0]\n", argv[0]);
        return 2;
    }
    try
    {
        if (!ember::cuda_is_available())
            std::printf("No usable GPU (%s): timing the CPU devices only.\n",
                        ember::is_compiled(ember::device_kind::cuda)
                            ? "none found, or its driver is missing or too old"
                            : "this program was built without CUDA");
        std::printf("%-12s %14s %12s %14s %12s\n", "device", "lesson (ms)", "final loss", "MLP (s)",
                    "final loss");
        // The figure: each device's loss against the time it took to get there.
        ember::plot::figure fig(12, 5);
        auto& lesson_axes = fig.subplot(1, 2, 1);
        lesson_axes.xlabel("Time (ms)").ylabel("Loss (MSE)").title("The lesson, 100 epochs");
        auto& mlp_axes = fig.subplot(1, 2, 2);
        mlp_axes.xlabel("Time (s)").ylabel("Loss (MSE)").title("MLP 256-1024-1024-1, Adam");
        // Every device runs the same training: its final losses must agree with cpu's, to float
        // rounding (parallel sums add in another order).
        result reference{};
        bool agree = true;
        for (auto kind :
             {ember::device_kind::cpu, ember::device_kind::thrust_omp, ember::device_kind::cuda})
        {
            if (!ember::is_available(kind))
                continue;
            result r{};
            ember::with_device(kind,
                               [&]<class Device>()
                               {
                                   lesson<Device>(r);
                                   mlp<Device>(r, epochs);
                               });
            std::printf("%-12s %14.3f %12.6f %14.3f %12.6f\n",
                        std::string(ember::device_name(kind)).c_str(), r.lesson_seconds * 1e3,
                        r.lesson_loss, r.mlp_seconds, r.mlp_loss);
            if (kind == ember::device_kind::cpu)
                reference = r;
            else if (std::abs(r.lesson_loss - reference.lesson_loss) >
                         1e-4 * std::abs(reference.lesson_loss) ||
                     std::abs(r.mlp_loss - reference.mlp_loss) >
                         1e-2 * std::abs(reference.mlp_loss))
            {
                std::printf("  %s's final losses differ from cpu's\n",
                            std::string(ember::device_name(kind)).c_str());
                agree = false;
            }
            const std::string name(ember::device_name(kind));
            lesson_axes.plot(r.lesson_ms, r.lesson_losses, {.label = name, .width = 2});
            mlp_axes.plot(r.mlp_s, r.mlp_losses, {.label = name, .width = 2});
        }
        lesson_axes.legend().grid(true, 0.3);
        mlp_axes.legend().grid(true, 0.3);
        fig.save("device_timing.svg");
        std::printf("Figure saved to device_timing.svg\n");
        if (!agree)
            return 1;
    }
    catch (const ember::error& e)
    {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    return 0;
}
