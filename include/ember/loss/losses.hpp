#pragma once
/// @file
/// Every loss: mse_loss, l1_loss, huber_loss, smooth_l1_loss, cross_entropy_loss, nll_loss,
/// bce_loss, bce_with_logits_loss (all in ember::nn).

#include "ember/loss/bce.hpp"
#include "ember/loss/cross_entropy.hpp"
#include "ember/loss/huber.hpp"
#include "ember/loss/l1.hpp"
#include "ember/loss/mse.hpp"
#include "ember/loss/reduction.hpp"
