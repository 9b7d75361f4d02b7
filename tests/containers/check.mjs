// check.mjs - offline checks of the manifests, the chart and the dashboard,
// for tests/containers.sh. Subcommands (each prints what it checked, exits 1
// on a failure):
//
//   validate FILE...              every YAML document validates against the
//                                 Kubernetes / Knative / Prometheus Operator
//                                 schemas (npm kubernetes-models); a kind with
//                                 no schema here is a failure, not a skip
//   values-paths CHARTDIR         every .Values.a.b path in the templates
//                                 exists in values.yaml
//   compare CHART.yaml KUST.yaml  the chart's Knative Services agree with the
//                                 kustomize ones, function by function, on
//                                 image, args, ports, resources, annotations,
//                                 probes, securityContext, concurrency, timeout,
//                                 and the plan ConfigMaps on every step
//   kube-play IN.yaml OUT.yaml SUFFIX
//                                 the documents podman kube play runs
//                                 (Deployment, Pod, ConfigMap), the plan's
//                                 Service URLs turned into podman pod names
//                                 (NAME-pod-0) since podman has no Services;
//                                 container ports left out (kube play would
//                                 publish each on the host)
//   hpa FILE                      every Deployment has exactly one
//                                 HorizontalPodAutoscaler (autoscaling/v2, on
//                                 CPU utilization) and leaves spec.replicas to
//                                 it; every HPA targets a Deployment of the
//                                 file whose containers all request CPU (a
//                                 Utilization target is a share of that)
//   plan FILE                     the plan JSON of the file's ConfigMap, if any
//   exprs DASHBOARD.json          the dashboard's PromQL, one per line as
//                                 "panel<TAB>expr", Grafana variables replaced
import fs from 'node:fs';
import path from 'node:path';
import yaml from 'js-yaml';

const [, , cmd, ...args] = process.argv;
let failed = 0;
const fail = (msg) => { failed++; console.log(`FAIL ${msg}`); };
const ok = (msg) => console.log(`ok   ${msg}`);

function loadDocs(file) {
  return yaml.loadAll(fs.readFileSync(file, 'utf8')).filter((d) => d && typeof d === 'object');
}

// apiVersion -> module that exports the kinds of that group/version.
const MODULES = {
  'v1': 'kubernetes-models/v1',
  'apps/v1': 'kubernetes-models/apps/v1',
  'batch/v1': 'kubernetes-models/batch/v1',
  'networking.k8s.io/v1': 'kubernetes-models/networking.k8s.io/v1',
  'autoscaling/v2': 'kubernetes-models/autoscaling/v2',
  'policy/v1': 'kubernetes-models/policy/v1',
  'serving.knative.dev/v1': '@kubernetes-models/knative/serving.knative.dev/v1',
  'monitoring.coreos.com/v1': '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1',
};

async function validate(files) {
  for (const file of files) {
    const docs = loadDocs(file);
    if (docs.length === 0) fail(`${file}: no documents`);
    const kinds = {};
    for (const doc of docs) {
      const id = `${file}: ${doc.kind}/${doc.metadata && doc.metadata.name}`;
      const mod = MODULES[doc.apiVersion];
      if (!mod) { fail(`${id}: no schema for apiVersion ${doc.apiVersion}`); continue; }
      const m = await import(mod);
      const Cls = m[doc.kind];
      if (!Cls) { fail(`${id}: no schema for kind ${doc.kind} in ${doc.apiVersion}`); continue; }
      try {
        new Cls(doc).validate();
        kinds[`${doc.apiVersion} ${doc.kind}`] = (kinds[`${doc.apiVersion} ${doc.kind}`] || 0) + 1;
      } catch (e) {
        fail(`${id}: ${e.message}`);
      }
    }
    ok(`${file}: ${docs.length} documents valid (${Object.entries(kinds).map(([k, n]) => `${n} ${k}`).join(', ')})`);
  }
}

function valuesPaths(chart) {
  const values = yaml.load(fs.readFileSync(path.join(chart, 'values.yaml'), 'utf8'));
  const dir = path.join(chart, 'templates');
  const seen = new Map();
  // Helm renders templates/ and its subdirectories (tests/): walk them all.
  const files = fs.readdirSync(dir, { recursive: true }).filter((f) => fs.statSync(path.join(dir, f)).isFile());
  for (const f of files) {
    const text = fs.readFileSync(path.join(dir, f), 'utf8');
    // .Values.a.b (also $.Values..., $root.Values..., .root.Values...)
    for (const m of text.matchAll(/\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)/g)) {
      const p = m[1].slice(1);
      if (!seen.has(p)) seen.set(p, new Set());
      seen.get(p).add(f);
    }
    // Values reached by another name would escape the check: refuse them.
    for (const m of text.matchAll(/\$[A-Za-z_]\w*\s*:?=\s*[$.]*(?:root\.)?Values\s*[}\s|)]/g))
      fail(`${f}: assigns .Values to a variable (${m[0].trim()}): paths through it cannot be checked`);
  }
  let n = 0;
  for (const [p, files] of [...seen].sort()) {
    let v = values;
    for (const k of p.split('.')) {
      if (v === null || typeof v !== 'object' || !(k in v)) { v = undefined; break; }
      v = v[k];
    }
    if (v === undefined) fail(`.Values.${p} (${[...files].join(', ')}) is not in values.yaml`);
    else n++;
  }
  ok(`${n} of ${seen.size} .Values paths used in ${chart}/templates exist in values.yaml`);
}

