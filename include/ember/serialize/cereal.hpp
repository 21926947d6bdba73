#pragma once
/// @file
/// cereal support for ember's state types: host_tensor, state_dict (any ordered_dict),
/// generator_state, optimizer_state, and (through the two headers included at the end)
/// ember::value and ember::checkpoint. One `save`/`load` pair per type serves every cereal
/// archive — binary, portable binary, JSON, XML — and users' own cereal types can hold these
/// as members. Every type carries an explicit cereal version from the first release.
///
/// Loading from a binary archive never allocates more than the input can hold: ember's file
/// loaders set a byte budget (detail::load_budget) to the input's size, and every length read
/// from the archive is checked against what remains before anything is allocated. (cereal's own
/// string and vector loaders trust the length they read; ember's types do not use them.)
///
/// Text archives (JSON, XML) hold floating-point numbers exactly and readably: a finite number
/// is written as the shortest decimal that reads back to the same bits (a JSON number; XML
/// element text), and the rest as strings: "inf", "-inf", "nan", "-nan", or "nan(0x7fc00001)"
/// (the bit pattern) for a NaN with a payload. float16 and bfloat16 tensors are written as
/// their values too. So NaN, ±inf, -0.0 and every float32/float64 value round-trip bit for bit.
///
/// Tensor records (version 2) carry the CRC-32 of their elements' little-endian bytes, checked
/// on load; version 1 records (no checksum) still load. A load error names where it happened:
/// the dictionary key, the checkpoint field, and what was wrong.

#include "ember/core/error.hpp"
#include "ember/core/generator.hpp"
#include "ember/core/host_tensor.hpp"
#include "ember/core/ordered_dict.hpp"
#include "ember/core/state_dict.hpp"
#include "ember/detail/crc32.hpp"
#include "ember/detail/memory_stream.hpp"
#include "ember/optim/optimizer_state.hpp"

#include <cereal/cereal.hpp>
#include <cereal/types/array.hpp>
#include <cereal/types/string.hpp>

#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace cereal
{
class JSONOutputArchive;
class XMLOutputArchive;
class JSONInputArchive;
} // namespace cereal

