#pragma once
/// @file
/// valid_utf8: whether bytes are UTF-8, for the formats whose text must be (safetensors' JSON
/// header, the strings of PyTorch's pickles).

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace ember::detail
{

/// @brief True if `s` is UTF-8: no overlong form, nothing past U+10FFFF, and no surrogate
/// (U+D800..U+DFFF) unless `surrogates` (Python's "surrogatepass" decoder, which pickles use,
/// takes them).
inline bool valid_utf8(std::string_view s, bool surrogates = false) noexcept
{
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const std::size_t n = s.size();
    for (std::size_t i = 0; i < n;)
    {
        const unsigned char c = p[i];
        if (c < 0x80)
        {
            ++i;
            continue;
        }
        std::size_t len = 0;
        std::uint32_t cp = 0;
        if ((c & 0xe0) == 0xc0)
            len = 2, cp = c & 0x1f;
        else if ((c & 0xf0) == 0xe0)
            len = 3, cp = c & 0x0f;
        else if ((c & 0xf8) == 0xf0)
            len = 4, cp = c & 0x07;
        else
            return false;
        if (n - i < len)
            return false;
        for (std::size_t k = 1; k < len; ++k)
        {
            if ((p[i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (p[i + k] & 0x3f);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            cp > 0x10ffff || (!surrogates && cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += len;
    }
    return true;
}

} // namespace ember::detail
