/*
 * wire.c - StageRequest / StageReply with protobuf-c, and the float32 <->
 * bfloat16 / float16 conversions (see wire.h).
 *
 * Packing goes through protobuf_c_message_pack_to_buffer() with our own sink
 * (a ProtobufCBuffer) instead of protobuf_c_message_pack(): the Tensor's bytes
 * field points at the caller's floats, and when protobuf-c hands the sink that
 * range the sink either copies it (fp32), converts it element by element
 * (bf16/fp16), or, for the iov variant, only notes where it goes. So no dtype
 * needs an intermediate array, and fp32 needs no copy at all for writev().
 */
#include "wire.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <protobuf-c/protobuf-c.h>

#include "splitinfer.pb-c.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "wire.c moves float32 bytes as they lie in memory: it needs a little-endian host"
#endif

_Static_assert(sizeof(float) == 4, "float must be IEEE binary32");
_Static_assert((int)SI_WIRE_FP32 == SPLITINFER__TENSOR__DTYPE__FLOAT32 &&
                   (int)SI_WIRE_BF16 == SPLITINFER__TENSOR__DTYPE__BFLOAT16 &&
                   (int)SI_WIRE_FP16 == SPLITINFER__TENSOR__DTYPE__FLOAT16,
               "si_wire_dtype_t must mirror Tensor.DType");
_Static_assert((int)SI_WIRE_NCHW == SPLITINFER__TENSOR__LAYOUT__NCHW &&
                   (int)SI_WIRE_NHWC == SPLITINFER__TENSOR__LAYOUT__NHWC,
               "si_wire_layout_t must mirror Tensor.Layout");

/* ---- dtypes ---- */

int si_wire_dtype_parse(const char *s, si_wire_dtype_t *out, si_err_t *err) {
    static const char *const names[] = {"fp32", "bf16", "fp16"};
    for (int i = 0; s && i < 3; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (si_wire_dtype_t)i;
            return 0;
        }
    }
    return si_err_set(err, "unknown wire dtype '%s' (want fp32, bf16 or fp16)", s ? s : "(null)");
}

const char *si_wire_dtype_name(si_wire_dtype_t dt) {
    switch (dt) {
    case SI_WIRE_FP32: return "fp32";
    case SI_WIRE_BF16: return "bf16";
    case SI_WIRE_FP16: return "fp16";
    }
    return "?";
}

size_t si_wire_dtype_size(si_wire_dtype_t dt) {
    switch (dt) {
    case SI_WIRE_FP32: return 4;
    case SI_WIRE_BF16:
    case SI_WIRE_FP16: return 2;
    }
    return 0;
}

static inline uint32_t f32_bits(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    return x;
}

static inline float bits_f32(uint32_t x) {
    float f;
    memcpy(&f, &x, sizeof f);
    return f;
}

static inline uint16_t to_bf16(float f) {
    uint32_t x = f32_bits(f);
    /* NaN: truncating could clear every mantissa bit left and make it inf;
     * setting the quiet bit keeps it a NaN (and keeps the payload's top bits). */
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x0040u);
    /* Round to nearest even: add just under half an ulp, plus one when the bit
     * that stays (bit 16) is odd, so exact halves go to the even neighbour.
     * A carry out of the mantissa bumps the exponent, which is right, up to
     * rounding the largest floats to inf. */
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

static inline float from_bf16(uint16_t h) {
    return bits_f32((uint32_t)h << 16);
}

static inline uint16_t to_f16(float f) {
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t a = x & 0x7fffffffu; /* |f| as bits; orders like the value */

    if (a > 0x7f800000u) /* NaN: quiet, with the payload's top bits */
        return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x03ffu));
    /* 65520 = 65504 + half an ulp (2^4 of 2^5) is the tie between the largest
     * half, 65504 (odd mantissa), and 2^16, which overflows: it and everything
     * above round to inf. */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);
    if (a >= 0x38800000u) { /* >= 2^-14: a normal half */
        /* Rebias the exponent (127 -> 15: subtract 112 << 23) and drop 13
         * mantissa bits, rounding to nearest even; a carry into the exponent is
         * the correct result. */
        uint32_t h = (a - 0x38000000u) >> 13;
        uint32_t rem = a & 0x1fffu;
        if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
        return (uint16_t)(sign | h);
    }
    /* Subnormal half: value = m x 2^-24 with m < 1024. The float is
     * mant x 2^(e - 150) with the implicit bit in mant, so m = mant >> (126 - e).
     * Below e = 102 (|f| < 2^-25, under half the smallest subnormal) that is 0. */
    uint32_t e = a >> 23;
    if (e < 102) return sign;
    uint32_t mant = (a & 0x7fffffu) | 0x800000u;
    uint32_t s = 126 - e; /* 14..24 */
    uint32_t h = mant >> s;
    uint32_t rem = mant & ((1u << s) - 1u), half = 1u << (s - 1);
    if (rem > half || (rem == half && (h & 1u))) h++; /* may become 0x400: 2^-14, right */
    return (uint16_t)(sign | h);
}

static inline float from_f16(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1f) return bits_f32(sign | 0x7f800000u | (m << 13)); /* inf, NaN */
    if (e != 0) return bits_f32(sign | ((e + 112u) << 23) | (m << 13));
    /* zero or subnormal: m x 2^-24, exact in float (a normal float there). */
    float v = (float)m * 0x1p-24f;
    return sign ? -v : v;
}

uint16_t si_wire_f32_to_bf16(float f) {
    return to_bf16(f);
}
float si_wire_bf16_to_f32(uint16_t h) {
    return from_bf16(h);
}
uint16_t si_wire_f32_to_f16(float f) {
    return to_f16(f);
}
float si_wire_f16_to_f32(uint16_t h) {
    return from_f16(h);
}

#if defined(__x86_64__)
#include <immintrin.h>
/* fp16 by the F16C instructions: 8 elements per instruction instead of ~3 ns
 * an element in C, which for a megabyte-sized band was milliseconds per hop.
 * vcvtps2ph rounds to nearest even and keeps NaNs quiet like to_f16 (checked
 * element by element in test_wire); the tails go through the C code. */
__attribute__((target("avx,f16c"))) static size_t pack_f16c(const float *src, size_t n,
                                                             uint8_t *dst) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128((__m128i *)(void *)(dst + 2 * i), h);
    }
    return i;
}

__attribute__((target("avx,f16c"))) static size_t unpack_f16c(const uint8_t *src, size_t n,
                                                               float *dst) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i,
                         _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(src + 2 * i))));
    return i;
}

/* SPLITINFER_SIMD=off: the C code only, as on a CPU without these
 * instructions (tests/run.sh runs test_wire so too). */
static int simd_allowed(void) {
    const char *v = getenv("SPLITINFER_SIMD");
    return !(v && !strcmp(v, "off"));
}

