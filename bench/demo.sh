#!/usr/bin/env bash
# The README's main job (make demo): classify a few photos with ResNet50, in
# one process, from the ONNX file and from the packed .sfm, and with the
# trained MobileNetV2 of ../shared/models when it is there.
#
# ResNet50 weights: models/resnet50.onnx if you put one there (for example the
# ONNX model zoo's resnet50-v1-7, or your own torchvision export). Otherwise
# torchvision's ResNet50 with seeded random weights is exported through
# Debian's python3-torch: it runs the same computation, but its labels mean
# nothing. The script says which one it used.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=build/splitinfer
photos=../shared/testdata/imagenet-sample
mkdir -p build/models

if [ -f models/resnet50.onnx ]; then
    model=models/resnet50.onnx
    echo "== ResNet50: models/resnet50.onnx (your weights)"
else
    model=build/models/resnet50-random.onnx
    echo "== ResNet50: no models/resnet50.onnx, exporting torchvision's ResNet50 with SEEDED RANDOM"
    echo "   weights (no trained ResNet50 can be downloaded here): its labels are meaningless."
    /usr/bin/python3 tests/ref/export_resnet.py --arch resnet50 --seed 0 --out "$model" --cached
fi
$bin convert "$model" -o build/models/resnet50.sfm
$bin info -m build/models/resnet50.sfm

if [ -d "$photos" ]; then
    imgs=$(ls "$photos"/*.png | head -4)
else
    echo "no photos at $photos: making one with PIL"
    /usr/bin/python3 -c "from PIL import Image; Image.new('RGB',(320,240),(200,120,40)).save('build/models/orange.png')"
    imgs=build/models/orange.png
fi

echo; echo "== classify with ResNet50 (.sfm), 1 thread"
t0=$(date +%s%N)
# shellcheck disable=SC2086
$bin classify -m build/models/resnet50.sfm -t 1 -k 3 $imgs
echo "   (exec to exit: $(( ($(date +%s%N) - t0) / 1000000 )) ms for $(echo $imgs | wc -w) photos)"

mb=../shared/models/mobilenet_v2_imagenet.onnx
if [ -f "$mb" ]; then
    echo; echo "== classify with the trained MobileNetV2 ($mb): real labels"
    # shellcheck disable=SC2086
    $bin classify -m "$mb" -k 3 $imgs
fi

echo; echo "== speed: ResNet50 batch 1, all cores"
$bin bench -m build/models/resnet50.sfm -n 10
