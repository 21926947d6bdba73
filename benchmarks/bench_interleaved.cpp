// The MLP training step of ember and of LibTorch, and its matrix products alone, taking turns
// in one process. bench_ember and bench_libtorch run each library in processes of their own,
// seconds to minutes apart; on a shared virtual machine the same step then takes 30-50% more or
// less from one process to the next, more than the difference being measured. Here one block
// times each of the three in turn, a few hundred milliseconds apart, and the ratios are taken
// block by block: the machine's drift between blocks cancels out of them.
//
// A benchmark iteration is one block. In it each of the three starts fresh (a new model and
// optimizer from common.hpp's weights, as every repetition of bench_ember's and
// bench_libtorch's rows does), runs one step untimed, then bench::mlp_step_iterations(batch)
// steps timed; the order rotates from block to block. The reported time is ember's per step;
// the counters hold the medians over the blocks: each side's time per step (ember_s,
// libtorch_s, products_s), LibTorch's time over ember's (speedup) and ember's over its
// products' (ember_over_products), and the least time per step of each side.
#include "common.hpp"
#include "mlp_ember.hpp"
#include "mlp_libtorch.hpp"
#include "mlp_products.hpp"

#include <ember/core/threads.hpp>
#include <ember/optim/adam.hpp>
#include <ember/optim/sgd.hpp>

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

namespace
{

// Seconds per step of `steps` calls of `step`, after one untimed call.
template <class Step>
double seconds_per_step(Step&& step, int steps)
{
    step();
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < steps; ++i)
        step();
    const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
    return elapsed.count() / steps;
}

double median(std::vector<double> v)
{
    std::sort(v.begin(), v.end());
    const std::size_t n = v.size();
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

template <class EmberOptimizer, class TorchOptimizer, class EmberOptions, class TorchOptions>
void interleaved_step(benchmark::State& state, std::size_t batch, EmberOptions ember_options,
                      TorchOptions torch_options)
{
    const int steps = bench::mlp_step_iterations(batch);
    std::vector<double> ember_s, torch_s, products_s, speedup, over_products;
    std::size_t block = 0;
    for (auto _ : state)
    {
        double t[3] = {};
        for (std::size_t k = 0; k < 3; ++k)
            switch ((block + k) % 3)
            {
            case 0:
            {
                bench::ember_mlp_trainer<EmberOptimizer> trainer(batch, ember_options);
                t[0] = seconds_per_step([&] { benchmark::DoNotOptimize(trainer.step()); }, steps);
                break;
            }
            case 1:
            {
                bench::torch_mlp_trainer<TorchOptimizer> trainer(batch, torch_options);
                t[1] = seconds_per_step(
                    [&] { benchmark::DoNotOptimize(trainer.step().data_ptr()); }, steps);
                break;
            }
            default:
            {
                bench::mlp_products products(batch);
                t[2] = seconds_per_step(
                    [&]
                    {
                        products.run();
                        benchmark::ClobberMemory();
                    },
                    steps);
            }
            }
        state.SetIterationTime(t[0]);
        ember_s.push_back(t[0]);
        torch_s.push_back(t[1]);
        products_s.push_back(t[2]);
        speedup.push_back(t[1] / t[0]);
        over_products.push_back(t[0] / t[2]);
        ++block;
    }
    state.counters["ember_s"] = median(ember_s);
    state.counters["libtorch_s"] = median(torch_s);
    state.counters["products_s"] = median(products_s);
    state.counters["ember_min_s"] = *std::min_element(ember_s.begin(), ember_s.end());
    state.counters["libtorch_min_s"] = *std::min_element(torch_s.begin(), torch_s.end());
    state.counters["products_min_s"] = *std::min_element(products_s.begin(), products_s.end());
    state.counters["speedup"] = median(speedup);
    state.counters["ember_over_products"] = median(over_products);
}

void register_all()
{
    const int blocks = bench::quick() ? 2 : 15;
    for (int b : bench::mlp_batches)
    {
        const auto batch = static_cast<std::size_t>(b);
        const std::string suffix = "/b" + std::to_string(b);
        auto reg = [&](const std::string& workload, auto fn)
        {
            benchmark::RegisterBenchmark(bench::name("interleaved/" + workload + suffix).c_str(),
                                         fn)
                ->UseManualTime()
                ->Iterations(blocks)
                ->Unit(benchmark::kMicrosecond);
        };
        reg("mlp_step/sgd_momentum",
            [batch](benchmark::State& s)
            {
                interleaved_step<ember::optim::sgd<float>, torch::optim::SGD>(
                    s, batch, ember::optim::sgd_options{.lr = 0.01, .momentum = 0.9},
                    torch::optim::SGDOptions(0.01).momentum(0.9));
            });
        reg("mlp_step/adam",
            [batch](benchmark::State& s)
            {
                interleaved_step<ember::optim::adam<float>, torch::optim::Adam>(
                    s, batch, ember::optim::adam_options{}, torch::optim::AdamOptions(1e-3));
            });
    }
}

} // namespace

int main(int argc, char** argv)
{
    // The settings of both programs at once: one OpenBLAS serves both libraries here.
    openblas_set_num_threads(bench::threads());
    ember::set_num_threads(bench::threads());
    torch::set_num_threads(bench::threads());
    return bench::run(argc, argv, "ember and libtorch, interleaved", register_all);
}
