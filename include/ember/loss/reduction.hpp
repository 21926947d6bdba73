#pragma once
/// @file
/// How a loss folds its per-element values into the number forward() returns (PyTorch's
/// `reduction=` argument).

#include <string_view>

namespace ember::nn
{

/// @brief `mean` and `sum` as in PyTorch. With `none`, forward() returns the sum and the
/// per-element losses are read through the loss's losses().
enum class reduction
{
    mean,
    sum,
    none
};

/// @brief "mean", "sum" or "none": PyTorch's spelling, for messages.
constexpr std::string_view reduction_name(reduction r) noexcept
{
    switch (r)
    {
    case reduction::mean:
        return "mean";
    case reduction::sum:
        return "sum";
    case reduction::none:
        return "none";
    }
    return "?";
}

} // namespace ember::nn
