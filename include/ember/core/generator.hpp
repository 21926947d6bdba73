#pragma once
/// @file
/// A seedable random generator whose draws repeat bit for bit on every platform and standard
/// library, and equal PyTorch's CPU generator: after `ember::manual_seed(42)`,
/// `ember::randn<float>({1})` is 0.33669037 exactly as `torch.randn(1)` is. It is a Mersenne
/// Twister (mt19937) with PyTorch's own uniform and Box-Muller normal transforms, written here
/// rather than taken from <random>, whose distributions differ between standard libraries.

#include "ember/core/tensor.hpp"
#include "ember/detail/precompiled.hpp"

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numbers>

namespace ember
{

/// @brief Everything a generator needs to continue exactly where it was (saved in checkpoints).
struct generator_state
{
    std::uint64_t seed = 0;
    std::array<std::uint32_t, 624> mt{};
    std::uint32_t index = 624;
    bool has_next_normal = false;
    double next_normal = 0.0;

    friend bool operator==(const generator_state&, const generator_state&) = default;
};

/// @brief PyTorch-compatible CPU random generator (mt19937 engine, PyTorch's transforms).
class generator
{
public:
    /// PyTorch's default seed for a generator nobody seeded.
    static constexpr std::uint64_t default_seed = 67280421310721ULL;

    explicit generator(std::uint64_t seed = default_seed) { manual_seed(seed); }

    /// @brief Re-seeds the engine and drops any cached normal sample, like torch.manual_seed.
    void manual_seed(std::uint64_t seed) noexcept;
    std::uint64_t initial_seed() const noexcept { return m_state.seed; }

    /// @brief 32 random bits (one engine output).
    std::uint32_t random() noexcept;
    /// @brief 64 random bits from two engine outputs, first one high, as PyTorch combines them.
    std::uint64_t random64() noexcept;

    /// @brief Uniform in [from, to) with PyTorch's transform: 24 random bits for float, 53 for
    /// double.
    template <class T>
    T uniform(T from, T to) noexcept;

    /// @brief One normal sample by Box-Muller; the second sample of each pair is cached and
    /// returned by the next call, as PyTorch does.
    double normal(double mean = 0.0, double stddev = 1.0) noexcept;

    const generator_state& state() const noexcept { return m_state; }
    void set_state(const generator_state& s) noexcept { m_state = s; }

private:
    void twist() noexcept;

