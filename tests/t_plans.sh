#!/usr/bin/env bash
# End to end on loopback, every plan through `splitinfer up`:
#  - ResNet50 (seeded random weights): baseline, pipeline, blocks, parallel give
#    logits equal (<= 1e-4 relative to max|logit|) to `splitinfer infer` on the
#    same preprocessed photos; the OIP v2 infer endpoint gives the same logits.
#    So do chained plans (plan.h "chain"): pipeline-chain, blocks chained, and a
#    plan whose chains are broken by a banded step, and parallel with NCHW
#    activations on the wire (NHWC is the default). Every step of every plan
#    reports its compute time in the answer, chained steps included. The
#    pipeline's activations travel as ZEROS (lossless, plan "encoding"): its
#    layer1 output crosses in under 0.9 of its dense bytes, and in no fewer
#    with "encoding": "dense".
#  - MobileNetV2 (trained, ../shared/models): baseline, a pipeline cut at its
#    own cut points and a banded parallel plan give the same top-1 on the 100
#    photos as the in-process `splitinfer classify`.
# Exit 0 pass, 1 fail, 77 cannot run here.
set -uo pipefail
cd "$(dirname "$0")/.."
. tests/lib_up.sh
PY=/usr/bin/python3
W=build/test-plans
PHOTOS=../shared/testdata/imagenet-sample
MB=../shared/models/mobilenet_v2_imagenet.onnx
"$PY" -c 'import torch, numpy' 2>/dev/null || { echo "skip: no torch/numpy for $PY"; exit 77; }
[ -d "$PHOTOS" ] && [ -f "$MB" ] || { echo "skip: ../shared photos or model missing"; exit 77; }
mkdir -p "$W"
"$PY" tests/ref/export_resnet.py --arch resnet50 --seed 0 --out build/ref/resnet50.onnx --cached || exit 1
R50=$W/resnet50.sfm
"$BIN" convert build/ref/resnet50.onnx -o "$R50" || exit 1
failed=0
photos=$(sample_photos "$PHOTOS" 3)
for p in $photos; do
    b=$(basename "$p" .png)
    "$BIN" preprocess "$p" -o "$W/$b.in" && "$BIN" infer -m "$R50" --input "$W/$b.in" --output "$W/$b.ref" || exit 1
done

"$PY" -c "import json; d=json.load(open('plans/blocks.json')); d['chain']=True; d['name']='blocks-chain'; json.dump(d, open('$W/blocks-chain.json','w'))"
cat >"$W/mixed-chain.json" <<'EOF'
{"name": "mixed-chain", "chain": true, "steps": [
  {"segment": "stem"}, {"segment": "layer1"}, {"segment": "layer2", "bands": 2},
  {"segment": "layer3"}, {"segment": "layer4..head"}]}
EOF
# Activations as NCHW on the wire (the default is NHWC): the gateway cuts and
# stitches bands of the other layout, and each function reorders at its ends.
"$PY" -c "import json; d=json.load(open('plans/parallel.json')); d['layout']='nchw'; d['name']='parallel-nchw'; json.dump(d, open('$W/parallel-nchw.json','w'))"
"$PY" -c "import json; d=json.load(open('plans/pipeline.json')); d['encoding']='dense'; d['name']='pipeline-dense'; json.dump(d, open('$W/pipeline-dense.json','w'))"
for plan in baseline pipeline pipeline-dense blocks parallel parallel-resident pipeline-chain blocks-chain mixed-chain parallel-nchw; do
    pf=plans/$plan.json
    [ -f "$pf" ] || pf=$W/$plan.json
    up_start "$pf" "$R50" "$W/up-$plan.log" || { failed=1; continue; }
    nsteps=$("$PY" -c "import json; print(len(json.load(open('$pf'))['steps']))")
    for p in $photos; do
        b=$(basename "$p" .png)
        curl -s -m 60 -X POST -H 'Content-Type: image/png' --data-binary "@$p" "$GW/v1/classify?logits=1" >"$W/$b.$plan.json"
        # OIP v2: the same tensor as JSON
        "$PY" -c "import numpy as np, json; x=np.fromfile('$W/$b.in', dtype='<f4'); print(json.dumps({'inputs':[{'name':'input','shape':[1,3,224,224],'datatype':'FP32','data':x.tolist()}]}))" >"$W/$b.oip.req"
        curl -s -m 60 -X POST -H 'Content-Type: application/json' --data-binary "@$W/$b.oip.req" "$GW/v2/models/resnet50/infer" >"$W/$b.$plan.oip"
        if ! "$PY" - "$W/$b.ref" "$W/$b.$plan.json" "$W/$b.$plan.oip" "$plan" "$b" "$nsteps" <<'PYEOF'
