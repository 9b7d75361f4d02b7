#!/usr/bin/env bash
# Segments compose: running ResNet50 stage by stage, each stage's output fed
# to the next as a file, gives the same tensors as one range run and the same
# logits as the whole model; a .sfm cut to one stage computes what that stage
# of the full model computes, and holds only that stage's weights; convert
# chooses Winograd for 3x3 convs where oneDNN is AVX2 and not where it is
# AVX-512, and a file of Winograd weights computes the same stage.
#
# Model: build/ref/resnet50.onnx (seed 0, BN folded; tests/ref/export_resnet.py,
# made only when missing). Input: in_0.bin of tests/ref/torch_ref.py gen.
# Every comparison: max|diff| <= REL * max|ref| (tests/ref/torch_ref.py compare);
# the logits also with the same top-5.
# Exit 0 = pass, 1 = fail, 77 = cannot run here (no torch).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=/usr/bin/python3 # Debian's interpreter: python3-torch lives there
BIN=${SPLITINFER:-build/splitinfer}
REF=build/ref
SEED=0
REL=1e-5
ONNX=$REF/resnet50.onnx
DATA=$REF/data/resnet50-s$SEED
W=$REF/stages
STAGES=(stem layer1 layer2 layer3 layer4 head)
# floats per batch-1 output of each stage
declare -A FLOATS=([stem]=$((64 * 56 * 56)) [layer1]=$((256 * 56 * 56)) [layer2]=$((512 * 28 * 28))
    [layer3]=$((1024 * 14 * 14)) [layer4]=$((2048 * 7 * 7)) [head]=1000)

if ! "$PY" -c 'import torch, torchvision, numpy' 2>/dev/null; then
    echo "skip: $PY cannot import torch, torchvision and numpy (make deps installs them)"
    exit 77
fi
if [ ! -x "$BIN" ]; then
    echo "FAIL: $BIN is missing; build it with: make build/splitinfer"
    exit 1
fi
mkdir -p "$REF"
"$PY" tests/ref/export_resnet.py --arch resnet50 --seed "$SEED" --out "$ONNX" --cached
"$PY" tests/ref/torch_ref.py gen --arch resnet50 --seed "$SEED" --n 8 --dir "$DATA" --cached |
    grep -v '^gen .* k=' || true
[ -f "$DATA/in_0.bin" ] || { echo "FAIL: no reference input $DATA/in_0.bin"; exit 1; }
rm -rf "$W"
mkdir -p "$W"
# From here on every failure is recorded and the checks go on, so one run
# shows all that is wrong; the exit code comes at the end.
set +e

failed=0
fail() { echo "FAIL: $*"; failed=1; }

# run LABEL ARGS...: runs splitinfer ARGS, shows the command; on error shows
# its output and records a failure (returns 1).
run() {
    local label=$1
    shift
    echo "+ $BIN $*"
    if ! "$BIN" "$@" >"$W/$label.log" 2>&1; then
        sed 's/^/    /' "$W/$label.log" | tail -20
        fail "$label: $BIN $* exited non-zero"
        return 1
    fi
}

# check OUT REF WHAT [TOPK]: compare two tensors; TOPK 0 for feature maps.
check() {
    local line
    if line=$("$PY" tests/ref/torch_ref.py compare "$1" "$2" --rel "$REL" --topk "${4:-0}"); then
        echo "  ok   $3: $line"
    else
        echo "  FAIL $3: $line"
        failed=1
    fi
}

# size FILE STAGE: the file holds exactly the floats that STAGE outputs.
size() {
    local want=$((FLOATS[$2] * 4)) got
    got=$(stat -c %s "$1")
    if [ "$got" -ne "$want" ]; then
        fail "$1 is $got bytes, $2 outputs $want bytes"
        return 1
    fi
}

in0=$DATA/in_0.bin

echo "== whole model"
if ! run full infer -m "$ONNX" --input "$in0" --output "$W/full.bin" || ! size "$W/full.bin" head; then
    echo "t_stages: FAIL (the whole model does not run; nothing to compare with)"
    exit 1
