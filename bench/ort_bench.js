#!/usr/bin/env node
// ONNX Runtime (onnxruntime-node) peer for bench/engine.sh.
//
//   node ort_bench.js bench -m MODEL [-t THREADS] [-n N] [--batch B] [--warmup W]
//       prints one line in splitinfer's own format (ms per batch, over the N
//       timed runs after W untimed ones):
//       bench model=PATH threads=T batch=B n=N min_ms=X median_ms=X p90_ms=X images_per_s=X
//   node ort_bench.js classify -m MODEL [-t THREADS] [-k 5] IMAGE.png
//       the cold-start peer of `splitinfer classify`: decode the PNG, resize
//       the shorter side to 256 (bilinear), centre-crop 224, ImageNet mean/std,
//       one run, print the top-k as "rank index score" lines.
//
// Session options are those of the comparison in bench/engine.sh:
// intraOpNumThreads=T, interOpNumThreads=1, graphOptimizationLevel 'all',
// executionMode 'sequential'. Batch > 1 needs a model with a symbolic batch
// dimension (export_resnet.py --dynamic-batch).
'use strict';
const fs = require('fs');
const ort = require('onnxruntime-node');

function usage(msg) {
  if (msg) process.stderr.write(`ort_bench: ${msg}\n`);
  process.stderr.write(
    'usage: ort_bench.js bench -m MODEL [-t T] [-n N] [--batch B] [--warmup W]\n' +
    '       ort_bench.js classify -m MODEL [-t T] [-k K] IMAGE.png\n');
  process.exit(2);
}

function parseArgs(argv) {
  const a = { cmd: argv[0], model: null, threads: 1, n: 20, batch: 1, warmup: 3, k: 5, files: [] };
  const intOpt = (i, name) => {
    const v = Number(argv[i]);
    if (!Number.isInteger(v) || v < 0) usage(`${name} wants a non-negative integer, got '${argv[i]}'`);
    return v;
  };
  for (let i = 1; i < argv.length; i++) {
    switch (argv[i]) {
      case '-m': case '--model': a.model = argv[++i]; break;
      case '-t': case '--threads': a.threads = intOpt(++i, '-t'); break;
      case '-n': a.n = intOpt(++i, '-n'); break;
      case '--batch': a.batch = intOpt(++i, '--batch'); break;
      case '--warmup': a.warmup = intOpt(++i, '--warmup'); break;
      case '-k': a.k = intOpt(++i, '-k'); break;
      default:
        if (argv[i].startsWith('-')) usage(`unknown option ${argv[i]}`);
        a.files.push(argv[i]);
    }
  }
  if (a.cmd !== 'bench' && a.cmd !== 'classify') usage(`unknown command '${a.cmd || ''}'`);
  if (!a.model) usage('-m MODEL is required');
  if (a.threads < 1 || a.batch < 1 || (a.cmd === 'bench' && a.n < 1)) usage('-t, --batch and -n must be >= 1');
  if (a.cmd === 'classify' && a.files.length !== 1) usage('classify takes exactly one IMAGE');
  return a;
}

function sessionOptions(threads) {
  return {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
  };
}

// Nearest-rank percentile of sorted XS (p in 0..100); the median of an even
// count is the mean of the two middle values, as in the engine's own bench.
function median(xs) {
  const m = xs.length >> 1;
  return xs.length % 2 ? xs[m] : (xs[m - 1] + xs[m]) / 2;
}
function percentile(xs, p) {
  const r = Math.ceil((p / 100) * xs.length);
  return xs[Math.min(xs.length, Math.max(1, r)) - 1];
}

// Deterministic xorshift32 noise in [-1, 1): the input values do not change
// the work a CNN does, but all-zero inputs could hit special paths.
function fillNoise(buf) {
  let s = 0x9e3779b9;
  for (let i = 0; i < buf.length; i++) {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    buf[i] = s / 2147483648 - 1;
  }
}

