#!/usr/bin/env bash
# Bad input over HTTP: each case gets its status code and a JSON error, and the
# server still serves afterwards. Stage and gateway from `splitinfer up`
# (MobileNetV2 pipeline: small and fast), plus a gateway whose function is
# down, and a function killed during a load run (up restarts it). Chains: a
# chained request to a function without --next (422), a chain whose next
# function is down (503) or never answers (504, within the plan's timeout).
# Exit 0 pass, 1 fail, 77 cannot run here.
set -uo pipefail
cd "$(dirname "$0")/.."
. tests/lib_up.sh
PY=/usr/bin/python3
need_mobilenet_photo
command -v hey >/dev/null || { echo "skip: hey is not installed (make deps)"; exit 77; }
W=build/test-http
mkdir -p "$W"
failed=0

# expect STATUS LABEL CURL_ARGS...: checks status and JSON error body; the
# body is left in $W/body and curl's transfer time, in seconds, in $W/time.
expect() {
    local want=$1 label=$2
    shift 2
    local got
    got=$(curl -s -m 30 -o "$W/body" -w '%{http_code} %{time_total}' "$@")
    echo "${got#* }" >"$W/time"
    got=${got%% *}
    if [ "$got" != "$want" ]; then
        echo "FAIL: $label: HTTP $got, want $want: $(head -c 200 "$W/body")"; failed=1; return
    fi
    if [ "$want" -ge 400 ] && ! "$PY" -c "import json,sys; e=json.load(open('$W/body'))['error']; assert e['code'] and e['message']" 2>/dev/null; then
        echo "FAIL: $label: HTTP $got without a JSON error: $(head -c 200 "$W/body")"; failed=1; return
    fi
    echo "ok   $label: HTTP $got $(head -c 120 "$W/body" | tr -cd "[:print:]")"
}
still_serving() {
    expect 200 "  still serving" -X POST -H 'Content-Type: image/png' --data-binary "@$PHOTO" "$GW/v1/classify"
}
# kill_under_load PID UP_LOG NAME: kill -9 PID (a function of the up logging to
# UP_LOG) during a hey run against $GW; up must restart it, and the 5 requests
# after that must all succeed.
kill_under_load() {
    local victim=$1 log=$2 name=$3 ok=0 code
    hey -n 400 -c 4 -m POST -T image/png -D "$PHOTO" "$GW/v1/classify" >"$W/hey-$name.txt" 2>&1 &
    local hey_pid=$!
    sleep 1
    kill -9 "$victim" && echo "killed function pid $victim during the load run"
    wait "$hey_pid"
    grep -E '^\s+\[[0-9]+\]' "$W/hey-$name.txt" | sed 's/^/    /'
    for _ in $(seq 1 100); do grep -q 'restarting' "$log" && break; sleep 0.1; done
    grep -q 'restarting' "$log" && echo "ok   up restarted it: $(grep restarting "$log" | tail -1)" || { echo "FAIL: no restart logged"; failed=1; }
    sleep 2
    for _ in 1 2 3 4 5; do
        code=$(curl -s -m 30 -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: image/png' --data-binary "@$PHOTO" "$GW/v1/classify")
        [ "$code" = 200 ] && ok=$((ok + 1))
    done
    [ "$ok" = 5 ] && echo "ok   5/5 requests after the restart succeeded" || { echo "FAIL: $ok/5 after restart"; failed=1; }
}

up_start tests/plans/mobilenet-pipeline.json "$MB" "$W/up.log" || exit 1
STAGE=$(sed -n 's/.*"functions": \[ *"\([^"]*\)".*/\1/p' "$(sed -n 's/.*files in \([^)]*\)).*/\1/p' "$UP_LOG.out")/plan.json" | head -1)
[ -z "$STAGE" ] && STAGE=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['steps'][0]['functions'][0])" "$(sed -n 's/.*files in \([^)]*\)).*/\1/p' "$UP_LOG.out")/plan.json")
echo "gateway $GW, first stage $STAGE"

