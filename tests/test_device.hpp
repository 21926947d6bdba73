#pragma once
/// @file
/// The device the tests run on, chosen when the tests are built (Meson option `test_device`):
/// cpu by default, or a Thrust back end, so the same test files check every policy. Tests
/// build inputs on the host and move them with dev(), and read results back with host();
/// comparisons that are bitwise on cpu use tolerances elsewhere (test::exact says which).

#include "ember/device/cpu.hpp"
#include "ember/device/transfer.hpp"

#if defined(EMBER_TEST_DEVICE_THRUST_OMP)
#include "ember/device/thrust_omp.hpp"
using test_device = ember::thrust_omp;
#elif defined(EMBER_TEST_DEVICE_THRUST_CPP)
#include "ember/device/thrust_cpp.hpp"
using test_device = ember::thrust_cpp;
#elif defined(EMBER_TEST_DEVICE_CUDA)
#include "ember/device/cuda.hpp"
using test_device = ember::cuda;
#else
using test_device = ember::cpu;
#endif

#include <cstddef>
#include <type_traits>

namespace test
{

/// @brief A tensor on the test device.
template <class T, std::size_t N>
using dtensor = typename test_device::template tensor_type<T, N>;

/// @brief True on cpu, where results are bitwise reproducible (and equal to PyTorch's where a
/// test says so); parallel back ends sum in another order.
inline constexpr bool exact = std::is_same_v<test_device, ember::cpu>;

/// @brief Host tensor → test device.
template <class T, std::size_t N>
dtensor<T, N> dev(const ember::tensor<T, N>& x)
{
    return ember::to<test_device>(x);
}

/// @brief Test-device tensor → host tensor (a copy).
template <class Tensor>
auto host(const Tensor& t)
{
    return ember::to_host(t);
}

} // namespace test
