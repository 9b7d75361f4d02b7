#!/usr/bin/env bash
# Real photos: the trained MobileNetV2 of ../shared/models on the 100 photos
# of ../shared/testdata/imagenet-sample, in process (`splitinfer classify
# --json`): top-1 >= 86/100 (PyTorch on the same model and preprocessing:
# 87/100), from the ONNX file and from its .sfm alike.
# Exit 0 pass, 1 fail, 77 cannot run here.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${SPLITINFER:-build/splitinfer}
MB=../shared/models/mobilenet_v2_imagenet.onnx
P=../shared/testdata/imagenet-sample
[ -f "$MB" ] && [ -f "$P/labels.tsv" ] || { echo "skip: ../shared model or photos missing"; exit 77; }
W=build/test-photos
mkdir -p "$W"
"$BIN" convert "$MB" -o "$W/mb.sfm" || exit 1
failed=0
for m in "$MB" "$W/mb.sfm"; do
    "$BIN" classify -m "$m" -k 5 --json "$P"/*.png >"$W/out.jsonl" || { echo "FAIL: classify exited non-zero"; failed=1; continue; }
    /usr/bin/python3 - "$W/out.jsonl" "$P/labels.tsv" "$m" <<'PYEOF' || failed=1
import json, os, sys
labels = {l.split("\t")[0]: int(l.split("\t")[1]) for l in open(sys.argv[2]) if not l.startswith("file")}
top1 = top5 = n = 0
for line in open(sys.argv[1]):
    d = json.loads(line)
    want = labels[os.path.basename(d["file"])]
    idx = [t["index"] for t in d["top"]]
    top1 += idx[0] == want
    top5 += want in idx
    n += 1
print(f"{sys.argv[3]}: {n} photos, top-1 {top1}/100, top-5 {top5}/100 (PyTorch: 87, 96)")
sys.exit(0 if n == 100 and top1 >= 86 else 1)
PYEOF
done
exit $failed
