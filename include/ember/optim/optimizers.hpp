#pragma once
/// @file
/// Umbrella: every optimizer (sgd, adam, adamw, rmsprop).

#include "ember/optim/adam.hpp"
#include "ember/optim/lr_scheduler.hpp"
#include "ember/optim/optimizer.hpp"
#include "ember/optim/rmsprop.hpp"
#include "ember/optim/sgd.hpp"
