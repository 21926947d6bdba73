// ember's precompiled part: the file formats, the SVG figure, the training tools (history,
// progress bar, plot_history, split_lengths), and the optimizers and the common losses over
// float in host memory, compiled once for the programs that link it (Meson:
// ember_precompiled_dep; elsewhere: compile this file into the program and define
// EMBER_PRECOMPILED for every other file). ember stays header-only without it. With it, a
// program's files see only the declarations of the formats, the figure and the tools, and the
// optimizers and losses as extern templates (detail/precompiled.hpp): they parse none of the format
// code or the cereal, PyTorch and safetensors headers behind it, and generate none of that code.
// This file holds the definitions.
#if defined(EMBER_PRECOMPILED)
#error "compile ember_precompiled.cpp without EMBER_PRECOMPILED"
#endif

#define EMBER_PRECOMPILED_DEFINITIONS // the out-of-line definitions (detail/precompiled.hpp)
#include "ember/data/split.hpp"
#include "ember/history.hpp"
#include "ember/loss/cross_entropy.hpp"
#include "ember/loss/l1.hpp"
#include "ember/loss/mse.hpp"
#include "ember/optim/optimizers.hpp"
#include "ember/plot/history.hpp"
#include "ember/plot/svg.hpp"
#include "ember/progress.hpp"
#include "ember/serialize/file.hpp"
#include "ember/serialize/module.hpp"
#include "ember/serialize/pytorch.hpp"

// What the formats' declarations promise: saving and loading every type ember::save accepts,
// in every format, and ember::save(model, path)'s views of the parameters.
#define EMBER_PRECOMPILED_FORMATS_FOR(T)                                                           \
    template void save<T>(const T&, const std::filesystem::path&);                                 \
    template void save<T>(const T&, const std::filesystem::path&, file_format);                    \
    template T load<T>(const std::filesystem::path&);                                              \
    template T load<T>(const std::filesystem::path&, file_format);

namespace ember
{
// The dictionaries the headers declare extern (EMBER_PRECOMPILED_EXTERN_CLASS): a value's, the
// state_dict and its views, an optimizer's state, a checkpoint's generators.
template class ordered_dict<value>;
template class ordered_dict<host_tensor>;
template class ordered_dict<host_tensor_view>;
template class ordered_dict<optim::state_value>;
template class ordered_dict<generator_state>;

// The normal fill every randn and normal_ runs through (core/generator.hpp).
template void detail::fill_normal<float>(float*, std::size_t, double, double, generator&);
template void detail::fill_normal<double>(double*, std::size_t, double, double, generator&);

EMBER_PRECOMPILED_FORMATS_FOR(state_dict)
EMBER_PRECOMPILED_FORMATS_FOR(optim::optimizer_state)
EMBER_PRECOMPILED_FORMATS_FOR(checkpoint)

// PyTorch's format on its own (serialize/pytorch.hpp), for every type it holds.
#define EMBER_PRECOMPILED_PYTORCH_FOR(T)                                                           \
    template T pytorch::load<T>(const std::filesystem::path&, const pytorch::load_options&);       \
    template std::vector<std::byte> pytorch::to_bytes<T>(const T&, std::string_view);              \
    template T pytorch::from_bytes<T>(std::span<const std::byte>, std::string_view,                \
                                      const pytorch::load_options&);

EMBER_PRECOMPILED_PYTORCH_FOR(state_dict)
EMBER_PRECOMPILED_PYTORCH_FOR(optim::optimizer_state)
EMBER_PRECOMPILED_PYTORCH_FOR(checkpoint)
EMBER_PRECOMPILED_PYTORCH_FOR(value)

// ember::save(model, path): a module's parameters, written from where they are.
template void save<state_dict_view>(const state_dict_view&, const std::filesystem::path&,
                                    file_format);
} // namespace ember

// The optimizers the headers declare extern (optim/sgd.hpp, adam.hpp, rmsprop.hpp) on the cpu;
// src/ember_precompiled_thrust_omp.cpp has them on Thrust/OpenMP.
EMBER_SGD_INSTANCES(, ember::cpu)
EMBER_ADAM_INSTANCES(, ember::cpu)
EMBER_RMSPROP_INSTANCES(, ember::cpu)

// The losses the headers declare extern (loss/mse.hpp, l1.hpp, cross_entropy.hpp), likewise.
EMBER_MSE_INSTANCES(, ember::cpu)
EMBER_L1_INSTANCES(, ember::cpu)
EMBER_CROSS_ENTROPY_INSTANCES(, ember::cpu)
