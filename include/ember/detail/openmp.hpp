#pragma once
/// @file
/// libgomp, the OpenMP runtime that oneDNN's products run on (EMBER_WITH_ONEDNN): the entry
/// points ember calls, how its threads wait, and run_parts_on_openmp, which runs an elementwise
/// loop (an optimizer's update) on the same threads as the products around it.
///
/// Why the same threads: a training step alternates products and updates. With the updates on
/// ember's own pool (detail/parallel.hpp), each pool's threads spun for the next pass while the
/// other pool's needed the cores: on the 2-vCPU Xeon of docs/benchmarks.md, two threads, GOMP's
/// default wait, Adam's update in the MLP step at batch 64 took 231 µs, as long as on one thread,
/// and a product split over two threads made the next update twice as slow. On OpenMP's team the
/// update took 130 µs there, and the step 600-630 µs instead of 715.
///
/// The runtime is called through its C entry points rather than `#pragma omp`, so that neither
/// ember nor a program using it has to be compiled with -fopenmp: GOMP_parallel is what GCC
/// compiles a parallel region into (libgomp's ABI since GCC 4.9, also exported by LLVM's libomp),
/// and ember's build links libgomp wherever it finds oneDNN.

#include "ember/core/flush_denormal.hpp"

#include <atomic>
#include <cctype>
#include <cstddef>
#include <cstdlib>

#include <pthread.h>

#if defined(EMBER_WITH_ONEDNN)
// Clang looks for <omp.h> among its own headers, where only libomp-dev puts one; without it,
// the functions are declared here as libgomp exports them.
#if __has_include(<omp.h>)
#include <omp.h>
#else
extern "C" int omp_get_max_threads();
extern "C" void omp_set_num_threads(int);
extern "C" int omp_get_thread_num();
extern "C" int omp_get_num_threads();
#endif
extern "C" void GOMP_parallel(void (*fn)(void*), void* data, unsigned num_threads, unsigned flags);
#endif

namespace ember::detail
{

/// Whether an OMP_WAIT_POLICY of `value` (null: unset) has libgomp's threads sleep as soon as
/// they wait: PASSIVE, in any case, as OpenMP reads it. Unset (GOMP's default: spin a while,
/// then sleep) or ACTIVE, they spin between products close together, as a step's are.
inline bool passive_wait_policy(const char* value) noexcept
{
    if (value == nullptr)
        return false;
    const char passive[] = "passive";
    std::size_t i = 0;
    for (; passive[i] != '\0'; ++i)
        if (std::tolower(static_cast<unsigned char>(value[i])) != passive[i])
            return false;
    return value[i] == '\0';
}

/// passive_wait_policy of the environment's OMP_WAIT_POLICY, read once, as libgomp reads it.
inline bool openmp_threads_sleep() noexcept
{
    static const bool sleeping = passive_wait_policy(std::getenv("OMP_WAIT_POLICY"));
    return sleeping;
}

/// The flag behind openmp_team_lost(), set by note_openmp_team's fork handler.
inline std::atomic<bool>& openmp_team_lost_flag() noexcept
{
    static std::atomic<bool> lost{false};
    return lost;
}

/// Whether OpenMP's threads are lost to this process: true in a child of fork() once ember has
/// run a parallel region of more than one thread before it (note_openmp_team). libgomp's team
/// does not survive fork, and a region of more than one thread in the child waits forever for
/// threads that are not there; one thread alone still runs. So a child runs its products on one
/// thread and its updates on ember's pool, which starts threads of its own after fork.
inline bool openmp_team_lost() noexcept
{
    return openmp_team_lost_flag().load(std::memory_order_relaxed);
}

/// Called before ember starts (or has oneDNN start) a parallel region of more than one thread:
/// the first call registers the fork handler that sets openmp_team_lost() in a child.
inline void note_openmp_team() noexcept
{
    static const bool registered = []
    {
        ::pthread_atfork(nullptr, nullptr,
                         [] { openmp_team_lost_flag().store(true, std::memory_order_relaxed); });
        return true;
    }();
    (void)registered;
}

#if defined(EMBER_WITH_ONEDNN)
/// Runs `part(i)` for every i in [0, parts) on an OpenMP team of up to `parts` threads (the
/// calling thread's team: inside a parallel region of the program's own, the calling thread
/// alone), each part in the floating-point mode of the calling thread (set_flush_denormal);
/// a team thread's own mode is given back after, since oneDNN's products run on it too.
/// `part` must not throw.
template <class Part>
void run_parts_on_openmp(std::size_t parts, const Part& part) noexcept
{
    struct team_pass
    {
        const Part* part;
        std::size_t parts;
        unsigned fp_control;
    };
    team_pass pass{&part, parts, fp_control()};
    note_openmp_team();
    GOMP_parallel(
        [](void* p)
        {
            const auto& pass = *static_cast<const team_pass*>(p);
            const unsigned own = fp_control();
            set_fp_control(pass.fp_control);
            const auto team = static_cast<std::size_t>(omp_get_num_threads());
            for (auto i = static_cast<std::size_t>(omp_get_thread_num()); i < pass.parts; i += team)
                (*pass.part)(i);
            set_fp_control(own);
        },
        &pass, static_cast<unsigned>(parts), 0);
}
#endif

} // namespace ember::detail
