#pragma once
/// @file
/// Row-major matrix products through OpenBLAS's CBLAS, called directly: xtensor-blas would
/// cost compile time and build temporaries for transposed operands, and the layers only ever
/// need C = alpha op(A) op(B) + beta C on raw contiguous buffers.

#include "ember/core/error.hpp"

#include <cblas.h>

#include <cctype>
#include <climits>
#include <cstddef>
#include <string>

namespace ember::detail
{

/// @brief C = alpha * op(A) * op(B) + beta * C for row-major matrices, where op(X) is X, or X
/// transposed when its flag is set; op(A) is M x K, op(B) is K x N, C is M x N, and lda, ldb,
/// ldc are the row strides of A, B and C as stored. With beta == 0, C may hold anything.
void gemm(bool trans_a, bool trans_b, std::size_t m, std::size_t n, std::size_t k, float alpha,
          const float* a, std::size_t lda, const float* b, std::size_t ldb, float beta, float* c,
          std::size_t ldc);

/// @brief The double-precision overload of gemm().
void gemm(bool trans_a, bool trans_b, std::size_t m, std::size_t n, std::size_t k, double alpha,
          const double* a, std::size_t lda, const double* b, std::size_t ldb, double beta,
          double* c, std::size_t ldc);

/// @brief True where the BLAS is OpenBLAS running its AVX-512 kernels (SkylakeX and the cores
/// that share them: Cooperlake, SapphireRapids), as it says at run time. Their sgemm packs a
/// transposed left-hand operand slowly enough that nn::linear turns its forward product round
/// at small batches (linear.hpp, product_transposed()); OpenBLAS's Haswell and Zen kernels did
/// not gain as much or lost, and other BLAS libraries were not measured.
bool openblas_avx512_kernels() noexcept;

/// @brief True where a linear layer's forward product is faster computed as y^T = W x^T (then
/// transposed) than as y = x W^T, for a batch of `batch` rows, `out` outputs and `in` inputs: at
/// batch 8 to 32 with in and out both 256 or more, under openblas_avx512_kernels(). One rule for
/// nn::linear and for the benchmarks' roofline (benchmarks/mlp_products.hpp), which must take
/// the faster way wherever linear does.
bool transposed_product_faster(std::size_t batch, std::size_t out, std::size_t in) noexcept;

/*******************
 * implementation  *
 *******************/

namespace blas
{
// CBLAS takes int extents (blasint is 32-bit in Debian's OpenBLAS): refuse rather than wrap.
inline int to_int(std::size_t v, const char* what)
{
    if (v > static_cast<std::size_t>(INT_MAX))
        throw value_error(std::string("gemm: ") + what + " = " + std::to_string(v) +
                          " exceeds the BLAS limit of " + std::to_string(INT_MAX));
    return static_cast<int>(v);
}

// BLAS rejects a leading dimension below 1 even for empty matrices, and handles K == 0 itself
// (C = beta C); empty outputs are returned early so no pointer is ever read.
template <class T, class F>
void gemm(F cblas, bool trans_a, bool trans_b, std::size_t m, std::size_t n, std::size_t k, T alpha,
          const T* a, std::size_t lda, const T* b, std::size_t ldb, T beta, T* c, std::size_t ldc)
{
    if (m == 0 || n == 0)
        return;
    auto ld = [](std::size_t v, const char* what) { return to_int(v == 0 ? 1 : v, what); };
    cblas(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
          to_int(m, "M"), to_int(n, "N"), to_int(k, "K"), alpha, a, ld(lda, "lda"), b,
          ld(ldb, "ldb"), beta, c, ld(ldc, "ldc"));
}
} // namespace blas

inline void gemm(bool trans_a, bool trans_b, std::size_t m, std::size_t n, std::size_t k,
                 float alpha, const float* a, std::size_t lda, const float* b, std::size_t ldb,
                 float beta, float* c, std::size_t ldc)
{
    blas::gemm(&cblas_sgemm, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

inline void gemm(bool trans_a, bool trans_b, std::size_t m, std::size_t n, std::size_t k,
                 double alpha, const double* a, std::size_t lda, const double* b, std::size_t ldb,
                 double beta, double* c, std::size_t ldc)
{
    blas::gemm(&cblas_dgemm, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

inline bool openblas_avx512_kernels() noexcept
{
#if defined(OPENBLAS_VERSION)
    static const bool avx512 = []
    {
        // "SkylakeX" from a DYNAMIC_ARCH build (Debian's), "SKYLAKEX" from one built for a core.
        const char* core = openblas_get_corename();
        if (core == nullptr)
            return false;
        std::string name(core);
        for (char& c : name)
            c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        return name == "skylakex" || name == "cooperlake" || name == "sapphirerapids";
    }();
    return avx512;
#else
    return false;
#endif
}

// Measured in nn::linear (linear.hpp, above product_transposed()): 0.6-0.9 of the time at batch
// 8-32; as long or longer at 64 and above, and for the small layers (out or in under 256).
inline bool transposed_product_faster(std::size_t batch, std::size_t out, std::size_t in) noexcept
{
    return batch >= 8 && batch <= 32 && out >= 256 && in >= 256 && openblas_avx512_kernels();
}

} // namespace ember::detail
