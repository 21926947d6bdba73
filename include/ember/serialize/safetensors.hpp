#pragma once
/// @file
/// safetensors files (https://github.com/huggingface/safetensors), read and written per the
/// format's specification and in agreement with its reference implementation:
///
/// | bytes         | content                                                          |
/// |---------------|------------------------------------------------------------------|
/// | 8             | N, the header's length (unsigned little-endian)                   |
/// | N             | a UTF-8 JSON object: name → {"dtype", "shape", "data_offsets"},   |
/// |               | optionally "__metadata__": {str: str}; padded with spaces         |
/// | rest          | the tensors' bytes, row-major little-endian, back to back         |
///
/// Loading validates everything before it touches data: the header length (at most 100 MB, as
/// the reference caps it) against the file, strict JSON (no duplicate keys or fields, integers
/// where integers belong), known dtypes, shapes whose byte sizes do not overflow, and offsets
/// that tile the data section exactly — no gaps, no overlaps, nothing after the last tensor.
/// Unknown fields inside a tensor's entry are ignored, as the reference ignores them; a tensor
/// name given twice is refused (the reference silently keeps the last). Tensors of dtypes
/// ember has no type for (U16, U32, U64, F8_*, C64, ...) are refused by name. As in the
/// reference, whitespace may come before the header's `{`, `"__metadata__": null` is no
/// metadata, and values nest at most 128 deep. A BOOL tensor loads as its bytes, as the
/// reference's does; a byte other than 0 or 1 in it is refused where it would become a C++
/// bool (host_tensor::data<bool>(), a copy into a bool tensor). Names, metadata keys and
/// values that are not UTF-8 are refused by the writer (the header is JSON).
///
/// ```cpp
/// ember::safetensors::save(model.state_dict(), "model.safetensors");
/// auto sd = ember::safetensors::load<ember::state_dict>("model.safetensors"); // copies
/// ember::safetensors::safe_open f("model.safetensors");                         // maps
/// for (const auto& name : f.keys()) { auto v = f.get_view(name); /* v.bytes() in place */ }
/// ```
///
/// Writing follows the reference writer byte for byte: tensors ordered by dtype (widest
/// first: I64, F64, F32, I32, BF16, F16, I16, I8, U8, BOOL) then name, so every tensor is
/// aligned to its element size; compact JSON; the header padded with spaces to a multiple of
/// 8 bytes; "__metadata__" first and only when there is metadata. save() streams each
/// tensor into the file from where it lies; to_bytes() builds the same bytes in memory.

#include "ember/core/dtype.hpp"
#include "ember/core/error.hpp"
#include "ember/core/host_tensor.hpp"
#include "ember/core/ordered_dict.hpp"
#include "ember/core/state_dict.hpp"
#include "ember/detail/file_io.hpp"
#include "ember/detail/mapped_file.hpp"
#include "ember/detail/memory_stream.hpp"
#include "ember/detail/utf8.hpp"

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <vector>

namespace ember::safetensors
{

static_assert(std::endian::native == std::endian::little,
              "ember::safetensors: tensors are stored little-endian");

/// @brief The largest header accepted, as in the reference implementation.
inline constexpr std::uint64_t max_header_size = 100'000'000;

/// @brief "F32", "I64", "BOOL", ... for a dtype.
constexpr std::string_view dtype_code(ember::dtype d) noexcept;

/// @brief One tensor's entry in the header.
struct tensor_info
{
    std::string name;
    ember::dtype dtype = ember::dtype::float32;
    std::vector<std::int64_t> shape;
    std::uint64_t begin = 0; ///< data_offsets, relative to the data section
    std::uint64_t end = 0;
};

/// @brief A validated header.
struct header
{
    std::vector<tensor_info> tensors; ///< in file order (by data offset)
    ordered_dict<std::string> metadata;
    std::uint64_t data_start = 0; ///< 8 + the header's length
};

/// @brief Parses and validates the header of the safetensors file `bytes` (the whole file,
/// so sizes are checked against it). Throws format_error naming `what` and the fault.
header parse_header(std::span<const std::byte> bytes, std::string_view what = "safetensors");

/// @brief A tensor's bytes in place, with its name, dtype and shape. The bytes need not be
/// aligned for the element type when the file was not written aligned; copy before casting.
class tensor_view
{
public:
    tensor_view(const tensor_info& info, std::span<const std::byte> bytes)
        : m_info(&info), m_bytes(bytes)
    {
    }
    const std::string& name() const noexcept { return m_info->name; }
    ember::dtype dtype() const noexcept { return m_info->dtype; }
    const std::vector<std::int64_t>& shape() const noexcept { return m_info->shape; }
    std::span<const std::byte> bytes() const noexcept { return m_bytes; }
    /// @brief A copy as a host tensor.
    host_tensor to_host_tensor() const;

private:
    const tensor_info* m_info;
    std::span<const std::byte> m_bytes;
};

/// @brief Validated views over safetensors bytes the caller keeps alive.
class reader
{
public:
    explicit reader(std::span<const std::byte> bytes, std::string what = "<memory>");

