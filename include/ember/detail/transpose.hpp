#pragma once
/// @file
/// transpose(): b = a^T for row-major matrices on the host, written for the small results a
/// layer transposes after its product (linear's forward at small batches: a few thousand to a
/// few tens of thousands of elements, in the caches). Blocks of 4 x 4 floats go through SSE
/// registers, which every x86-64 CPU has; elsewhere, and for double, a plain loop.

#include <algorithm>
#include <cstddef>
#include <type_traits>

#if defined(__SSE2__) && !defined(__CUDACC__)
// SSE's own header only: <immintrin.h> would add most of a second to every file with a linear.
#include <xmmintrin.h>
#define EMBER_TRANSPOSE_SSE 1
#else
#define EMBER_TRANSPOSE_SSE 0
#endif

namespace ember::detail
{

/// @brief b = a^T: `a` is rows x cols, `b` is cols x rows, both row-major and contiguous, not
/// overlapping.
template <class T>
void transpose(std::size_t rows, std::size_t cols, const T* a, T* b) noexcept;

/*******************
 * implementation  *
 *******************/

namespace transpose_impl
{
template <class T>
void scalar(std::size_t row_begin, std::size_t rows, std::size_t cols, const T* a, T* b) noexcept
{
    for (std::size_t i = row_begin; i < rows; ++i)
        for (std::size_t j = 0; j < cols; ++j)
            b[j * rows + i] = a[i * cols + j];
}
} // namespace transpose_impl

template <class T>
void transpose(std::size_t rows, std::size_t cols, const T* a, T* b) noexcept
{
#if EMBER_TRANSPOSE_SSE
    if constexpr (std::is_same_v<T, float>)
    {
        // Output rows in bands of 16, so that the band's stores stay in a few cache lines per
        // row while `a` is read along four of its rows at a time; over the band, 4 x 4 blocks.
        // A 64 x 256 result: 5 µs, where the same loop element by element took 17 µs.
        const std::size_t rows4 = rows & ~std::size_t(3);
        const std::size_t cols4 = cols & ~std::size_t(3);
        constexpr std::size_t band = 16;
        for (std::size_t j0 = 0; j0 < cols4; j0 += band)
        {
            const std::size_t j1 = std::min(cols4, j0 + band);
            for (std::size_t i = 0; i < rows4; i += 4)
                for (std::size_t j = j0; j < j1; j += 4)
                {
                    __m128 r0 = _mm_loadu_ps(a + (i + 0) * cols + j);
                    __m128 r1 = _mm_loadu_ps(a + (i + 1) * cols + j);
                    __m128 r2 = _mm_loadu_ps(a + (i + 2) * cols + j);
                    __m128 r3 = _mm_loadu_ps(a + (i + 3) * cols + j);
                    _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
                    _mm_storeu_ps(b + (j + 0) * rows + i, r0);
                    _mm_storeu_ps(b + (j + 1) * rows + i, r1);
                    _mm_storeu_ps(b + (j + 2) * rows + i, r2);
                    _mm_storeu_ps(b + (j + 3) * rows + i, r3);
                }
        }
        // The last columns (cols4 .. cols) of every row, then the last rows whole.
        for (std::size_t i = 0; i < rows4; ++i)
            for (std::size_t j = cols4; j < cols; ++j)
                b[j * rows + i] = a[i * cols + j];
        transpose_impl::scalar(rows4, rows, cols, a, b);
        return;
    }
#endif
    transpose_impl::scalar(std::size_t(0), rows, cols, a, b);
}

} // namespace ember::detail
