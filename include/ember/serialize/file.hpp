#pragma once
/// @file
/// Saving and loading ember's state types to files: `ember::save(obj, path)` and
/// `ember::load<T>(path)`, with the format chosen by the extension or given explicitly.
///
/// | extension              | format (file_format)      | what the file is                        |
/// |------------------------|---------------------------|-----------------------------------------|
/// | .ember                 | ember                     | ember's container (below)               |
/// | .pth .pt .tar          | pytorch                   | PyTorch's zip, as torch.save writes it  |
/// | .safetensors           | safetensors               | safetensors (state_dicts only)          |
/// | .json                  | json                      | cereal JSON archive                     |
/// | .xml                   | xml                       | cereal XML archive                      |
/// | .bin .cereal           | cereal_portable_binary    | cereal portable binary archive          |
/// | (none: override only)  | cereal_binary             | cereal binary archive (this host's ABI) |
///
/// Loading by extension first looks at the bytes: a zip (`PK\x03\x04`) is read as PyTorch's
/// format, the container's magic as a container, an 8-byte little-endian length followed by `{`
/// as safetensors, whatever the name (so `.pth` files ember 0.1 wrote as containers stay
/// readable now that `.pth` means PyTorch's own format); anything else by its extension. An
/// explicit file_format is taken as given.
///
/// PyTorch's format and safetensors are dispatched here, not in a header of their own, so that
/// `ember::save(sd, "model.pth")` means one thing in every translation unit whatever else it
/// includes (a dispatch that changed with the includes would also break the one-definition
/// rule). Their readers need no xtensor, so the compile-time cost is small; code that wants
/// only one format can include pytorch.hpp or safetensors.hpp alone.
///
/// The container (container version 2; versions 1 and 2 are read):
///
/// | offset | size | field                                                     |
/// |-------:|-----:|-----------------------------------------------------------|
/// | 0      | 8    | magic `\x89EMBER\r\n` (catches text-mode mangling)        |
/// | 8      | 4    | container version                                         |
/// | 12     | 4    | content kind (1 state_dict, 2 optimizer state, 3 checkpoint) |
/// | 16     | 4    | writer's ember version (major·10000 + minor·100 + patch)  |
/// | 20     | 4    | archive kind (0 = cereal portable binary)                 |
/// | 24     | 8    | payload size in bytes                                     |
/// | 32     | 4    | CRC-32 of the payload                                     |
/// | 36     | 4    | CRC-32 of bytes 0–35                                      |
/// | 40     | …    | payload                                                   |
///
/// All integers little-endian. Version 2 payloads hold tensor records that carry their own
/// CRC-32 (cereal.hpp), so a tensor that goes bad is named by its key. Version 1 (ember 0.1.0)
/// is the same layout with checksum-less tensor records.
///
/// A raw cereal archive (JSON, XML, binary) holds four members: `ember_content` (the content's
/// name: "state_dict", "optimizer_state", "checkpoint"), `ember_version` (the writer),
/// `ember_crc32` (the CRC-32 of the content's portable binary encoding, checked after loading;
/// a JSON or XML file may leave it out, to be edited by hand), and the object itself under its
/// content name.
///
/// Saving is crash-safe in every format (detail::atomic_write); a container, a PyTorch zip and
/// a safetensors file stream into the temporary file (the first two checksummed as they go),
/// with no copy of the file in memory. Loading maps a file of 1 MiB or more rather than reading it
/// (as with any mapping, another process that truncates the file during the load raises SIGBUS,
/// which ember turns into an io_error; ember's own saves replace a file by rename, which is safe);
/// it checks the container's header and sizes before it parses a byte of payload, and the payload's
/// checksum as it parses, in the same pass that copies each tensor's bytes out (before anything is
/// returned; a mismatch is reported as such whatever else the parse met). Every format is parsed
/// with a byte budget, so a corrupt length can never cause an allocation larger than the file.
/// Every failure is an ember::error naming the file.
///
/// With EMBER_PRECOMPILED (detail/precompiled.hpp) a file sees only the declarations below;
/// save and load for state_dict, optim::optimizer_state and checkpoint, and the functions beside
/// them, are compiled once in src/ember_precompiled.cpp.