static int have_f16c(void) {
    static int known = -1; /* a benign race: every thread computes the same answer */
    if (known < 0)
        known = simd_allowed() && __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
    return known;
}
#else
static size_t pack_f16c(const float *src, size_t n, uint8_t *dst) { return (void)src, (void)n, (void)dst, 0; }
static size_t unpack_f16c(const uint8_t *src, size_t n, float *dst) { return (void)src, (void)n, (void)dst, 0; }
static int have_f16c(void) { return 0; }
#endif

void si_wire_pack_elems(si_wire_dtype_t dt, const float *src, size_t n, uint8_t *dst) {
    switch (dt) {
    case SI_WIRE_FP32: memcpy(dst, src, n * sizeof(float)); break;
    case SI_WIRE_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = to_bf16(src[i]);
            dst[2 * i] = (uint8_t)h, dst[2 * i + 1] = (uint8_t)(h >> 8);
        }
        break;
    case SI_WIRE_FP16:
        for (size_t i = have_f16c() ? pack_f16c(src, n, dst) : 0; i < n; i++) {
            uint16_t h = to_f16(src[i]);
            dst[2 * i] = (uint8_t)h, dst[2 * i + 1] = (uint8_t)(h >> 8);
        }
        break;
    }
}

void si_wire_unpack_elems(si_wire_dtype_t dt, const uint8_t *src, size_t n, float *dst) {
    switch (dt) {
    case SI_WIRE_FP32: memcpy(dst, src, n * sizeof(float)); break;
    case SI_WIRE_BF16:
        for (size_t i = 0; i < n; i++)
            dst[i] = from_bf16((uint16_t)(src[2 * i] | src[2 * i + 1] << 8));
        break;
    case SI_WIRE_FP16:
        for (size_t i = have_f16c() ? unpack_f16c(src, n, dst) : 0; i < n; i++)
            dst[i] = from_f16((uint16_t)(src[2 * i] | src[2 * i + 1] << 8));
        break;
    }
}

/* ---- the ZEROS encoding ---- */

size_t si_wire_zeros_bitmap(size_t n) { return n / 8 + (n % 8 != 0); }

static inline uint32_t load_u32(const uint8_t *p) {
    uint32_t x;
    memcpy(&x, p, sizeof x);
    return x;
}

#if defined(__x86_64__)
/* AVX-512 does a ZEROS block of 16 elements in a few instructions: a mask of
 * the nonzero ones, then a compress (encode) or expand (decode) by it. The
 * register forms with masked loads and stores: the memory form of vpcompressd
 * is microcoded on AMD Zen 4, and masked accesses never touch bytes past a
 * buffer's end. Both return how many elements they did (a multiple of 16); the
 * tail goes through the C code. */
__attribute__((target("avx512f"))) static size_t zeros_count_avx512(const float *src, size_t n,
                                                                    size_t *nnz) {
    size_t i = 0, c = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i v = _mm512_loadu_si512((const void *)(src + i));
        c += (size_t)__builtin_popcount(_mm512_test_epi32_mask(v, v));
    }
    *nnz = c;
    return i;
}

__attribute__((target("avx512f"))) static size_t zeros_pack_avx512(const float *src, size_t n,
                                                                   uint8_t *bm, uint8_t *vals,
                                                                   size_t *k) {
    size_t i = 0, j = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i v = _mm512_loadu_si512((const void *)(src + i));
        __mmask16 m = _mm512_test_epi32_mask(v, v);
        bm[i / 8] = (uint8_t)m, bm[i / 8 + 1] = (uint8_t)(m >> 8);
        int c = __builtin_popcount(m);
        _mm512_mask_storeu_epi32(vals + 4 * j, (__mmask16)((1u << c) - 1),
                                 _mm512_maskz_compress_epi32(m, v));
        j += (size_t)c;
    }
    *k = j;
    return i;
}

__attribute__((target("avx512f"))) static size_t zeros_unpack_avx512(const uint8_t *bm,
                                                                     const uint8_t *vals, size_t n,
                                                                     float *dst, size_t *k) {
    size_t i = 0, j = 0;
    for (; i + 16 <= n; i += 16) {
        __mmask16 m = (__mmask16)(bm[i / 8] | bm[i / 8 + 1] << 8);
        int c = __builtin_popcount(m);
        __m512i v = _mm512_maskz_loadu_epi32((__mmask16)((1u << c) - 1), vals + 4 * j);
        _mm512_storeu_si512((void *)(dst + i), _mm512_maskz_expand_epi32(m, v));
        j += (size_t)c;
    }
    *k = j;
    return i;
}

static int have_avx512(void) {
    static int known = -1; /* a benign race, as have_f16c */
    if (known < 0) known = simd_allowed() && __builtin_cpu_supports("avx512f");
    return known;
}
#else
static size_t zeros_count_avx512(const float *src, size_t n, size_t *nnz) {
    return (void)src, (void)n, *nnz = 0, 0;
}
static size_t zeros_pack_avx512(const float *src, size_t n, uint8_t *bm, uint8_t *vals, size_t *k) {
    return (void)src, (void)n, (void)bm, (void)vals, *k = 0, 0;
}
static size_t zeros_unpack_avx512(const uint8_t *bm, const uint8_t *vals, size_t n, float *dst,
                                  size_t *k) {
    return (void)bm, (void)vals, (void)n, (void)dst, *k = 0, 0;
}
static int have_avx512(void) { return 0; }
#endif

size_t si_wire_zeros_count(const float *src, size_t n) {
    size_t c = 0, i = have_avx512() ? zeros_count_avx512(src, n, &c) : 0;
    for (; i < n; i++) c += f32_bits(src[i]) != 0;
    return c;
}

/* The vector loops do whole blocks of 16 elements, which start on a bitmap
 * byte; the C loops carry on from there, bit by bit. */
size_t si_wire_zeros_pack(const float *src, size_t n, uint8_t *dst) {
    uint8_t *bm = dst, *vals = dst + si_wire_zeros_bitmap(n);
    size_t j = 0, i = have_avx512() ? zeros_pack_avx512(src, n, bm, vals, &j) : 0;
    for (; i < n; i++) {
        uint32_t x = f32_bits(src[i]);
        if (i % 8 == 0) bm[i / 8] = 0;
        if (x) {
            bm[i / 8] |= (uint8_t)(1u << (i % 8));
            memcpy(vals + 4 * j++, &x, 4);
        }
    }
    return si_wire_zeros_bitmap(n) + 4 * j;
}

int si_wire_zeros_check(const uint8_t *src, size_t len, size_t n) {
    size_t nb = si_wire_zeros_bitmap(n), c = 0;
    if (len < nb) return -1;
    size_t i = 0;
    for (; i + 4 <= nb; i += 4) c += (size_t)__builtin_popcount(load_u32(src + i));
    for (; i < nb; i++) c += (size_t)__builtin_popcount(src[i]);
    if (n % 8 && src[nb - 1] >> (n % 8)) return -1; /* a bit past the last element */
    return (len - nb) / 4 == c && (len - nb) % 4 == 0 ? 0 : -1;
}

