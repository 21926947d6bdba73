#pragma once
/// @file
/// CRC-32 (zlib's, the checksum of gzip and PNG) over byte spans of any size. Intel's ISA-L
/// computes it, with the widest carry-less multiplication this CPU has (picked at run time);
/// zlib combines two checksums. A span of many megabytes is checksummed in parts on ember's
/// threads (detail/parallel.hpp), their checksums combined.

#include "ember/detail/parallel.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>

#include <isa-l/crc.h>
#include <zlib.h>

namespace ember::detail
{

/// The CRC-32 of `n` bytes continuing `crc`, from the parts parallel_parts(n) cuts them into,
/// each on a thread of its own: `part_crc(first, last, start)` returns the CRC-32 of bytes
/// [first, last) continuing `start` (and may do more with them on the way: copy them). The
/// parts' checksums are combined as CRC(A B) from CRC(A), CRC(B) and B's length, so the result
/// is the same whatever the number of parts.
template <class PartCrc>
std::uint32_t crc32_in_parts(std::uint32_t crc, std::size_t n, const PartCrc& part_crc) noexcept
{
    const std::size_t parts = parallel_parts(n);
    if (parts == 1)
        return part_crc(std::size_t{0}, n, crc);
    std::uint32_t crcs[parallel_max_parts];
    run_parts(parts,
              [&](std::size_t i)
              {
                  const auto [first, last] = part_range(n, parts, i);
                  crcs[i] = part_crc(first, last, i == 0 ? crc : 0);
              });
    for (std::size_t i = 1; i < parts; ++i)
    {
        const auto [first, last] = part_range(n, parts, i);
        crcs[0] = static_cast<std::uint32_t>(
            ::crc32_combine(crcs[0], crcs[i], static_cast<z_off_t>(last - first)));
    }
    return crcs[0];
}

/// Continues the CRC-32 `crc` over `bytes` (start with crc32_of({}) == 0).
inline std::uint32_t crc32_update(std::uint32_t crc, std::span<const std::byte> bytes) noexcept
{
    // ISA-L's crc32_gzip_refl is zlib's crc32 (the same reflected polynomial, inverted on the
    // way in and out, so checksums chain the same way), about seven times faster than zlib
    // 1.2's tables: 29 against 200 ms for 400 MB here, which matters when a save or a load
    // checks hundreds of megabytes.
    if (bytes.empty()) // an empty span's data() may be null
        return crc;
    const auto* data = reinterpret_cast<const unsigned char*>(bytes.data());
    return crc32_in_parts(crc, bytes.size(),
                          [&](std::size_t first, std::size_t last, std::uint32_t start)
                          { return ::crc32_gzip_refl(start, data + first, last - first); });
}

/// The CRC-32 of `bytes`.
inline std::uint32_t crc32_of(std::span<const std::byte> bytes) noexcept
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
