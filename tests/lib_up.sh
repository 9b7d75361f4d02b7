# Sourced by the end-to-end tests: start and stop `splitinfer up`.
#   up_start PLAN MODEL [LOG [ARG...]]  starts it (ARGs passed on to up), waits for
#                               "gateway: URL", sets GW and UP_PID
#   up_stop [PID]               SIGTERM, waits; fails if up did not exit 0 (default: the last)
#   sample_photos DIR N         prints the first N PNGs of DIR (none when DIR has none)
#   need_mobilenet_photo        sets MB and PHOTO from ../shared, or skips the test
# Every up started here is stopped by the EXIT trap, whatever happens.
BIN=${SPLITINFER:-build/splitinfer}
UP_PIDS=()
up_start() { # PLAN MODEL [LOG [more up arguments...]]
    local plan=$1 model=$2 log=${3:-$(mktemp)}
    UP_LOG=$log
    "$BIN" up --plan "$plan" -m "$model" "${@:4}" >"$log.out" 2>"$log" &
    UP_PID=$!
    UP_PIDS+=("$UP_PID")
    for _ in $(seq 1 600); do
        GW=$(sed -n 's/^gateway: \(http[^ ]*\).*/\1/p' "$log.out" 2>/dev/null)
        [ -n "$GW" ] && return 0
        kill -0 "$UP_PID" 2>/dev/null || break
        sleep 0.2
    done
    echo "FAIL: splitinfer up --plan $plan did not start:"; tail -20 "$log"
    return 1
}
up_stop() {
    local pid=${1:-$UP_PID} kids rc=0
    kids=$(pgrep -P "$pid")
    kill -TERM "$pid" 2>/dev/null
    wait "$pid" || rc=$?
    if [ "$rc" -ne 0 ]; then echo "FAIL: up exited $rc after SIGTERM"; return 1; fi
    for k in $kids; do
        if kill -0 "$k" 2>/dev/null; then echo "FAIL: function pid $k left running"; return 1; fi
    done
    return 0
}
# A glob, not `ls | head`: under pipefail ls can die of SIGPIPE when head exits.
sample_photos() {
    local all=("$1"/*.png)
    [ -e "${all[0]}" ] && printf '%s\n' "${all[@]:0:$2}"
    return 0
}
# The trained MobileNetV2 of ../shared and one of its photos in MB and PHOTO,
# or the test skips (exit 77).
need_mobilenet_photo() {
    MB=../shared/models/mobilenet_v2_imagenet.onnx
    PHOTO=$(sample_photos ../shared/testdata/imagenet-sample 1)
    [ -f "$MB" ] && [ -n "$PHOTO" ] || { echo "skip: ../shared model or photos missing"; exit 77; }
}
# `|| true`: an up already stopped is fine, and a caller may run under set -e.
up_cleanup() { for p in "${UP_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap up_cleanup EXIT