void si_wire_zeros_unpack(const uint8_t *src, size_t n, float *dst) {
    const uint8_t *bm = src, *vals = src + si_wire_zeros_bitmap(n);
    size_t j = 0, i = have_avx512() ? zeros_unpack_avx512(bm, vals, n, dst, &j) : 0;
    for (; i < n; i++) {
        uint32_t x = 0;
        if (bm[i / 8] >> (i % 8) & 1) x = load_u32(vals + 4 * j++);
        dst[i] = bits_f32(x);
    }
}

void si_wire_tensor_floats(const si_wire_tensor_t *t, float *dst) {
    size_t n = (size_t)si_wire_tensor_numel(t);
    if (t->data)
        memcpy(dst, t->data, n * sizeof *dst);
    else if (t->encoding == SI_WIRE_ZEROS)
        si_wire_zeros_unpack(t->bytes, n, dst);
    else
        si_wire_unpack_elems(t->dtype, t->bytes, n, dst);
}

/* One 16-bit element of src as dt, little-endian. */
static inline uint16_t elem16(si_wire_dtype_t dt, float f) {
    return dt == SI_WIRE_BF16 ? to_bf16(f) : to_f16(f);
}

/* Writes wire bytes [off, off + len) of src as dt to dst. protobuf-c hands the
 * bytes field over in one piece today, but nothing promises that, so any byte
 * range works, including ones that split an element. */
static void put_elems(si_wire_dtype_t dt, const float *src, size_t off, size_t len, uint8_t *dst) {
    if (dt == SI_WIRE_FP32) {
        memcpy(dst, (const uint8_t *)src + off, len);
        return;
    }
    size_t i = off;
    if (len && (i & 1)) { /* starts on an element's high byte */
        *dst++ = (uint8_t)(elem16(dt, src[i / 2]) >> 8);
        i++, len--;
    }
    if (i % 2 == 0 && len >= 2) {
        si_wire_pack_elems(dt, src + i / 2, len / 2, dst);
        dst += len / 2 * 2, i += len / 2 * 2, len -= len / 2 * 2;
    }
    if (len) *dst = (uint8_t)elem16(dt, src[i / 2]); /* ends on a low byte */
}

/* ---- validation ---- */

/* "[1,64,56,56]" */
static const char *fmt_dims(int ndim, const int64_t *dims, char *buf, size_t len) {
    size_t n = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndim && n < len; i++)
        n += (size_t)snprintf(buf + n, len - n, "%s%lld", i ? "," : "", (long long)dims[i]);
    if (n < len) snprintf(buf + n, len - n, "]");
    return buf;
}

/* Checks ndim and dims and stores the element count; the product is checked
 * against the limit before each multiplication, so it cannot overflow. */
static int check_dims(int ndim, const int64_t *dims, int64_t *numel, const char *what,
                      si_err_t *err) {
    if (ndim != 2 && ndim != 4)
        return si_err_set(err, "%s: %d dims; want 4 (N,C,H,W) or 2 (N,C)", what, ndim);
    char b[128];
    int64_t n = 1, nz = 1; /* the product, and that of the dims other than a zero H */
    for (int i = 0; i < ndim; i++) {
        /* No rows is a shape check_row0 accepts from a from_held request
         * alone: the function holds every row the step needs. The other dims
         * stay bounded even then, so C x W never overflows a caller. */
        if (dims[i] < 0 || (dims[i] == 0 && !(ndim == 4 && i == 2)))
            return si_err_set(err, "%s: dims %s: dim %d is not > 0", what,
                              fmt_dims(ndim, dims, b, sizeof b), i);
        if (dims[i] && dims[i] > SI_WIRE_MAX_ELEMS / nz)
            return si_err_set(err, "%s: dims %s: more than %lld elements", what,
                              fmt_dims(ndim, dims, b, sizeof b), (long long)SI_WIRE_MAX_ELEMS);
        if (dims[i]) nz *= dims[i];
        n *= dims[i];
    }
    *numel = n;
    return 0;
}

int64_t si_wire_tensor_numel(const si_wire_tensor_t *t) {
    int64_t n;
    return t && check_dims(t->ndim, t->dims, &n, "", NULL) == 0 ? n : 0;
}

static int check_str(const char *s, const char *what, si_err_t *err) {
    if (s && strnlen(s, SI_WIRE_MAX_STR + 1) > SI_WIRE_MAX_STR)
        return si_err_set(err, "%s: longer than %d bytes", what, SI_WIRE_MAX_STR);
    return 0;
}

static int check_dtype(int dt, const char *what, si_err_t *err) {
    if (!si_wire_dtype_size((si_wire_dtype_t)dt))
        return si_err_set(err, "%s: unknown dtype %d (want 0 fp32, 1 bf16, 2 fp16)", what, dt);
    return 0;
}

static int check_layout(int layout, int ndim, const char *what, si_err_t *err) {
    if (layout != SI_WIRE_NCHW && layout != SI_WIRE_NHWC)
        return si_err_set(err, "%s: unknown layout %d (want 0 NCHW, 1 NHWC)", what, layout);
    if (layout == SI_WIRE_NHWC && ndim == 2)
        return si_err_set(err, "%s: layout NHWC for a 2-d tensor, which is NC", what);
    return 0;
}

/* Row 0 of a band and its height must leave every row an int32; a band of
 * no rows is only for rows0_ok (a from_held request). */
static int check_encoding(int enc, int dtype, const char *what, si_err_t *err) {
    if (enc != SI_WIRE_DENSE && enc != SI_WIRE_ZEROS)
        return si_err_set(err, "%s: unknown encoding %d (DENSE = 0, ZEROS = 1)", what, enc);
    if (enc == SI_WIRE_ZEROS && dtype != SI_WIRE_FP32)
        return si_err_set(err, "%s: ZEROS encodes float32 only, not %s", what,
                          si_wire_dtype_name((si_wire_dtype_t)dtype));
    return 0;
}

static int check_reply_encoding(int enc, si_err_t *err) {
    if (enc != SI_WIRE_DENSE && enc != SI_WIRE_ZEROS)
        return si_err_set(err, "StageRequest.reply_encoding: unknown encoding %d", enc);
    return 0;
}

static int check_row0(const si_wire_tensor_t *t, int32_t row0, int rows0_ok, const char *what,
                      si_err_t *err) {
    if (t->ndim == 4 && t->dims[2] == 0 && !rows0_ok)
        return si_err_set(err, "%s: a band whose dim 2 is not > 0 (only a from_held request "
                          "may carry no rows)", what);
    if (row0 < 0) return si_err_set(err, "%s: first row %d is negative", what, (int)row0);
    if (t->ndim == 2 && row0 != 0)
        return si_err_set(err, "%s: first row %d for a 2-d tensor, which has no rows", what,
                          (int)row0);
    if (t->ndim == 4 && (int64_t)row0 + t->dims[2] > INT32_MAX)
        return si_err_set(err, "%s: rows %d + %lld overflow int32", what, (int)row0,
                          (long long)t->dims[2]);
    return 0;
}

