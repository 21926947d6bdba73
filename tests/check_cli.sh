#!/usr/bin/env bash
# Tests the `ember` command line on the files the lesson's example writes: inspect shows the
# checkpoint's fields, verify accepts whole files and rejects corrupt and truncated ones with a
# non-zero exit and the error on stderr, and convert moves the same content between every
# format (PyTorch -> JSON -> PyTorch and ember -> XML -> ember are byte for byte the original;
# PyTorch -> safetensors -> PyTorch gives the same tensors bit for bit).
#   tests/check_cli.sh build/tools/ember build/examples/linear_regression
set -euo pipefail
ember=$(realpath "$1")
example=$(realpath "$2")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
"$example" > /dev/null
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# inspect: the lesson's fields, with shapes, dtypes and values.
"$ember" inspect checkpoint.tar > inspect.txt
for line in "epoch: 100" "model_state_dict:" "  weight: tensor float32 [1] = [" \
            "  bias: tensor float32 [1] = [" "optimizer_state_dict:" "  param_groups:" \
            "      lr: 0.01" "      params: [0, 1]" "train_loss: 0.00357" "val_loss: 0.01887" \
            "hyperparameters:" "  learning_rate: 0.01" "  weight: 0.7" "  bias: 0.3" \
            "timestamp: '" "ember_version: '" "global_step: 100" "  default: generator(seed=42"; do
  grep -qF -- "$line" inspect.txt || fail "inspect checkpoint.tar lacks '$line'"
done
head -1 inspect.txt | grep -q "checkpoint.tar: checkpoint, PyTorch zip (torch.save)" \
  || fail "inspect's first line does not say what the file is: $(head -1 inspect.txt)"
"$ember" inspect linear_model.pth > sd.txt
grep -q "^weight: tensor float32 \[1\] = \[0.4398" sd.txt || fail "inspect linear_model.pth: $(cat sd.txt)"

# verify: whole files pass.
"$ember" verify checkpoint.tar > /dev/null || fail "verify rejects the example's checkpoint.tar"
"$ember" verify linear_model.pth > /dev/null || fail "verify rejects linear_model.pth"

# convert: every format, the same content; ember -> JSON -> ember is bit-identical.
for ext in json xml bin cereal ember pt; do
  "$ember" convert checkpoint.tar "c.$ext" > /dev/null || fail "convert to .$ext"
  "$ember" verify "c.$ext" > /dev/null || fail "verify c.$ext"
  "$ember" inspect "c.$ext" | tail -n +2 > "c.$ext.txt"
  diff -q <(tail -n +2 inspect.txt) "c.$ext.txt" > /dev/null \
    || fail "inspect c.$ext differs from inspect checkpoint.tar"
done
# (A PyTorch file's records sit in a folder named after the file: same name, same bytes.)
mkdir back
"$ember" convert c.json back/checkpoint.tar > /dev/null
cmp -s checkpoint.tar back/checkpoint.tar || fail "checkpoint.tar -> c.json -> back/checkpoint.tar is not byte for byte the original"
"$ember" convert c.xml back2.ember > /dev/null
cmp -s c.ember back2.ember || fail "c.ember -> c.xml -> back2.ember differs"
"$ember" convert linear_model.pth sd.json > /dev/null && "$ember" convert sd.json back/linear_model.pth > /dev/null
cmp -s linear_model.pth back/linear_model.pth || fail "linear_model.pth -> JSON -> .pth differs"

# safetensors: PyTorch -> safetensors -> PyTorch -> safetensors. safetensors stores each tensor's
# raw bytes (ordered by dtype and name, as the reference writer does), so equal safetensors
# files mean bit-identical tensors both ways; the PyTorch files list the same tensors.
"$ember" convert linear_model.pth m.safetensors > /dev/null || fail "convert .pth -> .safetensors"
"$ember" convert m.safetensors back/m.pth > /dev/null || fail "convert .safetensors -> .pth"
"$ember" convert back/m.pth m2.safetensors > /dev/null || fail "convert .pth -> .safetensors again"
cmp -s m.safetensors m2.safetensors || fail "linear_model.pth -> safetensors -> .pth -> safetensors changed a tensor"
"$ember" verify m.safetensors > /dev/null || fail "verify m.safetensors"
head -1 <("$ember" inspect m.safetensors) | grep -q "m.safetensors: state_dict, safetensors file" \
  || fail "inspect m.safetensors does not say what the file is"