fi
# Against PyTorch at t_reference's tolerance: catches an engine that is
# consistently wrong in every segment.
if line=$("$PY" tests/ref/torch_ref.py compare "$W/full.bin" "$DATA/ref_0.bin" --rel 1e-3 --topk 5); then
    echo "  ok   whole model vs PyTorch (rel 1e-3): $line"
else
    fail "whole model vs PyTorch (rel 1e-3): $line"
fi

echo "== stages one by one, chained through files"
prev=$in0
for s in "${STAGES[@]}"; do
    if run "chain_$s" infer -m "$ONNX" --segment "$s" --input "$prev" --output "$W/chain_$s.bin" &&
        size "$W/chain_$s.bin" "$s"; then
        prev=$W/chain_$s.bin
    else
        fail "chain broken at $s; later stages not run"
        break
    fi
done

echo "== ranges stem..X vs the chain"
for s in "${STAGES[@]:1}"; do
    [ -f "$W/chain_$s.bin" ] || continue
    topk=0
    [ "$s" = head ] && topk=5
    run "range_$s" infer -m "$ONNX" --segment "stem..$s" --input "$in0" --output "$W/range_$s.bin" &&
        size "$W/range_$s.bin" "$s" &&
        check "$W/range_$s.bin" "$W/chain_$s.bin" "stem..$s vs chained stem->..->$s" "$topk"
done
if [ -f "$W/chain_head.bin" ]; then
    check "$W/chain_head.bin" "$W/full.bin" "chained stem->..->head vs whole model" 5
fi

echo "== block-level cuts"
# Blocks inside a stage and ranges that end or start inside a stage.
if [ -f "$W/chain_layer1.bin" ]; then
    run blocks_l1 infer -m "$ONNX" --segment stem..layer1.2 --input "$in0" --output "$W/blocks_l1.bin" &&
        check "$W/blocks_l1.bin" "$W/chain_layer1.bin" "stem..layer1.2 vs chained ..layer1"
fi
if [ -f "$W/chain_layer3.bin" ]; then
    run blocks_l4 infer -m "$ONNX" --segment layer4.0..head --input "$W/chain_layer3.bin" \
        --output "$W/blocks_l4.bin" &&
        check "$W/blocks_l4.bin" "$W/full.bin" "layer4.0..head on chained layer3 vs whole model" 5
    # layer4 block by block
    prev=$W/chain_layer3.bin
    for b in layer4.0 layer4.1 layer4.2; do
        run "block_$b" infer -m "$ONNX" --segment "$b" --input "$prev" --output "$W/block_$b.bin" || break
        prev=$W/block_$b.bin
    done
    [ -f "$W/block_layer4.2.bin" ] &&
        check "$W/block_layer4.2.bin" "$W/chain_layer4.bin" "layer4.0->layer4.1->layer4.2 vs layer4"
fi

