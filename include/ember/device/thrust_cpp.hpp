#pragma once
/// @file
/// thrust_cpp: the Thrust policy on Thrust's sequential C++ system (host memory, one thread).
/// It runs the Thrust code path anywhere, with no OpenMP and no GPU.

#include "ember/device/thrust_host.hpp"
#include "ember/device/thrust_loops.hpp"

#include <thrust/system/cpp/execution_policy.h>
#include <thrust/system/cpp/vector.h>

namespace ember
{

struct thrust_cpp_backend : detail::thrust_host_backend
{
    template <class T>
    using vector = thrust::cpp::vector<T>;
    static constexpr std::string_view name = "thrust_cpp";
    static auto policy() noexcept { return thrust::cpp::par; }
    using loops = detail::thrust_loops<thrust_cpp_backend>;
};

/// @brief Thrust, sequential C++ back end.
using thrust_cpp = thrust_device<thrust_cpp_backend>;

} // namespace ember
