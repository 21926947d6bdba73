#!/usr/bin/env bash
# Renders an example's SVG figure in a browser and checks the picture:
#
#   check_svg_render.sh EXAMPLE SVG WIDTHxHEIGHT [#rrggbb...]
#
# runs EXAMPLE in a fresh folder, has headless Chromium (Debian's `chromium`) screenshot SVG at
# WIDTHxHEIGHT pixels, decodes the PNG (Python's zlib, no imaging library) and checks that it is
# that size, that it is not blank (many colours, a good share of the pixels not white) and that
# each colour given covers at least 1% of it (e.g. the fills of classification's decision
# regions). Exits 77 (a skipped test, for Meson) when Chromium or python3 is not installed.
set -euo pipefail
browser=$(command -v chromium || command -v chromium-browser || true)
python=$(command -v python3 || true)
if [ -z "$browser" ] || [ -z "$python" ]; then
  echo "SKIP: no chromium or python3 here (Debian: apt-get install chromium)"
  exit 77
fi
example=$(realpath "$1")
svg=$2
size=$3
shift 3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
"$example" > out.txt 2> err.txt || { echo "FAIL: $(basename "$example") exited with $?"; exit 1; }
[ -s "$svg" ] || { echo "FAIL: $svg was not written"; exit 1; }

# A profile folder of its own, so the test neither reads nor writes the user's.
timeout 120 "$browser" --headless --disable-gpu --no-sandbox --hide-scrollbars \
  --user-data-dir="$work/profile" --window-size="${size/x/,}" \
  --screenshot="$work/figure.png" "file://$work/$svg" > browser.log 2>&1 || true
[ -s figure.png ] || { echo "FAIL: Chromium wrote no screenshot"; tail -20 browser.log; exit 1; }

"$python" - figure.png "$size" "$@" <<'PY'
import struct, sys, zlib

path, size, colors = sys.argv[1], sys.argv[2], sys.argv[3:]
data = open(path, "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
pos, idat, header = 8, b"", None
while pos < len(data):
    length, kind = struct.unpack(">I4s", data[pos:pos + 8])
    chunk = data[pos + 8:pos + 8 + length]
    if kind == b"IHDR":
        header = struct.unpack(">IIBBBBB", chunk)
    elif kind == b"IDAT":
        idat += chunk
    pos += 12 + length
width, height, depth, color_type, _, _, interlace = header
assert depth == 8 and color_type in (2, 6) and interlace == 0, header
want_w, want_h = (int(v) for v in size.split("x"))
assert (width, height) == (want_w, want_h), f"{width}x{height}, expected {size}"
channels = 3 if color_type == 2 else 4
stride = width * channels
raw = zlib.decompress(idat)
pixels = bytearray()
previous = bytearray(stride)
for row in range(height):
    kind, line = raw[row * (stride + 1)], bytearray(raw[row * (stride + 1) + 1:(row + 1) * (stride + 1)])
    for i in range(stride):
        a = line[i - channels] if i >= channels else 0
        b = previous[i]
        c = previous[i - channels] if i >= channels else 0
        if kind == 1:
            line[i] = (line[i] + a) & 255
        elif kind == 2:
            line[i] = (line[i] + b) & 255
        elif kind == 3:
            line[i] = (line[i] + (a + b) // 2) & 255
        elif kind == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    pixels += line
    previous = line
counts = {}
for i in range(0, len(pixels), channels):
    rgb = bytes(pixels[i:i + 3])
    counts[rgb] = counts.get(rgb, 0) + 1
total = width * height
white = counts.get(b"\xff\xff\xff", 0)
print(f"{path}: {width}x{height}, {len(data)} bytes, {len(counts)} colours, "
      f"{100 * (total - white) / total:.1f}% not white")
assert len(data) > 10_000, f"only {len(data)} bytes"
assert len(counts) >= 16, f"only {len(counts)} colours: a blank or failed render"
assert total - white >= total // 20, "under 5% of the pixels are not white"
for c in colors:
    rgb = bytes.fromhex(c.lstrip("#"))
    share = counts.get(rgb, 0) / total
    print(f"  {c}: {100 * share:.1f}% of the pixels")
    assert share >= 0.01, f"{c} covers {100 * share:.2f}% of the picture, expected at least 1%"
PY
echo "$svg renders in Chromium"