    std::size_t size() const noexcept { return m_header.tensors.size(); }
    /// @brief Names in file order.
    std::vector<std::string> keys() const;
    bool contains(std::string_view name) const { return m_index.contains(std::string(name)); }
    /// @brief The tensor `name` in place; throws key_error naming it if absent.
    tensor_view get_view(std::string_view name) const;
    /// @brief The i-th tensor in file order.
    tensor_view view_at(std::size_t i) const;
    /// @brief A copy of the tensor `name`.
    host_tensor get_tensor(std::string_view name) const { return get_view(name).to_host_tensor(); }
    const ordered_dict<std::string>& metadata() const noexcept { return m_header.metadata; }
    const header& info() const noexcept { return m_header; }
    /// @brief Every tensor, copied, in file order.
    state_dict to_state_dict() const;
    /// @brief Every tensor where it lies in the bytes, in file order (no copy).
    state_dict_view to_state_dict_view() const;

private:
    std::span<const std::byte> m_bytes;
    std::string m_what;
    header m_header;
    std::unordered_map<std::string, std::size_t> m_index;
};

/// @brief A safetensors file mapped into memory (like Python's `safe_open`): tensors are read
/// in place, nothing is copied until get_tensor().
class safe_open : private reader
{
public:
    explicit safe_open(const std::filesystem::path& path)
        : safe_open(ember::detail::mapped_file(path), path.string())
    {
    }

    using reader::contains;
    using reader::info;
    using reader::keys;
    using reader::metadata;
    using reader::size;

    /// @brief The tensor `name` where it lies in the mapped file; key_error if absent. Its
    /// bytes are read when used: if another program may cut the file short meanwhile, call
    /// check_intact() after reading them (get_tensor and to_state_dict do).
    tensor_view get_view(std::string_view name) const { return reader::get_view(name); }
    /// @brief The i-th tensor in file order, in place (see get_view).
    tensor_view view_at(std::size_t i) const { return reader::view_at(i); }

    /// @brief The tensor `name`, copied; io_error if part of the file could not be read since
    /// it was opened (another program cut it short: detail/mapped_file.hpp).
    host_tensor get_tensor(std::string_view name) const
    {
        return m_file.decode_checked(m_path, [&] { return reader::get_tensor(name); });
    }

    /// @brief Every tensor, copied; the same check as get_tensor().
    state_dict to_state_dict() const
    {
        return m_file.decode_checked(m_path, [&] { return reader::to_state_dict(); });
    }

