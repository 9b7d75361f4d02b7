#!/usr/bin/env bash
# make bench-engine: splitinfer against ONNX Runtime (onnxruntime-node) on
# ResNet50, in one run on this machine, so that both see the same noise.
#
#   1. latency, batch 1, at 1 and at 2 threads: ROUNDS rounds that alternate
#      ours, ORT, ours, ORT ...; each round is one process that warms up with
#      WARMUP runs and times N; the result is the median of the round medians
#   2. throughput, batch 8, at B8_THREADS threads, the same way (B8_ROUNDS x B8_N)
#   3. cold start: `splitinfer classify -m resnet50.sfm PHOTO` from exec to
#      exit, COLD_RUNS times: median wall ms and peak RSS; ORT's peer is a node
#      process that loads the .onnx, classifies PHOTO and exits
# then a summary table against the targets. Exit 0 whenever the benchmark
# ran (targets missed print MISS); STRICT=1 exits 1 when a target is missed.
#
# Peers: ORT session intraOpNumThreads=T, interOpNumThreads=1,
# graphOptimizationLevel 'all', executionMode 'sequential' (bench/ort_bench.js).
# Model: seeded ResNet50 (tests/ref/export_resnet.py, seed 0, BN folded) in
# build/ref/, made when missing; ours runs its .sfm, ORT the .onnx (for batch 8
# an export with a symbolic batch dimension, which ORT needs).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-7}
N=${N:-20}
WARMUP=${WARMUP:-3}
B8_ROUNDS=${B8_ROUNDS:-5}
B8_N=${B8_N:-5}
B8_THREADS=${B8_THREADS:-2}
COLD_RUNS=${COLD_RUNS:-10}
STRICT=${STRICT:-0}
PY=/usr/bin/python3 # Debian's interpreter: python3-torch lives there
BIN=${SPLITINFER:-build/splitinfer}
REF=build/ref
ONNX=$REF/resnet50.onnx
ONNX_DYN=$REF/resnet50-dyn.onnx
SFM=$REF/resnet50.sfm
PHOTO_DIR=${PHOTO_DIR:-../shared/testdata/imagenet-sample}
LOG=$REF/bench
# Targets (the engine's goals): ours/ORT latency ratio at 1 and 2 threads,
# cold start exec-to-exit and its peak RSS.
T_RATIO=1.0
T_COLD_MS=150
T_RSS_MIB=200

die() {
    echo "bench/engine.sh: $*" >&2
    exit 1
}
step() { echo; echo "== $*"; }

# --- prerequisites ---------------------------------------------------------
[ -x "$BIN" ] || die "$BIN is missing; build it with: make build/splitinfer"
command -v node >/dev/null || die "node is missing (make deps installs nodejs and npm)"
"$PY" -c 'import torch, torchvision' 2>/dev/null ||
    die "$PY cannot import torch and torchvision (make deps installs python3-torch python3-torchvision)"
PHOTO=$(find "$PHOTO_DIR" -maxdepth 1 -name '*.png' 2>/dev/null | LC_ALL=C sort | head -1 || true)
[ -n "$PHOTO" ] || die "no .png in $PHOTO_DIR (set PHOTO_DIR)"

if ! (cd bench && node -e 'require("onnxruntime-node"); require("pngjs")') 2>/dev/null; then
    step "installing onnxruntime-node into bench/node_modules"
    # The native library ships in the package; without the variable its
    # postinstall tries to download one, which fails here.
    (cd bench && ONNXRUNTIME_NODE_INSTALL=skip npm install --no-audit --no-fund) ||
        die "npm install in bench/ failed"
    (cd bench && node -e 'require("onnxruntime-node"); require("pngjs")') ||
        die "onnxruntime-node does not load after npm install"
fi

mkdir -p "$REF" "$LOG"
"$PY" tests/ref/export_resnet.py --arch resnet50 --seed 0 --out "$ONNX" --cached 2>"$LOG/export.log" ||
    { cat "$LOG/export.log"; die "export of $ONNX failed"; }
"$PY" tests/ref/export_resnet.py --arch resnet50 --seed 0 --out "$ONNX_DYN" --dynamic-batch --cached \
    2>"$LOG/export-dyn.log" || { cat "$LOG/export-dyn.log"; die "export of $ONNX_DYN failed"; }
