# syntax=docker/dockerfile:1
# splitinfer images: one Dockerfile for every function of every plan.
#
#   stage image:   --build-arg SEGMENT=layer2        holds only layer2's weights
#   gateway image: --build-arg SEGMENT=head          a small .sfm: the model's
#                  structure (every .sfm holds all nodes) plus the head's weights;
#                  run it with `gateway --plan PLAN.json`
#
# The build stage compiles build/splitinfer (every subcommand; the gateway
# image) and build/splitinfer-stage (a stage's subcommands, without the HTTP
# client and so without libcurl; the stage images) on Debian bookworm and cuts
# the segment's weights out of the model with `splitinfer convert --segment`.
# The runtime stage is a distroless base with the binary, the shared libraries
# `ldd` lists (less glibc, which the base has) and the one .sfm.
#
# Plain Docker with registry access:
#   cp MODEL.onnx build/images/model.onnx
#   docker build --build-arg SEGMENT=layer1 -t splitinfer-stage-layer1 .
# Without registry access (podman, this repo's CI): k8s/images.sh builds its own
# bases (debootstrap) and passes BUILD_BASE / RUNTIME_BASE; its build base
# already has the packages below, so it builds with --network none.

ARG BUILD_BASE=docker.io/library/debian:bookworm
ARG RUNTIME_BASE=gcr.io/distroless/cc-debian12:nonroot

# ---- deps: the build packages (a no-op when BUILD_BASE already has them) ----
FROM ${BUILD_BASE} AS deps
ARG BUILD_PKGS="build-essential pkg-config libdnnl-dev libpng-dev libprotobuf-c-dev \
protobuf-c-compiler libonnx-dev libjansson-dev libh2o-evloop-dev libssl-dev \
libcurl4-openssl-dev zlib1g-dev"
RUN missing=$(for p in $BUILD_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done); \
    if [ -n "$missing" ]; then \
      apt-get update -q && \
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing && \
      rm -rf /var/lib/apt/lists/*; \
    fi

# ---- build: the binary, its libraries, the segment's weights ----
FROM deps AS build
WORKDIR /src
COPY Makefile ./
COPY proto/ proto/
COPY lib/ lib/
COPY cmd/ cmd/
RUN make -j"$(nproc)" build/splitinfer build/splitinfer-stage && \
    strip --strip-unneeded build/splitinfer build/splitinfer-stage
# Two file sets: the full binary (gateway) and the lean one (stage: no HTTP
# client, so no libcurl and its ~11 MiB of dependencies), each with the
# shared libraries ldd lists, less what the runtime base already has.
RUN set -e; for v in full:splitinfer stage:splitinfer-stage; do \
      set=${v%%:*}; bin=${v#*:}; mkdir -p /out/$set/lib /out/$set/bin; \
      cp build/$bin /out/$set/bin/splitinfer; \
      ldd build/$bin | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' > /tmp/libs; \
      while read -r soname path; do \
        case "$soname" in \
          libc.so.*|libm.so.*|libpthread.so.*|libdl.so.*|librt.so.*|libresolv.so.*|ld-linux*) ;; \
          libstdc++.so.*|libgcc_s.so.*) ;; \
          *) cp -L "$path" "/out/$set/lib/$soname" ;; \
        esac; \
      done < /tmp/libs; \
      if LD_LIBRARY_PATH=/out/$set/lib ldd /out/$set/bin/splitinfer | grep 'not found'; then exit 1; fi; \
      du -sh /out/$set/lib; \
    done; mkdir -p /out/models
ARG MODEL_FILE=build/images/model.onnx
COPY ${MODEL_FILE} /src/model.in
# Declared late so the compile above is shared by every segment's image.
ARG SEGMENT=all
RUN if [ "$SEGMENT" = "all" ]; then seg=""; else seg="--segment $SEGMENT"; fi; \
    build/splitinfer convert /src/model.in -o /out/models/model.sfm $seg && \
    ls -l /out/models && rm -f /src/model.in

# ---- runtime: distroless, non-root ----
FROM ${RUNTIME_BASE} AS runtime
ARG SEGMENT=all
LABEL org.opencontainers.image.title="splitinfer" \
      org.opencontainers.image.description="splitinfer function (ResNet50 segment ${SEGMENT})" \
      io.splitinfer.segment="${SEGMENT}"
COPY --from=build /out/models/model.sfm /models/model.sfm
ENV PATH=/usr/local/bin:/usr/bin:/bin \
    SPLITINFER_MODEL=/models/model.sfm
USER 65532:65532
EXPOSE 8080
# The binary handles SIGTERM itself (drains in-flight requests, exits 0).
ENTRYPOINT ["splitinfer"]

# --target gateway: the same files, started as the gateway. The plan is
# mounted at /etc/splitinfer/plan.json (a ConfigMap on Kubernetes).
FROM runtime AS gateway
COPY --from=build /out/full/lib/ /usr/lib/x86_64-linux-gnu/
COPY --from=build /out/full/bin/splitinfer /usr/local/bin/splitinfer
CMD ["gateway", "--plan", "/etc/splitinfer/plan.json"]

# The default target: a stage function serving the segment in its .sfm.
FROM runtime AS stage
COPY --from=build /out/stage/lib/ /usr/lib/x86_64-linux-gnu/
COPY --from=build /out/stage/bin/splitinfer /usr/local/bin/splitinfer
CMD ["stage"]
