#pragma once
/// @file
/// The zip container of PyTorch's files (what `torch.save` writes since 1.6): stored entries
/// only, every record under one folder named by the writer (`archive/`, `linear_model/`, ...),
/// record data aligned to 64 bytes by padding in a local extra field (id "FB"), ZIP64 records
/// when sizes or offsets pass 4 GiB.
///
/// zip_reader validates the whole archive before anything is read, so that a damaged file
/// fails as a whole (a format_error naming the entry or offset) instead of loading wrong:
/// - the end of central directory record and, when present, the ZIP64 locator and end record:
///   single disk, no extensible data, every field that fits in both records equal in both;
/// - the central directory: exactly as large as declared, entries in bounds, names unique,
///   ZIP64 extra fields holding exactly the saturated fields;
/// - each local header against its central entry: name, version needed, flags, method, time,
///   date, CRC-32 and both sizes (with a data descriptor, as PyTorch writes, the local CRC and
///   sizes may all be zero and the descriptor must repeat the central values), its ZIP64 extra
///   field if any; extra fields whose blocks fill them exactly;
/// - the records tile the data area: the first starts at offset 0, each starts where the one
///   before (descriptor included) ends, the last ends where the central directory begins;
/// - the CRC-32 of every record, read or not.
/// What no check covers carries no meaning for a reader of stored records: "version made by",
/// internal and external file attributes, the ZIP64 end record's two version fields, the
/// locator's total disk count when it flips between 0 and 1, the contents of unknown extra
/// blocks (PyTorch's "FB" alignment padding, its id included) and of comments.
/// Everything the reader returns is a view into the caller's bytes.

