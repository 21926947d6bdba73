#pragma once
/// @file
/// state_dict: the learned state of a module as name → host tensor, in PyTorch's key layout
/// (`weight`, `fc1.bias`, `0.weight`, `bn.running_mean`, `bn.num_batches_tracked`).

#include "ember/core/host_tensor.hpp"
#include "ember/core/ordered_dict.hpp"

namespace ember
{

/// @brief Insertion-ordered map from parameter or buffer name to host tensor.
using state_dict = ordered_dict<host_tensor>;

} // namespace ember