namespace ember
{

/// The largest rank ember reads (PyTorch's own limit).
inline constexpr std::size_t max_tensor_rank = 64;

namespace detail
{

/// Bytes a load may still allocate on this thread; unlimited unless a loader set it.
inline std::size_t& load_budget() noexcept
{
    thread_local std::size_t remaining = std::numeric_limits<std::size_t>::max();
    return remaining;
}

/// Sets the load budget for its lifetime (ember's file loaders use it around a cereal load).
class scoped_load_budget
{
public:
    explicit scoped_load_budget(std::size_t bytes) noexcept : m_previous(load_budget())
    {
        load_budget() = bytes;
    }
    ~scoped_load_budget() { load_budget() = m_previous; }
    scoped_load_budget(const scoped_load_budget&) = delete;
    scoped_load_budget& operator=(const scoped_load_budget&) = delete;

private:
    std::size_t m_previous;
};

/// Throws format_error unless `count` elements of `element_size` bytes fit in the budget, and
/// takes them from it. Every such element must be read from the input, so the sum of all
/// allocations can never exceed the input's size.
inline void reserve_from_budget(std::uint64_t count, std::size_t element_size,
                                std::string_view what)
{
    std::size_t& budget = load_budget();
    if (element_size != 0 && count > budget / element_size)
        throw format_error(std::string(what) + " declares " + std::to_string(count) +
                           " elements of " + std::to_string(element_size) +
                           " bytes, more than the " + std::to_string(budget) +
                           " bytes left in the input");
    if (budget != std::numeric_limits<std::size_t>::max())
        budget -= static_cast<std::size_t>(count) * element_size;
}

/// Runs `body`; a failure inside it comes out as a format_error whose message starts with
/// `where` ("key 'fc1.weight': ..."), so nested loads report the whole path to the fault.
/// (cereal's own errors, and the std::invalid_argument / out_of_range its XML archive throws
/// for malformed numbers, become format_errors here too.)
template <class F>
void in_context(std::string_view where, F&& body)
{
    try
    {
        body();
    }
    catch (const format_error& e)
    {
        throw format_error(std::string(where) + ": " + e.what());
    }
    catch (const cereal::Exception& e)
    {
        throw format_error(std::string(where) + ": " + e.what());
    }
    catch (const std::invalid_argument& e)
    {
        throw format_error(std::string(where) + ": not a number (" + e.what() + ")");
    }
    catch (const std::out_of_range& e)
    {
        throw format_error(std::string(where) + ": number out of range (" + e.what() + ")");
    }
}

/// Throws format_error unless `version` (a record's cereal version) is one this build reads:
/// 1 to `newest`. (Version 0 is never written; reading it as 1 would hide a corrupt byte.)
inline void check_version(std::uint32_t version, std::uint32_t newest, std::string_view what)
{
    if (version == 0)
        throw format_error(std::string(what) + " version 0 is invalid (versions start at 1)");
    if (version > newest)
        throw format_error(std::string(what) + " version " + std::to_string(version) +
                           " is newer than this build reads (" + std::to_string(newest) + ")");
}

template <class Archive>
inline constexpr bool is_text_archive_v = cereal::traits::is_text_archive<Archive>::value;

template <class Archive>
inline constexpr bool is_json_archive_v = std::is_same_v<Archive, cereal::JSONOutputArchive> ||
                                          std::is_same_v<Archive, cereal::JSONInputArchive>;

/// Runs `body` inside a named node of a text archive (JSON object member, XML element); binary
/// archives have no nodes, so there it just runs `body`.
template <class Archive, class F>
void in_node(Archive& ar, const char* name, F&& body)
{
    if constexpr (is_text_archive_v<Archive>)
    {
        if (name)
            ar.setNextName(name);
        ar.startNode();
        body();
        ar.finishNode();
    }
    else
        body();
}

/// `ar(nvp(name, x))`, or `ar(x)` when `name` is null (an element of a list).
template <class Archive, class T>
void named(Archive& ar, const char* name, T&& x)
{
    if (name)
        ar(cereal::make_nvp(name, std::forward<T>(x)));
    else
        ar(std::forward<T>(x));
}

/// Loads a bool. Binary archives store it as one byte; reading that byte straight into a
/// `bool` is undefined for anything but 0 and 1, so it goes through a checked byte.
template <class Archive>
void load_bool(Archive& ar, const char* name, bool& b)
{
    if constexpr (is_text_archive_v<Archive>)
        ar(cereal::make_nvp(name, b));
    else
    {
        static_assert(sizeof(bool) == 1, "ember: binary archives store bool as one byte");
        std::uint8_t byte = 0;
        ar(cereal::make_nvp(name, byte));
        if (byte > 1)
            throw format_error(std::string("'") + name + "' holds byte " + std::to_string(byte) +
                               ", not a bool (0 or 1)");
        b = byte != 0;
    }
}

/// Saves a string. Binary archives store its bytes; JSON and XML hold text only: cereal's JSON
/// archive reads a string back only up to a NUL byte, and XML 1.0 cannot hold one at all, nor
/// the other control characters but tab, newline and carriage return (xmllint refuses the
/// file; ember's reader took it, no other would), so such a string is refused here, before
/// anything is written, rather than saved short or unreadable.
template <class Archive>
void save_string(Archive& ar, const char* name, const std::string& s)
{
    if constexpr (is_text_archive_v<Archive>)
    {
        constexpr bool xml = std::is_same_v<Archive, cereal::XMLOutputArchive>;
        static constexpr char xml_forbidden[] = "\x00\x01\x02\x03\x04\x05\x06\x07\x08\x0b\x0c\x0e"
                                                "\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a"
                                                "\x1b\x1c\x1d\x1e\x1f";
        const std::size_t bad =
            xml ? s.find_first_of(std::string_view(xml_forbidden, sizeof xml_forbidden - 1))
                : s.find('\0');
        if (bad != std::string::npos)
        {
            constexpr char hex[] = "0123456789abcdef";
            const auto byte = static_cast<unsigned char>(s[bad]);
            throw value_error(
                std::string("cannot save ") + (name ? name : "string") + " " + quoted(s, '\'', 64) +
                " (" + std::to_string(s.size()) + " bytes) in " +
                (xml ? "an XML" : "a JSON or XML") + " archive: it holds " +
                (byte == 0 ? std::string("a NUL byte")
                           : std::string("the control byte 0x") + hex[byte >> 4] + hex[byte & 15]) +
                " at offset " + std::to_string(bad) + ", which " +
                (xml ? "XML 1.0 cannot" : "text archives cannot") +
                " carry; save it as .ember, .pth or a binary archive (.bin, "
                ".cereal)" +
                (xml ? " or JSON" : ""));
        }
        named(ar, name, s);
    }
    else
    {
        ar(cereal::make_size_tag(static_cast<cereal::size_type>(s.size())));
        ar(cereal::binary_data(s.data(), s.size()));
    }
}

template <class Archive>
void load_string(Archive& ar, const char* name, std::string& s, std::string_view what)
{
    if constexpr (is_text_archive_v<Archive>)
    {
        named(ar, name, s);
        reserve_from_budget(s.size(), 1, what);
    }
    else
    {
        cereal::size_type n = 0;
        ar(cereal::make_size_tag(n));
        reserve_from_budget(n, 1, what);
        s.resize(static_cast<std::size_t>(n));
        ar(cereal::binary_data(s.data(), s.size()));
    }
}

template <class Archive, class T>
void save_vector(Archive& ar, const std::vector<T>& v)
{
    ar(cereal::make_size_tag(static_cast<cereal::size_type>(v.size())));
    if constexpr (is_text_archive_v<Archive>)
        for (const auto& x : v)
            ar(x);
    else
        ar(cereal::binary_data(v.data(), v.size() * sizeof(T)));
}

template <class Archive, class T>
void load_vector(Archive& ar, std::vector<T>& v, std::string_view what)
{
    cereal::size_type n = 0;
    ar(cereal::make_size_tag(n));
    reserve_from_budget(n, is_text_archive_v<Archive> ? 1 : sizeof(T), what);
    v.resize(static_cast<std::size_t>(n));
    if constexpr (is_text_archive_v<Archive>)
        for (auto& x : v)
            ar(x);
    else
        ar(cereal::binary_data(v.data(), v.size() * sizeof(T)));
}

inline dtype parse_dtype(std::string_view name)
{
    for (auto d : {dtype::float32, dtype::float64, dtype::int64, dtype::int32, dtype::int16,
                   dtype::int8, dtype::uint8, dtype::boolean, dtype::float16, dtype::bfloat16})
        if (dtype_name(d) == name)
            return d;
    throw format_error("unknown dtype '" + std::string(name) + "'");
}

// ---- Exact floating-point text --------------------------------------------------------------

/// An IEEE-754 binary format by its field widths: float16 (5, 10), bfloat16 (8, 7),
/// float32 (8, 23), float64 (11, 52).
struct float_layout
{
    int exponent_bits;
    int mantissa_bits;

