#pragma once
/// @file
/// A pass over a large buffer (a checksum, a copy, touching a mapping's pages) cut into parts,
/// one a thread, as many as get_num_threads() allows from parallel_min_part bytes a part up.
/// Such a pass is bound by the bandwidth one core gets from memory, so parts on two cores take
/// about half the time: on the 2-vCPU Xeon of docs/benchmarks.md, the checksum of 400 MB of
/// mapped file 25-30 ms on one thread, 13-17 ms on two; the copy 33 and 17 ms.
///
/// The threads are started for the call and joined before it returns, POSIX threads rather
/// than a pool: a load makes one such call per pass over a large tensor, each worth
/// milliseconds, against tens of microseconds to start a thread, and <pthread.h> costs a
/// fraction of <thread> to parse.

#include "ember/core/threads.hpp"

#include <algorithm>
#include <cstddef>
#include <utility>

#include <pthread.h>

namespace ember::detail
{

/// Bytes a part must have at least. Starting and joining a thread takes 30-40 µs on the
/// machine above, about what one core takes to checksum or copy half a megabyte: a 2 MiB part
/// saves several times what its thread costs.
inline constexpr std::size_t parallel_min_part = std::size_t{2} << 20;
/// Parts at most, whatever get_num_threads() says: memory bandwidth stops growing long before.
inline constexpr std::size_t parallel_max_parts = 64;

/// How many parts a pass over `n` bytes is cut into: 1 below 2 * parallel_min_part.
inline std::size_t parallel_parts(std::size_t n) noexcept
{
    const auto threads = static_cast<std::size_t>(get_num_threads());
    return std::clamp<std::size_t>(std::min(n / parallel_min_part, threads), 1, parallel_max_parts);
}

/// The bytes [first, second) of part `i` of `n` bytes cut into `parts`: nearly equal, every
/// boundary a multiple of 4096 from the start (whole pages of a page-aligned buffer).
inline std::pair<std::size_t, std::size_t> part_range(std::size_t n, std::size_t parts,
                                                      std::size_t i) noexcept
{
    constexpr std::size_t grain = 4096;
    const std::size_t grains = (n + grain - 1) / grain;
    auto boundary = [&](std::size_t k) { return std::min(n, grains * k / parts * grain); };
    return {boundary(i), boundary(i + 1)};
}

/// Runs `part(i)` for every i in [0, parts) (at most parallel_max_parts) and returns once all
/// have run: part 0 on the calling thread, each other one on a thread started for it, or on
/// the calling thread where none can be started. `part` must not throw.
template <class Part>
void run_parts(std::size_t parts, const Part& part) noexcept
{
    struct job
    {
        const Part* part;
        std::size_t index;
    };
    parts = std::min(parts, parallel_max_parts);
    job jobs[parallel_max_parts];
    pthread_t threads[parallel_max_parts];
    bool started[parallel_max_parts] = {};
    void* (*run)(void*) = [](void* p) -> void*
    {
        const job& j = *static_cast<const job*>(p);
        (*j.part)(j.index);
        return nullptr;
    };
    for (std::size_t i = 1; i < parts; ++i)
    {
        jobs[i] = {&part, i};
        started[i] = ::pthread_create(&threads[i], nullptr, run, &jobs[i]) == 0;
    }
    part(0);
    for (std::size_t i = 1; i < parts; ++i)
    {
        if (started[i])
            ::pthread_join(threads[i], nullptr);
        else
            part(i);
    }
}

/// Runs `pass(first, last)` over the parts of [0, n) that parallel_parts(n) cuts it into.
template <class Pass>
void parallel_pass(std::size_t n, const Pass& pass) noexcept
{
    const std::size_t parts = parallel_parts(n);
    run_parts(parts,
              [&](std::size_t i)
              {
                  const auto [first, last] = part_range(n, parts, i);
                  pass(first, last);
              });
}

} // namespace ember::detail
