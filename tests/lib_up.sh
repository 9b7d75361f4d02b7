# Sourced by the end-to-end tests: start and stop `splitinfer up`.
#   up_start PLAN MODEL [LOG [ARG...]]  starts it (ARGs passed on to up), waits for
#                               "gateway: URL", sets GW and UP_PID
#   up_stop [PID]               SIGTERM, waits; fails if up did not exit 0 (default: the last)
#   sample_photos DIR N         prints the first N PNGs of DIR (none when DIR has none)
#   need_mobilenet_photo        sets MB and PHOTO from ../shared, or skips the test
#   need_resnet18_noise DIR     sets MB (ResNet18, seeded weights) and PHOTO (noise, in DIR):
#                               no ../shared needed; skips without torch/PIL
#   same_logits A B WHAT        the "logits" of two classify answers agree (<= 1e-5 relative)
#   classify_to OUT [GATEWAY]   POSTs $PHOTO to GATEWAY's (default $GW) /v1/classify?logits=1,
#                               the answer to OUT; prints the HTTP status
#   arg_of PID FLAG             the value after FLAG on process PID's command line
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
# Any model and any photo, when a test needs no real labels: ResNet18 on
# seeded random weights (as t_reference exports it) and a noise image, so
# that the test runs without ../shared (in CI). Skips (exit 77) without
# torch/PIL; exits 1 if either cannot be made.
need_resnet18_noise() {
    local py=/usr/bin/python3
    "$py" -c 'import torch, PIL' 2>/dev/null || { echo "skip: no torch/PIL for $py"; exit 77; }
    MB=build/ref/resnet18.onnx
    "$py" tests/ref/export_resnet.py --arch resnet18 --seed 0 --out "$MB" --cached || exit 1
    PHOTO=$1/noise.png
    "$py" -c "
import random; from PIL import Image
r = random.Random(0); im = Image.new('RGB', (256, 256))
im.putdata([(r.randrange(256), r.randrange(256), r.randrange(256)) for _ in range(256 * 256)])
im.save('$PHOTO')" || exit 1
}
# Prints ok or FAIL with the worst relative difference; returns 1 on FAIL.
same_logits() { # A.json B.json WHAT: answers of /v1/classify?logits=1
    /usr/bin/python3 - "$1" "$2" "$3" <<'PYEOF'
import json, sys
a, b = (json.load(open(f))["logits"] for f in sys.argv[1:3])
assert len(a) == len(b) == 1000, (len(a), len(b))
worst = max(abs(x - y) / (1 + abs(x)) for x, y in zip(a, b))
print(f"{'ok  ' if worst <= 1e-5 else 'FAIL:'} logits {sys.argv[3]}: worst relative difference {worst:.2e}")
sys.exit(0 if worst <= 1e-5 else 1)
PYEOF
}
classify_to() { # OUT [GATEWAY]
    curl -s -m 30 -o "$1" -w '%{http_code}\n' -H 'Content-Type: image/png' \
        --data-binary "@$PHOTO" "${2:-$GW}/v1/classify?logits=1"
}
arg_of() { # PID FLAG: the functions' arguments are single words (paths, ports, names)
    tr '\0' ' ' <"/proc/$1/cmdline" | sed -n "s/.* $2 \([^ ]*\).*/\1/p"
}
# `|| true`: an up already stopped is fine, and a caller may run under set -e.
up_cleanup() { for p in "${UP_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap up_cleanup EXIT
