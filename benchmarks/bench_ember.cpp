// ember's half of the side-by-side benchmarks (bench_libtorch.cpp is the other), plus what
// belongs to neither library: the MLP step's matrix products alone in OpenBLAS (the roofline)
// and a plain write and read of the state_dict's bytes. Names and data come from common.hpp.
#include "common.hpp"
#include "mlp_ember.hpp"
#include "mlp_products.hpp"

#include <ember/core/grad_mode.hpp>
#include <ember/core/threads.hpp>
#include <ember/detail/crc32.hpp>
#include <ember/detail/mapped_file.hpp>
#include <ember/detail/stream_copy.hpp>
#include <ember/loss/mse.hpp>
#include <ember/nn/module.hpp>
#include <ember/optim/adam.hpp>
#include <ember/optim/sgd.hpp>
#include <ember/serialize/file.hpp>
#include <ember/serialize/module.hpp>

#include <cblas.h>

#include <algorithm>
#include <cstring>
#include <span>
#include <stdexcept>

#include <fcntl.h>
#include <unistd.h>

#include "../examples/lesson_model.hpp" // the lesson's LinearRegressionModel

namespace
{

using tensor2 = ember::tensor<float, 2>;

using bench::ember_tensor;

// ============================================================================================
// The lesson: examples/lesson_model.hpp's model, with the loss, optimizer and epoch of
// examples/linear_regression.cpp.
// ============================================================================================

void lesson_epoch(benchmark::State& state)
{
    ember::manual_seed(42);
    const auto x = bench::lesson_x();
    const auto y = bench::lesson_y();
    using bench::lesson_train, bench::lesson_val;
    const tensor2 X_train = ember_tensor({x.begin(), x.begin() + lesson_train}, lesson_train, 1);
    const tensor2 y_train = ember_tensor({y.begin(), y.begin() + lesson_train}, lesson_train, 1);
    const tensor2 X_val = ember_tensor(
        {x.begin() + lesson_train, x.begin() + lesson_train + lesson_val}, lesson_val, 1);
    const tensor2 y_val = ember_tensor(
        {y.begin() + lesson_train, y.begin() + lesson_train + lesson_val}, lesson_val, 1);

    LinearRegressionModel<> model;
    ember::nn::mse_loss<float> criterion;
    ember::optim::sgd optimizer(model.parameters(), {.lr = 0.01});

    auto epoch = [&]
    {
        model.train();
        const auto& y_pred = model(X_train);
        float loss = criterion(y_pred, y_train);
        optimizer.zero_grad();
        model.backward(criterion.backward());
        optimizer.step();

        model.eval();
        float val_loss;
        {
            ember::no_grad guard;
            val_loss = criterion(model(X_val), y_val);
        }
        benchmark::DoNotOptimize(loss);
        benchmark::DoNotOptimize(val_loss);
    };
    epoch(); // warm-up: the buffers take their shapes
    for (auto _ : state)
        epoch();
}

// ============================================================================================
// The MLP 784-256-256-10 (mlp_ember.hpp)
// ============================================================================================

template <class Optimizer, class Options>
void mlp_step(benchmark::State& state, std::size_t batch, Options options, bool input_grad = false)
{
    bench::ember_mlp_trainer<Optimizer> trainer(batch, options, input_grad);
    benchmark::DoNotOptimize(trainer.step());
    for (auto _ : state)
        benchmark::DoNotOptimize(trainer.step());
    state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(batch));
}

void mlp_infer(benchmark::State& state, std::size_t batch)
{
    auto model = bench::ember_mlp();
    model.eval();
    const bench::ember_mlp_data data(batch);
    ember::no_grad guard;
    benchmark::DoNotOptimize(model(data.x).data());
    for (auto _ : state)
    {
        const auto& out = model(data.x);
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
    }
    state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(batch));
}

// The roofline: the step's matrix products alone (mlp_products.hpp), through ember's float
// products, or through OpenBLAS as LibTorch's run.
void mlp_matmul(benchmark::State& state, std::size_t batch, bool openblas = false)
{
    bench::mlp_products products(batch, openblas);
    products.run();
    for (auto _ : state)
    {
        products.run();
        benchmark::ClobberMemory();
    }
    state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(batch));
    // Two floating-point operations per multiply-add, as BLAS benchmarks count them.
    state.counters["FLOPS"] =
        benchmark::Counter(2.0 * products.macs(), benchmark::Counter::kIsIterationInvariantRate);
}

