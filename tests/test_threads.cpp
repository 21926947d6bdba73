// ember's own threads (core/threads.hpp, detail/parallel.hpp): the setting, how a pass over a
// large buffer is cut into parts, and that a checksum, a copy and a model's load give the same
// bytes and the same errors on any number of threads.
#include "test_files.hpp"

#include <ember/core/flush_denormal.hpp>
#include <ember/core/threads.hpp>
#include <ember/detail/blas.hpp>
#include <ember/detail/crc32.hpp>
#include <ember/detail/parallel.hpp>
#include <ember/detail/stream_copy.hpp>
#include <ember/nn/module.hpp>
#include <ember/serialize/module.hpp>

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <atomic>
#include <cfloat>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>
// omp_set_num_threads, omp_get_max_threads and GOMP_parallel (with oneDNN) come with
// ember/detail/openmp.hpp, which declares them where the compiler has no <omp.h> (Clang without
// libomp-dev).

using namespace ember;
using test::contains;
using test::message_of;
using test::temp_dir;
using test::threads_for_scope;
namespace fs = std::filesystem;

namespace
{

constexpr std::size_t min_part = detail::parallel_min_part;

std::vector<unsigned char> random_bytes(std::size_t n, unsigned seed)
{
    std::mt19937_64 gen(seed);
    std::vector<unsigned char> b(n);
    for (auto& x : b)
        x = static_cast<unsigned char>(gen());
    return b;
}

std::span<const std::byte> as_bytes(const unsigned char* p, std::size_t n)
{
    return {reinterpret_cast<const std::byte*>(p), n};
}

// 6 MiB of floats in one tensor and a small one beside it: the large one is cut into parts
// from two threads up, the small one never.
constexpr std::size_t big_words = 3 * min_part / sizeof(float);

struct two_tensor_model : nn::module<two_tensor_model>
{
    nn::parameter<float, 1> weight{tensor<float, 1>::from_shape({big_words})};
    nn::parameter<float, 1> bias{tensor<float, 1>::from_shape({100})};

    template <class V>
    void visit(V&& v)
    {
        v("weight", weight);
        v("bias", bias);
    }
};

two_tensor_model model_with(float offset)
{
    two_tensor_model m;
    for (std::size_t i = 0; i < big_words; ++i)
        m.weight.value.data()[i] = offset + static_cast<float>(i % 4093);
    for (std::size_t i = 0; i < 100; ++i)
        m.bias.value.data()[i] = offset - static_cast<float>(i);
    return m;
}

} // namespace

BOOST_AUTO_TEST_CASE(the_thread_count_is_at_least_one_and_is_what_was_set)
{
    BOOST_TEST(get_num_threads() >= 1);
    threads_for_scope scope(3);
    BOOST_TEST(get_num_threads() == 3);
    set_num_threads(1);
    BOOST_TEST(get_num_threads() == 1);
}

