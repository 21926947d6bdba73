#pragma once
// What every fuzz target checks: a load of arbitrary bytes either succeeds or throws
// ember::format_error. Anything else — another exception (bad_alloc, length_error, a cereal or
// std exception that slipped through), a crash, a sanitizer report, an allocation over
// libFuzzer's -malloc_limit_mb — is a finding: the target aborts and libFuzzer saves the input.
// A load that succeeds must also be stable: saving what was loaded and loading it again gives
// the same bytes, so nothing was silently misread.
#include <ember/serialize/file.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <span>
#include <typeinfo>
#include <vector>

namespace ember_fuzz
{

using bytes_view = std::span<const std::byte>;

inline bytes_view as_bytes(const std::uint8_t* data, std::size_t size)
{
    return {reinterpret_cast<const std::byte*>(data), size};
}

[[noreturn]] inline void finding(const char* what, const char* detail)
{
    std::fprintf(stderr, "\n*** ember fuzz finding: %s: %s\n", what, detail);
    std::fflush(stderr);
    std::abort();
}

/// Runs `load`; returns true if it succeeded, false on format_error, and aborts otherwise.
template <class F>
bool loads(F&& load)
{
    try
    {
        load();
        return true;
    }
    catch (const ember::format_error&)
    {
        return false;
    }
    catch (const ember::error& e)
    {
        finding(("an ember error other than format_error escaped: " + std::string(typeid(e).name()))
                    .c_str(),
                e.what());
    }
    catch (const std::exception& e)
    {
        finding(("a non-ember exception escaped: " + std::string(typeid(e).name())).c_str(),
                e.what());
    }
    catch (...)
    {
        finding("an unknown exception escaped", "");
    }
}

/// Decodes a T from `bytes` in `format`; if that succeeds, checks that encoding it and
/// decoding the result is a fixed point.
template <class T>
void check_decode(bytes_view bytes, ember::file_format format)
{
    T obj{};
    if (!loads([&] { obj = ember::detail::decode<T>(bytes, format, "fuzz input"); }))
        return;
    const std::vector<std::byte> once = ember::detail::encode(obj, format);
    T again{};
    try
    {
        again = ember::detail::decode<T>(once, format, "re-encoded");
    }
    catch (const std::exception& e)
    {
        finding("what was loaded, saved again, does not load", e.what());
    }
    if (ember::detail::encode(again, format) != once)
        finding("load and save are not a fixed point", "the second save differs");
}

/// An in-place decode (views, for ember::load(model, path)) must give the tensors the copying
/// decode gives: same keys in the same order, dtypes, shapes and bytes.
inline void check_views_match(const ember::state_dict& copied, const ember::state_dict_view& viewed)
{
    const char* what = "the in-place decode disagrees with the copying one";
    if (copied.keys() != viewed.keys())
        finding(what, "keys differ");
    for (const auto& [key, t] : copied)
    {
        const ember::host_tensor_view& v = viewed.at(key);
        if (v.dtype() != t.dtype() || v.shape() != t.shape() || v.nbytes() != t.nbytes() ||
            (t.nbytes() != 0 && std::memcmp(v.bytes().data(), t.bytes().data(), t.nbytes()) != 0))
            finding(what, key.c_str());
    }
}

/// The 40-byte container header for a payload of content `kind`, with correct checksums: the
/// payload target uses it to get past the checksums to the parser.
inline std::vector<std::byte> seal(std::uint32_t kind, bytes_view payload)
{
    using namespace ember::detail;
    std::vector<std::byte> file(header_size);
    std::byte* h = file.data();
    std::memcpy(h, file_magic.data(), file_magic.size());
    put_le<std::uint32_t>(h + 8, container_version);
    put_le<std::uint32_t>(h + 12, kind);
    put_le<std::uint32_t>(h + 16, ember::version_number);
    put_le<std::uint32_t>(h + 20, 0);
    put_le<std::uint64_t>(h + 24, payload.size());
    put_le<std::uint32_t>(h + 32, crc32_of(payload));
    put_le<std::uint32_t>(h + 36, crc32_of({h, 36}));
    file.insert(file.end(), payload.begin(), payload.end());
    return file;
}

} // namespace ember_fuzz
