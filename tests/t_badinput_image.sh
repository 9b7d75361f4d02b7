#!/usr/bin/env bash
# t_badinput_image.sh - bad images and bad models fail cleanly.
#
# Runs the ASan/UBSan build (build/asan/splitinfer) on broken inputs: PNGs
# that are truncated, corrupt, empty, absurdly large, not PNGs at all or
# missing (through both `classify` and `preprocess`), and ONNX models that are
# truncated, random, partly overwritten or empty (through `classify -m`).
# Each must exit with exactly 1, print a message starting "splitinfer:" on
# stderr, and trigger no sanitizer report (leaks included). A 1x1 PNG must
# succeed. Exit 0 pass, 1 fail, 77 when the binary, the model or Python's PIL
# is missing here.
set -u
cd "$(dirname "$0")/.." || exit 1

bin=build/asan/splitinfer
model=../shared/models/mobilenet_v2_imagenet.onnx
py=/usr/bin/python3

[ -x "$bin" ] || { echo "cannot run: $bin not built (make build/asan/splitinfer)"; exit 77; }
[ -r "$model" ] || { echo "cannot run: no model $model"; exit 77; }
"$py" -c 'import PIL' 2>/dev/null || { echo "cannot run: $py lacks PIL"; exit 77; }

# exitcode=86: a sanitizer's exit must not pass for our own 1.
export ASAN_OPTIONS=detect_leaks=1:exitcode=86
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:exitcode=87

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0 n=0

# --- the inputs -------------------------------------------------------------
"$py" - "$tmp" <<'EOF' || { echo "FAIL: could not make the test inputs"; exit 1; }
import random, struct, sys, zlib
from PIL import Image

d = sys.argv[1]
rng = random.Random(1)
noise = Image.frombytes("RGB", (200, 150), bytes(rng.randrange(256) for _ in range(200 * 150 * 3)))
noise.save(f"{d}/good.png")
Image.new("RGB", (1, 1), (200, 100, 50)).save(f"{d}/one.png")
png = open(f"{d}/good.png", "rb").read()
open(f"{d}/truncated.png", "wb").write(png[: len(png) // 2])
open(f"{d}/truncated_header.png", "wb").write(png[:20])
bad = bytearray(png)
idat = png.index(b"IDAT")
for i in range(idat + 100, idat + 140):  # the CRC no longer matches
    bad[i] ^= 0x5A
open(f"{d}/corrupt.png", "wb").write(bytes(bad))
open(f"{d}/empty.png", "wb").close()

def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

ihdr = struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
idat_data = zlib.compress(b"\0" * 1000)
open(f"{d}/huge.png", "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) +
                                   chunk(b"IDAT", idat_data) + chunk(b"IEND", b""))
open(f"{d}/text.png", "w").write("this is a text file, not an image\n")
jfif = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
open(f"{d}/fake.jpg", "wb").write(jfif + bytes(rng.randrange(256) for _ in range(2000)))
EOF
head -c 1000 "$model" >"$tmp/trunc1000.onnx"
size=$(stat -c %s "$model")
head -c $((size / 2)) "$model" >"$tmp/half.onnx"
"$py" -c 'import random, sys; sys.stdout.buffer.write(random.Random(2).randbytes(1 << 20))' \
    >"$tmp/random.onnx"
# 4 KiB of 0xff in the middle of the file (inside a weight tensor: the protobuf
# still parses, the weights become NaN) and near the start (inside the graph's
# nodes: the protobuf itself is broken).
cp "$model" "$tmp/holed.onnx"
chmod u+w "$tmp/holed.onnx"
head -c 4096 /dev/zero | tr '\0' '\377' |
    dd of="$tmp/holed.onnx" bs=1 seek=$((size / 2 - 2048)) conv=notrunc status=none
cp "$model" "$tmp/holed_start.onnx"
chmod u+w "$tmp/holed_start.onnx"
head -c 4096 /dev/zero | tr '\0' '\377' |
    dd of="$tmp/holed_start.onnx" bs=1 seek=2048 conv=notrunc status=none
: >"$tmp/empty.onnx"

# --- the checks -------------------------------------------------------------
sanitizer_report() { # $1: stderr file
    grep -qE 'ERROR: (Address|Leak|Undefined)Sanitizer|runtime error:' "$1"
}

expect() { # $1: wanted exit code (0 or 1); rest: command
    local want=$1 rc
    shift
    n=$((n + 1))
    timeout 300 "$@" >"$tmp/stdout" 2>"$tmp/stderr"
    rc=$?
    local what="${*#"$bin "}"
    what=${what//$tmp\//}
    if sanitizer_report "$tmp/stderr"; then
        echo "FAIL: $what: sanitizer report (exit $rc)"
        sed 's/^/    /' "$tmp/stderr" | head -40
        fail=1
        return
    fi
    if [ "$rc" -ne "$want" ]; then
        echo "FAIL: $what: exit $rc, want $want"
        sed 's/^/    /' "$tmp/stderr" | head -10
        fail=1
        return
    fi
    if [ "$want" -ne 0 ] && ! head -1 "$tmp/stderr" | grep -q '^splitinfer: .'; then
        echo "FAIL: $what: stderr does not start with 'splitinfer: <message>':"
        sed 's/^/    /' "$tmp/stderr" | head -10
        fail=1
        return
    fi
    echo "ok   $what (exit $rc) $(head -1 "$tmp/stderr")"
}

for img in truncated.png truncated_header.png corrupt.png empty.png huge.png text.png fake.jpg \
    missing.png; do
    expect 1 "$bin" classify -m "$model" "$tmp/$img"
    expect 1 "$bin" preprocess "$tmp/$img" -o "$tmp/x.bin"
done
expect 0 "$bin" classify -m "$model" "$tmp/one.png"
expect 0 "$bin" preprocess "$tmp/one.png" -o "$tmp/x.bin"
if [ "$(stat -c %s "$tmp/x.bin" 2>/dev/null)" != $((3 * 224 * 224 * 4)) ]; then
    echo "FAIL: preprocess one.png wrote $(stat -c %s "$tmp/x.bin" 2>/dev/null) bytes, want 602112"
    fail=1
fi

for m in trunc1000.onnx half.onnx random.onnx holed.onnx holed_start.onnx empty.onnx; do
    expect 1 "$bin" classify -m "$tmp/$m" "$tmp/good.png"
done

[ "$fail" -eq 0 ] && echo "PASS: $n runs, each failed cleanly (or succeeded) as it should"
exit "$fail"
