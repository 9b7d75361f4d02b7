#!/usr/bin/python3
"""Compares splitinfer's preprocessed tensors with PIL + torchvision's.

usage: preprocess_ref.py [--tol T] IMAGE OUT.bin [IMAGE OUT.bin ...]

Each OUT.bin is what `splitinfer preprocess IMAGE -o OUT.bin` wrote:
3 * 224 * 224 little-endian float32, CHW. The reference is torchvision's
ImageNet eval transform on Image.open(IMAGE).convert("RGB"). Prints one line
per image (max abs diff, and how many values differ at all) and the worst;
exits 1 if any diff exceeds T (default 0.02, about 1/255 / std: one 8-bit
step after normalisation is 0.0171..0.0175), 2 on a usage or I/O error.
One process for all images because importing torch takes seconds.
"""
import sys

import numpy as np
from PIL import Image
from torchvision import transforms

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def main(argv):
    tol = 0.02
    if len(argv) >= 2 and argv[0] == "--tol":
        tol = float(argv[1])
        argv = argv[2:]
    if not argv or len(argv) % 2:
        sys.stderr.write(__doc__)
        return 2
    tf = transforms.Compose([
        transforms.Resize(256),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize(mean=MEAN, std=STD),
    ])
    worst, worst_name, bad = -1.0, None, 0
    for image, out in zip(argv[0::2], argv[1::2]):
        with Image.open(image) as im:
            ref = tf(im.convert("RGB")).numpy()
        got = np.fromfile(out, dtype="<f4")
        if got.size != ref.size:
            print(f"{image}: {out} holds {got.size} floats, want {ref.size}")
            bad += 1
            continue
        got = got.reshape(ref.shape)
        diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
        d = float(diff.max())
        ndiff = int(np.count_nonzero(got != ref))
        flag = "FAIL" if d > tol else "ok"
        print(f"{flag} {image}: max abs diff {d:.6g}, {ndiff} of {ref.size} values differ")
        if d > tol:
            bad += 1
        if d > worst:
            worst, worst_name = d, image
    n = len(argv) // 2
    if worst == 0:
        print(f"worst: 0 (all {n} tensors bit-identical); tolerance {tol}")
    else:
        print(f"worst: {worst:.6g} ({worst_name}); tolerance {tol}; {bad} of {n} over")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