#if defined(EMBER_WITH_ONEDNN)
BOOST_AUTO_TEST_CASE(onednns_products_run_on_as_many_threads_as_their_size_and_the_setting_allow)
{
    // detail::gemm runs a oneDNN product on a thread per onednn_macs_per_thread() multiply-adds
    // (8 Mi where OMP_WAIT_POLICY=PASSIVE has OpenMP's threads sleep, 0.5 Mi where they spin), at
    // most get_num_threads(), and leaves the calling thread's OpenMP setting as it was.
    using detail::blas::gemm_threads;
    constexpr double sleeping = detail::blas::onednn_macs_per_sleeping_thread;
    constexpr double spinning = detail::blas::onednn_macs_per_spinning_thread;
    {
        threads_for_scope eight(8);
        BOOST_TEST(gemm_threads(512, 512, 128, sleeping) == 4); // 32 Mi multiply-adds
        BOOST_TEST(gemm_threads(512, 512, 128, spinning) == 8);
        BOOST_TEST(gemm_threads(8, 8, 8, spinning) == 1);
        BOOST_TEST(gemm_threads(64, 256, 784, sleeping) == 1); // the MLP's first layer, batch 64
        BOOST_TEST(gemm_threads(64, 256, 784, spinning) == 8);
        BOOST_TEST(gemm_threads(16, 256, 784, spinning) == 6); // batch 16: 3.1 Mi
        BOOST_TEST(gemm_threads(256, 256, 784, sleeping) == 6);
        BOOST_TEST(gemm_threads(512, 512, 128) ==
                   gemm_threads(512, 512, 128, detail::blas::onednn_macs_per_thread()));
        set_num_threads(2);
        BOOST_TEST(gemm_threads(512, 512, 128, sleeping) == 2);
        set_num_threads(1);
        BOOST_TEST(gemm_threads(512, 512, 128, spinning) == 1);
    }
    // OMP_WAIT_POLICY as OpenMP reads it: PASSIVE in any case; unset or anything else spins.
    using detail::passive_wait_policy;
    BOOST_TEST(passive_wait_policy("PASSIVE"));
    BOOST_TEST(passive_wait_policy("passive"));
    BOOST_TEST(passive_wait_policy("Passive"));
    BOOST_TEST(!passive_wait_policy(nullptr));
    BOOST_TEST(!passive_wait_policy("ACTIVE"));
    BOOST_TEST(!passive_wait_policy(""));
    BOOST_TEST(!passive_wait_policy("PASSIVE2"));
    BOOST_TEST(!passive_wait_policy("PASS"));
    const bool env_passive = passive_wait_policy(std::getenv("OMP_WAIT_POLICY"));
    BOOST_TEST(detail::blas::onednn_macs_per_thread() == (env_passive ? sleeping : spinning));
    // the optimizers' updates run on the products' threads where those spin
    BOOST_TEST(detail::elementwise_parts_on_openmp() == !env_passive);
    const auto product = [](std::size_t m, std::size_t n, std::size_t k)
    {
        std::vector<float> a(m * k, 1.f), b(k * n, 0.5f), c(m * n, -1.f);
        detail::gemm(false, false, m, n, k, 1.f, a.data(), k, b.data(), n, 0.f, c.data(), n);
        return std::all_of(c.begin(), c.end(), [k](float v) { return v == 0.5f * float(k); });
    };
    // In a child, whose only thread is the one that forked: the threads a product starts.
    const auto threads_after_product = [&](int setting)
    {
        const pid_t pid = ::fork();
        if (pid == 0)
        {
            set_num_threads(setting);
            omp_set_num_threads(5); // the program's own setting, which must survive
            const bool right = product(512, 512, 128);
            const auto tasks =
                std::distance(fs::directory_iterator("/proc/self/task"), fs::directory_iterator());
            ::_exit(right && omp_get_max_threads() == 5 ? static_cast<int>(tasks) : 100);
        }
        int status = 0;
        ::waitpid(pid, &status, 0);
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    };
    BOOST_TEST(threads_after_product(1) == 1);
    BOOST_TEST(threads_after_product(4) == 4);
    BOOST_TEST(product(8, 8, 8));
}
#endif

BOOST_AUTO_TEST_CASE(a_thread_count_below_one_is_a_value_error_naming_it_and_changes_nothing)
{
    threads_for_scope scope(2);
    for (int bad : {0, -1})
    {
        const std::string msg = message_of<value_error>([&] { set_num_threads(bad); });
        BOOST_TEST(contains(msg, "set_num_threads: " + std::to_string(bad)));
        BOOST_TEST(contains(msg, "at least 1"));
        BOOST_TEST(get_num_threads() == 2);
    }
}

BOOST_AUTO_TEST_CASE(ember_num_threads_counts_only_when_it_is_a_positive_whole_number)
{
    BOOST_TEST(detail::threads_from_text("4") == 4);
    BOOST_TEST(detail::threads_from_text("1") == 1);
    for (const char* bad : {"", "0", "-2", "3x", "x", "2.5", "99999"})
        BOOST_TEST(detail::threads_from_text(bad) == 0, "'" << bad << "'");
    BOOST_TEST(detail::threads_from_text(nullptr) == 0);
}

BOOST_AUTO_TEST_CASE(a_pass_is_cut_into_a_part_per_thread_of_at_least_the_minimum_size)
{
    threads_for_scope scope(4);
    BOOST_TEST(detail::parallel_parts(0) == 1u);
    BOOST_TEST(detail::parallel_parts(2 * min_part - 1) == 1u);
    BOOST_TEST(detail::parallel_parts(2 * min_part) == 2u);
    BOOST_TEST(detail::parallel_parts(3 * min_part + 5) == 3u);
    BOOST_TEST(detail::parallel_parts(100 * min_part) == 4u);
    set_num_threads(1);
    BOOST_TEST(detail::parallel_parts(100 * min_part) == 1u);
    set_num_threads(1000);
    BOOST_TEST(detail::parallel_parts(std::size_t{1} << 40) == detail::parallel_max_parts);
}

