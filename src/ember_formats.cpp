// ember's file formats and its SVG figure, compiled once for the programs that link them
// (Meson: ember_formats_dep; elsewhere: compile this file into the program and define
// EMBER_PRECOMPILED_FORMATS for every other file). ember stays header-only without it; with
// it, a program that saves, loads and draws does not compile that code into each of its
// files. This file is compiled without EMBER_PRECOMPILED_FORMATS: it holds the definitions.
#if defined(EMBER_PRECOMPILED_FORMATS)
#error "compile ember_formats.cpp without EMBER_PRECOMPILED_FORMATS"
#endif

#define EMBER_FORMATS_DEFINITIONS // the figure's out-of-line definitions (plot/svg.hpp)
#include "ember/plot/svg.hpp"
#include "ember/serialize/file.hpp"

#define EMBER_FORMATS_EXTERN
#include "ember/serialize/precompiled.hpp"
#undef EMBER_FORMATS_EXTERN
