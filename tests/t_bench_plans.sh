#!/usr/bin/env bash
# splitinfer bench --plans, end to end on the process runtime with the trained
# MobileNetV2 of ../shared (small: the whole run takes seconds) through four
# plans (baseline, pipeline, parallel, resident bands): every field of results.json is present and sane (cold start above the
# warm inference time, memory above 0, CPU utilization in (0, 100], the largest
# pipeline function smaller than the baseline's one function, bytes and
# network time growing with the hops), table.md is what went to stdout, and
# the three SVG charts parse as XML. Bad arguments fail with exit 1 and a
# message, and leave no process behind.
# Exit 0 pass, 1 fail, 77 cannot run here.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${SPLITINFER:-build/splitinfer}
PY=/usr/bin/python3
MB=../shared/models/mobilenet_v2_imagenet.onnx
PHOTOS=../shared/testdata/imagenet-sample
[ -f "$MB" ] && [ -d "$PHOTOS" ] || { echo "skip: ../shared model or photos missing"; exit 77; }
W=build/test-bench-plans
rm -rf "$W"
mkdir -p "$W"
failed=0

t0=$(date +%s)
if ! "$BIN" bench --plans tests/plans/mobilenet-baseline.json,tests/plans/mobilenet-pipeline.json,tests/plans/mobilenet-parallel.json,tests/plans/mobilenet-resident.json \
    -m "$MB" --images "$PHOTOS" -n 4 --cold 1 --concurrency 1,2 --seconds 1 --out "$W/out" \
    >"$W/stdout" 2>"$W/stderr"; then
    echo "FAIL: bench --plans exited non-zero"; tail -20 "$W/stderr"; exit 1
fi
echo "bench --plans took $(($(date +%s) - t0)) s"
cat "$W/stdout"

"$PY" - "$W/out" "$W/stdout" <<'PYEOF' || failed=1
import json, math, os, sys
import xml.etree.ElementTree as ET
out, stdout = sys.argv[1], sys.argv[2]
bad = []
def check(cond, what):
    if not cond:
        bad.append(what)