/* What a request may ask of its reply: either layout (a 2-d output is NC
 * whatever was asked). */
static int check_reply_layout(int layout, si_err_t *err) {
    return check_layout(layout, 4, "StageRequest.reply_layout", err);
}

/* Rows, and what a chain adds: its segments and whole tensors. */
static int check_request_rows(const si_wire_request_t *r, si_err_t *err) {
    if (check_row0(&r->input, r->input_row0, r->from_held, "StageRequest.input_row0", err)) return -1;
    int32_t b = r->out_row_begin, e = r->out_row_end;
    if (b < 0 || e < 0)
        return si_err_set(err, "StageRequest: output rows [%d, %d) negative", (int)b, (int)e);
    if (!(b == 0 && e == 0) && b >= e)
        return si_err_set(err, "StageRequest: output rows [%d, %d) empty (0, 0 means all rows)",
                          (int)b, (int)e);
    if (r->timeout_ms < 0) return si_err_set(err, "StageRequest: timeout_ms %d negative", (int)r->timeout_ms);
    if (r->n_then < 0 || r->n_then > SI_WIRE_MAX_CHAIN)
        return si_err_set(err, "StageRequest: %d chained segments; at most %d", r->n_then,
                          SI_WIRE_MAX_CHAIN);
    for (int i = 0; i < r->n_then; i++) {
        if (!r->then[i] || !r->then[i][0])
            return si_err_set(err, "StageRequest.then[%d]: empty segment", i);
        if (check_str(r->then[i], "StageRequest.then", err)) return -1;
    }
    if (r->n_then && (b || e))
        return si_err_set(err, "StageRequest: a chain passes whole tensors, not output rows [%d, %d)",
                          (int)b, (int)e);
    int32_t rb = r->reply_row_begin, re = r->reply_row_end;
    if (rb < 0 || re < 0 || (!(rb == 0 && re == 0) && rb >= re))
        return si_err_set(err, "StageRequest.resident: reply rows [%d, %d) negative or empty",
                          (int)rb, (int)re);
    if ((rb || re) && !r->hold)
        return si_err_set(err, "StageRequest.resident: reply rows [%d, %d) without hold: the rest "
                          "of the output would be lost", (int)rb, (int)re);
    if (r->n_then && (r->hold || r->from_held))
        return si_err_set(err, "StageRequest: a resident band is not chained");
    return 0;
}

uint64_t si_wire_timings_own_us(const si_wire_timings_t *t) {
    return t->decode_us + t->queue_us + t->compute_us + t->encode_us;
}

/* ---- packing ---- */

/* A ProtobufCBuffer that writes into a buffer sized by get_packed_size and
 * treats the bytes of the tensor (a range of the caller's floats) specially. */
typedef struct sink {
    ProtobufCBuffer base;  /* first, so protobuf-c's buffer pointer is ours */
    uint8_t *out;          /* packed bytes so far */
    size_t len, cap;       /* bytes in out, bytes it holds */
    const void *elems;     /* the caller's floats (their first elems_len bytes
                              stand for the tensor's bytes field), or its
                              elements already encoded (encoded) */
    size_t elems_len;      /* wire bytes of the tensor */
    si_wire_dtype_t dtype; /* how the elements travel */
    int encoded;           /* elems are wire bytes already: copied as they are */
    size_t zeros_n;        /* > 0: elems are that many floats, sent as ZEROS (elems_len
                              bytes, at most the floats' own: the range check holds) */
    int by_ref;            /* leave the elements where they are (iov) */
    size_t seen;           /* element bytes protobuf-c has handed over */
    int bad;               /* protobuf-c did something unexpected */
} sink_t;

static void sink_append(ProtobufCBuffer *b, size_t len, const uint8_t *data) {
    sink_t *s = (sink_t *)b;
    if (len == 0) return;
    uintptr_t p = (uintptr_t)data, e0 = (uintptr_t)s->elems;
    if (p >= e0 && p - e0 < s->elems_len) { /* tensor bytes */
        size_t off = (size_t)(p - e0);
        if (off != s->seen || len > s->elems_len - off) { /* out of order */
            s->bad = 1;
            return;
        }
        s->seen += len;
        if (s->by_ref) return; /* they stay in the caller's buffer */
        if (len > s->cap - s->len || (s->zeros_n && len != s->elems_len)) {
            s->bad = 1; /* ZEROS is encoded in one piece, as protobuf-c hands bytes over */
            return;
        }
        if (s->zeros_n)
            si_wire_zeros_pack(s->elems, s->zeros_n, s->out + s->len);
        else if (s->encoded)
            memcpy(s->out + s->len, (const uint8_t *)s->elems + off, len);
        else
            put_elems(s->dtype, s->elems, off, len, s->out + s->len);
        s->len += len;
        return;
    }
    /* The iov form is [header][elements]: nothing may follow them. The .proto
     * keeps the tensor last for exactly this. */
    if (len > s->cap - s->len || (s->by_ref && s->seen)) {
        s->bad = 1;
        return;
    }
    memcpy(s->out + s->len, data, len);
    s->len += len;
}

/* Sets up pb to pack t. The bytes field points at t->bytes when the caller has
 * the elements encoded already; else at the caller's floats: for fp32 they are
 * the bytes to send; for bf16/fp16 the first half of them stands in for the
 * converted elements, which the sink produces as protobuf-c reaches them
 * (pack_to_buffer never reads a bytes field itself). */
static int tensor_to_pb(const si_wire_tensor_t *t, Splitinfer__Tensor *pb, size_t *zeros_n,
                        const char *what, si_err_t *err) {
    int64_t numel;
    if (check_dims(t->ndim, t->dims, &numel, what, err)) return -1;
    if (check_dtype((int)t->dtype, what, err)) return -1;
    if (check_layout((int)t->layout, t->ndim, what, err)) return -1;
    if (check_encoding((int)t->encoding, (int)t->dtype, what, err)) return -1;
    if (!t->data && !t->bytes) return si_err_set(err, "%s: no data", what);
    splitinfer__tensor__init(pb);
    pb->n_dims = (size_t)t->ndim;
    pb->dims = (int64_t *)t->dims; /* protobuf-c's fields are not const; packing only reads */
    pb->dtype = (Splitinfer__Tensor__DType)t->dtype;
    pb->layout = (Splitinfer__Tensor__Layout)t->layout;
    pb->data.data = (uint8_t *)(t->bytes ? t->bytes : (const void *)t->data);
    pb->data.len = (size_t)numel * si_wire_dtype_size(t->dtype);
    *zeros_n = 0;
    if (t->encoding != SI_WIRE_ZEROS) return 0;
    if (t->bytes) { /* encoded already: sent as they are, once checked */
        if (si_wire_zeros_check(t->bytes, t->nbytes, (size_t)numel) < 0)
            return si_err_set(err, "%s: %zu bytes are not a ZEROS encoding of %lld elements", what,
                              t->nbytes, (long long)numel);
        pb->encoding = SPLITINFER__TENSOR__ENCODING__ZEROS;
        pb->data.len = t->nbytes;
        return 0;
    }
    /* From floats: ZEROS only where it saves a sixteenth of the bytes; the
     * count costs a read of the elements, cheap next to sending them. */
    size_t zlen = si_wire_zeros_bitmap((size_t)numel) + 4 * si_wire_zeros_count(t->data, (size_t)numel);
    if (numel == 0 || zlen > pb->data.len - pb->data.len / 16) return 0;
    pb->encoding = SPLITINFER__TENSOR__ENCODING__ZEROS;
    pb->data.len = zlen;
    *zeros_n = (size_t)numel;
    return 0;
}

