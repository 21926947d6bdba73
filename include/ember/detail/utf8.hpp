#pragma once
/// @file
/// UTF-8 decoding for the formats whose text must be UTF-8 (safetensors' JSON header, the
/// strings of PyTorch's pickles) and for printing a file's text escaped (the command line).

#include <cstddef>
#include <string_view>

namespace ember::detail
{

/// @brief The length of the UTF-8 sequence `s` starts with (`s` not empty), its code point in
/// `cp`; 0 if it is not one: a stray continuation byte, an overlong form, past U+10FFFF, cut
/// short, or a surrogate (U+D800..U+DFFF) unless `surrogates` (Python's "surrogatepass"
/// decoder, which pickles use, takes them).
inline std::size_t utf8_sequence(std::string_view s, char32_t& cp, bool surrogates = false) noexcept
{
    const auto lead = static_cast<unsigned char>(s[0]);
    std::size_t n = 0;
    unsigned char lo = 0x80, hi = 0xbf; // the second byte's range, narrower after some leads
    if (lead < 0x80)
        return cp = lead, 1;
    if (lead >= 0xc2 && lead <= 0xdf)
        n = 2, cp = lead & 0x1fu;
    else if (lead >= 0xe0 && lead <= 0xef)
        n = 3, cp = lead & 0x0fu, lo = lead == 0xe0 ? 0xa0 : 0x80,
        hi = lead == 0xed && !surrogates ? 0x9f : 0xbf;
    else if (lead >= 0xf0 && lead <= 0xf4)
        n = 4, cp = lead & 0x07u, lo = lead == 0xf0 ? 0x90 : 0x80, hi = lead == 0xf4 ? 0x8f : 0xbf;
    else
        return 0;
    if (s.size() < n)
        return 0;
    for (std::size_t i = 1; i < n; ++i)
    {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c < (i == 1 ? lo : 0x80) || c > (i == 1 ? hi : 0xbf))
            return 0;
        cp = cp << 6 | (c & 0x3fu);
    }
    return n;
}

/// @brief True if `s` is UTF-8 throughout (see utf8_sequence).
inline bool valid_utf8(std::string_view s, bool surrogates = false) noexcept
{
    char32_t cp = 0;
    for (std::size_t i = 0, n = 0; i < s.size(); i += n)
        if ((n = utf8_sequence(s.substr(i), cp, surrogates)) == 0)
            return false;
    return true;
}

} // namespace ember::detail
