#pragma once
/// @file
/// randperm: a random permutation of 0..n-1 drawn exactly as PyTorch 1.13's CPU torch.randperm,
/// so that after the same seed ember and PyTorch shuffle, split and batch alike.

#include "ember/core/generator.hpp"

#include <cstddef>
#include <cstdint>
#include <limits>
#include <numeric>
#include <span>
#include <utility>
#include <vector>

namespace ember
{

/// @brief Fills `out` with a random permutation of 0..out.size()-1, as
/// `torch.randperm(n, generator=g)` does: for i in [0, n-1), swap out[i] with
/// out[i + random() % (n - i)]. From n = 2^32 / 20 on it shuffles as PyTorch 2 does, where
/// 1.13's 32-bit draws would be skewed: the "inside-out" Fisher-Yates, for i in [0, n) out[i]
/// takes out[z] and out[z] takes i, z = random64() % (i + 1); n draws of 64 bits. (1.13 goes
/// on with its 32-bit draws there, so the two differ from that n on.)
template <class I>
void randperm(std::span<I> out, generator& g = default_generator()) noexcept;

/// @brief A new permutation of 0..n-1 (torch.randperm).
inline std::vector<std::int64_t> randperm(std::size_t n, generator& g = default_generator());

/*******************
 * implementation  *
 *******************/

namespace detail
{
inline bool randperm_is_small(std::size_t n) noexcept
{
    return n < std::numeric_limits<std::uint32_t>::max() / 20;
}

// Draws what randperm(n, g) draws and throws the permutation away.
inline void discard_randperm(std::size_t n, generator& g) noexcept
{
    if (randperm_is_small(n))
        for (std::size_t i = 0; i + 1 < n; ++i)
            static_cast<void>(g.random());
    else
        for (std::size_t i = 0; i < n; ++i)
            static_cast<void>(g.random64());
}
} // namespace detail

template <class I>
void randperm(std::span<I> out, generator& g) noexcept
{
    const std::size_t n = out.size();
    if (detail::randperm_is_small(n))
    {
        std::iota(out.begin(), out.end(), I{0});
        for (std::size_t i = 0; i + 1 < n; ++i)
        {
            const std::size_t z = g.random() % (n - i);
            std::swap(out[i], out[i + z]);
        }
        return;
    }
    for (std::size_t i = 0; i < n; ++i)
    {
        const auto z = static_cast<std::size_t>(g.random64() % (i + 1));
        out[i] = z == i ? static_cast<I>(i) : out[z]; // out[i] is not written yet
        out[z] = static_cast<I>(i);
    }
}

inline std::vector<std::int64_t> randperm(std::size_t n, generator& g)
{
    std::vector<std::int64_t> p(n);
    randperm(std::span<std::int64_t>(p), g);
    return p;
}

} // namespace ember