/* Packs msg whose tensor is t. With iov NULL: one malloc'd buffer in *out, *len.
 * With iov: fp32 or already encoded elements by reference, the rest in
 * iov->owned. */
static int pack(const ProtobufCMessage *msg, const si_wire_tensor_t *t,
                const Splitinfer__Tensor *pb, size_t zeros_n, uint8_t **out, size_t *len,
                si_wire_packed_t *iov, si_err_t *err) {
    sink_t s = {.base = {.append = sink_append},
                .elems = pb->data.data,
                .elems_len = pb->data.len,
                .dtype = t->dtype,
                .encoded = t->bytes != NULL,
                .zeros_n = zeros_n,
                .by_ref = iov && !zeros_n && (t->dtype == SI_WIRE_FP32 || t->bytes)};
    size_t total = protobuf_c_message_get_packed_size(msg);
    s.cap = s.by_ref ? total - s.elems_len : total;
    s.out = malloc(s.cap ? s.cap : 1);
    if (!s.out) return si_err_set(err, "out of memory packing %zu bytes", total);
    protobuf_c_message_pack_to_buffer(msg, &s.base);
    if (s.bad || s.len != s.cap || s.seen != s.elems_len) {
        free(s.out);
        return si_err_set(err, "protobuf-c packed %s in an unexpected shape (%zu of %zu bytes)",
                          msg->descriptor->short_name, s.len, s.cap);
    }
    if (!iov) {
        *out = s.out, *len = total;
        return 0;
    }
    memset(iov, 0, sizeof *iov);
    iov->owned = s.out;
    iov->len = total;
    iov->iov[0] = (struct iovec){.iov_base = s.out, .iov_len = s.len};
    iov->iovcnt = 1;
    if (s.by_ref) /* the one place a const buffer becomes an iovec's void * */
        iov->iov[iov->iovcnt++] =
            (struct iovec){.iov_base = (void *)s.elems, .iov_len = s.elems_len};
    return 0;
}

static int request_to_pb(const si_wire_request_t *r, Splitinfer__StageRequest *m,
                         Splitinfer__Tensor *t, Splitinfer__Resident *res, size_t *zeros_n,
                         si_err_t *err) {
    if (!r) return si_err_set(err, "StageRequest: NULL");
    if (check_str(r->request_id, "StageRequest.request_id", err) ||
        check_str(r->segment, "StageRequest.segment", err) ||
        check_dtype((int)r->reply_dtype, "StageRequest.reply_dtype", err) ||
        check_reply_layout(r->reply_layout, err) || check_reply_encoding((int)r->reply_encoding, err) ||
        tensor_to_pb(&r->input, t, zeros_n, "StageRequest.input", err) || check_request_rows(r, err))
        return -1;
    splitinfer__stage_request__init(m);
    m->request_id = (char *)(r->request_id ? r->request_id : protobuf_c_empty_string);
    m->segment = (char *)(r->segment ? r->segment : protobuf_c_empty_string);
    m->input_row0 = r->input_row0;
    m->out_row_begin = r->out_row_begin;
    m->out_row_end = r->out_row_end;
    m->reply_dtype = (Splitinfer__Tensor__DType)r->reply_dtype;
    m->reply_layout = (Splitinfer__Tensor__Layout)r->reply_layout;
    m->reply_encoding = (Splitinfer__Tensor__Encoding)r->reply_encoding;
    m->n_then = (size_t)r->n_then;
    m->then = (char **)r->then; /* packing only reads */
    m->timeout_ms = r->timeout_ms;
    if (r->hold || r->from_held) {
        splitinfer__resident__init(res);
        res->hold = r->hold != 0;
        res->from_held = r->from_held != 0;
        res->reply_row_begin = r->reply_row_begin;
        res->reply_row_end = r->reply_row_end;
        m->resident = res;
    }
    m->input = t;
    return 0;
}

static void timings_to_pb(const si_wire_timings_t *t, Splitinfer__Timings *tm) {
    splitinfer__timings__init(tm);
    tm->decode_us = t->decode_us;
    tm->queue_us = t->queue_us;
    tm->compute_us = t->compute_us;
    tm->encode_us = t->encode_us;
    tm->forward_us = t->forward_us;
}

static void timings_from_pb(const Splitinfer__Timings *tm, si_wire_timings_t *t) {
    *t = (si_wire_timings_t){tm->decode_us, tm->queue_us, tm->compute_us, tm->encode_us,
                             tm->forward_us};
}

/* A reply's timings as protobuf-c wants them: [0] its own, [1..] the chain's,
 * with chainp pointing at [1..]. */
typedef struct reply_timings {
    Splitinfer__Timings t[1 + SI_WIRE_MAX_CHAIN];
    Splitinfer__Timings *chainp[SI_WIRE_MAX_CHAIN];
} reply_timings_t;

static int reply_to_pb(const si_wire_reply_t *r, Splitinfer__StageReply *m, reply_timings_t *tm,
                       Splitinfer__Tensor *t, size_t *zeros_n, si_err_t *err) {
    if (!r) return si_err_set(err, "StageReply: NULL");
    if (check_str(r->request_id, "StageReply.request_id", err) ||
        tensor_to_pb(&r->output, t, zeros_n, "StageReply.output", err) ||
        check_row0(&r->output, r->out_row0, 0, "StageReply.out_row0", err))
        return -1;
    if (r->n_chain < 0 || r->n_chain > SI_WIRE_MAX_CHAIN)
        return si_err_set(err, "StageReply: %d chained timings; at most %d", r->n_chain,
                          SI_WIRE_MAX_CHAIN);
    timings_to_pb(&r->timings, &tm->t[0]);
    for (int i = 0; i < r->n_chain; i++) {
        timings_to_pb(&r->chain[i], &tm->t[1 + i]);
        tm->chainp[i] = &tm->t[1 + i];
    }
    splitinfer__stage_reply__init(m);
    m->request_id = (char *)(r->request_id ? r->request_id : protobuf_c_empty_string);
    m->out_row0 = r->out_row0;
    m->timings = &tm->t[0];
    m->n_chain = (size_t)r->n_chain;
    m->chain = tm->chainp;
    m->output = t;
    return 0;
}

