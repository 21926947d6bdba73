#pragma once
/// @file
/// The divider's part of an Adam update alone: for each parameter one square root and one
/// division, each correctly rounded, as PyTorch's Adam computes them (denom = sqrt(v) / c + eps,
/// then m / denom; ember's division by c is a multiply, 8e58fcc), and so as any Adam that gives
/// PyTorch's bits must. On 2,048 floats that stay in L1, so that memory costs nothing, in the
/// instruction set ember's optimizers run in (detail::active_simd_isa()). It is the least time
/// such an update of that many parameters can take on one core, whatever else it does, and it
/// cannot start before the forward pass has given a gradient: the forward's products and this,
/// one after the other (bench_interleaved's adam_bound), are the least an Adam step that gives
/// PyTorch's bits can take. Where the divider is slow, as on Intel's cores, that is more than
/// 1.4 times the whole step's products at batch 1.

#include <benchmark/benchmark.h>
#include <ember/optim/optimizer.hpp> // sqrt_inplace

#include <algorithm>
#include <cstddef>

namespace bench
{

class adam_divider
{
public:
    explicit adam_divider(std::size_t parameters) : m_n(parameters)
    {
        for (std::size_t i = 0; i < chunk; ++i)
        {
            m_v[i] = 1e-8f * static_cast<float>(i + 1); // Adam's second moments are small
            m_m[i] = 1e-4f * static_cast<float>(i % 13 + 1);
        }
    }

    /// The square roots and divisions of one update of all the parameters.
    void run()
    {
#if EMBER_SIMD_DISPATCH
        switch (ember::detail::active_simd_isa())
        {
        case ember::detail::simd_isa::avx512:
            return run_avx512();
        case ember::detail::simd_isa::avx2:
            return run_avx2();
        case ember::detail::simd_isa::baseline:
            break;
        }
#endif
        pass<ember::detail::simd_isa::baseline>();
    }

private:
    static constexpr std::size_t chunk = 2048;

    template <ember::detail::simd_isa Isa>
    EMBER_SIMD_INLINE void pass()
    {
        for (std::size_t done = 0; done < m_n; done += chunk)
        {
            const std::size_t len = std::min(chunk, m_n - done);
            std::copy_n(m_v, len, m_q);
            ember::optim::detail::sqrt_inplace<Isa>(m_q, len);
            for (std::size_t i = 0; i < len; ++i)
                m_q[i] = m_m[i] / (m_q[i] + 1e-8f);
            benchmark::ClobberMemory(); // every chunk's work done, none merged away
        }
    }

#if EMBER_SIMD_DISPATCH
    EMBER_TARGET_AVX2 void run_avx2()
    {
        pass<ember::detail::simd_isa::avx2>();
    }
    EMBER_TARGET_AVX512 void run_avx512()
    {
        pass<ember::detail::simd_isa::avx512>();
    }
#endif

    std::size_t m_n;
    alignas(64) float m_v[chunk];
    alignas(64) float m_m[chunk];
    alignas(64) float m_q[chunk];
};

} // namespace bench
