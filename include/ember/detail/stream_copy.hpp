#pragma once
/// @file
/// stream_copy: memcpy for large copies that nothing reads back at once, such as a model's
/// parameters loaded from a file. An ordinary store first reads its destination's cache line
/// from memory (to own it), so a copy of N cold bytes moves 3N through the memory bus; a
/// non-temporal store writes the line whole, around the cache, and the copy moves 2N. glibc's
/// memcpy switches to such stores by itself only above a threshold it sets from the size of
/// the last-level cache, 3/4 of it: 240 MB on a Zen 4 VM that reports 320 MB of L3, so it never
/// does for a model's tensors. Measured there, 400 MB of cold tensors copied in 16 MiB pieces:
/// memcpy 47 ms, this 35 ms; in 1 MiB pieces 55 and 35 ms.
///
/// Below `stream_copy_threshold` (1 MiB, about what glibc streams from on a many-core machine)
/// and where SSE2 is not there (other architectures), it is memcpy: small copies are better
/// left in the cache, and they are soon read. A copy of many megabytes is cut into parts on
/// ember's threads (detail/parallel.hpp): one core's bandwidth is what bounds it.

#include "ember/detail/parallel.hpp"
#include "ember/detail/precompiled.hpp"
#include "ember/detail/simd_dispatch.hpp"

#include <cstddef>
#include <cstdint>
#include <cstring>

// Not in nvcc's device pass, as optimizer.hpp: the intrinsics are host code.
#if defined(__SSE2__) && !defined(__CUDA_ARCH__)
#define EMBER_STREAM_COPY_SSE2 1
#include <emmintrin.h>
#else
#define EMBER_STREAM_COPY_SSE2 0
#endif

namespace ember::detail
{

inline constexpr std::size_t stream_copy_threshold = std::size_t(1) << 20;
/// How the copy cuts its lines among streams (stream_lines_interleaved).
inline constexpr std::size_t stream_copy_streams = 8;
inline constexpr std::size_t stream_copy_piece = 512;

#if EMBER_STREAM_COPY_SSE2
/// Asks for the source line a piece past offset `i` into L2 (the next piece of the same
/// stream, stream_lines_interleaved): one core's hardware prefetcher keeps too few reads in
/// flight. Measured on a 2-vCPU Intel Xeon (KVM), one thread, a mapped 400 MB container copied
/// into 25 parameters (one stream then, 4 KiB ahead): 32.0-32.5 ms without, 30.7-31.0 with; its
/// whole ember::load 56.0-57.0 ms, 53.4-53.8 with. At the source's end this asks for up to a
/// piece past it: a prefetch never faults.
EMBER_SIMD_INLINE void stream_copy_prefetch(const unsigned char* s, std::size_t i) noexcept
{
    _mm_prefetch(reinterpret_cast<const char*>(s + i + stream_copy_piece), _MM_HINT_T1);
}

// The non-temporal loops: `n` a multiple of 64, `d` on a cache line; a line at a time, read
// with plain loads and written whole with non-temporal stores. Each instruction set has its
// own, the widest the CPU runs picked at run time (active_memory_simd_isa): the wider the
// stores, the fewer pieces each line's write-combining buffer gathers. Measured on the Intel
// Xeon above, one thread, 400 MB copied from a mapped file into 25 parameters on 2 MiB pages,
// best of nine: from the file's start (every tensor's source on a line), a loop of each width
// taking turns, 16-byte stores 35.5-36.5 ms, 32-byte 33.1-33.6, 64-byte 32.3-32.6 (three runs).
// In ember::load, the 16- and 64-byte loops taking turns in one process (limit_simd_isa), best
// of fifteen loads each: a .pth, whose tensors start on 64-byte boundaries, 65.0-71.9 ms →
// 62.2-69.1 (three runs); the container and safetensors, whose tensors start off a line (so
// that a wide load straddles two), unchanged (81.7 and 78.3 → 80.9 and 79.2; 36.6 → 37.0):
// hence the loop for such sources below.
inline void stream_lines_sse2(unsigned char* d, const unsigned char* s, std::size_t n) noexcept
{
    for (std::size_t i = 0; i < n; i += 64)
    {
        stream_copy_prefetch(s, i);
        const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i));
        const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i + 16));
        const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i + 32));
        const __m128i e = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i + 48));
        _mm_stream_si128(reinterpret_cast<__m128i*>(d + i), a);
        _mm_stream_si128(reinterpret_cast<__m128i*>(d + i + 16), b);
        _mm_stream_si128(reinterpret_cast<__m128i*>(d + i + 32), c);
        _mm_stream_si128(reinterpret_cast<__m128i*>(d + i + 48), e);
    }
}

