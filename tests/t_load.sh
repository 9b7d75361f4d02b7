#!/usr/bin/env bash
# Load: `hey -n 2000 -c 16` against /v1/classify through the pipeline, the
# pipeline chained and the parallel plan (MobileNetV2 cut at its own cut
# points: the same machinery as ResNet50 at a tenth of the compute, so a run
# takes a minute, not ten).
# Passes when every response is 2xx and every function's RSS after the run is
# within 10% of its RSS before (after a warm-up of the same concurrency).
# Exit 0 pass, 1 fail, 77 cannot run here.
set -uo pipefail
cd "$(dirname "$0")/.."
. tests/lib_up.sh
need_mobilenet_photo
command -v hey >/dev/null || { echo "skip: hey is not installed (make deps)"; exit 77; }
W=build/test-load
mkdir -p "$W"
N=${LOAD_N:-2000}
# Warm-up: each of the gateway's 16 worker threads faults in its own malloc
# arena over its first requests; 64 left a chained plan's gateway 10% short of
# its steady RSS (reached by 1500, flat over the next 6000).
WARM=${LOAD_WARM:-300}
failed=0
rss() { for p in "$@"; do awk '/VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0; done; }
/usr/bin/python3 -c "import json; d=json.load(open('tests/plans/mobilenet-pipeline.json')); d['chain']=True; d['name']='mobilenet-chain'; json.dump(d, open('$W/mobilenet-chain.json','w'))"
for plan in mobilenet-pipeline mobilenet-chain mobilenet-parallel mobilenet-resident; do
    pf=tests/plans/$plan.json
    [ -f "$pf" ] || pf=$W/$plan.json
    up_start "$pf" "$MB" "$W/up-$plan.log" || { failed=1; continue; }
    pids=$(pgrep -P "$UP_PID" | tr '\n' ' ')
    hey -n "$WARM" -c 16 -m POST -T image/png -D "$PHOTO" "$GW/v1/classify" >/dev/null 2>&1
    before=($(rss $pids))
    hey -n "$N" -c 16 -m POST -T image/png -D "$PHOTO" "$GW/v1/classify" >"$W/hey-$plan.txt" 2>&1
    after=($(rss $pids))
    codes=$(grep -E '^\s+\[[0-9]+\]' "$W/hey-$plan.txt" | tr -s ' \t' ' ')
    rps=$(awk '/Requests\/sec/ {print $2}' "$W/hey-$plan.txt")
    p50=$(awk '/50% in/ {print $3}' "$W/hey-$plan.txt")
    echo "$plan: $N requests, $rps req/s, p50 ${p50}s, status codes:$codes"
    ok2xx=$(echo "$codes" | grep -oE '\[2[0-9][0-9]\] [0-9]+' | awk '{s += $2} END {print s + 0}')
    [ "$ok2xx" = "$N" ] || { echo "FAIL: $plan: $ok2xx/$N responses were 2xx"; failed=1; }
    i=0
    for p in $pids; do
        b=${before[$i]} a=${after[$i]}
        name=$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -o -- '--name [^ ]*\|gateway' | head -1)
        pct=$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.1f", b ? 100 * (a - b) / b : 999}')
        echo "  pid $p ${name:-?}: RSS $((b / 1024)) -> $((a / 1024)) MiB ($pct%)"
        awk -v a="$a" -v b="$b" 'BEGIN {exit !(b > 0 && a <= 1.10 * b && a >= 0.90 * b)}' || { echo "FAIL: RSS moved more than 10%"; failed=1; }
        i=$((i + 1))
    done
    up_stop || failed=1
done
exit $failed
