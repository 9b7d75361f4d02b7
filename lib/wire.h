/*
 * wire.h - the tensor messages stage functions exchange (proto/splitinfer.proto),
 * packed and unpacked with protobuf-c, with float32 / bfloat16 / float16 on the wire.
 *
 * The compute side is always float32; a message may carry its tensor as bf16 or
 * fp16 to halve the bytes on the network. This module converts on the way in
 * and out, so callers only ever see float32.
 *
 * Copies, and where they are avoided:
 *   - Encoding float32: the message's bytes field points at the caller's floats;
 *     nothing is copied before packing. si_wire_encode_*() writes them once into
 *     the packed buffer (that copy *is* the serialization); si_wire_encode_*_iov()
 *     does not copy them at all: the packed message is a small header plus the
 *     caller's floats, ready for writev().
 *   - Encoding bf16/fp16: elements are converted straight into the packed
 *     buffer as protobuf-c emits them; there is no intermediate array.
 *   - Decoding: protobuf-c's unpack copies a bytes field once into memory of its
 *     own (it has no borrowing mode). For float32 the decoded view then points
 *     into that unpacked message, which the decoded struct keeps alive until
 *     si_wire_*_free(); nothing else is copied. bf16/fp16 (and float32 bytes that
 *     are not 4-byte aligned, which protobuf-c's malloc never produces but a
 *     custom allocator might) are converted into the caller's scratch or into an
 *     array the struct owns - unless the caller asks for the elements to be
 *     left in place in their wire encoding (si_wire_decode_opts_t.raw): the
 *     gateway forwards them to the next function as they came.
 *   - Encoding elements that are already in the wire encoding (the tensor's
 *     bytes set, as a raw decode left them): sent as they are, by reference in
 *     the iov form, whatever the dtype.
 *   - ZEROS (si_wire_encoding_t): allowed on a float32 tensor, the encoder
 *     counts its nonzero elements (one read) and, when that saves a sixteenth
 *     of the bytes, compresses them straight into the packed buffer (so not by
 *     reference in the iov form); decoding expands them into the caller's
 *     scratch or an array the struct owns, or with raw leaves them encoded
 *     (bytes, nbytes), to be forwarded as they came.
 *
 * Validation. Decoding checks everything a stage or gateway would otherwise
 * trust: well-formed protobuf, a tensor present, 2 or 4 dims each > 0 (H may be 0 in a
 * from_held request: the function holds every row), at most
 * SI_WIRE_MAX_ELEMS elements, data length == elements x dtype size (or a
 * checked ZEROS encoding of them), a known
 * dtype and layout (NHWC only for 4-d tensors), non-negative rows (reply rows
 * only with hold, no chain with a resident band), strings
 * of at most SI_WIRE_MAX_STR bytes, at most SI_WIRE_MAX_CHAIN chained segments (and then whole tensors only). It cannot
 * check rows against a segment's height (it does not know the graph): the stage
 * does that. Encoding applies the same checks, so what we send we also accept.
 *
 * Host byte order must be little-endian (x86-64, arm64): float32 bytes go to and
 * from the wire as they lie in memory. The build refuses other hosts.
 */
#ifndef SI_WIRE_H
#define SI_WIRE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "err.h"

struct ProtobufCAllocator; /* protobuf-c.h; only decode options name it */

/* Most elements a tensor may have: 64 Mi = 256 MiB as float32. ResNet50's largest
 * activation at batch 1 is 64 x 112 x 112 = 0.8 M elements, so this leaves room for
 * batches of ~80 while a hostile header cannot make a stage allocate gigabytes. */
#define SI_WIRE_MAX_ELEMS ((int64_t)64 * 1024 * 1024)

/* Longest request_id / segment string accepted, in bytes (without the NUL). */
#define SI_WIRE_MAX_STR 256

/* Most segments a chained request may name after its own (StageRequest.then),
 * and so most downstream timings a reply carries: a plan has at most 64 steps. */
#define SI_WIRE_MAX_CHAIN 63

/* How tensor elements travel; values are those of Tensor.DType. */
typedef enum si_wire_dtype {
    SI_WIRE_FP32 = 0, /* IEEE binary32, exact */
    SI_WIRE_BF16 = 1, /* bfloat16: 8 exponent bits, 8 significant; ~3 decimal digits */
    SI_WIRE_FP16 = 2, /* IEEE binary16: max 65504, subnormals down to 2^-24 */
} si_wire_dtype_t;

