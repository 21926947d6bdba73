#pragma once
/// @file
/// Everything ember offers, in one include. Each header also stands alone: include only
/// `ember/nn/linear.hpp` and `ember/optim/sgd.hpp` to train without compiling serialization,
/// or only `ember/serialize/file.hpp` to load files without compiling optimizers.

#include "ember/version.hpp"

#include "ember/core/error.hpp"
#include "ember/core/flush_denormal.hpp"
#include "ember/core/generator.hpp"
#include "ember/core/grad_mode.hpp"
#include "ember/core/host_tensor.hpp"
#include "ember/core/state_dict.hpp"
#include "ember/core/tensor.hpp"
#include "ember/core/threads.hpp"

#include "ember/device/cpu.hpp"
#include "ember/device/dispatch.hpp"
#include "ember/device/transfer.hpp"

#include "ember/nn/gradcheck.hpp"
#include "ember/nn/layers.hpp"
#include "ember/nn/module.hpp"
#include "ember/nn/parameter.hpp"

#include "ember/loss/losses.hpp"

#include "ember/optim/optimizers.hpp"

#include "ember/data/data.hpp"

#include "ember/serialize/cereal.hpp"
#include "ember/serialize/checkpoint_manager.hpp"
#include "ember/serialize/file.hpp"
#include "ember/serialize/module.hpp"
#include "ember/serialize/pytorch.hpp"
#include "ember/serialize/safetensors.hpp"

#include "ember/history.hpp"
#include "ember/metrics.hpp"
#include "ember/progress.hpp"

#include "ember/plot/svg.hpp"
