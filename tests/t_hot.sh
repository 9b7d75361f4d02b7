#!/usr/bin/env bash
# Weights onto huge pages behind requests (stage.h, si_stage_hot_start): every
# function of a MobileNetV2 pipeline under `splitinfer up` reports
# splitinfer_stage_weights_hot 1 soon after its first call, holds its weights on huge
# pages where THP is on for madvise'd memory (/proc/PID/smaps_rollup), does
# not hold them twice (peak RSS above its RSS once moved by less than 3/4 of
# the weights, where they reach 1 MiB), and the
# logits of a photo are the same numbers before and after the move
# (<= 1e-5 relative; the first request meets the weights still mapped: a
# function starts the move after its first call).
# Exit 0 pass, 1 fail, 77 cannot run here.
set -uo pipefail
cd "$(dirname "$0")/.."
. tests/lib_up.sh
need_mobilenet_photo
W=build/test-hot
mkdir -p "$W"
failed=0
up_start tests/plans/mobilenet-pipeline.json "$MB" "$W/up.log" || exit 1
classify_to "$W/first.json" >/dev/null
stages=$(pgrep -P "$UP_PID" -f ' stage ')
[ -n "$stages" ] || { echo "FAIL: no stage processes under up"; exit 1; }
thp=$(cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null)
for p in $stages; do
    port=$(arg_of "$p" --port) state=
    for _ in $(seq 1 100); do
        state=$(curl -s "http://127.0.0.1:$port/metrics" | awk '/^splitinfer_stage_weights_hot\{/ {print $2}')
        [ "$state" = 1 ] && break
        sleep 0.1
    done
    huge=$(awk '/^AnonHugePages:/ {print $2}' "/proc/$p/smaps_rollup")
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status") hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$p/status")
    name=$(arg_of "$p" --name)
    if [ "$state" != 1 ]; then
        echo "FAIL: $name: splitinfer_stage_weights_hot '$state' after 10 s"; failed=1; continue
    fi
    # Huge pages only where a segment's weights reach 1 MiB (hugemem.h).
    if [[ $thp == *"[never]"* ]]; then
        echo "ok   $name: weights moved (THP off here: 4 KiB pages), RSS $rss kB"
    elif [ "${huge:-0}" -gt 0 ]; then
        echo "ok   $name: weights moved, $huge kB on huge pages, RSS $rss kB, peak $hwm kB"
    else
        echo "note $name: weights moved, none on huge pages (segment under 1 MiB?), RSS $rss kB"
    fi
    # Held twice shows as a peak above RSS by about the weights; a segment
    # whose weights (its step file) are under 1 MiB cannot show it beside the
    # first request's buffers (~7 MB for the stem's 224x224 input and output).
    model=$(arg_of "$p" -m)
    wkb=$(($(stat -c %s "$model") / 1024))
    if [ "$wkb" -lt 1024 ]; then
        echo "note $name: peak RSS $hwm kB, RSS $rss kB: not checked, weights only $wkb kB"
    elif [ $((hwm - rss)) -gt $((wkb * 3 / 4)) ]; then
        echo "FAIL: $name: peak RSS $hwm kB against $rss kB: the weights ($wkb kB) were held twice"; failed=1
    else
        echo "ok   $name: peak RSS $hwm kB, RSS $rss kB: apart by less than 3/4 of its weights ($wkb kB)"
    fi
done
# At least one function's weights on huge pages where THP allows it.
total=0
for p in $stages; do total=$((total + $(awk '/^AnonHugePages:/ {print $2}' "/proc/$p/smaps_rollup"))); done
if [[ $thp != *"[never]"* ]] && [ "$total" -le 0 ]; then
    echo "FAIL: THP is '$thp' and no function holds its weights on huge pages"; failed=1
fi
classify_to "$W/after.json" >/dev/null
same_logits "$W/first.json" "$W/after.json" "before and after the move" || failed=1
up_stop || failed=1
exit $failed
