#!/usr/bin/python3
"""Reference data and comparison for splitinfer's end-to-end tests.

    torch_ref.py gen --arch resnet50 --seed 0 --n 8 --dir D [--cached]
        D/in_K.bin  : seeded standard-normal input [1,3,224,224], K = 0..n-1
        D/ref_K.bin : PyTorch logits [1,1000] of the same seeded model that
                      export_resnet.py exports (build_model is shared)
    torch_ref.py compare OUT.bin REF.bin --rel R [--topk 5]
        exit 0 when max|OUT-REF| <= R * max|REF| and the top-k agree, else 1

All .bin files are raw little-endian float32, batch 1, no header.
Use Debian's interpreter, /usr/bin/python3 (python3-torch 1.13).
"""
import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
INPUT_SHAPE = (1, 3, 224, 224)


def write_f32(path, a):
    """Writes A as raw little-endian float32 (tmp file + rename)."""
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "wb") as f:
        f.write(np.ascontiguousarray(a, dtype="<f4").tobytes())
    os.replace(tmp, path)


def read_f32(path):
    """Reads a raw little-endian float32 file as a flat float64 array."""
    nbytes = os.path.getsize(path)
    if nbytes % 4:
        raise ValueError("%s: %d bytes is not a whole number of float32" % (path, nbytes))
    return np.fromfile(path, dtype="<f4").astype(np.float64)


def cmd_gen(a):
    import torch
    sys.path.insert(0, HERE)
    import export_resnet  # the model both sides build: export_resnet.build_model

    key = "arch=%s seed=%d n=%d src=%s" % (
        a.arch, a.seed, a.n,
        export_resnet.source_key(os.path.abspath(__file__), export_resnet.__file__))
    stamp = os.path.join(a.dir, "stamp")
    if a.cached and export_resnet.stamp_ok(stamp, key) and all(
            os.path.exists(os.path.join(a.dir, "%s_%d.bin" % (w, k)))
            for k in range(a.n) for w in ("in", "ref")):
        print("gen: %s is up to date" % a.dir)
        return 0
    torch.set_num_threads(a.threads)
    os.makedirs(a.dir, exist_ok=True)
    if os.path.exists(stamp):
        os.unlink(stamp)
    model = export_resnet.build_model(a.arch, a.seed)
    # Inputs come from their own generator, so that they do not depend on
    # the model's init (same inputs for every arch with the same seed).
    gen = torch.Generator().manual_seed(a.seed + 1000003)
    with torch.no_grad():
        for k in range(a.n):
            x = torch.randn(INPUT_SHAPE, generator=gen, dtype=torch.float32)
            y = model(x)
            write_f32(os.path.join(a.dir, "in_%d.bin" % k), x.numpy())
            write_f32(os.path.join(a.dir, "ref_%d.bin" % k), y.numpy())
            top = torch.topk(y[0], 5).indices.tolist()
            print("gen %s seed=%d k=%d max|logit|=%.4g top5=%s" %
                  (a.arch, a.seed, k, y.abs().max().item(), top))
    export_resnet.write_stamp(stamp, key)
    return 0


def topk_order(v, k):
    """Indices of the K largest values of V, largest first (ties by index)."""
    idx = np.argsort(-v, kind="stable")
    return [int(i) for i in idx[:k]]


def topk_agree(out, ref, k, tol):
    """Compares the ordered top-K lists of OUT and REF.

    Returns (agree, note). Exact equality agrees. Otherwise the lists still
    agree when they differ only by a swap of two entries whose REF values
    are within TOL of each other (a near-tie that float rounding may flip),
    and the note says so. The swap is looked for in the top-(K+1) lists, so
    that a near-tie between ranks K and K+1 (the K-th entry replaced by the
    (K+1)-th) counts as such a swap too.
    """
    a, b = topk_order(ref, k), topk_order(out, k)
    if a == b:
        return True, "top%d agree %s" % (k, a)
    n = min(k + 1, ref.size)
    a1, b1 = topk_order(ref, n), topk_order(out, n)
    diff = [i for i in range(n) if a1[i] != b1[i]]
    if len(diff) == 2:
        i, j = diff
        if a1[i] == b1[j] and a1[j] == b1[i]:
            d = abs(ref[a1[i]] - ref[a1[j]])
            if d < tol:
                return True, ("top%d agree up to a near-tie swap: ref %s, out %s "
                              "(ranks %d,%d; ref values differ by %.3g < tol %.3g)"
                              % (k, a, b, i + 1, j + 1, d, tol))
            return False, ("top%d DIFFER: ref %s, out %s (swap of ranks %d,%d whose "
                           "ref values differ by %.3g >= tol %.3g)"
                           % (k, a, b, i + 1, j + 1, d, tol))
    return False, "top%d DIFFER: ref %s, out %s" % (k, a, b)


def cmd_compare(a):
    out, ref = read_f32(a.out), read_f32(a.ref)
    if out.size != ref.size:
        print("compare: FAIL size mismatch: %s has %d floats, %s has %d" %
              (a.out, out.size, a.ref, ref.size))
        return 1
    if not np.all(np.isfinite(out)):
        print("compare: FAIL %s has %d non-finite values" % (a.out, int(np.sum(~np.isfinite(out)))))
        return 1
    diff = np.abs(out - ref)
    maxdiff = float(diff.max()) if diff.size else 0.0
    maxref = float(np.abs(ref).max()) if ref.size else 0.0
    ratio = maxdiff / maxref if maxref > 0 else (0.0 if maxdiff == 0 else float("inf"))
    tol = a.rel * maxref
    ok = maxdiff <= tol
    where = int(diff.argmax()) if diff.size else 0
    note = ""
    if a.topk > 0:
        agree, note = topk_agree(out, ref, min(a.topk, out.size), tol)
        ok = ok and agree
    print("compare: %s max|diff|=%.4g (at %d) max|ref|=%.4g ratio=%.3g rel=%.3g %s%s" %
          ("ok" if ok else "FAIL", maxdiff, where, maxref, ratio, a.rel,
           "ratio<=rel" if maxdiff <= tol else "RATIO>REL", (" " + note) if note else ""))
    return 0 if ok else 1


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen", help="write seeded inputs and torch logits")
    g.add_argument("--arch", required=True)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--n", type=int, default=8)
    g.add_argument("--dir", required=True)
    g.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    g.add_argument("--cached", action="store_true",
                   help="do nothing when DIR already holds this set (DIR/stamp)")
    c = sub.add_parser("compare", help="compare OUT.bin against REF.bin")
    c.add_argument("out", help="tensor under test (.bin)")
    c.add_argument("ref", help="reference tensor (.bin)")
    c.add_argument("--rel", type=float, required=True,
                   help="pass when max|diff| <= REL * max|ref|")
    c.add_argument("--topk", type=int, default=5, help="0 disables the top-k check")
    a = ap.parse_args(argv)
    return cmd_gen(a) if a.cmd == "gen" else cmd_compare(a)


if __name__ == "__main__":
    sys.exit(main())
