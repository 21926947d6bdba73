#pragma once
/// @file
/// How ember writes a computation once for every device. A kernel is the body of a loop over
/// an index, written as `EMBER_KERNEL(std::size_t i) { y[i] = ...; }` over raw pointers and
/// values it captures by copy; a device policy decides where and how the loop runs:
/// `Device::for_each(n, kernel)` is a plain loop on `cpu`, a Thrust algorithm on the OpenMP or
/// sequential back end, and a CUDA launch on `cuda`. Sums go through `Device::sum`.
///
/// Kernels capture pointers, never `this` or references: on a GPU they run in another address
/// space, and nvcc needs the lambda to be copyable to the device.

#include <concepts>
#include <cstddef>
#include <string_view>
#include <type_traits>

#if defined(__CUDACC__)
/// Functions a kernel may call: compiled for the host and, under nvcc, for the GPU.
#define EMBER_HOST_DEVICE __host__ __device__
#else
#define EMBER_HOST_DEVICE
#endif

/// A loop body for Device::for_each / Device::sum (an nvcc "extended lambda" under CUDA).
#define EMBER_KERNEL [=] EMBER_HOST_DEVICE

namespace ember
{

/// @brief What every device policy provides (see device/cpu.hpp for the reference one):
/// - `tensor_type<T, N>` (shape(), size(), data(), resize(), fill(), from_shape()) and
///   `vector_type<T>` (flat storage with data() and size());
/// - `name`, `is_available()`, `host_memory` (whether the host may dereference data());
/// - `for_each(n, f)`: f(i) for every i < n, in any order, possibly in parallel;
/// - `sum<Acc>(n, f)`: the sum of f(i) over i < n, accumulated in Acc;
/// - `gemm(...)`: C = alpha op(A) op(B) + beta C on row-major device buffers;
/// - `copy(src, n, dst)`, `fill(dst, n, v)`: on device buffers;
/// - `upload(host, n, dst)`, `download(src, n, host)`: between host and device memory;
/// - `to_host(t)`, `copy_from_host(h, t, what)`: tensors to an ember::host_tensor, and from
///   one (or a host_tensor_view).
template <class D>
concept device_policy = requires
{
    typename D::template tensor_type<float, 1>;
    typename D::template vector_type<float>;
    {
        D::name
        } -> std::convertible_to<std::string_view>;
    {
        D::is_available()
        } -> std::convertible_to<bool>;
    {
        D::host_memory
        } -> std::convertible_to<bool>;
};

namespace detail
{
template <class...>
inline constexpr bool always_false = false;

/// @brief The largest of x[0], ..., x[n - 1] (n > 0), the first of equals as std::max_element
/// picks it; callable in kernels (softmax, log_softmax and cross-entropy shift rows by it).
template <class T>
EMBER_HOST_DEVICE T row_max(const T* x, std::size_t n) noexcept
{
    T top = x[0];
    for (std::size_t j = 1; j < n; ++j)
        if (top < x[j])
            top = x[j];
    return top;
}
} // namespace detail

} // namespace ember