def num(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
def pos(x):
    return num(x) and x > 0

d = json.load(open(os.path.join(out, "results.json")))
for k in ("settings", "host", "paper_table1", "runs", "complete", "elapsed_s"):
    check(k in d, f"results.json: no {k}")
check(d["complete"] is True, "complete is not true")
s = d["settings"]
check(s["n"] == 4 and s["cold"] == 1 and s["concurrency"] == [1, 2] and s["seconds"] == 1,
      f"settings {s}")
check(s["runtimes"] == ["process"] and s["n_images"] == 100, "settings: runtimes / images")
check(d["paper_table1"]["Baseline"]["inference_ms"] == 379 and
      d["paper_table1"]["Advanced"]["network_ms"] == 223, "paper's Table 1")
check(d["host"]["cpus"] >= 1, "host cpus")
runs = {r["plan"]: r for r in d["runs"]}
check(sorted(runs) == ["mobilenet-baseline", "mobilenet-parallel", "mobilenet-pipeline",
                      "mobilenet-resident"], f"plans {sorted(runs)}")
# A resident plan: two band functions serve all its 9 banded steps, plus the head.
n_fns = {"mobilenet-baseline": 1, "mobilenet-pipeline": 5, "mobilenet-parallel": 11,
         "mobilenet-resident": 3}
n_steps = {"mobilenet-baseline": 1, "mobilenet-pipeline": 5, "mobilenet-parallel": 6,
           "mobilenet-resident": 10}
cols = {"mobilenet-baseline": "Baseline", "mobilenet-pipeline": "Preliminary",
        "mobilenet-parallel": "Advanced", "mobilenet-resident": None}

for name, r in runs.items():
    p = lambda m: f"{name}: {m}"
    check(r["runtime"] == "process", p("runtime"))
    check(r["paper_column"] == cols[name], p("paper column"))
    check(pos(r["prepare_ms"]) and pos(r["elapsed_s"]), p("prepare_ms / elapsed_s"))
    check("not capped" in r["cpu_cap"] and "1 CPU" in r["cpu_cap"], p("cpu_cap says how CPU was (not) capped"))
    # cold starts
    check(len(r["cold"]) == 1, p("one cold start"))
    for c in r["cold"]:
        for k in ("total_ms", "ready_ms", "start_ms", "load_warm_ms", "first_inference_ms",
                  "first_client_ms", "gateway_ready_ms"):
            check(pos(c[k]), p(f"cold {k} = {c.get(k)}"))
        check(num(c["load_ms"]) and c["load_ms"] >= 0 and pos(c["warmup_ms"]), p("cold load/warm-up split from the log"))
        check(abs(c["start_ms"] + c["load_warm_ms"] - max(f["ready_ms"] for f in c["functions"] if f["name"] != "gateway")) < 1e-3,
              p("start + load/warm-up = the last function's ready time"))
        check(c["ready_ms"] < c["total_ms"], p("ready before the first answer"))
        check(abs(c["ready_ms"] + c["first_inference_ms"] - c["total_ms"]) < 1e-3, p("split adds up"))
        check(len(c["functions"]) == n_fns[name] + 1, p("cold functions (+ gateway)"))
        for f in c["functions"]:
            check(pos(f["ready_ms"]) and f["ready_ms"] <= c["ready_ms"] + 1e-9, p(f"cold {f['name']} ready"))
            if f["name"] != "gateway":
                check(pos(f["load_warm_ms"]) and f["load_warm_ms"] <= f["ready_ms"], p(f"{f['name']} load_warm_ms"))
        check(c["critical_function"].startswith("step"), p("critical function"))
        check(c["first_sample"]["top1"] >= 0, p("first sample"))
    # warm samples
    check(len(r["warm"]) == 4, p("4 warm samples"))
    for w in r["warm"]:
        check("status" not in w, p(f"warm request failed: {w}"))
        for k in ("client_ms", "gateway_ms", "compute_ms", "bytes"):
            check(pos(w[k]), p(f"warm {k}"))
        check(num(w["network_ms"]) and w["network_ms"] >= 0, p("warm network_ms"))
        check(w["gateway_ms"] <= w["client_ms"], p("gateway time within the round trip"))
        check(len(w["steps"]) == n_steps[name], p("warm steps"))
        check(w["bytes"] == sum(t["bytes_sent"] + t["bytes_received"] for t in w["steps"]), p("bytes = sum of steps"))
        check(w["image"].endswith(".png") and 0 <= w["top1"] < 1000, p("image / top1"))
    check([w["i"] for w in r["warm"]] == [0, 1, 2, 3], p("sample order"))
    ww = r["warm_window"]
    check(pos(ww["wall_s"]) and pos(ww["stage_cpu_s"]) and pos(ww["gateway_cpu_s"]), p("warm window"))
    check(num(ww["other_cpus"]) and 0 <= ww["other_cpus"] <= d["host"]["cpus"] + 0.5, p("other jobs' CPUs"))
    check(ww["stage_cpu_s"] <= ww["wall_s"] * n_fns[name] * 1.05, p("stage CPU within wall x functions"))
    check(r["loadavg_start"].count("/") == 2 and r["loadavg_end"].count("/") == 2, p("load averages"))
    # throughput
    check([t["concurrency"] for t in r["throughput"]] == [1, 2], p("concurrency levels"))
    for t in r["throughput"]:
        check(t["errors"] == 0 and t["requests"] > 0 and pos(t["rps"]), p(f"throughput {t}"))
        check(len(t["latency_ms"]) == t["requests"] and all(pos(x) for x in t["latency_ms"]), p("throughput samples"))
        check(abs(t["rps"] - t["requests"] / t["seconds"]) < 1e-6 * t["rps"], p("rps = requests / seconds"))
        check(t["seconds"] >= 1, p("a level lasts --seconds"))
        check(0 < t["cpu_util_pct"] <= 100.5, p(f"throughput CPU {t['cpu_util_pct']}"))
    # functions
    fns = r["functions"]
    check(len(fns) == n_fns[name] + 1 and fns[-1]["name"] == "gateway", p("functions"))
    for f in fns:
        check(pos(f["peak_rss_mb"]) and f["peak_rss_end_mb"] >= f["peak_rss_mb"], p(f"{f['name']} memory"))
        check(num(f["cpu_s"]) and f["cpu_s"] >= 0 and f["quota_cpus"] == 1, p(f"{f['name']} cpu"))
        check("cgroup" in f, p("cgroup readings"))
        check(f["pid"] > 0, p("pid"))
        try:  # every function is stopped and reaped once bench exits
            os.kill(f["pid"], 0)
            check(False, p(f"{f['name']} (pid {f['pid']}) still runs"))
        except ProcessLookupError:
            pass
    # summary
    u = r["summary"]
    check(u["functions"] == n_fns[name], p("summary functions"))
    for k in ("inference_ms", "gateway_ms", "cold_start_ms", "network_ms"):
        st = u[k]
        for q in ("n", "mean", "mean_excl_outliers", "sd", "outliers", "min", "p50", "p95", "p99", "max"):
            check(num(st[q]), p(f"{k}.{q}"))
        check(st["min"] <= st["p50"] <= st["p95"] <= st["p99"] <= st["max"], p(f"{k} percentiles ordered"))
    check(u["inference_ms"]["n"] == 4 and pos(u["inference_ms"]["mean"]), p("inference n"))
    check(u["cold_start_ms"]["mean"] > u["inference_ms"]["mean"], p("cold start above warm inference"))
    check(0 < u["cpu_util_pct"] <= 100, p(f"CPU utilization {u['cpu_util_pct']} in (0, 100]"))
    check(pos(u["cpu_busy_while_invoked_pct"]), p("CPU busy while invoked"))
    check(u["cpu_quota_per_function"] == 1, p("quota 1 CPU per function (process runtime)"))
    m = u["memory_mb"]
    check(pos(m["sum"]) and pos(m["max"]) and m["max"] <= m["sum"] + 1e-9 and pos(m["gateway"]), p(f"memory {m}"))
    check(m["max_function"].startswith("step"), p("largest function named"))
    check(pos(u["bytes_per_image"]), p("bytes per image"))
    check(sorted(u["throughput_rps"]) == ["1", "2"] and all(pos(v) for v in u["throughput_rps"].values()), p("throughput_rps"))
    split = u["cold_start_split_ms"]
    check(all(pos(split[k]) for k in ("process_start", "load_warmup", "first_inference")), p(f"cold split {split}"))
    check(u["errors"] == 0, p("errors"))

b, pl, par = (runs[k]["summary"] for k in ("mobilenet-baseline", "mobilenet-pipeline", "mobilenet-parallel"))
check(pl["memory_mb"]["max"] < b["memory_mb"]["max"],
      f"largest pipeline function ({pl['memory_mb']['max']:.1f} MB) not smaller than the baseline's ({b['memory_mb']['max']:.1f} MB)")
check(pl["bytes_per_image"] > b["bytes_per_image"] and par["bytes_per_image"] > b["bytes_per_image"], "more hops move more bytes")
check(pl["network_ms"]["mean"] > 0 and b["network_ms"]["mean"] > 0, "network time measured")
res = runs["mobilenet-resident"]["summary"]
check(b["bytes_per_image"] < res["bytes_per_image"] < par["bytes_per_image"],
      f"resident bands move halos only: {res['bytes_per_image']} bytes per image, between the "
      f"baseline's {b['bytes_per_image']} and parallel's {par['bytes_per_image']}")

# table.md is stdout; it names every plan beside the paper's figures
table = open(os.path.join(out, "table.md")).read()
check(table == open(stdout).read(), "table.md differs from stdout")
for k in list(runs) + ["(379)", "(1023)", "(93.5)", "(1481)", "(223)", "process runtime", "not capped"]:
    check(k in table, f"table.md lacks {k}")
check(table.count("\n| ") >= 18, "table rows")

# charts
for f in ("metrics.svg", "latency.svg", "throughput.svg"):
    root = ET.parse(os.path.join(out, f)).getroot()
    check(root.tag == "{http://www.w3.org/2000/svg}svg", f"{f}: root {root.tag}")
    tags = [e.tag.split("}")[1] for e in root.iter()]
    check("text" in tags, f"{f}: no text")
    if f == "metrics.svg":
        check(tags.count("rect") >= 6 * 4, f"{f}: bars")
    else:
        check(tags.count("polyline") == len(runs), f"{f}: {tags.count('polyline')} lines, want {len(runs)}")

for m in bad:
    print("FAIL:", m)
print(f"results.json: {len(runs)} plans checked, {len(bad)} problems")
sys.exit(1 if bad else 0)
PYEOF

# Bad arguments: exit 1 with a message, nothing started.
expect_fail() { # $1: text the message must contain; rest: arguments
    local want=$1; shift
    "$BIN" bench "$@" >"$W/bad.out" 2>"$W/bad.err"
    local rc=$?
    if [ "$rc" -ne 1 ] || ! grep -q -- "$want" "$W/bad.err"; then
        echo "FAIL: bench $* -> exit $rc, wanted 1 with '$want':"; cat "$W/bad.err"; failed=1
    fi
}
expect_fail "no plan 'nosuchplan'" --plans nosuchplan -m "$MB" --images "$PHOTOS" -n 1 --cold 1 --out "$W/bad"
expect_fail "no .png files" --plans tests/plans/mobilenet-baseline.json -m "$MB" --images "$W" --out "$W/bad"
expect_fail "--images" --plans tests/plans/mobilenet-baseline.json -m "$MB" --images /nonexistent --out "$W/bad"
expect_fail "--runtime wants" --plans tests/plans/mobilenet-baseline.json -m "$MB" --images "$PHOTOS" --runtime docker
expect_fail "--concurrency" --plans tests/plans/mobilenet-baseline.json -m "$MB" --images "$PHOTOS" --concurrency 0,4
expect_fail "--cpus" --plans tests/plans/mobilenet-baseline.json -m "$MB" --images "$PHOTOS" --cpus 0
expect_fail "usage" --plans tests/plans/mobilenet-baseline.json -m "$MB"
expect_fail "unknown option" --plans x --bogus
# A plan that does not fit the model: caught before anything starts.
expect_fail "plans/pipeline.json" --plans plans/pipeline.json -m "$MB" --images "$PHOTOS" --out "$W/bad"
# podman with images that cannot exist: says so (or that podman is missing), exit 1.
SPLITINFER_IMAGE_PREFIX=localhost/splitinfer-test-none expect_fail "podman" \
    --plans tests/plans/mobilenet-baseline.json -m "$MB" --images "$PHOTOS" --runtime podman --out "$W/bad"
if grep -q "missing" "$W/bad.err"; then
    grep -q "localhost/splitinfer-test-none-stage-all:latest" "$W/bad.err" ||
        { echo "FAIL: the missing image is not named"; cat "$W/bad.err"; failed=1; }
fi

[ "$failed" -eq 0 ] && echo "PASS" || echo "FAIL"
exit "$failed"