BOOST_AUTO_TEST_CASE(parts_cover_the_bytes_in_order_on_page_boundaries)
{
    for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{4095}, std::size_t{4097},
                          std::size_t{3} * min_part + 12345, std::size_t{1} << 30})
        for (std::size_t parts : {1, 2, 3, 7, 64})
        {
            BOOST_TEST_CONTEXT("n " << n << ", parts " << parts)
            {
                std::size_t expected_first = 0;
                for (std::size_t i = 0; i < parts; ++i)
                {
                    const auto [first, last] = detail::part_range(n, parts, i);
                    BOOST_TEST(first == expected_first);
                    BOOST_TEST(last >= first);
                    BOOST_TEST((last == n || last % 4096 == 0));
                    expected_first = last;
                }
                BOOST_TEST(expected_first == n);
                // nearly equal: no part more than a page longer than the shortest full share
                if (n >= parts * 4096)
                    for (std::size_t i = 0; i < parts; ++i)
                    {
                        const auto [first, last] = detail::part_range(n, parts, i);
                        BOOST_TEST(last - first <= n / parts + 2 * 4096);
                    }
            }
        }
}

BOOST_AUTO_TEST_CASE(every_part_runs_once_however_often_the_pool_is_used)
{
    // The pool's workers and the caller claim parts from one ticket: none may be run twice or
    // skipped, in a first pass (workers starting) or in the hundredth (workers reused).
    for (std::size_t parts : {2, 3, 5, 64})
        for (int pass = 0; pass < 100; ++pass)
        {
            std::atomic<int> runs[detail::parallel_max_parts] = {};
            detail::run_parts(parts, [&](std::size_t i) { ++runs[i]; });
            for (std::size_t i = 0; i < detail::parallel_max_parts; ++i)
                BOOST_REQUIRE_MESSAGE(runs[i].load() == (i < parts ? 1 : 0),
                                      "part " << i << " of " << parts << ", pass " << pass);
        }
}

BOOST_AUTO_TEST_CASE(a_pass_that_finds_the_pool_busy_runs_its_parts_on_threads_of_its_own)
{
    // A part that itself cuts a pass into parts finds the pool held by its caller.
    constexpr std::size_t parts = 3;
    std::atomic<int> inner_runs[parts][parts] = {};
    detail::run_parts(
        parts, [&](std::size_t outer)
        { detail::run_parts(parts, [&](std::size_t inner) { ++inner_runs[outer][inner]; }); });
    for (std::size_t o = 0; o < parts; ++o)
        for (std::size_t i = 0; i < parts; ++i)
            BOOST_TEST(inner_runs[o][i].load() == 1, "part " << o << "." << i);
    // run_parts_on_new_threads itself: part 0 here, the others on threads started for them
    pthread_t own[parts];
    detail::run_parts_on_new_threads(parts, [&](std::size_t i) { own[i] = ::pthread_self(); });
    BOOST_TEST(::pthread_equal(own[0], ::pthread_self()) != 0);
    for (std::size_t i = 1; i < parts; ++i)
        BOOST_TEST(::pthread_equal(own[i], ::pthread_self()) == 0, "part " << i);
}

#if EMBER_HAS_MXCSR
namespace
{
// Turns flushing on or off for a test's scope, and back off after it.
struct flush_for_scope
{
    explicit flush_for_scope(bool on) { BOOST_TEST_REQUIRE(set_flush_denormal(on)); }
    ~flush_for_scope() { set_flush_denormal(false); }
};

// Each part's thread's flush mode, for a pass of `parts` run by `run`. Every part waits until
// all have begun, so that each runs on a thread of its own (checked), not all on the caller.
template <class Run>
std::vector<int> flush_modes_of_parts(std::size_t parts, Run run)
{
    std::vector<int> modes(parts, -1);
    std::vector<pthread_t> threads(parts);
    std::atomic<std::size_t> begun{0};
    run(parts,
        [&](std::size_t i)
        {
            modes[i] = flush_denormal() ? 1 : 0;
            threads[i] = ::pthread_self();
            ++begun;
            const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
            while (begun.load() < parts && std::chrono::steady_clock::now() < until)
                std::this_thread::yield();
        });
    for (std::size_t i = 0; i < parts; ++i)
        for (std::size_t j = 0; j < i; ++j)
            BOOST_TEST(::pthread_equal(threads[i], threads[j]) == 0,
                       "parts " << j << " and " << i << " ran on one thread");
    return modes;
}
} // namespace