    int total_bits() const noexcept { return 1 + exponent_bits + mantissa_bits; }
    std::uint64_t exponent_mask() const noexcept
    {
        return ((std::uint64_t{1} << exponent_bits) - 1) << mantissa_bits;
    }
    std::uint64_t mantissa_mask() const noexcept { return (std::uint64_t{1} << mantissa_bits) - 1; }
    std::uint64_t sign_bit() const noexcept
    {
        return std::uint64_t{1} << (exponent_bits + mantissa_bits);
    }
    std::uint64_t quiet_bit() const noexcept { return std::uint64_t{1} << (mantissa_bits - 1); }
};

inline constexpr float_layout float16_layout{5, 10};
inline constexpr float_layout bfloat16_layout{8, 7};
inline constexpr float_layout float32_layout{8, 23};
inline constexpr float_layout float64_layout{11, 52};

/// The exact value of a finite or infinite number given by its bits (not for NaN).
inline double float_bits_to_double(std::uint64_t bits, float_layout f)
{
    if (f.total_bits() == 64)
        return std::bit_cast<double>(bits);
    if (f.total_bits() == 32)
        return static_cast<double>(std::bit_cast<float>(static_cast<std::uint32_t>(bits)));
    const bool negative = (bits & f.sign_bit()) != 0;
    const auto exponent = static_cast<int>((bits & f.exponent_mask()) >> f.mantissa_bits);
    const auto mantissa = bits & f.mantissa_mask();
    const int bias = (1 << (f.exponent_bits - 1)) - 1;
    double v;
    if (exponent == (1 << f.exponent_bits) - 1)
        v = std::numeric_limits<double>::infinity();
    else if (exponent == 0)
        v = std::ldexp(static_cast<double>(mantissa), 1 - bias - f.mantissa_bits);
    else
        v = std::ldexp(static_cast<double>(mantissa | (std::uint64_t{1} << f.mantissa_bits)),
                       exponent - bias - f.mantissa_bits);
    return negative ? -v : v;
}

/// `d` rounded to nearest-even in the format; sets `overflow` when a finite `d` rounds past the
/// largest finite value (the result is then infinite).
inline std::uint64_t double_to_float_bits(double d, float_layout f, bool& overflow)
{
    overflow = false;
    if (f.total_bits() == 64)
        return std::bit_cast<std::uint64_t>(d);
    if (f.total_bits() == 32)
    {
        const auto x = static_cast<float>(d);
        overflow = std::isfinite(d) && std::isinf(x);
        return std::bit_cast<std::uint32_t>(x);
    }
    const std::uint64_t sign = std::signbit(d) ? f.sign_bit() : 0;
    const double a = std::fabs(d);
    if (std::isnan(d))
        return sign | f.exponent_mask() | f.quiet_bit();
    if (std::isinf(a))
        return sign | f.exponent_mask();
    if (a == 0)
        return sign;
    const int bias = (1 << (f.exponent_bits - 1)) - 1;
    int e = 0;
    std::frexp(a, &e); // a = m·2^e, m in [0.5, 1): the unbiased exponent is e - 1
    const int unbiased = std::max(e - 1, 1 - bias);
    // Scaled so the kept bits are the integer part; rint rounds to nearest-even, exactly, since
    // the scaled value has at most 53 significant bits.
    auto m = static_cast<std::uint64_t>(std::rint(std::ldexp(a, f.mantissa_bits - unbiased)));
    int exponent = unbiased;
    if (m == (std::uint64_t{2} << f.mantissa_bits))
    {
        m >>= 1;
        ++exponent;
    }
    if (exponent > bias)
    {
        overflow = true;
        return sign | f.exponent_mask();
    }
    const std::uint64_t field = m >= (std::uint64_t{1} << f.mantissa_bits)
                                    ? static_cast<std::uint64_t>(exponent + bias)
                                    : 0;
    return sign | (field << f.mantissa_bits) | (m & f.mantissa_mask());
}

inline double parse_decimal(std::string_view s, bool& ok)
{
    double d = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), d);
    ok = ec == std::errc{} && end == s.data() + s.size() && !s.empty();
    return d;
}

