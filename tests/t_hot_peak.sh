#!/usr/bin/env bash
# The move to huge pages under traffic (stage.h, si_stage_hot_start): a
# function kept busy while its weights move holds them once, not twice.
# ResNet18 on seeded weights (45 MB, so this runs without ../shared) in the
# baseline plan under `up`; two clients send requests back to back from the
# first call until the function reports splitinfer_stage_weights_hot 1. Then:
#  - its peak RSS is above its RSS by less than half its weights (the move
#    holds one step, 8 MiB, twice; when requests read the mapping back in
#    behind the copy, the peak was the weights more: ResNet50's function went
#    to 236 MB against 130);
#  - the weights did move, and requests ran while they moved;
#  - every request answered 200, and the logits after the move are those of
#    a request sent with the first ones (<= 1e-5 relative).
# Exit 0 pass, 1 fail, 77 cannot run here.
set -uo pipefail
cd "$(dirname "$0")/.."
. tests/lib_up.sh
W=build/test-hot-peak
rm -rf "$W" && mkdir -p "$W"
failed=0
need_resnet18_noise "$W"

up_start plans/baseline.json "$MB" "$W/up.log" || exit 1
stage=$(pgrep -P "$UP_PID" -f ' stage ' | head -1)
[ -n "$stage" ] || { echo "FAIL: no stage process under up"; up_stop; exit 1; }
port=$(arg_of "$stage" --port)
# The move's state, then the stage calls the function has answered.
hot() {
    curl -s "http://127.0.0.1:$port/metrics" | awk '/^splitinfer_stage_weights_hot\{/ {h = $2}
        /^splitinfer_requests_total\{.*route="\/v1\/stage",code="200"/ {n = $2} END {print h + 0, n + 0}'
}
read -r state calls < <(hot)
[ "$state" = 0 ] || echo "note weights_hot $state before the first request"
# The first call to end starts the move; two clients, started with it, keep
# the function busy through it (the next call waits for the first's lock).
client() { while [ ! -e "$W/stop" ]; do classify_to "$W/c$1.json" >>"$W/codes$1"; done; }
client 1 &
c1=$!
client 2 &
c2=$!
classify_to "$W/first.json" >"$W/codes0"
for _ in $(seq 1 2000); do
    read -r state calls < <(hot)
    [ "$state" = 1 ] && break
    sleep 0.005
done
during=$((calls - 1)) # answered after the first, which started the move, by when it ended
touch "$W/stop"
wait "$c1" "$c2"
rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$stage/status") hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$stage/status")
model=$(arg_of "$stage" -m)
wkb=$(($(stat -c %s "$model") / 1024))
if [ "$state" != 1 ]; then
    echo "FAIL: splitinfer_stage_weights_hot $state after 10 s"; failed=1
elif [ "$during" -lt 1 ]; then
    echo "FAIL: no request ran while the weights moved"; failed=1
else
    echo "ok   weights moved while $during more requests ran"
fi
if [ $((hwm - rss)) -ge $((wkb / 2)) ]; then
    echo "FAIL: peak RSS $hwm kB against $rss kB after the move: the weights ($wkb kB) were held twice"
    failed=1
else
    echo "ok   peak RSS $hwm kB, RSS $rss kB after the move: apart by less than half the weights ($wkb kB)"
fi
bad=$(cat "$W"/codes[012] | grep -vc '^200$')
total=$(cat "$W"/codes[012] | wc -l)
if [ "$bad" -ne 0 ]; then
    echo "FAIL: $bad of $total requests did not answer 200"; failed=1
else
    echo "ok   all $total requests answered 200"
fi
classify_to "$W/after.json" >/dev/null
same_logits "$W/first.json" "$W/after.json" "before and after the move" || failed=1
up_stop || failed=1
exit $failed
