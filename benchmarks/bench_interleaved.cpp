// The MLP training step of ember and of LibTorch, and its matrix products alone, taking turns
// in one process. bench_ember and bench_libtorch run each library in processes of their own,
// seconds to minutes apart; on a shared virtual machine the same step then takes 30-50% more or
// less from one process to the next, more than the difference being measured. Here one block
// times each contender in turn, a few hundred milliseconds apart, and the ratios are taken
// block by block: the machine's drift between blocks cancels out of them.
//
// The contenders: ember's step, LibTorch's step, the step's matrix products alone on buffers
// of their own through ember's products (the roofline) and through OpenBLAS (the roofline the
// issue's target names), and the floor: the same products on ember's model's own weights and
// gradients followed by its optimizer's update, the work no step with that optimizer can leave
// out. (At batch 1 the floor, like ember's step, keeps the weight gradients as outer products
// of dy and x instead of multiplying them out, and the optimizer updates from those:
// nn::parameter::keep_grad_as_outer.) The floor over the products says how close to them any
// such step can come; ember's step over the floor, what the rest of ember's step costs (bias,
// ReLU, cross-entropy, zero_grad, the copies backward keeps). With Adam at one thread a sixth,
// the bound: OpenBLAS's forward products, then the square roots and divisions of Adam's update
// alone (adam_divider.hpp), the least any Adam step that gives PyTorch's bits can take.
//
// A benchmark iteration is one block. In it each contender starts fresh (a new model and
// optimizer from common.hpp's weights, as every repetition of bench_ember's and
// bench_libtorch's rows does), runs one step untimed, then bench::mlp_step_iterations(batch)
// steps timed; the order rotates from block to block. The reported time is ember's per step;
// the counters hold the medians over the blocks: each contender's time per step (ember_s,
// libtorch_s, products_s, openblas_products_s, floor_s, bound_s), LibTorch's time over
// ember's (speedup), ember's over its products' (ember_over_products), over OpenBLAS's
// (ember_over_openblas_products) and over the floor (ember_over_floor), the floor's over the
// two products' (floor_over_products, floor_over_openblas_products), the bound's over
// OpenBLAS's products (bound_over_openblas_products), and the least time per step of each.
#include "adam_divider.hpp"
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
#include <type_traits>
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
    enum contender
    {
        ember_step,
        libtorch_step,
        products_alone,
        openblas_products_alone,
        step_floor,
        adam_bound,
        contenders
    };
    // The bound at one thread only: its square roots and divisions run on one core.
    const bool with_bound =
        std::is_same_v<EmberOptimizer, ember::optim::adam<float>> && bench::threads() == 1;
    const std::size_t taking_turns = with_bound ? contenders : adam_bound;
    std::vector<double> times[contenders]; // per block
    std::size_t block = 0;
    for (auto _ : state)
    {
        double t[contenders] = {};
        for (std::size_t k = 0; k < taking_turns; ++k)
            switch (const auto which = static_cast<contender>((block + k) % taking_turns); which)
            {
            case ember_step:
            {
                bench::ember_mlp_trainer<EmberOptimizer> trainer(batch, ember_options);
                t[ember_step] =
                    seconds_per_step([&] { benchmark::DoNotOptimize(trainer.step()); }, steps);
                break;
            }
            case libtorch_step:
            {
                bench::torch_mlp_trainer<TorchOptimizer> trainer(batch, torch_options);
                t[libtorch_step] = seconds_per_step(
                    [&] { benchmark::DoNotOptimize(trainer.step().data_ptr()); }, steps);
                break;
            }
            case products_alone:
            case openblas_products_alone:
            {
                bench::mlp_products alone(batch, which == openblas_products_alone);
                t[which] = seconds_per_step(
                    [&]
                    {
                        alone.run();
                        benchmark::ClobberMemory();
                    },
                    steps);
                break;
            }
            case adam_bound:
            {
                bench::mlp_products forward(batch, true);
                bench::adam_divider divider(bench::mlp_parameters);
                t[adam_bound] = seconds_per_step(
                    [&]
                    {
                        forward.run_forward();
                        divider.run();
                    },
                    steps);
                break;
            }
            default:
            {
                bench::ember_mlp_trainer<EmberOptimizer> trainer(batch, ember_options);
                bench::mlp_products on_model(batch, trainer.weights());
                t[step_floor] = seconds_per_step(
                    [&]
                    {
                        on_model.run();
                        trainer.update();
                        benchmark::ClobberMemory();
                    },
                    steps);
            }
            }
        state.SetIterationTime(t[ember_step]);
        for (std::size_t c = 0; c < taking_turns; ++c)
            times[c].push_back(t[c]);
        ++block;
    }
    const char* names[contenders] = {"ember", "libtorch", "products", "openblas_products",
                                     "floor", "bound"};
    for (std::size_t c = 0; c < taking_turns; ++c)
    {
        state.counters[std::string(names[c]) + "_s"] = median(times[c]);
        state.counters[std::string(names[c]) + "_min_s"] =
            *std::min_element(times[c].begin(), times[c].end());
    }
    // The median of the blocks' ratios, each block's two times taken a moment apart.
    auto median_ratio = [&](contender a, contender b)
    {
        std::vector<double> ratios(times[a].size());
        for (std::size_t i = 0; i < ratios.size(); ++i)
            ratios[i] = times[a][i] / times[b][i];
        return median(std::move(ratios));
    };
    state.counters["speedup"] = median_ratio(libtorch_step, ember_step);
    state.counters["ember_over_products"] = median_ratio(ember_step, products_alone);
    state.counters["ember_over_floor"] = median_ratio(ember_step, step_floor);
    state.counters["floor_over_products"] = median_ratio(step_floor, products_alone);
    state.counters["ember_over_openblas_products"] =
        median_ratio(ember_step, openblas_products_alone);
    state.counters["floor_over_openblas_products"] =
        median_ratio(step_floor, openblas_products_alone);
    if (with_bound)
        state.counters["bound_over_openblas_products"] =
            median_ratio(adam_bound, openblas_products_alone);
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
