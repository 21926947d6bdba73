#pragma once
/// @file
/// What the ember and LibTorch benchmark programs share, so that both run the same workloads on
/// the same numbers at the same thread count: the data, the sizes, the settings read from the
/// environment, and the benchmark names the comparison script pairs up.
///
/// Environment:
/// - EMBER_BENCH_THREADS: threads for BLAS, for ember's own passes (ember::set_num_threads) and
///   for LibTorch's intra-op pool; default 1.
/// - EMBER_BENCH_QUICK: non-empty and not "0" for a smoke test (small sizes, few iterations).
/// - EMBER_BENCH_TMPDIR: folder for the save/load files; default "bench-tmp" here. It must be
///   on the disk being measured (not a tmpfs).

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

namespace bench
{

inline int threads()
{
    const char* s = std::getenv("EMBER_BENCH_THREADS");
    const int n = s ? std::atoi(s) : 1;
    return n > 0 ? n : 1;
}

inline bool quick()
{
    const char* s = std::getenv("EMBER_BENCH_QUICK");
    return s && *s && std::string(s) != "0";
}

inline std::filesystem::path temp_dir()
{
    const char* s = std::getenv("EMBER_BENCH_TMPDIR");
    std::filesystem::path dir = s && *s ? s : "bench-tmp";
    std::filesystem::create_directories(dir);
    return dir;
}

/// "NAME/tN": every benchmark name carries its thread count, so the 1-thread and all-core runs
/// land side by side in one table.
inline std::string name(const std::string& workload)
{
    return workload + "/t" + std::to_string(threads());
}

/// The body of every benchmark program's main(), after it has set its libraries' thread counts:
/// Google Benchmark's flags, the context lines the comparison script reads (threads, library),
/// the program's registrations, the run.
inline int run(int argc, char** argv, const char* library, void (*register_all)())
{
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv))
        return 1;
    benchmark::AddCustomContext("threads", std::to_string(threads()));
    benchmark::AddCustomContext("library", library);
    register_all();
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}

// ---- data: a fixed mt19937 stream, so both programs see the same numbers ----

inline std::vector<float> uniform(std::size_t n, std::uint32_t seed, float lo, float hi)
{
    std::mt19937 g(seed);
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> v(n);
    for (auto& x : v)
        x = d(g);
    return v;
}

inline std::vector<std::int64_t> labels(std::size_t n, int classes, std::uint32_t seed)
{
    std::mt19937 g(seed);
    std::uniform_int_distribution<int> d(0, classes - 1);
    std::vector<std::int64_t> v(n);
    for (auto& x : v)
        x = d(g);
    return v;
}

// ---- the lesson: X = arange(0, 1, 0.02), y = 0.7 X + 0.3, 35 train / 7 validation rows ----

inline constexpr std::size_t lesson_n = 50;
inline constexpr std::size_t lesson_train = 35;
inline constexpr std::size_t lesson_val = 7;

inline std::vector<float> lesson_x()
{
    std::vector<float> x(lesson_n);
    for (std::size_t i = 0; i < lesson_n; ++i)
        x[i] = static_cast<float>(0.02 * static_cast<double>(i));
    return x;
}

inline std::vector<float> lesson_y()
{
    std::vector<float> y = lesson_x();
    for (auto& v : y)
        v = 0.7f * v + 0.3f;
    return y;
}

// ---- the MLP: 784-256-256-10 ----

inline constexpr std::size_t mlp_in = 784;
inline constexpr std::size_t mlp_hidden = 256;
inline constexpr std::size_t mlp_classes = 10;
inline constexpr int mlp_batches[] = {1, 16, 64, 256};
/// The MLP's weights and biases: 269,322.
inline constexpr std::size_t mlp_parameters = mlp_in * mlp_hidden + mlp_hidden +
                                              mlp_hidden * mlp_hidden + mlp_hidden +
                                              mlp_hidden * mlp_classes + mlp_classes;

/// Weight and bias of layer `i` (0, 1, 2) of the MLP, drawn as torch.nn.Linear draws them
/// (uniform in +-1/sqrt(fan_in)), from a fixed seed per layer.
struct layer_init
{
    std::size_t in, out;
    std::vector<float> weight; // [out, in], row-major
    std::vector<float> bias;   // [out]
};

inline layer_init mlp_layer(int i)
{
    const std::size_t in = i == 0 ? mlp_in : mlp_hidden;
    const std::size_t out = i == 2 ? mlp_classes : mlp_hidden;
    const float bound = 1.0f / std::sqrt(static_cast<float>(in));
    return {in, out, uniform(in * out, 100u + static_cast<std::uint32_t>(i), -bound, bound),
            uniform(out, 200u + static_cast<std::uint32_t>(i), -bound, bound)};
}

inline std::vector<float> mlp_inputs(std::size_t batch)
{
    return uniform(batch * mlp_in, 7u, 0.0f, 1.0f);
}

inline std::vector<std::int64_t> mlp_targets(std::size_t batch)
{
    return labels(batch, static_cast<int>(mlp_classes), 8u);
}

// ---- save/load: a state_dict of about 100 million float parameters ----

/// 25 tensors of [2000, 2000] = 100M floats (400 MB); quick mode: 25 x [200, 2000] = 10M.
inline constexpr std::size_t io_tensors = 25;
inline std::size_t io_rows()
{
    return quick() ? 200 : 2000;
}
inline constexpr std::size_t io_cols = 2000;
inline std::size_t io_params()
{
    return io_tensors * io_rows() * io_cols;
}
inline std::string io_key(std::size_t i)
{
    return "layer" + std::to_string(i) + ".weight";
}
inline std::string io_workload(const char* what)
{
    return std::string(what) + "/" + std::to_string(io_params() / 1000000) + "M";
}

/// Iterations of the slow (file) benchmarks: each one moves hundreds of megabytes. Every file
/// row, in both programs, saves or loads once untimed before these: compare_with_libtorch runs
/// each workload family in a process of its own, and a process's first save or load also pays
/// first-use costs (its allocator's fresh pages: LibTorch's loads of 400 MB took 258-273 ms each
/// in a process's first three, 142-151 ms in the next three), which a program that saves or
/// loads repeatedly does not.
inline int io_iterations()
{
    return quick() ? 1 : 3;
}

/// Minimum measuring time of the fast benchmarks.
inline double min_time()
{
    return quick() ? 0.05 : 0.3;
}

/// Training steps of one mlp_step repetition, in both programs, each repetition from a fresh
/// model: a count, not a measuring time. The same step repeated on one batch fits it, and from
/// about step 600-750 (step 300-700 at batch 256) the momentum buffers and Adam's moments of the
/// units the batch leaves at zero gradient decay into subnormal floats, which the CPU handles
/// slowly: the step gets 1.5-4.5 times slower, in LibTorch as in ember (measured, one thread:
/// SGD at batch 1 from 340 to 1500 us in ember, from 1000 to 2200 us in LibTorch). With a
/// minimum time the faster program ran more steps, so more of them slow. Both programs now run
/// as many steps, from the same weights on the same data, all before that point.
inline int mlp_step_iterations(std::size_t batch)
{
    const int steps = batch <= 16 ? 200 : batch <= 64 ? 100 : 50;
    return quick() ? steps / 5 : steps;
}

} // namespace bench