// What OpenBLAS's sgemm reaches on this machine at the thread count in use, on square matrices
// large enough for its kernel to run at full speed: the ceiling for mlp_matmul's FLOPS.
void blas_peak(benchmark::State& state, int n)
{
    std::vector<float> a(std::size_t(n) * n, 0.5f), b(a.size(), 0.25f), c(a.size());
    for (auto _ : state)
    {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(),
                    n, 0.0f, c.data(), n);
        benchmark::ClobberMemory();
    }
    state.counters["FLOPS"] =
        benchmark::Counter(2.0 * n * n * n, benchmark::Counter::kIsIterationInvariantRate);
}

// ============================================================================================
// Save and load of a state_dict of about 100M float parameters
// ============================================================================================

struct big_model : ember::nn::module<big_model>
{
    std::vector<std::string> names;
    std::vector<ember::nn::parameter<float, 2>> params;

    big_model()
    {
        for (std::size_t i = 0; i < bench::io_tensors; ++i)
        {
            names.push_back(bench::io_key(i));
            auto v = bench::uniform(bench::io_rows() * bench::io_cols,
                                    300u + static_cast<std::uint32_t>(i), -1.0f, 1.0f);
            params.emplace_back(ember_tensor(v, bench::io_rows(), bench::io_cols));
        }
    }

    template <class V>
    void visit(V&& v)
    {
        for (std::size_t i = 0; i < params.size(); ++i)
            v(names[i], params[i]);
    }
};

void set_bytes(benchmark::State& state)
{
    state.SetBytesProcessed(state.iterations() *
                            static_cast<std::int64_t>(bench::io_params() * sizeof(float)));
}

// ember::save(model, path) and ember::load(model, path), as LibTorch's torch::save(module,
// path) and torch::load(module, path): the parameters written from where they are, the file
// mapped, checked and copied straight into them. In ember's container (`save`, `load`) and,
// the same way, in PyTorch's zip (`save_pth`, `load_pth`: what torch::save writes, and what
// PyTorch loads) and in safetensors (no checksums).
void save_model(benchmark::State& state, const char* file)
{
    big_model model;
    const auto path = bench::temp_dir() / file;
    ember::save(model, path); // warm-up, as every file row (common.hpp)
    for (auto _ : state)
        ember::save(model, path);
    set_bytes(state);
    std::filesystem::remove(path);
}

void load_model(benchmark::State& state, const char* file)
{
    big_model model;
    const auto path = bench::temp_dir() / file;
    ember::save(model, path);
    ember::load(model, path); // warm-up
    for (auto _ : state)
        ember::load(model, path);
    set_bytes(state);
    std::filesystem::remove(path);
}

// The lesson's route, through a state_dict (a host copy of every parameter on the way):
// `ember::save(model.state_dict(), path)` and `model.load_state_dict(ember::load<state_dict>
// (path))`. The same files; the difference from the rows above is the state_dict's copies.
void save_via_state_dict(benchmark::State& state)
{
    big_model model;
    const auto path = bench::temp_dir() / "ember_state.ember";
    ember::save(model.state_dict(), path); // warm-up
    for (auto _ : state)
        ember::save(model.state_dict(), path);
    set_bytes(state);
    std::filesystem::remove(path);
}

void load_via_state_dict(benchmark::State& state)
{
    big_model model;
    const auto path = bench::temp_dir() / "ember_state.ember";
    ember::save(model.state_dict(), path);
    model.load_state_dict(ember::load<ember::state_dict>(path)); // warm-up
    for (auto _ : state)
        model.load_state_dict(ember::load<ember::state_dict>(path));
    set_bytes(state);
    std::filesystem::remove(path);
}

// What a load that checks every byte before it changes the model cannot go below, with the
// load's own primitives and threads: the file mapped, its CRC-32 (detail::crc32_of), then its
// bytes copied into the parameters (detail::stream_copy), with no parsing, no record checks
// and no key or shape matching. `load` over this row is what ember's container costs beyond
// its two passes over the file.
void load_floor(benchmark::State& state)
{
    big_model model;
    const auto path = bench::temp_dir() / "ember_state.ember";
    ember::save(model, path);
    auto passes = [&]
    {
        const ember::detail::file_bytes file(path);
        const std::span<const std::byte> bytes = file.bytes();
        benchmark::DoNotOptimize(ember::detail::crc32_of(bytes));
        std::size_t offset = 0;
        for (auto& p : model.params)
        {
            const std::size_t n = p.value.size() * sizeof(float);
            if (n > bytes.size() - offset)
                throw std::runtime_error("load_floor: the file is smaller than the parameters");
            ember::detail::stream_copy(p.value.data(), bytes.data() + offset, n);
            offset += n;
        }
    };
    passes(); // warm-up
    for (auto _ : state)
        passes();
    set_bytes(state);
    std::filesystem::remove(path);
}