/// The text of a finite number: the shortest decimal that reads back (through a double, as
/// every loader reads) to exactly these bits.
inline std::string finite_float_text(std::uint64_t bits, float_layout f)
{
    char buf[64];
    const double exact = float_bits_to_double(bits, f);
    auto reads_back = [&](std::string_view s)
    {
        bool ok = false, overflow = false;
        const double d = parse_decimal(s, ok);
        return ok && double_to_float_bits(d, f, overflow) == bits;
    };
    if (f.total_bits() == 64)
    {
        auto r = std::to_chars(buf, buf + sizeof buf, exact);
        return {buf, r.ptr};
    }
    if (f.total_bits() == 32)
    {
        auto r = std::to_chars(buf, buf + sizeof buf, static_cast<float>(exact));
        if (reads_back({buf, r.ptr}))
            return {buf, r.ptr};
    }
    else
        for (int precision = 1; precision <= 9; ++precision)
        {
            auto r = std::to_chars(buf, buf + sizeof buf, static_cast<float>(exact),
                                   std::chars_format::general, precision);
            if (reads_back({buf, r.ptr}))
                return {buf, r.ptr};
        }
    // The shortest decimal of the narrow type can sit within a double's rounding of a tie;
    // the double's own shortest text is always exact.
    auto r = std::to_chars(buf, buf + sizeof buf, exact);
    return {buf, r.ptr};
}

/// "0x" and `digits` hex digits (zero-padded) of `bits`.
inline std::string hex_text(std::uint64_t bits, int digits)
{
    std::string s = "0x";
    for (int i = digits - 1; i >= 0; --i)
        s += "0123456789abcdef"[(bits >> (4 * i)) & 0xf];
    return s;
}

/// `s` as "0x" and hex digits, or false.
inline bool parse_hex(std::string_view s, std::uint64_t& bits)
{
    if (!s.starts_with("0x") || s.size() == 2)
        return false;
    auto [end, ec] = std::from_chars(s.data() + 2, s.data() + s.size(), bits, 16);
    return ec == std::errc{} && end == s.data() + s.size();
}

/// "inf", "-inf", "nan", "-nan" or "nan(0x…)" for a number that is not finite; empty if it is.
inline std::string special_float_text(std::uint64_t bits, float_layout f)
{
    if ((bits & f.exponent_mask()) != f.exponent_mask())
        return {};
    const bool negative = (bits & f.sign_bit()) != 0;
    const std::uint64_t mantissa = bits & f.mantissa_mask();
    if (mantissa == 0)
        return negative ? "-inf" : "inf";
    if (mantissa == f.quiet_bit())
        return negative ? "-nan" : "nan";
    return "nan(" + hex_text(bits, f.total_bits() / 4) + ")";
}

/// Reads what special_float_text or finite_float_text wrote (or any decimal, rounded to
/// nearest) back to bits; throws format_error for anything else.
inline std::uint64_t parse_float_text(std::string_view s, float_layout f)
{
    const std::uint64_t all =
        f.total_bits() == 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << f.total_bits()) - 1;
    if (s == "inf" || s == "+inf" || s == "Infinity")
        return f.exponent_mask();
    if (s == "-inf" || s == "-Infinity")
        return f.sign_bit() | f.exponent_mask();
    if (s == "nan" || s == "NaN")
        return f.exponent_mask() | f.quiet_bit();
    if (s == "-nan")
        return f.sign_bit() | f.exponent_mask() | f.quiet_bit();
    if (s.starts_with("nan(") && s.ends_with(")"))
    {
        std::uint64_t bits = 0;
        if (parse_hex(s.substr(4, s.size() - 5), bits) && (bits & ~all) == 0 &&
            (bits & f.exponent_mask()) == f.exponent_mask() && (bits & f.mantissa_mask()) != 0)
            return bits;
        throw format_error("'" + std::string(s) + "' is not the bit pattern of a NaN of " +
                           std::to_string(f.total_bits()) + " bits");
    }
    bool ok = false, overflow = false;
    const double d = parse_decimal(s, ok);
    if (!ok)
        throw format_error("'" + std::string(s) + "' is not a number");
    const std::uint64_t bits = double_to_float_bits(d, f, overflow);
    if (overflow)
        throw format_error("'" + std::string(s) + "' is out of range for a " +
                           std::to_string(f.total_bits()) + "-bit float");
    return bits;
}

/// Writes one floating-point number (by its bits) to a text archive, exactly.
template <class Archive>
void save_text_float(Archive& ar, const char* name, std::uint64_t bits, float_layout f)
{
    std::string text = special_float_text(bits, f);
    if (!text.empty())
        named(ar, name, text);
    else if constexpr (is_json_archive_v<Archive>)
    {
        // A JSON number: the double nearest the shortest text, which rapidjson writes as the
        // shortest text of that double and reads back exactly (cereal parses at full precision).
        bool ok = false;
        named(ar, name, parse_decimal(finite_float_text(bits, f), ok));
    }
    else
        named(ar, name, finite_float_text(bits, f));
}

/// Reads one floating-point number written by save_text_float (a JSON number or string, XML
/// text) back to its bits.
template <class Archive>
std::uint64_t load_text_float(Archive& ar, const char* name, float_layout f)
{
    if constexpr (is_json_archive_v<Archive>)
    {
        // Numbers are the common case; a string there makes cereal throw before it moves on, so
        // the same member can then be read as a string.
        double d = 0;
        bool is_number = true;
        try
        {
            named(ar, name, d);
        }
        catch (const cereal::Exception&)
        {
            is_number = false;
        }
        if (is_number)
        {
            bool overflow = false;
            const std::uint64_t bits = double_to_float_bits(d, f, overflow);
            if (overflow)
                throw format_error(std::to_string(d) + " is out of range for a " +
                                   std::to_string(f.total_bits()) + "-bit float");
            return bits;
        }
    }
    std::string text;
    named(ar, name, text);
    return parse_float_text(text, f);
}