# Gateway
printf 'this is not a png' >"$W/text.png"
head -c 3000 "$PHOTO" >"$W/trunc.png"
head -c $((33 * 1024 * 1024)) /dev/zero >"$W/huge.png"
expect 400 "non-PNG body" -X POST -H 'Content-Type: image/png' --data-binary "@$W/text.png" "$GW/v1/classify"; still_serving
expect 400 "truncated PNG" -X POST -H 'Content-Type: image/png' --data-binary "@$W/trunc.png" "$GW/v1/classify"; still_serving
expect 413 "body over the 32 MiB limit" -X POST -H 'Content-Type: image/png' --data-binary "@$W/huge.png" "$GW/v1/classify"; still_serving
expect 415 "wrong content type" -X POST -H 'Content-Type: text/plain' --data-binary "@$PHOTO" "$GW/v1/classify"; still_serving
expect 404 "unknown route" "$GW/v1/nothing"; still_serving
expect 405 "wrong method" "$GW/v1/classify"; still_serving
expect 404 "unknown OIP model" "$GW/v2/models/nope"
expect 200 "OIP model metadata" "$GW/v2/models/mobilenet_v2"
expect 405 "OIP model metadata by DELETE" -X DELETE "$GW/v2/models/mobilenet_v2"; still_serving
expect 422 "OIP wrong shape" -X POST -H 'Content-Type: application/json' -d '{"inputs":[{"name":"input","shape":[1,3,2,2],"datatype":"FP32","data":[1,2,3,4,5,6,7,8,9,10,11,12]}]}' "$GW/v2/models/mobilenet_v2/infer"
expect 400 "OIP malformed JSON" -X POST -H 'Content-Type: application/json' -d '{"inputs": [' "$GW/v2/models/mobilenet_v2/infer"; still_serving

# Stage
"$PY" tests/ref/stage_msg.py "$W/ok.pb" "#0..#6" 1 3 224 224
"$PY" tests/ref/stage_msg.py "$W/shape.pb" "#0..#6" 1 4 224 224
"$PY" tests/ref/stage_msg.py "$W/seg.pb" "#6..#13" 1 3 224 224
"$PY" tests/ref/stage_msg.py "$W/noseg.pb" "layer9" 1 3 224 224
"$PY" tests/ref/stage_msg.py "$W/rows.pb" "#0..#6" 1 3 100 224 0 0 56
head -c 100000 "$W/ok.pb" >"$W/trunc.pb"
"$PY" tests/ref/stage_msg.py "$W/chain.pb" "#0..#6" 1 3 224 224 --then "#6..#13"
head -c 5000 /dev/urandom >"$W/random.pb"
PB=(-X POST -H 'Content-Type: application/x-protobuf')
expect 200 "stage: valid request" "${PB[@]}" --data-binary "@$W/ok.pb" "$STAGE/v1/stage"
expect 400 "stage: truncated protobuf" "${PB[@]}" --data-binary "@$W/trunc.pb" "$STAGE/v1/stage"
expect 400 "stage: malformed protobuf" "${PB[@]}" --data-binary "@$W/random.pb" "$STAGE/v1/stage"
expect 422 "stage: wrong shape" "${PB[@]}" --data-binary "@$W/shape.pb" "$STAGE/v1/stage"
expect 422 "stage: another segment" "${PB[@]}" --data-binary "@$W/seg.pb" "$STAGE/v1/stage"
expect 422 "stage: unknown segment" "${PB[@]}" --data-binary "@$W/noseg.pb" "$STAGE/v1/stage"
expect 422 "stage: rows that do not match the band" "${PB[@]}" --data-binary "@$W/rows.pb" "$STAGE/v1/stage"
expect 422 "stage: a chained request to a function without --next" "${PB[@]}" --data-binary "@$W/chain.pb" "$STAGE/v1/stage"
expect 415 "stage: wrong content type" -X POST -H 'Content-Type: image/png' --data-binary "@$W/ok.pb" "$STAGE/v1/stage"
expect 404 "stage: unknown route" "$STAGE/v1/other"
# ZEROS inputs: all zeros in a bitmap of 18 KiB is a valid input; the same
# claiming more rows than the segment's input has is refused before it is
# expanded (it would be 172 MB of floats from a 5 MB body).
"$PY" tests/ref/stage_msg.py "$W/zeros.pb" "#0..#6" 1 3 224 224 --zeros
"$PY" tests/ref/stage_msg.py "$W/zeros-tall.pb" "#0..#6" 64 3 1000 224 --zeros
expect 200 "stage: a ZEROS input of all zeros" "${PB[@]}" --data-binary "@$W/zeros.pb" "$STAGE/v1/stage"
expect 422 "stage: a ZEROS input claiming 1000 of 224 rows, batch 64 (172 MB as floats from a 5 MB body)" "${PB[@]}" --data-binary "@$W/zeros-tall.pb" "$STAGE/v1/stage"
expect 200 "stage: still serving" "${PB[@]}" --data-binary "@$W/ok.pb" "$STAGE/v1/stage"

