#pragma once
/// @file
/// Where ember's precompiled part is compiled: the file formats, the SVG figure, the training
/// tools (history, progress_bar, plot_history, split_lengths), and the optimizers and the common
/// losses (mse, l1, cross_entropy) over float in host memory. Header-only (the default), every
/// file that uses them compiles them. A program that defines EMBER_PRECOMPILED for all its files
/// and links src/ember_precompiled.cpp (Meson: ember_precompiled_dep) gets only the declarations
/// of the formats, the figure and the tools, and the optimizers and losses as extern templates;
/// ember_precompiled.cpp defines EMBER_PRECOMPILED_DEFINITIONS and compiles them all once, out
/// of line.
///
/// EMBER_DEFINITIONS is 1 where this file compiles those definitions (header-only, or
/// ember_precompiled.cpp) and 0 where it only declares them. EMBER_PRECOMPILED_INLINE marks
/// their non-template definitions: `inline` header-only, nothing in ember_precompiled.cpp.

#if defined(EMBER_PRECOMPILED) && !defined(EMBER_PRECOMPILED_DEFINITIONS)
#define EMBER_DEFINITIONS 0
#else
#define EMBER_DEFINITIONS 1
#endif

// EMBER_SHARED_DEFINITIONS is EMBER_DEFINITIONS less a device's own precompiled part
// (src/ember_precompiled_thrust_omp.cpp defines EMBER_PRECOMPILED_DEVICE_PART): the
// device-independent definitions (a value's copies, stream_copy, load_state_dict's checks, ...)
// that the device's part parses too but must leave to ember_precompiled.cpp, which is linked
// beside it, or the program would have them twice.
#if EMBER_DEFINITIONS && !defined(EMBER_PRECOMPILED_DEVICE_PART)
#define EMBER_SHARED_DEFINITIONS 1
#else
#define EMBER_SHARED_DEFINITIONS 0
#endif

#if defined(EMBER_PRECOMPILED_DEFINITIONS)
#define EMBER_PRECOMPILED_INLINE
#else
#define EMBER_PRECOMPILED_INLINE inline
#endif

// EMBER_PRECOMPILED_EXTERN(INSTANCES): at the end of an optimizer's or loss's header. With
// EMBER_PRECOMPILED it declares INSTANCES(extern, DEVICE) on the devices the precompiled part
// compiles them for: the cpu (src/ember_precompiled.cpp) and, in files built for it
// (EMBER_PRECOMPILED_THRUST_OMP: the header must then include device/thrust_omp.hpp),
// Thrust/OpenMP (src/ember_precompiled_thrust_omp.cpp, which also has that device's loops,
// device/omp_loops.hpp). Header-only, and in those two files, which define them, it is empty.
#if EMBER_DEFINITIONS
#define EMBER_PRECOMPILED_EXTERN(INSTANCES)
#elif defined(EMBER_WITH_THRUST_OMP) && defined(_OPENMP)
#define EMBER_PRECOMPILED_THRUST_OMP 1
#define EMBER_PRECOMPILED_EXTERN(INSTANCES)                                                        \
    INSTANCES(extern, ember::cpu)                                                                  \
    INSTANCES(extern, ember::thrust_omp)
#else
#define EMBER_PRECOMPILED_EXTERN(INSTANCES) INSTANCES(extern, ember::cpu)
#endif

// EMBER_PRECOMPILED_EXTERN_CLASS(SPECIALIZATION): after the definitions a class template's
// specialization needs (ember::ordered_dict<ember::value>, the state_dict, ...). With
// EMBER_PRECOMPILED it declares the specialization extern, so that a file naming it does not
// compile its members again: src/ember_precompiled.cpp compiles them once. Header-only, and
// in that file, it is empty.
#if EMBER_DEFINITIONS
#define EMBER_PRECOMPILED_EXTERN_CLASS(...)
#else
#define EMBER_PRECOMPILED_EXTERN_CLASS(...) extern template class __VA_ARGS__;
#endif
