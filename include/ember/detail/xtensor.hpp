#pragma once
/// @file
/// The one place that names xtensor's include paths: 0.24 (Debian 12) keeps them flat
/// (`xtensor/xtensor.hpp`), 0.26 moved them under `xtensor/containers/`. Everything in ember
/// includes this header instead of xtensor's own.

#if __has_include(<xtensor/containers/xtensor.hpp>)
#include <xtensor/containers/xtensor.hpp>
#include <xtensor/core/xmath.hpp>
#include <xtensor/core/xnoalias.hpp>
#include <xtensor/reducers/xreducer.hpp>
#include <xtensor/views/xview.hpp>
#else
#include <xtensor/xmath.hpp>
#include <xtensor/xnoalias.hpp>
#include <xtensor/xtensor.hpp>
#include <xtensor/xview.hpp>
#endif
