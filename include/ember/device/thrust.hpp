#pragma once
/// @file
/// thrust_device<Backend>: one device policy over every Thrust system. Tensors are
/// device_tensors over the back end's vector; a Backend says which vector, how loops and sums
/// run (`Backend::loops`: Thrust's algorithms with the system's execution policy,
/// device/thrust_loops.hpp, on CUDA and sequential C++; loops compiled once, device/omp_loops.hpp,
/// on OpenMP), how to multiply matrices and how to move bytes to and from the host: see
/// thrust_omp.hpp, thrust_cpp.hpp and cuda.hpp.
///
/// Sums on a parallel back end add in another order than cpu's left-to-right loop, so results
/// agree with cpu to rounding, not bit for bit.

#include "ember/core/dtype.hpp"
#include "ember/core/host_tensor.hpp"
#include "ember/device/device_tensor.hpp"
#include "ember/device/kernel.hpp"

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace ember
{

/// @brief The device policy of a Thrust system (see the file comment).
template <class Backend>
struct thrust_device
{
    using backend_type = Backend;

    template <class T>
    using vector_type = typename Backend::template vector<T>;
    template <class T, std::size_t N>
    using tensor_type = device_tensor<T, N, vector_type<T>>;

    static constexpr std::string_view name = Backend::name;
    static constexpr bool host_memory = Backend::host_memory;

    static bool is_available() noexcept { return Backend::is_available(); }

    /// @brief f(i) for every i < n, in any order, possibly in parallel.
    template <class F>
    static void for_each(std::size_t n, F f)
    {
        loops::for_each(n, f);
    }

    /// @brief The sum of f(i) over i < n, accumulated in Acc, in the back end's order.
    template <class Acc, class F>
    static Acc sum(std::size_t n, F f)
    {
        return loops::template sum<Acc>(n, f);
    }

    template <class T>
    static void gemm(bool trans_a, bool trans_b, std::size_t m, std::size_t n, std::size_t k,
                     T alpha, const T* a, std::size_t lda, const T* b, std::size_t ldb, T beta,
                     T* c, std::size_t ldc)
    {
        Backend::gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    }

    template <class T>
    static void copy(const T* src, std::size_t n, T* dst)
    {
        if (n != 0 && src != dst)
            loops::copy(src, n, dst);
    }
    template <class T>
    static void fill(T* dst, std::size_t n, T value)
    {
        if (n != 0)
            loops::fill(dst, n, value);
    }
    template <class T>
    static void upload(const T* host, std::size_t n, T* dst)
    {
        if (n != 0)
            Backend::upload(host, n * sizeof(T), dst);
    }
    template <class T>
    static void download(const T* src, std::size_t n, T* host)
    {
        if (n != 0)
            Backend::download(src, n * sizeof(T), host);
    }

    /// @brief A device tensor → a host tensor (a copy).
    template <class T, std::size_t N>
    static host_tensor to_host(const tensor_type<T, N>& t)
    {
        const auto& s = t.shape();
        host_tensor h(dtype_of<T>(), std::vector<std::int64_t>(s.begin(), s.end()));
        download(t.data(), t.size(), h.template data<T>().data());
        return h;
    }

    /// @brief Copies a host tensor (or a view of one) into an existing device tensor of the
    /// same dtype and shape.
    template <class T, std::size_t N>
    static void copy_from_host(const host_tensor_view& h, tensor_type<T, N>& out,
                               std::string_view what)
    {
        h.template check_matches<T>(out.shape(), what);
        upload(h.template data<T>().data(), out.size(), out.data());
    }

private:
    using loops = typename Backend::loops;
};

} // namespace ember
