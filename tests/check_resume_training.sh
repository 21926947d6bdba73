#!/usr/bin/env bash
# Runs examples/resume_training in a fresh folder: it must print exactly what PyTorch prints for
# the same exercise (tests/golden/resume_training.out, written by
# scripts/golden_resume_training.py), exit 0 (its resumed run is bitwise the straight one) and
# leave its checkpoint.tar behind.
set -euo pipefail
example=$(realpath "$1")
golden=$(realpath "$2")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
status=0
"$example" > out.txt || status=$?
if ! diff -u "$golden" out.txt; then
  echo "FAIL: resume_training's output differs from PyTorch's (above: - PyTorch, + ember)"
  exit 1
fi
[ "$status" -eq 0 ] || { echo "FAIL: resume_training exited with $status"; exit 1; }
[ -s checkpoint.tar ] || { echo "FAIL: checkpoint.tar was not written"; exit 1; }
echo "resumed run equals the straight run, and PyTorch's"
