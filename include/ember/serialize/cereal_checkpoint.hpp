#pragma once
/// @file
/// cereal support for ember::checkpoint. Included by ember/serialize/cereal.hpp; including
/// either is enough.
///
/// Every field is a named member, in the struct's order, so a JSON or XML checkpoint reads
/// like the lesson's dictionary:
///
/// ```json
/// {"checkpoint": {"cereal_class_version": 1, "epoch": 100, "model_state_dict": {...},
///  "optimizer_state_dict": {...}, "train_loss": 0.0032, "val_loss": 0.0185,
///  "hyperparameters": {...}, "timestamp": "2024-05-01T12:00:00.000000", ...}}
/// ```

#include "ember/serialize/cereal.hpp"
#include "ember/serialize/cereal_value.hpp"

#include "ember/serialize/checkpoint.hpp"

#include <cstdint>
#include <string>

namespace ember
{

template <class Archive>
void save(Archive& ar, const checkpoint& c, std::uint32_t /*version*/)
{
    ar(cereal::make_nvp("epoch", c.epoch), cereal::make_nvp("model_state_dict", c.model_state_dict),
       cereal::make_nvp("optimizer_state_dict", c.optimizer_state_dict));
    detail::save_double(ar, "train_loss", c.train_loss);
    detail::save_double(ar, "val_loss", c.val_loss);
    ar(cereal::make_nvp("hyperparameters", c.hyperparameters));
    detail::save_string(ar, "timestamp", c.timestamp);
    detail::save_string(ar, "ember_version", c.ember_version);
    ar(cereal::make_nvp("global_step", c.global_step), cereal::make_nvp("generators", c.generators),
       cereal::make_nvp("scheduler_state", c.scheduler_state),
       cereal::make_nvp("data_state", c.data_state), cereal::make_nvp("extras", c.extras));
}

template <class Archive>
void load(Archive& ar, checkpoint& c, std::uint32_t version)
{
    detail::check_version(version, 1, "checkpoint record");
    checkpoint loaded;
    auto field = [&](const char* name, auto&& body)
    { detail::in_context(std::string("checkpoint field '") + name + "'", body); };
    field("epoch", [&] { ar(cereal::make_nvp("epoch", loaded.epoch)); });
    field("model_state_dict",
          [&] { ar(cereal::make_nvp("model_state_dict", loaded.model_state_dict)); });
    field("optimizer_state_dict",
          [&] { ar(cereal::make_nvp("optimizer_state_dict", loaded.optimizer_state_dict)); });
    field("train_loss", [&] { detail::load_double(ar, "train_loss", loaded.train_loss); });
    field("val_loss", [&] { detail::load_double(ar, "val_loss", loaded.val_loss); });
    field("hyperparameters",
          [&] { ar(cereal::make_nvp("hyperparameters", loaded.hyperparameters)); });
    field("timestamp",
          [&] { detail::load_string(ar, "timestamp", loaded.timestamp, "timestamp"); });
    field("ember_version",
          [&] { detail::load_string(ar, "ember_version", loaded.ember_version, "ember_version"); });
    field("global_step", [&] { ar(cereal::make_nvp("global_step", loaded.global_step)); });
    field("generators", [&] { ar(cereal::make_nvp("generators", loaded.generators)); });
    field("scheduler_state",
          [&] { ar(cereal::make_nvp("scheduler_state", loaded.scheduler_state)); });
    field("data_state", [&] { ar(cereal::make_nvp("data_state", loaded.data_state)); });
    field("extras", [&] { ar(cereal::make_nvp("extras", loaded.extras)); });
    c = std::move(loaded);
}

} // namespace ember

CEREAL_CLASS_VERSION(ember::ordered_dict<ember::generator_state>, 1);
CEREAL_CLASS_VERSION(ember::checkpoint, 1);
