#pragma once
/// @file
/// ember's version, as written into every file it saves.

#include <cstdint>
#include <string>

namespace ember
{

inline constexpr int version_major = 0;
inline constexpr int version_minor = 1;
inline constexpr int version_patch = 0;
inline constexpr const char* version = "0.1.0";
/// major·10000 + minor·100 + patch, as stored in file headers.
inline constexpr std::uint32_t version_number =
    version_major * 10000 + version_minor * 100 + version_patch;

/// @brief "1.2.3" from a version number as stored in file headers.
inline std::string version_string(std::uint32_t number)
{
    return std::to_string(number / 10000) + "." + std::to_string(number / 100 % 100) + "." +
           std::to_string(number % 100);
}

} // namespace ember
