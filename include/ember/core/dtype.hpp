#pragma once
/// @file
/// Element types that cross ember's boundaries (state_dicts, files), named as PyTorch names them.

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <type_traits>

namespace ember
{

/// @brief The element type of a host tensor, as PyTorch spells it (`torch.float32`, ...).
enum class dtype : std::uint8_t
{
    float32,
    float64,
    int64,
    int32,
    int16,
    int8,
    uint8,
    boolean,
    float16,
    bfloat16,
};

/// @brief `"float32"`, `"int64"`, ... (PyTorch's names without the `torch.` prefix).
constexpr std::string_view dtype_name(dtype d) noexcept
{
    switch (d)
    {
    case dtype::float32:
        return "float32";
    case dtype::float64:
        return "float64";
    case dtype::int64:
        return "int64";
    case dtype::int32:
        return "int32";
    case dtype::int16:
        return "int16";
    case dtype::int8:
        return "int8";
    case dtype::uint8:
        return "uint8";
    case dtype::boolean:
        return "bool";
    case dtype::float16:
        return "float16";
    case dtype::bfloat16:
        return "bfloat16";
    }
    return "unknown";
}

/// @brief Bytes per element.
constexpr std::size_t dtype_size(dtype d) noexcept
{
    switch (d)
    {
    case dtype::float64:
    case dtype::int64:
        return 8;
    case dtype::float32:
    case dtype::int32:
        return 4;
    case dtype::int16:
    case dtype::float16:
    case dtype::bfloat16:
        return 2;
    case dtype::int8:
    case dtype::uint8:
    case dtype::boolean:
        return 1;
    }
    return 0;
}

/// @brief The dtype of a C++ element type, for the types that have one.
template <class T>
constexpr dtype dtype_of() noexcept
{
    if constexpr (std::is_same_v<T, float>)
        return dtype::float32;
    else if constexpr (std::is_same_v<T, double>)
        return dtype::float64;
    else if constexpr (std::is_same_v<T, std::int64_t>)
        return dtype::int64;
    else if constexpr (std::is_same_v<T, std::int32_t>)
        return dtype::int32;
    else if constexpr (std::is_same_v<T, std::int16_t>)
        return dtype::int16;
    else if constexpr (std::is_same_v<T, std::int8_t>)
        return dtype::int8;
    else if constexpr (std::is_same_v<T, std::uint8_t>)
        return dtype::uint8;
    else if constexpr (std::is_same_v<T, bool>)
        return dtype::boolean;
    else
        static_assert(sizeof(T) == 0, "ember: this C++ type has no ember::dtype");
}

/// @brief True for the C++ types that map to a dtype.
template <class T>
concept has_dtype =
    std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, std::int64_t> ||
    std::is_same_v<T, std::int32_t> || std::is_same_v<T, std::int16_t> ||
    std::is_same_v<T, std::int8_t> || std::is_same_v<T, std::uint8_t> || std::is_same_v<T, bool>;

} // namespace ember
