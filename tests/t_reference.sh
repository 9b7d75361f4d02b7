#!/usr/bin/env bash
# End-to-end numerics against PyTorch: splitinfer's logits for seeded ResNets
# exported by torch.onnx must match torch's own logits.
#
# Models (seed 0, made in build/ref/ by tests/ref/export_resnet.py, only when
# missing or made by an older export script; see its --cached):
#   resnet50     BN folded into Conv (torch's normal eval export)
#   resnet50-bn  separate BatchNormalization nodes (model-zoo style)
#   resnet18     basic blocks
#   resnet101    deep bottleneck stack
# For each, N seeded standard-normal inputs; pass when every output has
# max|out - ref| <= REL * max|ref| and the same top-5 (tests/ref/torch_ref.py
# compare). Exit 0 = pass, 1 = fail, 77 = cannot run here (no torch).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=/usr/bin/python3 # Debian's interpreter: python3-torch lives there
BIN=${SPLITINFER:-build/splitinfer}
REF=build/ref
SEED=0
N=8
REL=1e-3
TOPK=5
# name arch export-flags
MODELS=(
    "resnet50 resnet50 -"
    "resnet50-bn resnet50 --separate-bn"
    "resnet18 resnet18 -"
    "resnet101 resnet101 -"
)

if ! "$PY" -c 'import torch, torchvision, numpy' 2>/dev/null; then
    echo "skip: $PY cannot import torch, torchvision and numpy (make deps installs them)"
    exit 77
fi
if [ ! -x "$BIN" ]; then
    echo "FAIL: $BIN is missing; build it with: make build/splitinfer"
    exit 1
fi
mkdir -p "$REF"

failed=0
summary=()
for m in "${MODELS[@]}"; do
    read -r name arch flags <<<"$m"
    [ "$flags" = - ] && flags=
    onnx=$REF/$name.onnx
    data=$REF/data/$arch-s$SEED
    out=$REF/out/$name
    # shellcheck disable=SC2086 # flags is a word list on purpose
    if ! "$PY" tests/ref/export_resnet.py --arch "$arch" --seed "$SEED" --out "$onnx" \
        $flags --cached 2>"$REF/$name.export.log"; then
        cat "$REF/$name.export.log"
        echo "FAIL: export of $name: $PY tests/ref/export_resnet.py --arch $arch --seed $SEED --out $onnx $flags"
        failed=1
        summary+=("$name: export failed")
        continue
    fi
    if ! "$PY" tests/ref/torch_ref.py gen --arch "$arch" --seed "$SEED" --n "$N" --dir "$data" \
        --cached >"$REF/$name.gen.log" 2>&1; then
        cat "$REF/$name.gen.log"
        echo "FAIL: reference data: $PY tests/ref/torch_ref.py gen --arch $arch --seed $SEED --n $N --dir $data"
        failed=1
        summary+=("$name: reference data failed")
        continue
    fi
    rm -rf "$out"
    mkdir -p "$out"

    ok=0 bad=0 worst=0 worst_k=- infer_ns=0
    for ((k = 0; k < N; k++)); do
        cmd=("$BIN" infer -m "$onnx" --input "$data/in_$k.bin" --output "$out/out_$k.bin")
        t0=$(date +%s%N)
        if ! "${cmd[@]}" >"$out/infer_$k.log" 2>&1; then
            echo "FAIL $name k=$k: ${cmd[*]} exited non-zero:"
            sed 's/^/    /' "$out/infer_$k.log" | tail -20
            bad=$((bad + 1))
            continue
        fi
        infer_ns=$((infer_ns + $(date +%s%N) - t0))
        if line=$("$PY" tests/ref/torch_ref.py compare "$out/out_$k.bin" "$data/ref_$k.bin" \
            --rel "$REL" --topk "$TOPK"); then
            ok=$((ok + 1))
        else
            bad=$((bad + 1))
            echo "FAIL $name k=$k: ${cmd[*]}"
        fi
        echo "$name k=$k $line"
        r=$(sed -n 's/.* ratio=\([^ ]*\) .*/\1/p' <<<"$line")
        if [ -n "$r" ] && awk -v a="$r" -v b="$worst" 'BEGIN { exit !(a > b) }'; then
            worst=$r worst_k=$k
        fi
    done
    ms=$((infer_ns / 1000000 / N))
    [ "$bad" -gt 0 ] && failed=1
    summary+=("$(printf '%-12s %d/%d ok  worst max|diff|/max|ref| = %s (k=%s, limit %s)  ~%d ms per infer (exec to exit)' \
        "$name" "$ok" "$N" "$worst" "$worst_k" "$REL" "$ms")")
done

echo
echo "summary (splitinfer vs PyTorch $("$PY" -c 'import torch; print(torch.__version__)'), seed $SEED, $N inputs each):"
printf '  %s\n' "${summary[@]}"
if [ "$failed" -ne 0 ]; then
    echo "t_reference: FAIL"
    exit 1
fi
echo "t_reference: ok"