#if EMBER_SIMD_DISPATCH
// The wider loops in the compilers' own vector types and builtins rather than <immintrin.h>'s
// intrinsics, which cost every translation unit that includes them about 0.45 s more to compile
// (GCC 12, against 0.03 s for <emmintrin.h>): loads from anywhere (aligned(1), as
// _mm256_loadu_si256 and _mm512_loadu_si512), and non-temporal stores to an address aligned to
// the vector's width (as _mm256_stream_si256 and _mm512_stream_si512).
// typedefs, not alias-declarations: Clang 16 drops aligned(1) from `using X = T
// __attribute__((vector_size(64), aligned(1)))`, and loads from off a line through it with an
// aligned load, which faults.
typedef long long stream_vector32 __attribute__((vector_size(32)));
typedef long long stream_vector32_from __attribute__((vector_size(32), aligned(1), may_alias));
typedef long long stream_vector64 __attribute__((vector_size(64)));
typedef long long stream_vector64_from __attribute__((vector_size(64), aligned(1), may_alias));
#if defined(__clang__)
#define EMBER_STREAM_STORE32(p, v) __builtin_nontemporal_store(v, p)
#define EMBER_STREAM_STORE64(p, v) __builtin_nontemporal_store(v, p)
#else
#define EMBER_STREAM_STORE32(p, v) __builtin_ia32_movntdq256(p, v)
#define EMBER_STREAM_STORE64(p, v) __builtin_ia32_movntdq512(p, v)
#endif

EMBER_TARGET_AVX2 inline void stream_lines_avx2(unsigned char* d, const unsigned char* s,
                                                std::size_t n) noexcept
{
    for (std::size_t i = 0; i < n; i += 64)
    {
        stream_copy_prefetch(s, i);
        const stream_vector32 a = *reinterpret_cast<const stream_vector32_from*>(s + i);
        const stream_vector32 b = *reinterpret_cast<const stream_vector32_from*>(s + i + 32);
        EMBER_STREAM_STORE32(reinterpret_cast<stream_vector32*>(d + i), a);
        EMBER_STREAM_STORE32(reinterpret_cast<stream_vector32*>(d + i + 32), b);
    }
}

EMBER_TARGET_AVX512 inline void stream_lines_avx512(unsigned char* d, const unsigned char* s,
                                                    std::size_t n) noexcept
{
    for (std::size_t i = 0; i < n; i += 64)
    {
        stream_copy_prefetch(s, i);
        const stream_vector64 a = *reinterpret_cast<const stream_vector64_from*>(s + i);
        EMBER_STREAM_STORE64(reinterpret_cast<stream_vector64*>(d + i), a);
    }
}