/// A double member: raw in binary archives, exact text in text archives.
template <class Archive>
void save_double(Archive& ar, const char* name, double d)
{
    if constexpr (is_text_archive_v<Archive>)
        save_text_float(ar, name, std::bit_cast<std::uint64_t>(d), float64_layout);
    else
        named(ar, name, d);
}

template <class Archive>
void load_double(Archive& ar, const char* name, double& d)
{
    if constexpr (is_text_archive_v<Archive>)
        d = std::bit_cast<double>(load_text_float(ar, name, float64_layout));
    else
        named(ar, name, d);
}

// ---- Tensor elements ------------------------------------------------------------------------

/// CRC-32 of a tensor's elements as little-endian bytes (its memory on every host ember runs
/// on; a big-endian host would checksum a byte-swapped copy).
inline std::uint32_t tensor_crc32(const host_tensor_view& t)
{
    static_assert(std::endian::native == std::endian::little,
                  "ember's tensor checksums assume a little-endian host");
    return crc32_of_block(t.bytes());
}

// Tensor elements as their own width, so a portable archive swaps bytes per element. Text
// archives write floating-point elements through save_text_float (version 1 wrote float16 and
// bfloat16 as their raw 16-bit patterns).
template <class Archive, class Bytes>
void tensor_elements(Archive& ar, dtype type, Bytes* bytes, std::size_t nbytes,
                     std::uint32_t version)
{
    constexpr bool loading = !std::is_const_v<Bytes>;
    auto as = [&](auto tag)
    {
        using U = decltype(tag);
        using P = std::conditional_t<loading, U*, const U*>;
        auto* p = reinterpret_cast<P>(bytes);
        if constexpr (is_text_archive_v<Archive>)
        {
            for (std::size_t i = 0; i < nbytes / sizeof(U); ++i)
                ar(const_cast<U&>(p[i]));
        }
        else
            ar(cereal::binary_data(const_cast<U*>(p), nbytes));
    };
    auto as_float = [&](auto tag, float_layout layout)
    {
        using U = decltype(tag);
        if constexpr (is_text_archive_v<Archive>)
        {
            const std::size_t n = nbytes / sizeof(U);
            for (std::size_t i = 0; i < n; ++i)
            {
                U* p = reinterpret_cast<U*>(const_cast<std::byte*>(bytes)) + i;
                if constexpr (loading)
                    *p = static_cast<U>(load_text_float(ar, nullptr, layout));
                else
                    save_text_float(ar, nullptr, *p, layout);
            }
        }
        else
            as(tag);
    };
    switch (type)
    {
    case dtype::float32:
        as_float(std::uint32_t{}, float32_layout);
        break;
    case dtype::float64:
        as_float(std::uint64_t{}, float64_layout);
        break;
    case dtype::int64:
        as(std::int64_t{});
        break;
    case dtype::int32:
        as(std::int32_t{});
        break;
    case dtype::int16:
        as(std::int16_t{});
        break;
    case dtype::int8:
        as(std::int8_t{});
        break;
    case dtype::uint8:
    case dtype::boolean:
        as(std::uint8_t{});
        break;
    case dtype::float16:
        if (version >= 2)
            as_float(std::uint16_t{}, float16_layout);
        else
            as(std::uint16_t{});
        break;
    case dtype::bfloat16:
        if (version >= 2)
            as_float(std::uint16_t{}, bfloat16_layout);
        else
            as(std::uint16_t{});
        break;
    }
}

} // namespace detail

/// Version 2: dtype, shape, data, then the CRC-32 of the data (`crc32`). A host_tensor and a
/// view of one write the same record.
template <class Archive>
void save(Archive& ar, const host_tensor_view& t, std::uint32_t version)
{
    detail::save_string(ar, "dtype", std::string(dtype_name(t.dtype())));
    detail::in_node(ar, "shape", [&] { detail::save_vector(ar, t.shape()); });
    detail::in_node(ar, "data",
                    [&]
                    {
                        if constexpr (detail::is_text_archive_v<Archive>)
                            ar(cereal::make_size_tag(static_cast<cereal::size_type>(t.numel())));
                        detail::tensor_elements(ar, t.dtype(), t.bytes().data(), t.nbytes(),
                                                version);
                    });
    if (version >= 2)
    {
        if constexpr (detail::is_text_archive_v<Archive>)
            ar(cereal::make_nvp("crc32", detail::hex_text(detail::tensor_crc32(t), 8)));
        else
            ar(cereal::make_nvp("crc32", detail::tensor_crc32(t)));
    }
}

template <class Archive>
void save(Archive& ar, const host_tensor& t, std::uint32_t version)
{
    save(ar, host_tensor_view(t), version);
}