echo "== .sfm files"
if run conv_full convert "$ONNX" -o "$W/resnet50.sfm" &&
    run conv_l3 convert "$ONNX" -o "$W/resnet50-layer3.sfm" --segment layer3; then
    full_bytes=$(stat -c %s "$W/resnet50.sfm")
    l3_bytes=$(stat -c %s "$W/resnet50-layer3.sfm")
    onnx_bytes=$(stat -c %s "$ONNX")
    echo "  sizes: resnet50.onnx $onnx_bytes bytes, resnet50.sfm $full_bytes bytes," \
        "resnet50-layer3.sfm $l3_bytes bytes ($((l3_bytes * 100 / full_bytes))% of the full .sfm)"
    # layer3 holds 7.1 M of ResNet50's 25.6 M parameters (28%); allow headroom.
    if [ $((l3_bytes * 2)) -ge "$full_bytes" ]; then
        fail "layer3 .sfm ($l3_bytes bytes) is not much smaller than the full .sfm ($full_bytes bytes)"
    fi
    run sfm_full infer -m "$W/resnet50.sfm" --input "$in0" --output "$W/sfm_full.bin" &&
        check "$W/sfm_full.bin" "$W/full.bin" "full .sfm vs .onnx, whole model" 5
    if [ -f "$W/chain_layer2.bin" ]; then
        run sfm_l3 infer -m "$W/resnet50-layer3.sfm" --segment layer3 \
            --input "$W/chain_layer2.bin" --output "$W/sfm_l3.bin" && size "$W/sfm_l3.bin" layer3 &&
            check "$W/sfm_l3.bin" "$W/chain_layer3.bin" "layer3 .sfm --segment layer3 vs layer3 of the full .onnx"
        # A segment whose weights the file does not hold must be refused.
        if "$BIN" infer -m "$W/resnet50-layer3.sfm" --segment layer2 --input "$W/chain_layer1.bin" \
            --output "$W/sfm_l3_as_l2.bin" >"$W/sfm_l3_as_l2.log" 2>&1; then
            fail "infer -m resnet50-layer3.sfm --segment layer2 succeeded; that file has no layer2 weights"
        else
            echo "  ok   layer3 .sfm refuses --segment layer2: $(tail -1 "$W/sfm_l3_as_l2.log")"
        fi
        # Without --segment: not specified (the graph still names every node),
        # so only reported, not a failure.
        if "$BIN" infer -m "$W/resnet50-layer3.sfm" --input "$W/chain_layer2.bin" \
            --output "$W/sfm_l3_nosegment.bin" >"$W/sfm_l3_nosegment.log" 2>&1; then
            check "$W/sfm_l3_nosegment.bin" "$W/chain_layer3.bin" "layer3 .sfm without --segment"
        else
            echo "  note: infer -m resnet50-layer3.sfm without --segment does not run:" \
                "$(tail -1 "$W/sfm_l3_nosegment.log")"
        fi
    fi
fi

# Winograd (lib/engine.h): chosen for 3x3 convs where oneDNN's kernels are
# AVX2, not where they are AVX-512. convert stores the weights of a Winograd
# conv transformed (16 floats per 9), so the file's size tells which it chose.
# ONEDNN_MAX_CPU_ISA=AVX2 makes any AVX-512 machine an AVX2 one for oneDNN.
echo "== Winograd where oneDNN is AVX2, oneDNN's own kernels where it is AVX-512"
if ONEDNN_MAX_CPU_ISA=AVX2 run wino_avx2 convert "$ONNX" -o "$W/l3-avx2.sfm" --segment layer3 &&
    SPLITINFER_WINO=off run wino_off convert "$ONNX" -o "$W/l3-off.sfm" --segment layer3 &&
    run wino_auto convert "$ONNX" -o "$W/l3-auto.sfm" --segment layer3; then
    avx2_b=$(stat -c %s "$W/l3-avx2.sfm") off_b=$(stat -c %s "$W/l3-off.sfm") auto_b=$(stat -c %s "$W/l3-auto.sfm")
    echo "  layer3 .sfm: $avx2_b bytes with oneDNN capped at AVX2, $off_b with SPLITINFER_WINO=off, $auto_b by default"
    if [ "$avx2_b" -le "$off_b" ]; then
        fail "with oneDNN at AVX2 convert did not choose Winograd for layer3 ($avx2_b <= $off_b bytes)"
    fi
    if grep -qw avx512f /proc/cpuinfo; then
        [ "$auto_b" -eq "$off_b" ] || fail "this CPU has AVX-512, yet convert chose Winograd ($auto_b != $off_b bytes)"
    else
        [ "$auto_b" -eq "$avx2_b" ] || fail "no AVX-512 here, yet convert did not choose Winograd ($auto_b != $avx2_b bytes)"
    fi
    # The transformed file runs its Winograd on any machine, and computes layer3.
    if [ -f "$W/chain_layer2.bin" ]; then
        run wino_run infer -m "$W/l3-avx2.sfm" --segment layer3 --input "$W/chain_layer2.bin" \
            --output "$W/l3-avx2.bin" &&
            check "$W/l3-avx2.bin" "$W/chain_layer3.bin" "layer3 by Winograd (the AVX2 file) vs layer3 of the full .onnx"
    fi
fi

if [ "$failed" -ne 0 ]; then
    echo "t_stages: FAIL"
    exit 1
fi
echo "t_stages: ok"
