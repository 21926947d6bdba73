#pragma once
/// @file
/// cuda: the Thrust policy on an NVIDIA GPU. Tensors live in GPU memory, kernels are Thrust
/// launches of ember's extended lambdas, matrix products go to cuBLAS. Compile with nvcc
/// (`--extended-lambda`, `-std=c++20`) and link cublas and cudart; Meson's `cuda` option does it.
///
/// cuda::is_available() is false, never a crash, on a machine without a GPU, without a driver,
/// or with a driver older than the runtime.

#if !defined(__CUDACC__)
#error "ember/device/cuda.hpp is CUDA C++: compile it with nvcc"
#endif

#include "ember/core/error.hpp"
#include "ember/device/thrust.hpp"
#include "ember/device/thrust_loops.hpp"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <thrust/system/cuda/execution_policy.h>
#include <thrust/system/cuda/vector.h>

#include <climits>
#include <cstddef>
#include <memory>
#include <string>
#include <type_traits>

namespace ember
{

namespace detail
{
inline void cuda_check(cudaError_t status, const char* what)
{
    if (status != cudaSuccess)
        throw device_error(std::string("cuda: ") + what + ": " + cudaGetErrorString(status));
}

inline void cublas_check(cublasStatus_t status, const char* what)
{
    if (status != CUBLAS_STATUS_SUCCESS)
        throw device_error(std::string("cuda: ") + what + ": cuBLAS status " +
                           std::to_string(static_cast<int>(status)));
}

// One cuBLAS handle per host thread, made on first use and destroyed with the thread.
inline cublasHandle_t cublas_handle()
{
    struct deleter
    {
        void operator()(cublasHandle_t h) const noexcept { cublasDestroy(h); }
    };
    thread_local std::unique_ptr<std::remove_pointer_t<cublasHandle_t>, deleter> handle = []
    {
        cublasHandle_t h = nullptr;
        cublas_check(cublasCreate(&h), "cublasCreate");
        return std::unique_ptr<std::remove_pointer_t<cublasHandle_t>, deleter>(h);
    }();
    return handle.get();
}

inline int cublas_int(std::size_t v, const char* what)
{
    if (v > static_cast<std::size_t>(INT_MAX))
        throw value_error(std::string("cuda: gemm: ") + what + " = " + std::to_string(v) +
                          " exceeds cuBLAS's int limit");
    return static_cast<int>(v == 0 ? 1 : v);
}
} // namespace detail

struct cuda_backend
{
    template <class T>
    using vector = thrust::cuda::vector<T>;
    static constexpr std::string_view name = "cuda";
    static constexpr bool host_memory = false;
    static auto policy() noexcept { return thrust::cuda::par; }
    using loops = detail::thrust_loops<cuda_backend>;

    /// @brief A usable GPU: the driver loads, is new enough for this runtime, and sees a device.
    static bool is_available() noexcept
    {
        int count = 0;
        if (cudaGetDeviceCount(&count) != cudaSuccess)
        {
            cudaGetLastError(); // clear the sticky error so later calls start clean
            return false;
        }
        return count > 0;
    }

    /// @brief Row-major C = alpha op(A) op(B) + beta C through column-major cuBLAS: a row-major
    /// matrix is its transpose in column-major, so compute C^T = op(B)^T op(A)^T.
    template <class T>
    static void gemm(bool ta, bool tb, std::size_t m, std::size_t n, std::size_t k, T alpha,
                     const T* a, std::size_t lda, const T* b, std::size_t ldb, T beta, T* c,
                     std::size_t ldc)
    {
        if (m == 0 || n == 0)
            return;
        if (k == 0) // C = beta C. cublas_int would make K 1 and read A and B (empty, here).
            return scale_by_beta(m, n, beta, c, ldc);
        const cublasOperation_t op_b = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
        const cublasOperation_t op_a = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
        const int M = detail::cublas_int(n, "N"), N = detail::cublas_int(m, "M"),
                  K = detail::cublas_int(k, "K");
        const int ld_b = detail::cublas_int(ldb, "ldb"), ld_a = detail::cublas_int(lda, "lda"),
                  ld_c = detail::cublas_int(ldc, "ldc");
        if constexpr (std::is_same_v<T, float>)
            detail::cublas_check(cublasSgemm(detail::cublas_handle(), op_b, op_a, M, N, K, &alpha,
                                             b, ld_b, a, ld_a, &beta, c, ld_c),
                                 "cublasSgemm");
        else
            detail::cublas_check(cublasDgemm(detail::cublas_handle(), op_b, op_a, M, N, K, &alpha,
                                             b, ld_b, a, ld_a, &beta, c, ld_c),
                                 "cublasDgemm");
    }

    /// @brief C = beta C for gemm's K = 0: zeros where beta is 0 (NaN in C included, as BLAS
    /// does), nothing where it is 1, else cuBLAS's geam in place (C = beta C + 0 C).
    template <class T>
    static void scale_by_beta(std::size_t m, std::size_t n, T beta, T* c, std::size_t ldc)
    {
        if (beta == T(1))
            return;
        if (beta == T(0))
        {
            detail::cuda_check(cudaMemset2D(c, ldc * sizeof(T), 0, n * sizeof(T), m), "gemm");
            return;
        }
        const int M = detail::cublas_int(n, "N"), N = detail::cublas_int(m, "M"),
                  ld_c = detail::cublas_int(ldc, "ldc");
        const T zero = 0;
        if constexpr (std::is_same_v<T, float>)
            detail::cublas_check(cublasSgeam(detail::cublas_handle(), CUBLAS_OP_N, CUBLAS_OP_N, M,
                                             N, &beta, c, ld_c, &zero, c, ld_c, c, ld_c),
                                 "cublasSgeam");
        else
            detail::cublas_check(cublasDgeam(detail::cublas_handle(), CUBLAS_OP_N, CUBLAS_OP_N, M,
                                             N, &beta, c, ld_c, &zero, c, ld_c, c, ld_c),
                                 "cublasDgeam");
    }

    static void upload(const void* host, std::size_t bytes, void* dst)
    {
        detail::cuda_check(cudaMemcpy(dst, host, bytes, cudaMemcpyHostToDevice), "upload");
    }
    static void download(const void* src, std::size_t bytes, void* host)
    {
        detail::cuda_check(cudaMemcpy(host, src, bytes, cudaMemcpyDeviceToHost), "download");
    }
};

/// @brief NVIDIA GPU through Thrust's CUDA system and cuBLAS.
using cuda = thrust_device<cuda_backend>;

} // namespace ember