#include "ember/core/error.hpp"
#include "ember/detail/crc32.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace ember::pytorch
{

namespace detail
{
/// The payload of an extra field's ZIP64 block (id 1), or a null `data` when it has none.
struct zip64_extra
{
    const std::byte* data = nullptr;
    std::uint64_t size = 0;
};
} // namespace detail

/// @brief One stored entry of a zip archive, located in the archive's bytes.
struct zip_entry
{
    std::string name;
    std::uint64_t header_offset = 0; ///< offset of the local file header
    std::uint64_t data_offset = 0;   ///< offset of the first data byte
    std::uint64_t size = 0;          ///< bytes of data (stored: compressed = uncompressed)
    std::uint32_t crc32 = 0;
};

/// @brief Reads a zip archive of stored entries in place, validating its structure up front.
class zip_reader
{
public:
    /// @brief Parses the central directory of `bytes`, which must outlive the reader. Throws
    /// format_error naming `what` and the offset of the first inconsistency.
    explicit zip_reader(std::span<const std::byte> bytes, std::string what = "zip archive");

    /// @brief Entries in central-directory order.
    const std::vector<zip_entry>& entries() const noexcept { return m_entries; }
    /// @brief The entry called `name` (full name, folder included), or nullptr.
    const zip_entry* find(std::string_view name) const noexcept;

    /// @brief The folder every record lives in (`archive`), taken from the first entry's name
    /// as PyTorch does; empty if the first entry is not in a folder.
    const std::string& folder() const noexcept { return m_folder; }
    /// @brief The entry `folder()/record`, or nullptr.
    const zip_entry* find_record(std::string_view record) const;

    /// @brief The entry's bytes in place (their CRC-32 was checked by the constructor).
    std::span<const std::byte> data(const zip_entry& entry) const;

    const std::string& what() const noexcept { return m_what; }

private:
    [[noreturn]] void fail(const std::string& message) const;
    void parse();
    detail::zip64_extra find_zip64_extra(const std::byte* x, std::uint64_t length,
                                         const std::string& owner) const;

    std::span<const std::byte> m_bytes;
    std::string m_what;
    std::string m_folder;
    std::vector<zip_entry> m_entries;
    std::unordered_map<std::string, std::size_t> m_index;
};

/// @brief How zip_writer lays out records.
struct zip_writer_options
{
    std::size_t alignment = 64; ///< record data starts at a multiple of this (PyTorch: 64)
    bool force_zip64 = false;   ///< ZIP64 fields even when nothing needs them (for tests)
};

/// @brief Writes a zip archive of stored entries as it goes, records aligned like PyTorch's,
/// through `Out`, which has `write(span)` (appends), `written()` (bytes so far),
/// `write_checksummed(span)` (appends a record's data, returns its CRC-32),
/// `rewrite_at(offset, span)` and `counts_only` (true where nothing is kept, so nothing need be
/// checksummed). A large record's data is written from where it lies, once:
/// its local header goes out with a zero CRC-32, and finish() writes the real one over it.
template <class Out>
class zip_stream_writer
{
public:
    explicit zip_stream_writer(Out& out, zip_writer_options options = {});

    /// @brief Appends a record called `name` (full name, folder included).
    void add(std::string_view name, std::span<const std::byte> data);
    void add(std::string_view name, std::string_view text)
    {
        add(name, std::as_bytes(std::span<const char>(text.data(), text.size())));
    }
    /// @brief Writes the central directory and the end records, then the CRC-32s left out of
    /// local headers.
    void finish();

private:
    Out& m_out;
    zip_writer_options m_options;
    std::vector<zip_entry> m_entries;
    bool m_finished = false;
};

namespace detail
{
/// zip_stream_writer's output into a byte vector.
struct zip_memory_out
{
    static constexpr bool counts_only = false;
    std::vector<std::byte> bytes;

    void write(std::span<const std::byte> b) { bytes.insert(bytes.end(), b.begin(), b.end()); }
    std::size_t written() const noexcept { return bytes.size(); }
    std::uint32_t write_checksummed(std::span<const std::byte> b);
    void rewrite_at(std::size_t offset, std::span<const std::byte> b)
    {
        std::memcpy(bytes.data() + offset, b.data(), b.size());
    }
};

/// zip_stream_writer's output that only counts: an archive's size before it is written.
struct zip_counting_out
{
    static constexpr bool counts_only = true; // no checksums needed: they change no size
    std::size_t size = 0;

    void write(std::span<const std::byte> b) noexcept { size += b.size(); }
    std::size_t written() const noexcept { return size; }
    std::uint32_t write_checksummed(std::span<const std::byte> b) noexcept
    {
        size += b.size();
        return 0;
    }
    void rewrite_at(std::size_t, std::span<const std::byte>) noexcept {}
};
} // namespace detail

/// @brief Writes a zip archive of stored entries into memory, records aligned like PyTorch's.
class zip_writer
{
public:
    explicit zip_writer(zip_writer_options options = {}) : m_stream(m_out, options) {}
    zip_writer(const zip_writer&) = delete;
    zip_writer& operator=(const zip_writer&) = delete;

    /// @brief Appends a record called `name` (full name, folder included).
    void add(std::string_view name, std::span<const std::byte> data) { m_stream.add(name, data); }
    void add(std::string_view name, std::string_view text) { m_stream.add(name, text); }
    /// @brief Writes the central directory and returns the archive's bytes.
    std::vector<std::byte> finish()
    {
        m_stream.finish();
        return std::move(m_out.bytes);
    }

private:
    detail::zip_memory_out m_out; // before m_stream, which holds a reference to it
    zip_stream_writer<detail::zip_memory_out> m_stream;
};

/*******************
 * implementation  *
 *******************/

namespace detail
{

inline constexpr std::uint32_t local_header_signature = 0x04034b50;
inline constexpr std::uint32_t central_header_signature = 0x02014b50;
inline constexpr std::uint32_t end_signature = 0x06054b50;
inline constexpr std::uint32_t zip64_end_signature = 0x06064b50;
inline constexpr std::uint32_t zip64_locator_signature = 0x07064b50;
inline constexpr std::uint32_t descriptor_signature = 0x08074b50;
inline constexpr std::size_t local_header_size = 30;
inline constexpr std::size_t central_header_size = 46;
inline constexpr std::size_t end_size = 22;
inline constexpr std::size_t zip64_end_size = 56;
inline constexpr std::size_t zip64_locator_size = 20;
inline constexpr std::uint32_t u32_max = 0xffffffffu;
/// Records below this size are checksummed before their local header is written.
inline constexpr std::size_t checksum_first_below = std::size_t{1} << 16;
inline constexpr std::uint16_t u16_max = 0xffffu;

template <class U>
U load_le(const std::byte* p) noexcept
{
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < sizeof(U); ++i)
        v |= static_cast<std::uint64_t>(p[i]) << (8 * i);
    return static_cast<U>(v);
}

template <class U>
void append_le(std::vector<std::byte>& out, U v)
{
    for (std::size_t i = 0; i < sizeof(U); ++i)
        out.push_back(static_cast<std::byte>((static_cast<std::uint64_t>(v) >> (8 * i)) & 0xffu));
}

/// The CRC-32 a zip records for an entry: zlib's, computed by ISA-L (detail/crc32.hpp).
inline std::uint32_t crc32(std::span<const std::byte> bytes) noexcept
{
    return ember::detail::crc32_of(bytes);
}

/// a + b, or false when it overflows.
inline bool add_overflows(std::uint64_t a, std::uint64_t b, std::uint64_t& sum) noexcept
{
    sum = a + b;
    return sum < a;
}

inline std::string quote_name(std::string_view name)
{
    return ember::detail::quoted(name, '\'');
}

} // namespace detail

inline zip_reader::zip_reader(std::span<const std::byte> bytes, std::string what)
    : m_bytes(bytes), m_what(std::move(what))
{
    parse();
}

inline void zip_reader::fail(const std::string& message) const
{
    throw format_error(m_what + ": " + message);
}

