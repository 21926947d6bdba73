#!/usr/bin/env bash
# Compiles each source that must not compile and checks that the compiler stops with the
# expected message: tensors of two devices in one operation are a compile-time error.
# usage: check_compile_fail.sh COMPILER INCLUDE_DIR SOURCE...
set -uo pipefail
cxx=$1 inc=$2
shift 2
status=0
for src in "$@"; do
  if out=$("$cxx" -std=c++20 -fopenmp -fsyntax-only -I"$inc" "$src" 2>&1); then
    echo "FAIL: $src compiled, but mixes devices"
    status=1
  elif ! grep -q "ember: this tensor is on another device; move it with ember::to<Device>()" <<<"$out"; then
    echo "FAIL: $src failed to compile without ember's message:"
    head -20 <<<"$out"
    status=1
  else
    echo "ok: $src: $(grep -m1 -o 'ember: this tensor is on another device[^"]*' <<<"$out")"
  fi
done
exit $status