/* How a 4-d tensor's elements lie; values are those of Tensor.Layout. dims are
 * (N, C, H, W) in either. A 2-d tensor is always NCHW (NC). */
typedef enum si_wire_layout {
    SI_WIRE_NCHW = 0, /* row-major in dims order */
    SI_WIRE_NHWC = 1, /* channels innermost: rows [a, b) of image n are one run */
} si_wire_layout_t;

/* How a tensor's elements lie in its bytes; values are those of
 * Tensor.Encoding. ZEROS is float32 only: a bitmap of si_wire_zeros_bitmap(n)
 * bytes (bit i, least significant first, set where element i is not all-zero
 * bits: -0.0 is kept), then the elements whose bit is set. Lossless; after a
 * ReLU a third or more of ResNet50's activations are zero, and the bytes on
 * the wire shrink by as much. */
typedef enum si_wire_encoding {
    SI_WIRE_DENSE = 0,
    SI_WIRE_ZEROS = 1,
} si_wire_encoding_t;

/* A view of a float32 tensor, batch first, in layout's order. Rows are
 * dims[2] (H) of a 4-d tensor; a 2-d tensor [N, C] has no rows. */
typedef struct si_wire_tensor {
    int ndim;              /* 2 (N, C) or 4 (N, C, H, W) */
    int64_t dims[4];       /* dims[0..ndim-1], each > 0 (see above); the rest unused */
    const float *data;     /* product(dims) floats. Encode: the caller's, read only and
                              only during the call (or until the iov is sent); unused
                              when bytes is set. Decode: owned by the decoded message,
                              see si_wire_request_t; NULL only as
                              si_wire_decode_opts_t.raw says. */
    const void *bytes;     /* the elements in dtype's wire encoding, at any alignment.
                              Decode: as they lie in the message. Encode: NULL to
                              convert data, or elements encoded already (borrowed as
                              data is), sent as they are */
    si_wire_dtype_t dtype; /* encode: how to send the elements; decode: how they came */
    si_wire_layout_t layout; /* how the elements lie (as given: encoding never reorders) */
    si_wire_encoding_t encoding; /* encode from data: ZEROS lets the encoder send float32
                                    as ZEROS when that saves at least a sixteenth of the
                                    bytes (else DENSE); with bytes set: how they are
                                    encoded. Decode: how they came (data is dense) */
    size_t nbytes; /* bytes at `bytes`: decode always; encode only with bytes and ZEROS */
} si_wire_tensor_t;

/* What decoding allocated; private to wire.c. All zero in a struct meant for
 * encoding, and after si_wire_*_free(). */
typedef struct si_wire_owned {
    void *msg;                        /* the unpacked protobuf-c message views point into */
    struct ProtobufCAllocator *alloc; /* what msg came from (NULL: protobuf-c's default) */
    float *floats;                    /* converted elements not put in the caller's scratch */
    void *strs;    /* request_id, segment and then[] of a *_view decode */
} si_wire_owned_t;

/* StageRequest: gateway -> stage, "run `segment` on this band of its input". */
typedef struct si_wire_request {
    const char *request_id;      /* NUL-terminated; NULL or "" when none */
    const char *segment;         /* segment spec (graph.h), e.g. "layer2", "#3..#7" */
    si_wire_tensor_t input;      /* rows [input_row0, input_row0 + H) of the segment's input */
    int32_t input_row0;          /* >= 0; 0 for a 2-d input */
    int32_t out_row_begin;       /* output rows wanted: [out_row_begin, out_row_end), */
    int32_t out_row_end;         /*   0 <= begin < end, or 0, 0 for all of them */
    si_wire_dtype_t reply_dtype; /* how the reply's tensor should travel (and in a chain
                                    each hop's input) */
    si_wire_layout_t reply_layout; /* the layout the reply's tensor should have if 4-d
                                      (and in a chain each hop's input) */
    si_wire_encoding_t reply_encoding; /* ZEROS: the reply's tensor (and in a chain each
                                          hop's input) may travel as ZEROS */
    const char *const *then;     /* a chain: the n_then segments after this one, which
                                    the function passes its output on to (proto) */
    int n_then;                  /* 0..SI_WIRE_MAX_CHAIN; > 0 needs out rows 0, 0 */
    int32_t timeout_ms;          /* how long the caller waits, 0 = not said; >= 0 */
    /* A resident band (proto Resident); all 0 in an ordinary call. */
    int hold;                    /* keep the output for the request's next call */
    int from_held;               /* the input continues the output held from its last */
    int32_t reply_row_begin;     /* with hold: output rows the reply carries, */
    int32_t reply_row_end;       /*   0 <= begin < end, or 0, 0 for all */
    si_wire_owned_t owned;       /* set by decode; release with si_wire_request_free() */
} si_wire_request_t;

