#!/usr/bin/env bash
# Rebuilds tests/golden/container_v1.hpp: files in ember's container version 1, written by the
# headers of commit eef3fb0 (the last that wrote version 1), for the backward-compatibility test.
#   bash scripts/make_container_v1_fixture.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git -C "$root" archive eef3fb0 include | tar -x -C "$work"
g++ -std=c++20 -O1 -I"$work/include" -I/usr/include "$root/scripts/container_v1_fixture.cpp" \
    -o "$work/fixture" -lz
"$work/fixture" "$work" > "$root/tests/golden/container_v1.hpp"
echo "wrote tests/golden/container_v1.hpp"