diff -q <(tail -n +2 sd.txt | sort) <("$ember" inspect back/m.pth | tail -n +2 | sort) > /dev/null \
  || fail "inspect linear_model.pth and its safetensors round trip differ"
# A .tar or .pth that ember 0.1 wrote as its container still loads: the bytes decide.
"$ember" convert checkpoint.tar old.tar --to ember > /dev/null
"$ember" verify old.tar | grep -q "checkpoint, ember container version 2" \
  || fail "an ember container named .tar is not read as one"
cp m.safetensors sd-named.pth
"$ember" verify sd-named.pth | grep -q "safetensors" || fail "a safetensors file named .pth is not read as one"
status=0; "$ember" convert checkpoint.tar c.safetensors 2> err.txt || status=$?
[ "$status" = 1 ] && grep -q "safetensors" err.txt && [ ! -e c.safetensors ] \
  || fail "convert of a checkpoint to safetensors: exit $status, $(cat err.txt)"
grep -q '"val_loss": 0.01887' c.json || fail "c.json does not hold val_loss as a readable number"

# verify: a flipped byte and a truncation fail, non-zero, with the file named on stderr.
flip() { # flip the lowest bit of byte $2 of file $1
  local b; b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
  printf "\\$(printf %o $((b ^ 1)))" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}
# (In a text file not every byte is content: a changed value is what must be caught there.)
cp c.json bad-c.json && sed -i 's/"val_loss": 0.01887/"val_loss": 0.01987/' bad-c.json
cp c.xml bad-c.xml && sed -i 's|<val_loss>0.01887|<val_loss>0.01987|' bad-c.xml
cmp -s c.json bad-c.json && fail "could not change val_loss in c.json"
cmp -s c.xml bad-c.xml && fail "could not change val_loss in c.xml"
for f in checkpoint.tar c.json c.xml c.bin; do
  if [ "$f" = checkpoint.tar ] || [ "$f" = c.bin ]; then
    cp "$f" "bad-$f"
    flip "bad-$f" $(( $(stat -c %s "$f") / 2 ))
  fi
  if "$ember" verify "bad-$f" > out.txt 2> err.txt; then
    fail "verify accepts bad-$f with a flipped byte"
  fi
  grep -q "bad-$f" err.txt || fail "verify's error does not name bad-$f: $(cat err.txt)"
  [ -s out.txt ] && fail "verify printed to stdout for bad-$f"
  head -c 100 "$f" > "cut-$f"
  "$ember" verify "cut-$f" 2> err.txt > /dev/null && fail "verify accepts a truncated $f"
  grep -q "cut-$f" err.txt || fail "verify's error does not name cut-$f"
done
for f in checkpoint.tar c.json c.bin; do
  grep -Eq "checksum mismatch|fails its CRC-32 check" <("$ember" verify "bad-$f" 2>&1) \
    || fail "no checksum message for bad-$f"
done

# Usage and unknown formats.
status=0; "$ember" convert checkpoint.tar out.weights 2> err.txt || status=$?
[ "$status" = 1 ] || fail "convert to an unknown extension exits $status, expected 1"
grep -q "'.weights'" err.txt || fail "convert does not name the unknown extension: $(cat err.txt)"
status=0; "$ember" inspect 2> /dev/null || status=$?
[ "$status" = 2 ] || fail "inspect without a file exits $status, expected 2"
status=0; "$ember" verify missing.ember 2> err.txt || status=$?
[ "$status" = 1 ] && grep -q "missing.ember" err.txt || fail "verify of a missing file: $status $(cat err.txt)"
"$ember" inspect --format json c.json > /dev/null || fail "--format json"

if [ "$failures" -ne 0 ]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "ember command line: inspect, verify and convert work"
