#pragma once
/// @file
/// The cpu device policy: tensors are xtensor containers in host memory, loops are plain loops
/// the compiler vectorizes, matrix products go to BLAS. A device policy is the only place that
/// knows how a tensor is stored and how a loop runs; modules, losses and optimizers name
/// `Device::tensor_type<T, N>` and call the policy's operations (see device/kernel.hpp).
///
/// The loops run in index order and sums accumulate left to right, which is what makes cpu
/// results reproducible bit for bit (and equal to PyTorch's where the tests say so).

#include "ember/core/host_tensor.hpp"
#include "ember/core/tensor.hpp"
#include "ember/detail/blas.hpp"
#include "ember/device/kernel.hpp"

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <string_view>
#include <vector>

namespace ember
{

/// @brief Host memory, xtensor containers, BLAS.
struct cpu
{
    template <class T, std::size_t N>
    using tensor_type = tensor<T, N>;
    template <class T>
    using vector_type = std::vector<T>;

    static constexpr std::string_view name = "cpu";
    static constexpr bool host_memory = true;

    /// @brief Always true: there is always a CPU.
    static bool is_available() noexcept { return true; }

    /// @brief f(i) for i = 0, 1, ..., n - 1, in order.
    template <class F>
    static void for_each(std::size_t n, F&& f)
    {
        for (std::size_t i = 0; i < n; ++i)
            f(i);
    }

    /// @brief f(0) + f(1) + ... + f(n - 1), accumulated left to right in Acc.
    template <class Acc, class F>
    static Acc sum(std::size_t n, F&& f)
    {
        Acc s = Acc(0);
        for (std::size_t i = 0; i < n; ++i)
            s += f(i);
        return s;
    }

    /// @brief C = alpha op(A) op(B) + beta C, row-major (see detail::gemm).
    template <class T>
    static void gemm(bool trans_a, bool trans_b, std::size_t m, std::size_t n, std::size_t k,
                     T alpha, const T* a, std::size_t lda, const T* b, std::size_t ldb, T beta,
                     T* c, std::size_t ldc)
    {
        detail::gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    }

    template <class T>
    static void copy(const T* src, std::size_t n, T* dst) noexcept
    {
        if (n != 0)
            std::memmove(dst, src, n * sizeof(T));
    }
    template <class T>
    static void fill(T* dst, std::size_t n, T value) noexcept
    {
        std::fill(dst, dst + n, value);
    }
    template <class T>
    static void upload(const T* host, std::size_t n, T* dst) noexcept
    {
        copy(host, n, dst);
    }
    template <class T>
    static void download(const T* src, std::size_t n, T* host) noexcept
    {
        copy(src, n, host);
    }

    /// @brief A device tensor → a host tensor (a copy).
    template <class T, std::size_t N>
    static host_tensor to_host(const tensor_type<T, N>& t)
    {
        return host_tensor::from(t);
    }

    /// @brief Copies a host tensor (or a view of one) into an existing device tensor of the
    /// same dtype and shape.
    template <class T, std::size_t N>
    static void copy_from_host(const host_tensor_view& h, tensor_type<T, N>& out,
                               std::string_view what)
    {
        h.copy_to(out, what);
    }
};

/// @brief `dst` takes the shape and values of `src`, reusing its storage when the shape is
/// the same (what `xt::noalias(dst) = src` does, on any device).
template <class Device, class Tensor>
void assign(Tensor& dst, const Tensor& src)
{
    resize_if_needed(dst, src.shape());
    Device::copy(src.data(), src.size(), dst.data());
}

} // namespace ember