int si_wire_encode_request(const si_wire_request_t *req, uint8_t **out, size_t *len,
                           si_err_t *err) {
    Splitinfer__StageRequest m;
    Splitinfer__Tensor t;
    Splitinfer__Resident res;
    size_t zn;
    if (request_to_pb(req, &m, &t, &res, &zn, err)) return -1;
    return pack(&m.base, &req->input, &t, zn, out, len, NULL, err);
}

int si_wire_encode_request_iov(const si_wire_request_t *req, si_wire_packed_t *out, si_err_t *err) {
    Splitinfer__StageRequest m;
    Splitinfer__Tensor t;
    Splitinfer__Resident res;
    size_t zn;
    if (request_to_pb(req, &m, &t, &res, &zn, err)) return -1;
    return pack(&m.base, &req->input, &t, zn, NULL, NULL, out, err);
}

int si_wire_encode_reply(const si_wire_reply_t *rep, uint8_t **out, size_t *len, si_err_t *err) {
    Splitinfer__StageReply m;
    reply_timings_t tm;
    Splitinfer__Tensor t;
    size_t zn;
    if (reply_to_pb(rep, &m, &tm, &t, &zn, err)) return -1;
    return pack(&m.base, &rep->output, &t, zn, out, len, NULL, err);
}

int si_wire_encode_reply_iov(const si_wire_reply_t *rep, si_wire_packed_t *out, si_err_t *err) {
    Splitinfer__StageReply m;
    reply_timings_t tm;
    Splitinfer__Tensor t;
    size_t zn;
    if (reply_to_pb(rep, &m, &tm, &t, &zn, err)) return -1;
    return pack(&m.base, &rep->output, &t, zn, NULL, NULL, out, err);
}

void si_wire_packed_free(si_wire_packed_t *p) {
    if (!p) return;
    free(p->owned);
    memset(p, 0, sizeof *p);
}

/* ---- unpacking ---- */

/* Validates a tensor's parts and points v at its elements: straight at bytes
 * for aligned fp32, else converted into scratch or a malloc'd array (unless
 * opts->raw: then only bytes). */
static int tensor_from_parts(size_t ndims, const int64_t *dims, int dtype, int layout, int enc,
                             const uint8_t *bytes, size_t nbytes, si_wire_tensor_t *v,
                             si_wire_owned_t *own, const si_wire_decode_opts_t *opts,
                             const char *what, si_err_t *err) {
    if (ndims != 2 && ndims != 4)
        return si_err_set(err, "%s: %zu dims; want 4 (N,C,H,W) or 2 (N,C)", what, ndims);
    int64_t numel;
    if (check_dims((int)ndims, dims, &numel, what, err)) return -1;
    if (check_dtype(dtype, what, err)) return -1;
    if (check_layout(layout, (int)ndims, what, err)) return -1;
    if (check_encoding(enc, dtype, what, err)) return -1;
    si_wire_dtype_t dt = (si_wire_dtype_t)dtype;
    size_t want = (size_t)numel * si_wire_dtype_size(dt);
    if (enc == SI_WIRE_ZEROS) {
        if (si_wire_zeros_check(bytes, nbytes, (size_t)numel) < 0) {
            char b[128];
            return si_err_set(err, "%s: %zu data bytes are not a ZEROS encoding of dims %s", what,
                              nbytes, fmt_dims((int)ndims, dims, b, sizeof b));
        }
    } else if (nbytes != want) {
        char b[128];
        return si_err_set(err, "%s: %zu data bytes, but dims %s as %s need %zu", what, nbytes,
                          fmt_dims((int)ndims, dims, b, sizeof b), si_wire_dtype_name(dt), want);
    }
    memset(v, 0, sizeof *v);
    v->ndim = (int)ndims;
    memcpy(v->dims, dims, ndims * sizeof *dims);
    v->dtype = dt;
    v->layout = (si_wire_layout_t)layout;
    v->encoding = (si_wire_encoding_t)enc;
    v->bytes = bytes;
    v->nbytes = nbytes;
    if (enc == SI_WIRE_DENSE && dt == SI_WIRE_FP32 && (uintptr_t)bytes % _Alignof(float) == 0) {
        v->data = (const float *)(const void *)bytes; /* zero copy */
        return 0;
    }
    if (opts && opts->raw) return 0; /* data NULL: see bytes */
    /* A deliberate copy: the engine needs aligned float32. */
    float *dst = NULL;
    if (opts && opts->scratch && opts->scratch_cap >= (size_t)numel) {
        dst = opts->scratch;
    } else {
        dst = malloc((size_t)numel * sizeof *dst);
        if (!dst)
            return si_err_set(err, "%s: out of memory for %lld floats", what, (long long)numel);
        own->floats = dst;
    }
    si_wire_tensor_floats(v, dst); /* v->data is still NULL: from bytes, as encoded */
    v->data = dst;
    return 0;
}

static int tensor_from_pb(const Splitinfer__Tensor *pb, si_wire_tensor_t *v, si_wire_owned_t *own,
                          const si_wire_decode_opts_t *opts, const char *what, si_err_t *err) {
    if (!pb) return si_err_set(err, "%s: missing", what);
    return tensor_from_parts(pb->n_dims, pb->dims, (int)pb->dtype, (int)pb->layout,
                             (int)pb->encoding, pb->data.data, pb->data.len, v, own, opts, what,
                             err);
}

static void owned_free(si_wire_owned_t *o) {
    if (o->msg) protobuf_c_message_free_unpacked(o->msg, o->alloc);
    free(o->floats);
    free(o->strs);
}

/* ---- the fast reader ----
 *
 * protobuf-c copies every bytes field when it unpacks: for a tensor, megabytes
 * per hop. The *_view decoders read the canonical encoding of our two
 * messages directly (what si_wire_encode_* and any proto3 encoder write:
 * known fields, packed dims) and point the tensor view into the caller's
 * buffer. Anything else - unknown fields, unpacked dims, a field twice - goes
 * to the protobuf-c decoder, which decides and words the error. */

typedef struct rd {
    const uint8_t *p, *end;
} rd_t;