/* Where a stage's time went (microseconds); see Timings in the .proto. */
typedef struct si_wire_timings {
    uint64_t decode_us;  /* unpack + dtype conversion of the request */
    uint64_t queue_us;   /* waiting for a free engine */
    uint64_t compute_us; /* running the segment */
    uint64_t encode_us;  /* packing the reply, as far as known when packing */
    uint64_t forward_us; /* a chain: round trip of the call to the next function */
} si_wire_timings_t;

/* A hop's own time: everything it reports but the wait for the next hop. */
uint64_t si_wire_timings_own_us(const si_wire_timings_t *t);

/* StageReply: stage -> gateway. */
typedef struct si_wire_reply {
    const char *request_id;    /* echoed from the request; NULL or "" when none */
    si_wire_tensor_t output;   /* rows [out_row0, out_row0 + H) of the segment's output */
    int32_t out_row0;          /* >= 0; 0 for a 2-d output */
    si_wire_timings_t timings; /* the stage's own account of its time */
    si_wire_timings_t chain[SI_WIRE_MAX_CHAIN]; /* a chain: the timings of the n_chain */
    int n_chain;                                /*   functions after it, nearest first */
    si_wire_owned_t owned;     /* set by decode; release with si_wire_reply_free() */
} si_wire_reply_t;

/* Options of a decode; pass NULL for the defaults (malloc everything). */
typedef struct si_wire_decode_opts {
    /* Where converted elements go when they fit; a reusable per-thread buffer
     * saves a malloc per request. NULL: none. */
    float *scratch;
    size_t scratch_cap; /* floats available at scratch */
    /* Allocator of the unpacked message (e.g. a request arena); NULL: protobuf-c's
     * default (malloc). */
    struct ProtobufCAllocator *alloc;
    /* Nonzero: the elements stay where they lie in the message, in their wire
     * encoding (bytes); data is set only for float32 that happens to be
     * aligned, else NULL. Nothing is converted or copied: for a caller that
     * forwards or stitches the elements as they came (the gateway). */
    int raw;
} si_wire_decode_opts_t;

/* A packed message as (base, len) pieces whose concatenation is the message. */
typedef struct si_wire_packed {
    struct iovec iov[2]; /* for float32: [header][the caller's floats]; else one piece */
    int iovcnt;          /* 1 or 2 */
    size_t len;          /* total bytes of the message */
    uint8_t *owned;      /* malloc'd memory behind the pieces, freed by si_wire_packed_free */
} si_wire_packed_t;

/* ---- dtypes ---- */

/* Parses "fp32", "bf16" or "fp16" (the names si_wire_dtype_name gives). */
int si_wire_dtype_parse(const char *s, si_wire_dtype_t *out, si_err_t *err);

/* "fp32", "bf16", "fp16", or "?" for a value outside the enum. */
const char *si_wire_dtype_name(si_wire_dtype_t dt);

/* Bytes per element on the wire: 4, 2, 2; 0 for a value outside the enum. */
size_t si_wire_dtype_size(si_wire_dtype_t dt);

/* float32 -> bfloat16 bits, rounded to nearest even; NaN stays a (quiet) NaN. */
uint16_t si_wire_f32_to_bf16(float f);
/* bfloat16 bits -> float32, exact. */
float si_wire_bf16_to_f32(uint16_t h);
/* float32 -> IEEE binary16 bits, rounded to nearest even: |f| >= 65520 becomes
 * inf, tiny values become subnormals or a signed zero; NaN stays a (quiet) NaN. */
uint16_t si_wire_f32_to_f16(float f);
/* IEEE binary16 bits -> float32, exact (subnormals, inf and NaN included). */
float si_wire_f16_to_f32(uint16_t h);

