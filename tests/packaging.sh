#!/usr/bin/env bash
# Proves ember can be used from outside its own build, the three ways a user would:
#   1. installed, found by Meson through pkg-config      (tests/consumer/meson)
#   2. installed, found by CMake through emberConfig.cmake (tests/consumer/cmake)
#   3. as a Meson subproject, via meson.override_dependency (tests/consumer/subproject)
#   4. installed, with its precompiled part (<datadir>/ember/ember_precompiled.cpp) compiled
#      into the program and EMBER_PRECOMPILED defined for the rest, by hand with pkg-config
# Each builds and runs tests/consumer/main.cpp, which exits non-zero when ember disagrees
# with PyTorch. Runs as the 'packaging' test of `meson test`; by hand:
#   bash tests/packaging.sh /path/to/ember-source
# Everything happens in one scratch folder, removed on exit (EMBER_KEEP_TMP=1 keeps it).
set -euo pipefail

src=$(cd "${1:?usage: packaging.sh EMBER_SOURCE_ROOT}" && pwd)
consumers=$src/tests/consumer
work=$(mktemp -d "${TMPDIR:-/tmp}/ember-packaging.XXXXXX")
prefix=$work/prefix
step=start

cleanup() {
    local rc=$?
    if ((rc != 0)); then
        echo "packaging: FAILED during step: $step (exit $rc)" >&2
    fi
    if [[ ${EMBER_KEEP_TMP:-0} == 1 ]]; then
        echo "packaging: scratch folder kept: $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

begin() {
    step=$1
    echo
    echo "=== packaging: $step"
}

# A consumer project: its build file plus the shared main.cpp, copied out of the source tree so
# that nothing is ever built inside it.
stage_consumer() { # NAME BUILD_FILE
    mkdir -p "$work/$1"
    cp "$consumers/$1/$2" "$consumers/main.cpp" "$work/$1/"
}

cmake_generator=()
if command -v ninja >/dev/null; then
    cmake_generator=(-G Ninja)
fi

begin "configure ember (-Dtests=false -Dexamples=false -Dtools=false -Dbenchmarks=disabled, prefix $prefix)"
meson setup "$work/ember-build" "$src" --prefix "$prefix" -Dtests=false -Dexamples=false -Dtools=false -Dbenchmarks=disabled

begin "install ember into $prefix"
meson install -C "$work/ember-build"

begin "check the installed files"
pc=$(find "$prefix" -name ember.pc -path '*/pkgconfig/*' -print -quit)
cmake_config=$(find "$prefix" -name emberConfig.cmake -path '*/cmake/ember/*' -print -quit)
for f in "$prefix/include/ember/core/generator.hpp" "$prefix/include/ember/nn/module.hpp" \
         "$pc" "$cmake_config" "${cmake_config%/*}/emberConfigVersion.cmake"; do
    if [[ ! -f $f ]]; then
        echo "missing from the install: ${f:-ember.pc or emberConfig.cmake}" >&2
        exit 1
    fi
done
caller_pkg_config_path=${PKG_CONFIG_PATH:-}
export PKG_CONFIG_PATH="${pc%/*}${caller_pkg_config_path:+:$caller_pkg_config_path}"
echo "pkg-config --cflags ember: $(pkg-config --cflags ember)"
cxx_std=$(pkg-config --variable=cxx_std ember)
if [[ $cxx_std != c++20 ]]; then
    echo "ember.pc: cxx_std is '$cxx_std', expected c++20" >&2
    exit 1
fi

begin "consumer via pkg-config: configure"
stage_consumer meson meson.build
meson setup "$work/meson/build" "$work/meson"
begin "consumer via pkg-config: build"
ninja -C "$work/meson/build"
begin "consumer via pkg-config: run"
"$work/meson/build/app" "$work/meson/state.ember"

begin "consumer via CMake find_package: configure"
stage_consumer cmake CMakeLists.txt
# No build type: the compiler's default flags, the quickest build; the package is what is tested.
cmake -S "$work/cmake" -B "$work/cmake/build" "${cmake_generator[@]}" \
    -DCMAKE_PREFIX_PATH="$prefix"
# The package must come from the fresh install, not from some other ember on the machine.
ember_dir=$(sed -n 's/^ember_DIR:PATH=//p' "$work/cmake/build/CMakeCache.txt")
if [[ $ember_dir != "$prefix"/* ]]; then
    echo "find_package(ember) found $ember_dir, not the package under $prefix" >&2
    exit 1
fi
begin "consumer via CMake find_package: build"
cmake --build "$work/cmake/build"
begin "consumer via CMake find_package: run"
"$work/cmake/build/app" "$work/cmake/state.ember"

begin "consumer with ember as a Meson subproject: configure"
stage_consumer subproject meson.build
mkdir "$work/subproject/subprojects"
ln -s "$src" "$work/subproject/subprojects/ember"
# No PKG_CONFIG_PATH: the installed ember.pc must not be what answers dependency('ember').
PKG_CONFIG_PATH=$caller_pkg_config_path meson setup "$work/subproject/build" "$work/subproject"
begin "consumer with ember as a Meson subproject: build"
ninja -C "$work/subproject/build"
begin "consumer with ember as a Meson subproject: run"
"$work/subproject/build/app" "$work/subproject/state.ember"

begin "consumer with the installed precompiled part: build (pkg-config flags, by hand)"
precompiled_src=$(find "$prefix" -name ember_precompiled.cpp -path '*/ember/*' -print -quit)
if [[ ! -f $precompiled_src ]]; then
    echo "missing from the install: <datadir>/ember/ember_precompiled.cpp" >&2
    exit 1
fi
mkdir -p "$work/precompiled"
read -ra ember_cflags <<<"$(pkg-config --cflags ember)"
read -ra ember_libs <<<"$(pkg-config --libs ember)"
cxx=${CXX:-c++}
# -O0: what is checked is that the two files link and agree, not how fast they run.
"$cxx" -std=c++20 -O0 "${ember_cflags[@]}" -c "$precompiled_src" \
    -o "$work/precompiled/ember_precompiled.o"
"$cxx" -std=c++20 -O0 "${ember_cflags[@]}" -DEMBER_PRECOMPILED -c "$consumers/main.cpp" \
    -o "$work/precompiled/main.o"
"$cxx" "$work/precompiled/main.o" "$work/precompiled/ember_precompiled.o" \
    -o "$work/precompiled/app" "${ember_libs[@]}"
begin "consumer with the installed precompiled part: run"
"$work/precompiled/app" "$work/precompiled/state.ember"

step=finished
echo
echo "packaging: all four consumers built and ran"