function ksvcs(file) {
  const out = {};
  for (const d of loadDocs(file)) {
    if (d.apiVersion !== 'serving.knative.dev/v1' || d.kind !== 'Service') continue;
    const fn = d.metadata.labels && d.metadata.labels['splitinfer.io/function'];
    out[fn] = d;
  }
  return out;
}

const canon = (v) => JSON.stringify(v, (k, x) =>
  x && typeof x === 'object' && !Array.isArray(x)
    ? Object.fromEntries(Object.keys(x).sort().map((key) => [key, x[key]])) : x);

function planOf(file) {
  for (const d of loadDocs(file))
    if (d.kind === 'ConfigMap' && d.data && d.data['plan.json']) return JSON.parse(d.data['plan.json']);
  return null;
}

function compare(chartFile, kustFile) {
  const pa = planOf(chartFile), pb = planOf(kustFile);
  if (!pa || !pb) fail(`no plan ConfigMap in ${pa ? kustFile : chartFile}`);
  else if (canon(pa) !== canon(pb)) fail(`plans differ: chart ${canon(pa)} vs kustomize ${canon(pb)}`);
  else ok(`plan "${pa.name}": chart = kustomize (${pa.steps.map((s) => `${s.segment}x${s.bands}`).join(' ')})`);
  const a = ksvcs(chartFile), b = ksvcs(kustFile);
  const fa = Object.keys(a).sort(), fb = Object.keys(b).sort();
  if (canon(fa) !== canon(fb)) fail(`functions differ: chart [${fa}] vs kustomize [${fb}]`);
  const fields = {
    image: (s) => s.spec.template.spec.containers[0].image,
    args: (s) => s.spec.template.spec.containers[0].args,
    ports: (s) => s.spec.template.spec.containers[0].ports,
    env: (s) => s.spec.template.spec.containers[0].env || [],
    resources: (s) => s.spec.template.spec.containers[0].resources,
    readinessProbe: (s) => s.spec.template.spec.containers[0].readinessProbe,
    livenessProbe: (s) => s.spec.template.spec.containers[0].livenessProbe,
    securityContext: (s) => s.spec.template.spec.containers[0].securityContext,
    annotations: (s) => Object.fromEntries(Object.entries(s.spec.template.metadata.annotations || {})
      .filter(([k]) => !k.startsWith('checksum/'))),
    containerConcurrency: (s) => s.spec.template.spec.containerConcurrency,
    timeoutSeconds: (s) => s.spec.template.spec.timeoutSeconds,
    visibility: (s) => (s.metadata.labels || {})['networking.knative.dev/visibility'] || '',
    mountPaths: (s) => (s.spec.template.spec.containers[0].volumeMounts || []).map((m) => m.mountPath),
  };
  for (const fn of fa.filter((f) => b[f])) {
    const diffs = [];
    for (const [name, get] of Object.entries(fields)) {
      const x = canon(get(a[fn])), y = canon(get(b[fn]));
      if (x !== y) diffs.push(`${name}: chart ${x} vs kustomize ${y}`);
    }
    if (diffs.length) fail(`${fn}: ${diffs.join('; ')}`);
    else ok(`${fn}: chart = kustomize on ${Object.keys(fields).join(', ')}` +
            ` (${fields.image(a[fn])}, ${canon(fields.args(a[fn]))})`);
  }
}

