#pragma once
/// @file
/// thrust_loops<Backend>: a Thrust system's own algorithms as a thrust_device's loops, each
/// kernel a thrust::for_each_n over a counting iterator and each sum a thrust::transform_reduce,
/// with the system's execution policy (Backend::policy()). The CUDA back end and Thrust's
/// sequential one (thrust_cpp, which runs this code path on any machine) use them; the OpenMP
/// one runs its kernels through loops compiled once instead (device/omp_loops.hpp).
///
/// Also: how device_tensor fills and copies a Thrust vector, whose data() is a Thrust pointer
/// that may point into GPU memory.

#include "ember/device/device_tensor.hpp"

#include <thrust/copy.h>
#include <thrust/fill.h>
#include <thrust/for_each.h>
#include <thrust/functional.h>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/transform_reduce.h>

#include <cstddef>
#include <type_traits>
#include <utility>

namespace ember::detail
{

/// @brief The loops of a Thrust back end (see the file comment).
template <class Backend>
struct thrust_loops
{
    template <class F>
    static void for_each(std::size_t n, F f)
    {
        if (n != 0)
            thrust::for_each_n(Backend::policy(), thrust::counting_iterator<std::size_t>(0), n, f);
    }

    template <class Acc, class F>
    static Acc sum(std::size_t n, F f)
    {
        if (n == 0)
            return Acc(0);
        return thrust::transform_reduce(
            Backend::policy(), thrust::counting_iterator<std::size_t>(0),
            thrust::counting_iterator<std::size_t>(n), f, Acc(0), thrust::plus<Acc>());
    }

    template <class T>
    static void copy(const T* src, std::size_t n, T* dst)
    {
        thrust::copy_n(Backend::policy(), src, n, dst);
    }

    template <class T>
    static void fill(T* dst, std::size_t n, T value)
    {
        thrust::fill_n(Backend::policy(), dst, n, value);
    }
};

/// @brief A Thrust vector's elements, filled and copied with Thrust's algorithms (they know
/// whether the memory is the GPU's).
template <class Vector>
struct vector_ops<Vector,
                  std::enable_if_t<!std::is_pointer_v<decltype(std::declval<Vector&>().data())>>>
{
    using T = typename Vector::value_type;
    static T* data(Vector& v) noexcept { return thrust::raw_pointer_cast(v.data()); }
    static const T* data(const Vector& v) noexcept { return thrust::raw_pointer_cast(v.data()); }
    static void fill(Vector& v, std::size_t n, T value) { thrust::fill_n(v.begin(), n, value); }
    static void assign_from_host(Vector& v, std::size_t n, const T* host)
    {
        thrust::copy_n(host, n, v.begin());
    }
    static void copy_to_host(const Vector& v, std::size_t n, T* host)
    {
        thrust::copy_n(v.begin(), n, host);
    }
};

} // namespace ember::detail
