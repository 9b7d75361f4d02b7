#!/usr/bin/env bash
# The README's main job (make demo): starts the functions of every plan
# locally with `splitinfer up`, classifies a few photos through each, and
# prints each plan's answers and latency; then the same photos in one
# process for comparison.
#
# ResNet50 weights: models/resnet50.onnx if you put one there (e.g. the ONNX
# model zoo's resnet50-v1-7 or your own torchvision export). This machine
# cannot download one, so otherwise torchvision's ResNet50 is exported with
# SEEDED RANDOM weights through Debian's python3-torch: the computation is
# real, the labels are meaningless. The script says which it used. The
# trained MobileNetV2 of ../shared/models, when present, shows real labels.
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/lib_up.sh
PY=/usr/bin/python3
W=build/demo
PHOTOS=../shared/testdata/imagenet-sample
PLANS=${PLANS:-baseline pipeline pipeline-chain blocks parallel parallel-resident}
mkdir -p "$W"

if [ -f models/resnet50.onnx ]; then
    model=models/resnet50.onnx
    echo "== ResNet50: models/resnet50.onnx (your weights)"
else
    model=$W/resnet50-random.onnx
    echo "== ResNet50: no models/resnet50.onnx and no way to download one here: exporting"
    echo "   torchvision's ResNet50 with SEEDED RANDOM weights. Its labels are MEANINGLESS;"
    echo "   put a trained model at models/resnet50.onnx for real answers."
    "$PY" tests/ref/export_resnet.py --arch resnet50 --seed 0 --out "$model" --cached
fi
"$BIN" convert "$model" -o "$W/resnet50.sfm"
if [ -d "$PHOTOS" ]; then
    imgs=$(sample_photos "$PHOTOS" 3)
else
    "$PY" -c "from PIL import Image; Image.new('RGB',(320,240),(200,120,40)).save('$W/orange.png')"
    imgs=$W/orange.png
fi

for plan in $PLANS; do
    echo; echo "== plan $plan: $(grep -o '"comment": "[^"]*' plans/$plan.json | cut -d'"' -f4)"
    up_start plans/$plan.json "$W/resnet50.sfm" "$W/up-$plan.log"
    echo "   $(cat "$W/up-$plan.log.out")"
    for img in $imgs; do
        curl -s -m 60 -X POST -H 'Content-Type: image/png' --data-binary "@$img" "$GW/v1/classify?k=3" |
            "$PY" -c "
import json, sys
d = json.load(sys.stdin)
top = ', '.join(f\"{t['label']} {t['prob']:.2f}\" for t in d['top'])
print(f\"   {sys.argv[1]:30s} {d['ms']:7.1f} ms (network {d['network_ms']:5.1f} ms, {len(d['steps'])} steps): {top}\")" "$(basename "$img")"
    done
    up_stop
done

echo; echo "== the same photos in one process (splitinfer classify)"
# shellcheck disable=SC2086
"$BIN" classify -m "$W/resnet50.sfm" -k 3 $imgs
mb=../shared/models/mobilenet_v2_imagenet.onnx
if [ -f "$mb" ]; then
    echo; echo "== the trained MobileNetV2 of ../shared/models through a 2-band plan: real labels"
    up_start tests/plans/mobilenet-parallel.json "$mb" "$W/up-mb.log"
    for img in $imgs; do
        curl -s -m 60 -X POST -H 'Content-Type: image/png' --data-binary "@$img" "$GW/v1/classify?k=1" |
            "$PY" -c "import json,sys; d=json.load(sys.stdin); print(f\"   {sys.argv[1]:30s} {d['top'][0]['label']} ({d['top'][0]['prob']:.2f}), {d['ms']:.1f} ms\")" "$(basename "$img")"
    done
    up_stop
fi
