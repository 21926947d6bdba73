// ember's precompiled part for the Thrust/OpenMP device: the optimizers and the common losses
// over float on ember::thrust_omp, which their headers declare extern in files built with
// EMBER_PRECOMPILED, EMBER_WITH_THRUST_OMP and OpenMP (see src/ember_precompiled.cpp for the
// rest), and the one function every kernel of the device runs through,
// detail::omp_run_chunks() (device/omp_loops.hpp), which those files only declare. Compile it with
// -fopenmp -DEMBER_WITH_THRUST_OMP and without EMBER_PRECOMPILED, beside ember_precompiled.cpp, in
// programs that run on that device (Meson: ember_precompiled_dep does it where Thrust and OpenMP
// were found). A program that does not use the device does not link this object: nothing it
// compiles refers to it.
#if defined(EMBER_PRECOMPILED)
#error "compile ember_precompiled_thrust_omp.cpp without EMBER_PRECOMPILED"
#endif
#if !defined(EMBER_WITH_THRUST_OMP) || !defined(_OPENMP)
#error "compile ember_precompiled_thrust_omp.cpp with -fopenmp -DEMBER_WITH_THRUST_OMP"
#endif

// The definitions (detail/precompiled.hpp) of this device alone: the device-independent ones
// are ember_precompiled.cpp's, linked beside this file.
#define EMBER_PRECOMPILED_DEFINITIONS
#define EMBER_PRECOMPILED_DEVICE_PART
#include "ember/device/thrust_omp.hpp"
#include "ember/loss/cross_entropy.hpp"
#include "ember/loss/l1.hpp"
#include "ember/loss/mse.hpp"
#include "ember/optim/optimizers.hpp"

EMBER_SGD_INSTANCES(, ember::thrust_omp)
EMBER_ADAM_INSTANCES(, ember::thrust_omp)
EMBER_RMSPROP_INSTANCES(, ember::thrust_omp)
EMBER_MSE_INSTANCES(, ember::thrust_omp)
EMBER_L1_INSTANCES(, ember::thrust_omp)
EMBER_CROSS_ENTROPY_INSTANCES(, ember::thrust_omp)
