#pragma once
/// @file
/// Saving and loading ember's state types to files: `ember::save(obj, path)` and
/// `ember::load<T>(path)`.
///
/// An ember file is a small fixed header followed by a cereal portable-binary archive:
///
/// | offset | size | field                                                     |
/// |-------:|-----:|-----------------------------------------------------------|
/// | 0      | 8    | magic `\x89EMBER\r\n` (catches text-mode mangling)        |
/// | 8      | 4    | container version (this build writes and reads 1)         |
/// | 12     | 4    | content kind (1 state_dict, 2 optimizer state)            |
/// | 16     | 4    | writer's ember version (major·10000 + minor·100 + patch)  |
/// | 20     | 4    | archive kind (0 = cereal portable binary)                 |
/// | 24     | 8    | payload size in bytes                                     |
/// | 32     | 4    | CRC-32 of the payload                                     |
/// | 36     | 4    | CRC-32 of bytes 0–35                                      |
/// | 40     | …    | payload                                                   |
///
/// All integers little-endian. Saving is crash-safe (detail::atomic_write). Loading checks the
/// header, the sizes and both checksums before it parses a byte of payload, and parses with a
/// byte budget so a corrupt length can never cause a large allocation. Every failure is an
/// ember::error naming the file.

#include "ember/core/error.hpp"
#include "ember/core/state_dict.hpp"
#include "ember/detail/file_io.hpp"
#include "ember/detail/memory_stream.hpp"
#include "ember/optim/optimizer_state.hpp"
#include "ember/serialize/cereal.hpp"
#include "ember/version.hpp"

#include <cereal/archives/portable_binary.hpp>
#include <zlib.h>

#include <array>
#include <cstdint>
#include <filesystem>
#include <istream>
#include <ostream>
#include <string>
#include <vector>

namespace ember
{

/// @brief What an ember file holds; each savable type names its kind.
enum class file_content : std::uint32_t
{
    state_dict = 1,
    optimizer_state = 2,
};

template <class T>
struct file_content_of; // specialised for each type ember::save accepts

template <>
struct file_content_of<state_dict>
{
    static constexpr file_content value = file_content::state_dict;
    static constexpr const char* name = "state_dict";
};

template <>
struct file_content_of<optim::optimizer_state>
{
    static constexpr file_content value = file_content::optimizer_state;
    static constexpr const char* name = "optimizer state";
};

/// @brief Writes `obj` to `path` crash-safely: the file is either the old one or the new one,
/// never a mix. Throws io_error (naming the path and the reason) and leaves the old file intact.
template <class T>
void save(const T& obj, const std::filesystem::path& path);

/// @brief Reads a T from `path`. Throws io_error if the file cannot be read, format_error if
/// its bytes are not a whole, valid ember file holding a T (naming the file and what is wrong).
template <class T>
T load(const std::filesystem::path& path);

/*******************
 * implementation  *
 *******************/

namespace detail
{

inline constexpr std::array<unsigned char, 8> file_magic = {0x89, 'E', 'M',  'B',
                                                            'E',  'R', '\r', '\n'};
inline constexpr std::uint32_t container_version = 1;
inline constexpr std::size_t header_size = 40;

inline std::uint32_t crc32_of(std::span<const std::byte> bytes)
{
    uLong crc = ::crc32(0L, Z_NULL, 0);
    // zlib takes uInt lengths; feed large buffers in pieces.
    const std::size_t piece = 1u << 30;
    for (std::size_t off = 0; off < bytes.size(); off += piece)
    {
        std::size_t n = std::min(piece, bytes.size() - off);
        crc =
            ::crc32(crc, reinterpret_cast<const Bytef*>(bytes.data() + off), static_cast<uInt>(n));
    }
    return static_cast<std::uint32_t>(crc);
}

template <class U>
void put_le(std::byte* p, U v)
{
    for (std::size_t i = 0; i < sizeof(U); ++i)
        p[i] = static_cast<std::byte>((static_cast<std::uint64_t>(v) >> (8 * i)) & 0xffu);
}

template <class U>
U get_le(const std::byte* p)
{
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < sizeof(U); ++i)
        v |= static_cast<std::uint64_t>(p[i]) << (8 * i);
    return static_cast<U>(v);
}

inline std::string hex32(std::uint32_t v)
{
    char buf[11];
    std::snprintf(buf, sizeof buf, "0x%08x", v);
    return buf;
}

} // namespace detail