    /// @brief io_error naming the file if part of it could not be read since it was opened
    /// (read as zeros instead: what was read from it since is not the file).
    void check_intact() const { m_file.check_intact(m_path); }

private:
    // The header is parsed from the mapping too: a page lost meanwhile is reported as such.
    safe_open(ember::detail::mapped_file&& file, std::string path)
        : reader(file.decode_checked(
              path, [&] { return reader(file.bytes(), ember::detail::quoted_name(path)); })),
          m_file(std::move(file)), m_path(std::move(path))
    {
    }
    ember::detail::mapped_file m_file; // mapping moved in; the bytes' address does not change
    std::string m_path;
};

/// @brief Every tensor of the file at `path`, copied (T must be state_dict).
template <class T = state_dict>
T load(const std::filesystem::path& path);

/// @brief Parses safetensors bytes into a state_dict (a copy).
state_dict from_bytes(std::span<const std::byte> bytes, std::string_view what = "<memory>");

/// @brief The file's bytes, as the reference writer lays them out.
std::vector<std::byte> to_bytes(const state_dict& tensors,
                                const ordered_dict<std::string>& metadata = {});

/// @brief Writes a safetensors file crash-safely, each tensor from where it lies (no copy of
/// the file in memory). Throws value_error for a name the format reserves ("__metadata__") and
/// io_error if the file cannot be written.
void save(const state_dict& tensors, const std::filesystem::path& path,
          const ordered_dict<std::string>& metadata = {});
/// @brief As above, for tensors that stay where they are (a module's parameters).
void save(const state_dict_view& tensors, const std::filesystem::path& path,
          const ordered_dict<std::string>& metadata = {});

/*******************
 * implementation  *
 *******************/

constexpr std::string_view dtype_code(ember::dtype d) noexcept
{
    switch (d)
    {
    case ember::dtype::float32:
        return "F32";
    case ember::dtype::float64:
        return "F64";
    case ember::dtype::float16:
        return "F16";
    case ember::dtype::bfloat16:
        return "BF16";
    case ember::dtype::int64:
        return "I64";
    case ember::dtype::int32:
        return "I32";
    case ember::dtype::int16:
        return "I16";
    case ember::dtype::int8:
        return "I8";
    case ember::dtype::uint8:
        return "U8";
    case ember::dtype::boolean:
        return "BOOL";
    }
    return "";
}

namespace detail
{

/// The reference writer's order: its Dtype enum, widest (by declaration order) first.
constexpr int dtype_rank(ember::dtype d) noexcept
{
    switch (d)
    {
    case ember::dtype::boolean:
        return 0;
    case ember::dtype::uint8:
        return 1;
    case ember::dtype::int8:
        return 2;
    case ember::dtype::int16:
        return 3;
    case ember::dtype::float16:
        return 4;
    case ember::dtype::bfloat16:
        return 5;
    case ember::dtype::int32:
        return 6;
    case ember::dtype::float32:
        return 7;
    case ember::dtype::float64:
        return 8;
    case ember::dtype::int64:
        return 9;
    }
    return -1;
}

/// A strict RFC 8259 reader over the header, with only what the format needs: objects,
/// strings, non-negative integers, and skipping any other value.
class json_cursor
{
public:
    json_cursor(std::string_view text, std::string_view what) : m_text(text), m_what(what) {}

    [[noreturn]] void fail(const std::string& message) const
    {
        throw format_error(std::string(m_what) + ": header JSON: " + message + " at byte " +
                           std::to_string(m_pos + 8));
    }

    void skip_ws() noexcept
    {
        while (m_pos < m_text.size() && (m_text[m_pos] == ' ' || m_text[m_pos] == '\t' ||
                                         m_text[m_pos] == '\n' || m_text[m_pos] == '\r'))
            ++m_pos;
    }
    char peek()
    {
        skip_ws();
        if (m_pos >= m_text.size())
            fail("unexpected end");
        return m_text[m_pos];
    }
    void expect(char c)
    {
        if (peek() != c)
            fail(std::string("expected '") + c + "'");
        ++m_pos;
    }
    /// True (and consumes it) if the next token is the literal null.
    bool consume_null()
    {
        skip_ws();
        if (m_text.substr(m_pos, 4) != "null")
            return false;
        m_pos += 4;
        return true;
    }
    bool at_end()
    {
        skip_ws();
        return m_pos >= m_text.size();
    }
    /// After '{' or '[': true (and consumes it) if the next token is `close`.
    bool consume(char c)
    {
        if (peek() == c)
        {
            ++m_pos;
            return true;
        }
        return false;
    }

    std::string string();
    std::uint64_t unsigned_integer();
    void skip_value(std::size_t depth = 0);

private:
    unsigned hex4();
    static void put_utf8(std::string& out, std::uint32_t cp);