// A source off a cache line by r bytes makes every 64-byte load above straddle two lines. This
// loop reads the source a whole line at a time instead and builds each line to store from two
// neighbours: bytes r to 63 of one and 0 to r-1 of the next (one VPERMT2B, AVX-512 VBMI: Intel's
// Ice Lake and AMD's Zen 4 on). The first and the last line are read as stream_lines_avx512 reads
// them, so that no read leaves [s, s + n). The container's and safetensors' tensors start off a
// line (a .pth's on one). Measured on the Intel Xeon above, one thread (the machine slower than
// for the figures above): 400 MB from a mapped file into 25 parameters on 2 MiB pages, taking
// turns, best of nine, from 40 bytes off a line 42.8-44.7 ms, this 41.1-42.7, from on a line
// 40.7-42.6 (two runs); in ember::load, this and the loop above taking turns in one process,
// medians of 21 loads, a container 63.5, 65.6, 64.3 ms → 63.3, 64.7, 62.9 and safetensors 37.0,
// 37.0, 37.2 → 36.7, 36.8, 36.7 (three runs).
typedef char stream_bytes64 __attribute__((vector_size(64)));
#if defined(__clang__)
#define EMBER_TWO_LINE_BYTES(a, index, b)                                                          \
    reinterpret_cast<stream_vector64>(__builtin_ia32_vpermi2varqi512(                              \
        reinterpret_cast<stream_bytes64>(a), index, reinterpret_cast<stream_bytes64>(b)))
#else
#define EMBER_TWO_LINE_BYTES(a, index, b)                                                          \
    reinterpret_cast<stream_vector64>(__builtin_ia32_vpermt2varqi512_mask(                         \
        index, reinterpret_cast<stream_bytes64>(a), reinterpret_cast<stream_bytes64>(b), -1))
#endif

__attribute__((target("avx512f,avx512bw,avx512vbmi"))) inline void
stream_lines_avx512_from_off_line(unsigned char* d, const unsigned char* s, std::size_t n) noexcept
{
    if (n < 128) // no line between the first and the last
    {
        stream_lines_avx512(d, s, n);
        return;
    }
    const std::size_t r = reinterpret_cast<std::uintptr_t>(s) & 63;
    const unsigned char* lines = s + (64 - r); // the first line wholly inside the source
    stream_bytes64 index;                      // byte k of the output: byte r + k of (a, b)
    for (std::size_t k = 0; k < 64; ++k)
        index[k] = static_cast<char>(r + k);
    // Every read through stream_vector64_from (an unaligned load costs the same as an aligned
    // one when the address is on a line); no lambdas: they would not get this target.
    using from = const stream_vector64_from*;
    EMBER_STREAM_STORE64(reinterpret_cast<stream_vector64*>(d), *reinterpret_cast<from>(s));
    stream_vector64 a = *reinterpret_cast<from>(lines);
    std::size_t i = 64;
    // Output line i is source bytes [i, i + 64): the end of the line at lines + i - 64 and
    // the start of the one at lines + i, which lies inside the source while i + 64 < n.
    for (; i + 64 < n; i += 64)
    {
        stream_copy_prefetch(s, i);
        const stream_vector64 b = *reinterpret_cast<from>(lines + i);
        EMBER_STREAM_STORE64(reinterpret_cast<stream_vector64*>(d + i),
                             EMBER_TWO_LINE_BYTES(a, index, b));
        a = b;
    }
    if (i < n)
        EMBER_STREAM_STORE64(reinterpret_cast<stream_vector64*>(d + i),
                             *reinterpret_cast<from>(s + i));
}

// Whether the CPU runs stream_lines_avx512_from_off_line (asked once).
inline bool two_line_bytes_runnable() noexcept
{
    static const bool runnable = []
    {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512vbmi") != 0;
    }();
    return runnable;
}
#undef EMBER_TWO_LINE_BYTES
#undef EMBER_STREAM_STORE32
#undef EMBER_STREAM_STORE64
#endif
#endif

/// One of the loops above: `n` bytes, a multiple of 64, to `d` on a cache line.
using lines_loop = void (*)(unsigned char* d, const unsigned char* s, std::size_t n) noexcept;

