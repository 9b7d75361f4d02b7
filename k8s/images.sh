#!/usr/bin/env bash
# k8s/images.sh [PLAN] - container images (podman) of every function of a plan.
#
#   PLAN   a plan name (baseline, pipeline, blocks, parallel: plans/NAME.json)
#          or a path to a plan JSON; default pipeline.
#
# Environment:
#   MODEL    the model (ONNX or .sfm) whose weights go into the stage images;
#            default build/ref/resnet50.onnx, exported with seeded random
#            weights (tests/ref/export_resnet.py, Debian's python3-torch) when
#            it is not there.
#   PREFIX   image name prefix, default localhost/splitinfer: images are
#            PREFIX-stage-SLUG:TAG (one per distinct segment of the plan, SLUG
#            is the segment with '.' and '..' turned into '-') and
#            PREFIX-gateway:TAG.
#   TAG      default latest.
#   HEY      1 (default) also builds localhost/splitinfer-hey (the load-test
#            image of k8s/loadtest); 0 skips it.
#   STAGE_TARGET_MB size target of a stage image without its weights, MiB (60):
#            missing it is reported (SIZE TARGET MISSED), and fails the script
#            with SIZE_STRICT=1.
#   STAGE_MAX_MB    hard limit, MiB (64): over it the script fails (a fat base,
#            a full model where a segment belongs, a stray build tree).
#
# No registry base image can be pulled here (no Docker Hub, no gcr.io), so the
# bases are made locally and cached in podman's storage (skipped when present):
#   localhost/debian:bookworm                debootstrap --variant=minbase
#   localhost/splitinfer-build-base:bookworm-HASH  + the build packages (the
#                                            Dockerfile's `deps` target, the
#                                            one build that needs the network)
#   localhost/splitinfer-runtime-base:bookworm  distroless-like: glibc,
#                                            libgcc, libstdc++, passwd with
#                                            nonroot (65532), no shell, no apt
# then every image is built from the one Dockerfile with --network none.
#
# Writes build/images/PLANNAME.images: one line per image, "ROLE SEGMENT IMAGE".
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

