#pragma once
/// @file
/// thrust_omp: the Thrust policy on Thrust's OpenMP system (host memory, every core). Compile
/// with -fopenmp; Meson's `thrust_omp` option does it for ember's own tests and examples.
///
/// Its kernels run through loops compiled once (device/omp_loops.hpp) and its tensors live in
/// a detail::host_vector (host memory, as Thrust's OpenMP vector is, with ember's huge-page
/// allocator), so a file that uses it parses no Thrust header and instantiates no Thrust
/// algorithm per kernel: with ember's precompiled part, Thrust is compiled once, in
/// src/ember_precompiled_thrust_omp.cpp.

#if !defined(_OPENMP)
#error "ember/device/thrust_omp.hpp needs OpenMP: compile with -fopenmp"
#endif

#include "ember/detail/host_vector.hpp"
#include "ember/device/omp_loops.hpp"
#include "ember/device/thrust_host.hpp"

namespace ember
{

struct thrust_omp_backend : detail::thrust_host_backend
{
    template <class T>
    using vector = detail::host_vector<T>;
    using loops = detail::omp_loops;
    static constexpr std::string_view name = "thrust_omp";
};

/// @brief Thrust, OpenMP back end.
using thrust_omp = thrust_device<thrust_omp_backend>;

} // namespace ember
