#pragma once
/// @file
/// thrust_omp: the Thrust policy on Thrust's OpenMP system (host memory, every core). Compile
/// with -fopenmp; Meson's `thrust_omp` option does it for ember's own tests and examples.

#if !defined(_OPENMP)
#error "ember/device/thrust_omp.hpp needs OpenMP: compile with -fopenmp"
#endif

#include "ember/device/thrust_host.hpp"

#include <thrust/system/omp/execution_policy.h>
#include <thrust/system/omp/vector.h>

namespace ember
{

struct thrust_omp_backend : detail::thrust_host_backend
{
    template <class T>
    using vector = thrust::omp::vector<T>;
    static constexpr std::string_view name = "thrust_omp";
    static auto policy() noexcept { return thrust::omp::par; }
};

/// @brief Thrust, OpenMP back end.
using thrust_omp = thrust_device<thrust_omp_backend>;

} // namespace ember
