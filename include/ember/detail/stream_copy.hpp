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

#if EMBER_STREAM_COPY_SSE2
/// Asks for the source line `ahead` bytes past offset `i` of the `n` to copy into L2, while
/// it is in bounds: one core's hardware prefetcher keeps too few reads in flight. Measured on
/// a 2-vCPU Intel Xeon (KVM), one thread, a mapped 400 MB container copied into 25
/// parameters: 32.0-32.5 ms without, 30.7-31.0 with; its whole ember::load 56.0-57.0 ms,
/// 53.4-53.8 with. (The same for the CRC-32 pass, 1 KiB pieces, made no difference there.)
EMBER_SIMD_INLINE void stream_copy_prefetch(const unsigned char* s, std::size_t i,
                                            std::size_t n) noexcept
{
    constexpr std::size_t ahead = 4096;
    if (ahead < n - i)
        _mm_prefetch(reinterpret_cast<const char*>(s + i + ahead), _MM_HINT_T1);
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
// that a wide load straddles two), unchanged (81.7 and 78.3 → 80.9 and 79.2; 36.6 → 37.0).
inline void stream_lines_sse2(unsigned char* d, const unsigned char* s, std::size_t n) noexcept
{
    for (std::size_t i = 0; i < n; i += 64)
    {
        stream_copy_prefetch(s, i, n);
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
        stream_copy_prefetch(s, i, n);
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
        stream_copy_prefetch(s, i, n);
        const stream_vector64 a = *reinterpret_cast<const stream_vector64_from*>(s + i);
        EMBER_STREAM_STORE64(reinterpret_cast<stream_vector64*>(d + i), a);
    }
}
#undef EMBER_STREAM_STORE32
#undef EMBER_STREAM_STORE64
#endif
#endif

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
#if EMBER_SIMD_DISPATCH
        switch (active_memory_simd_isa())
        {
        case simd_isa::avx512:
            stream_lines_avx512(d, s, lines);
            break;
        case simd_isa::avx2:
            stream_lines_avx2(d, s, lines);
            break;
        case simd_isa::baseline:
            stream_lines_sse2(d, s, lines);
            break;
        }
#else
        stream_lines_sse2(d, s, lines);
#endif
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
