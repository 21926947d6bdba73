#pragma once
/// @file
/// checkpoint: everything the lesson saves to resume training (epoch, model and optimizer
/// state, losses, hyperparameters, timestamp, library version), plus what an exact resume needs
/// and PyTorch's dictionary forgets: the global step, every generator's state, the LR
/// scheduler's state and the data loader's order and position.

#include "ember/core/generator.hpp"
#include "ember/core/ordered_dict.hpp"
#include "ember/core/state_dict.hpp"
#include "ember/core/value.hpp"
#include "ember/detail/precompiled.hpp"
#include "ember/optim/optimizer_state.hpp"
#include "ember/version.hpp"

#include <chrono>
#include <cstdint>
#include <ctime>
#include <limits>
#include <string>

namespace ember
{

EMBER_PRECOMPILED_EXTERN_CLASS(ordered_dict<generator_state>) // checkpoint::generators

/// @brief A full training checkpoint, field for field the lesson's dictionary, then the state
/// an exact resume needs.
struct checkpoint
{
    // The lesson's fields.
    std::int64_t epoch = 0;
    ember::state_dict model_state_dict;
    optim::optimizer_state optimizer_state_dict;
    double train_loss = std::numeric_limits<double>::quiet_NaN();
    double val_loss = std::numeric_limits<double>::quiet_NaN();
    value::dict hyperparameters;
    std::string timestamp;                      ///< ISO 8601, local time, as datetime.isoformat()
    std::string ember_version = ember::version; ///< the library that wrote it

    // What exact resume needs.
    std::int64_t global_step = 0;             ///< optimizer steps taken so far
    ordered_dict<generator_state> generators; ///< "default" and any named generators
    value scheduler_state;                    ///< LR scheduler's state_dict (None if none)
    value data_state;                         ///< data loader's order and position (None if none)
    value::dict extras;                       ///< anything else the user wants kept

    friend bool operator==(const checkpoint&, const checkpoint&) = default;
};

/// @brief The current local time as ISO 8601 with microseconds, like Python's
/// `datetime.datetime.now().isoformat()`.
inline std::string iso8601_now()
{
    using namespace std::chrono;
    const auto now = system_clock::now();
    const std::time_t t = system_clock::to_time_t(now);
    const auto micros = duration_cast<microseconds>(now.time_since_epoch()).count() % 1000000;
    std::tm local{};
    localtime_r(&t, &local);
    char buf[40];
    std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &local);
    std::snprintf(buf + n, sizeof buf - n, ".%06lld", static_cast<long long>(micros));
    return buf;
}

} // namespace ember
