#pragma once
/// @file
/// Run-time choice of an instruction set for ember's hottest host loops (the optimizers'
/// updates). Meson's release build targets baseline x86-64 (SSE2), where those loops are 4
/// floats wide; with GCC or Clang on x86-64 the same loops are also compiled for AVX2 (a
/// `target` attribute on template functions, so the library stays header-only and every
/// translation unit emits the same definitions), picked once, with `__builtin_cpu_supports`,
/// where the CPU has it: Adam's update over 270k parameters takes half the time. An AVX-512
/// variant was measured and left out: on Zen 4, which runs 512-bit operations as two 256-bit
/// halves, Adam's division- and square-root-bound loop was 4% slower in it than in AVX2, and
/// SGD's loop, bound by memory, no faster.
///
/// Every variant gives the baseline build's results bit for bit: it is the same source in the
/// same order of operations, IEEE division and square root are correctly rounded in every
/// instruction set, and no multiply and add is contracted into an FMA. AVX2 is enabled without
/// FMA, so the compiler has no FMA to contract into; the variants are compiled with contraction
/// off all the same, so that a variant for a target with FMA (x86-64-v3, AVX-512) stays exact:
/// GCC contracts by default (-ffp-contract=fast) in the function a kernel is inlined into, hence
/// an `optimize` attribute on the variant; Clang decides per expression where it is written,
/// hence EMBER_NO_FP_CONTRACT at the start of each kernel's body. tests/test_optimizers.cpp
/// compares every variant with a scalar loop bit for bit (it fails with FMA contraction on).
///
/// Elsewhere (other architectures, other compilers, nvcc) only the baseline loop exists and
/// these macros expand to nothing.

#include <atomic>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__CUDACC__)
#define EMBER_SIMD_DISPATCH 1
#else
#define EMBER_SIMD_DISPATCH 0
#endif

#if EMBER_SIMD_DISPATCH && defined(__clang__)
/// At the start of a kernel's body: no FMA contraction in it (Clang's per-expression setting).
#define EMBER_NO_FP_CONTRACT _Pragma("clang fp contract(off)")
#define EMBER_SIMD_VARIANT_ATTRIBUTES flatten
#elif EMBER_SIMD_DISPATCH
#define EMBER_NO_FP_CONTRACT
// flatten: the kernel must be inlined into the variant to be compiled for its instruction set.
#define EMBER_SIMD_VARIANT_ATTRIBUTES flatten, optimize("fp-contract=off")
#else
#define EMBER_NO_FP_CONTRACT
#endif

#if EMBER_SIMD_DISPATCH
/// A function compiled for AVX2 (without FMA), everything it calls inlined into it.
#define EMBER_TARGET_AVX2 __attribute__((target("avx2"), EMBER_SIMD_VARIANT_ATTRIBUTES))
#endif

namespace ember::detail
{

/// @brief The instruction sets the dispatched loops are compiled for, narrowest first.
enum class simd_isa
{
    baseline,
    avx2,
};

/// @brief The widest of them this CPU and its OS run (`baseline` where nothing is dispatched);
/// asked once (libgcc's and compiler-rt's checks include the OS saving the wider registers).
simd_isa host_simd_isa() noexcept;

/// @brief From now on the dispatched loops use at most `isa` (tests compare every variant the
/// CPU runs; `baseline` rules dispatch out). Takes effect at the next loop.
void limit_simd_isa(simd_isa isa) noexcept;

/// @brief The variant the dispatched loops use now: host_simd_isa() capped by limit_simd_isa().
simd_isa active_simd_isa() noexcept;

/*******************
 * implementation  *
 *******************/

inline simd_isa host_simd_isa() noexcept
{
#if EMBER_SIMD_DISPATCH
    static const simd_isa isa = []
    {
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx2"))
            return simd_isa::avx2;
        return simd_isa::baseline;
    }();
    return isa;
#else
    return simd_isa::baseline;
#endif
}

inline std::atomic<simd_isa>& simd_isa_limit() noexcept
{
    static std::atomic<simd_isa> limit{simd_isa::avx2};
    return limit;
}

inline void limit_simd_isa(simd_isa isa) noexcept
{
    simd_isa_limit().store(isa, std::memory_order_relaxed);
}

inline simd_isa active_simd_isa() noexcept
{
    const simd_isa limit = simd_isa_limit().load(std::memory_order_relaxed);
    const simd_isa host = host_simd_isa();
    return limit < host ? limit : host;
}

} // namespace ember::detail
