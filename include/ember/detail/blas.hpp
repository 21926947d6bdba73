#pragma once
/// @file
/// Row-major matrix products through OpenBLAS's CBLAS, called directly: xtensor-blas would
/// cost compile time and build temporaries for transposed operands, and the layers only ever
/// need C = alpha op(A) op(B) + beta C on raw contiguous buffers.
///
/// Built with oneDNN (EMBER_WITH_ONEDNN, which Meson defines where it finds libdnnl-dev), the
/// float products go to oneDNN's dnnl_sgemm instead. It picks its kernels from the CPU's
/// instruction set, where OpenBLAS 0.3.21 (Debian 12's) picks them from a table of known CPU
/// models: on an AMD EPYC of family 26 (Zen 5), which that table does not know, OpenBLAS runs
/// its AVX2 (Haswell) kernels and took twice oneDNN's time for the MLP benchmark's products
/// (docs/benchmarks.md, "oneDNN's products"). What it costs: dnnl_sgemm takes a workspace from
/// malloc and frees it in every call of more than a few thousand multiply-adds (not from
/// operator new), where OpenBLAS on one thread takes none. The double products stay OpenBLAS's.
/// The products then run on up to get_num_threads() threads (OpenMP's, in the calling thread's
/// setting; one per half a million multiply-adds of the product where they spin while they wait,
/// 8 million where OMP_WAIT_POLICY=PASSIVE has them sleep), as torch.set_num_threads sets
/// PyTorch's.

#include "ember/core/error.hpp"
#include "ember/core/threads.hpp"

#include <cblas.h>
#if defined(EMBER_WITH_ONEDNN)
#include "ember/detail/openmp.hpp" // omp_get_max_threads, omp_set_num_threads
#include <oneapi/dnnl/dnnl.h>
#endif

#include <algorithm>
#include <cctype>
#include <climits>
#include <cstddef>
#include <string>
#include <string_view>

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

/// @brief The library the float products go to: "oneDNN" or "OpenBLAS".
const char* float_gemm_library() noexcept;

/// @brief True where the BLAS is OpenBLAS running its AVX-512 kernels (SkylakeX and the cores
/// that share them: Cooperlake, SapphireRapids), as it says at run time. Their sgemm packs a
/// transposed left-hand operand slowly enough that nn::linear turns its forward product round
/// at small batches (linear.hpp, product_transposed()); OpenBLAS's Haswell and Zen kernels did
/// not gain as much or lost, and other BLAS libraries were not measured.
bool openblas_avx512_kernels() noexcept;

/// @brief True where a linear layer's forward product is faster computed as y^T = W x^T (then
/// transposed) than as y = x W^T, for a batch of `batch` rows, `out` outputs and `in` inputs: at
/// batch 8 to 32 with in and out both 256 or more, under openblas_avx512_kernels(), when the float
/// products are OpenBLAS's. With oneDNN's, never: faster at batch 16 to 48 on the Intel Xeon of
/// docs/benchmarks.md, but oneDNN's two ways round are not the same sums, and linear's output is
/// the direct product's to the bit. One rule for nn::linear and for the benchmarks' roofline
/// (benchmarks/mlp_products.hpp), which must take the faster way wherever linear does.
bool transposed_product_faster(std::size_t batch, std::size_t out, std::size_t in) noexcept;

/*******************
 * implementation  *
 *******************/

