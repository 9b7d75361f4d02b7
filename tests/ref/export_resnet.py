#!/usr/bin/python3
"""Exports a seeded, randomly initialised torchvision ResNet to ONNX.

The reference peer for splitinfer's tests and benchmarks. No weights are
downloaded (no model hub is reachable here): the model is torchvision's own
architecture with its own random init under torch.manual_seed(SEED), plus
random BatchNorm affine parameters and running statistics calibrated on seeded
noise (see build_model), so that folding BN into the convolutions is really
exercised.

    /usr/bin/python3 tests/ref/export_resnet.py --arch resnet50 --seed 0 \
        --out build/ref/resnet50.onnx [--separate-bn] [--dynamic-batch] [--cached]

Default export: eval mode with constant folding, which is how torch 1.13 folds
BatchNormalization into Conv. --separate-bn keeps BatchNormalization nodes
(do_constant_folding=False, training=PRESERVE), as ONNX model-zoo files have
them. --dynamic-batch makes the batch dimension symbolic (for peers such as
ONNX Runtime that need it for batch > 1); without it the batch is fixed at 1.
--cached skips the work when OUT and its stamp (OUT.stamp: the arguments and a
hash of this script and of torch's version) are already there, so that test
reruns are fast.

Use Debian's interpreter, /usr/bin/python3 (python3-torch 1.13).
"""
import argparse
import hashlib
import os
import sys

import torch
import torchvision

ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
INPUT_SHAPE = (1, 3, 224, 224)
CALIB_N = 4  # images for the BN calibration pass (see build_model)


def build_model(arch, seed):
    """Returns torchvision's ARCH in eval mode, deterministic given SEED.

    Conv and Linear weights come from torchvision's init under
    torch.manual_seed(seed). BatchNorm is then made to look trained, so that
    folding it into the convolutions is really exercised (torchvision's init,
    mean=0 var=1 weight=1 bias=0, would pass a broken fold) while the
    activations stay O(1) through 50+ residual blocks:
      1. weight ~ U(0.5, 1.5), bias ~ N(0, 0.1), from a generator seeded
         with SEED, in module order;
      2. running_mean/var are calibrated: one train-mode forward pass over
         CALIB_N seeded standard-normal images with momentum=None sets them
         to each layer's batch statistics (given the weights of step 1), so
         they vary per channel as in a trained net (var from ~0.01 to ~10);
      3. BN values are rounded to float16 precision (short, exact values).
    The calibration runs on one thread, so that the model does not depend on
    the caller's thread count (export and gen must build the same model).
    Why not random running stats: eval-mode BN does not renormalise, and
    random var/mean multiply the activations by E[w^2/var] > 1 per layer;
    a ResNet101 then reaches logits of 1e7 and every input the same top-5.
    """
    if arch not in ARCHS:
        raise ValueError("unknown arch %r (one of %s)" % (arch, ", ".join(ARCHS)))
    torch.manual_seed(seed)
    model = getattr(torchvision.models, arch)(weights=None)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in bns:
            n = m.num_features
            m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one pass = batch stats
        model.train()
        # One thread: a threaded conv sums in another order, and the last
        # bits it changes compound layer by layer into different stats.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            model(torch.randn((CALIB_N,) + INPUT_SHAPE[1:], generator=gen))
        finally:
            torch.set_num_threads(threads)
        for m in bns:
            m.momentum = 0.1
            for t in (m.weight, m.bias, m.running_mean, m.running_var):
                t.copy_(t.half().float())
    return model.eval()