#include "ember/core/error.hpp"
#include "ember/core/state_dict.hpp"
#include "ember/detail/precompiled.hpp"
#include "ember/optim/optimizer_state.hpp"
#include "ember/serialize/checkpoint.hpp"

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace ember
{

/// @brief What an ember file holds; each savable type names its kind.
enum class file_content : std::uint32_t
{
    state_dict = 1,
    optimizer_state = 2,
    checkpoint = 3,
};

/// @brief "state_dict", "optimizer state", "checkpoint" (for messages).
std::string_view content_name(file_content c) noexcept;

template <class T>
struct file_content_of; // specialised for each type ember::save accepts

template <>
struct file_content_of<state_dict>
{
    static constexpr file_content value = file_content::state_dict;
};

/// Views of a module's tensors save (and load in place) as the state_dict they view.
template <>
struct file_content_of<state_dict_view>
{
    static constexpr file_content value = file_content::state_dict;
};

template <>
struct file_content_of<optim::optimizer_state>
{
    static constexpr file_content value = file_content::optimizer_state;
};

template <>
struct file_content_of<checkpoint>
{
    static constexpr file_content value = file_content::checkpoint;
};

/// @brief The formats ember reads and writes.
enum class file_format
{
    ember,                  ///< ember's container: header, checksums, portable binary payload
    cereal_binary,          ///< cereal's BinaryArchive: this host's byte order and widths
    cereal_portable_binary, ///< cereal's PortableBinaryArchive
    json,                   ///< cereal's JSONArchive, floats exact (see cereal.hpp)
    xml,                    ///< cereal's XMLArchive, floats exact
    pytorch,                ///< PyTorch's zip, as `torch.save` writes it (pytorch.hpp)
    safetensors,            ///< safetensors, for state_dicts only (safetensors.hpp)
};

/// @brief "ember", "cereal binary", "cereal portable binary", "JSON", "XML", "PyTorch",
/// "safetensors".
std::string_view format_name(file_format f) noexcept;

/// @brief The format for `path`'s extension (case-insensitive; table in the file comment).
/// Throws value_error naming the path and the extension if there is none for it.
file_format format_from_extension(const std::filesystem::path& path);

/// @brief Writes `obj` to `path` crash-safely, in the format of its extension: the file is
/// either the old one or the new one, never a mix. Throws value_error for an unknown extension,
/// io_error (naming the path and the reason) if writing fails, leaving the old file intact.
template <class T>
void save(const T& obj, const std::filesystem::path& path);

/// @brief Writes `obj` to `path` crash-safely in `format`, whatever the extension.
template <class T>
void save(const T& obj, const std::filesystem::path& path, file_format format);

/// @brief Reads a T from `path`: an ember container if the bytes say so, else the format of
/// its extension. Throws io_error if the file cannot be read, value_error for an unknown
/// extension, format_error if the bytes are not a whole, valid file holding a T (naming the
/// file and what is wrong, and where: offset, key or field).
template <class T>
T load(const std::filesystem::path& path);

/// @brief Reads a T from `path` in `format`, whatever the extension.
template <class T>
T load(const std::filesystem::path& path, file_format format);

/// @brief What a file holds, read without loading it whole (the container's header; the first
/// members of a raw archive).
struct file_info
{
    file_format format = file_format::ember;
    file_content content = file_content::state_dict;
    std::uint32_t container_version = 0; ///< 0 for anything but the container
    std::string writer;                  ///< the ember version that wrote it, or empty
    std::uint64_t size = 0;              ///< bytes
};

/// @brief Identifies the file at `path` (format as load<T>(path) chooses it). Throws like load.
file_info probe(const std::filesystem::path& path);
file_info probe(const std::filesystem::path& path, file_format format);

namespace detail
{
/// @brief save(obj, path, file_format::ember): the container, streamed crash-safely into `path`.
template <class T>
void save_container(const T& obj, const std::filesystem::path& path);

/// @brief Whether the file at `path` says it is a whole checkpoint, by its first 40 bytes and
/// its size alone: an ember container's header (magic, header checksum, versions, content a
/// checkpoint, and a payload size equal to the file's). Nothing more is read, so a flipped bit
/// in the payload passes. False for any error, an unreadable file included.
bool container_looks_like_checkpoint(const std::filesystem::path& path) noexcept;

/// @brief Whether the file at `path` ends as a whole zip archive (PyTorch's format), by its
/// last bytes alone (at most pytorch::detail::end_records_reach, 64 KiB): end records that
/// agree with each other and declare a central directory ending where they begin. A file cut
/// short has lost them; its records and their checksums are not read, so a flipped bit in a
/// tensor passes. False for any error, an unreadable file included.
bool zip_looks_whole(const std::filesystem::path& path) noexcept;

/// @brief What checkpoint_manager's prune counts as a checkpoint to keep, by the file's header
/// or end, never its payload: container_looks_like_checkpoint in ember's container,
/// zip_looks_whole in PyTorch's format, and any file in the others, which hold no size to check
/// a file against short of reading it all.
bool looks_whole(const std::filesystem::path& path, file_format format) noexcept;
} // namespace detail

} // namespace ember

/*******************
 * implementation  *
 *******************/

// The definitions. With EMBER_PRECOMPILED they are compiled once, in
// src/ember_precompiled.cpp (detail/precompiled.hpp), and a program's own files parse none of
// the format code below nor the cereal, PyTorch and safetensors headers it needs.
#if EMBER_DEFINITIONS

#include "ember/detail/crc32.hpp"
#include "ember/detail/file_io.hpp"
#include "ember/detail/mapped_file.hpp"
#include "ember/detail/memory_stream.hpp"
#include "ember/serialize/cereal.hpp"
#include "ember/serialize/pytorch.hpp"
#include "ember/serialize/safetensors.hpp"
#include "ember/version.hpp"

#include <cereal/archives/binary.hpp>
#include <cereal/archives/json.hpp>
#include <cereal/archives/portable_binary.hpp>
#include <cereal/archives/xml.hpp>

