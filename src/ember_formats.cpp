// ember's file formats, compiled once for the programs that link them (Meson: ember_formats_dep;
// elsewhere: compile this file into the program and define EMBER_PRECOMPILED_FORMATS for every
// other file). ember stays header-only without it; with it, a program that saves and loads
// state_dicts and checkpoints does not compile every format's code into each of its files.
// This file is compiled without EMBER_PRECOMPILED_FORMATS: it holds the definitions.
#if defined(EMBER_PRECOMPILED_FORMATS)
#error "compile ember_formats.cpp without EMBER_PRECOMPILED_FORMATS"
#endif

#include "ember/serialize/file.hpp"

#define EMBER_FORMATS_EXTERN
#include "ember/serialize/precompiled.hpp"
#undef EMBER_FORMATS_EXTERN
