#!/usr/bin/env bash
# `splitinfer up` as a user starts it:
#  - `--port 0` means any free port, as for stage and gateway: up prints a
#    gateway URL with a real port, and it answers. (It used to pass 0 on to
#    the gateway and then probe port 0 every 20 ms until it gave up.)
#  - `--port P` serves on P.
#  - Idle, up and every function it started sleep: fewer than 5 context
#    switches a second among all of them over 3 s (the probe loop above
#    showed as ~55 a second).
# Exit 0 pass, 1 fail, 77 cannot run here.
set -uo pipefail
cd "$(dirname "$0")/.."
. tests/lib_up.sh
W=build/test-up
mkdir -p "$W"
failed=0
need_resnet18_noise "$W"

# up with --port $1: GW and UP_PID (lib_up.sh), or fails.
start() { up_start plans/pipeline.json "$MB" "$W/up.log" --port "$1"; }
classify_ok() { [ "$(classify_to "$W/r.json" "$1")" = 200 ] && grep -q '"top"' "$W/r.json"; }

port=
if start 0; then
    port=${GW##*:}
    if [ "$port" -gt 0 ] 2>/dev/null && classify_ok "$GW"; then
        echo "ok   up --port 0: gateway on free port $port, classify 200"
    else
        echo "FAIL: up --port 0: gateway URL '$GW' does not classify"; failed=1
    fi
    # Idle: every thread of up and of its children, before and after 3 s.
    switches() {
        local p t s=0
        for p in "$UP_PID" $(pgrep -P "$UP_PID"); do
            for t in /proc/"$p"/task/*/status; do
                s=$((s + $(awk '/^(non)?voluntary_ctxt_switches:/ {n += $2} END {print n + 0}' "$t" 2>/dev/null || echo 0)))
            done
        done
        echo "$s"
    }
    sleep 1 # the weights' move after the first call is done by now (t_hot)
    a=$(switches); sleep 3; b=$(switches)
    rate=$(((b - a) / 3))
    if [ "$rate" -lt 5 ]; then
        echo "ok   idle: $rate context switches a second over up and its $(pgrep -P "$UP_PID" | wc -l) children"
    else
        echo "FAIL: idle, up and its functions switched $rate times a second (something polls)"; failed=1
    fi
    up_stop "$UP_PID" || failed=1
else
    failed=1
fi

# The port the first run found free, free again now that it stopped.
fixed=${port:-$((20000 + RANDOM % 10000))}
if start "$fixed"; then
    if [ "$GW" = "http://127.0.0.1:$fixed" ] && classify_ok "$GW"; then
        echo "ok   up --port $fixed: gateway there, classify 200"
    else
        echo "FAIL: up --port $fixed: gateway URL '$GW'"; failed=1
    fi
    up_stop "$UP_PID" || failed=1
else
    failed=1
fi
exit $failed
