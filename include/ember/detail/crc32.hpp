#pragma once
/// @file
/// CRC-32 (zlib's, the checksum of gzip and PNG) over byte spans of any size.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>

#include <zlib.h>

// A carry-less-multiply CRC-32 for x86-64 built with GCC or Clang, chosen at run time (the
// baseline x86-64 target has no PCLMULQDQ). Not in device code: nvcc's host pass keeps zlib's.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__CUDACC__)
#define EMBER_CRC32_CLMUL 1
#include <smmintrin.h> // SSE4.1
#include <wmmintrin.h> // PCLMULQDQ
#else
#define EMBER_CRC32_CLMUL 0
#endif

namespace ember::detail
{

#if EMBER_CRC32_CLMUL
/// The CRC-32 of `len` bytes (at least 64, a multiple of 16) by carry-less multiplication
/// (Intel's "Fast CRC Computation for Generic Polynomials Using PCLMULQDQ", the folding
/// Chromium's zlib and Linux use); `crc` is the running state, inverted as zlib keeps it
/// inside (~crc in, ~result out).
__attribute__((target("pclmul,sse4.1"))) inline std::uint32_t
crc32_clmul(const unsigned char* buf, std::size_t len, std::uint32_t crc)
{
    alignas(16) static const std::uint64_t k1k2[] = {0x0154442bd4, 0x01c6e41596};
    alignas(16) static const std::uint64_t k3k4[] = {0x01751997d0, 0x00ccaa009e};
    alignas(16) static const std::uint64_t k5k0[] = {0x0163cd6124, 0x0000000000};
    alignas(16) static const std::uint64_t poly[] = {0x01db710641, 0x01f7011641};
    __m128i x0, x1, x2, x3, x4, x5, x6, x7, x8, y5, y6, y7, y8;
    x1 = _mm_loadu_si128((const __m128i*)(buf + 0x00));
    x2 = _mm_loadu_si128((const __m128i*)(buf + 0x10));
    x3 = _mm_loadu_si128((const __m128i*)(buf + 0x20));
    x4 = _mm_loadu_si128((const __m128i*)(buf + 0x30));
    x1 = _mm_xor_si128(x1, _mm_cvtsi32_si128(static_cast<int>(crc)));
    x0 = _mm_load_si128((const __m128i*)k1k2);
    buf += 64;
    len -= 64;
    while (len >= 64)
    {
        x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
        x6 = _mm_clmulepi64_si128(x2, x0, 0x00);
        x7 = _mm_clmulepi64_si128(x3, x0, 0x00);
        x8 = _mm_clmulepi64_si128(x4, x0, 0x00);
        x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
        x2 = _mm_clmulepi64_si128(x2, x0, 0x11);
        x3 = _mm_clmulepi64_si128(x3, x0, 0x11);
        x4 = _mm_clmulepi64_si128(x4, x0, 0x11);
        y5 = _mm_loadu_si128((const __m128i*)(buf + 0x00));
        y6 = _mm_loadu_si128((const __m128i*)(buf + 0x10));
        y7 = _mm_loadu_si128((const __m128i*)(buf + 0x20));
        y8 = _mm_loadu_si128((const __m128i*)(buf + 0x30));
        x1 = _mm_xor_si128(_mm_xor_si128(x1, x5), y5);
        x2 = _mm_xor_si128(_mm_xor_si128(x2, x6), y6);
        x3 = _mm_xor_si128(_mm_xor_si128(x3, x7), y7);
        x4 = _mm_xor_si128(_mm_xor_si128(x4, x8), y8);
        buf += 64;
        len -= 64;
    }
    x0 = _mm_load_si128((const __m128i*)k3k4);
    x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
    x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
    x1 = _mm_xor_si128(_mm_xor_si128(x1, x2), x5);
    x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
    x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
    x1 = _mm_xor_si128(_mm_xor_si128(x1, x3), x5);
    x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
    x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
    x1 = _mm_xor_si128(_mm_xor_si128(x1, x4), x5);
    while (len >= 16)
    {
        x2 = _mm_loadu_si128((const __m128i*)buf);
        x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
        x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
        x1 = _mm_xor_si128(_mm_xor_si128(x1, x2), x5);
        buf += 16;
        len -= 16;
    }
    x2 = _mm_clmulepi64_si128(x1, x0, 0x10);
    x3 = _mm_setr_epi32(~0, 0, ~0, 0);
    x1 = _mm_srli_si128(x1, 8);
    x1 = _mm_xor_si128(x1, x2);
    x0 = _mm_loadl_epi64((const __m128i*)k5k0);
    x2 = _mm_srli_si128(x1, 4);
    x1 = _mm_and_si128(x1, x3);
    x1 = _mm_clmulepi64_si128(x1, x0, 0x00);
    x1 = _mm_xor_si128(x1, x2);
    x0 = _mm_load_si128((const __m128i*)poly);
    x2 = _mm_and_si128(x1, x3);
    x2 = _mm_clmulepi64_si128(x2, x0, 0x10);
    x2 = _mm_and_si128(x2, x3);
    x2 = _mm_clmulepi64_si128(x2, x0, 0x00);
    x1 = _mm_xor_si128(x1, x2);
    return static_cast<std::uint32_t>(_mm_extract_epi32(x1, 1));
}

/// Whether this CPU has PCLMULQDQ and SSE4.1 (asked once).
inline bool has_crc32_clmul() noexcept
{
    static const bool yes = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
    return yes;
}
#endif

/// Continues the CRC-32 `crc` over `bytes` (start with crc32_of({}) == 0).
inline std::uint32_t crc32_update(std::uint32_t crc, std::span<const std::byte> bytes)
{
#if EMBER_CRC32_CLMUL
    // zlib 1.2's crc32 runs at about 4 GB/s here; folding with carry-less multiplies several
    // times that, which matters once a save or load checks hundreds of megabytes.
    if (bytes.size() >= 64 && has_crc32_clmul())
    {
        const std::size_t n = bytes.size() & ~std::size_t{15};
        crc = ~crc32_clmul(reinterpret_cast<const unsigned char*>(bytes.data()), n, ~crc);
        bytes = bytes.subspan(n);
    }
#endif
    uLong c = crc;
    // zlib takes uInt lengths; feed large buffers in pieces.
    const std::size_t piece = std::size_t{1} << 30;
    for (std::size_t off = 0; off < bytes.size(); off += piece)
    {
        const std::size_t n = std::min(piece, bytes.size() - off);
        c = ::crc32(c, reinterpret_cast<const Bytef*>(bytes.data() + off), static_cast<uInt>(n));
    }
    return static_cast<std::uint32_t>(c);
}

/// The CRC-32 of `bytes`.
inline std::uint32_t crc32_of(std::span<const std::byte> bytes)
{
    return crc32_update(0, bytes);
}

/// The CRC-32 of A followed by B, from crc_a, crc_b and B's length (zlib's crc32_combine:
/// a few hundred operations, whatever the lengths).
inline std::uint32_t crc32_concat(std::uint32_t crc_a, std::uint32_t crc_b, std::size_t size_b)
{
    return static_cast<std::uint32_t>(::crc32_combine(crc_a, crc_b, static_cast<z_off_t>(size_b)));
}

/// The CRC-32 of the last large block a checksumming stream (memory_stream.hpp) wrote or read,
/// so that the tensor record that wrote or read it does not read its bytes a second time:
/// saving a large tensor then reads its bytes once, loading one copies and checks it in one
/// pass. Per thread; every such stream overwrites it on each transfer and clears it when it
/// is destroyed, and take_block_crc consumes it.
struct block_crc
{
    const std::byte* data = nullptr;
    std::size_t size = 0;
    std::uint32_t crc = 0;
};

inline block_crc& last_block_crc() noexcept
{
    thread_local block_crc memo;
    return memo;
}

/// The CRC-32 of `bytes`: the remembered one if the last block a checksumming stream moved was
/// exactly these bytes, else computed.
inline std::uint32_t crc32_of_block(std::span<const std::byte> bytes)
{
    block_crc& memo = last_block_crc();
    const block_crc m = std::exchange(memo, block_crc{});
    if (!bytes.empty() && m.data == bytes.data() && m.size == bytes.size())
        return m.crc;
    return crc32_of(bytes);
}

} // namespace ember::detail