// The JSON validator reads with the same RapidJSON cereal uses: its bundled copy, or the
// system's where a distribution (Debian) unbundled it.
#if __has_include(<cereal/external/rapidjson/error/en.h>)
#include <cereal/external/rapidjson/error/en.h>
#include <cereal/external/rapidjson/memorystream.h>
#include <cereal/external/rapidjson/reader.h>
#define EMBER_RAPIDJSON CEREAL_RAPIDJSON_NAMESPACE
#else
#include <rapidjson/error/en.h>
#include <rapidjson/memorystream.h>
#include <rapidjson/reader.h>
#define EMBER_RAPIDJSON RAPIDJSON_NAMESPACE
#endif

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <istream>
#include <optional>
#include <ostream>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ember
{

EMBER_PRECOMPILED_INLINE std::string_view content_name(file_content c) noexcept
{
    switch (c)
    {
    case file_content::state_dict:
        return "state_dict";
    case file_content::optimizer_state:
        return "optimizer state";
    case file_content::checkpoint:
        return "checkpoint";
    }
    return "unknown content";
}

EMBER_PRECOMPILED_INLINE std::string_view format_name(file_format f) noexcept
{
    switch (f)
    {
    case file_format::ember:
        return "ember";
    case file_format::cereal_binary:
        return "cereal binary";
    case file_format::cereal_portable_binary:
        return "cereal portable binary";
    case file_format::json:
        return "JSON";
    case file_format::xml:
        return "XML";
    case file_format::pytorch:
        return "PyTorch";
    case file_format::safetensors:
        return "safetensors";
    }
    return "unknown format";
}

EMBER_PRECOMPILED_INLINE file_format format_from_extension(const std::filesystem::path& path)
{
    std::string ext = path.extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (ext == ".ember")
        return file_format::ember;
    if (ext == ".pth" || ext == ".pt" || ext == ".tar")
        return file_format::pytorch;
    if (ext == ".safetensors")
        return file_format::safetensors;
    if (ext == ".json")
        return file_format::json;
    if (ext == ".xml")
        return file_format::xml;
    if (ext == ".bin" || ext == ".cereal")
        return file_format::cereal_portable_binary;
    throw value_error("cannot tell the file format of '" + path.string() + "' from " +
                      (ext.empty() ? std::string("its missing extension")
                                   : "its extension '" + path.extension().string() + "'") +
                      ": ember knows .ember, .pth, .pt, .tar, .safetensors, .json, .xml, .bin "
                      "and .cereal; or pass an ember::file_format");
}

namespace detail
{

inline constexpr std::array<unsigned char, 8> file_magic = {0x89, 'E', 'M',  'B',
                                                            'E',  'R', '\r', '\n'};
/// The container version this build writes; it reads every version from 1 up to it.
inline constexpr std::uint32_t container_version = 2;
inline constexpr std::size_t header_size = 40;
/// The deepest nesting of JSON arrays/objects or XML elements a text file may have: ember's
/// own structures stay far below it (values nest at most max_value_depth levels), and it keeps
/// the recursive parsers of cereal's JSON and XML archives off the end of the stack.
inline constexpr std::size_t max_text_depth = 512;

/// The name of a content kind as a raw archive's `ember_content` member spells it.
inline std::string_view content_key(file_content c) noexcept
{
    switch (c)
    {
    case file_content::state_dict:
        return "state_dict";
    case file_content::optimizer_state:
        return "optimizer_state";
    case file_content::checkpoint:
        return "checkpoint";
    }
    return "unknown";
}

inline bool content_from_key(std::string_view key, file_content& c) noexcept
{
    for (auto k :
         {file_content::state_dict, file_content::optimizer_state, file_content::checkpoint})
        if (content_key(k) == key)
        {
            c = k;
            return true;
        }
    return false;
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
    return hex_text(v, 8);
}

inline bool has_file_magic(std::span<const std::byte> bytes) noexcept
{
    return bytes.size() >= file_magic.size() &&
           std::memcmp(bytes.data(), file_magic.data(), file_magic.size()) == 0;
}

/// A format_error whose message starts with the file's name.
inline format_error file_error(std::string_view name, const std::string& what)
{
    return format_error("'" + std::string(name) + "': " + what);
}

/// `obj` as a portable binary archive: the container's payload, and the canonical bytes the
/// content checksum of a raw archive is computed over (the same content gives the same bytes
/// whatever archive it was read from).
template <class T>
std::vector<std::byte> portable_bytes(const T& obj, std::size_t reserve_front = 0)
{
    // Sized by a first, counting pass (cheap: a tensor is one write): a vector grown as the
    // archive writes would copy the payload over and over and fault in about twice its size,
    // which made saving a large state_dict several times slower than writing its bytes.
    std::size_t size = 0;
    {
        counting_sink counter;
        std::ostream os(&counter);
        {
            cereal::PortableBinaryOutputArchive ar(os);
            ar(obj);
        }
        size = counter.size();
    }
    std::vector<std::byte> bytes;
    bytes.reserve(reserve_front + size);
    bytes.resize(reserve_front);
    {
        vector_sink sink(bytes);
        std::ostream os(&sink);
        cereal::PortableBinaryOutputArchive ar(os);
        ar(obj);
    }
    return bytes;
}

// ---- the container --------------------------------------------------------------------------

/// The container's header, checked: magic, header checksum, versions, kind, sizes and the
/// payload checksum. Returns the payload.
struct container_header
{
    std::uint32_t version = 0;
    std::uint32_t content = 0;
    std::uint32_t writer = 0;
    std::span<const std::byte> payload;
};

/// The header alone, checked against the size of its file: `head` holds the file's first
/// bytes (header_size of them, or the whole file where it is shorter). Sets no payload.
inline container_header check_container_header(std::span<const std::byte> head,
                                               std::uint64_t file_size, std::string_view name)
{
    auto bad = [&](const std::string& what) { return file_error(name, what); };
    if (file_size < header_size || head.size() < header_size)
        throw bad("file is " + std::to_string(file_size) + " bytes, shorter than the " +
                  std::to_string(header_size) + "-byte ember header (truncated?)");
    const std::byte* h = head.data();
    if (!has_file_magic(head))
        throw bad("not an ember file (wrong magic at offset 0)");
    const auto header_crc = get_le<std::uint32_t>(h + 36);
    if (crc32_of({h, 36}) != header_crc)
        throw bad("header checksum mismatch at offset 36 (the header is corrupt)");
    container_header result;
    result.version = get_le<std::uint32_t>(h + 8);
    result.content = get_le<std::uint32_t>(h + 12);
    result.writer = get_le<std::uint32_t>(h + 16);
    if (result.version > container_version)
        throw bad("written in container version " + std::to_string(result.version) + " by ember " +
                  version_string(result.writer) + "; this build (ember " + std::string(version) +
                  ") reads up to version " + std::to_string(container_version));
    if (result.version == 0)
        throw bad("container version 0 at offset 8 is invalid");
    if (get_le<std::uint32_t>(h + 20) != 0)
        throw bad("unknown archive kind " + std::to_string(get_le<std::uint32_t>(h + 20)) +
                  " at offset 20");
    const auto payload_size = get_le<std::uint64_t>(h + 24);
    const std::uint64_t available = file_size - header_size;
    if (payload_size != available)
        throw bad("header declares a " + std::to_string(payload_size) + "-byte payload at offset " +
                  std::to_string(header_size) + ", the file has " + std::to_string(available) +
                  (payload_size > available ? " (truncated)" : " (trailing bytes)"));
    return result;
}

inline container_header read_container_header(std::span<const std::byte> bytes,
                                              std::string_view name, bool check_payload = true)
{
    container_header result = check_container_header(bytes, bytes.size(), name);
    const std::byte* h = bytes.data();
    result.payload = {h + header_size, bytes.size() - header_size};
    if (check_payload)
    {
        const auto payload_crc = get_le<std::uint32_t>(h + 32);
        if (auto actual = crc32_of(result.payload); actual != payload_crc)
            throw file_error(name, "payload checksum mismatch (stored " + hex32(payload_crc) +
                                       ", computed " + hex32(actual) + "): the file is corrupt");
    }
    return result;
}

inline std::string describe_content(std::uint32_t content)
{
    file_content c = static_cast<file_content>(content);
    if (content >= 1 && content <= 3)
        return (c == file_content::optimizer_state ? "an " : "a ") + std::string(content_name(c)) +
               " (content kind " + std::to_string(content) + ")";
    return "content kind " + std::to_string(content) + ", which this build does not know";
}

/// The container's header for a payload of `payload_size` bytes with CRC-32 `payload_crc`.
inline std::array<std::byte, header_size>
container_header_bytes(file_content content, std::uint64_t payload_size, std::uint32_t payload_crc)
{
    std::array<std::byte, header_size> header{};
    std::byte* h = header.data();
    std::memcpy(h, file_magic.data(), file_magic.size());
    put_le<std::uint32_t>(h + 8, container_version);
    put_le<std::uint32_t>(h + 12, static_cast<std::uint32_t>(content));
    put_le<std::uint32_t>(h + 16, version_number);
    put_le<std::uint32_t>(h + 20, 0);
    put_le<std::uint64_t>(h + 24, payload_size);
    put_le<std::uint32_t>(h + 32, payload_crc);
    put_le<std::uint32_t>(h + 36, crc32_of({h, 36}));
    return header;
}

template <class T>
std::vector<std::byte> encode_container(const T& obj)
{
    std::vector<std::byte> bytes = portable_bytes(obj, header_size);
    const std::span<const std::byte> payload(bytes.data() + header_size,
                                             bytes.size() - header_size);
    const auto header =
        container_header_bytes(file_content_of<T>::value, payload.size(), crc32_of(payload));
    std::memcpy(bytes.data(), header.data(), header_size);
    return bytes;
}

/// Saves `obj` as a container at `path` crash-safely without building the file in memory: the
/// payload streams into the temporary file as cereal writes it, checksummed on the way (each
/// tensor's bytes are read once, for its own CRC-32 and the payload's), and the header, whose
/// checksum needs the whole payload, is written over the zeros left for it before the fsync.
template <class T>
void save_container(const T& obj, const std::filesystem::path& path)
{
    std::size_t payload_size = 0; // the size first, for the writer's checks and messages
    {
        counting_sink counter;
        std::ostream os(&counter);
        {
            cereal::PortableBinaryOutputArchive ar(os);
            ar(obj);
        }
        payload_size = counter.size();
    }
    atomic_write_with(
        path, header_size + payload_size,
        [&](atomic_file_writer& writer)
        {
            checksumming_sink<atomic_file_writer> sink(writer, header_size);
            {
                std::ostream os(&sink);
                os.exceptions(std::ios::badbit); // the writer's io_error, not cereal's message
                cereal::PortableBinaryOutputArchive ar(os);
                ar(obj);
            }
            sink.flush();
            if (sink.size() != payload_size)
                throw io_error("cannot save '" + path.string() + "': its payload came to " +
                               std::to_string(sink.size()) + " bytes, sized at " +
                               std::to_string(payload_size) + " (changed while being saved?)");
            const auto header =
                container_header_bytes(file_content_of<T>::value, payload_size, sink.crc());
            writer.rewrite_front(header);
        });
}

template <class T>
T decode_container(std::span<const std::byte> bytes, std::string_view name)
{
    // The payload's CRC-32 is computed while it is parsed (one pass over a tensor's bytes
    // copies and checks them), and checked before the object is returned. Parsing first is
    // safe: the load budget bounds every allocation by the payload's real size. Whatever the
    // parse finds wrong, a payload whose checksum does not match is reported as that.
    const container_header header = read_container_header(bytes, name, /*check_payload=*/false);
    if (header.content != static_cast<std::uint32_t>(file_content_of<T>::value))
        throw file_error(name, "holds " + describe_content(header.content) + ", not " +
                                   ember::detail::a_or_an(content_name(file_content_of<T>::value)));
    const auto stored_crc = get_le<std::uint32_t>(bytes.data() + 32);
    auto check_crc = [&](std::uint32_t actual)
    {
        if (actual != stored_crc)
            throw file_error(name, "payload checksum mismatch (stored " + hex32(stored_crc) +
                                       ", computed " + hex32(actual) + "): the file is corrupt");
    };
    T obj{};
    checksumming_source source(header.payload);
    const in_place_scope in_place(source); // tensor views are read where they are
    std::istream is(&source);
    try
    {
        scoped_load_budget budget(header.payload.size());
        cereal::PortableBinaryInputArchive ar(is);
        ar(obj);
    }
    catch (const format_error& e)
    {
        check_crc(source.crc());
        throw file_error(name, std::string(e.what()) + " (near offset " +
                                   std::to_string(header_size + source.consumed()) + ")");
    }
    catch (const cereal::Exception& e)
    {
        check_crc(source.crc());
        throw file_error(name, "payload is malformed near offset " +
                                   std::to_string(header_size + source.consumed()) + ": " +
                                   e.what());
    }
    check_crc(source.crc());
    if (source.remaining() != 0)
        throw file_error(name, std::to_string(source.remaining()) +
                                   " unread bytes after the payload's end");
    return obj;
}

// ---- raw cereal archives --------------------------------------------------------------------

/// Checks that `text` is one well-formed JSON value nested at most max_text_depth deep, with
/// RapidJSON's iterative (stack-safe) reader; throws format_error with the offset otherwise.
inline void validate_json(std::span<const std::byte> text, std::string_view name)
{
    struct handler : EMBER_RAPIDJSON::BaseReaderHandler<EMBER_RAPIDJSON::UTF8<>, handler>
    {
        std::size_t depth = 0;
        bool too_deep = false;
        bool open()
        {
            too_deep = ++depth > max_text_depth;
            return !too_deep;
        }
        bool StartObject() { return open(); }
        bool StartArray() { return open(); }
        bool EndObject(EMBER_RAPIDJSON::SizeType)
        {
            --depth;
            return true;
        }
        bool EndArray(EMBER_RAPIDJSON::SizeType)
        {
            --depth;
            return true;
        }
    } h;
    // rapidjson takes a NUL byte for the end of its input, so a file that went on past one
    // ("{...}\0garbage") would pass; JSON text holds none (a string escapes it as \u0000).
    if (const void* nul = std::memchr(text.data(), 0, text.size()))
        throw file_error(name,
                         "not valid JSON: a NUL byte at offset " +
                             std::to_string(static_cast<const std::byte*>(nul) - text.data()) +
                             " (JSON text holds none)");
    // MemoryStream stops at the end of the span: no terminating zero needed.
    EMBER_RAPIDJSON::MemoryStream stream(reinterpret_cast<const char*>(text.data()), text.size());
    EMBER_RAPIDJSON::Reader reader;
    const auto result =
        reader.Parse<EMBER_RAPIDJSON::kParseIterativeFlag | EMBER_RAPIDJSON::kParseNanAndInfFlag |
                     EMBER_RAPIDJSON::kParseFullPrecisionFlag>(stream, h);
    if (h.too_deep)
        throw file_error(name, "JSON nested deeper than " + std::to_string(max_text_depth) +
                                   " levels at offset " + std::to_string(result.Offset()));
    if (result.IsError())
        throw file_error(name, "not valid JSON at offset " + std::to_string(result.Offset()) +
                                   ": " + EMBER_RAPIDJSON::GetParseError_En(result.Code()));
}

/// Checks XML element nesting against max_text_depth (cereal's XML parser recurses per level)
/// and that each closing tag names the element it closes, which cereal's parser does not check
/// (`<value0>1</value1>` would load). Comments, declarations and CDATA are skipped, quoted
/// attribute values are not taken for tags.
inline void check_xml_structure(std::span<const std::byte> bytes, std::string_view name)
{
    const std::string_view s(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    auto name_at = [&](std::size_t from)
    { return s.substr(from, s.find_first_of(" \t\r\n/>", from) - from); };
    auto shown = [](std::string_view tag)
    { return ember::detail::quoted(tag, '\'', 64, /*ascii_only=*/true); };
    struct open_element
    {
        std::string_view name;
        std::size_t offset;
    };
    std::vector<open_element> open; // at most max_text_depth
    std::size_t i = 0;
    auto skip_past = [&](std::string_view end)
    {
        const std::size_t at = s.find(end, i);
        i = at == std::string_view::npos ? s.size() : at + end.size();
    };
    while ((i = s.find('<', i)) != std::string_view::npos)
    {
        const std::size_t start = i;
        if (s.substr(i, 4) == "<!--")
            skip_past("-->");
        else if (s.substr(i, 9) == "<![CDATA[")
            skip_past("]]>");
        else if (i + 1 < s.size() && (s[i + 1] == '?' || s[i + 1] == '!'))
            skip_past(">");
        else if (i + 1 < s.size() && s[i + 1] == '/')
        {
            const std::string_view closing = name_at(i + 2);
            if (open.empty())
                throw file_error(name, "not well-formed XML at offset " + std::to_string(start) +
                                           ": the closing tag of " + shown(closing) +
                                           " closes no open element");
            if (closing != open.back().name)
                throw file_error(name, "not well-formed XML at offset " + std::to_string(start) +
                                           ": the closing tag of " + shown(closing) +
                                           " does not match the element " +
                                           shown(open.back().name) + " opened at offset " +
                                           std::to_string(open.back().offset));
            open.pop_back();
            skip_past(">");
        }
        else
        {
            // An opening tag: find its '>' outside quoted attribute values.
            char quote = 0;
            std::size_t j = i + 1;
            for (; j < s.size(); ++j)
            {
                if (quote)
                    quote = s[j] == quote ? 0 : quote;
                else if (s[j] == '"' || s[j] == '\'')
                    quote = s[j];
                else if (s[j] == '>')
                    break;
            }
            if (j >= s.size())
                break; // unterminated: the parser reports it
            if (s[j - 1] != '/')
            {
                if (open.size() == max_text_depth)
                    throw file_error(name, "XML nested deeper than " +
                                               std::to_string(max_text_depth) +
                                               " levels at offset " + std::to_string(start));
                open.push_back({name_at(i + 1), start});
            }
            i = j + 1;
        }
    }
}

/// The XML parser's own complaint and where, for a file cereal refused.
inline std::string xml_parse_error(std::span<const std::byte> bytes)
{
    std::vector<char> text(reinterpret_cast<const char*>(bytes.data()),
                           reinterpret_cast<const char*>(bytes.data()) + bytes.size());
    text.push_back('\0');
    try
    {
        cereal::rapidxml::xml_document<> doc;
        doc.parse<cereal::rapidxml::parse_trim_whitespace | cereal::rapidxml::parse_no_data_nodes |
                  cereal::rapidxml::parse_declaration_node>(text.data());
    }
    catch (const cereal::rapidxml::parse_error& e)
    {
        return std::string("not well-formed XML at offset ") +
               std::to_string(e.where<char>() - text.data()) + ": " + e.what();
    }
    return "not an ember XML archive (no <cereal> root element)";
}

/// A raw archive's first members: what it holds, who wrote it, and the CRC-32 of its content.
struct envelope
{
    file_content content = file_content::state_dict;
    std::string writer;
    std::optional<std::uint32_t> crc;
};

template <class Archive>
void save_envelope(Archive& ar, file_content content, std::uint32_t crc)
{
    save_string(ar, "ember_content", std::string(content_key(content)));
    save_string(ar, "ember_version", std::string(ember::version));
    if constexpr (is_text_archive_v<Archive>)
        ar(cereal::make_nvp("ember_crc32", hex_text(crc, 8)));
    else
        ar(cereal::make_nvp("ember_crc32", crc));
}

/// Reads a raw archive's envelope; throws format_error if it is not there. In a text archive
/// the checksum may be absent (removed to edit the file by hand); in a binary one it may not.
template <class Archive>
envelope load_envelope(Archive& ar)
{
    envelope env;
    std::string key;
    try
    {
        load_string(ar, "ember_content", key, "content name");
        load_string(ar, "ember_version", env.writer, "writer version");
    }
    catch (const std::exception& e)
    {
        throw format_error(std::string("not an ember archive: no ember_content/ember_version "
                                       "members at its start (") +
                           e.what() + ")");
    }
    if (!content_from_key(key, env.content))
        throw format_error("not an ember archive: unknown content '" + key + "'");
    if constexpr (is_text_archive_v<Archive>)
    {
        const char* next = ar.getNodeName();
        if (next && std::string_view(next) == "ember_crc32")
        {
            std::string text;
            ar(cereal::make_nvp("ember_crc32", text));
            std::uint64_t crc = 0;
            if (!parse_hex(text, crc) || crc > 0xffffffffu)
                throw format_error("ember_crc32 '" + text + "' is not 0x and 8 hex digits");
            env.crc = static_cast<std::uint32_t>(crc);
        }
    }
    else
    {
        std::uint32_t crc = 0;
        ar(cereal::make_nvp("ember_crc32", crc));
        env.crc = crc;
    }
    return env;
}

template <class Archive, class T>
std::vector<std::byte> encode_raw(const T& obj)
{
    const std::uint32_t crc = crc32_of(portable_bytes(obj));
    std::vector<std::byte> bytes;
    {
        vector_sink sink(bytes);
        std::ostream os(&sink);
        Archive ar(os);
        constexpr file_content content = file_content_of<T>::value;
        save_envelope(ar, content, crc);
        const std::string key(content_key(content));
        ar(cereal::make_nvp(key.c_str(), obj));
    }
    return bytes;
}

/// Opens a raw archive of type Archive over `bytes` and runs `body(ar, source)`, turning every
/// failure into a format_error naming the file (with the offset, for binary archives).
template <class Archive, class F>
void read_raw(std::span<const std::byte> bytes, std::string_view name, F&& body, bool whole = true)
{
    constexpr bool text = is_text_archive_v<Archive>;
    constexpr file_format format_of = is_json_archive_v<Archive> ? file_format::json
                                      : text                     ? file_format::xml
                                      : std::is_same_v<Archive, cereal::PortableBinaryInputArchive>
                                          ? file_format::cereal_portable_binary
                                          : file_format::cereal_binary;
    if constexpr (is_json_archive_v<Archive>)
        validate_json(bytes, name);
    else if constexpr (text)
        check_xml_structure(bytes, name);
    span_source source(bytes);
    std::istream is(&source);
    auto where = [&]
    {
        if (text)
            return std::string();
        if (source.remaining() == 0)
            return " (the file ends at offset " + std::to_string(source.consumed()) +
                   ": truncated?)";
        return " (near offset " + std::to_string(source.consumed()) + ")";
    };
    std::optional<Archive> archive;
    try
    {
        archive.emplace(is);
    }
    catch (const cereal::Exception& e)
    {
        if constexpr (text && !is_json_archive_v<Archive>)
            throw file_error(name, xml_parse_error(bytes));
        else
            throw file_error(name, "not an ember " + std::string(format_name(format_of)) +
                                       " archive: " + e.what());
    }
    try
    {
        scoped_load_budget budget(bytes.size());
        body(*archive, source);
    }
    catch (const format_error& e)
    {
        throw file_error(name, e.what() + where());
    }
    catch (const cereal::Exception& e)
    {
        throw file_error(name, std::string("malformed archive: ") + e.what() + where());
    }
    catch (const std::invalid_argument& e)
    {
        throw file_error(name, std::string("malformed number: ") + e.what());
    }
    catch (const std::out_of_range& e)
    {
        throw file_error(name, std::string("number out of range: ") + e.what());
    }
    if constexpr (!text)
        if (whole && source.remaining() != 0)
            throw file_error(name, std::to_string(source.remaining()) +
                                       " trailing bytes after the archive's end at offset " +
                                       std::to_string(source.consumed()));
}

template <class Archive, class T>
T decode_raw(std::span<const std::byte> bytes, std::string_view name)
{
    T obj{};
    read_raw<Archive>(
        bytes, name,
        [&](Archive& ar, span_source&)
        {
            const envelope env = load_envelope(ar);
            constexpr file_content expected = file_content_of<T>::value;
            if (env.content != expected)
                throw format_error("holds " +
                                   describe_content(static_cast<std::uint32_t>(env.content)) +
                                   ", not " + ember::detail::a_or_an(content_name(expected)));
            const std::string key(content_key(expected));
            ar(cereal::make_nvp(key.c_str(), obj));
            if (!env.crc)
                return;
            if (const std::uint32_t actual = crc32_of(portable_bytes(obj)); actual != *env.crc)
                throw format_error(
                    "content checksum mismatch (stored " + hex32(*env.crc) + ", computed " +
                    hex32(actual) + "): the file is corrupt" +
                    (is_text_archive_v<Archive>
                         ? " (or was edited: remove its ember_crc32 member to accept edits)"
                         : ""));
        });
    return obj;
}

template <class Archive>
file_info probe_raw(std::span<const std::byte> bytes, std::string_view name, file_format format)
{
    file_info info;
    info.format = format;
    info.size = bytes.size();
    read_raw<Archive>(
        bytes, name,
        [&](Archive& ar, span_source&)
        {
            envelope env = load_envelope(ar);
            info.content = env.content;
            info.writer = std::move(env.writer);
        },
        /*whole=*/false);
    return info;
}

/// The value_error for a safetensors file asked to hold something else than named tensors.
template <class T>
value_error not_for_safetensors(std::string_view doing)
{
    return value_error("cannot " + std::string(doing) + " " +
                       ember::detail::a_or_an(content_name(file_content_of<T>::value)) +
                       " as safetensors: the safetensors format holds only named tensors (a "
                       "state_dict); use PyTorch's format (.pth, .pt, .tar) or ember's (.ember)");
}

/// `obj` as the bytes of a file in `format`; `folder` is the record folder of a PyTorch file
/// (PyTorch names it after the file: pytorch::folder_for).
template <class T>
std::vector<std::byte> encode(const T& obj, file_format format, std::string_view folder = "archive")
{
    switch (format)
    {
    case file_format::ember:
        return encode_container(obj);
    case file_format::pytorch:
        return pytorch::to_bytes(obj, folder);
    case file_format::safetensors:
        if constexpr (std::is_same_v<T, state_dict>)
            return safetensors::to_bytes(obj);
        else
            throw not_for_safetensors<T>("save");
    case file_format::cereal_binary:
        return encode_raw<cereal::BinaryOutputArchive>(obj);
    case file_format::cereal_portable_binary:
        return encode_raw<cereal::PortableBinaryOutputArchive>(obj);
    case file_format::json:
        return encode_raw<cereal::JSONOutputArchive>(obj);
    case file_format::xml:
        return encode_raw<cereal::XMLOutputArchive>(obj);
    }
    throw value_error("unknown file format " + std::to_string(static_cast<int>(format)));
}

/// A T from the bytes of a file in `format`; `name` is the file's name for messages.
template <class T>
T decode(std::span<const std::byte> bytes, file_format format, std::string_view name)
{
    if (format != file_format::ember && has_file_magic(bytes))
        throw file_error(name, "is an ember container file, not a " +
                                   std::string(format_name(format)) +
                                   " archive (load it as file_format::ember)");
    switch (format)
    {
    case file_format::ember:
        return decode_container<T>(bytes, name);
    case file_format::pytorch:
        return pytorch::from_bytes<T>(bytes, quoted_name(name));
    case file_format::safetensors:
        if constexpr (std::is_same_v<T, state_dict>)
            return safetensors::from_bytes(bytes, quoted_name(name));
        else
            throw not_for_safetensors<T>("load");
    case file_format::cereal_binary:
        return decode_raw<cereal::BinaryInputArchive, T>(bytes, name);
    case file_format::cereal_portable_binary:
        return decode_raw<cereal::PortableBinaryInputArchive, T>(bytes, name);
    case file_format::json:
        return decode_raw<cereal::JSONInputArchive, T>(bytes, name);
    case file_format::xml:
        return decode_raw<cereal::XMLInputArchive, T>(bytes, name);
    }
    throw value_error("unknown file format " + std::to_string(static_cast<int>(format)));
}

/// What a PyTorch file holds, from its pickle alone (no tensor is copied): a dict with
/// `model_state_dict` is a checkpoint, one with `state` and `param_groups` an optimizer
/// state, anything else is taken for a state_dict (loading it says if it is not one).
inline file_info probe_pytorch(std::span<const std::byte> bytes, std::string_view name)
{
    const pytorch::detail::archive_reader reader(bytes, quoted_name(name), {});
    file_info info;
    info.format = file_format::pytorch;
    info.content = file_content::state_dict;
    info.size = bytes.size();
    const pytorch::pickle_node& root = reader.root();
    if (root.kind != pytorch::pickle_kind::dict)
        return info;
    bool state = false, groups = false;
    for (const auto& [k, v] : root.entries())
    {
        if (k->kind != pytorch::pickle_kind::string)
            continue;
        const std::string& key = k->as_string();
        if (key == "model_state_dict")
            info.content = file_content::checkpoint;
        else if (key == "ember_version" && v->kind == pytorch::pickle_kind::string)
            info.writer = v->as_string();
        state = state || key == "state";
        groups = groups || key == "param_groups";
    }
    if (info.content != file_content::checkpoint && state && groups)
        info.content = file_content::optimizer_state;
    return info;
}

inline file_info probe_bytes(std::span<const std::byte> bytes, file_format format,
                             std::string_view name)
{
    switch (format)
    {
    case file_format::ember:
    {
        const container_header h = read_container_header(bytes, name);
        file_info info;
        info.format = format;
        info.content = static_cast<file_content>(h.content);
        if (h.content < 1 || h.content > 3)
            throw file_error(name, "holds " + describe_content(h.content));
        info.container_version = h.version;
        info.writer = version_string(h.writer);
        info.size = bytes.size();
        return info;
    }
    case file_format::cereal_binary:
        return probe_raw<cereal::BinaryInputArchive>(bytes, name, format);
    case file_format::cereal_portable_binary:
        return probe_raw<cereal::PortableBinaryInputArchive>(bytes, name, format);
    case file_format::json:
        return probe_raw<cereal::JSONInputArchive>(bytes, name, format);
    case file_format::xml:
        return probe_raw<cereal::XMLInputArchive>(bytes, name, format);
    case file_format::pytorch:
        return probe_pytorch(bytes, name);
    case file_format::safetensors:
    {
        (void)safetensors::parse_header(bytes, quoted_name(name));
        file_info info;
        info.format = format;
        info.content = file_content::state_dict;
        info.size = bytes.size();
        return info;
    }
    }
    throw value_error("unknown file format " + std::to_string(static_cast<int>(format)));
}

/// Whether `bytes` start like a safetensors file: a little-endian header length that fits in
/// the file, then the header's opening brace.
inline bool looks_like_safetensors(std::span<const std::byte> bytes) noexcept
{
    if (bytes.size() < 9 || bytes[8] != std::byte{'{'})
        return false;
    const auto n = get_le<std::uint64_t>(bytes.data());
    return n >= 2 && n <= bytes.size() - 8;
}

/// The format load<T>(path) reads `bytes` of `path` as: what the bytes say, else the
/// extension's.
inline file_format detect_format(std::span<const std::byte> bytes,
                                 const std::filesystem::path& path)
{
    static constexpr unsigned char zip_magic[] = {'P', 'K', 0x03, 0x04};
    if (bytes.size() >= 4 && std::memcmp(bytes.data(), zip_magic, 4) == 0)
        return file_format::pytorch;
    if (has_file_magic(bytes))
        return file_format::ember;
    if (looks_like_safetensors(bytes))
        return file_format::safetensors;
    return format_from_extension(path);
}

} // namespace detail

template <class T>
void save(const T& obj, const std::filesystem::path& path)
{
    save(obj, path, format_from_extension(path));
}

template <class T>
void save(const T& obj, const std::filesystem::path& path, file_format format)
{
    // The container, PyTorch's zip and safetensors stream into the file, each tensor written
    // from where it lies; cereal's own archives are built in memory first.
    auto write = [&]
    {
        switch (format)
        {
        case file_format::ember:
            return detail::save_container(obj, path);
        case file_format::pytorch:
            return pytorch::save(obj, path);
        case file_format::safetensors:
            if constexpr (std::is_same_v<T, state_dict> || std::is_same_v<T, state_dict_view>)
                return safetensors::save(obj, path);
            else
                throw detail::not_for_safetensors<T>("save");
        default:
            break;
        }
        const std::vector<std::byte> bytes = detail::encode(obj, format, pytorch::folder_for(path));
        detail::atomic_write(path, bytes);
    };
    try
    {
        write();
    }
    catch (const value_error& e)
    {
        // What the format cannot hold (a value nested too deep, a string XML cannot carry),
        // found before the file was touched: the message names the file too.
        throw value_error(detail::quoted(path.string(), '\'') + " (" +
                          std::string(format_name(format)) + "): " + e.what());
    }
}

template <class T>
T load(const std::filesystem::path& path)
{
    const detail::file_bytes file(path);
    const std::span<const std::byte> bytes = file.bytes();
    return file.decode_checked(
        path.string(), [&]
        { return detail::decode<T>(bytes, detail::detect_format(bytes, path), path.string()); });
}

template <class T>
T load(const std::filesystem::path& path, file_format format)
{
    const detail::file_bytes file(path);
    return file.decode_checked(path.string(), [&]
                               { return detail::decode<T>(file.bytes(), format, path.string()); });
}

// Mapped as a load maps it (file_bytes), not read into a buffer: a probe of a 400 MB file held
// a 400 MB copy of it (for `ember inspect`, on top of the load's own mapping), and a file cut
// short while it is probed is an io_error, as in a load.
EMBER_PRECOMPILED_INLINE file_info probe(const std::filesystem::path& path)
{
    const detail::file_bytes file(path);
    const std::span<const std::byte> bytes = file.bytes();
    return file.decode_checked(
        path.string(), [&]
        { return detail::probe_bytes(bytes, detail::detect_format(bytes, path), path.string()); });
}

EMBER_PRECOMPILED_INLINE file_info probe(const std::filesystem::path& path, file_format format)
{
    const detail::file_bytes file(path);
    return file.decode_checked(
        path.string(), [&] { return detail::probe_bytes(file.bytes(), format, path.string()); });
}

EMBER_PRECOMPILED_INLINE bool
detail::container_looks_like_checkpoint(const std::filesystem::path& path) noexcept
{
    try // io_error, format_error, bad_alloc: not a checkpoint to count on
    {
        const file_part head = read_file_part(path, header_size, false);
        return check_container_header(head.bytes, head.file_size, path.string()).content ==
               static_cast<std::uint32_t>(file_content::checkpoint);
    }
    catch (...)
    {
        return false;
    }
}

EMBER_PRECOMPILED_INLINE bool detail::zip_looks_whole(const std::filesystem::path& path) noexcept
{
    try // as above
    {
        const file_part end = read_file_part(path, pytorch::detail::end_records_reach, true);
        return pytorch::detail::locate_central_directory(end.bytes, end.file_size, path.string())
                   .count > 0;
    }
    catch (...)
    {
        return false;
    }
}

EMBER_PRECOMPILED_INLINE bool detail::looks_whole(const std::filesystem::path& path,
                                                  file_format format) noexcept
{
    switch (format)
    {
    case file_format::ember:
        return container_looks_like_checkpoint(path);
    case file_format::pytorch:
        return zip_looks_whole(path);
    default:
        return true;
    }
}

} // namespace ember

#endif // EMBER_DEFINITIONS
