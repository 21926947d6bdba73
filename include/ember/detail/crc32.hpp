#pragma once
/// @file
/// CRC-32 (zlib's, the checksum of gzip and PNG) over byte spans of any size.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>

#include <zlib.h>

namespace ember::detail
{

/// Continues the CRC-32 `crc` over `bytes` (start with crc32_of({}) == 0).
inline std::uint32_t crc32_update(std::uint32_t crc, std::span<const std::byte> bytes)
{
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
