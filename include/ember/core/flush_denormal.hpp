#pragma once
/// @file
/// set_flush_denormal (torch.set_flush_denormal): whether the CPU's float arithmetic treats
/// subnormal numbers (magnitudes below 1.18e-38 in float, 2.2e-308 in double) as zero.
///
/// The CPU handles subnormals in microcode, tens of times slower than other numbers, and training
/// makes them: a momentum buffer or an Adam moment whose gradient stays at zero (a ReLU unit the
/// batch never activates) shrinks by the same factor every step until it is one. Measured
/// (docs/benchmarks.md): the MLP of the benchmarks trained on one batch of 1, with SGD and
/// momentum, took 340 µs a step until about step 750 and 1500 µs from then on, in LibTorch
/// 1000 and 2200 µs alike; with flushing on, 300-330 µs throughout.
///
/// @code
/// ember::set_flush_denormal(true); // subnormals read and written as zero, from here on
/// @endcode
///
/// Flushing changes results where a value would be subnormal, so bit-exact comparisons with
/// PyTorch hold only where PyTorch flushes too. It is a setting of the calling thread (the SSE
/// control register, MXCSR: its flush-to-zero and denormals-are-zero bits), as in PyTorch;
/// ember's own worker threads (detail/parallel.hpp) run each pass in the mode of the thread
/// that started it, and threads started afterwards inherit it. The BLAS's threads keep theirs:
/// OpenBLAS starts its workers when first used. On x86-64 (GCC, Clang) it returns true;
/// elsewhere it changes nothing and returns false.

// EMBER_HAS_MXCSR: 1 where the SSE control register is reachable (x86-64, GCC or Clang).
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define EMBER_HAS_MXCSR 1
#else
#define EMBER_HAS_MXCSR 0
#endif

namespace ember
{

namespace detail
{

/// MXCSR's sticky exception flags (bits 0-5), which are state, not a setting.
inline constexpr unsigned fp_exception_flags = 0x3fu;

/// The calling thread's floating-point control bits (MXCSR without its sticky exception
/// flags) on x86-64; 0 elsewhere.
inline unsigned fp_control() noexcept
{
#if EMBER_HAS_MXCSR
    return __builtin_ia32_stmxcsr() & ~fp_exception_flags;
#else
    return 0;
#endif
}

/// Sets the calling thread's control bits to `control` (from fp_control()), keeping its flags.
inline void set_fp_control(unsigned control) noexcept
{
#if EMBER_HAS_MXCSR
    const unsigned csr = __builtin_ia32_stmxcsr();
    if ((csr & ~fp_exception_flags) != control)
        __builtin_ia32_ldmxcsr((csr & fp_exception_flags) | control);
#else
    (void)control;
#endif
}

/// MXCSR's flush-to-zero (bit 15: subnormal results written as zero) and denormals-are-zero
/// (bit 6: subnormal inputs read as zero) bits.
inline constexpr unsigned flush_denormal_bits = 0x8040u;

} // namespace detail

/// @brief Turns flushing of subnormal floats to zero on or off for the calling thread (and the
/// passes it starts on ember's threads), as torch.set_flush_denormal; true where supported
/// (x86-64), false elsewhere, where nothing changes.
inline bool set_flush_denormal(bool on) noexcept
{
#if EMBER_HAS_MXCSR
    const unsigned control = detail::fp_control();
    detail::set_fp_control(on ? control | detail::flush_denormal_bits
                              : control & ~detail::flush_denormal_bits);
    return true;
#else
    (void)on;
    return false;
#endif
}

/// @brief Whether the calling thread flushes subnormal floats to zero (set_flush_denormal).
inline bool flush_denormal() noexcept
{
    return (detail::fp_control() & detail::flush_denormal_bits) == detail::flush_denormal_bits;
}

} // namespace ember