BOOST_AUTO_TEST_CASE(flushing_denormals_reads_and_writes_subnormal_floats_as_zero_until_turned_off)
{
    // volatile: computed at run time, under the thread's mode, not folded by the compiler
    volatile float subnormal = FLT_MIN / 4; // 2.9e-39
    volatile float smallest_normal = FLT_MIN;
    volatile float one = 1.0f, quarter = 0.25f;
    BOOST_TEST(!flush_denormal());
    BOOST_TEST(subnormal * one == FLT_MIN / 4);
    BOOST_TEST(smallest_normal * quarter == FLT_MIN / 4);
    {
        flush_for_scope scope(true);
        BOOST_TEST(flush_denormal());
        BOOST_TEST(subnormal * one == 0.0f);           // input read as zero
        BOOST_TEST(smallest_normal * quarter == 0.0f); // result written as zero
        BOOST_TEST(smallest_normal * one == FLT_MIN);  // normal numbers as before
        volatile double subnormal_double = DBL_MIN / 4;
        volatile double one_double = 1.0;
        BOOST_TEST(subnormal_double * one_double == 0.0);
    }
    BOOST_TEST(!flush_denormal());
    BOOST_TEST(subnormal * one == FLT_MIN / 4);
}

BOOST_AUTO_TEST_CASE(a_pass_on_embers_threads_runs_in_the_flush_mode_of_the_thread_that_starts_it)
{
    threads_for_scope threads(4);
    constexpr std::size_t parts = 4;
    auto pool = [](std::size_t n, const auto& part) { detail::run_parts(n, part); };
    auto new_threads = [](std::size_t n, const auto& part)
    { detail::run_parts_on_new_threads(n, part); };
    // off (the workers start here), on, then off again on the same workers
    BOOST_TEST(flush_modes_of_parts(parts, pool) == std::vector<int>(parts, 0));
    {
        flush_for_scope scope(true);
        BOOST_TEST(flush_modes_of_parts(parts, pool) == std::vector<int>(parts, 1));
        BOOST_TEST(flush_modes_of_parts(parts, new_threads) == std::vector<int>(parts, 1));
    }
    BOOST_TEST(flush_modes_of_parts(parts, pool) == std::vector<int>(parts, 0));
    BOOST_TEST(flush_modes_of_parts(parts, new_threads) == std::vector<int>(parts, 0));
}

#if defined(EMBER_WITH_ONEDNN)
BOOST_AUTO_TEST_CASE(a_pass_on_openmps_threads_runs_in_the_starters_flush_mode_and_leaves_theirs)
{
    threads_for_scope threads(4);
    constexpr std::size_t parts = 4;
    auto openmp = [](std::size_t n, const auto& part) { detail::run_parts_on_openmp(n, part); };
    // The team's own modes, read in a parallel region of its own: oneDNN's products run there.
    auto team_modes = []
    {
        std::atomic<int> flushing{0}, seen{0};
        struct counts
        {
            std::atomic<int>* flushing;
            std::atomic<int>* seen;
        } c{&flushing, &seen};
        GOMP_parallel(
            [](void* p)
            {
                const auto& c = *static_cast<const counts*>(p);
                *c.flushing += flush_denormal() ? 1 : 0;
                ++*c.seen;
            },
            &c, parts, 0);
        return std::pair{flushing.load(), seen.load()};
    };
    BOOST_TEST(flush_modes_of_parts(parts, openmp) == std::vector<int>(parts, 0));
    {
        flush_for_scope scope(true);
        BOOST_TEST(flush_modes_of_parts(parts, openmp) == std::vector<int>(parts, 1));
    }
    const auto [flushing, seen] = team_modes();
    BOOST_TEST(seen == int(parts));
    BOOST_TEST(flushing == 0); // each thread's mode given back after its parts
    BOOST_TEST(flush_modes_of_parts(parts, openmp) == std::vector<int>(parts, 0));
}
#endif
#else
BOOST_AUTO_TEST_CASE(flushing_denormals_is_refused_where_the_cpu_has_no_known_way_to_do_it)
{
    BOOST_TEST(!set_flush_denormal(true));
    BOOST_TEST(!flush_denormal());
}
#endif

