// LibTorch's half of the side-by-side benchmarks: the same workloads as bench_ember.cpp, on the
// same data (common.hpp), written the way a LibTorch user writes them.
#include "common.hpp"
#include "mlp_libtorch.hpp"

#include <torch/torch.h>

#include <cblas.h>

#include <fcntl.h>
#include <unistd.h>

namespace
{

using bench::torch_tensor;

// ============================================================================================
// The lesson: its custom two-parameter model, MSE, SGD, and one epoch (train + validation).
// ============================================================================================

struct LinearRegressionModelImpl : torch::nn::Module
{
    LinearRegressionModelImpl()
    {
        weight = register_parameter("weight", torch::randn({1}));
        bias = register_parameter("bias", torch::randn({1}));
    }
    torch::Tensor forward(const torch::Tensor& x) { return weight * x + bias; }
    torch::Tensor weight, bias;
};
TORCH_MODULE(LinearRegressionModel);

void lesson_epoch(benchmark::State& state)
{
    torch::manual_seed(42);
    const auto x = bench::lesson_x();
    const auto y = bench::lesson_y();
    const auto n = static_cast<std::int64_t>(bench::lesson_n);
    const auto train = static_cast<std::int64_t>(bench::lesson_train);
    const auto val = static_cast<std::int64_t>(bench::lesson_val);
    const torch::Tensor X = torch_tensor(x, n, 1), Y = torch_tensor(y, n, 1);
    const torch::Tensor X_train = X.slice(0, 0, train).clone(),
                        y_train = Y.slice(0, 0, train).clone();
    const torch::Tensor X_val = X.slice(0, train, train + val).clone(),
                        y_val = Y.slice(0, train, train + val).clone();

    LinearRegressionModel model;
    torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(0.01));

    auto epoch = [&]
    {
        model->train();
        auto y_pred = model->forward(X_train);
        auto loss = torch::mse_loss(y_pred, y_train);
        optimizer.zero_grad();
        loss.backward();
        optimizer.step();
        float train_loss = loss.item<float>();

        model->eval();
        float val_loss;
        {
            torch::NoGradGuard no_grad;
            val_loss = torch::mse_loss(model->forward(X_val), y_val).item<float>();
        }
        benchmark::DoNotOptimize(train_loss);
        benchmark::DoNotOptimize(val_loss);
    };
    epoch();
    for (auto _ : state)
        epoch();
}

// ============================================================================================
// The MLP 784-256-256-10
// ============================================================================================

template <class Optimizer, class Options>
void mlp_step(benchmark::State& state, std::size_t batch, Options options)
{
    bench::torch_mlp_trainer<Optimizer> trainer(batch, options);
    benchmark::DoNotOptimize(trainer.step().data_ptr());
    for (auto _ : state)
        benchmark::DoNotOptimize(trainer.step().data_ptr());
    state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(batch));
}

void mlp_infer(benchmark::State& state, std::size_t batch)
{
    auto model = bench::torch_mlp();
    model->eval();
    const bench::torch_mlp_data data(batch);
    torch::NoGradGuard no_grad;
    benchmark::DoNotOptimize(model->forward(data.x).data_ptr());
    for (auto _ : state)
    {
        auto out = model->forward(data.x);
        benchmark::DoNotOptimize(out.data_ptr());
        benchmark::ClobberMemory();
    }
    state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(batch));
}

// ============================================================================================
// Save and load of a state_dict of about 100M float parameters
// ============================================================================================

struct BigModelImpl : torch::nn::Module
{
    BigModelImpl()
    {
        // LibTorch refuses '.' in a parameter name; the keys are otherwise bench::io_key's.
        for (std::size_t i = 0; i < bench::io_tensors; ++i)
        {
            auto v = bench::uniform(bench::io_rows() * bench::io_cols,
                                    300u + static_cast<std::uint32_t>(i), -1.0f, 1.0f);
            register_parameter("layer" + std::to_string(i) + "_weight",
                               torch_tensor(v, static_cast<std::int64_t>(bench::io_rows()),
                                            static_cast<std::int64_t>(bench::io_cols)));
        }
    }
};
TORCH_MODULE(BigModel);

