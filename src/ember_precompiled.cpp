// ember's precompiled part: the file formats, the SVG figure and the optimizers over float
// parameters in host memory, compiled once for the programs that link it (Meson:
// ember_precompiled_dep; elsewhere: compile this file into the program and define
// EMBER_PRECOMPILED for every other file). ember stays header-only without it. With it, a
// program's files see only the formats' and the figure's declarations, and the optimizers as
// extern templates (detail/precompiled.hpp): they parse none of the format code or the cereal,
// PyTorch and safetensors headers behind it, and generate none of that code. This file holds
// the definitions.
#if defined(EMBER_PRECOMPILED)
#error "compile ember_precompiled.cpp without EMBER_PRECOMPILED"
#endif

#define EMBER_PRECOMPILED_DEFINITIONS // the out-of-line definitions (detail/precompiled.hpp)
#include "ember/optim/optimizers.hpp"
#include "ember/plot/svg.hpp"
#include "ember/serialize/file.hpp"
#include "ember/serialize/module.hpp"

// What the formats' declarations promise: saving and loading every type ember::save accepts,
// in every format, and ember::save(model, path)'s container of views.
#define EMBER_PRECOMPILED_FORMATS_FOR(T)                                                           \
    template void save<T>(const T&, const std::filesystem::path&);                                 \
    template void save<T>(const T&, const std::filesystem::path&, file_format);                    \
    template T load<T>(const std::filesystem::path&);                                              \
    template T load<T>(const std::filesystem::path&, file_format);

namespace ember
{
EMBER_PRECOMPILED_FORMATS_FOR(state_dict)
EMBER_PRECOMPILED_FORMATS_FOR(optim::optimizer_state)
EMBER_PRECOMPILED_FORMATS_FOR(checkpoint)

namespace detail
{
template void save_container<state_dict_view>(const state_dict_view&, const std::filesystem::path&);
} // namespace detail

// The optimizers the headers declare extern (optim/sgd.hpp, adam.hpp, rmsprop.hpp).
namespace optim
{
template class optimizer<sgd<float>, float, sgd_options, sgd_state<float>>;
template class sgd<float>;
template struct detail::adam_impl<float, cpu, false, adam_options>;
template struct detail::adam_impl<float, cpu, true, adamw_options>;
template class optimizer<adam<float>, float, adam_options, adam_state<float>>;
template class optimizer<adamw<float>, float, adamw_options, adam_state<float>>;
template class adam<float>;
template class adamw<float>;
template class optimizer<rmsprop<float>, float, rmsprop_options, rmsprop_state<float>>;
template class rmsprop<float>;
} // namespace optim
} // namespace ember