BOOST_AUTO_TEST_CASE(
    an_elementwise_loop_is_cut_on_grain_boundaries_into_parts_of_the_minimum_and_up)
{
    constexpr std::size_t min_elements = detail::parallel_min_elements;
    constexpr std::size_t grain = 256;
    for (int threads : {1, 2, 3, 4, 64})
        for (std::size_t n : {std::size_t{0}, std::size_t{1}, 2 * min_elements - 1,
                              2 * min_elements, 5 * min_elements + 3 * grain + 77})
        {
            threads_for_scope scope(threads);
            std::vector<std::pair<std::size_t, std::size_t>> ranges(detail::parallel_max_parts);
            std::atomic<std::size_t> calls{0};
            detail::parallel_elements(n, grain,
                                      [&](std::size_t first, std::size_t last)
                                      {
                                          // a part's index from where it starts: parts are
                                          // at least min_elements long
                                          ranges[first / min_elements] = {first, last};
                                          ++calls;
                                      });
            BOOST_TEST_CONTEXT(threads << " threads, " << n << " elements")
            {
                const std::size_t expected = std::clamp<std::size_t>(
                    std::min(n / min_elements, std::size_t(threads)), 1, 64);
                BOOST_TEST(calls.load() == expected);
                std::size_t next = 0;
                for (std::size_t i = 0; i < calls.load(); ++i)
                {
                    const auto [first, last] = ranges[next / min_elements];
                    BOOST_TEST(first == next);
                    BOOST_TEST((last == n || last % grain == 0));
                    BOOST_TEST((n < 2 * min_elements || last - first >= min_elements));
                    next = last;
                }
                BOOST_TEST(next == n);
            }
        }
}

BOOST_AUTO_TEST_CASE(an_elementwise_loop_that_finds_the_pool_busy_runs_every_part_off_the_pool)
{
    // Inside a pass of the pool: on the pool's path, every part on the calling thread; on
    // OpenMP's (with oneDNN, its threads spinning), on the caller's team, which the pool's other
    // thread is not part of. Either way no part waits for the busy pool.
    threads_for_scope scope(4);
    const std::size_t n = 8 * detail::parallel_min_elements;
    pthread_t outer[2];
    std::atomic<int> outer_ready{0}, on_own_thread{0}, on_other_outer{0};
    std::atomic<std::size_t> covered{0};
    detail::run_parts(
        2,
        [&](std::size_t i)
        {
            const pthread_t self = ::pthread_self();
            outer[i] = self;
            ++outer_ready;
            const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
            while (outer_ready.load() < 2 && std::chrono::steady_clock::now() < until)
                std::this_thread::yield();
            if (outer_ready.load() < 2)
                return; // not on two threads at once: failed below
            const pthread_t other = outer[1 - i];
            detail::parallel_elements(n, 256,
                                      [&](std::size_t first, std::size_t last)
                                      {
                                          covered += last - first;
                                          if (::pthread_equal(::pthread_self(), self))
                                              ++on_own_thread;
                                          if (::pthread_equal(::pthread_self(), other))
                                              ++on_other_outer;
                                      });
        });
    BOOST_TEST_REQUIRE(outer_ready.load() == 2);
    BOOST_TEST(covered.load() == 2 * n);
    BOOST_TEST(on_other_outer.load() == 0);
    if (!detail::elementwise_parts_on_openmp())
        BOOST_TEST(on_own_thread.load() == 2 * 4);
    else
        BOOST_TEST(on_own_thread.load() >= 2); // each caller runs at least its team's first part
}

