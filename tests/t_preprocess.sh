#!/usr/bin/env bash
# t_preprocess.sh - `splitinfer preprocess` against PIL + torchvision.
#
# Runs build/splitinfer preprocess on the 100 sample photos (and on a few
# synthetic PNGs of awkward sizes and colour types, made here with PIL) and
# compares every tensor with torchvision's eval transform (Resize(256),
# CenterCrop(224), ToTensor, Normalize) in one Python process
# (tests/ref/preprocess_ref.py). Passes when every value is within 0.02
# (about one 8-bit step after normalisation) and prints the worst difference.
# Exit 0 pass, 1 fail, 77 when the binary, the photos or PIL/torchvision are
# missing here.
set -u
cd "$(dirname "$0")/.." || exit 1

bin=build/splitinfer
data=../shared/testdata/imagenet-sample
py=/usr/bin/python3 # Debian's, which has PIL, numpy and torchvision
tol=0.02

[ -x "$bin" ] || { echo "cannot run: $bin not built (make build/splitinfer)"; exit 77; }
[ -r "$data/labels.tsv" ] || { echo "cannot run: no sample photos in $data"; exit 77; }
"$py" -c 'import numpy, PIL, torchvision' 2>/dev/null ||
    { echo "cannot run: $py lacks numpy, PIL or torchvision"; exit 77; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
pairs=()

run() { # $1: image; appends (image, tensor) to pairs or counts a failure
    local img=$1 out
    out="$tmp/out/$(basename "$img").bin"
    if "$bin" preprocess "$img" -o "$out"; then
        pairs+=("$img" "$out")
    else
        echo "FAIL: splitinfer preprocess $img exited $?"
        fail=1
    fi
}

mkdir -p "$tmp/out" "$tmp/syn"
n=0
while IFS=$'\t' read -r file _; do
    [ "$file" = file ] && continue # the header line
    run "$data/$file"
    n=$((n + 1))
done <"$data/labels.tsv"
if [ "$n" -ne 100 ]; then
    echo "FAIL: expected 100 photos in $data/labels.tsv, found $n"
    fail=1
fi

# Edge cases the photos do not have: 1-pixel sides (large upscales and
# extreme aspect ratios), a side of exactly 256 (no resize), odd crop
# excesses (torchvision rounds .5 to even), and the colour types PIL
# converts to RGB (gray, gray+alpha, RGBA, palette, palette+tRNS, 1-bit).
"$py" - "$tmp/syn" <<'EOF' || { echo "FAIL: could not make the synthetic PNGs"; exit 1; }
import sys
import numpy as np
from PIL import Image

d = sys.argv[1]
rng = np.random.default_rng(7)
for w, h in [(1, 1), (1, 700), (700, 1), (2, 3), (255, 257), (291, 256), (289, 256), (224, 224)]:
    px = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(px, "RGB").save(f"{d}/rgb_{w}x{h}.png")
g = rng.integers(0, 256, (300, 401), dtype=np.uint8)
Image.fromarray(g, "L").save(f"{d}/gray.png")
for mode, ch in [("LA", 2), ("RGBA", 4)]:
    px = rng.integers(0, 256, (300, 401, ch), dtype=np.uint8)
    Image.fromarray(px, mode).save(f"{d}/{mode.lower()}.png")
p = Image.fromarray(rng.integers(0, 256, (300, 401, 3), dtype=np.uint8), "RGB").quantize(200)
p.save(f"{d}/palette.png")
p.save(f"{d}/palette_trns.png", transparency=3)
Image.fromarray(g > 127).save(f"{d}/bilevel.png")
EOF
for f in "$tmp"/syn/*.png; do run "$f"; done

if [ ${#pairs[@]} -gt 0 ]; then
    "$py" tests/ref/preprocess_ref.py --tol "$tol" "${pairs[@]}" || fail=1
fi
[ "$fail" -eq 0 ] && echo "PASS: $((${#pairs[@]} / 2)) images within $tol of PIL + torchvision"
exit "$fail"
