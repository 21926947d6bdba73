#!/usr/bin/env bash
# Runs examples/linear_regression in a fresh folder and checks that it prints exactly what
# PyTorch prints for the lesson's workflow (tests/golden/linear_regression.out, written by
# scripts/golden_workflow.py from real PyTorch), and that its files are there and well formed.
set -euo pipefail
example=$(realpath "$1")
golden=$(realpath "$2")
device=${3:-cpu} # the device to run it on (the build's test_device); PyTorch's golden ran on cpu
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
"$example" --device "$device" > out.txt
grep -qx "Using device: $device" out.txt \
  || { echo "FAIL: no 'Using device: $device' line"; head -1 out.txt; exit 1; }
# The checkpoint's timestamp is the time of each run: check its form, then mask it on both sides.
grep -Eq '^Saved: [0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}$' out.txt \
  || { echo "FAIL: no 'Saved: <ISO 8601 timestamp>' line"; grep '^Saved' out.txt; exit 1; }
mask() { sed -E 's/^Saved: .*/Saved: <timestamp>/; s/^Using device: .*/Using device: <device>/' "$1"; }
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

# The files are PyTorch's own: when Debian's PyTorch is there, torch.load opens them and they
# hold the numbers the example printed (read from the golden above, not typed here).
torch_python=/usr/bin/python3
if [ -x "$torch_python" ] && "$torch_python" -c 'import torch' 2> /dev/null; then
  "$torch_python" - "$golden" <<'PY' || { echo "FAIL: PyTorch does not read the example's files as expected"; exit 1; }
import re, sys
import torch
from torch import nn

golden = open(sys.argv[1]).read()
def number(label):
    return float(re.search(r"^\s*" + re.escape(label) + r":? ([-0-9.]+)", golden, re.M).group(1))

class LinearRegressionModel(nn.Module):  # the lesson's model
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1))
        self.bias = nn.Parameter(torch.randn(1))
    def forward(self, x):
        return self.weight * x + self.bias

def load(path):
    # weights_only=True is what ember's files are written for; PyTorch 1.13's weights_only
    # unpickler is stricter than 2.x's about some of the checkpoint's values, so on 1.13 a
    # refusal falls back to a full load (the file holds only plain Python values and tensors).
    try:
        return torch.load(path, weights_only=True)
    except Exception as e:
        if not torch.__version__.startswith("1."):
            raise
        print(f"note: torch {torch.__version__} weights_only refused {path} ({e}); weights_only=False")
        return torch.load(path, weights_only=False)

model = LinearRegressionModel()
model.load_state_dict(load("linear_model.pth"))
w, b = model.weight.item(), model.bias.item()
assert f"{w:.4f}" == f"{number('Learned weight'):.4f}", f"weight {w}"
assert f"{b:.4f}" == f"{number('Learned bias'):.4f}", f"bias {b}"

ckpt = load("checkpoint.tar")
keys = ["epoch", "model_state_dict", "optimizer_state_dict", "train_loss", "val_loss",
        "hyperparameters", "timestamp"]
missing = [k for k in keys if k not in ckpt]
assert not missing, f"checkpoint.tar lacks {missing}: {list(ckpt)}"
assert any(k.endswith("_version") for k in ckpt), f"no version key: {list(ckpt)}"
assert ckpt["epoch"] == int(number("Checkpoint from epoch")), ckpt["epoch"]
assert f"{ckpt['train_loss']:.4f}" == f"{number('Train loss'):.4f}", ckpt["train_loss"]
assert f"{ckpt['val_loss']:.4f}" == f"{number('Val loss'):.4f}", ckpt["val_loss"]
restored = LinearRegressionModel()
restored.load_state_dict(ckpt["model_state_dict"])
optimizer = torch.optim.SGD(restored.parameters(), lr=0.01)
optimizer.load_state_dict(ckpt["optimizer_state_dict"])
assert set(ckpt["hyperparameters"]) == {"learning_rate", "weight", "bias"}, ckpt["hyperparameters"]
print(f"PyTorch {torch.__version__} loads linear_model.pth (weight {w:.4f}, bias {b:.4f}) "
      "and checkpoint.tar into the lesson's model and SGD")
PY
else
  echo "SKIP: /usr/bin/python3 has no torch; linear_model.pth and checkpoint.tar not opened in PyTorch"
fi
echo "workflow matches PyTorch"
