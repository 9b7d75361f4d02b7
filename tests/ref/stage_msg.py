#!/usr/bin/python3
"""Writes a StageRequest (proto/splitinfer.proto) by hand, for tests that need
valid, wrong-shaped or damaged messages without a protobuf library.

    stage_msg.py OUT SEGMENT N C H W [ROW0 OUT_BEGIN OUT_END] [--then SEG,SEG...]
                 [--nhwc] [--id ID] [--resident HOLD,FROM_HELD,REPLY_BEGIN,REPLY_END]
                 [--zeros]

--then makes it a chained request (StageRequest.then); --nhwc lays the input
and the reply out as NHWC; --id sets the request_id (default "test"; "" for
none); --resident adds a StageRequest.resident. The tensor holds seeded
random float32 values; with --zeros every element is 0.0, sent as
Tensor.ZEROS (a bitmap of zero bits and no elements)."""
import struct, sys, random


def varint(v):
    out = b""
    v &= (1 << 64) - 1
    while True:
        b = v & 0x7F
        v >>= 7
        out += bytes([b | (0x80 if v else 0)])
        if not v:
            return out


def field(num, wire, payload):
    key = varint((num << 3) | wire)
    if wire == 2:
        return key + varint(len(payload)) + payload
    return key + payload


def request(segment, dims, row0=0, ob=0, oe=0, then=(), nhwc=False, rid="test", resident=None,
            zeros=False):
    random.seed(1)
    n = 1
    for d in dims:
        n *= d
    if zeros:
        data = bytes((n + 7) // 8)
    else:
        data = struct.pack("<%df" % n, *[random.uniform(-1, 1) for _ in range(n)])
    tensor = field(1, 2, b"".join(varint(d) for d in dims))
    if nhwc:
        tensor += field(4, 0, varint(1))
    if zeros:
        tensor += field(5, 0, varint(1))
    if n:
        tensor += field(15, 2, data)
    msg = (field(1, 2, rid.encode()) if rid else b"") + field(2, 2, segment.encode())
    for num, v in ((3, row0), (4, ob), (5, oe)):
        if v:
            msg += field(num, 0, varint(v))
    for seg in then:
        msg += field(8, 2, seg.encode())
    if nhwc:
        msg += field(10, 0, varint(1))
    if resident:
        msg += field(11, 2, b"".join(field(i + 1, 0, varint(v)) for i, v in enumerate(resident) if v))
    return msg + field(15, 2, tensor)


if __name__ == "__main__":
    args, then, rid, resident = sys.argv[1:], [], "test", None
    if "--then" in args:
        i = args.index("--then")
        then = args[i + 1].split(",")
        del args[i : i + 2]
    if "--id" in args:
        i = args.index("--id")
        rid = args[i + 1]
        del args[i : i + 2]
    if "--resident" in args:
        i = args.index("--resident")
        resident = [int(x) for x in args[i + 1].split(",")]
        del args[i : i + 2]
    nhwc = "--nhwc" in args
    if nhwc:
        args.remove("--nhwc")
    zeros = "--zeros" in args
    if zeros:
        args.remove("--zeros")
    out, seg = args[0], args[1]
    dims = [int(x) for x in args[2:6]]
    rest = [int(x) for x in args[6:9]] + [0, 0, 0]
    open(out, "wb").write(request(seg, dims, *rest[:3], then=then, nhwc=nhwc, rid=rid, resident=resident,
                                     zeros=zeros))
