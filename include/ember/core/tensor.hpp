#pragma once
/// @file
/// Tensor aliases and shape helpers. ember's host tensors are xtensor containers with a rank
/// fixed at compile time, so shape mistakes in rank are caught by the compiler and the rest by
/// check_shape(), which throws a message a user can act on.

#include "ember/core/error.hpp"
#include "ember/detail/tensor_allocator.hpp"
#include "ember/detail/xtensor.hpp"

#include <array>
#include <cstddef>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>

namespace ember
{

/// @brief A host tensor of element type T and rank N (row-major, contiguous): an xtensor container
/// whose bytes come from detail::tensor_allocator, which gives tensors of 4 MiB and more huge pages
/// on Linux (a file loaded into large parameters is copied with far fewer TLB misses).
template <class T, std::size_t N>
using tensor = xt::xtensor<T, N, xt::layout_type::row_major, detail::tensor_allocator<T>>;

/// @brief `[35, 1]`: a shape as PyTorch prints it, for error messages.
template <class S>
std::string shape_string(const S& shape)
{
    // A hostile file's shape can have millions of dimensions; a message shows the first 32.
    constexpr std::size_t shown = 32;
    std::string s = "[";
    std::size_t rank = 0;
    for (auto d : shape)
    {
        if (rank < shown)
            s += (rank == 0 ? "" : ", ") + std::to_string(d);
        ++rank;
    }
    if (rank > shown)
        s += ", ... (" + std::to_string(rank) + " dimensions)";
    return s + "]";
}

/// @brief Throws shape_error naming `what` unless `actual` equals `expected`.
template <class A, class E>
void check_shape(const A& actual, const E& expected, std::string_view what)
{
    bool same = std::size(actual) == std::size(expected) &&
                std::equal(std::begin(actual), std::end(actual), std::begin(expected),
                           [](auto a, auto b)
                           { return static_cast<std::size_t>(a) == static_cast<std::size_t>(b); });
    if (!same)
        throw shape_error(std::string(what) + ": expected shape " + shape_string(expected) +
                          ", got " + shape_string(actual));
}

/// @brief Resizes `t` to `shape` only when it differs, so a buffer reused with the same shape
/// keeps its storage (xtensor's resize() would otherwise be a no-op too, but this is explicit
/// about the intent and also works for shapes given as other containers).
template <class T, std::size_t N, class S>
void resize_if_needed(tensor<T, N>& t, const S& shape)
{
    bool same = true;
    for (std::size_t i = 0; i < N; ++i)
        same = same && t.shape()[i] == static_cast<std::size_t>(shape[i]);
    if (!same)
    {
        std::array<std::size_t, N> s{};
        for (std::size_t i = 0; i < N; ++i)
            s[i] = static_cast<std::size_t>(shape[i]);
        t.resize(s);
    }
}

} // namespace ember
