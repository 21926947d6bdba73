#pragma once
/// @file
/// CRC-32 (zlib's, the checksum of gzip and PNG) over byte spans of any size.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>

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

} // namespace ember::detail