static int rd_varint(rd_t *r, uint64_t *v) {
    uint64_t x = 0;
    for (int shift = 0; shift < 64 && r->p < r->end; shift += 7) {
        uint8_t b = *r->p++;
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -1;
}

/* Next field: its number, wire type, and for LEN fields the payload. */
static int rd_field(rd_t *r, uint32_t *num, int *wire, uint64_t *val, const uint8_t **pl) {
    uint64_t key;
    if (rd_varint(r, &key) < 0 || key >> 32) return -1;
    *num = (uint32_t)(key >> 3), *wire = (int)(key & 7);
    if (*wire == 0) return rd_varint(r, val);
    if (*wire != 2 || rd_varint(r, val) < 0 || *val > (uint64_t)(r->end - r->p)) return -1;
    *pl = r->p;
    r->p += *val;
    return 0;
}

typedef struct raw_tensor {
    size_t ndims;
    int64_t dims[4];
    int dtype, layout, encoding;
    const uint8_t *data;
    size_t len;
} raw_tensor_t;

static int rd_tensor(const uint8_t *p, size_t n, raw_tensor_t *t) {
    rd_t r = {p, p + n};
    unsigned seen = 0;
    memset(t, 0, sizeof *t);
    while (r.p < r.end) {
        uint32_t num;
        int wire;
        uint64_t v = 0;
        const uint8_t *pl = NULL;
        if (rd_field(&r, &num, &wire, &v, &pl) < 0 || num < 1 || num == 3 || (num > 5 && num < 15) ||
            num > 15 || (seen & (1u << num)))
            return -1;
        seen |= 1u << num;
        if (num == 1) { /* packed dims */
            if (wire != 2) return -1;
            rd_t d = {pl, pl + v};
            while (d.p < d.end) {
                uint64_t x;
                if (t->ndims == 4 || rd_varint(&d, &x) < 0) return -1;
                t->dims[t->ndims++] = (int64_t)x;
            }
        } else if (num == 2 || num == 4 || num == 5) {
            if (wire != 0 || v > 1000) return -1;
            *(num == 2 ? &t->dtype : num == 4 ? &t->layout : &t->encoding) = (int)v;
        } else {
            if (wire != 2) return -1;
            t->data = pl, t->len = (size_t)v;
        }
    }
    return 0;
}

/* The strings of a *_view decode, owned by the decoded struct: request_id,
 * segment and then[], each NUL-terminated. */
typedef struct str_pool {
    const char *then[SI_WIRE_MAX_CHAIN];
    size_t used;
    char bytes[(2 + SI_WIRE_MAX_CHAIN) * (SI_WIRE_MAX_STR + 1)];
} str_pool_t;

static int rd_string(const uint8_t *pl, uint64_t len, char **dst, str_pool_t *pool) {
    if (len > SI_WIRE_MAX_STR || memchr(pl, 0, len)) return -1;
    *dst = pool->bytes + pool->used;
    memcpy(*dst, pl, len);
    (*dst)[len] = 0;
    pool->used += len + 1;
    return 0;
}

/* Reads a message of varint fields 1..n (Timings, Resident) into v[0..n),
 * each at most once; v is zeroed first (proto3: absent is 0). */
static int rd_varints(const uint8_t *p, size_t len, uint64_t *v, int n) {
    rd_t r = {p, p + len};
    unsigned seen = 0;
    memset(v, 0, (size_t)n * sizeof *v);
    while (r.p < r.end) {
        uint32_t num;
        int wire;
        uint64_t x = 0;
        const uint8_t *pl;
        if (rd_field(&r, &num, &wire, &x, &pl) < 0 || wire != 0 || num < 1 || num > (uint32_t)n ||
            (seen & (1u << num)))
            return -1;
        seen |= 1u << num;
        v[num - 1] = x;
    }
    return 0;
}

/* Reads a Resident message into q's resident fields. */
static int rd_resident(const uint8_t *p, size_t n, si_wire_request_t *q) {
    uint64_t v[4];
    if (rd_varints(p, n, v, 4) < 0 || v[0] > 1 || v[1] > 1) return -1;
    q->hold = (int)v[0], q->from_held = (int)v[1];
    q->reply_row_begin = (int32_t)v[2], q->reply_row_end = (int32_t)v[3];
    return 0;
}

/* Reads a StageRequest; 0 and the parts, or -1 when it is not canonical. */
static int rd_request(const uint8_t *buf, size_t len, si_wire_request_t *q, raw_tensor_t *t,
                      str_pool_t *pool) {
    rd_t r = {buf, buf + len};
    unsigned seen = 0;
    char *id = NULL, *seg = NULL, *then;
    int have_tensor = 0;
    while (r.p < r.end) {
        uint32_t num;
        int wire;
        uint64_t v = 0;
        const uint8_t *pl = NULL;
        if (rd_field(&r, &num, &wire, &v, &pl) < 0 || num < 1 || num > 15 || num == 7 ||
            (num > 12 && num < 15) || (num != 8 && (seen & (1u << num))))
            return -1;
        seen |= 1u << num;
        if ((num <= 2 || num == 8 || num == 11 || num == 15) != (wire == 2)) return -1;
        switch (num) {
        case 1: if (rd_string(pl, v, &id, pool) < 0) return -1; break;
        case 2: if (rd_string(pl, v, &seg, pool) < 0) return -1; break;
        case 3: q->input_row0 = (int32_t)v; break;
        case 4: q->out_row_begin = (int32_t)v; break;
        case 5: q->out_row_end = (int32_t)v; break;
        case 6: if (v > 1000) return -1; q->reply_dtype = (si_wire_dtype_t)v; break;
        case 8:
            if (q->n_then == SI_WIRE_MAX_CHAIN || rd_string(pl, v, &then, pool) < 0) return -1;
            pool->then[q->n_then++] = then;
            break;
        case 9: q->timeout_ms = (int32_t)v; break;
        case 10: if (v > 1000) return -1; q->reply_layout = (si_wire_layout_t)v; break;
        case 11: if (rd_resident(pl, (size_t)v, q) < 0) return -1; break;
        case 12: if (v > 1000) return -1; q->reply_encoding = (si_wire_encoding_t)v; break;
        case 15: if (rd_tensor(pl, (size_t)v, t) < 0) return -1; have_tensor = 1; break;
        }
    }
    if (!have_tensor) return -1;
    q->request_id = id ? id : "";
    q->segment = seg ? seg : "";
    q->then = pool->then;
    return 0;
}

/* Reads a Timings message. */
static int rd_timings(const uint8_t *p, size_t n, si_wire_timings_t *t) {
    uint64_t v[5];
    if (rd_varints(p, n, v, 5) < 0) return -1;
    *t = (si_wire_timings_t){v[0], v[1], v[2], v[3], v[4]};
    return 0;
}

static int rd_reply(const uint8_t *buf, size_t len, si_wire_reply_t *q, raw_tensor_t *t,
                    str_pool_t *pool) {
    rd_t r = {buf, buf + len};
    unsigned seen = 0;
    char *id = NULL;
    int have_tensor = 0;
    while (r.p < r.end) {
        uint32_t num;
        int wire;
        uint64_t v = 0;
        const uint8_t *pl = NULL;
        if (rd_field(&r, &num, &wire, &v, &pl) < 0 || num < 1 || num == 4 || (num > 5 && num < 15) ||
            num > 15 || (num != 5 && (seen & (1u << num))))
            return -1;
        seen |= 1u << num;
        if ((num != 2) != (wire == 2)) return -1;
        if (num == 1 && rd_string(pl, v, &id, pool) < 0) return -1;
        if (num == 2) q->out_row0 = (int32_t)v;
        if (num == 3 && rd_timings(pl, (size_t)v, &q->timings) < 0) return -1;
        if (num == 5 &&
            (q->n_chain == SI_WIRE_MAX_CHAIN || rd_timings(pl, (size_t)v, &q->chain[q->n_chain++]) < 0))
            return -1;
        if (num == 15) {
            if (rd_tensor(pl, (size_t)v, t) < 0) return -1;
            have_tensor = 1;
        }
    }
    if (!have_tensor) return -1;
    q->request_id = id ? id : "";
    return 0;
}

int si_wire_decode_request_view(const void *buf, size_t len, si_wire_request_t *req,
                                const si_wire_decode_opts_t *opts, si_err_t *err) {
    raw_tensor_t t;
    str_pool_t *pool = malloc(sizeof *pool);
    if (pool) pool->used = 0;
    memset(req, 0, sizeof *req);
    if (!pool || !buf || rd_request(buf, len, req, &t, pool) < 0) {
        free(pool);
        return si_wire_decode_request(buf, len, req, opts, err);
    }
    req->owned.strs = pool;
    if (check_dtype((int)req->reply_dtype, "StageRequest.reply_dtype", err) ||
        check_reply_layout((int)req->reply_layout, err) ||
        check_reply_encoding((int)req->reply_encoding, err) ||
        tensor_from_parts(t.ndims, t.dims, t.dtype, t.layout, t.encoding, t.data, t.len, &req->input,
                          &req->owned, opts, "StageRequest.input", err) ||
        check_request_rows(req, err)) {
        si_wire_request_free(req);
        return -1;
    }
    return 0;
}

int si_wire_decode_reply_view(const void *buf, size_t len, si_wire_reply_t *rep,
                              const si_wire_decode_opts_t *opts, si_err_t *err) {
    raw_tensor_t t;
    str_pool_t *pool = malloc(sizeof *pool);
    if (pool) pool->used = 0;
    memset(rep, 0, sizeof *rep);
    if (!pool || !buf || rd_reply(buf, len, rep, &t, pool) < 0) {
        free(pool);
        return si_wire_decode_reply(buf, len, rep, opts, err);
    }
    rep->owned.strs = pool;
    if (tensor_from_parts(t.ndims, t.dims, t.dtype, t.layout, t.encoding, t.data, t.len, &rep->output,
                          &rep->owned, opts, "StageReply.output", err) ||
        check_row0(&rep->output, rep->out_row0, 0, "StageReply.out_row0", err)) {
        si_wire_reply_free(rep);
        return -1;
    }
    return 0;
}

int si_wire_decode_request(const void *buf, size_t len, si_wire_request_t *req,
                           const si_wire_decode_opts_t *opts, si_err_t *err) {
    static const uint8_t empty[1];
    memset(req, 0, sizeof *req);
    if (!buf) {
        if (len) return si_err_set(err, "StageRequest: NULL buffer of %zu bytes", len);
        buf = empty;
    }
    ProtobufCAllocator *alloc = opts ? opts->alloc : NULL;
    Splitinfer__StageRequest *m = splitinfer__stage_request__unpack(alloc, len, buf);
    if (!m)
        return si_err_set(err, "StageRequest: malformed or truncated protobuf (%zu bytes)", len);
    req->owned.msg = m;
    req->owned.alloc = alloc;
    req->request_id = m->request_id;
    req->segment = m->segment;
    req->input_row0 = m->input_row0;
    req->out_row_begin = m->out_row_begin;
    req->out_row_end = m->out_row_end;
    req->reply_dtype = (si_wire_dtype_t)m->reply_dtype;
    req->reply_layout = (si_wire_layout_t)m->reply_layout;
    req->reply_encoding = (si_wire_encoding_t)m->reply_encoding;
    req->then = (const char *const *)m->then;
    req->n_then = m->n_then > SI_WIRE_MAX_CHAIN ? SI_WIRE_MAX_CHAIN + 1 : (int)m->n_then;
    req->timeout_ms = m->timeout_ms;
    if (m->resident) {
        req->hold = m->resident->hold;
        req->from_held = m->resident->from_held;
        req->reply_row_begin = m->resident->reply_row_begin;
        req->reply_row_end = m->resident->reply_row_end;
    }
    if (check_str(m->request_id, "StageRequest.request_id", err) ||
        check_str(m->segment, "StageRequest.segment", err) ||
        check_dtype((int)m->reply_dtype, "StageRequest.reply_dtype", err) ||
        check_reply_layout((int)m->reply_layout, err) ||
        check_reply_encoding((int)m->reply_encoding, err) ||
        tensor_from_pb(m->input, &req->input, &req->owned, opts, "StageRequest.input", err) ||
        check_request_rows(req, err)) {
        si_wire_request_free(req);
        return -1;
    }
    return 0;
}

void si_wire_request_free(si_wire_request_t *req) {
    if (!req) return;
    owned_free(&req->owned);
    memset(req, 0, sizeof *req);
}

int si_wire_decode_reply(const void *buf, size_t len, si_wire_reply_t *rep,
                         const si_wire_decode_opts_t *opts, si_err_t *err) {
    static const uint8_t empty[1];
    memset(rep, 0, sizeof *rep);
    if (!buf) {
        if (len) return si_err_set(err, "StageReply: NULL buffer of %zu bytes", len);
        buf = empty;
    }
    ProtobufCAllocator *alloc = opts ? opts->alloc : NULL;
    Splitinfer__StageReply *m = splitinfer__stage_reply__unpack(alloc, len, buf);
    if (!m) return si_err_set(err, "StageReply: malformed or truncated protobuf (%zu bytes)", len);
    rep->owned.msg = m;
    rep->owned.alloc = alloc;
    rep->request_id = m->request_id;
    rep->out_row0 = m->out_row0;
    if (m->timings) timings_from_pb(m->timings, &rep->timings);
    if (m->n_chain > SI_WIRE_MAX_CHAIN) {
        si_wire_reply_free(rep);
        return si_err_set(err, "StageReply: %zu chained timings; at most %d", m->n_chain,
                          SI_WIRE_MAX_CHAIN);
    }
    for (size_t i = 0; i < m->n_chain; i++) timings_from_pb(m->chain[i], &rep->chain[i]);
    rep->n_chain = (int)m->n_chain;
    if (check_str(m->request_id, "StageReply.request_id", err) ||
        tensor_from_pb(m->output, &rep->output, &rep->owned, opts, "StageReply.output", err) ||
        check_row0(&rep->output, rep->out_row0, 0, "StageReply.out_row0", err)) {
        si_wire_reply_free(rep);
        return -1;
    }
    return 0;
}

void si_wire_reply_free(si_wire_reply_t *rep) {
    if (!rep) return;
    owned_free(&rep->owned);
    memset(rep, 0, sizeof *rep);
}
