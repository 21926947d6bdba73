#pragma once
/// @file
/// An optimizer's state_dict in PyTorch's layout: per-parameter state keyed by the parameter's
/// index across all groups (`{0: {"momentum_buffer": tensor}, ...}`), and `param_groups`, a list
/// of option maps each with the indices of its parameters under `params`.

#include "ember/core/host_tensor.hpp"
#include "ember/core/ordered_dict.hpp"
#include "ember/detail/precompiled.hpp"

#include <cstdint>
#include <map>
#include <string>
#include <variant>
#include <vector>

namespace ember::optim
{

/// @brief One value in an optimizer's state_dict: None, a bool, an int, a float, a tuple of
/// floats (Adam's `betas`), a tensor, or a string (a key of a group's own, as `'name'`).
using state_value = std::variant<std::monostate, bool, std::int64_t, double, std::vector<double>,
                                 host_tensor, std::string>;

/// @brief One parameter group: its options by PyTorch's names, then its parameter indices.
struct param_group_state
{
    ordered_dict<state_value> options;
    std::vector<std::int64_t> params;

    friend bool operator==(const param_group_state&, const param_group_state&) = default;
};

/// @brief What `optimizer.state_dict()` returns in PyTorch.
struct optimizer_state
{
    std::map<std::int64_t, ordered_dict<state_value>> state;
    std::vector<param_group_state> param_groups;

    friend bool operator==(const optimizer_state&, const optimizer_state&) = default;
};

} // namespace ember::optim

namespace ember
{
EMBER_PRECOMPILED_EXTERN_CLASS(ordered_dict<optim::state_value>) // options, state
} // namespace ember