    generator_state m_state;
};

/// @brief The process-wide generator that layers use unless given one (torch's default
/// generator). Not synchronised: give each thread its own generator if threads draw.
generator& default_generator() noexcept;

/// @brief Seeds the default generator, like torch.manual_seed.
inline void manual_seed(std::uint64_t seed) noexcept
{
    default_generator().manual_seed(seed);
}

/// @brief Fills `t` with uniform samples in [from, to) (torch.Tensor.uniform_).
template <class T, std::size_t N>
void uniform_(tensor<T, N>& t, double from, double to, generator& g = default_generator());

/// @brief Fills `t` with normal samples (torch.Tensor.normal_), drawing as PyTorch: element
/// by element below 16 elements, and by its 16-wide Box-Muller fill from 16 on. The same
/// values bit for bit, but for float32 from 16 elements on, where PyTorch's AVX2 kernel (which
/// its CPU builds run) is a few ulps from its scalar one, which ember's matches.
template <class T, std::size_t N>
void normal_(tensor<T, N>& t, double mean = 0.0, double stddev = 1.0,
             generator& g = default_generator());

namespace detail
{
/// @brief normal_() over `size` elements at `data`: one instance per element type, not per rank.
template <class T>
void fill_normal(T* data, std::size_t size, double mean, double stddev, generator& g);
} // namespace detail

/// @brief A new tensor of standard normal samples (torch.randn).
template <class T, std::size_t N>
tensor<T, N> randn(const std::size_t (&shape)[N], generator& g = default_generator());

/// @brief A new tensor of uniform samples in [0, 1) (torch.rand).
template <class T, std::size_t N>
tensor<T, N> rand(const std::size_t (&shape)[N], generator& g = default_generator());

/*******************
 * implementation  *
 *******************/

inline void generator::manual_seed(std::uint64_t seed) noexcept
{
    m_state = generator_state{};
    m_state.seed = seed;
    m_state.mt[0] = static_cast<std::uint32_t>(seed & 0xffffffffu);
    for (std::uint32_t i = 1; i < 624; ++i)
    {
        std::uint32_t prev = m_state.mt[i - 1];
        m_state.mt[i] = 1812433253u * (prev ^ (prev >> 30)) + i;
    }
    m_state.index = 624;
}

inline void generator::twist() noexcept
{
    auto& mt = m_state.mt;
    for (std::size_t i = 0; i < 624; ++i)
    {
        std::uint32_t y = (mt[i] & 0x80000000u) | (mt[(i + 1) % 624] & 0x7fffffffu);
        std::uint32_t next = mt[(i + 397) % 624] ^ (y >> 1);
        if (y & 1u)
            next ^= 0x9908b0dfu;
        mt[i] = next;
    }
    m_state.index = 0;
}

inline std::uint32_t generator::random() noexcept
{
    if (m_state.index >= 624)
        twist();
    std::uint32_t y = m_state.mt[m_state.index++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

inline std::uint64_t generator::random64() noexcept
{
    std::uint64_t hi = random();
    std::uint64_t lo = random();
    return (hi << 32) | lo;
}

template <class T>
T generator::uniform(T from, T to) noexcept
{
    static_assert(std::is_floating_point_v<T>,
                  "ember::generator::uniform: T must be float or double");
    // PyTorch computes x * (to - from) + from in T, and its CPU kernels (built for AVX2 and
    // AVX-512, where the compiler contracts it) round it once as a fused multiply-add.
    if constexpr (std::is_same_v<T, double>)
    {
        constexpr std::uint64_t mask = (std::uint64_t{1} << 53) - 1;
        double x = static_cast<double>(random64() & mask) * (1.0 / static_cast<double>(mask + 1));
        return std::fma(x, to - from, from);
    }
    else
    {
        constexpr std::uint32_t mask = (std::uint32_t{1} << 24) - 1;
        T x = static_cast<T>(random() & mask) * (T(1) / static_cast<T>(mask + 1));
        return std::fma(x, to - from, from);
    }
}

inline double generator::normal(double mean, double stddev) noexcept
{
    // sample * stddev + mean rounded once, as PyTorch's kernels contract it (see uniform).
    if (m_state.has_next_normal)
    {
        m_state.has_next_normal = false;
        return std::fma(m_state.next_normal, stddev, mean);
    }
    double u1 = uniform<double>(0.0, 1.0);
    double u2 = uniform<double>(0.0, 1.0);
    double r = std::sqrt(-2.0 * std::log(1.0 - u2));
    double theta = 2.0 * std::numbers::pi * u1;
    m_state.has_next_normal = true;
    m_state.next_normal = r * std::sin(theta);
    return std::fma(r * std::cos(theta), stddev, mean);
}

inline generator& default_generator() noexcept
{
    static generator g;
    return g;
}

template <class T, std::size_t N>
void uniform_(tensor<T, N>& t, double from, double to, generator& g)
{
    const T f = static_cast<T>(from), e = static_cast<T>(to);
    for (auto& x : t)
        x = g.uniform<T>(f, e);
}

namespace detail
{
// PyTorch's normal_fill_16: eight Box-Muller pairs from sixteen uniforms, in T's precision,
// each sample * stddev + mean rounded once (a fused multiply-add), as its CPU kernels built
// for AVX2 compute it: float64 normal_(0.1, 0.3) of torch 1.13 differed in the last bit else.
template <class T>
void normal_fill_16(T* data, T mean, T stddev) noexcept
{
    for (std::size_t j = 0; j < 8; ++j)
    {
        const T u1 = 1 - data[j];
        const T u2 = data[j + 8];
        const T radius = std::sqrt(-2 * std::log(u1));
        const T theta = static_cast<T>(2.0 * std::numbers::pi * u2);
        data[j] = std::fma(radius * std::cos(theta), stddev, mean);
        data[j + 8] = std::fma(radius * std::sin(theta), stddev, mean);
    }
}
} // namespace detail

template <class T, std::size_t N>
void normal_(tensor<T, N>& t, double mean, double stddev, generator& g)
{
    static_assert(std::is_floating_point_v<T>, "ember::normal_: T must be float or double");
    detail::fill_normal(t.data(), t.size(), mean, stddev, g);
}

template <class T>
void detail::fill_normal(T* data, std::size_t size, double mean, double stddev, generator& g)
{
    if (size < 16)
    {
        for (std::size_t i = 0; i < size; ++i)
            data[i] = static_cast<T>(g.normal(mean, stddev));
        return;
    }
    const T m = static_cast<T>(mean), s = static_cast<T>(stddev);
    for (std::size_t i = 0; i < size; ++i)
        data[i] = g.uniform<T>(0, 1);
    for (std::size_t i = 0; i + 16 <= size; i += 16)
        detail::normal_fill_16(data + i, m, s);
    if (size % 16 != 0)
    {
        // PyTorch redraws the last 16 values rather than handle a partial block.
        T* tail = data + size - 16;
        for (std::size_t i = 0; i < 16; ++i)
            tail[i] = g.uniform<T>(0, 1);
        detail::normal_fill_16(tail, m, s);
    }
}

// Compiled once in ember's precompiled part, where a program links it (detail/precompiled.hpp).
#if !EMBER_SHARED_DEFINITIONS
extern template void detail::fill_normal<float>(float*, std::size_t, double, double, generator&);
extern template void detail::fill_normal<double>(double*, std::size_t, double, double, generator&);
#endif

template <class T, std::size_t N>
tensor<T, N> randn(const std::size_t (&shape)[N], generator& g)
{
    std::array<std::size_t, N> s{};
    std::copy(std::begin(shape), std::end(shape), s.begin());
    tensor<T, N> t(s);
    normal_(t, 0.0, 1.0, g);
    return t;
}

template <class T, std::size_t N>
tensor<T, N> rand(const std::size_t (&shape)[N], generator& g)
{
    std::array<std::size_t, N> s{};
    std::copy(std::begin(shape), std::end(shape), s.begin());
    tensor<T, N> t(s);
    uniform_(t, 0.0, 1.0, g);
    return t;
}

} // namespace ember