template <class T>
void save(const T& obj, const std::filesystem::path& path)
{
    std::vector<std::byte> bytes(detail::header_size);
    {
        detail::vector_sink sink(bytes);
        std::ostream os(&sink);
        cereal::PortableBinaryOutputArchive ar(os);
        ar(obj);
    }
    const std::span<const std::byte> payload(bytes.data() + detail::header_size,
                                             bytes.size() - detail::header_size);
    std::byte* h = bytes.data();
    std::memcpy(h, detail::file_magic.data(), 8);
    detail::put_le<std::uint32_t>(h + 8, detail::container_version);
    detail::put_le<std::uint32_t>(h + 12, static_cast<std::uint32_t>(file_content_of<T>::value));
    detail::put_le<std::uint32_t>(h + 16, version_number);
    detail::put_le<std::uint32_t>(h + 20, 0);
    detail::put_le<std::uint64_t>(h + 24, payload.size());
    detail::put_le<std::uint32_t>(h + 32, detail::crc32_of(payload));
    detail::put_le<std::uint32_t>(h + 36, detail::crc32_of({h, 36}));
    detail::atomic_write(path, bytes);
}

template <class T>
T load(const std::filesystem::path& path)
{
    const std::string name = path.string();
    const std::vector<std::byte> bytes = detail::read_file(path);
    auto bad = [&](const std::string& what) { return format_error("'" + name + "': " + what); };

    if (bytes.size() < detail::header_size)
        throw bad("file is " + std::to_string(bytes.size()) + " bytes, shorter than the " +
                  std::to_string(detail::header_size) + "-byte ember header (truncated?)");
    const std::byte* h = bytes.data();
    if (std::memcmp(h, detail::file_magic.data(), 8) != 0)
        throw bad("not an ember file (wrong magic at offset 0)");
    const auto header_crc = detail::get_le<std::uint32_t>(h + 36);
    if (detail::crc32_of({h, 36}) != header_crc)
        throw bad("header checksum mismatch at offset 36 (the header is corrupt)");
    const auto container = detail::get_le<std::uint32_t>(h + 8);
    const auto writer = detail::get_le<std::uint32_t>(h + 16);
    if (container > detail::container_version)
        throw bad("written in container version " + std::to_string(container) + " by ember " +
                  version_string(writer) + "; this build (ember " + std::string(version) +
                  ") reads up to version " + std::to_string(detail::container_version));
    if (container == 0)
        throw bad("container version 0 at offset 8 is invalid");
    const auto content = detail::get_le<std::uint32_t>(h + 12);
    if (content != static_cast<std::uint32_t>(file_content_of<T>::value))
        throw bad("holds content kind " + std::to_string(content) + ", not a " +
                  file_content_of<T>::name);
    if (detail::get_le<std::uint32_t>(h + 20) != 0)
        throw bad("unknown archive kind at offset 20");
    const auto payload_size = detail::get_le<std::uint64_t>(h + 24);
    const std::size_t available = bytes.size() - detail::header_size;
    if (payload_size != available)
        throw bad("header declares a " + std::to_string(payload_size) + "-byte payload at offset " +
                  std::to_string(detail::header_size) + ", the file has " +
                  std::to_string(available) +
                  (payload_size > available ? " (truncated)" : " (trailing bytes)"));
    const std::span<const std::byte> payload(h + detail::header_size, available);
    const auto payload_crc = detail::get_le<std::uint32_t>(h + 32);
    if (auto actual = detail::crc32_of(payload); actual != payload_crc)
        throw bad("payload checksum mismatch (stored " + detail::hex32(payload_crc) +
                  ", computed " + detail::hex32(actual) + "): the file is corrupt");

    T obj{};
    detail::span_source source(payload);
    std::istream is(&source);
    try
    {
        detail::scoped_load_budget budget(payload.size());
        cereal::PortableBinaryInputArchive ar(is);
        ar(obj);
    }
    catch (const format_error& e)
    {
        throw bad(std::string(e.what()) + " (near payload offset " +
                  std::to_string(source.consumed()) + ")");
    }
    catch (const cereal::Exception& e)
    {
        throw bad(std::string("payload is malformed near offset ") +
                  std::to_string(detail::header_size + source.consumed()) + ": " + e.what());
    }
    if (source.remaining() != 0)
        throw bad(std::to_string(source.remaining()) + " unread bytes after the payload's end");
    return obj;
}

} // namespace ember
