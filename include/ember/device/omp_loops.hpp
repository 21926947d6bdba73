#pragma once
/// @file
/// The loops of the Thrust/OpenMP device, compiled once. Every kernel and sum of thrust_omp
/// goes through one function, omp_run_chunks(), that splits [0, n) into contiguous chunks and
/// runs them on Thrust's OpenMP system; the kernel reaches it as a pointer to a small function
/// that runs it over one chunk (a plain loop the compiler vectorizes). So a program with a
/// hundred kernels instantiates a hundred plain loops, not a hundred Thrust algorithms, and
/// does not parse Thrust: with EMBER_PRECOMPILED, omp_run_chunks() is compiled in
/// src/ember_precompiled_thrust_omp.cpp; header-only, in each file that uses the device.
/// The lesson's example, built for cpu and thrust_omp, compiles 0.4-0.9 s faster so
/// (docs/devices.md).
///
/// The split depends on n alone, never on the number of threads: a loop under omp_grain
/// elements runs on the calling thread, with no OpenMP region to start, and a sum adds the same
/// partial sums in the same order on every machine, so its result is reproducible bit for bit
/// (it differs from cpu's left-to-right sum by rounding once n reaches omp_grain).

#include "ember/detail/precompiled.hpp"

#include <cstddef>

namespace ember::detail
{

/// One chunk of a loop: runs the kernel at `kernel` for begin <= i < end; `chunk` numbers the
/// chunks of the loop from 0.
using omp_chunk_fn = void (*)(const void* kernel, std::size_t chunk, std::size_t begin,
                              std::size_t end);

/// The fewest elements per chunk: below it, starting threads costs more than it saves.
inline constexpr std::size_t omp_grain = 16384;
/// The most chunks a loop is split into (a sum keeps one partial sum per chunk on the stack).
inline constexpr std::size_t omp_max_chunks = 64;

/// @brief How many chunks a loop over n > 0 elements is split into: ceil(n / omp_grain), at
/// most omp_max_chunks.
constexpr std::size_t omp_chunk_count(std::size_t n) noexcept
{
    const std::size_t chunks = n / omp_grain + (n % omp_grain != 0);
    return chunks < omp_max_chunks ? chunks : omp_max_chunks;
}

/// @brief fn(kernel, c, n * c / chunks, n * (c + 1) / chunks) for every c < chunks, in parallel
/// on Thrust's OpenMP system (on the calling thread when chunks is 1).
void omp_run_chunks(std::size_t n, std::size_t chunks, omp_chunk_fn fn, const void* kernel);

/// @brief thrust_omp's loops (see the file comment).
struct omp_loops
{
    template <class F>
    static void for_each(std::size_t n, const F& f)
    {
        if (n == 0)
            return;
        omp_run_chunks(
            n, omp_chunk_count(n),
            [](const void* kernel, std::size_t, std::size_t begin, std::size_t end)
            {
                const F& g = *static_cast<const F*>(kernel);
                for (std::size_t i = begin; i < end; ++i)
                    g(i);
            },
            &f);
    }

    /// Each chunk's sum left to right, then the chunks' sums in order.
    template <class Acc, class F>
    static Acc sum(std::size_t n, const F& f)
    {
        if (n == 0)
            return Acc(0);
        struct job
        {
            const F* f;
            Acc* partial;
        };
        const std::size_t chunks = omp_chunk_count(n);
        Acc partial[omp_max_chunks];
        const job j{&f, partial};
        omp_run_chunks(
            n, chunks,
            [](const void* kernel, std::size_t chunk, std::size_t begin, std::size_t end)
            {
                const job& j = *static_cast<const job*>(kernel);
                Acc s = Acc(0);
                for (std::size_t i = begin; i < end; ++i)
                    s += (*j.f)(i);
                j.partial[chunk] = s;
            },
            &j);
        Acc s = partial[0];
        for (std::size_t c = 1; c < chunks; ++c)
            s += partial[c];
        return s;
    }

    template <class T>
    static void copy(const T* src, std::size_t n, T* dst)
    {
        for_each(n, [=](std::size_t i) { dst[i] = src[i]; });
    }

    template <class T>
    static void fill(T* dst, std::size_t n, T value)
    {
        for_each(n, [=](std::size_t i) { dst[i] = value; });
    }
};

} // namespace ember::detail

// The definition: where the precompiled part has it (files built with EMBER_PRECOMPILED for
// Thrust/OpenMP, see detail/precompiled.hpp), only declared; elsewhere inline, here.
#if !defined(EMBER_PRECOMPILED_THRUST_OMP)
#include <thrust/for_each.h>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/system/omp/execution_policy.h>

namespace ember::detail
{
EMBER_PRECOMPILED_INLINE void omp_run_chunks(std::size_t n, std::size_t chunks, omp_chunk_fn fn,
                                             const void* kernel)
{
    if (chunks <= 1)
    {
        fn(kernel, 0, 0, n);
        return;
    }
    thrust::for_each_n(thrust::omp::par, thrust::counting_iterator<std::size_t>(0), chunks,
                       [=](std::size_t c) { fn(kernel, c, n * c / chunks, n * (c + 1) / chunks); });
}
} // namespace ember::detail
#endif
