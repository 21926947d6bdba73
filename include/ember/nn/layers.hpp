#pragma once
/// @file
/// Every built-in layer: linear, the activations, dropout, batch_norm1d, flatten, identity and
/// sequential.

#include "ember/nn/activation.hpp"
#include "ember/nn/batchnorm.hpp"
#include "ember/nn/clip_grad.hpp"
#include "ember/nn/dropout.hpp"
#include "ember/nn/flatten.hpp"
#include "ember/nn/identity.hpp"
#include "ember/nn/linear.hpp"
#include "ember/nn/sequential.hpp"