# A function killed during a load run: up restarts it, requests after succeed.
kill_under_load "$(pgrep -f "step2.sfm" | head -1)" "$W/up.log" kill
up_stop || failed=1

# Resident bands (plan.h "resident"): a call continuing rows its function
# does not hold (409), resident calls a function cannot take (422), and a
# band killed during a load run: up restarts it, the gateway runs again the
# requests it broke (the restarted band answers 409 to their next step), and
# requests after succeed.
up_start tests/plans/mobilenet-resident.json "$MB" "$W/up-res.log" || exit 1
PLANJ=$(sed -n 's/.*files in \([^)]*\)).*/\1/p' "$UP_LOG.out")/plan.json
BAND0=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['steps'][1]['functions'][0])" "$PLANJ")
HEADF=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['steps'][-1]['functions'][0])" "$PLANJ")
still_serving
"$PY" tests/ref/stage_msg.py "$W/notheld.pb" "#3..#6" 1 16 3 112 0 0 28 --nhwc --id nobody --resident 0,1,0,0
"$PY" tests/ref/stage_msg.py "$W/noid.pb" "#3..#6" 1 16 60 112 0 0 28 --nhwc --id "" --resident 1,0,0,0
"$PY" tests/ref/stage_msg.py "$W/edges.pb" "#3..#6" 1 16 60 112 0 0 28 --nhwc --resident 1,0,27,40
"$PY" tests/ref/stage_msg.py "$W/nosteps.pb" "#32..#35" 1 1280 7 7 --nhwc --resident 1,0,0,0
expect 409 "resident: rows the function does not hold" "${PB[@]}" --data-binary "@$W/notheld.pb" "$BAND0/v1/stage"
expect 422 "resident: a call without request_id" "${PB[@]}" --data-binary "@$W/noid.pb" "$BAND0/v1/stage"
expect 422 "resident: reply rows outside the band" "${PB[@]}" --data-binary "@$W/edges.pb" "$BAND0/v1/stage"
expect 422 "resident: to a function with no resident steps" "${PB[@]}" --data-binary "@$W/nosteps.pb" "$HEADF/v1/stage"
still_serving
# What a band holds shows in its /metrics: nothing once requests are done (their
# last step drops it), one band after a call that holds and is never ended.
held() { curl -s "$BAND0/metrics" | awk '/^splitinfer_stage_held_bands/ {print $2}'; }
[ "$(held)" = 0 ] && echo "ok   band 0 holds 0 bands after finished requests" || { echo "FAIL: band 0 holds $(held) bands after finished requests"; failed=1; }
"$PY" tests/ref/stage_msg.py "$W/probe.pb" "#3..#6" 1 16 1 112 0 0 28 --nhwc --id probe --resident 1,0,0,0
rows=$(curl -s "${PB[@]}" --data-binary "@$W/probe.pb" "$BAND0/v1/stage" | sed -n 's/.*need input rows \[0, \([0-9]*\)).*/\1/p')
"$PY" tests/ref/stage_msg.py "$W/probe.pb" "#3..#6" 1 16 "${rows:-1}" 112 0 0 28 --nhwc --id probe --resident 1,0,27,28
expect 200 "resident: a call that holds band 0 ($rows input rows) and replies with its last row" "${PB[@]}" --data-binary "@$W/probe.pb" "$BAND0/v1/stage"
[ "$(held)" = 1 ] && echo "ok   band 0 holds 1 band" || { echo "FAIL: band 0 holds $(held) bands, want 1"; failed=1; }
kill_under_load "$(pgrep -f -- "--name step0-band1" | head -1)" "$W/up-res.log" kill-res
up_stop || failed=1

