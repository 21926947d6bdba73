#pragma once
/// @file
/// state_dict: the learned state of a module as name → host tensor, in PyTorch's key layout
/// (`weight`, `fc1.bias`, `0.weight`, `bn.running_mean`, `bn.num_batches_tracked`).

#include "ember/core/host_tensor.hpp"
#include "ember/core/ordered_dict.hpp"
#include "ember/detail/precompiled.hpp"

namespace ember
{

/// @brief Insertion-ordered map from parameter or buffer name to host tensor.
using state_dict = ordered_dict<host_tensor>;

/// @brief A state_dict whose tensors are views (of a module's parameters while they are saved,
/// of a mapped file while it is loaded): what `ember::save(model, path)` and
/// `ember::load(model, path)` use to move parameters without a copy in between.
using state_dict_view = ordered_dict<host_tensor_view>;

EMBER_PRECOMPILED_EXTERN_CLASS(ordered_dict<host_tensor>)
EMBER_PRECOMPILED_EXTERN_CLASS(ordered_dict<host_tensor_view>)

} // namespace ember
