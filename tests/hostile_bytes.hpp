#pragma once
// Building ember files byte by byte, for tests that feed the loaders hostile input: a payload
// writer for cereal's portable binary layout, and sealing into the ember container with correct
// checksums, so that what is tested is the parser, not the checksum in front of it.
//
// The layout written here is the one cereal 1.3 gives ember's types (see serialize/cereal.hpp):
//   archive:      u8 1 (little-endian stream)
//   a type's record version (u32) precedes its first occurrence in an archive
//   state_dict:   [u32 version] u64 count, then per entry: string key, host_tensor
//   string:       u64 length, bytes
//   host_tensor:  [u32 version] string dtype, u64 rank, i64 extents[rank], raw data,
//                 and from record version 2 on the u32 CRC-32 of the data
// Records are written as version 1 unless a test asks otherwise: every later build still reads
// them, so the corpus keeps testing the parser as the format grows.
// Shared by test_hostile_files.cpp and fuzz/make_corpus.cpp.
#include <ember/serialize/file.hpp>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string_view>
#include <vector>

namespace hostile
{

/// The tensor record version this build writes. A function, not a variable: cereal sets
/// Version<T>::version in dynamic initialization, which a variable initialized from it may
/// precede (it read 0 built with Clang 16).
inline std::uint32_t tensor_record_version()
{
    return cereal::detail::Version<ember::host_tensor>::version;
}

/// Appends little-endian fields: the payload of a portable binary archive.
struct payload
{
    std::vector<std::byte> bytes;

    payload& raw(const void* p, std::size_t n)
    {
        const auto* b = static_cast<const std::byte*>(p);
        bytes.insert(bytes.end(), b, b + n);
        return *this;
    }
    template <class U>
    payload& le(U v)
    {
        std::byte b[sizeof(U)];
        std::uint64_t x = 0;
        std::memcpy(&x, &v, sizeof(U));
        for (std::size_t i = 0; i < sizeof(U); ++i)
            b[i] = static_cast<std::byte>((x >> (8 * i)) & 0xffu);
        return raw(b, sizeof(U));
    }
    payload& u8(std::uint8_t v) { return le(v); }
    payload& u32(std::uint32_t v) { return le(v); }
    payload& u64(std::uint64_t v) { return le(v); }
    payload& i64(std::int64_t v) { return le(v); }
    payload& f64(double v) { return le(v); }
    payload& str(std::string_view s)
    {
        u64(s.size());
        return raw(s.data(), s.size());
    }
    /// A tensor record's body after its version: dtype, shape, then `data_bytes` bytes of data
    /// (0x3f each), then, from record version 2 on, the CRC-32 of that data.
    payload& tensor(std::string_view dtype, const std::vector<std::int64_t>& shape,
                    std::size_t data_bytes, std::uint32_t record_version = 1)
    {
        str(dtype);
        u64(shape.size());
        for (auto d : shape)
            i64(d);
        const std::size_t start = bytes.size();
        bytes.insert(bytes.end(), data_bytes, std::byte{0x3f});
        if (record_version >= 2)
            u32(ember::detail::crc32_of({bytes.data() + start, data_bytes}));
        return *this;
    }
};

/// The start of a state_dict archive: stream flag, dictionary version, entry count.
inline payload state_dict_start(std::uint64_t count, std::uint32_t version = 1)
{
    payload p;
    p.u8(1).u32(version).u64(count);
    return p;
}

/// The header of a valid ember file holding a T, as this build writes it.
template <class T>
std::vector<std::byte> header_template()
{
    auto bytes = ember::detail::encode(T{}, ember::file_format::ember);
    bytes.resize(ember::detail::header_size);
    return bytes;
}

/// Header fields tests may forge; the checksums are always recomputed unless asked not to.
struct seal_options
{
    std::uint32_t container_version = ember::detail::container_version;
    std::uint32_t writer_version = ember::version_number;
    std::optional<std::uint64_t> declared_size; // none: the payload's real size
    std::uint32_t archive_kind = 0;
};

/// An ember file holding `p` as a T's payload, with correct checksums.
template <class T>
std::vector<std::byte> seal(const payload& p, seal_options o = {})
{
    using namespace ember::detail;
    std::vector<std::byte> file = header_template<T>();
    std::byte* h = file.data();
    put_le<std::uint32_t>(h + 8, o.container_version);
    put_le<std::uint32_t>(h + 16, o.writer_version);
    put_le<std::uint32_t>(h + 20, o.archive_kind);
    put_le<std::uint64_t>(h + 24, o.declared_size.value_or(p.bytes.size()));
    put_le<std::uint32_t>(h + 32, crc32_of(p.bytes));
    put_le<std::uint32_t>(h + 36, crc32_of({h, 36}));
    file.insert(file.end(), p.bytes.begin(), p.bytes.end());
    return file;
}

} // namespace hostile
