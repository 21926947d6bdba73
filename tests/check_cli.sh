#!/usr/bin/env bash
# Tests the `ember` command line on the files the lesson's example writes: inspect shows the
# checkpoint's fields, verify accepts whole files and rejects corrupt and truncated ones with a
# non-zero exit and the error on stderr, and convert moves the same content between every
# format (PyTorch -> JSON -> PyTorch and ember -> XML -> ember are byte for byte the original;
# PyTorch -> safetensors -> PyTorch gives the same tensors bit for bit). inspect escapes what a
# file says and shortens long lists and strings, safetensors' __metadata__ is shown and carried,
# usage errors say what was wrong (exit 2), and a failed write to stdout is an error (exit 1).
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

# Usage errors: the reason first, then the usage, exit 2.
usage_case() { # usage_case REASON ARGS...: `ember ARGS` exits 2 with "ember: REASON", then usage
  local reason=$1 status=0; shift
  "$ember" "$@" > out.txt 2> err.txt || status=$?
  [ "$status" = 2 ] && [ "$(head -1 err.txt)" = "ember: $reason" ] && grep -q "^usage: " err.txt \
    && [ ! -s out.txt ] || fail "ember $*: exit $status, $(cat err.txt)"
}
usage_case "unknown command 'frobnicate'" frobnicate c.json
usage_case "no command given"
usage_case "inspect takes one FILE, got 2" inspect c.json c.xml
usage_case "inspect takes one FILE, got 0" inspect
usage_case "convert takes IN and OUT, got 1 file" convert c.json
usage_case "inspect does not take --to (it takes --format)" inspect c.json --to json
usage_case "convert does not take --format (it takes --from and --to)" convert c.json x.xml --format json
usage_case "unknown format 'bad' (one of ember, binary, portable, json, xml, pytorch, safetensors)" \
  inspect c.json --format bad
usage_case "--format needs a format, one of ember, binary, portable, json, xml, pytorch, safetensors" \
  inspect c.json --format
usage_case "--format given twice" inspect c.json --format json --format xml
usage_case "unknown option '--bogus'" inspect c.json --bogus
"$ember" --help | grep -q "2 a usage error" || fail "the usage does not give the exit status of a usage error"
# `--` ends the options: a file named like one.
cp c.json ./-c.json
"$ember" inspect -- -c.json | head -1 | grep -qF -- "-c.json: checkpoint, JSON archive" \
  || fail "inspect -- -c.json does not read the file -c.json"

# A write error on standard output is an error, not a success with the output cut short.
if [ -w /dev/full ]; then
  status=0; "$ember" inspect checkpoint.tar > /dev/full 2> err.txt || status=$?
  [ "$status" = 1 ] && grep -q "standard output" err.txt \
    || fail "inspect > /dev/full: exit $status, $(cat err.txt)"
fi

# A format given that the bytes contradict: the error says what the file is, in the tool's
# words (--format, not the C++ API's ember::file_format).
status=0; "$ember" verify c.ember --format json 2> err.txt || status=$?
[ "$status" = 1 ] && grep -qF "'c.ember' is an ember container, not a JSON archive" err.txt \
  || fail "verify c.ember --format json: exit $status, $(cat err.txt)"
grep -qF "is a PyTorch zip, not a safetensors file" <("$ember" verify checkpoint.tar --format safetensors 2>&1) \
  || fail "verify checkpoint.tar --format safetensors does not say it is a PyTorch zip"
grep -q -- "pass --to F" <("$ember" convert checkpoint.tar out.weights 2>&1) \
  || fail "convert to an unknown extension does not point to --to"
cp c.json c.weights
grep -q -- "pass --format F" <("$ember" inspect c.weights 2>&1) \
  || fail "inspect of an unknown extension does not point to --format"
cat <("$ember" convert checkpoint.tar out.weights 2>&1) <("$ember" inspect c.weights 2>&1) \
  | grep -q "ember::file_format" \
  && fail "a message of the tool points to the C++ API"