namespace detail
{
/// What starts a tensor record: dtype and shape, with the element count they make (checked
/// for overflow) and how messages name the tensor.
struct tensor_head
{
    dtype type = dtype::float32;
    std::vector<std::int64_t> shape;
    std::size_t numel = 0;
    std::string what;
};

template <class Archive>
tensor_head load_tensor_head(Archive& ar)
{
    tensor_head head;
    std::string name;
    load_string(ar, "dtype", name, "tensor dtype");
    head.type = parse_dtype(name);
    in_node(ar, "shape",
            [&]
            {
                cereal::size_type rank = 0;
                ar(cereal::make_size_tag(rank));
                if (rank > max_tensor_rank)
                    throw format_error("tensor rank " + std::to_string(rank) + " exceeds " +
                                       std::to_string(max_tensor_rank));
                reserve_from_budget(rank, sizeof(std::int64_t), "tensor shape");
                head.shape.resize(static_cast<std::size_t>(rank));
                if constexpr (is_text_archive_v<Archive>)
                    for (auto& d : head.shape)
                        ar(d);
                else
                    ar(cereal::binary_data(head.shape.data(),
                                           head.shape.size() * sizeof(std::int64_t)));
            });
    try
    {
        head.numel = host_tensor::checked_numel(head.shape, dtype_size(head.type));
    }
    catch (const value_error& e)
    {
        throw format_error(e.what());
    }
    head.what = "tensor of shape " + shape_string(head.shape) + " (" + name + ")";
    return head;
}

/// The stored CRC-32 that ends a version-2 tensor record, checked against `actual`.
template <class Archive>
void check_tensor_crc(Archive& ar, std::uint32_t actual, const std::string& what)
{
    std::uint64_t stored = 0;
    if constexpr (is_text_archive_v<Archive>)
    {
        std::string text;
        ar(cereal::make_nvp("crc32", text));
        if (!parse_hex(text, stored) || stored > 0xffffffffu)
            throw format_error(what + ": checksum '" + text + "' is not 0x and 8 hex digits");
    }
    else
    {
        std::uint32_t crc = 0;
        ar(cereal::make_nvp("crc32", crc));
        stored = crc;
    }
    if (stored != actual)
        throw format_error(what + ": data checksum mismatch (stored " + hex_text(stored, 8) +
                           ", computed " + hex_text(actual, 8) + ")");
}

/// The bytes a binary archive is read from, when they are all in memory and stay there:
/// loading a host_tensor_view takes its data from here in place rather than copying it. Set
/// for the duration of a decode by in_place_scope (serialize/file.hpp's mapped loads); per
/// thread.
inline checksumming_source*& in_place_source() noexcept
{
    thread_local checksumming_source* source = nullptr;
    return source;
}

struct in_place_scope
{
    explicit in_place_scope(checksumming_source& s) noexcept { in_place_source() = &s; }
    ~in_place_scope() { in_place_source() = nullptr; }
    in_place_scope(const in_place_scope&) = delete;
    in_place_scope& operator=(const in_place_scope&) = delete;
};
} // namespace detail

/// A view's record is read in place: its data stays in the (mapped) payload it was read from,
/// checksummed there. Only binary archives over an in-place source can do that.
template <class Archive>
void load(Archive& ar, host_tensor_view& t, std::uint32_t version)
{
    static_assert(!detail::is_text_archive_v<Archive>,
                  "ember: host_tensor_view loads in place, from binary archives only");
    detail::check_version(version, 2, "tensor record");
    detail::checksumming_source* source = detail::in_place_source();
    if (!source)
        throw format_error("a tensor view is read only in place from an ember container "
                           "(ember::load(model, path))");
    detail::tensor_head head = detail::load_tensor_head(ar);
    const std::size_t nbytes = head.numel * dtype_size(head.type);
    if (nbytes > source->remaining())
        throw format_error(head.what + " needs " + std::to_string(nbytes) + " bytes, " +
                           std::to_string(source->remaining()) + " remain");
    host_tensor_view loaded(head.type, std::move(head.shape), source->take(nbytes));
    if (version >= 2)
        detail::check_tensor_crc(ar, detail::tensor_crc32(loaded), head.what);
    t = std::move(loaded);
}

template <class Archive>
void load(Archive& ar, host_tensor& t, std::uint32_t version)
{
    detail::check_version(version, 2, "tensor record");
    detail::tensor_head head = detail::load_tensor_head(ar);
    // Named references, not a structured binding: the lambda below captures them.
    const dtype type = head.type;
    const std::size_t numel = head.numel;
    const std::string& what = head.what;
    host_tensor loaded;
    detail::in_node(ar, "data",
                    [&]
                    {
                        if constexpr (detail::is_text_archive_v<Archive>)
                        {
                            cereal::size_type n = 0;
                            ar(cereal::make_size_tag(n));
                            if (n != numel)
                                throw format_error(what + " holds " + std::to_string(n) +
                                                   " elements, expected " + std::to_string(numel));
                            detail::reserve_from_budget(numel, 1, what);
                        }
                        else
                            detail::reserve_from_budget(numel, dtype_size(type), what);
                        // every byte is read next, or the tensor is thrown away
                        loaded = host_tensor::empty(type, std::move(head.shape));
                        detail::tensor_elements(ar, type, loaded.bytes().data(), loaded.nbytes(),
                                                version);
                    });
    if (version >= 2)
        detail::check_tensor_crc(ar, detail::tensor_crc32(loaded), what);
    t = std::move(loaded);
}