def source_key(*paths):
    """A short hash of the given source files and the torch version: what a
    cached export or reference set depends on besides its arguments."""
    h = hashlib.sha1(torch.__version__.encode())
    for p in paths:
        with open(p, "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:16]


def stamp_ok(stamp, key):
    """True when the file STAMP exists and holds KEY (a cache hit)."""
    try:
        with open(stamp) as f:
            return f.read().strip() == key
    except OSError:
        return False


def write_stamp(stamp, key):
    with open(stamp, "w") as f:
        f.write(key + "\n")


def count_op(path, op_type):
    """Counts nodes of OP_TYPE in the ONNX file at PATH.

    Uses the onnx package when installed (python3-onnx); otherwise counts the
    the NodeProto.op_type fields in the serialized protobuf: the field tag
    and length prefix make the match exact even though torch's node and
    tensor names ("/bn1/BatchNormalization_output_0") contain the op name.
    """
    try:
        import onnx
    except ImportError:
        onnx = None
    if onnx is not None:
        g = onnx.load(path, load_external_data=False).graph
        return sum(1 for n in g.node if n.op_type == op_type)
    # NodeProto.op_type is field 4, wire type 2: tag byte 0x22, then the
    # length as a varint (< 128 for any op name).
    name = op_type.encode()
    needle = b"\x22" + bytes([len(name)]) + name
    with open(path, "rb") as f:
        return f.read().count(needle)


def export(model, out, separate_bn=False, dynamic_batch=False):
    """Writes MODEL to OUT as ONNX opset 13 ("input" -> "logits").

    Written to OUT.tmp.PID first and renamed, so a reader (or a concurrent
    test) never sees half a file.
    """
    x = torch.zeros(INPUT_SHAPE)
    kw = {}
    if separate_bn:
        # Constant folding is what fuses BN into Conv in eval exports;
        # PRESERVE keeps the module's mode (eval) but stops the fusion pass.
        kw = dict(do_constant_folding=False, training=torch.onnx.TrainingMode.PRESERVE)
    else:
        kw = dict(do_constant_folding=True)
    if dynamic_batch:
        kw["dynamic_axes"] = {"input": {0: "batch"}, "logits": {0: "batch"}}
    d = os.path.dirname(os.path.abspath(out))
    os.makedirs(d, exist_ok=True)
    tmp = "%s.tmp.%d" % (out, os.getpid())
    try:
        with torch.no_grad():
            torch.onnx.export(model, x, tmp, opset_version=13,
                              input_names=["input"], output_names=["logits"], **kw)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", required=True, choices=ARCHS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="output .onnx path")
    ap.add_argument("--separate-bn", action="store_true",
                    help="keep BatchNormalization nodes (no folding into Conv)")
    ap.add_argument("--dynamic-batch", action="store_true",
                    help="symbolic batch dimension instead of a fixed 1")
    ap.add_argument("--cached", action="store_true",
                    help="do nothing when OUT exists and OUT.stamp says it was "
                         "made with these arguments by this script")
    a = ap.parse_args(argv)
    key = "arch=%s seed=%d separate_bn=%d dynamic_batch=%d src=%s" % (
        a.arch, a.seed, a.separate_bn, a.dynamic_batch, source_key(os.path.abspath(__file__)))
    stamp = a.out + ".stamp"
    if a.cached and os.path.exists(a.out) and stamp_ok(stamp, key):
        print("export_resnet: %s is up to date" % a.out)
        return 0
    if os.path.exists(stamp):
        os.unlink(stamp)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    model = build_model(a.arch, a.seed)
    export(model, a.out, separate_bn=a.separate_bn, dynamic_batch=a.dynamic_batch)

    n_bn = count_op(a.out, "BatchNormalization")
    n_conv = count_op(a.out, "Conv")
    if a.separate_bn and n_bn == 0:
        print("export_resnet: %s has no BatchNormalization node although "
              "--separate-bn was given" % a.out, file=sys.stderr)
        return 1
    if not a.separate_bn and n_bn != 0:
        print("export_resnet: %s still has %d BatchNormalization nodes "
              "(expected them folded into Conv)" % (a.out, n_bn), file=sys.stderr)
        return 1
    write_stamp(stamp, key)
    print("export_resnet: %s arch=%s seed=%d conv=%d batchnorm=%d bytes=%d" %
          (a.out, a.arch, a.seed, n_conv, n_bn, os.path.getsize(a.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