BOOST_AUTO_TEST_CASE(checksums_from_several_threads_at_once_are_all_right)
{
    // Four threads checksum at the same time: one holds the pool, the others start threads of
    // their own; every result must be zlib's.
    threads_for_scope scope(4);
    const auto buffer = random_bytes(3 * min_part + 99, 5);
    const auto expected =
        static_cast<std::uint32_t>(::crc32(0, buffer.data(), static_cast<uInt>(buffer.size())));
    std::atomic<int> wrong{0};
    std::vector<std::thread> callers;
    for (int t = 0; t < 4; ++t)
        callers.emplace_back(
            [&]
            {
                for (int k = 0; k < 20; ++k)
                    if (detail::crc32_of(as_bytes(buffer.data(), buffer.size())) != expected)
                        ++wrong;
            });
    for (auto& c : callers)
        c.join();
    BOOST_TEST(wrong.load() == 0);
}

BOOST_AUTO_TEST_CASE(a_child_of_fork_checksums_in_parts_without_its_parents_workers)
{
    // fork() copies the pool but not its threads: the child must not count on workers that
    // do not exist there (it makes its own pool).
    threads_for_scope scope(4);
    const auto buffer = random_bytes(3 * min_part, 9);
    const auto expected =
        static_cast<std::uint32_t>(::crc32(0, buffer.data(), static_cast<uInt>(buffer.size())));
    BOOST_REQUIRE(detail::crc32_of(as_bytes(buffer.data(), buffer.size())) == expected);
    const pid_t child = ::fork();
    BOOST_REQUIRE(child >= 0);
    if (child == 0)
    {
        ::alarm(20); // a child stuck waiting for its parent's workers ends, and the test fails
        const bool ok = detail::crc32_of(as_bytes(buffer.data(), buffer.size())) == expected;
        ::_exit(ok ? 0 : 1);
    }
    int status = 0;
    BOOST_REQUIRE(::waitpid(child, &status, 0) == child);
    BOOST_TEST(WIFEXITED(status));
    BOOST_TEST(WEXITSTATUS(status) == 0);
}

#if defined(EMBER_WITH_ONEDNN)
BOOST_AUTO_TEST_CASE(a_child_of_fork_updates_and_multiplies_without_its_parents_openmp_threads)
{
    // libgomp's team does not survive fork: a region of more than one thread in the child waits
    // for threads that are not there. After the parent has run its updates and products on
    // several OpenMP threads, a child runs its updates on ember's pool and its products on one
    // thread, and finishes with the right results.
    threads_for_scope scope(4);
    const std::size_t n = 8 * detail::parallel_min_elements;
    std::atomic<std::size_t> covered{0};
    const auto update = [&]
    {
        covered = 0;
        detail::parallel_elements(
            n, 256, [&](std::size_t first, std::size_t last) { covered += last - first; });
        return covered.load() == n;
    };
    const auto product = []
    {
        const std::size_t m = 512, k = 128;
        std::vector<float> a(m * k, 1.f), b(k * m, 0.5f), c(m * m, -1.f);
        detail::gemm(false, false, m, m, k, 1.f, a.data(), k, b.data(), m, 0.f, c.data(), m);
        return std::all_of(c.begin(), c.end(), [](float v) { return v == 64.f; });
    };
    BOOST_REQUIRE(update());
    BOOST_REQUIRE(product());
    BOOST_TEST(!detail::openmp_team_lost());
    const pid_t child = ::fork();
    BOOST_REQUIRE(child >= 0);
    if (child == 0)
    {
        ::alarm(20); // a child stuck waiting for its parent's threads ends, and the test fails
        const bool lost = detail::openmp_team_lost() || !detail::elementwise_parts_on_openmp();
        const bool ok = update() && product() && update();
        ::_exit(ok && lost ? 0 : 1);
    }
    int status = 0;
    BOOST_REQUIRE(::waitpid(child, &status, 0) == child);
    BOOST_TEST(WIFEXITED(status));
    BOOST_TEST(WEXITSTATUS(status) == 0);
    BOOST_TEST(update()); // the parent's threads are still there
}
#endif