# The .sfm format may change with the binary: convert again when either is newer.
if [ ! -s "$SFM" ] || [ "$BIN" -nt "$SFM" ] || [ "$ONNX" -nt "$SFM" ]; then
    "$BIN" convert "$ONNX" -o "$SFM" || die "$BIN convert $ONNX -o $SFM failed"
fi
echo "model: $ONNX ($(stat -c %s "$ONNX") bytes), $SFM ($(stat -c %s "$SFM") bytes); photo: $PHOTO"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), load $(cut -d' ' -f1-3 /proc/loadavg)"

# --- helpers ---------------------------------------------------------------
# field KEY LINE: the value of KEY=value in a `bench ...` line.
field() { sed -n "s/.*[ ]$1=\\([^ ]*\\).*/\\1/p" <<<"$2"; }
# median of the numbers given as arguments
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
# ratio A B: A / B with 3 decimals
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b > 0) ? a / b : 0 }'; }
# le A B: exit 0 when A <= B
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a <= b) }'; }

# bench_line WHO ARGS...: one `bench ...` line from our binary (WHO=ours) or
# from ort_bench.js (WHO=ort); dies with the command and its output otherwise.
bench_line() {
    local who=$1 out line
    shift
    local cmd
    if [ "$who" = ours ]; then cmd=("$BIN" bench "$@"); else cmd=(node bench/ort_bench.js bench "$@"); fi
    if ! out=$("${cmd[@]}" 2>"$LOG/last.err"); then
        cat "$LOG/last.err" >&2
        die "failed: ${cmd[*]}"
    fi
    line=$(grep '^bench ' <<<"$out" | tail -1)
    if [ -z "$line" ] || [ -z "$(field median_ms "$line")" ]; then
        die "no 'bench ... median_ms=' line from: ${cmd[*]}; it printed: $out"
    fi
    echo "$line"
}

# interleaved LABEL THREADS BATCH ROUNDS N WARMUP ORT_MODEL: sets OURS_MED,
# ORT_MED (median over rounds of the per-round median ms per batch).
interleaved() {
    local label=$1 t=$2 b=$3 rounds=$4 n=$5 w=$6 ort_model=$7 r line ours=() ort=()
    step "$label: $rounds rounds x $n runs (warm-up $w), threads=$t batch=$b, ours and ORT alternating"
    for ((r = 1; r <= rounds; r++)); do
        line=$(bench_line ours -m "$SFM" -t "$t" -n "$n" --batch "$b" --warmup "$w")
        echo "  round $r ours: $line"
        ours+=("$(field median_ms "$line")")
        line=$(bench_line ort -m "$ort_model" -t "$t" -n "$n" --batch "$b" --warmup "$w")
        echo "  round $r ORT:  $line"
        ort+=("$(field median_ms "$line")")
    done
    OURS_MED=$(median "${ours[@]}")
    ORT_MED=$(median "${ort[@]}")
    echo "  median of round medians: ours $OURS_MED ms, ORT $ORT_MED ms, ours/ORT $(ratio "$OURS_MED" "$ORT_MED")"
}