# A gateway whose function is down: 503 with a JSON error, quickly.
port=$("$PY" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
cat >"$W/down.json" <<JSON
{"name": "down", "model": "mobilenet_v2", "timeout_ms": 3000,
 "steps": [{"segment": "all", "functions": ["http://127.0.0.1:$port"]}]}
JSON
gport=$("$PY" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
"$BIN" gateway --plan "$W/down.json" -m "$MB" --host 127.0.0.1 --port "$gport" 2>"$W/gw-down.log" &
GWP=$!
for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$gport/v2/health/live" && break; sleep 0.1; done
t0=$(date +%s%N)
GW=http://127.0.0.1:$gport expect 503 "function down" -X POST -H 'Content-Type: image/png' --data-binary "@$PHOTO" "http://127.0.0.1:$gport/v1/classify"
ms=$((($(date +%s%N) - t0) / 1000000))
[ "$ms" -lt 3000 ] && echo "ok   answered in $ms ms (timeout 3000)" || { echo "FAIL: took $ms ms"; failed=1; }
expect 503 "readiness with a function down" "http://127.0.0.1:$gport/v2/health/ready"
# metric NAME_AND_LABELS: its value in the gateway's /metrics ("" if absent).
metric() { curl -s "http://127.0.0.1:$gport/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
n=$(metric 'splitinfer_upstream_errors_total{code="503"}')
[ "$n" = 1 ] && echo "ok   upstream_errors_total{code=\"503\"} 1" || { echo "FAIL: upstream_errors_total 503: '$n', want 1"; failed=1; }
kill -TERM "$GWP"; wait "$GWP" || { echo "FAIL: gateway exit code on SIGTERM"; failed=1; }

# Functions that answer 200 with a reply the gateway must not take (fakes on
# loopback writing a StageReply by hand): NaN logits (502 naming them, not a
# 200 with NaN probabilities), and logits as ZEROS to a gateway that asked for
# dense (502: it would index their rows as dense).
# The fakes: python3 -c "$FAKE" MODE [CALLS_FILE] prints its port, answers every
# POST with MODE's reply (CALLS_FILE: the request sizes it read, then its reply's).
FAKE="
import http.server, struct, sys
def varint(v):
    o = b''
    while True:
        b, v = v & 0x7f, v >> 7
        o += bytes([b | (0x80 if v else 0)])
        if not v: return o
def ld(num, p): return varint(num << 3 | 2) + varint(len(p)) + p
dims = ld(1, varint(1) + varint(1000))
if sys.argv[1] == 'nan':
    tensor = dims + ld(15, struct.pack('<1000f', *([float('nan')] * 1000)))
elif sys.argv[1] == 'zeros':  # Tensor.encoding = ZEROS: a bitmap of 125 bytes, every bit set, then the 1000 elements
    tensor = dims + varint(5 << 3) + varint(1) + ld(15, bytes([255] * 125) + struct.pack('<1000f', *([1.0] * 1000)))
else:  # hangup: finite logits, after hanging up once
    tensor = dims + ld(15, struct.pack('<1000f', *[i / 1000 for i in range(1000)]))
reply = ld(15, tensor)  # StageReply.output
calls = []
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers['Content-Length'])
        self.rfile.read(n)
        calls.append(n)
        if len(sys.argv) > 2: open(sys.argv[2], 'w').write(' '.join(map(str, calls + [len(reply)])))
        if sys.argv[1] == 'hangup' and len(calls) == 1:
            self.close_connection = True  # the whole request read, no answer
            return
        self.send_response(200); self.send_header('Content-Type', 'application/x-protobuf')
        self.send_header('Content-Length', str(len(reply))); self.end_headers(); self.wfile.write(reply)
    def log_message(self, *a): pass
s = http.server.HTTPServer(('127.0.0.1', 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"
# fake_gateway MODE [CALLS_FILE]: a fake function answering MODE, and a gateway
# on $gport whose one-step plan calls it (FAKEP, GWP); stop_fake_gateway ends both.
fake_gateway() {
    "$PY" -c "$FAKE" "$@" >"$W/fake.port" &
    FAKEP=$!
    for _ in $(seq 1 50); do [ -s "$W/fake.port" ] && break; sleep 0.1; done
    cat >"$W/fake.json" <<JSON
{"name": "fake", "model": "mobilenet_v2", "timeout_ms": 3000, "encoding": "dense",
 "steps": [{"segment": "all", "functions": ["http://127.0.0.1:$(cat "$W/fake.port")"]}]}
JSON
    "$BIN" gateway --plan "$W/fake.json" -m "$MB" --host 127.0.0.1 --port "$gport" 2>"$W/gw-fake.log" &
    GWP=$!
    for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$gport/v2/health/live" && break; sleep 0.1; done
}
stop_fake_gateway() {
    kill -TERM "$GWP"; wait "$GWP" || { echo "FAIL: gateway exit code on SIGTERM"; failed=1; }
    kill "$FAKEP" 2>/dev/null; wait "$FAKEP" 2>/dev/null
    rm -f "$W/fake.port"
}
for fake in "nan not finite" "zeros ZEROS where it asked for dense"; do
    read -r mode want <<<"$fake"
    fake_gateway "$mode"
    expect 502 "a function answering $mode logits" -X POST -H 'Content-Type: image/png' --data-binary "@$PHOTO" "http://127.0.0.1:$gport/v1/classify"
    grep -q "$want" "$W/body" && echo "ok   the error says: $want" || { echo "FAIL: 502 without '$want': $(head -c 200 "$W/body")"; failed=1; }
    n=$(metric 'splitinfer_upstream_errors_total{code="502"}')
    [ "$n" = 1 ] && echo "ok   upstream_errors_total{code=\"502\"} 1" || { echo "FAIL: upstream_errors_total 502: '$n', want 1"; failed=1; }
    stop_fake_gateway
done
# A function that takes the whole request, then hangs up (a pod going away):
# the gateway sends it again, once, and answers 200. Its metrics count the
# bytes that moved: the request twice, the reply once; no upstream error.
fake_gateway hangup "$W/fake.calls"
expect 200 "a function that hung up once" -X POST -H 'Content-Type: image/png' --data-binary "@$PHOTO" "http://127.0.0.1:$gport/v1/classify"
read -r first second reply <"$W/fake.calls"
sent=$(metric 'splitinfer_hop_bytes_total{step="0:all",direction="sent"}')
recv=$(metric 'splitinfer_hop_bytes_total{step="0:all",direction="received"}')
errs=$(curl -s "http://127.0.0.1:$gport/metrics" | grep -c '^splitinfer_upstream_errors_total{')
if [ "$first" = "$second" ] && [ "$sent" = $((first + second)) ] && [ "$recv" = "$reply" ] && [ "$errs" = 0 ]; then
    echo "ok   hop bytes: sent $sent (the request twice), received $recv; no upstream error"
else
    echo "FAIL: hop bytes sent '$sent' received '$recv' upstream error lines $errs; the function read $first and $second, replied $reply"; failed=1
fi
stop_fake_gateway

# Chains: a gateway -> stage #0..#6 -> NEXT, where NEXT is nothing (connection
# refused: 503) or a socket that accepts and never answers (504). Both come
# back from the stage, named, before the gateway's own timeout of 3000 ms.
freeport() { "$PY" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"; }
"$PY" -c "
import socket, time
s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(8)
print(s.getsockname()[1], flush=True)
conns = []
while True: conns.append(s.accept()[0])  # accept, read nothing, never answer
" >"$W/mute.port" &
MUTE=$!
for _ in $(seq 1 50); do [ -s "$W/mute.port" ] && break; sleep 0.1; done
for case in "503 $(freeport) next function down" "504 $(cat "$W/mute.port") next function never answers"; do
    read -r want nport label <<<"$case"
    sport=$(freeport) gport=$(freeport)
    "$BIN" stage -m "$MB" --segment "#0..#6" --host 127.0.0.1 --port "$sport" --next "http://127.0.0.1:$nport" 2>"$W/chain-stage.log" &
    SP=$!
    cat >"$W/chain.json" <<JSON
{"name": "chain", "model": "mobilenet_v2", "timeout_ms": 3000, "chain": true,
 "steps": [{"segment": "#0..#6", "functions": ["http://127.0.0.1:$sport"]},
           {"segment": "#6..#35", "functions": ["http://127.0.0.1:$nport"]}]}
JSON
    "$BIN" gateway --plan "$W/chain.json" -m "$MB" --host 127.0.0.1 --port "$gport" 2>"$W/gw-chain.log" &
    GWP=$!
    for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$sport/readyz" && curl -s -o /dev/null "http://127.0.0.1:$gport/v2/health/live" && break; sleep 0.1; done
    expect "$want" "chain: $label" -X POST -H 'Content-Type: image/png' --data-binary "@$PHOTO" "http://127.0.0.1:$gport/v1/classify"
    # The failed call traced its first step only: the step after it, which
    # never ran, has no latency sample (it once got a 0 s one).
    n1=$(curl -s "http://127.0.0.1:$gport/metrics" | awk '/^splitinfer_step_seconds_count\{step="1:/ {print $2}')
    n0=$(curl -s "http://127.0.0.1:$gport/metrics" | awk '/^splitinfer_step_seconds_count\{step="0:/ {print $2}')
    if [ "${n0:-0}" = 1 ] && [ "${n1:-0}" = 0 ]; then
        echo "ok   step latency samples: step 0 one, step 1 none"
    else
        echo "FAIL: chain $label: step latency samples ${n0:-none} and ${n1:-none}, want 1 and 0"; failed=1
    fi
    # What proves the stage's own deadline fired first is the body: had the
    # gateway hit its 3000 ms timeout, its error would not name the next
    # function. The time only proves nothing hung; it also holds the PNG
    # decode and the first stage's compute around the 3000 ms, and a loaded
    # CI machine once measured 3010 ms here, hence the 500 ms allowance.
    ms=$("$PY" -c "print(int(float(open('$W/time').read().split()[-1]) * 1000))" 2>/dev/null || echo 99999)
    if [ "$ms" -lt 3500 ] && grep -q "next function" "$W/body"; then
        echo "ok   answered in $ms ms (gateway timeout 3000), naming the next function"
    else
        echo "FAIL: chain $label: $ms ms: $(head -c 200 "$W/body")"; failed=1
    fi
    kill -TERM "$GWP" "$SP"; wait "$GWP" "$SP" || { echo "FAIL: chain $label: exit code on SIGTERM"; failed=1; }
done
kill "$MUTE" 2>/dev/null; wait "$MUTE" 2>/dev/null
exit $failed