BOOST_AUTO_TEST_CASE(a_checksum_in_parts_is_zlibs_crc32_on_any_number_of_threads)
{
    // odd length, odd start: the parts' boundaries are not the buffer's alignment
    const auto buffer = random_bytes(3 * min_part + 12345 + 1, 7);
    const unsigned char* data = buffer.data() + 1;
    const std::size_t n = buffer.size() - 1;
    const auto zlib_whole = static_cast<std::uint32_t>(::crc32(0, data, static_cast<uInt>(n)));
    // continuing a checksum: the first part carries it
    const auto zlib_head = static_cast<std::uint32_t>(::crc32(0, data, 1000));
    const auto zlib_rest =
        static_cast<std::uint32_t>(::crc32(zlib_head, data + 1000, static_cast<uInt>(n - 1000)));
    for (int threads : {1, 2, 3, 4, 7})
    {
        threads_for_scope scope(threads);
        BOOST_TEST_CONTEXT(threads << " threads")
        {
            BOOST_TEST(detail::crc32_of(as_bytes(data, n)) == zlib_whole);
            BOOST_TEST(detail::crc32_update(zlib_head, as_bytes(data + 1000, n - 1000)) ==
                       zlib_rest);
        }
    }
}

BOOST_AUTO_TEST_CASE(a_copy_in_parts_copies_every_byte_and_nothing_outside)
{
    const auto source = random_bytes(4 * min_part + 777, 11);
    for (int threads : {1, 2, 3, 4})
        for (std::size_t offset : {0, 3})
        {
            threads_for_scope scope(threads);
            BOOST_TEST_CONTEXT(threads << " threads, destination offset " << offset)
            {
                const std::size_t n = source.size() - 5;
                std::vector<unsigned char> dst(n + 2 * 64, 0xAB);
                detail::stream_copy(dst.data() + 64 + offset, source.data() + 5, n);
                BOOST_TEST(std::equal(source.begin() + 5, source.end(),
                                      dst.begin() + 64 + static_cast<std::ptrdiff_t>(offset)));
                for (std::size_t i = 0; i < 64 + offset; ++i)
                    BOOST_REQUIRE(dst[i] == 0xAB);
                for (std::size_t i = 64 + offset + n; i < dst.size(); ++i)
                    BOOST_REQUIRE(dst[i] == 0xAB);
            }
        }
}

BOOST_AUTO_TEST_CASE(a_model_loads_the_same_values_on_one_thread_and_on_four_in_every_format)
{
    temp_dir dir;
    for (const char* ext : test::model_extensions)
    {
        BOOST_TEST_CONTEXT("format " << ext)
        {
            const fs::path path = dir.path / (std::string("model") + ext);
            save(model_with(1.0f), path);
            for (int threads : {1, 4})
            {
                threads_for_scope scope(threads);
                two_tensor_model model = model_with(9.0f);
                load(model, path);
                BOOST_TEST((model.state_dict() == model_with(1.0f).state_dict()),
                           threads << " threads");
                // the state_dict route: each tensor copied (and checksummed) in one pass; a
                // safetensors file lists its keys sorted, so compare key by key
                const state_dict loaded = load<state_dict>(path);
                const state_dict expected = model_with(1.0f).state_dict();
                BOOST_TEST(loaded.size() == expected.size());
                for (const auto& [key, value] : expected)
                    BOOST_TEST((loaded.contains(key) && loaded.at(key) == value),
                               threads << " threads, load<state_dict>, key " << key);
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(a_corrupt_byte_a_helper_thread_checks_is_refused_and_the_model_kept)
{
    // The flipped byte lies in the last part of the large tensor, which a helper thread
    // checksums when the load runs on four threads.
    temp_dir dir;
    const fs::path path = dir.path / "model.ember";
    save(model_with(1.0f), path);
    auto bytes = test::read_bytes(path);
    const std::size_t at = bytes.size() - 100 * sizeof(float) - 4096;
    bytes[at] = static_cast<char>(bytes[at] ^ 0x10);
    test::write_bytes(path, bytes);
    for (int threads : {1, 4})
    {
        threads_for_scope scope(threads);
        BOOST_TEST_CONTEXT(threads << " threads")
        {
            two_tensor_model model = model_with(9.0f);
            const std::string msg = message_of<format_error>([&] { (void)load(model, path); });
            BOOST_TEST(contains(msg, path.string()));
            BOOST_TEST(contains(msg, "checksum mismatch"));
            BOOST_TEST((model.state_dict() == model_with(9.0f).state_dict()));
            const std::string copied =
                message_of<format_error>([&] { (void)load<state_dict>(path); });
            BOOST_TEST(contains(copied, "checksum mismatch"));
        }
    }
}