// Walks an extra field of `length` bytes, whose blocks must fill it exactly, and returns its
// first ZIP64 block. Other blocks (PyTorch's "FB" padding) are skipped.
inline detail::zip64_extra zip_reader::find_zip64_extra(const std::byte* x, std::uint64_t length,
                                                        const std::string& owner) const
{
    detail::zip64_extra found;
    for (std::uint64_t xo = 0; xo < length;)
    {
        if (length - xo < 4)
            fail(owner + " has a truncated extra field (" + std::to_string(length - xo) +
                 " bytes left of " + std::to_string(length) + ")");
        const auto id = detail::load_le<std::uint16_t>(x + xo);
        const std::uint64_t len = detail::load_le<std::uint16_t>(x + xo + 2);
        if (length - xo - 4 < len)
            fail(owner + " has an extra field block of " + std::to_string(len) +
                 " bytes past the field's end");
        if (id == 0x0001 && found.data == nullptr)
            found = {x + xo + 4, len};
        xo += 4 + len;
    }
    return found;
}

namespace detail
{

/// Where an archive's central directory lies, from its end records.
struct central_directory_location
{
    std::uint64_t offset = 0;
    std::uint64_t size = 0;
    std::uint64_t count = 0; ///< entries
};

/// Reads the end records of a zip archive of `size` bytes from `window`, its last
/// window.size() bytes (all of them, or at least the last end_records_reach: every end record,
/// with the longest comment), checks them (single disk, no extensible data, ZIP64 fields equal
/// to the classic ones) and that the central directory they declare ends where they begin.
/// Throws format_error `what: ...` naming the offset at fault.
inline central_directory_location locate_central_directory(std::span<const std::byte> window,
                                                           std::uint64_t size,
                                                           const std::string& what)
{
    const std::uint64_t first = size - window.size(); // the file offset of window[0]
    // The window's bytes at file offset `off`, which the callers keep at or past `first`.
    auto b_at = [&](std::uint64_t off) { return window.data() + (off - first); };
    auto at = [&](std::uint64_t off) { return std::to_string(off); };
    auto fail = [&](const std::string& message) { throw format_error(what + ": " + message); };

    if (size < end_size)
        fail("only " + std::to_string(size) + " bytes, too short for a zip archive");

    // The end record is the last one whose comment runs exactly to the end of the file.
    std::uint64_t end = size;
    const std::uint64_t lowest =
        std::max(size >= end_size + u16_max ? size - end_size - u16_max : 0, first);
    for (std::uint64_t pos = size - end_size + 1; pos-- > lowest;)
    {
        if (load_le<std::uint32_t>(b_at(pos)) == end_signature &&
            pos + end_size + load_le<std::uint16_t>(b_at(pos) + 20) == size)
        {
            end = pos;
            break;
        }
    }
    if (end == size)
    {
        if (first == 0 && load_le<std::uint32_t>(b_at(0)) == local_header_signature)
            fail("no end of central directory record (truncated?)");
        fail("not a zip archive (no end of central directory record)");
    }

    const std::byte* e = b_at(end);
    std::uint64_t disk = load_le<std::uint16_t>(e + 4);
    std::uint64_t cd_disk = load_le<std::uint16_t>(e + 6);
    std::uint64_t count_disk = load_le<std::uint16_t>(e + 8);
    std::uint64_t count = load_le<std::uint16_t>(e + 10);
    std::uint64_t cd_size = load_le<std::uint32_t>(e + 12);
    std::uint64_t cd_offset = load_le<std::uint32_t>(e + 16);
    std::uint64_t cd_limit = end; // the central directory ends where the end records begin

    if (end >= first + zip64_locator_size &&
        load_le<std::uint32_t>(b_at(end - zip64_locator_size)) == zip64_locator_signature)
    {
        const std::uint64_t loc_offset = end - zip64_locator_size;
        const std::byte* loc = b_at(loc_offset);
        const std::uint64_t z_offset = load_le<std::uint64_t>(loc + 8);
        // Total disks: 1, or 0 as some writers put it; both mean a single-disk archive.
        if (load_le<std::uint32_t>(loc + 4) != 0 || load_le<std::uint32_t>(loc + 16) > 1)
            fail("multi-disk archives are not supported (ZIP64 locator at offset " +
                 at(loc_offset) + ")");
        if (z_offset < first || z_offset > loc_offset || loc_offset - z_offset < zip64_end_size)
            fail("ZIP64 end record offset " + at(z_offset) + " is outside the archive");
        const std::byte* z = b_at(z_offset);
        if (load_le<std::uint32_t>(z) != zip64_end_signature)
            fail("no ZIP64 end record at offset " + at(z_offset));
        // No extensible data sector (PyTorch writes none): the record ends at the locator.
        const auto z_size = load_le<std::uint64_t>(z + 4);
        if (z_size != zip64_end_size - 12 || z_offset + zip64_end_size != loc_offset)
            fail("ZIP64 end record at offset " + at(z_offset) + " declares " + at(z_size) +
                 " bytes and ends at offset " + at(z_offset + 12 + z_size) +
                 ", but the ZIP64 locator is at offset " + at(loc_offset) + " (expected " +
                 at(zip64_end_size - 12) + " bytes ending there)");
        const std::uint64_t z_disk = load_le<std::uint32_t>(z + 16);
        const std::uint64_t z_cd_disk = load_le<std::uint32_t>(z + 20);
        const std::uint64_t z_count_disk = load_le<std::uint64_t>(z + 24);
        const std::uint64_t z_count = load_le<std::uint64_t>(z + 32);
        const std::uint64_t z_cd_size = load_le<std::uint64_t>(z + 40);
        const std::uint64_t z_cd_offset = load_le<std::uint64_t>(z + 48);
        // Fields that fit in the classic record must agree with the ZIP64 one.
        auto agree = [&](std::uint64_t classic, std::uint64_t sentinel, std::uint64_t wide,
                         const char* field)
        {
            if (classic != sentinel && classic != wide)
                fail(std::string("end records disagree on the ") + field + " (" + at(classic) +
                     " at offset " + at(end) + " vs ZIP64 " + at(wide) + " at offset " +
                     at(z_offset) + ")");
        };
        agree(disk, u16_max, z_disk, "disk number");
        agree(cd_disk, u16_max, z_cd_disk, "central directory's disk");
        agree(count_disk, u16_max, z_count_disk, "entry count on this disk");
        agree(count, u16_max, z_count, "entry count");
        agree(cd_size, u32_max, z_cd_size, "central directory size");
        agree(cd_offset, u32_max, z_cd_offset, "central directory offset");
        disk = z_disk;
        cd_disk = z_cd_disk;
        count_disk = z_count_disk;
        count = z_count;
        cd_size = z_cd_size;
        cd_offset = z_cd_offset;
        cd_limit = z_offset;
    }
    else if (count == u16_max || cd_size == u32_max || cd_offset == u32_max)
        fail("end record at offset " + at(end) + " needs a ZIP64 record, and there is none");

    if (disk != 0 || cd_disk != 0 || count_disk != count)
        fail("multi-disk archives are not supported (end record at offset " + at(end) + ")");
    std::uint64_t cd_end = 0;
    if (add_overflows(cd_offset, cd_size, cd_end) || cd_end != cd_limit)
        fail("central directory at offset " + at(cd_offset) + " of " + at(cd_size) +
             " bytes does not end where the end record begins (offset " + at(cd_limit) + ")");
    if (count > cd_size / central_header_size)
        fail("end record declares " + at(count) + " entries, more than a " + at(cd_size) +
             "-byte central directory can hold");
    return {cd_offset, cd_size, count};
}

/// The bytes from the end of a zip archive that hold all its end records, whatever its comment.
inline constexpr std::size_t end_records_reach =
    end_size + u16_max + zip64_locator_size + zip64_end_size;

} // namespace detail