function kubePlay(inFile, outFile, suffix) {
  const keep = [];
  const services = new Set();
  const docs = loadDocs(inFile);
  for (const d of docs) if (d.kind === 'Service' && d.apiVersion === 'v1') services.add(d.metadata.name);
  for (const d of docs) {
    if (!['Deployment', 'Pod', 'ConfigMap'].includes(d.kind)) continue;
    if (d.kind === 'ConfigMap' && d.data && d.data['plan.json']) {
      // http://NAME.NS.svc.cluster.local:PORT -> http://NAME-pod-0:PORT
      d.data['plan.json'] = d.data['plan.json'].replace(
        /http:\/\/([a-z0-9-]+)\.[a-z0-9-]+\.svc\.cluster\.local(:\d+)?/g, (m, name, port) => {
          if (!services.has(name)) fail(`plan names ${name}, which is no Service of the overlay`);
          return `http://${name}${suffix}-pod-0${port || ''}`;
        });
    }
    if (d.kind === 'Deployment') {
      d.metadata.name += suffix;
      // podman kube play publishes a containerPort on the host (no hostPort
      // needed): every pod would take the host's 8080. Pods talk over the
      // podman network instead, so the ports go; probes get the number.
      for (const c of d.spec.template.spec.containers) {
        const byName = Object.fromEntries((c.ports || []).map((p) => [p.name, p.containerPort]));
        for (const probe of [c.readinessProbe, c.livenessProbe, c.startupProbe])
          if (probe && probe.httpGet && byName[probe.httpGet.port]) probe.httpGet.port = byName[probe.httpGet.port];
        delete c.ports;
      }
    }
    delete d.metadata.namespace;
    keep.push(d);
  }
  fs.writeFileSync(outFile, keep.map((d) => yaml.dump(d, { lineWidth: -1 })).join('---\n'));
  ok(`${outFile}: ${keep.map((d) => `${d.kind}/${d.metadata.name}`).join(' ')}`);
}

function hpa(file) {
  const docs = loadDocs(file);
  const deps = new Map(docs.filter((d) => d.apiVersion === 'apps/v1' && d.kind === 'Deployment')
    .map((d) => [d.metadata.name, d]));
  const scaled = new Map();
  for (const h of docs.filter((d) => d.kind === 'HorizontalPodAutoscaler')) {
    const id = `HorizontalPodAutoscaler/${h.metadata.name}`, ref = h.spec.scaleTargetRef || {};
    if (h.apiVersion !== 'autoscaling/v2') fail(`${id}: apiVersion ${h.apiVersion}, not autoscaling/v2`);
    const d = ref.kind === 'Deployment' && ref.apiVersion === 'apps/v1' && deps.get(ref.name);
    if (!d) { fail(`${id}: targets ${ref.apiVersion} ${ref.kind}/${ref.name}, no Deployment of the file`); continue; }
    scaled.set(ref.name, (scaled.get(ref.name) || 0) + 1);
    const cpu = (h.spec.metrics || []).filter((m) => m.type === 'Resource' && m.resource.name === 'cpu' &&
      m.resource.target.type === 'Utilization' && m.resource.target.averageUtilization > 0);
    if (cpu.length !== 1) fail(`${id}: no CPU utilization target`);
    if (!(h.spec.minReplicas >= 1 && h.spec.maxReplicas >= h.spec.minReplicas))
      fail(`${id}: replicas ${h.spec.minReplicas}..${h.spec.maxReplicas}`);
    for (const c of d.spec.template.spec.containers)
      if (!(c.resources && c.resources.requests && c.resources.requests.cpu))
        fail(`${id}: container ${c.name} of ${ref.name} requests no CPU`);
    ok(`${id} -> Deployment/${ref.name}: cpu ${cpu.length && cpu[0].resource.target.averageUtilization}%,` +
       ` ${h.spec.minReplicas}..${h.spec.maxReplicas} replicas`);
  }
  for (const [name, d] of deps) {
    if (scaled.get(name) !== 1) fail(`Deployment/${name}: ${scaled.get(name) || 0} HorizontalPodAutoscalers, want 1`);
    if (d.spec.replicas !== undefined) fail(`Deployment/${name}: sets spec.replicas, which a re-apply would reset`);
  }
}

function exprs(file) {
  const d = JSON.parse(fs.readFileSync(file, 'utf8'));
  const sub = (e) => e.replaceAll('$__rate_interval', '30s').replaceAll('$__range', '5m')
    .replaceAll('$__interval', '5s').replaceAll('$namespace', '.*').replaceAll('$function', '.*')
    .replaceAll('$pod_prefix', 'splitinfer-');
  const walk = (ps) => {
    for (const p of ps) {
      for (const t of p.targets || []) console.log(`${p.title}\t${sub(t.expr)}`);
      if (p.panels) walk(p.panels);
    }
  };
  walk(d.panels);
}

switch (cmd) {
  case 'plan': { const p = planOf(args[0]); if (p) console.log(JSON.stringify(p, null, 2)); break; }
  case 'validate': await validate(args); break;
  case 'values-paths': valuesPaths(args[0]); break;
  case 'compare': compare(args[0], args[1]); break;
  case 'kube-play': kubePlay(args[0], args[1], args[2] || ''); break;
  case 'hpa': hpa(args[0]); break;
  case 'exprs': exprs(args[0]); break;
  default: console.error('usage: check.mjs validate|values-paths|compare|kube-play|hpa|exprs ...'); process.exit(2);
}
process.exit(failed ? 1 : 0);
