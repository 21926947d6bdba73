#pragma once
/// @file
/// grad_view: a parameter's gradient as optimizers read it, an array or an outer product that
/// was never written out (parameter::keep_grad_as_outer).

#include "ember/detail/simd_dispatch.hpp"
#include "ember/device/kernel.hpp"

#include <cstddef>

namespace ember::nn
{

/// @brief A parameter's gradient as optimizers read it: `size` elements in an array (`dense`),
/// or, where a backward kept it as an outer product (parameter::keep_grad_as_outer), its two
/// vectors, element (i, j) of the [rows, cols] gradient being left[i] * right[j]. From those,
/// an optimizer writes a piece at a time into a buffer that stays in L1 and updates from there,
/// so that a linear layer's weight gradient at batch 1 is neither written out in full by the
/// backward nor read back by the step.
template <class T>
struct grad_view
{
    const T* dense = nullptr; // nullptr when the gradient is an outer product
    const T* left = nullptr;  // [rows]
    const T* right = nullptr; // [cols]
    std::size_t cols = 0;
    std::size_t size = 0;

    bool is_outer() const noexcept { return left != nullptr; }

    /// @brief Elements [first, first + count) of an outer product into `out`, each
    /// fma(left[i], right[j], +0): the bits a matrix product over an inner dimension of one
    /// writes with FMA kernels, which add the product to a zero. That is the plain product but
    /// where a factor is zero: 0 * -1 gives +0 there, while a product that rounds to -0 stays
    /// -0. tests/test_layers.cpp checks them against detail::gemm's. Inlined into the
    /// optimizers' dispatched loops (optim::detail::grad_pieces), to vectorize as wide as they.
    EMBER_SIMD_INLINE EMBER_HOST_DEVICE void write(std::size_t first, std::size_t count,
                                                   T* out) const noexcept
    {
        if (count == 0)
            return;
        std::size_t i = first / cols, j = first % cols;
        while (count != 0)
        {
            const std::size_t len = count < cols - j ? count : cols - j;
            const T l = left[i];
            const T* r = right + j;
            // x + -0 is x for every x, and x + +0 turns a -0 into +0, which only an exact
            // product of zero must become (0 * inf is NaN either way). No branch in the loop:
            // it vectorizes.
            const T keep_sign = l == T(0) ? T(0) : T(-0.0);
            for (std::size_t k = 0; k < len; ++k)
                out[k] = l * r[k] + (r[k] == T(0) ? T(0) : keep_sign);
            out += len;
            count -= len;
            j = 0;
            ++i;
        }
    }
};

} // namespace ember::nn
