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

/// @brief stream_copy on the calling thread alone.
inline void stream_copy_serial(void* dst, const void* src, std::size_t n) noexcept
{
#if EMBER_STREAM_COPY_SSE2
    if (n >= stream_copy_threshold)
    {
        auto* d = static_cast<unsigned char*>(dst);
        const auto* s = static_cast<const unsigned char*>(src);
        // Non-temporal stores need a 16-byte aligned destination; the source may be anywhere.
        const std::size_t head = (16 - (reinterpret_cast<std::uintptr_t>(d) & 15)) & 15;
        std::memcpy(d, s, head);
        d += head;
        s += head;
        n -= head;
        // A cache line at a time: four loads, then four stores; the source line 4 KiB ahead
        // asked for into L2 first while there is one, since one core's hardware prefetcher
        // keeps too few reads in flight. Measured on a 2-vCPU Intel Xeon (KVM), one thread,
        // a mapped 400 MB container copied into 25 parameters: 32.0-32.5 ms without, 30.7-31.0
        // with; its whole ember::load 56.0-57.0 ms, 53.4-53.8 with. (The same for the CRC-32
        // pass, 1 KiB pieces, made no difference there.)
        constexpr std::size_t ahead = 4096;
        const std::size_t prefetch_end = n >= ahead + 64 ? n - ahead - 63 : 0; // in bounds
        std::size_t i = 0;
        for (; i + 64 <= n; i += 64)
        {
            if (i < prefetch_end)
                _mm_prefetch(reinterpret_cast<const char*>(s + i + ahead), _MM_HINT_T1);
            const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i));
            const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i + 16));
            const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i + 32));
            const __m128i e = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i + 48));
            _mm_stream_si128(reinterpret_cast<__m128i*>(d + i), a);
            _mm_stream_si128(reinterpret_cast<__m128i*>(d + i + 16), b);
            _mm_stream_si128(reinterpret_cast<__m128i*>(d + i + 32), c);
            _mm_stream_si128(reinterpret_cast<__m128i*>(d + i + 48), e);
        }
        std::memcpy(d + i, s + i, n - i);
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