/* Converts n floats into n elements of dt, little-endian, at dst (n x size bytes). */
void si_wire_pack_elems(si_wire_dtype_t dt, const float *src, size_t n, uint8_t *dst);
/* Converts n little-endian elements of dt at src (n x size bytes, any alignment)
 * into n floats. */
void si_wire_unpack_elems(si_wire_dtype_t dt, const uint8_t *src, size_t n, float *dst);

/* Elements of a tensor view (product of its dims); 0 when the dims are invalid. */
int64_t si_wire_tensor_numel(const si_wire_tensor_t *t);

/* ---- the ZEROS encoding (float32) ---- */

/* Bytes of the bitmap of n elements: ceil(n / 8). */
size_t si_wire_zeros_bitmap(size_t n);
/* Elements of src[0..n) that are not all-zero bits. */
size_t si_wire_zeros_count(const float *src, size_t n);
/* Encodes src[0..n) at dst, which holds si_wire_zeros_bitmap(n) + 4 x
 * si_wire_zeros_count(src, n) bytes; returns that many. */
size_t si_wire_zeros_pack(const float *src, size_t n, uint8_t *dst);
/* Checks len bytes at src as the ZEROS encoding of n float32 elements: the
 * bitmap's length, no bit set past n, as many elements as bits. 0 or -1. */
int si_wire_zeros_check(const uint8_t *src, size_t len, size_t n);
/* Decodes n elements from a checked encoding (any alignment) into dst. */
void si_wire_zeros_unpack(const uint8_t *src, size_t n, float *dst);

/* The elements of a decoded tensor view as float32, whatever its dtype and
 * encoding (a raw decode's included), into dst[0..numel). */
void si_wire_tensor_floats(const si_wire_tensor_t *t, float *dst);

/* ---- messages ---- */

/* Packs req into one malloc'd buffer (*out, *len bytes); the caller frees *out.
 * Fails on anything si_wire_decode_request would refuse. */
int si_wire_encode_request(const si_wire_request_t *req, uint8_t **out, size_t *len, si_err_t *err);

/* Packs req without copying float32 elements: out->iov[1] is req->input.data itself,
 * which must stay unchanged until the message is sent. Release with si_wire_packed_free. */
int si_wire_encode_request_iov(const si_wire_request_t *req, si_wire_packed_t *out, si_err_t *err);

/* Unpacks and validates a StageRequest of len bytes at buf (any byte buffer: an HTTP
 * body as char or uint8_t) into *req, which the call overwrites. buf is not
 * referenced after the call. On success release *req with
 * si_wire_request_free; on failure *req holds nothing to free. */
int si_wire_decode_request(const void *buf, size_t len, si_wire_request_t *req,
                           const si_wire_decode_opts_t *opts, si_err_t *err);

/* As si_wire_decode_request, without copying the tensor: for fp32 the view
 * points into buf itself, which must then stay unchanged and alive until
 * si_wire_request_free. protobuf-c's unpack copies every bytes field
 * (megabytes per hop); this reads the canonical encoding of the message
 * directly and hands anything else to si_wire_decode_request. */
int si_wire_decode_request_view(const void *buf, size_t len, si_wire_request_t *req,
                                const si_wire_decode_opts_t *opts, si_err_t *err);

/* Frees what decoding put in req (a no-op for a struct built for encoding) and zeroes it. */
void si_wire_request_free(si_wire_request_t *req);

/* As the request functions, for a StageReply. */
int si_wire_encode_reply(const si_wire_reply_t *rep, uint8_t **out, size_t *len, si_err_t *err);
int si_wire_encode_reply_iov(const si_wire_reply_t *rep, si_wire_packed_t *out, si_err_t *err);
int si_wire_decode_reply(const void *buf, size_t len, si_wire_reply_t *rep,
                         const si_wire_decode_opts_t *opts, si_err_t *err);
/* The reply counterpart of si_wire_decode_request_view. */
int si_wire_decode_reply_view(const void *buf, size_t len, si_wire_reply_t *rep,
                              const si_wire_decode_opts_t *opts, si_err_t *err);
void si_wire_reply_free(si_wire_reply_t *rep);

/* Frees a packed message's memory and zeroes it (the caller's floats are untouched). */
void si_wire_packed_free(si_wire_packed_t *p);

#endif
