#pragma once
/// @file
/// ember's data pipeline in one include: datasets, CSV files, splits, randperm and the
/// data_loader.

#include "ember/data/csv.hpp"
#include "ember/data/data_loader.hpp"
#include "ember/data/dataset.hpp"
#include "ember/data/randperm.hpp"
#include "ember/data/split.hpp"