PLAN_ARG=${1:-pipeline}
case "$PLAN_ARG" in
  */*|*.json) PLAN_FILE=$PLAN_ARG ;;
  *) PLAN_FILE=plans/$PLAN_ARG.json ;;
esac
[ -f "$PLAN_FILE" ] || { echo "images.sh: no plan $PLAN_FILE" >&2; exit 1; }
# A resident plan's functions each hold a run of steps (plan.h): one image per
# step segment would not serve it.
if grep -q '"resident": *true' "$PLAN_FILE"; then
  echo "images.sh: $PLAN_FILE is resident; its functions hold several steps, which the images do not lay out yet (run it with splitinfer up)" >&2
  exit 1
fi
PREFIX=${PREFIX:-localhost/splitinfer}
TAG=${TAG:-latest}
HEY=${HEY:-1}
STAGE_TARGET_MB=${STAGE_TARGET_MB:-60}
STAGE_MAX_MB=${STAGE_MAX_MB:-64}
SIZE_STRICT=${SIZE_STRICT:-0}
MODEL=${MODEL:-build/ref/resnet50.onnx}
OUT=build/images
mkdir -p "$OUT"

log() { printf 'images.sh: %s\n' "$*" >&2; }

# ---- tools -------------------------------------------------------------
need=()
for p in podman buildah runc debootstrap; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
fi
# crun fails on this cgroup v1 hybrid host; runc works. No ulimit defaults.
printf '[containers]\ndefault_ulimits = []\n[engine]\nruntime = "runc"\n' > build/containers.conf
export CONTAINERS_CONF=$ROOT/build/containers.conf

# ---- base images (cached in podman storage) ----------------------------
DEBIAN_IMG=localhost/debian:bookworm
# Tagged with a hash of the Dockerfile's deps stage: a change of the package
# list makes a new build base instead of reusing a stale one.
DEPS_HASH=$(sed -n '/ AS deps$/,/ AS build$/p' Dockerfile | sha256sum | cut -c1-12)
BUILD_BASE=localhost/splitinfer-build-base:bookworm-$DEPS_HASH
RUNTIME_BASE=localhost/splitinfer-runtime-base:bookworm
HEY_IMG=localhost/splitinfer-hey:latest
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
ROOTFS=$OUT/rootfs-bookworm

debian_rootfs() {  # debootstrap once; the tree is reused for the runtime base
  if [ ! -x "$ROOTFS/usr/bin/apt-get" ] || [ ! -f "$ROOTFS/.complete" ]; then
    rm -rf "$ROOTFS"
    log "debootstrap --variant=minbase bookworm (about a minute)"
    debootstrap --variant=minbase bookworm "$ROOTFS" "$MIRROR" > "$OUT/debootstrap.log" 2>&1 ||
      { tail -20 "$OUT/debootstrap.log" >&2; exit 1; }
    rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
    touch "$ROOTFS/.complete"
  fi
}

t0=$(date +%s)
if ! podman image exists "$DEBIAN_IMG"; then
  debian_rootfs
  log "importing $DEBIAN_IMG"
  tar -C "$ROOTFS" --exclude=./.complete -c . |
    podman import --change 'CMD ["/bin/bash"]' - "$DEBIAN_IMG" >/dev/null
fi

if ! podman image exists "$BUILD_BASE"; then
  log "building $BUILD_BASE (apt-get install of the build packages, with network)"
  mkdir -p "$OUT/empty-context"
  podman build --pull=never --target deps --build-arg BUILD_BASE="$DEBIAN_IMG" \
    -t "$BUILD_BASE" -f Dockerfile "$OUT/empty-context" > "$OUT/build-base.log" 2>&1 ||
    { tail -30 "$OUT/build-base.log" >&2; exit 1; }
fi

if ! podman image exists "$RUNTIME_BASE"; then
  debian_rootfs
  # distroless/cc-like: the files of libc6, libgcc-s1 and libstdc++6 (less
  # docs, locales, gconv and the glibc libraries nothing here loads: libmvec,
  # libnsl, malloc/memusage debugging, thread_db), /etc/passwd and /etc/group with root and nonroot
  # (65532), /tmp, /home/nonroot. No shell, no package manager.
  RT=$OUT/runtime-rootfs
  rm -rf "$RT"
  mkdir -p "$RT"/etc "$RT"/tmp "$RT"/home/nonroot "$RT"/root
  chmod 1777 "$RT/tmp"
  chown 65532:65532 "$RT/home/nonroot"
  chmod 700 "$RT/root"
  # merged /usr as in Debian 12: /lib, /lib64, /bin, /sbin are links into /usr
  mkdir -p "$RT"/usr/lib "$RT"/usr/lib64 "$RT"/usr/bin "$RT"/usr/sbin "$RT"/usr/local/bin
  for l in lib lib64 bin sbin; do
    if [ -L "$ROOTFS/$l" ]; then cp -a "$ROOTFS/$l" "$RT/$l"; fi
  done
  for pkg in libc6 libgcc-s1 libstdc++6; do
    cat "$ROOTFS/var/lib/dpkg/info/$pkg:amd64.list" 2>/dev/null ||
      cat "$ROOTFS/var/lib/dpkg/info/$pkg.list"
  done | grep -vE '^/usr/share|/gconv|^/etc/ld.so.conf.d|/locale|/audit/|/lib(mvec|nsl|nss_compat|nss_hesiod|c_malloc_debug|thread_db|BrokenLocale|memusage|pcprofile)[.]' |
  while read -r f; do
    [ "$f" = "/." ] && continue
    src=$ROOTFS$f
    if [ ! -d "$src" ] && { [ -L "$src" ] || [ -f "$src" ]; }; then
      mkdir -p "$RT$(dirname "$f")"
      cp -a "$src" "$RT$f"
    fi
  done
  cat > "$RT/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
  cat > "$RT/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
nonroot:x:65532:
EOF
  printf 'hosts: files dns\n' > "$RT/etc/nsswitch.conf"
  cp "$ROOTFS/etc/os-release" "$RT/etc/os-release" 2>/dev/null ||
    cp "$ROOTFS/usr/lib/os-release" "$RT/etc/os-release"
  log "importing $RUNTIME_BASE ($(du -sh "$RT" | cut -f1))"
  tar -C "$RT" -c . | podman import \
    --change 'USER 65532:65532' --change 'WORKDIR /home/nonroot' \
    --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' - "$RUNTIME_BASE" >/dev/null
  rm -rf "$RT"
fi

if [ "$HEY" = 1 ] && ! podman image exists "$HEY_IMG"; then
  log "building $HEY_IMG (Debian's hey, with network)"
  ctx=$OUT/hey-context
  mkdir -p "$ctx"
  photo=../shared/testdata/imagenet-sample/n01440764_tench.png
  if [ -f "$photo" ]; then
    cp "$photo" "$ctx/sample.png"
  else  # any 224x224 PNG does for load
    /usr/bin/python3 -c 'from PIL import Image; Image.new("RGB", (224, 224), (90, 120, 60)).save("'"$ctx"'/sample.png")'
  fi
  podman build --pull=never --build-arg BASE="$DEBIAN_IMG" -t "$HEY_IMG" \
    -f k8s/loadtest/Containerfile "$ctx" > "$OUT/build-hey.log" 2>&1 ||
    { tail -30 "$OUT/build-hey.log" >&2; exit 1; }
fi
log "base images ready ($(( $(date +%s) - t0 )) s)"

# ---- the model, into the build context ---------------------------------
if [ ! -f "$MODEL" ]; then
  if [ "$MODEL" = build/ref/resnet50.onnx ]; then
    log "exporting ResNet50 with seeded random weights to $MODEL"
    /usr/bin/python3 tests/ref/export_resnet.py --arch resnet50 --seed 0 --out "$MODEL" --cached
  else
    echo "images.sh: no model $MODEL" >&2
    exit 1
  fi
fi
case "$MODEL" in *.sfm) CTX_MODEL=$OUT/model.sfm ;; *) CTX_MODEL=$OUT/model.onnx ;; esac
if ! cmp -s "$MODEL" "$CTX_MODEL"; then
  rm -f "$OUT"/model.onnx "$OUT"/model.sfm
  ln "$MODEL" "$CTX_MODEL" 2>/dev/null || cp "$MODEL" "$CTX_MODEL"
fi

# ---- the plan's images -------------------------------------------------
plan_name=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["name"])' "$PLAN_FILE")
segments=$(/usr/bin/python3 -c '
import json, sys
seen = []
for s in json.load(open(sys.argv[1]))["steps"]:
    if s["segment"] not in seen:
        seen.append(s["segment"])
print("\n".join(seen))' "$PLAN_FILE")

slug() { printf '%s' "$1" | tr 'A-Z' 'a-z' | sed -e 's/\.\./-/g' -e 's/[.#_]/-/g' -e 's/--*/-/g' -e 's/^-//'; }