inline void zip_reader::parse()
{
    using namespace detail;
    const std::byte* b = m_bytes.data();
    auto at = [&](std::uint64_t off) { return std::to_string(off); };
    const auto [cd_offset, cd_size, count] =
        locate_central_directory(m_bytes, m_bytes.size(), m_what);
    const std::uint64_t cd_end = cd_offset + cd_size;

    m_entries.reserve(static_cast<std::size_t>(count));
    std::vector<std::uint64_t> ends; // where each entry's bytes (descriptor included) end
    ends.reserve(static_cast<std::size_t>(count));
    std::uint64_t pos = cd_offset;
    for (std::uint64_t i = 0; i < count; ++i)
    {
        if (cd_end - pos < central_header_size)
            fail("central directory entry " + at(i) + " at offset " + at(pos) +
                 " runs past the directory's end");
        const std::byte* c = b + pos;
        if (load_le<std::uint32_t>(c) != central_header_signature)
            fail("no central directory entry at offset " + at(pos));
        const auto needed = load_le<std::uint16_t>(c + 6);
        const auto flags = load_le<std::uint16_t>(c + 8);
        const auto method = load_le<std::uint16_t>(c + 10);
        const auto time = load_le<std::uint16_t>(c + 12);
        const auto date = load_le<std::uint16_t>(c + 14);
        const auto crc = load_le<std::uint32_t>(c + 16);
        std::uint64_t csize = load_le<std::uint32_t>(c + 20);
        std::uint64_t usize = load_le<std::uint32_t>(c + 24);
        const std::uint64_t nlen = load_le<std::uint16_t>(c + 28);
        const std::uint64_t xlen = load_le<std::uint16_t>(c + 30);
        const std::uint64_t clen = load_le<std::uint16_t>(c + 32);
        std::uint64_t start_disk = load_le<std::uint16_t>(c + 34);
        std::uint64_t lho = load_le<std::uint32_t>(c + 42);
        if (cd_end - pos - central_header_size < nlen + xlen + clen)
            fail("central directory entry at offset " + at(pos) +
                 " has a name or extra field past the directory's end");
        std::string name(reinterpret_cast<const char*>(c + central_header_size),
                         static_cast<std::size_t>(nlen));
        if (name.empty() || name.find('\0') != std::string::npos)
            fail("entry at offset " + at(pos) + " has an empty or invalid name");
        const std::string entry = "entry " + quote_name(name);
        if (flags & 0x41u)
            fail(entry + " is encrypted");
        if (method != 0)
            fail(entry + " is compressed (method " + std::to_string(method) +
                 "); PyTorch's files store records uncompressed");

        // ZIP64 extra: the saturated fields, in this order.
        const zip64_extra cz = find_zip64_extra(c + central_header_size + nlen, xlen, entry);
        if (cz.data != nullptr)
        {
            std::uint64_t used = 0;
            auto take = [&](std::uint64_t& field, std::uint64_t width)
            {
                if (cz.size - used < width)
                    fail(entry + " has a short ZIP64 extra field");
                field = width == 8 ? load_le<std::uint64_t>(cz.data + used)
                                   : load_le<std::uint32_t>(cz.data + used);
                used += width;
            };
            if (usize == u32_max)
                take(usize, 8);
            if (csize == u32_max)
                take(csize, 8);
            if (lho == u32_max)
                take(lho, 8);
            if (start_disk == u16_max)
                take(start_disk, 4);
            if (used != cz.size)
                fail(entry + "'s ZIP64 extra field holds " + at(cz.size) + " bytes, but its " +
                     "saturated fields need " + at(used));
        }
        else if (usize == u32_max || csize == u32_max || lho == u32_max || start_disk == u16_max)
            fail(entry + " needs a ZIP64 extra field, and has none");
        if (start_disk != 0)
            fail(entry + " is on another disk");
        if (csize != usize)
            fail("stored " + entry + " has compressed size " + at(csize) + " but size " +
                 at(usize));

        // The local header repeats the central entry: every copy must agree, and the data
        // must lie before the central directory.
        if (lho > cd_offset || cd_offset - lho < local_header_size)
            fail(entry + ": local header offset " + at(lho) +
                 " is outside the archive's data area");
        const std::byte* l = b + lho;
        const std::string local = entry + ": local header at offset " + at(lho);
        if (load_le<std::uint32_t>(l) != local_header_signature)
            fail(entry + ": no local header at offset " + at(lho));
        const std::uint64_t lnlen = load_le<std::uint16_t>(l + 26);
        const std::uint64_t lxlen = load_le<std::uint16_t>(l + 28);
        if (cd_offset - lho - local_header_size < lnlen + lxlen)
            fail(local + " runs into the central directory");
        if (lnlen != nlen || std::memcmp(l + local_header_size, name.data(), nlen) != 0)
            fail(local + " names another file");
        auto same = [&](std::uint64_t local_value, std::uint64_t central, const char* field)
        {
            if (local_value != central)
                fail(local + " says " + field + " " + at(local_value) + ", the central directory " +
                     at(central));
        };
        same(load_le<std::uint16_t>(l + 4), needed, "version needed");
        same(load_le<std::uint16_t>(l + 6), flags, "flags");
        same(load_le<std::uint16_t>(l + 8), method, "method");
        same(load_le<std::uint16_t>(l + 10), time, "time");
        same(load_le<std::uint16_t>(l + 12), date, "date");
        const zip64_extra lz =
            find_zip64_extra(l + local_header_size + lnlen, lxlen, entry + "'s local header");
        const bool descriptor = (flags & 0x08u) != 0;
        if (lz.data != nullptr)
        {
            // Both sizes, then the header's offset and disk as a writer needs them; miniz
            // (PyTorch) writes the offset alone for a small record past 4 GiB. With a data
            // descriptor the sizes may be zero (Python's zipfile on a stream).
            const std::uint64_t n = lz.size;
            auto field = [&](std::uint64_t k) { return load_le<std::uint64_t>(lz.data + 8 * k); };
            const bool ok = n == 8 ? field(0) == lho
                                   : (n == 16 || n == 24 || n == 28) &&
                                         ((field(0) == usize && field(1) == csize) ||
                                          (descriptor && field(0) == 0 && field(1) == 0)) &&
                                         (n == 16 || field(2) == lho) &&
                                         (n != 28 || load_le<std::uint32_t>(lz.data + 24) == 0);
            if (!ok)
                fail(local + " has a ZIP64 extra field of " + at(n) +
                     " bytes that disagrees with the central directory");
        }
        const std::uint32_t lcrc = load_le<std::uint32_t>(l + 14);
        std::uint64_t lcsize = load_le<std::uint32_t>(l + 18);
        std::uint64_t lusize = load_le<std::uint32_t>(l + 22);
        if (lusize == u32_max || lcsize == u32_max)
        {
            // A local ZIP64 extra holds both sizes, uncompressed first; only the saturated
            // fields defer to it.
            if (lz.data == nullptr || lz.size < 16)
                fail(local + " needs a ZIP64 extra field with both sizes");
            if (lusize == u32_max)
                lusize = load_le<std::uint64_t>(lz.data);
            if (lcsize == u32_max)
                lcsize = load_le<std::uint64_t>(lz.data + 8);
        }
        // With a data descriptor (flag 8, as PyTorch writes) the local CRC and sizes may all
        // be zero, and the descriptor after the data must hold the central directory's values.
        if (!(descriptor && lcrc == 0 && lcsize == 0 && lusize == 0))
        {
            same(lcrc, crc, "CRC-32");
            same(lcsize, csize, "compressed size");
            same(lusize, usize, "size");
        }

        const std::uint64_t data = lho + local_header_size + lnlen + lxlen;
        if (cd_offset - data < usize)
            fail(entry + ": " + at(usize) + " bytes at offset " + at(data) +
                 " run past the data area (ends at " + at(cd_offset) + ")");
        std::uint64_t entry_end = data + usize;
        if (descriptor)
        {
            // Optional signature, CRC-32, then both sizes: 8 bytes each when the local header
            // has a ZIP64 extra, else 4.
            const std::uint64_t width = lz.data != nullptr ? 8 : 4;
            const std::uint64_t room = cd_offset - entry_end;
            auto matches = [&](std::uint64_t off)
            {
                if (room < off + 4 + 2 * width)
                    return false;
                const std::byte* d = b + entry_end + off;
                auto size_at = [&](std::uint64_t k)
                {
                    return width == 8 ? load_le<std::uint64_t>(d + 4 + 8 * k)
                                      : std::uint64_t{load_le<std::uint32_t>(d + 4 + 4 * k)};
                };
                return load_le<std::uint32_t>(d) == crc && size_at(0) == csize &&
                       size_at(1) == usize;
            };
            if (room >= 4 && load_le<std::uint32_t>(b + entry_end) == descriptor_signature &&
                matches(4))
                entry_end += 4 + 4 + 2 * width;
            else if (matches(0))
                entry_end += 4 + 2 * width;
            else
                fail(entry + ": the data descriptor at offset " + at(entry_end) +
                     " does not hold the central directory's CRC-32 and sizes");
        }

        if (m_index.contains(name))
            fail("duplicate entry " + quote_name(name));
        m_index.emplace(name, m_entries.size());
        m_entries.push_back({std::move(name), lho, data, usize, crc});
        ends.push_back(entry_end);
        pos += central_header_size + nlen + xlen + clen;
    }
    if (pos != cd_end)
        fail("central directory has " + at(cd_end - pos) + " bytes after its " + at(count) +
             " entries");

    // The records tile the data area: the first starts the file, each starts where the one
    // before ends, the last ends where the central directory begins. So entries share no
    // bytes, and no byte before the central directory goes unchecked.
    std::vector<std::size_t> order(m_entries.size());
    for (std::size_t i = 0; i < order.size(); ++i)
        order[i] = i;
    std::sort(order.begin(), order.end(),
              [&](std::size_t x, std::size_t y)
              { return m_entries[x].header_offset < m_entries[y].header_offset; });
    std::uint64_t expected = 0;
    for (std::size_t k = 0; k < order.size(); ++k)
    {
        const zip_entry& entry = m_entries[order[k]];
        if (entry.header_offset < expected)
            fail("entries " + quote_name(m_entries[order[k - 1]].name) + " and " +
                 quote_name(entry.name) + " overlap (offsets " +
                 at(m_entries[order[k - 1]].header_offset) + " and " + at(entry.header_offset) +
                 ")");
        if (entry.header_offset > expected)
            fail(at(entry.header_offset - expected) + " bytes at offset " + at(expected) +
                 " belong to no entry (entry " + quote_name(entry.name) + " starts at " +
                 at(entry.header_offset) + ")");
        expected = ends[order[k]];
    }
    if (expected != cd_offset)
        fail(at(cd_offset - expected) + " bytes at offset " + at(expected) +
             " belong to no entry (the central directory starts at " + at(cd_offset) + ")");

    // Every record's CRC-32, read or not, so a damaged file fails as a whole.
    for (const zip_entry& entry : m_entries)
    {
        const std::uint32_t actual = crc32(m_bytes.subspan(
            static_cast<std::size_t>(entry.data_offset), static_cast<std::size_t>(entry.size)));
        if (actual != entry.crc32)
        {
            char buf[64];
            std::snprintf(buf, sizeof buf, "stored 0x%08x, computed 0x%08x", entry.crc32, actual);
            fail("record " + quote_name(entry.name) + " at offset " + at(entry.data_offset) +
                 " fails its CRC-32 check (" + buf + "): the file is corrupt");
        }
    }

    if (!m_entries.empty())
    {
        const std::string& first = m_entries.front().name;
        const auto slash = first.find('/');
        if (slash != std::string::npos)
            m_folder = first.substr(0, slash);
    }
}

