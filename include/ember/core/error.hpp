#pragma once
/// @file
/// ember's exception hierarchy. Every error ember throws derives from ember::error, and its
/// message names the thing at fault (file, key, shape, offset) and what was expected.

#include <stdexcept>
#include <string>
#include <string_view>

namespace ember
{

/// @brief Base of every exception ember throws.
class error : public std::runtime_error
{
public:
    using std::runtime_error::runtime_error;
};

/// @brief A tensor had the wrong rank or shape for the operation.
class shape_error : public error
{
public:
    using error::error;
};

/// @brief A tensor had the wrong element type.
class dtype_error : public error
{
public:
    using error::error;
};

/// @brief A state_dict or mapping lacked a key, or had one it should not.
class key_error : public error
{
public:
    using error::error;
};

/// @brief An argument was out of its valid range (a negative learning rate, p outside [0, 1]).
class value_error : public error
{
public:
    using error::error;
};

/// @brief The operating system refused a file operation (missing file, permission, disk full).
class io_error : public error
{
public:
    using error::error;
};

/// @brief A file's bytes are not what its format promises (wrong magic, truncated, corrupt).
class format_error : public error
{
public:
    using error::error;
};

/// @brief A device failed or is missing (no GPU, no driver, a failed CUDA or cuBLAS call).
class device_error : public error
{
public:
    using error::error;
};

namespace detail
{
/// @brief "a float", "an int": a noun with its article, for messages naming a type or kind.
inline std::string a_or_an(std::string_view noun)
{
    const bool vowel =
        !noun.empty() && std::string_view("aeiouAEIOU").find(noun[0]) != std::string_view::npos;
    return (vowel ? "an " : "a ") + std::string(noun);
}

/// @brief `text` as an error message quotes it: between two `quote`s, a control byte as \xNN
/// (a NUL would cut the message short where it is printed as a C string), and past `shown`
/// bytes cut off with the text's length (a bad field of megabytes must not become the message).
/// With `ascii_only`, every byte past ASCII is \xNN too, for text that is not UTF-8.
inline std::string quoted(std::string_view text, char quote,
                          std::size_t shown = std::string_view::npos, bool ascii_only = false)
{
    constexpr char hex[] = "0123456789abcdef";
    std::string out(1, quote);
    for (const char c : text.substr(0, shown))
    {
        const auto u = static_cast<unsigned char>(c);
        if (u < 0x20 || u == 0x7f || (ascii_only && u > 0x7f))
            out += {'\\', 'x', hex[u >> 4], hex[u & 15]};
        else
            out += c;
    }
    out += quote;
    if (text.size() > shown)
        out += "... (" + std::to_string(text.size()) + " bytes)";
    return out;
}
} // namespace detail

} // namespace ember
