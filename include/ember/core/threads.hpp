#pragma once
/// @file
/// How many threads ember's own work on large buffers may use (torch.set_num_threads): the
/// checksums and copies of a model's tensors when a file is loaded, split over threads from
/// 2 MiB a thread up, and an optimizer's update of a large parameter on the cpu, from 32768
/// elements a thread up (detail/parallel.hpp). One thread's memory bandwidth is what bounds
/// those passes, so a load on two threads takes about half the time; results are the same on
/// any number of threads.
///
/// @code
/// ember::set_num_threads(1); // everything ember does itself, on the calling thread
/// @endcode
///
/// The default is the EMBER_NUM_THREADS environment variable when it holds a positive number,
/// else the number of CPUs the process may run on. The float matrix products follow it where
/// ember is built with oneDNN (EMBER_WITH_ONEDNN, detail/blas.hpp): a product runs on a thread
/// per 8 million multiply-adds, at most this many. Otherwise the products are OpenBLAS's, with
/// its own setting (OPENBLAS_NUM_THREADS, openblas_set_num_threads), which this does not change.

#include "ember/core/error.hpp"

#include <atomic>
#include <cstdlib>
#include <string>

#include <unistd.h>
#if defined(__linux__)
#include <sched.h>
#endif

namespace ember
{

namespace detail
{
/// A thread count from EMBER_NUM_THREADS's text: its positive number, or 0 where the text is
/// missing, not a whole number, not positive or absurdly large.
inline int threads_from_text(const char* text) noexcept
{
    if (text == nullptr || *text == '\0')
        return 0;
    char* end = nullptr;
    const long n = std::strtol(text, &end, 10);
    return *end == '\0' && n > 0 && n <= 4096 ? static_cast<int>(n) : 0;
}

inline int default_num_threads() noexcept
{
    if (const int n = threads_from_text(std::getenv("EMBER_NUM_THREADS")); n > 0)
        return n;
#if defined(__linux__)
    // The CPUs this process may run on (taskset, a container's cpuset), not all the machine's.
    cpu_set_t set;
    if (::sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
#endif
    const long n = ::sysconf(_SC_NPROCESSORS_ONLN); // <unistd.h>, lighter to parse than <thread>
    return n > 0 && n <= 4096 ? static_cast<int>(n) : 1;
}

inline std::atomic<int>& num_threads_setting() noexcept
{
    static std::atomic<int> n{default_num_threads()};
    return n;
}
} // namespace detail

/// @brief The number of threads ember's own work may use (at least 1).
inline int get_num_threads() noexcept
{
    return detail::num_threads_setting().load(std::memory_order_relaxed);
}

/// @brief Sets the number of threads ember's own work may use, for every thread of the program
/// (as torch.set_num_threads); throws value_error unless `n` is at least 1.
inline void set_num_threads(int n)
{
    if (n < 1)
        throw value_error("set_num_threads: " + std::to_string(n) +
                          " threads; the number must be at least 1");
    detail::num_threads_setting().store(n, std::memory_order_relaxed);
}

} // namespace ember