inline const zip_entry* zip_reader::find(std::string_view name) const noexcept
{
    auto it = m_index.find(std::string(name));
    return it == m_index.end() ? nullptr : &m_entries[it->second];
}

inline const zip_entry* zip_reader::find_record(std::string_view record) const
{
    if (m_folder.empty())
        return nullptr;
    std::string full = m_folder;
    full += '/';
    full += record;
    return find(full);
}

inline std::span<const std::byte> zip_reader::data(const zip_entry& entry) const
{
    return m_bytes.subspan(static_cast<std::size_t>(entry.data_offset),
                           static_cast<std::size_t>(entry.size));
}

inline std::uint32_t detail::zip_memory_out::write_checksummed(std::span<const std::byte> b)
{
    write(b);
    return crc32(b);
}

template <class Out>
zip_stream_writer<Out>::zip_stream_writer(Out& out, zip_writer_options options)
    : m_out(out), m_options(options)
{
    if (m_options.alignment == 0 || m_options.alignment > 0x8000)
        throw value_error("zip_writer: alignment " + std::to_string(m_options.alignment) +
                          " outside [1, 32768]");
}

template <class Out>
void zip_stream_writer<Out>::add(std::string_view name, std::span<const std::byte> data)
{
    using namespace detail;
    if (m_finished)
        throw value_error("zip_writer: add() after finish()");
    if (name.empty() || name.size() > u16_max)
        throw value_error("zip_writer: record name of " + std::to_string(name.size()) +
                          " bytes (must be 1 to 65535)");
    const std::uint64_t offset = m_out.written();
    const std::uint64_t size = data.size();
    const bool zip64 = m_options.force_zip64 || size >= u32_max || offset >= u32_max;
    // A small record is checksummed before its header is written; a large one as it is
    // written, its CRC-32 going into the header at the end (finish).
    const bool checksum_first = size < checksum_first_below;
    const std::uint32_t crc = checksum_first && !Out::counts_only ? detail::crc32(data) : 0;

    // Pad with an "FB" extra field so the data starts aligned, as PyTorch's writer does.
    const std::uint64_t unpadded = offset + local_header_size + name.size() + (zip64 ? 20 : 0) + 4;
    const std::uint64_t padding =
        (m_options.alignment - unpadded % m_options.alignment) % m_options.alignment;
    const std::uint64_t extra = (zip64 ? 20 : 0) + 4 + padding;

    std::vector<std::byte> h;
    h.reserve(static_cast<std::size_t>(unpadded - offset + padding));
    append_le<std::uint32_t>(h, local_header_signature);
    append_le<std::uint16_t>(h, zip64 ? 45 : 20); // version needed
    append_le<std::uint16_t>(h, 0x0800);          // names are UTF-8
    append_le<std::uint16_t>(h, 0);               // stored
    append_le<std::uint16_t>(h, 0);               // time
    append_le<std::uint16_t>(h, (1 << 5) | 1);    // date: 1980-01-01, as a fixed stamp
    append_le<std::uint32_t>(h, crc);
    append_le<std::uint32_t>(h, zip64 ? u32_max : static_cast<std::uint32_t>(size));
    append_le<std::uint32_t>(h, zip64 ? u32_max : static_cast<std::uint32_t>(size));
    append_le<std::uint16_t>(h, static_cast<std::uint16_t>(name.size()));
    append_le<std::uint16_t>(h, static_cast<std::uint16_t>(extra));
    for (char ch : name)
        h.push_back(static_cast<std::byte>(ch));
    if (zip64)
    {
        append_le<std::uint16_t>(h, 0x0001);
        append_le<std::uint16_t>(h, 16);
        append_le<std::uint64_t>(h, size);
        append_le<std::uint64_t>(h, size);
    }
    append_le<std::uint16_t>(h, 0x4246); // "FB"
    append_le<std::uint16_t>(h, static_cast<std::uint16_t>(padding));
    h.insert(h.end(), static_cast<std::size_t>(padding), std::byte{'Z'});
    m_out.write(h);
    const std::uint64_t data_offset = offset + h.size();
    if (checksum_first)
        m_out.write(data);
    m_entries.push_back({std::string(name), offset, data_offset, size,
                         checksum_first ? crc : m_out.write_checksummed(data)});
}

