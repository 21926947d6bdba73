#!/usr/bin/env bash
# Runs an example in a fresh folder and checks what it leaves behind:
#
#   check_example.sh EXAMPLE [--golden FILE] [--min-accuracy PERCENT] [--stderr REGEX] FILE...
#
# - it exits 0;
# - with --golden, its standard output is exactly FILE (written from real PyTorch by
#   scripts/golden_examples.py);
# - with --min-accuracy, its "Test accuracy: NN.NN%" line is at least PERCENT;
# - with --stderr, a line of its standard error matches the extended REGEX (its progress bar);
# - each FILE it must write is there and not empty; an .svg is well-formed XML with an <svg> root,
#   a .csv has a header and rows of as many numeric fields, and a .pth opens in PyTorch (when
#   Debian's python3 has torch) as a state_dict of tensors; a one-number weight and bias must
#   appear, to four decimals, in what the example printed.
set -euo pipefail
example=$(realpath "$1")
shift
golden=""
min_accuracy=""
stderr_regex=""
files=()
while [ $# -gt 0 ]; do
  case "$1" in
    --golden) golden=$(realpath "$2"); shift 2 ;;
    --min-accuracy) min_accuracy=$2; shift 2 ;;
    --stderr) stderr_regex=$2; shift 2 ;;
    *) files+=("$1"); shift ;;
  esac
done
name=$(basename "$example")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

status=0
"$example" > out.txt 2> err.txt || status=$?
if [ "$status" -ne 0 ]; then
  echo "FAIL: $name exited with $status"
  tail -5 out.txt err.txt
  exit 1
fi
if [ -n "$golden" ] && ! diff -u "$golden" out.txt; then
  echo "FAIL: $name's output differs from PyTorch's (above: - PyTorch, + ember)"
  exit 1
fi
if [ -n "$min_accuracy" ]; then
  accuracy=$(sed -nE 's/^ *Test accuracy: ([0-9.]+)%.*/\1/p' out.txt | tail -1)
  [ -n "$accuracy" ] || { echo "FAIL: $name printed no 'Test accuracy: NN.NN%' line"; exit 1; }
  awk -v a="$accuracy" -v m="$min_accuracy" 'BEGIN { exit !(a >= m) }' \
    || { echo "FAIL: $name's test accuracy is $accuracy%, below $min_accuracy%"; exit 1; }
  echo "test accuracy $accuracy% (at least $min_accuracy%)"
fi
if [ -n "$stderr_regex" ] && ! grep -Eq -- "$stderr_regex" err.txt; then
  echo "FAIL: no line of $name's standard error matches '$stderr_regex':"
  tail -5 err.txt
  exit 1
fi

python=$(command -v python3 || true)
torch_python=/usr/bin/python3
has_torch=no
if [ -x "$torch_python" ] && "$torch_python" -c 'import torch' 2> /dev/null; then
  has_torch=yes
fi
for f in "${files[@]}"; do
  [ -s "$f" ] || { echo "FAIL: $name did not write $f"; ls; exit 1; }
  case "$f" in
    *.svg)
      [ -n "$python" ] || continue
      "$python" - "$f" <<'PY' || { echo "FAIL: $f is not well-formed SVG"; exit 1; }
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
assert root.tag == "{http://www.w3.org/2000/svg}svg", root.tag
shapes = sum(1 for e in root.iter() if e.tag.split("}")[1] in ("polyline", "circle"))
assert shapes > 0, "no line or point drawn"
PY
      ;;
    *.csv)
      [ -n "$python" ] || continue
      "$python" - "$f" <<'PY' || { echo "FAIL: $f is not a history CSV"; exit 1; }
import csv, math, sys
rows = list(csv.reader(open(sys.argv[1], newline="")))
assert len(rows) >= 2, f"{len(rows)} lines"
header = rows[0]
assert header[0] == "epoch", header
for i, row in enumerate(rows[1:], 1):
    assert len(row) == len(header), f"row {i} has {len(row)} fields, the header {len(header)}"
    values = [float(v) for v in row]
    assert values[0] == i - 1, f"row {i}: epoch {values[0]}"
    assert all(math.isfinite(v) for v in values), f"row {i}: {row}"
PY
      ;;
    *.pth)
      [ "$has_torch" = yes ] || { echo "SKIP: no torch in $torch_python; $f not opened in PyTorch"; continue; }
      "$torch_python" - "$f" out.txt <<'PY' || { echo "FAIL: PyTorch does not read $f as printed"; exit 1; }
import sys, torch
path, printed = sys.argv[1], open(sys.argv[2]).read()
sd = torch.load(path)
assert isinstance(sd, dict) and sd, type(sd)
assert all(isinstance(v, torch.Tensor) for v in sd.values()), {k: type(v) for k, v in sd.items()}
if set(sd) == {"weight", "bias"} and sd["weight"].numel() == 1:
    w, b = sd["weight"].item(), sd["bias"].item()
    # The lesson's model: the example prints the weight and bias it saved or loaded.
    assert f"{w:.4f}" in printed and f"{b:.4f}" in printed, f"weight {w:.4f}, bias {b:.4f} not printed"
PY
      ;;
  esac
done
echo "$name: ok"