/// An ordered_dict is a list of (key, value) items, so its order survives every archive. In
/// text archives the list sits in an "items" member, beside cereal's version member.
template <class Archive, class V>
void save(Archive& ar, const ordered_dict<V>& d, std::uint32_t /*version*/)
{
    detail::in_node(ar, "items",
                    [&]
                    {
                        ar(cereal::make_size_tag(static_cast<cereal::size_type>(d.size())));
                        // Named references, not a structured binding: C++20 lets lambdas
                        // capture bindings, but clang before 16 refuses it.
                        for (const auto& item : d)
                        {
                            const auto& key = item.first;
                            const auto& value = item.second;
                            detail::in_node(ar, nullptr,
                                            [&]
                                            {
                                                detail::save_string(ar, "key", key);
                                                try
                                                {
                                                    ar(cereal::make_nvp("value", value));
                                                }
                                                catch (const value_error& e)
                                                {
                                                    throw value_error(
                                                        "key " + detail::quoted(key, '\'', 64) +
                                                        ": " + e.what());
                                                }
                                            });
                        }
                    });
}

template <class Archive, class V>
void load(Archive& ar, ordered_dict<V>& d, std::uint32_t version)
{
    detail::check_version(version, 1, "dictionary record");
    ordered_dict<V> loaded;
    detail::in_node(
        ar, "items",
        [&]
        {
            cereal::size_type n = 0;
            ar(cereal::make_size_tag(n));
            for (cereal::size_type i = 0; i < n; ++i)
            {
                std::string key;
                V value{};
                detail::in_node(
                    ar, nullptr,
                    [&]
                    {
                        detail::in_context("item " + std::to_string(i),
                                           [&] { detail::load_string(ar, "key", key, "key"); });
                        detail::in_context("key '" + key + "'",
                                           [&] { ar(cereal::make_nvp("value", value)); });
                    });
                if (loaded.contains(key))
                    throw format_error("duplicate key '" + key + "'");
                loaded.insert(std::move(key), std::move(value));
            }
        });
    d = std::move(loaded);
}

template <class Archive>
void serialize(Archive& ar, generator_state& s, std::uint32_t version)
{
    detail::check_version(version, 1, "generator state");
    ar(cereal::make_nvp("seed", s.seed));
    if constexpr (Archive::is_loading::value && detail::is_text_archive_v<Archive> &&
                  !detail::is_json_archive_v<Archive>)
    {
        // cereal's std::array load in XML asks for children that may not be there and then
        // dereferences a null node; count them first.
        detail::in_node(ar, "mt",
                        [&]
                        {
                            cereal::size_type n = 0;
                            ar(cereal::make_size_tag(n));
                            if (n != s.mt.size())
                                throw format_error("generator state 'mt' has " + std::to_string(n) +
                                                   " words, expected " +
                                                   std::to_string(s.mt.size()));
                            for (auto& word : s.mt)
                                ar(word);
                        });
    }
    else
        ar(cereal::make_nvp("mt", s.mt));
    ar(cereal::make_nvp("index", s.index));
    if constexpr (Archive::is_loading::value)
        detail::load_bool(ar, "has_next_normal", s.has_next_normal);
    else
        ar(cereal::make_nvp("has_next_normal", s.has_next_normal));
    ar(cereal::make_nvp("next_normal", s.next_normal));
    if (s.index > s.mt.size())
        throw format_error("generator state index " + std::to_string(s.index) +
                           " is past the end of its 624-word state");
}

} // namespace ember

namespace ember::optim
{

template <class Archive>
void save(Archive& ar, const param_group_state& g, std::uint32_t /*version*/)
{
    ar(cereal::make_nvp("options", g.options));
    ember::detail::in_node(ar, "params", [&] { ember::detail::save_vector(ar, g.params); });
}

template <class Archive>
void load(Archive& ar, param_group_state& g, std::uint32_t version)
{
    ember::detail::check_version(version, 1, "parameter group");
    ar(cereal::make_nvp("options", g.options));
    ember::detail::in_node(ar, "params",
                           [&] { ember::detail::load_vector(ar, g.params, "parameter group"); });
}

template <class Archive>
void save(Archive& ar, const optimizer_state& s, std::uint32_t /*version*/)
{
    ember::detail::in_node(
        ar, "state",
        [&]
        {
            ar(cereal::make_size_tag(static_cast<cereal::size_type>(s.state.size())));
            for (const auto& item : s.state) // not a binding: see save(ordered_dict)
            {
                const auto& index = item.first;
                const auto& entries = item.second;
                ember::detail::in_node(ar, nullptr,
                                       [&] {
                                           ar(cereal::make_nvp("index", index),
                                              cereal::make_nvp("entries", entries));
                                       });
            }
        });
    ember::detail::in_node(
        ar, "param_groups",
        [&]
        {
            ar(cereal::make_size_tag(static_cast<cereal::size_type>(s.param_groups.size())));
            for (const auto& g : s.param_groups)
                ar(g);
        });
}

template <class Archive>
void load(Archive& ar, optimizer_state& s, std::uint32_t version)
{
    ember::detail::check_version(version, 1, "optimizer state");
    optimizer_state loaded;
    ember::detail::in_node(ar, "state",
                           [&]
                           {
                               cereal::size_type n = 0;
                               ar(cereal::make_size_tag(n));
                               for (cereal::size_type i = 0; i < n; ++i)
                               {
                                   std::int64_t index = 0;
                                   ordered_dict<state_value> entries;
                                   ember::detail::in_node(
                                       ar, nullptr,
                                       [&]
                                       {
                                           ar(cereal::make_nvp("index", index));
                                           ember::detail::in_context(
                                               "state of parameter " + std::to_string(index),
                                               [&] { ar(cereal::make_nvp("entries", entries)); });
                                       });
                                   if (!loaded.state.emplace(index, std::move(entries)).second)
                                       throw format_error("optimizer state lists parameter " +
                                                          std::to_string(index) + " twice");
                               }
                           });
    ember::detail::in_node(ar, "param_groups",
                           [&]
                           {
                               cereal::size_type n = 0;
                               ar(cereal::make_size_tag(n));
                               ember::detail::reserve_from_budget(n, 1, "optimizer param_groups");
                               for (cereal::size_type i = 0; i < n; ++i)
                               {
                                   param_group_state g;
                                   ember::detail::in_context(
                                       "param_groups[" + std::to_string(i) + "]", [&] { ar(g); });
                                   loaded.param_groups.push_back(std::move(g));
                               }
                           });
    s = std::move(loaded);
}

} // namespace ember::optim