# What a file says reaches the terminal escaped as Python's repr escapes it: a key cannot
# recolour the screen, move the cursor, split its line, hide behind a NUL or print bytes that
# are not UTF-8; 'é' stays as it is. A safetensors file written here, header as given:
mkst() { # mkst FILE HEADER-JSON DATA-BYTES
  local n=${#2}
  { printf "\\x$(printf %02x $((n & 255)))\\x$(printf %02x $((n >> 8)))\\0\\0\\0\\0\\0\\0"
    printf '%s' "$2"; head -c "$3" /dev/zero; } > "$1"
}
long=$(printf 'x%.0s' $(seq 300))
f32() { echo "{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[$1,$(($1 + 4))]}"; }
mkst keys.safetensors '{"__metadata__":{"format":"pt","note":"bell\u0007 clear\u001b[2J","long":"'"$long"'"},'\
'"esc\u001b[31mred":'"$(f32 0)"',"new\nline":'"$(f32 4)"',"nul\u0000byte":'"$(f32 8)"','\
'"cr\rdel\u007f":'"$(f32 12)"',"caf\u00e9":'"$(f32 16)"',"back\\slash":'"$(f32 20)"','\
'"rlo\u202egnp.exe":'"$(f32 24)"'}' 28
"$ember" inspect keys.safetensors > keys.txt || fail "inspect keys.safetensors: $(cat keys.txt)"
for line in 'esc\x1b[31mred' 'new\nline' 'nul\x00byte' 'cr\rdel\x7f' 'café' 'back\\slash' \
            'rlo\u202egnp.exe'; do
  grep -qxF -- "$line: tensor float32 [1] = [0.0]" keys.txt \
    || fail "inspect keys.safetensors lacks '$line': $(cat -A keys.txt)"
done
grep -qxF -- "  note: 'bell\\x07 clear\\x1b[2J'" keys.txt \
  || fail "inspect keys.safetensors does not escape a string: $(cat -A keys.txt)"
LC_ALL=C grep -q $'[\x01-\x08\x0b-\x1f\x7f]' keys.txt && fail "inspect printed a control byte: $(cat -A keys.txt)"
[ "$(wc -l < keys.txt)" = 12 ] || fail "inspect keys.safetensors: a key split its line: $(cat -A keys.txt)"
# In a text archive (its checksum removed, as to edit it by hand): a key that is not UTF-8, a
# string with control bytes, and a list of 150 values, of which the first 100 are shown.
items=$(seq 0 149 | sed 's/.*/{"kind": "int", "value": &}/' | paste -sd,)
sed -e '/"ember_crc32"/d' \
    -e '/"key": "learning_rate"/,/}/{s/"kind": "float"/"kind": "list"/;s/"value": 0.01/"value": ['"$items"']/}' \
    -e 's/"key": "weight"/"key": "bad\xffkey"/' \
    -e 's/"timestamp": "[^"]*"/"timestamp": "\\u001b]0;title\\u0007\\r"/' c.json > h.json
"$ember" inspect h.json > h.txt || fail "inspect h.json: $(cat h.txt)"
for line in "  bad\\xffkey: 0.7" "timestamp: '\\x1b]0;title\\x07\\r'" "    [99]: 99" "    ... (50 more items)"; do
  grep -qxF -- "$line" h.txt || fail "inspect h.json lacks '$line': $(cat -A h.txt | head -40)"
done
grep -qF "[100]:" h.txt && fail "inspect h.json shows more than the first 100 items of a list"
# A dict of 150 plain values (here safetensors' __metadata__): its first 100 keys.
mkst many.safetensors '{"__metadata__":{'"$(seq 0 149 | sed 's/.*/"k&":"v"/' | paste -sd,)"'},"w":'"$(f32 0)"'}' 4
"$ember" inspect many.safetensors > many.txt || fail "inspect many.safetensors: $(cat many.txt)"
grep -qxF "  k99: 'v'" many.txt && grep -qxF "  ... (50 more keys)" many.txt && ! grep -q "k100" many.txt \
  || fail "inspect does not shorten a dict of 150 values: $(tail -3 many.txt)"
# A long string: its first 200 characters, then its length.
grep -qxF "  long: '${long:0:200}'... (300 bytes)" keys.txt || fail "inspect does not shorten a long string"

# safetensors' __metadata__: shown first, carried to safetensors, and said to stay behind when
# the target has no place for it.
sed -n 2,3p keys.txt | grep -qxF "  format: 'pt'" && [ "$(sed -n 2p keys.txt)" = "__metadata__:" ] \
  || fail "inspect keys.safetensors does not show __metadata__ first: $(head -5 keys.txt)"
"$ember" convert keys.safetensors keys2.safetensors > /dev/null || fail "convert keys.safetensors"
grep -qaF '"__metadata__":{"format":"pt","note":"bell\u0007 clear\u001b[2J","long":"xxx' keys2.safetensors \
  || fail "safetensors -> safetensors lost the __metadata__: $(head -c 300 keys2.safetensors)"
diff -q <(tail -n +2 keys.txt | sort) <("$ember" inspect keys2.safetensors | tail -n +2 | sort) > /dev/null \
  || fail "inspect keys.safetensors and keys2.safetensors differ"
"$ember" convert keys.safetensors keys.pth 2> err.txt > /dev/null || fail "convert keys.safetensors keys.pth"
grep -q "__metadata__ of 'keys.safetensors' (3 keys) is left out" err.txt \
  || fail "convert to .pth drops __metadata__ without a word: $(cat err.txt)"

if [ "$failures" -ne 0 ]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "ember command line: inspect, verify and convert work"