namespace blas
{
/// `text` with ASCII letters in lower case: the names these products read from the environment
/// and from OpenBLAS come in either case.
inline std::string ascii_lowercase(std::string_view text)
{
    std::string lower(text);
    for (char& c : lower)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return lower;
}

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

#if defined(EMBER_WITH_ONEDNN)
/// Multiply-adds a thread of a oneDNN product gets at least, by how libgomp's threads wait.
/// Waking a sleeping OpenMP thread costs tens of microseconds (OMP_WAIT_POLICY=PASSIVE: the MLP
/// benchmark's products at batch 64 took 502 µs on two threads against 389 µs on one, on the
/// AMD EPYC of docs/benchmarks.md), about what one thread takes for 4-8 million; from 8 million
/// a thread, two threads were never slower than one, waiting actively or not, and at batch 256
/// took 1083 µs against 1489 µs. A spinning thread starts at once: on the Intel Xeon of
/// docs/benchmarks.md (m3v), two threads, GOMP's default, the same products at batch 64 took
/// 369-375 µs from 2 million a thread, 449-464 from 4 and 631-647 from 8 (the first layer's
/// 12.8 million then on one thread), the SGD step 671-682 against 782-817 µs, Adam's 706-737
/// against 802-857; with PASSIVE, 2 million made the products slower (781-825 against 644-648).
/// Once the optimizer's updates ran on OpenMP's threads too (detail/openmp.hpp), no longer
/// fighting ember's own for the cores, smaller parts paid: the same Xeon, two threads, the step
/// at batch 16 with half a million a thread took 273-281 µs (SGD) and 329-339 (Adam), against
/// 355-360 and 404-417 from 2 million (the first layer's 3.2 million on one thread); 1 million,
/// 297-311 and 355-366; a quarter million, as half. Batch 64 and 256 stayed as they were.
inline constexpr double onednn_macs_per_sleeping_thread = 8.0 * (1 << 20);
inline constexpr double onednn_macs_per_spinning_thread = 0.5 * (1 << 20);

/// onednn_macs_per_sleeping_thread where OMP_WAIT_POLICY is PASSIVE, else the spinning one
/// (the environment read once, as libgomp reads it once).
inline double onednn_macs_per_thread()
{
    return openmp_threads_sleep() ? onednn_macs_per_sleeping_thread
                                  : onednn_macs_per_spinning_thread;
}

/// The OpenMP threads a oneDNN product of m x n x k is worth: one per `macs_per_thread`
/// multiply-adds, at least 1, at most get_num_threads(); 1 in a child of fork() that lost
/// OpenMP's threads (openmp_team_lost(), detail/openmp.hpp).
inline int gemm_threads(std::size_t m, std::size_t n, std::size_t k,
                        double macs_per_thread = onednn_macs_per_thread())
{
    if (openmp_team_lost())
        return 1;
    const double macs = double(m) * double(n) * double(k);
    const double worth = std::clamp(macs / macs_per_thread, 1.0, 4096.0);
    return std::min(static_cast<int>(worth), get_num_threads());
}

inline void onednn_sgemm(bool trans_a, bool trans_b, std::size_t m, std::size_t n, std::size_t k,
                         float alpha, const float* a, std::size_t lda, const float* b,
                         std::size_t ldb, float beta, float* c, std::size_t ldc)
{
    if (m == 0 || n == 0)
        return;
    if (k == 0) // C = beta C, with beta == 0 clearing whatever C held (NaN included)
    {
        for (std::size_t i = 0; i < m; ++i)
            for (std::size_t j = 0; j < n; ++j)
                c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
        return;
    }
    // oneDNN runs on the calling thread's OpenMP setting: set for this product, then given back,
    // so that the program's own OpenMP code keeps its setting
    const int threads = gemm_threads(m, n, k), setting = omp_get_max_threads();
    if (threads > 1)
        note_openmp_team();
    if (threads != setting)
        omp_set_num_threads(threads);
    const auto dim = [](std::size_t v) { return static_cast<dnnl_dim_t>(v); };
    const dnnl_status_t status =
        dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', dim(m), dim(n), dim(k), alpha, a,
                   dim(lda), b, dim(ldb), beta, c, dim(ldc));
    if (threads != setting)
        omp_set_num_threads(setting);
    if (status != dnnl_success)
        throw value_error("gemm: oneDNN's sgemm refused M = " + std::to_string(m) +
                          ", N = " + std::to_string(n) + ", K = " + std::to_string(k) + " (lda " +
                          std::to_string(lda) + ", ldb " + std::to_string(ldb) + ", ldc " +
                          std::to_string(ldc) + "): status " + std::to_string(int(status)));
}
#endif
} // namespace blas

inline void gemm(bool trans_a, bool trans_b, std::size_t m, std::size_t n, std::size_t k,
                 float alpha, const float* a, std::size_t lda, const float* b, std::size_t ldb,
                 float beta, float* c, std::size_t ldc)
{
#if defined(EMBER_WITH_ONEDNN)
    blas::onednn_sgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
#else
    blas::gemm(&cblas_sgemm, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
#endif
}

inline void gemm(bool trans_a, bool trans_b, std::size_t m, std::size_t n, std::size_t k,
                 double alpha, const double* a, std::size_t lda, const double* b, std::size_t ldb,
                 double beta, double* c, std::size_t ldc)
{
    blas::gemm(&cblas_dgemm, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

inline const char* float_gemm_library() noexcept
{
#if defined(EMBER_WITH_ONEDNN)
    return "oneDNN";
#else
    return "OpenBLAS";
#endif
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
        const std::string name = blas::ascii_lowercase(core);
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
#if defined(EMBER_WITH_ONEDNN)
    (void)batch, (void)out, (void)in;
    return false;
#else
    return batch >= 8 && batch <= 32 && out >= 256 && in >= 256 && openblas_avx512_kernels();
#endif
}

} // namespace ember::detail