// The same bytes written with one write() per tensor into a new file, then fsync (durable, as
// ember's save is) or not; and read back whole.
void write_all(int fd, const char* p, std::size_t n)
{
    while (n > 0)
    {
        const ssize_t w = ::write(fd, p, n);
        if (w <= 0)
            throw std::runtime_error("plain write failed");
        p += w;
        n -= static_cast<std::size_t>(w);
    }
}

void plain_write(benchmark::State& state, bool sync)
{
    big_model model;
    const auto path = bench::temp_dir() / "plain_state.bin";
    auto write_file = [&]
    {
        std::filesystem::remove(path);
        const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
            throw std::runtime_error("cannot create " + path.string());
        for (const auto& p : model.params)
            write_all(fd, reinterpret_cast<const char*>(p.value.data()),
                      p.value.size() * sizeof(float));
        if (sync && ::fsync(fd) != 0)
            throw std::runtime_error("fsync failed");
        ::close(fd);
    };
    write_file(); // warm-up
    for (auto _ : state)
        write_file();
    set_bytes(state);
    std::filesystem::remove(path);
}

void plain_read(benchmark::State& state)
{
    const auto path = bench::temp_dir() / "plain_state.bin";
    {
        big_model model;
        const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        for (const auto& p : model.params)
            write_all(fd, reinterpret_cast<const char*>(p.value.data()),
                      p.value.size() * sizeof(float));
        ::close(fd);
    }
    std::vector<char> buffer(bench::io_params() * sizeof(float));
    auto read_file = [&]
    {
        const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        std::size_t got = 0;
        while (got < buffer.size())
        {
            const ssize_t r = ::read(fd, buffer.data() + got, buffer.size() - got);
            if (r <= 0)
                throw std::runtime_error("plain read failed");
            got += static_cast<std::size_t>(r);
        }
        ::close(fd);
        benchmark::DoNotOptimize(buffer.data());
    };
    read_file(); // warm-up
    for (auto _ : state)
        read_file();
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
                  [batch](benchmark::State& s)
                  {
                      mlp_step<ember::optim::sgd<float>>(
                          s, batch, ember::optim::sgd_options{.lr = 0.01, .momentum = 0.9});
                  });
        reg_steps("mlp_step/adam" + suffix, batch,
                  [batch](benchmark::State& s)
                  { mlp_step<ember::optim::adam<float>>(s, batch, ember::optim::adam_options{}); });
        reg_steps("mlp_step_with_input_grad/sgd_momentum" + suffix, batch,
                  [batch](benchmark::State& s)
                  {
                      mlp_step<ember::optim::sgd<float>>(
                          s, batch, ember::optim::sgd_options{.lr = 0.01, .momentum = 0.9}, true);
                  });
        reg("mlp_matmul" + suffix, [batch](benchmark::State& s) { mlp_matmul(s, batch); })
            ->Unit(benchmark::kMicrosecond);
        reg("mlp_matmul_openblas" + suffix,
            [batch](benchmark::State& s) { mlp_matmul(s, batch, true); })
            ->Unit(benchmark::kMicrosecond);
    }
    reg("blas_peak/sgemm1024", [](benchmark::State& s) { blas_peak(s, 1024); })
        ->Unit(benchmark::kMillisecond);
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
    for (const auto& [suffix, file] :
         {std::pair{"", "ember_state.ember"}, std::pair{"_pth", "ember_state.pth"},
          std::pair{"_safetensors", "ember_state.safetensors"}})
    {
        reg_io(std::string("save") + suffix, [file](benchmark::State& s) { save_model(s, file); });
        reg_io(std::string("load") + suffix, [file](benchmark::State& s) { load_model(s, file); });
    }
    reg_io("save_via_state_dict", save_via_state_dict);
    reg_io("load_via_state_dict", load_via_state_dict);
    reg_io("plain_write_fsync", [](benchmark::State& s) { plain_write(s, true); });
    reg_io("plain_write", [](benchmark::State& s) { plain_write(s, false); });
    reg_io("plain_read", plain_read);
    reg_io("load_floor", load_floor);
}

} // namespace

int main(int argc, char** argv)
{
    openblas_set_num_threads(bench::threads());
    ember::set_num_threads(bench::threads()); // ember's own passes, and oneDNN's products
    benchmark::AddCustomContext("float_gemm", ember::detail::float_gemm_library());
    benchmark::AddCustomContext("openblas_core", openblas_get_corename());
    return bench::run(argc, argv, "ember", register_all);
}
