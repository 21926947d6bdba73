#!/usr/bin/env bash
# Runs examples/linear_regression in a fresh folder and checks that it prints exactly what
# PyTorch prints for the lesson's workflow (tests/golden/linear_regression.out, written by
# scripts/golden_workflow.py from real PyTorch), and that its files are there and well formed.
set -euo pipefail
example=$(realpath "$1")
golden=$(realpath "$2")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
"$example" > out.txt
# The checkpoint's timestamp is the time of each run: check its form, then mask it on both sides.
grep -Eq '^Saved: [0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}$' out.txt \
  || { echo "FAIL: no 'Saved: <ISO 8601 timestamp>' line"; grep '^Saved' out.txt; exit 1; }
mask() { sed -E 's/^Saved: .*/Saved: <timestamp>/' "$1"; }
if ! diff -u <(mask "$golden") <(mask out.txt); then
  echo "FAIL: the workflow's output differs from PyTorch's (above: - PyTorch, + ember)"
  exit 1
fi
for f in linear_model.pth checkpoint.tar training.svg; do
  [ -s "$f" ] || { echo "FAIL: $f was not written"; exit 1; }
done
if command -v python3 >/dev/null; then
  python3 -c 'import sys, xml.etree.ElementTree as ET; r = ET.parse(sys.argv[1]).getroot(); assert r.tag.endswith("svg"), r.tag' training.svg \
    || { echo "FAIL: training.svg is not well-formed SVG"; exit 1; }
fi
grep -q "Training Progress" training.svg && grep -q "Final Predictions" training.svg \
  || { echo "FAIL: training.svg lacks the lesson's two panels"; exit 1; }
echo "workflow matches PyTorch"
