#!/usr/bin/env bash
# Row bands of every ResNet50 stage stitch back to the whole output: for each
# stage (stem, layer1..layer4) and K in {2, 3, 4, 7}, `infer --band k/K` of
# every k, concatenated along H, equals `infer` of the whole stage to
# max|diff| <= 1e-5 x max|whole|. The head (flat output) refuses K > 1.
# And `plan check` counts the bands' work (MACs with halo rows) sanely.
# Stage inputs are real activations: the chain of stage outputs from one
# seeded random image. Exit 0 pass, 1 fail, 77 cannot run here.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=/usr/bin/python3
BIN=${SPLITINFER:-build/splitinfer}
REF=build/ref
W=$REF/bands
if ! "$PY" -c 'import torch, torchvision, numpy' 2>/dev/null; then
    echo "skip: $PY cannot import torch, torchvision and numpy (make deps installs them)"
    exit 77
fi
mkdir -p "$W"
"$PY" tests/ref/export_resnet.py --arch resnet50 --seed 0 --out "$REF/resnet50.onnx" --cached
"$BIN" convert "$REF/resnet50.onnx" -o "$W/resnet50.sfm"
M=$W/resnet50.sfm
"$PY" -c "import numpy as np; np.random.seed(3); np.random.randn(1,3,224,224).astype('<f4').tofile('$W/in_stem.bin')"

failed=0
prev=$W/in_stem.bin
for stage in stem layer1 layer2 layer3 layer4; do
    "$BIN" infer -m "$M" --segment $stage --input "$prev" --output "$W/whole_$stage.bin"
    for K in 2 3 4 7; do
        for ((k = 0; k < K; k++)); do
            "$BIN" infer -m "$M" --segment $stage --band $k/$K --input "$prev" --output "$W/band_${stage}_${K}_$k.bin"
        done
        if ! "$PY" - "$W" $stage $K <<'PYEOF'
import sys, numpy as np
w, stage, K = sys.argv[1], sys.argv[2], int(sys.argv[3])
whole = np.fromfile(f"{w}/whole_{stage}.bin", dtype="<f4")
shapes = {"stem": (64, 56, 56), "layer1": (256, 56, 56), "layer2": (512, 28, 28),
          "layer3": (1024, 14, 14), "layer4": (2048, 7, 7)}
C, H, W = shapes[stage]
whole = whole.reshape(C, H, W)
bands = [np.fromfile(f"{w}/band_{stage}_{K}_{k}.bin", dtype="<f4").reshape(C, -1, W) for k in range(K)]
st = np.concatenate(bands, axis=1)
assert st.shape == whole.shape, (st.shape, whole.shape)
rel = np.abs(st - whole).max() / np.abs(whole).max()
print(f"{stage} K={K}: band rows {[b.shape[1] for b in bands]}, max|diff|/max|whole| = {rel:.2e}")
sys.exit(0 if rel <= 1e-5 and np.abs(whole).max() > 0 else 1)
PYEOF
        then echo "FAIL: $stage K=$K"; failed=1; fi
    done
    prev=$W/whole_$stage.bin
done
# The head's output is flat: one band only.
if "$BIN" infer -m "$M" --segment head --band 0/2 --input "$prev" --output "$W/x.bin" 2>"$W/head.err"; then
    echo "FAIL: head accepted --band 0/2"; failed=1
elif ! grep -q 'only 1 rows\|flat output' "$W/head.err"; then
    echo "FAIL: head --band 0/2: unclear message: $(cat "$W/head.err")"; failed=1
else
    echo "head --band 0/2 refused: $(cat "$W/head.err")"
fi
# The work plan check counts, halo rows included: a pipeline computes the
# model once (critical path 1.000); two bands per stage compute more MACs in
# all than the model, and their critical path, the slowest band of each
# step, lies between half the model and the whole.
work() { "$BIN" plan check "plans/$1.json" -m "$M" | sed -n 's/^work: .*(\([0-9.]*\)x.*= \([0-9.]*\) of the model$/\1 \2/p'; }
read -r ptotal ppath <<<"$(work pipeline)"
read -r btotal bpath <<<"$(work parallel)"
echo "plan check work: pipeline ${ptotal}x the model, critical path $ppath; parallel ${btotal}x, critical path $bpath"
if [ "$ptotal" != 1.00 ] || [ "$ppath" != 1.000 ]; then echo "FAIL: pipeline work ${ptotal}x / $ppath, want 1.00x / 1.000"; failed=1; fi
if ! awk -v t="$btotal" -v p="$bpath" 'BEGIN { exit !(t > 1.0 && p > 0.5 && p < 1.0) }'; then
    echo "FAIL: parallel work ${btotal}x / critical path $bpath"; failed=1
fi
# Resident bands in steps of a block or two: less halo work than a band per
# stage, and a shorter critical path.
read -r rtotal rpath <<<"$(work parallel-resident)"
echo "plan check work: parallel-resident ${rtotal}x, critical path $rpath"
if ! awk -v t="$rtotal" -v p="$rpath" -v bt="$btotal" -v bp="$bpath" 'BEGIN { exit !(t > 1.0 && t < bt && p > 0.5 && p < bp) }'; then
    echo "FAIL: parallel-resident work ${rtotal}x / critical path $rpath, want below parallel's"; failed=1
fi
# What a resident run cannot be: rows as NCHW, or one function for all bands.
PY=/usr/bin/python3
"$PY" -c "import json; d=json.load(open('plans/parallel-resident.json')); d['layout']='nchw'; json.dump(d, open('$W/res-nchw.json','w'))"
"$PY" -c "import json; d=json.load(open('plans/parallel-resident.json'))
for s in d['steps']: s['functions'] = ['http://127.0.0.1:9']
json.dump(d, open('$W/res-one.json','w'))"
for c in "res-nchw NHWC" "res-one one function per band"; do
    read -r f want <<<"$c"
    if "$BIN" plan check "$W/$f.json" -m "$M" >"$W/$f.out" 2>&1; then
        echo "FAIL: plan check accepted $f.json"; failed=1
    elif ! grep -q "$want" "$W/$f.out"; then
        echo "FAIL: plan check $f.json: unclear message: $(cat "$W/$f.out")"; failed=1
    else
        echo "plan check refuses $f.json: $(tail -1 "$W/$f.out")"
    fi
done
# Plan files up to SI_PLAN_MAX_FILE (1 MiB) are read, a byte more is refused:
# the pipeline plan padded with spaces to exactly the limit, then one over.
for pad in 0 1; do
    "$PY" -c "import sys; t=open('plans/pipeline.json').read(); sys.stdout.write(t + ' ' * ((1 << 20) - len(t) + $pad))" >"$W/big.json"
    if "$BIN" plan check "$W/big.json" -m "$M" >"$W/big.out" 2>&1; then
        [ "$pad" = 0 ] && echo "plan check reads a plan file of exactly 1 MiB" || { echo "FAIL: plan check read a file over 1 MiB"; failed=1; }
    elif [ "$pad" = 1 ] && grep -q "larger than 1048576 bytes" "$W/big.out"; then
        echo "plan check refuses a plan file of 1 MiB + 1: $(tail -1 "$W/big.out")"
    else
        echo "FAIL: plan check, file of 1 MiB + $pad: $(tail -1 "$W/big.out")"; failed=1
    fi
done
exit $failed
