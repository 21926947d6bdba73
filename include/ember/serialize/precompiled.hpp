// The instantiations of ember's file formats that src/ember_formats.cpp compiles once: saving
// and loading state_dicts, optimizer states and checkpoints in every format, and the in-place
// route of ember::save(model, path) / ember::load(model, path). file.hpp includes this list as
// explicit instantiation declarations (EMBER_FORMATS_EXTERN = extern) when
// EMBER_PRECOMPILED_FORMATS is defined, so those translation units compile none of the format
// code; ember_formats.cpp includes it as the definitions. No include guard: it is a list.

#ifndef EMBER_FORMATS_EXTERN
#error "ember/serialize/precompiled.hpp is included by file.hpp and src/ember_formats.cpp only"
#endif

#define EMBER_FORMATS_FOR(T)                                                                       \
    EMBER_FORMATS_EXTERN template void save<T>(const T&, const std::filesystem::path&);            \
    EMBER_FORMATS_EXTERN template void save<T>(const T&, const std::filesystem::path&,             \
                                               file_format);                                       \
    EMBER_FORMATS_EXTERN template T load<T>(const std::filesystem::path&);                         \
    EMBER_FORMATS_EXTERN template T load<T>(const std::filesystem::path&, file_format);

namespace ember
{
EMBER_FORMATS_FOR(state_dict)
EMBER_FORMATS_FOR(optim::optimizer_state)
EMBER_FORMATS_FOR(checkpoint)

namespace detail
{
EMBER_FORMATS_EXTERN template void save_container<state_dict_view>(const state_dict_view&,
                                                                   const std::filesystem::path&);
EMBER_FORMATS_EXTERN template state_dict_view
    decode_container<state_dict_view>(std::span<const std::byte>, std::string_view);
EMBER_FORMATS_EXTERN template state_dict decode<state_dict>(std::span<const std::byte>, file_format,
                                                            std::string_view);
} // namespace detail
} // namespace ember

#undef EMBER_FORMATS_FOR
