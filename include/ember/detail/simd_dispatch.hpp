#pragma once
/// @file
/// Run-time choice of an instruction set for ember's hottest host loops (the optimizers'
/// updates, and stream_copy's copy of a loaded file into the parameters). Meson's release build
/// targets baseline x86-64 (SSE2), where those loops are 4 floats wide; with GCC or Clang on x86-64
/// the same loops are also compiled for AVX2 and for AVX-512 (a `target` attribute on template
/// functions, so the library stays header-only and every translation unit emits the same
/// definitions), and one is picked once, at run time:
///
/// - AVX2 where `__builtin_cpu_supports` says the CPU has it: Adam's update over 270k
///   parameters takes half the baseline's time.
/// - AVX-512 (F, VL, DQ, BW) only on AMD CPUs of family 0x1A (Zen 5) and later, which run
///   512-bit operations at full width: there Adam's update over 269,578 floats took 84 µs
///   against AVX2's 116 µs (a standalone loop, GCC 12 -O3); SGD's loop, bound by memory, runs
///   at the same speed in both. Zen 4 (family 0x19) has AVX-512 but runs a 512-bit operation
///   as two 256-bit halves: there Adam's division- and square-root-bound loop was 4% slower in
///   AVX-512 than in AVX2, and SGD's no faster. On the Intel Xeon of docs/benchmarks.md (m3v:
///   KVM's family 6 model 167, with AVX-512 FP16), the optimizers' `step()` alone on the MLP's
///   parameters, four runs of 15 blocks taking turns: Adam's took 164.5-172.3 µs in AVX-512
///   against 171.4-175.8 in AVX2 (0-6% less), SGD's 99.3-102.5 against 97.9-100.6 (1-5% more).
///   Too little either way to give up AVX2 on Intel CPUs, some of which lower their clock
///   under 512-bit work. Hence a rule by vendor and family rather than by feature bits alone.
/// - Loops bound by memory alone (stream_copy) take the widest the CPU runs on any vendor
///   (active_memory_simd_isa): one store per cache line, no arithmetic to slow down.
///
/// Every variant gives the baseline build's results bit for bit: it is the same source in the
/// same order of operations, IEEE division and square root are correctly rounded in every
/// instruction set, and no multiply and add is contracted into an FMA. AVX2 is enabled without
/// FMA, so the compiler has no FMA to contract into; AVX-512 brings FMA with it (GCC and Clang
/// enable FMA with avx512f), so the variants are compiled with contraction off: GCC contracts by
/// default (-ffp-contract=fast) in the function a kernel is inlined into, hence an `optimize`
/// attribute on the variant; Clang decides per expression where it is written, hence
/// EMBER_NO_FP_CONTRACT at the start of each kernel's body. tests/test_simd_variants.cpp compares
/// every variant the CPU runs with a scalar loop bit for bit (it fails with FMA contraction on).
///
/// Elsewhere (other architectures, other compilers, nvcc) only the baseline loop exists and
/// these macros expand to nothing.

#include <atomic>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__CUDACC__)
#define EMBER_SIMD_DISPATCH 1
#else
#define EMBER_SIMD_DISPATCH 0
#endif

#if EMBER_SIMD_DISPATCH
#include <cpuid.h> // __get_cpuid, for the CPU's family
#endif

#if EMBER_SIMD_DISPATCH && defined(__clang__)
/// At the start of a kernel's body: no FMA contraction in it (Clang's per-expression setting).
#define EMBER_NO_FP_CONTRACT _Pragma("clang fp contract(off)")
#define EMBER_SIMD_VARIANT_ATTRIBUTES flatten
#elif EMBER_SIMD_DISPATCH
#define EMBER_NO_FP_CONTRACT
// flatten: the kernel must be inlined into the variant to be compiled for its instruction set.
// tree-vectorize with the dynamic cost model: what -O3 turns on, and without which GCC 12 at
// -O2 (Debian's default, CMake's RelWithDebInfo) left the variants' loops scalar: Adam's update
// over the MLP's 269,322 floats took 655 µs at -O2 against 165 at -O3, SGD's 160 against 100
// (one thread, Intel Xeon); with it, 167 and 100 at -O2. Clang vectorizes at -O2 by itself.
#define EMBER_SIMD_VARIANT_ATTRIBUTES                                                              \
    flatten, optimize("fp-contract=off", "tree-vectorize", "vect-cost-model=dynamic")
#else
#define EMBER_NO_FP_CONTRACT
#endif

#if EMBER_SIMD_DISPATCH
/// On a kernel the variants call: it must be inlined into each, to be compiled for its
/// instruction set. GCC's flatten inlines it anyway; Clang's flatten leaves a call to a function
/// over its inlining threshold (Adam's block, Clang 16), which was then compiled for SSE2.
#define EMBER_SIMD_INLINE inline __attribute__((always_inline))
#else
#define EMBER_SIMD_INLINE inline
#endif

