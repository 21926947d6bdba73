#pragma once
/// @file
/// What Thrust's host systems (OpenMP, sequential C++) share: their memory is host memory, so
/// transfers are memory copies and matrix products go to the same BLAS as cpu's.

#include "ember/detail/blas.hpp"
#include "ember/device/thrust.hpp"

#include <cstddef>
#include <cstring>

namespace ember::detail
{

/// @brief Base of the host back ends; a back end adds `vector`, `loops` and `name`.
struct thrust_host_backend
{
    static constexpr bool host_memory = true;
    static bool is_available() noexcept { return true; }

    template <class T>
    static void gemm(bool ta, bool tb, std::size_t m, std::size_t n, std::size_t k, T alpha,
                     const T* a, std::size_t lda, const T* b, std::size_t ldb, T beta, T* c,
                     std::size_t ldc)
    {
        detail::gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    }
    static void upload(const void* host, std::size_t bytes, void* dst) noexcept
    {
        std::memmove(dst, host, bytes);
    }
    static void download(const void* src, std::size_t bytes, void* host) noexcept
    {
        std::memmove(host, src, bytes);
    }
};

} // namespace ember::detail