LIST=$OUT/$plan_name.images
: > "$LIST.tmp"
build_one() {  # role segment image
  local role=$1 seg=$2 img=$3 t=$(date +%s)
  log "building $img (segment $seg)"
  if ! podman build --network none --pull=never --layers --target "$role" \
      --build-arg BUILD_BASE="$BUILD_BASE" --build-arg RUNTIME_BASE="$RUNTIME_BASE" \
      --build-arg MODEL_FILE="$CTX_MODEL" --build-arg SEGMENT="$seg" \
      -t "$img" -f Dockerfile . > "$OUT/build-$(slug "$seg")-$role.log" 2>&1; then
    tail -30 "$OUT/build-$(slug "$seg")-$role.log" >&2
    echo "images.sh: build of $img failed (log: $OUT/build-$(slug "$seg")-$role.log)" >&2
    exit 1
  fi
  log "built $img in $(( $(date +%s) - t )) s"
  echo "$role $seg $img" >> "$LIST.tmp"
}
while read -r seg; do
  build_one stage "$seg" "$PREFIX-stage-$(slug "$seg"):$TAG"
done <<< "$segments"
# The gateway needs the model's structure only (every .sfm holds all nodes):
# the smallest segment's file, the stem's (64 KB; the head's is 8 MB).
build_one gateway "${GATEWAY_SEGMENT:-stem}" "$PREFIX-gateway:$TAG"
mv "$LIST.tmp" "$LIST"

# ---- sizes and the size target -----------------------------------------
mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
fail=0 missed=0
printf '%-46s %-13s %8s %8s %8s  %s\n' IMAGE SEGMENT "SIZE" "WEIGHTS" "REST" "(MiB) USER"
while read -r role seg img; do
  size=$(podman image inspect --format '{{.Size}}' "$img")
  mnt=$(podman image mount "$img")
  weights=$(stat -c %s "$mnt/models/model.sfm")
  podman image unmount "$img" >/dev/null
  user=$(podman image inspect --format '{{.Config.User}}' "$img")
  rest=$((size - weights))
  printf '%-46s %-13s %8s %8s %8s  %s\n' "$img" "$seg" "$(mb "$size")" "$(mb "$weights")" \
    "$(mb "$rest")" "$user"
  if [ "$rest" -gt $((STAGE_MAX_MB * 1048576)) ]; then
    echo "images.sh: $img is $(mb "$rest") MiB besides its weights (limit $STAGE_MAX_MB MiB)" >&2
    fail=1
  elif [ "$role" = stage ] && [ "$rest" -gt $((STAGE_TARGET_MB * 1048576)) ]; then
    missed=1 # the target is a stage's; the gateway also carries libcurl
  fi
  case "$user" in 0|0:*|root|root:*|"") echo "images.sh: $img runs as root" >&2; fail=1 ;; esac
done < "$LIST"
if [ "$missed" = 1 ]; then
  echo "images.sh: SIZE TARGET MISSED: a stage image is over $STAGE_TARGET_MB MiB besides its weights" \
       "(libdnnl alone is 38 MiB)" >&2
  [ "$SIZE_STRICT" = 1 ] && fail=1
fi
[ "$fail" = 0 ] || exit 1
log "images of plan $plan_name listed in $LIST ($(( $(date +%s) - t0 )) s in all)"