// state_value is a std::variant, so argument-dependent lookup searches namespace std, not
// ember::optim; cereal also looks in its own namespace, which is where these must live.
// (Do not include cereal/types/variant.hpp beside this header for the same archive: its
// generic std::variant functions would compete with these.)
namespace cereal
{

inline constexpr const char* ember_state_value_kinds[] = {"none",   "bool",   "int",   "float",
                                                          "floats", "tensor", "string"};

// Constrained to the exact type: an unconstrained `const state_value&` parameter would accept
// anything convertible to the variant (every integer) and make cereal's lookup ambiguous.
template <class Archive, std::same_as<ember::optim::state_value> V>
void save(Archive& ar, const V& v, std::uint32_t /*version*/)
{
    ar(cereal::make_nvp("kind", std::string(ember_state_value_kinds[v.index()])));
    std::visit(
        [&](const auto& x)
        {
            using X = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<X, std::monostate>)
                return;
            else if constexpr (std::is_same_v<X, double>)
                ember::detail::save_double(ar, "value", x);
            else if constexpr (std::is_same_v<X, std::string>)
                ember::detail::save_string(ar, "value", x); // a NUL refused in JSON and XML
            else if constexpr (std::is_same_v<X, std::vector<double>>)
            {
                ember::detail::in_node(
                    ar, "value",
                    [&]
                    {
                        if constexpr (ember::detail::is_text_archive_v<Archive>)
                        {
                            ar(cereal::make_size_tag(static_cast<cereal::size_type>(x.size())));
                            for (double d : x)
                                ember::detail::save_double(ar, nullptr, d);
                        }
                        else
                            ember::detail::save_vector(ar, x);
                    });
            }
            else
                ar(cereal::make_nvp("value", x));
        },
        v);
}

template <class Archive, std::same_as<ember::optim::state_value> V>
void load(Archive& ar, V& v, std::uint32_t version)
{
    ember::detail::check_version(version, 1, "optimizer value");
    std::string kind;
    ember::detail::load_string(ar, "kind", kind, "optimizer value kind");
    auto value = [&](auto x)
    {
        ar(cereal::make_nvp("value", x));
        v = std::move(x);
    };
    if (kind == "none")
        v = std::monostate{};
    else if (kind == "bool")
    {
        bool b = false;
        ember::detail::load_bool(ar, "value", b);
        v = b;
    }
    else if (kind == "int")
        value(std::int64_t{0});
    else if (kind == "float")
    {
        double d = 0;
        ember::detail::load_double(ar, "value", d);
        v = d;
    }
    else if (kind == "tensor")
        value(ember::host_tensor{});
    else if (kind == "string")
    {
        std::string s;
        ember::detail::load_string(ar, "value", s, "optimizer string value");
        v = std::move(s);
    }
    else if (kind == "floats")
    {
        std::vector<double> x;
        ember::detail::in_node(ar, "value",
                               [&]
                               {
                                   if constexpr (ember::detail::is_text_archive_v<Archive>)
                                   {
                                       cereal::size_type n = 0;
                                       ar(cereal::make_size_tag(n));
                                       ember::detail::reserve_from_budget(n, 1,
                                                                          "optimizer option list");
                                       x.resize(static_cast<std::size_t>(n));
                                       for (double& d : x)
                                           ember::detail::load_double(ar, nullptr, d);
                                   }
                                   else
                                       ember::detail::load_vector(ar, x, "optimizer option list");
                               });
        v = std::move(x);
    }
    else
        throw ember::format_error("unknown optimizer value kind '" + kind + "'");
}

} // namespace cereal

CEREAL_CLASS_VERSION(ember::host_tensor, 2);
CEREAL_CLASS_VERSION(ember::ordered_dict<ember::host_tensor>, 1);
// A view writes and reads the same records as the tensor it views.
CEREAL_CLASS_VERSION(ember::host_tensor_view, 2);
CEREAL_CLASS_VERSION(ember::ordered_dict<ember::host_tensor_view>, 1);
CEREAL_CLASS_VERSION(ember::ordered_dict<ember::optim::state_value>, 1);
CEREAL_CLASS_VERSION(ember::generator_state, 1);
CEREAL_CLASS_VERSION(ember::optim::state_value, 1);
CEREAL_CLASS_VERSION(ember::optim::param_group_state, 1);
CEREAL_CLASS_VERSION(ember::optim::optimizer_state, 1);

// ember::value and ember::checkpoint; each also includes this header first.
#include "ember/serialize/cereal_checkpoint.hpp"
#include "ember/serialize/cereal_value.hpp"