import sys, json, numpy as np
ref = np.fromfile(sys.argv[1], dtype='<f4')
d = json.load(open(sys.argv[2]))
o = json.load(open(sys.argv[3]))
got = np.array(d["logits"], dtype=np.float64)
oip = np.array(o["outputs"][0]["data"], dtype=np.float64)
assert o["outputs"][0]["shape"] == [1, 1000], o["outputs"][0]["shape"]
r1 = np.abs(got - ref).max() / np.abs(ref).max()
r2 = np.abs(oip - ref).max() / np.abs(ref).max()
top = d["top"][0]["index"]
steps = d["steps"]
traced = len(steps) == int(sys.argv[6]) and all(s["compute_ms"] > 0 and s["network_ms"] >= 0 for s in steps)
# layer1's output, [1,256,56,56] float32, dense: 3211264 bytes of elements
sized = True
if sys.argv[4] in ("pipeline", "pipeline-dense"):
    got_b, dense_b = steps[1]["bytes_received"], 256 * 56 * 56 * 4
    sized = got_b < 0.9 * dense_b if sys.argv[4] == "pipeline" else got_b >= dense_b
    print(f"  layer1's reply: {got_b} bytes, {got_b / dense_b:.3f} of its dense elements")
print(f"{sys.argv[4]:14s} {sys.argv[5]:28s} classify rel {r1:.1e}  oip rel {r2:.1e}  top1 {top} (ref {int(ref.argmax())})  {d['ms']:.0f} ms, network {d['network_ms']:.1f} ms, {len(steps)} steps traced")
sys.exit(0 if r1 <= 1e-4 and r2 <= 1e-4 and top == int(ref.argmax()) and traced and sized else 1)
PYEOF
        then echo "FAIL: $plan $b"; head -c 300 "$W/$b.$plan.json"; echo; failed=1; fi
    done
    up_stop || failed=1
done

# fp16 on the wire: half the bytes; logits within 1e-2 relative, same top-1.
"$PY" -c "import json; d=json.load(open('plans/parallel.json')); d['dtype']='fp16'; json.dump(d, open('$W/parallel-fp16.json','w'))"
up_start "$W/parallel-fp16.json" "$R50" "$W/up-fp16.log" || failed=1
for p in $photos; do
    b=$(basename "$p" .png)
    curl -s -m 60 -X POST -H 'Content-Type: image/png' --data-binary "@$p" "$GW/v1/classify?logits=1" >"$W/$b.fp16.json"
    "$PY" - "$W/$b.ref" "$W/$b.fp16.json" "$b" <<'PYEOF' || { echo "FAIL: fp16 $b"; failed=1; }
import sys, json, numpy as np
ref = np.fromfile(sys.argv[1], dtype='<f4'); d = json.load(open(sys.argv[2]))
got = np.array(d["logits"]); r = np.abs(got - ref).max() / np.abs(ref).max()
print(f"parallel fp16 {sys.argv[3]:28s} rel {r:.1e}  top1 {d['top'][0]['index']} (ref {int(ref.argmax())})  network {d['network_ms']:.1f} ms")
sys.exit(0 if r <= 1e-2 and d["top"][0]["index"] == int(ref.argmax()) else 1)
PYEOF
done
up_stop || failed=1

# MobileNetV2: top-1 over the 100 photos, served vs in process.
"$BIN" classify -m "$MB" -k 1 --json "$PHOTOS"/*.png >"$W/mb.local.jsonl" || exit 1
for plan in mobilenet-baseline mobilenet-pipeline mobilenet-parallel mobilenet-resident; do
    up_start tests/plans/$plan.json "$MB" "$W/up-$plan.log" || { failed=1; continue; }
    : >"$W/mb.$plan.jsonl"
    for p in "$PHOTOS"/*.png; do
        printf '%s\t' "$p" >>"$W/mb.$plan.jsonl"
        curl -s -m 30 -X POST -H 'Content-Type: image/png' --data-binary "@$p" "$GW/v1/classify?k=1" >>"$W/mb.$plan.jsonl"
        echo >>"$W/mb.$plan.jsonl"
    done
    if ! "$PY" - "$W/mb.local.jsonl" "$W/mb.$plan.jsonl" "$plan" "$PHOTOS/labels.tsv" <<'PYEOF'
import sys, json, os
local = {os.path.basename(j["file"]): j["top"][0]["index"] for j in map(json.loads, open(sys.argv[1]))}
served, bad = {}, 0
for line in open(sys.argv[2]):
    f, body = line.rstrip("\n").split("\t", 1)
    try: served[os.path.basename(f)] = json.loads(body)["top"][0]["index"]
    except Exception: bad += 1
labels = {l.split("\t")[0]: int(l.split("\t")[1]) for l in open(sys.argv[4]) if not l.startswith("file")}
same = sum(served.get(f) == t for f, t in local.items())
correct = sum(served.get(f) == labels[f] for f in labels)
print(f"{sys.argv[3]}: {same}/{len(local)} same top-1 as in process, {correct}/100 correct, {bad} failed requests")
sys.exit(0 if same == len(local) == 100 and bad == 0 else 1)
PYEOF
    then echo "FAIL: $plan"; failed=1; fi
    up_stop || failed=1
done
exit $failed