template <class Out>
void zip_stream_writer<Out>::finish()
{
    using namespace detail;
    if (m_finished)
        throw value_error("zip_writer: finish() called twice");
    m_finished = true;
    const std::uint64_t cd_offset = m_out.written();
    std::vector<std::byte> tail; // central directory and end records
    for (const auto& entry : m_entries)
    {
        const bool big_size = m_options.force_zip64 || entry.size >= u32_max;
        const bool big_offset = m_options.force_zip64 || entry.header_offset >= u32_max;
        const std::uint16_t extra =
            (big_size || big_offset)
                ? static_cast<std::uint16_t>(4 + (big_size ? 16 : 0) + (big_offset ? 8 : 0))
                : 0;
        append_le<std::uint32_t>(tail, central_header_signature);
        append_le<std::uint16_t>(tail, extra ? 45 : 20); // made by (MS-DOS attributes)
        append_le<std::uint16_t>(tail, extra ? 45 : 20); // needed
        append_le<std::uint16_t>(tail, 0x0800);
        append_le<std::uint16_t>(tail, 0);
        append_le<std::uint16_t>(tail, 0);
        append_le<std::uint16_t>(tail, (1 << 5) | 1);
        append_le<std::uint32_t>(tail, entry.crc32);
        append_le<std::uint32_t>(tail, big_size ? u32_max : static_cast<std::uint32_t>(entry.size));
        append_le<std::uint32_t>(tail, big_size ? u32_max : static_cast<std::uint32_t>(entry.size));
        append_le<std::uint16_t>(tail, static_cast<std::uint16_t>(entry.name.size()));
        append_le<std::uint16_t>(tail, extra);
        append_le<std::uint16_t>(tail, 0); // comment
        append_le<std::uint16_t>(tail, 0); // disk
        append_le<std::uint16_t>(tail, 0); // internal attributes
        append_le<std::uint32_t>(tail, 0); // external attributes
        append_le<std::uint32_t>(
            tail, big_offset ? u32_max : static_cast<std::uint32_t>(entry.header_offset));
        for (char ch : entry.name)
            tail.push_back(static_cast<std::byte>(ch));
        if (extra)
        {
            append_le<std::uint16_t>(tail, 0x0001);
            append_le<std::uint16_t>(tail, static_cast<std::uint16_t>(extra - 4));
            if (big_size)
            {
                append_le<std::uint64_t>(tail, entry.size);
                append_le<std::uint64_t>(tail, entry.size);
            }
            if (big_offset)
                append_le<std::uint64_t>(tail, entry.header_offset);
        }
    }
    const std::uint64_t cd_size = tail.size();
    const std::uint64_t count = m_entries.size();
    const bool zip64 =
        m_options.force_zip64 || count >= u16_max || cd_size >= u32_max || cd_offset >= u32_max;
    if (zip64)
    {
        const std::uint64_t z_offset = cd_offset + tail.size();
        append_le<std::uint32_t>(tail, zip64_end_signature);
        append_le<std::uint64_t>(tail, zip64_end_size - 12);
        append_le<std::uint16_t>(tail, 45);
        append_le<std::uint16_t>(tail, 45);
        append_le<std::uint32_t>(tail, 0);
        append_le<std::uint32_t>(tail, 0);
        append_le<std::uint64_t>(tail, count);
        append_le<std::uint64_t>(tail, count);
        append_le<std::uint64_t>(tail, cd_size);
        append_le<std::uint64_t>(tail, cd_offset);
        append_le<std::uint32_t>(tail, zip64_locator_signature);
        append_le<std::uint32_t>(tail, 0);
        append_le<std::uint64_t>(tail, z_offset);
        append_le<std::uint32_t>(tail, 1);
    }
    append_le<std::uint32_t>(tail, end_signature);
    append_le<std::uint16_t>(tail, 0);
    append_le<std::uint16_t>(tail, 0);
    const auto count16 = count >= u16_max ? u16_max : static_cast<std::uint16_t>(count);
    append_le<std::uint16_t>(tail, count16);
    append_le<std::uint16_t>(tail, count16);
    append_le<std::uint32_t>(tail,
                             cd_size >= u32_max ? u32_max : static_cast<std::uint32_t>(cd_size));
    append_le<std::uint32_t>(tail, cd_offset >= u32_max ? u32_max
                                                        : static_cast<std::uint32_t>(cd_offset));
    append_le<std::uint16_t>(tail, 0);
    m_out.write(tail);
    for (const auto& entry : m_entries) // the large records' headers went out without it
    {
        if (entry.size < checksum_first_below)
            continue;
        std::vector<std::byte> crc;
        append_le<std::uint32_t>(crc, entry.crc32);
        m_out.rewrite_at(static_cast<std::size_t>(entry.header_offset) + 14, crc);
    }
}

} // namespace ember::pytorch