# cold LABEL CMD...: COLD_RUNS exec-to-exit runs of CMD after one untimed run
# (page cache warm: this measures process start, model load and one
# inference, not the disk). Prints the first run's output and a line
# "cold median_ms=X min_ms=X max_ms=X rss_median_mib=X rss_max_mib=X";
# sets COLD_MS, COLD_RSS (peak RSS, max over runs, MiB).
cold() {
    local label=$1 line
    shift
    step "cold start, $label: $COLD_RUNS runs of: $*"
    line=$("$PY" - "$COLD_RUNS" "$@" <<'PYEOF'
import os, statistics, subprocess, sys, time

runs, cmd = int(sys.argv[1]), sys.argv[2:]

def once():
    """Wall ms from exec to exit, and the child's own peak RSS (MiB)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    ms = (time.perf_counter() - t0) * 1000.0
    p.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4 above
    if p.returncode != 0:
        sys.stderr.write(out.decode(errors="replace"))
        sys.exit("exit code %d from: %s" % (p.returncode, " ".join(cmd)))
    return ms, ru.ru_maxrss / 1024.0, out  # ru_maxrss is in KiB on Linux

_, _, out = once()
sys.stderr.write("".join("    | " + l + "\n" for l in out.decode(errors="replace").splitlines()[:8]))
ms, rss = [], []
for _ in range(runs):
    m, r, _ = once()
    ms.append(m)
    rss.append(r)
print("cold median_ms=%.1f min_ms=%.1f max_ms=%.1f rss_median_mib=%.1f rss_max_mib=%.1f" % (
    statistics.median(ms), min(ms), max(ms), statistics.median(rss), max(rss)))
PYEOF
    ) || die "cold start of $label failed"
    echo "  $line"
    COLD_MS=$(field median_ms "$line")
    COLD_RSS=$(field rss_max_mib "$line")
}

# --- 1, 2: interleaved latency and throughput ------------------------------
interleaved "latency" 1 1 "$ROUNDS" "$N" "$WARMUP" "$ONNX"
L1_OURS=$OURS_MED L1_ORT=$ORT_MED
interleaved "latency" 2 1 "$ROUNDS" "$N" "$WARMUP" "$ONNX"
L2_OURS=$OURS_MED L2_ORT=$ORT_MED
interleaved "throughput" "$B8_THREADS" 8 "$B8_ROUNDS" "$B8_N" 1 "$ONNX_DYN"
B8_OURS=$(awk -v m="$OURS_MED" 'BEGIN { printf "%.2f", 8000 / m }')
B8_ORT=$(awk -v m="$ORT_MED" 'BEGIN { printf "%.2f", 8000 / m }')

# --- 3: cold start -----------------------------------------------------------
cold "splitinfer" "$BIN" classify -m "$SFM" "$PHOTO"
C_OURS=$COLD_MS R_OURS=$COLD_RSS
cold "ORT (node)" node bench/ort_bench.js classify -m "$ONNX" -t "$(nproc)" "$PHOTO"
C_ORT=$COLD_MS R_ORT=$COLD_RSS

# --- summary -------------------------------------------------------------------
R1=$(ratio "$L1_OURS" "$L1_ORT")
R2=$(ratio "$L2_OURS" "$L2_ORT")
RB=$(ratio "$B8_OURS" "$B8_ORT")
verdict() { if "$@"; then echo PASS; else echo MISS; fi; } # verdict CMD...
v1=$(verdict le "$R1" "$T_RATIO")
v2=$(verdict le "$R2" "$T_RATIO")
vc=$(verdict le "$C_OURS" "$T_COLD_MS")
vr=$(verdict le "$R_OURS" "$T_RSS_MIB")
missed=$(printf '%s\n' "$v1" "$v2" "$vc" "$vr" | grep -c MISS || true)

step "summary (ResNet50, $(nproc) cores; ours: $SFM, ORT: onnxruntime-node $(cd bench && node -p 'require("onnxruntime-node/package.json").version'))"
row() { printf '%-34s %10s %10s %10s  %-22s %s\n' "$@"; }
row "metric" "ours" "ORT" "ours/ORT" "target" "status"
row "batch 1, 1 thread, median ms" "$L1_OURS" "$L1_ORT" "$R1" "ratio <= $T_RATIO" "$v1"
row "batch 1, 2 threads, median ms" "$L2_OURS" "$L2_ORT" "$R2" "ratio <= $T_RATIO" "$v2"
row "batch 8, $B8_THREADS threads, images/s" "$B8_OURS" "$B8_ORT" "$RB" "(higher is better)" "-"
row "cold start, median ms" "$C_OURS" "$C_ORT" "$(ratio "$C_OURS" "$C_ORT")" "ours <= $T_COLD_MS ms" "$vc"
row "cold start, peak RSS MiB" "$R_OURS" "$R_ORT" "$(ratio "$R_OURS" "$R_ORT")" "ours <= $T_RSS_MIB MiB" "$vr"
echo "targets missed: $missed of 4"
if [ "$STRICT" = 1 ] && [ "$missed" -gt 0 ]; then
    exit 1
fi