/// Copies `n` bytes (a multiple of 64) with `loop` as stream_copy_streams streams read side by
/// side: the lines are cut into that many runs, and a piece of each run is copied in turn.
/// One stream read from the start to the end leaves one core fewer reads in flight than the
/// memory can serve; several, each followed by the hardware prefetcher on its own page, keep
/// more. Measured on the Intel Xeon above, one thread, 400 MB from a mapped file into 25
/// parameters, medians of 21 taking turns: one stream 36.3 and 37.1 ms, 4 streams of 1 KiB
/// pieces 35.0, 8 of 512 B 34.0 and 35.0 (16 streams, or 2 KiB pieces, slower). In ember::load
/// at one thread, this and one stream taking turns in one process, medians of 21 (25) loads,
/// the copy's share of the load (TSC, millions of cycles at 2.6 GHz): the container 92.5 →
/// 88.0, a .pth 95.9 → 87.4, safetensors 97.7 → 90.5; the whole load 66.7 → 64.9, 70.9 →
/// 67.9 and 45.1 → 42.8 ms (64.0 → 63.5, 68.4 → 66.1 and 39.1 → 38.4 in an earlier run).
inline void stream_lines_interleaved(lines_loop loop, unsigned char* d, const unsigned char* s,
                                     std::size_t n) noexcept
{
    constexpr std::size_t streams = stream_copy_streams;
    constexpr std::size_t piece = stream_copy_piece;
    const std::size_t run = n / (streams * piece) * piece;
    for (std::size_t i = 0; i < run; i += piece)
        for (std::size_t k = 0; k < streams; ++k)
            loop(d + k * run + i, s + k * run + i, piece);
    const std::size_t done = streams * run;
    loop(d + done, s + done, n - done);
}

/// @brief stream_copy on the calling thread alone.
inline void stream_copy_serial(void* dst, const void* src, std::size_t n) noexcept
{
#if EMBER_STREAM_COPY_SSE2
    if (n >= stream_copy_threshold)
    {
        auto* d = static_cast<unsigned char*>(dst);
        const auto* s = static_cast<const unsigned char*>(src);
        // The destination from a cache line's start, so that each line is written whole (and
        // each store aligned to its width, as non-temporal stores must be); the source may be
        // anywhere.
        const std::size_t head = (64 - (reinterpret_cast<std::uintptr_t>(d) & 63)) & 63;
        std::memcpy(d, s, head);
        d += head;
        s += head;
        n -= head;
        const std::size_t lines = n & ~std::size_t{63};
        lines_loop loop = stream_lines_sse2;
#if EMBER_SIMD_DISPATCH
        switch (active_memory_simd_isa())
        {
        case simd_isa::avx512:
            loop = (reinterpret_cast<std::uintptr_t>(s) & 63) != 0 && two_line_bytes_runnable()
                       ? stream_lines_avx512_from_off_line
                       : stream_lines_avx512;
            break;
        case simd_isa::avx2:
            loop = stream_lines_avx2;
            break;
        case simd_isa::baseline:
            break;
        }
#endif
        stream_lines_interleaved(loop, d, s, lines);
        std::memcpy(d + lines, s + lines, n - lines);
        // Non-temporal stores are weakly ordered: make them visible before anything after the
        // copy (another thread told the load is done) can be.
        _mm_sfence();
        return;
    }
#endif
    if (n != 0) // an empty tensor's data may be a null pointer
        std::memcpy(dst, src, n);
}

/// @brief Copies `n` bytes from `src` to `dst` (which must not overlap): around the cache from
/// stream_copy_threshold up where SSE2 is there, memcpy otherwise; in parts on ember's threads
/// from 2 * parallel_min_part up. (Out of line where ember is precompiled: it instantiates
/// the thread pool's pass.)
void stream_copy(void* dst, const void* src, std::size_t n) noexcept;

#if EMBER_SHARED_DEFINITIONS
EMBER_PRECOMPILED_INLINE void stream_copy(void* dst, const void* src, std::size_t n) noexcept
{
    parallel_pass(n,
                  [&](std::size_t first, std::size_t last)
                  {
                      stream_copy_serial(static_cast<unsigned char*>(dst) + first,
                                         static_cast<const unsigned char*>(src) + first,
                                         last - first);
                  });
}
#endif

} // namespace ember::detail