    std::string_view m_text;
    std::string_view m_what;
    std::size_t m_pos = 0;
};

inline unsigned json_cursor::hex4()
{
    if (m_text.size() - m_pos < 4)
        fail("truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; ++i)
    {
        const char c = m_text[m_pos++];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= static_cast<unsigned>(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= static_cast<unsigned>(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= static_cast<unsigned>(c - 'A' + 10);
        else
            fail("invalid \\u escape");
    }
    return v;
}

inline void json_cursor::put_utf8(std::string& out, std::uint32_t cp)
{
    if (cp < 0x80)
        out += static_cast<char>(cp);
    else if (cp < 0x800)
    {
        out += static_cast<char>(0xc0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3f));
    }
    else if (cp < 0x10000)
    {
        out += static_cast<char>(0xe0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
        out += static_cast<char>(0x80 | (cp & 0x3f));
    }
    else
    {
        out += static_cast<char>(0xf0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
        out += static_cast<char>(0x80 | (cp & 0x3f));
    }
}

inline std::string json_cursor::string()
{
    expect('"');
    std::string out;
    while (true)
    {
        if (m_pos >= m_text.size())
            fail("unterminated string");
        const char c = m_text[m_pos++];
        if (c == '"')
            return out;
        if (static_cast<unsigned char>(c) < 0x20)
            fail("control character in string");
        if (c != '\\')
        {
            out += c; // UTF-8 validity of the whole header was checked up front
            continue;
        }
        if (m_pos >= m_text.size())
            fail("unterminated escape");
        switch (m_text[m_pos++])
        {
        case '"':
            out += '"';
            break;
        case '\\':
            out += '\\';
            break;
        case '/':
            out += '/';
            break;
        case 'b':
            out += '\b';
            break;
        case 'f':
            out += '\f';
            break;
        case 'n':
            out += '\n';
            break;
        case 'r':
            out += '\r';
            break;
        case 't':
            out += '\t';
            break;
        case 'u':
        {
            std::uint32_t cp = hex4();
            if (cp >= 0xdc00 && cp <= 0xdfff)
                fail("lone trailing surrogate in \\u escape");
            if (cp >= 0xd800 && cp <= 0xdbff)
            {
                if (m_text.size() - m_pos < 2 || m_text[m_pos] != '\\' || m_text[m_pos + 1] != 'u')
                    fail("lone leading surrogate in \\u escape");
                m_pos += 2;
                const unsigned low = hex4();
                if (low < 0xdc00 || low > 0xdfff)
                    fail("invalid surrogate pair in \\u escape");
                cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
            }
            put_utf8(out, cp);
            break;
        }
        default:
            fail("invalid escape");
        }
    }
}

inline std::uint64_t json_cursor::unsigned_integer()
{
    const char first = peek();
    if (first == '-')
        fail("negative number where a size or offset belongs");
    if (first < '0' || first > '9')
        fail("expected an unsigned integer");
    std::uint64_t v = 0;
    const std::size_t start = m_pos;
    while (m_pos < m_text.size() && m_text[m_pos] >= '0' && m_text[m_pos] <= '9')
    {
        const auto d = static_cast<std::uint64_t>(m_text[m_pos] - '0');
        if (v > (UINT64_MAX - d) / 10)
            fail("integer too large");
        v = v * 10 + d;
        ++m_pos;
    }
    if (m_text[start] == '0' && m_pos - start > 1)
        fail("number with a leading zero");
    if (m_pos < m_text.size() &&
        (m_text[m_pos] == '.' || m_text[m_pos] == 'e' || m_text[m_pos] == 'E'))
        fail("fractional number where an integer belongs");
    return v;
}

inline void json_cursor::skip_value(std::size_t depth)
{
    if (depth > 128) // serde_json's recursion limit, which the reference keeps
        fail("values nested deeper than 128");
    const char c = peek();
    if (c == '"')
    {
        (void)string();
        return;
    }
    if (c == '{')
    {
        ++m_pos;
        if (consume('}'))
            return;
        do
        {
            (void)string();
            expect(':');
            skip_value(depth + 1);
        } while (consume(','));
        expect('}');
        return;
    }
    if (c == '[')
    {
        ++m_pos;
        if (consume(']'))
            return;
        do
            skip_value(depth + 1);
        while (consume(','));
        expect(']');
        return;
    }
    for (std::string_view word : {"true", "false", "null"})
        if (m_text.substr(m_pos, word.size()) == word)
        {
            m_pos += word.size();
            return;
        }
    // A number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
    auto digits = [&]
    {
        const std::size_t s = m_pos;
        while (m_pos < m_text.size() && m_text[m_pos] >= '0' && m_text[m_pos] <= '9')
            ++m_pos;
        if (m_pos == s)
            fail("invalid value");
        return m_pos - s;
    };
    if (m_text[m_pos] == '-')
        ++m_pos;
    const std::size_t int_start = m_pos;
    if (digits() > 1 && m_text[int_start] == '0')
        fail("number with a leading zero");
    if (m_pos < m_text.size() && m_text[m_pos] == '.')
    {
        ++m_pos;
        digits();
    }
    if (m_pos < m_text.size() && (m_text[m_pos] == 'e' || m_text[m_pos] == 'E'))
    {
        ++m_pos;
        if (m_pos < m_text.size() && (m_text[m_pos] == '+' || m_text[m_pos] == '-'))
            ++m_pos;
        digits();
    }
}

/// A tensor's name or a metadata key as messages quote it: control bytes escaped (an escaped
/// NUL in the JSON would cut the message short), at most 64 bytes of a name of megabytes.
inline std::string quoted_key(std::string_view key)
{
    return ember::detail::quoted(key, '\'', 64);
}

inline std::optional<ember::dtype> parse_dtype_code(std::string_view code)
{
    for (auto d :
         {ember::dtype::float32, ember::dtype::float64, ember::dtype::float16,
          ember::dtype::bfloat16, ember::dtype::int64, ember::dtype::int32, ember::dtype::int16,
          ember::dtype::int8, ember::dtype::uint8, ember::dtype::boolean})
        if (dtype_code(d) == code)
            return d;
    return std::nullopt;
}

/// JSON string literal as serde_json writes it.
inline void append_json_string(std::string& out, std::string_view s)
{
    out += '"';
    for (char c : s)
    {
        switch (c)
        {
        case '"':
            out += "\\\"";
            break;
        case '\\':
            out += "\\\\";
            break;
        case '\n':
            out += "\\n";
            break;
        case '\r':
            out += "\\r";
            break;
        case '\t':
            out += "\\t";
            break;
        case '\b':
            out += "\\b";
            break;
        case '\f':
            out += "\\f";
            break;
        default:
            if (static_cast<unsigned char>(c) < 0x20)
            {
                char buf[8];
                std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
                out += buf;
            }
            else
                out += c;
        }
    }
    out += '"';
}

} // namespace detail

inline header parse_header(std::span<const std::byte> bytes, std::string_view what)
{
    auto fail = [&](const std::string& message)
    { throw format_error(std::string(what) + ": " + message); };
    if (bytes.size() < 8)
        fail("file of " + std::to_string(bytes.size()) +
             " bytes is shorter than the 8-byte header length");
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i)
        n = (n << 8) | static_cast<std::uint64_t>(bytes[static_cast<std::size_t>(i)]);
    if (n > max_header_size)
        fail("header length " + std::to_string(n) + " exceeds the limit of " +
             std::to_string(max_header_size) + " bytes");
    if (n > bytes.size() - 8)
        fail("header of " + std::to_string(n) + " bytes runs past the end of the " +
             std::to_string(bytes.size()) + "-byte file");
    const std::string_view text(reinterpret_cast<const char*>(bytes.data()) + 8,
                                static_cast<std::size_t>(n));
    // JSON's whitespace may come first: the reference's check for a leading '{' is not on.
    const auto start = text.find_first_not_of(" \t\n\r");
    if (start == std::string_view::npos || text[start] != '{')
        fail("header does not start with '{'");
    if (!ember::detail::valid_utf8(text))
        fail("header is not valid UTF-8");

    header h;
    h.data_start = 8 + n;
    detail::json_cursor json(text, what);
    std::unordered_map<std::string, std::size_t> seen;
    bool seen_metadata = false;
    json.expect('{');
    if (!json.consume('}'))
    {
        do
        {
            std::string key = json.string();
            json.expect(':');
            if (key == "__metadata__")
            {
                if (seen_metadata)
                    json.fail("duplicate key '__metadata__'");
                seen_metadata = true;
                if (json.consume_null()) // the reference's metadata is optional: null is none
                    continue;
                json.expect('{');
                if (!json.consume('}'))
                {
                    do
                    {
                        std::string mk = json.string();
                        json.expect(':');
                        if (json.peek() != '"')
                            json.fail("__metadata__ value of " + detail::quoted_key(mk) +
                                      " is not a string");
                        std::string mv = json.string();
                        if (h.metadata.contains(mk))
                            json.fail("duplicate __metadata__ key " + detail::quoted_key(mk));
                        h.metadata.insert(std::move(mk), std::move(mv));
                    } while (json.consume(','));
                    json.expect('}');
                }
                continue;
            }
            if (seen.contains(key))
                json.fail("duplicate tensor name " + detail::quoted_key(key));
            tensor_info info;
            info.name = key;
            bool has_dtype = false, has_shape = false, has_offsets = false;
            json.expect('{');
            if (!json.consume('}'))
            {
                do
                {
                    const std::string field = json.string();
                    json.expect(':');
                    auto once = [&](bool& flag)
                    {
                        if (flag)
                            json.fail("tensor " + detail::quoted_key(key) + " has the field " +
                                      detail::quoted_key(field) + " twice");
                        flag = true;
                    };
                    if (field == "dtype")
                    {
                        once(has_dtype);
                        const std::string code = json.string();
                        auto d = detail::parse_dtype_code(code);
                        if (!d)
                            fail("tensor " + detail::quoted_key(key) + " has dtype " +
                                 detail::quoted_key(code) +
                                 ", which ember does not support (it reads F64, F32, F16, "
                                 "BF16, I64, I32, I16, I8, U8, BOOL)");
                        info.dtype = *d;
                    }
                    else if (field == "shape")
                    {
                        once(has_shape);
                        json.expect('[');
                        if (!json.consume(']'))
                        {
                            do
                            {
                                const auto d = json.unsigned_integer();
                                if (d > static_cast<std::uint64_t>(INT64_MAX))
                                    json.fail("tensor " + detail::quoted_key(key) +
                                              " has an extent too large");
                                info.shape.push_back(static_cast<std::int64_t>(d));
                            } while (json.consume(','));
                            json.expect(']');
                        }
                    }
                    else if (field == "data_offsets")
                    {
                        once(has_offsets);
                        json.expect('[');
                        info.begin = json.unsigned_integer();
                        json.expect(',');
                        info.end = json.unsigned_integer();
                        json.expect(']');
                    }
                    else
                        json.skip_value(); // the reference ignores unknown fields too
                } while (json.consume(','));
                json.expect('}');
            }
            if (!has_dtype || !has_shape || !has_offsets)
                fail("tensor " + detail::quoted_key(key) + " lacks '" +
                     (!has_dtype   ? "dtype"
                      : !has_shape ? "shape"
                                   : "data_offsets") +
                     "'");
            seen.emplace(std::move(key), h.tensors.size());
            h.tensors.push_back(std::move(info));
        } while (json.consume(','));
        json.expect('}');
    }
    if (!json.at_end())
        json.fail("trailing characters after the header object");

    // The tensors, by offset, must tile the data section exactly.
    std::stable_sort(h.tensors.begin(), h.tensors.end(),
                     [](const tensor_info& a, const tensor_info& b)
                     { return a.begin != b.begin ? a.begin < b.begin : a.end < b.end; });
    std::uint64_t expected = 0;
    for (const auto& t : h.tensors)
    {
        if (t.begin != expected || t.end < t.begin)
            fail("tensor " + detail::quoted_key(t.name) + " has data_offsets [" +
                 std::to_string(t.begin) + ", " + std::to_string(t.end) +
                 "], expected to start at " + std::to_string(expected) +
                 (t.begin < expected ? " (overlap)"
                  : t.end < t.begin  ? " (reversed)"
                                     : " (gap)"));
        std::size_t numel = 0;
        try
        {
            numel = host_tensor::checked_numel(t.shape, dtype_size(t.dtype));
        }
        catch (const value_error&)
        {
            fail("tensor " + detail::quoted_key(t.name) + " of shape " + shape_string(t.shape) +
                 " is too large");
        }
        const std::uint64_t nbytes = std::uint64_t{numel} * dtype_size(t.dtype);
        if (t.end - t.begin != nbytes)
            fail("tensor " + detail::quoted_key(t.name) + " of dtype " +
                 std::string(dtype_code(t.dtype)) + " and shape " + shape_string(t.shape) +
                 " needs " + std::to_string(nbytes) + " bytes, its data_offsets give " +
                 std::to_string(t.end - t.begin));
        expected = t.end;
    }
    const std::uint64_t data_size = bytes.size() - h.data_start;
    if (expected != data_size)
        fail("the tensors cover " + std::to_string(expected) + " bytes of data, the file has " +
             std::to_string(data_size) +
             (expected < data_size ? " (trailing bytes)" : " (truncated)"));
    return h;
}

inline host_tensor tensor_view::to_host_tensor() const
{
    host_tensor t = host_tensor::empty(m_info->dtype, m_info->shape);
    ember::detail::stream_copy(t.bytes().data(), m_bytes.data(), m_bytes.size());
    return t;
}

inline reader::reader(std::span<const std::byte> bytes, std::string what)
    : m_bytes(bytes), m_what(std::move(what)), m_header(parse_header(bytes, m_what))
{
    for (std::size_t i = 0; i < m_header.tensors.size(); ++i)
        m_index.emplace(m_header.tensors[i].name, i);
}

inline std::vector<std::string> reader::keys() const
{
    std::vector<std::string> out;
    out.reserve(m_header.tensors.size());
    for (const auto& t : m_header.tensors)
        out.push_back(t.name);
    return out;
}

inline tensor_view reader::view_at(std::size_t i) const
{
    const tensor_info& t = m_header.tensors.at(i);
    return tensor_view(t, m_bytes.subspan(static_cast<std::size_t>(m_header.data_start + t.begin),
                                          static_cast<std::size_t>(t.end - t.begin)));
}

inline tensor_view reader::get_view(std::string_view name) const
{
    auto it = m_index.find(std::string(name));
    if (it == m_index.end())
        throw key_error(m_what + ": no tensor " + detail::quoted_key(name));
    return view_at(it->second);
}

inline state_dict reader::to_state_dict() const
{
    state_dict sd;
    for (std::size_t i = 0; i < size(); ++i)
    {
        tensor_view v = view_at(i);
        sd.insert(v.name(), v.to_host_tensor());
    }
    return sd;
}

inline state_dict_view reader::to_state_dict_view() const
{
    state_dict_view views;
    for (std::size_t i = 0; i < size(); ++i)
    {
        const tensor_view v = view_at(i);
        views.insert(v.name(), host_tensor_view(v.dtype(), v.shape(), v.bytes()));
    }
    return views;
}

inline state_dict from_bytes(std::span<const std::byte> bytes, std::string_view what)
{
    return reader(bytes, std::string(what)).to_state_dict();
}

template <class T>
T load(const std::filesystem::path& path)
{
    static_assert(std::is_same_v<T, state_dict>,
                  "ember::safetensors::load<T>: a safetensors file holds only named tensors, so "
                  "T must be ember::state_dict");
    return safe_open(path).to_state_dict();
}

namespace detail
{
/// A file's layout before its tensors: the 8-byte header size and the JSON header, and the
/// tensors' bytes in the order the reference writer stores them (by dtype, then name).
struct encoded_layout
{
    std::vector<std::byte> header;
    std::vector<std::span<const std::byte>> data;
    std::size_t size = 0; ///< the whole file's
};

template <class Tensor>
encoded_layout encode_layout(const ordered_dict<Tensor>& tensors,
                             const ordered_dict<std::string>& metadata)
{
    // The header is JSON, whose text is UTF-8: a name of other bytes would make a file that
    // loads nowhere, so it is refused before anything is written.
    auto check_text = [](std::string_view text, const char* what)
    {
        if (!ember::detail::valid_utf8(text))
            throw value_error(std::string("safetensors: the ") + what + " " +
                              ember::detail::quoted(text, '\'', 64, true) +
                              " is not valid UTF-8, which the format's JSON header must be");
    };
    for (const auto& [k, v] : metadata)
    {
        check_text(k, "metadata key");
        check_text(v, "metadata value");
    }
    std::vector<const std::pair<std::string, Tensor>*> order;
    order.reserve(tensors.size());
    for (const auto& kv : tensors)
    {
        if (kv.first == "__metadata__")
            throw value_error("safetensors: the tensor name '__metadata__' is reserved");
        check_text(kv.first, "tensor name");
        order.push_back(&kv);
    }
    std::stable_sort(order.begin(), order.end(),
                     [](const auto* a, const auto* b)
                     {
                         const int ra = dtype_rank(a->second.dtype());
                         const int rb = dtype_rank(b->second.dtype());
                         return ra != rb ? ra > rb : a->first < b->first;
                     });

    std::string json = "{";
    bool first = true;
    if (!metadata.empty())
    {
        json += "\"__metadata__\":{";
        for (const auto& [k, v] : metadata)
        {
            if (!first)
                json += ',';
            first = false;
            append_json_string(json, k);
            json += ':';
            append_json_string(json, v);
        }
        json += '}';
        first = false;
    }
    encoded_layout layout;
    layout.data.reserve(order.size());
    std::uint64_t offset = 0;
    for (const auto* kv : order)
    {
        const Tensor& t = kv->second;
        if (!first)
            json += ',';
        first = false;
        append_json_string(json, kv->first);
        json += ":{\"dtype\":\"";
        json += dtype_code(t.dtype());
        json += "\",\"shape\":[";
        for (std::size_t i = 0; i < t.shape().size(); ++i)
        {
            if (i)
                json += ',';
            json += std::to_string(t.shape()[i]);
        }
        json += "],\"data_offsets\":[" + std::to_string(offset) + ",";
        offset += t.nbytes();
        json += std::to_string(offset) + "]}";
        layout.data.push_back(t.bytes());
    }
    json += '}';
    json.append((8 - json.size() % 8) % 8, ' ');
    if (json.size() > max_header_size)
        throw value_error("safetensors: header of " + std::to_string(json.size()) +
                          " bytes exceeds the format's limit of " +
                          std::to_string(max_header_size));

    const std::uint64_t n = json.size();
    layout.header.reserve(8 + json.size());
    for (int i = 0; i < 8; ++i)
        layout.header.push_back(static_cast<std::byte>((n >> (8 * i)) & 0xffu));
    for (char c : json)
        layout.header.push_back(static_cast<std::byte>(c));
    layout.size = layout.header.size() + static_cast<std::size_t>(offset);
    return layout;
}

template <class Tensor>
void save_streamed(const ordered_dict<Tensor>& tensors, const std::filesystem::path& path,
                   const ordered_dict<std::string>& metadata)
{
    const encoded_layout layout = encode_layout(tensors, metadata);
    ember::detail::atomic_write_with(path, layout.size,
                                     [&](ember::detail::atomic_file_writer& file)
                                     {
                                         file.write(layout.header);
                                         for (const auto bytes : layout.data)
                                             ember::detail::write_in_pieces(file, bytes);
                                     });
}
} // namespace detail

inline std::vector<std::byte> to_bytes(const state_dict& tensors,
                                       const ordered_dict<std::string>& metadata)
{
    const detail::encoded_layout layout = detail::encode_layout(tensors, metadata);
    std::vector<std::byte> out;
    out.reserve(layout.size);
    out.insert(out.end(), layout.header.begin(), layout.header.end());
    for (const auto bytes : layout.data)
        out.insert(out.end(), bytes.begin(), bytes.end());
    return out;
}

inline void save(const state_dict& tensors, const std::filesystem::path& path,
                 const ordered_dict<std::string>& metadata)
{
    detail::save_streamed(tensors, path, metadata);
}

inline void save(const state_dict_view& tensors, const std::filesystem::path& path,
                 const ordered_dict<std::string>& metadata)
{
    detail::save_streamed(tensors, path, metadata);
}

} // namespace ember::safetensors