void set_bytes(benchmark::State& state)
{
    state.SetBytesProcessed(state.iterations() *
                            static_cast<std::int64_t>(bench::io_params() * sizeof(float)));
}

void fsync_file(const std::string& path)
{
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 || ::fsync(fd) != 0)
        throw std::runtime_error("cannot fsync " + path);
    ::close(fd);
}

void save_state_dict(benchmark::State& state, bool sync)
{
    BigModel model;
    const std::string path = (bench::temp_dir() / "torch_state.pt").string();
    torch::save(model, path); // warm-up, as every file row (common.hpp)
    if (sync)
        fsync_file(path);
    for (auto _ : state)
    {
        torch::save(model, path);
        if (sync)
            fsync_file(path);
    }
    set_bytes(state);
    std::filesystem::remove(path);
}

void load_state_dict(benchmark::State& state)
{
    BigModel model;
    const std::string path = (bench::temp_dir() / "torch_state.pt").string();
    torch::save(model, path);
    torch::load(model, path); // warm-up
    for (auto _ : state)
        torch::load(model, path);
    set_bytes(state);
    std::filesystem::remove(path);
}

void register_all()
{
    using bench::name;
    const double t = bench::min_time();
    auto reg = [&](const std::string& n, auto fn)
    { return benchmark::RegisterBenchmark(name(n).c_str(), fn)->UseRealTime()->MinTime(t); };
    // A training step's rows run a number of steps, not a time: see bench::mlp_step_iterations.
    auto reg_steps = [&](const std::string& n, std::size_t batch, auto fn)
    {
        return benchmark::RegisterBenchmark(name(n).c_str(), fn)
            ->UseRealTime()
            ->Iterations(bench::mlp_step_iterations(batch))
            ->Unit(benchmark::kMicrosecond);
    };

    reg("lesson_epoch", lesson_epoch)->Unit(benchmark::kMicrosecond);
    for (int b : bench::mlp_batches)
    {
        const auto batch = static_cast<std::size_t>(b);
        const std::string suffix = "/b" + std::to_string(b);
        reg_steps("mlp_step/sgd_momentum" + suffix, batch,
                  [batch](benchmark::State& s) {
                      mlp_step<torch::optim::SGD>(s, batch,
                                                  torch::optim::SGDOptions(0.01).momentum(0.9));
                  });
        reg_steps("mlp_step/adam" + suffix, batch,
                  [batch](benchmark::State& s)
                  { mlp_step<torch::optim::Adam>(s, batch, torch::optim::AdamOptions(1e-3)); });
    }
    reg("mlp_infer/b1", [](benchmark::State& s) { mlp_infer(s, 1); })
        ->Unit(benchmark::kMicrosecond);
    reg("mlp_infer/b256", [](benchmark::State& s) { mlp_infer(s, 256); })
        ->Unit(benchmark::kMicrosecond);

    const int io = bench::io_iterations();
    auto reg_io = [&](const std::string& n, auto fn)
    {
        benchmark::RegisterBenchmark(name(bench::io_workload(n.c_str())).c_str(), fn)
            ->UseRealTime()
            ->Iterations(io)
            ->Unit(benchmark::kMillisecond);
    };
    reg_io("save", [](benchmark::State& s) { save_state_dict(s, false); });
    reg_io("save_fsync", [](benchmark::State& s) { save_state_dict(s, true); });
    reg_io("load", load_state_dict);
}

} // namespace

int main(int argc, char** argv)
{
    // LibTorch sets its own (OpenMP) pool; the OpenBLAS it calls for matrix products has a
    // pool of its own, which torch::set_num_threads does not touch.
    torch::set_num_threads(bench::threads());
    openblas_set_num_threads(bench::threads());
    return bench::run(argc, argv, "libtorch", register_all);
}