async function bench(a) {
  const session = await ort.InferenceSession.create(a.model, sessionOptions(a.threads));
  const inName = session.inputNames[0];
  const data = new Float32Array(a.batch * 3 * 224 * 224);
  fillNoise(data);
  const feeds = { [inName]: new ort.Tensor('float32', data, [a.batch, 3, 224, 224]) };
  for (let i = 0; i < a.warmup; i++) await session.run(feeds);
  const ms = [];
  for (let i = 0; i < a.n; i++) {
    const t0 = process.hrtime.bigint();
    await session.run(feeds);
    ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  ms.sort((x, y) => x - y);
  const med = median(ms);
  console.log(`bench model=${a.model} threads=${a.threads} batch=${a.batch} n=${a.n} ` +
    `min_ms=${ms[0].toFixed(3)} median_ms=${med.toFixed(3)} p90_ms=${percentile(ms, 90).toFixed(3)} ` +
    `images_per_s=${((a.batch * 1000) / med).toFixed(2)}`);
}

// Decodes IMAGE to 8-bit RGB (pngjs gives RGBA; alpha is dropped, as a
// classifier that ignores transparency would).
function loadRgb(path) {
  const { PNG } = require('pngjs');
  const png = PNG.sync.read(fs.readFileSync(path));
  return { w: png.width, h: png.height, rgba: png.data };
}

// Resize so the shorter side is 256 (bilinear, half-pixel centres), crop the
// central 224x224, scale to [0,1], normalise with the ImageNet mean/std, NCHW.
// Only the 224x224 crop of the resized image is ever computed.
function preprocess(img) {
  const S = 256, C = 224;
  const scale = S / Math.min(img.w, img.h);
  const rw = Math.round(img.w * scale), rh = Math.round(img.h * scale);
  const ox = Math.floor((rw - C) / 2), oy = Math.floor((rh - C) / 2);
  const mean = [0.485, 0.456, 0.406], std = [0.229, 0.224, 0.225];
  const out = new Float32Array(3 * C * C);
  const sx = img.w / rw, sy = img.h / rh;
  for (let y = 0; y < C; y++) {
    const fy = Math.min(Math.max((y + oy + 0.5) * sy - 0.5, 0), img.h - 1);
    const y0 = Math.floor(fy), y1 = Math.min(y0 + 1, img.h - 1), wy = fy - y0;
    for (let x = 0; x < C; x++) {
      const fx = Math.min(Math.max((x + ox + 0.5) * sx - 0.5, 0), img.w - 1);
      const x0 = Math.floor(fx), x1 = Math.min(x0 + 1, img.w - 1), wx = fx - x0;
      for (let c = 0; c < 3; c++) {
        const p = (yy, xx) => img.rgba[(yy * img.w + xx) * 4 + c];
        const v = (1 - wy) * ((1 - wx) * p(y0, x0) + wx * p(y0, x1)) +
                  wy * ((1 - wx) * p(y1, x0) + wx * p(y1, x1));
        out[c * C * C + y * C + x] = (v / 255 - mean[c]) / std[c];
      }
    }
  }
  return out;
}

async function classify(a) {
  const session = await ort.InferenceSession.create(a.model, sessionOptions(a.threads));
  const x = preprocess(loadRgb(a.files[0]));
  const res = await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', x, [1, 3, 224, 224]) });
  const logits = res[session.outputNames[0]].data;
  const idx = Array.from(logits.keys()).sort((i, j) => logits[j] - logits[i]).slice(0, a.k);
  idx.forEach((i, r) => console.log(`${r + 1} ${i} ${logits[i].toFixed(4)}`));
}

const args = parseArgs(process.argv.slice(2));
(args.cmd === 'bench' ? bench(args) : classify(args)).catch((e) => {
  process.stderr.write(`ort_bench: ${e && e.message ? e.message : e}\n`);
  process.exit(1);
});