#if EMBER_SIMD_DISPATCH
/// A function compiled for AVX2 (without FMA), everything it calls inlined into it.
#define EMBER_TARGET_AVX2 __attribute__((target("avx2"), EMBER_SIMD_VARIANT_ATTRIBUTES))
/// A function compiled for AVX-512 (F, VL, DQ, BW), everything it calls inlined into it.
#define EMBER_TARGET_AVX512                                                                        \
    __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw"), EMBER_SIMD_VARIANT_ATTRIBUTES))
#endif

namespace ember::detail
{

/// @brief The instruction sets the dispatched loops are compiled for, narrowest first.
enum class simd_isa
{
    baseline,
    avx2,
    avx512,
};

/// @brief The widest of them this CPU and its OS run (`baseline` where nothing is dispatched);
/// asked once (libgcc's and compiler-rt's checks include the OS saving the wider registers).
/// `avx512` only on AMD family 0x1A and later (see above); other AVX-512 CPUs get `avx2`.
simd_isa host_simd_isa() noexcept;

/// @brief The widest of them this CPU and its OS can run, preferred or not (AVX-512 on Zen 4 and
/// Intel too): what the tests compare.
simd_isa runnable_simd_isa() noexcept;

/// @brief From now on the dispatched loops use `isa`, or the widest below it the CPU runs, even
/// where host_simd_isa() would pick a narrower one (tests compare every variant the CPU runs;
/// `baseline` rules dispatch out). Takes effect at the next loop.
void limit_simd_isa(simd_isa isa) noexcept;

/// @brief Back to host_simd_isa(), the default.
void reset_simd_isa() noexcept;

/// @brief The variant the dispatched loops use now: host_simd_isa(), or what limit_simd_isa()
/// asked for.
simd_isa active_simd_isa() noexcept;

/// @brief The variant loops bound by memory rather than by arithmetic use now (stream_copy's
/// non-temporal stores): the widest the CPU runs, Intel's AVX-512 included, since a store of a
/// whole cache line at once neither lowers the clock in a way a memory-bound loop feels nor
/// changes any result; or what limit_simd_isa() asked for.
simd_isa active_memory_simd_isa() noexcept;

/*******************
 * implementation  *
 *******************/

#if EMBER_SIMD_DISPATCH
/// @brief The CPU's family as CPUID leaf 1 gives it: the base family, plus the extended family
/// where the base is 0xF (AMD's Zen 5 is 0x1A); 0 where CPUID has no leaf 1.
inline unsigned cpu_family() noexcept
{
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx))
        return 0;
    const unsigned base = (eax >> 8) & 0xF;
    return base == 0xF ? base + ((eax >> 20) & 0xFF) : base;
}
#endif

inline simd_isa runnable_simd_isa() noexcept
{
#if EMBER_SIMD_DISPATCH
    static const simd_isa isa = []
    {
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
            __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw"))
            return simd_isa::avx512;
        if (__builtin_cpu_supports("avx2"))
            return simd_isa::avx2;
        return simd_isa::baseline;
    }();
    return isa;
#else
    return simd_isa::baseline;
#endif
}

inline simd_isa host_simd_isa() noexcept
{
#if EMBER_SIMD_DISPATCH
    // What the CPU runs, but AVX-512 only where it runs at full width (see above).
    static const simd_isa isa = []
    {
        const simd_isa runnable = runnable_simd_isa();
        if (runnable == simd_isa::avx512 && !(__builtin_cpu_is("amd") && cpu_family() >= 0x1A))
            return simd_isa::avx2;
        return runnable;
    }();
    return isa;
#else
    return simd_isa::baseline;
#endif
}

// limit_simd_isa()'s setting; -1: none (host_simd_isa()).
inline std::atomic<int>& simd_isa_limit() noexcept
{
    static std::atomic<int> limit{-1};
    return limit;
}

inline void limit_simd_isa(simd_isa isa) noexcept
{
    simd_isa_limit().store(static_cast<int>(isa), std::memory_order_relaxed);
}

inline void reset_simd_isa() noexcept
{
    simd_isa_limit().store(-1, std::memory_order_relaxed);
}

inline simd_isa active_simd_isa() noexcept
{
    const int limit = simd_isa_limit().load(std::memory_order_relaxed);
    if (limit < 0)
        return host_simd_isa();
    const simd_isa runnable = runnable_simd_isa();
    return static_cast<simd_isa>(limit) < runnable ? static_cast<simd_isa>(limit) : runnable;
}

inline simd_isa active_memory_simd_isa() noexcept
{
    // Under a limit, the optimizers' variant (the limit, or what the CPU runs below it).
    return simd_isa_limit().load(std::memory_order_relaxed) < 0 ? runnable_simd_isa()
                                                                : active_simd_isa();
}

} // namespace ember::detail
