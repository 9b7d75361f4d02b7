/* test_wire.c - StageRequest / StageReply packing and the bf16 / fp16
 * conversions: exact round trips, rounding checked against independent
 * references (the compiler's _Float16, a bf16 rounding done in double), zero
 * copy asserted on pointers, and every malformed input we can think of (and
 * many we cannot: random bytes, mutations, every truncation) refused cleanly. */
#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <protobuf-c/protobuf-c.h>

#include "splitinfer.pb-c.h"
#include "wire.h"

static uint32_t rng = 12345;
static uint32_t rnd(void) { /* xorshift32: reproducible */
    rng ^= rng << 13, rng ^= rng >> 17, rng ^= rng << 5;
    return rng;
}
static float frand(float scale) {
    return ((float)(rnd() >> 8) / (float)(1u << 24) * 2 - 1) * scale;
}

static uint32_t bits(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    return x;
}
static float from_bits(uint32_t x) {
    float f;
    memcpy(&f, &x, 4);
    return f;
}

static int is_f16_nan(uint16_t h) {
    return (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
}
static int is_bf16_nan(uint16_t h) {
    return (h & 0x7f80) == 0x7f80 && (h & 0x7f);
}

/* A [1,2,3,4] request (plus specials for fp32) for message tests. */
static float small[24];
static void fill_small(int specials) {
    for (int i = 0; i < 24; i++) small[i] = frand(3);
    if (specials) {
        small[0] = -0.0f, small[1] = INFINITY, small[2] = -INFINITY;
        small[3] = from_bits(0x7fc01234), small[4] = FLT_MIN / 8, small[5] = FLT_MAX;
    }
}

static si_wire_request_t small_request(si_wire_dtype_t dt) {
    si_wire_request_t r = {.request_id = "req-42", .segment = "layer2.1..head"};
    r.input = (si_wire_tensor_t){.ndim = 4, .dims = {1, 2, 3, 4}, .data = small, .dtype = dt};
    r.input_row0 = 5, r.out_row_begin = 2, r.out_row_end = 7, r.reply_dtype = SI_WIRE_FP16;
    return r;
}

/* ---- dtypes and conversions ---- */

static void test_dtype_names(void **state) {
    (void)state;
    si_wire_dtype_t dt = SI_WIRE_FP32;
    si_err_t err = {""};
    assert_int_equal(si_wire_dtype_parse("bf16", &dt, &err), 0);
    assert_int_equal(dt, SI_WIRE_BF16);
    assert_int_equal(si_wire_dtype_parse("fp16", &dt, &err), 0);
    assert_int_equal(dt, SI_WIRE_FP16);
    assert_int_equal(si_wire_dtype_parse("fp32", &dt, &err), 0);
    assert_int_equal(dt, SI_WIRE_FP32);
    assert_int_equal(si_wire_dtype_parse("float64", &dt, &err), -1);
    assert_non_null(strstr(err.msg, "float64"));
    err.msg[0] = '\0';
    assert_int_equal(si_wire_dtype_parse(NULL, &dt, &err), -1);
    assert_true(err.msg[0] != '\0');
    assert_int_equal(si_wire_dtype_parse("FP32", &dt, NULL), -1); /* NULL err is fine */
    assert_string_equal(si_wire_dtype_name(SI_WIRE_BF16), "bf16");
    assert_string_equal(si_wire_dtype_name((si_wire_dtype_t)7), "?");
    assert_int_equal(si_wire_dtype_size(SI_WIRE_FP32), 4);
    assert_int_equal(si_wire_dtype_size(SI_WIRE_FP16), 2);
    assert_int_equal(si_wire_dtype_size((si_wire_dtype_t)-1), 0);
}

static void test_f16_cases(void **state) {
    (void)state;
    /* the largest half, and the rounding around it */
    assert_int_equal(si_wire_f32_to_f16(65504.0f), 0x7bff);
    assert_true(si_wire_f16_to_f32(0x7bff) == 65504.0f);
    assert_int_equal(si_wire_f32_to_f16(65519.0f), 0x7bff);
    assert_int_equal(si_wire_f32_to_f16(65520.0f), 0x7c00); /* tie, odd -> up -> inf */
    assert_int_equal(si_wire_f32_to_f16(-1e6f), 0xfc00);
    assert_int_equal(si_wire_f32_to_f16(FLT_MAX), 0x7c00);
    /* ones, signed zeros */
    assert_int_equal(si_wire_f32_to_f16(1.0f), 0x3c00);
    assert_int_equal(si_wire_f32_to_f16(-2.0f), 0xc000);
    assert_int_equal(si_wire_f32_to_f16(0.0f), 0x0000);
    assert_int_equal(si_wire_f32_to_f16(-0.0f), 0x8000);
    assert_true(signbit(si_wire_f16_to_f32(0x8000)));
    /* ties to even among normals: 1 + 2^-11 is halfway between 1 and 1 + 2^-10 */
    assert_int_equal(si_wire_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);
    assert_int_equal(si_wire_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);
    assert_int_equal(si_wire_f32_to_f16(1.0f + 0x1p-11f + 0x1p-20f), 0x3c01);
    /* subnormals: smallest 2^-24, ties at odd multiples of 2^-25 */
    assert_int_equal(si_wire_f32_to_f16(0x1p-24f), 0x0001);
    assert_true(si_wire_f16_to_f32(0x0001) == 0x1p-24f);
    assert_int_equal(si_wire_f32_to_f16(0x1p-25f), 0x0000); /* tie -> even 0 */
    assert_int_equal(si_wire_f32_to_f16(-0x1p-25f), 0x8000);
    assert_int_equal(si_wire_f32_to_f16(0x1.0001p-25f), 0x0001);       /* just above the tie */
    assert_int_equal(si_wire_f32_to_f16(3 * 0x1p-25f), 0x0002);        /* tie -> even 2 */
    assert_int_equal(si_wire_f32_to_f16(1e-8f), 0x0000);               /* under half of 2^-24 */
    assert_int_equal(si_wire_f32_to_f16(1e-7f), 0x0002);               /* 1.68 x 2^-24 */
    assert_int_equal(si_wire_f32_to_f16(6e-5f), 0x03ef);               /* 1006.6 x 2^-24 */
    assert_int_equal(si_wire_f32_to_f16(0x1p-14f), 0x0400);            /* smallest normal */
    assert_int_equal(si_wire_f32_to_f16(0x1p-14f - 0x1p-25f), 0x0400); /* rounds up into it */
    assert_int_equal(si_wire_f32_to_f16(0x3ffp-24f), 0x03ff);          /* largest subnormal */
    assert_true(si_wire_f16_to_f32(0x03ff) == 0x3ffp-24f);
    /* inf and NaN, including a NaN whose payload sits only in bits f16 drops */
    assert_int_equal(si_wire_f32_to_f16(INFINITY), 0x7c00);
    assert_int_equal(si_wire_f32_to_f16(-INFINITY), 0xfc00);
    assert_true(is_f16_nan(si_wire_f32_to_f16(NAN)));
    assert_true(is_f16_nan(si_wire_f32_to_f16(from_bits(0x7f800001))));
    assert_true(is_f16_nan(si_wire_f32_to_f16(from_bits(0xff800001))));
    assert_true(isinf(si_wire_f16_to_f32(0x7c00)));
    assert_true(isnan(si_wire_f16_to_f32(0x7e00)));
}

/* Every half round-trips through float exactly. */
static void test_f16_exhaustive(void **state) {
    (void)state;
    for (uint32_t h = 0; h <= 0xffff; h++) {
        float f = si_wire_f16_to_f32((uint16_t)h);
        uint16_t back = si_wire_f32_to_f16(f);
        if (is_f16_nan((uint16_t)h)) {
            assert_true(isnan(f));
            assert_true(is_f16_nan(back));
        } else if (back != h) {
            fail_msg("half 0x%04x -> %a -> 0x%04x", h, (double)f, back);
        }
    }
}

/* float -> half against the compiler's conversion (libgcc, correctly rounded),
 * over a stride of all 2^32 float bit patterns. */
static void test_f16_vs_compiler(void **state) {
    (void)state;
#ifdef __FLT16_MAX__
    uint64_t n = 0;
    for (uint64_t x = 0; x <= 0xffffffffu; x += 1021) {
        float f = from_bits((uint32_t)x);
        _Float16 ref = (_Float16)f;
        uint16_t rb;
        memcpy(&rb, &ref, 2);
        uint16_t got = si_wire_f32_to_f16(f);
        if (isnan(f)) {
            assert_true(is_f16_nan(got));
        } else if (got != rb) {
            fail_msg("f16(%a) = 0x%04x, compiler says 0x%04x", (double)f, got, rb);
        }
        n++;
    }
    assert_true(n > 4000000);
#else
    skip();
#endif
}

/* Round-to-nearest-even into bf16, computed in double from the two neighbours:
 * a different method from the library's bit trick. */
static uint16_t bf16_ref(float f) {
    uint32_t x = bits(f), sign = x & 0x80000000u, a = x & 0x7fffffffu;
    if (a >= 0x7f800000u) return (uint16_t)(x >> 16); /* inf (NaNs are checked apart) */
    uint32_t lo = a >> 16, hi = lo + 1;
    double v = fabs((double)f), vlo = (double)from_bits(lo << 16);
    double vhi = hi == 0x7f80 ? ldexp(1.0, 128) : (double)from_bits(hi << 16);
    double dlo = v - vlo, dhi = vhi - v;
    uint32_t r = dlo < dhi ? lo : dhi < dlo ? hi : (lo & 1) ? hi : lo;
    return (uint16_t)((sign >> 16) | r);
}

static void test_bf16(void **state) {
    (void)state;
    assert_int_equal(si_wire_f32_to_bf16(1.0f), 0x3f80);
    assert_int_equal(si_wire_f32_to_bf16(from_bits(0x3f808000)), 0x3f80); /* tie -> even */
    assert_int_equal(si_wire_f32_to_bf16(from_bits(0x3f818000)), 0x3f82); /* tie -> even */
    assert_int_equal(si_wire_f32_to_bf16(from_bits(0x3f808001)), 0x3f81);
    assert_int_equal(si_wire_f32_to_bf16(-0.0f), 0x8000);
    assert_int_equal(si_wire_f32_to_bf16(FLT_MAX), 0x7f80); /* beyond the last bf16 + half */
    assert_int_equal(si_wire_f32_to_bf16(INFINITY), 0x7f80);
    assert_int_equal(si_wire_f32_to_bf16(-INFINITY), 0xff80);
    assert_true(is_bf16_nan(si_wire_f32_to_bf16(NAN)));
    assert_true(is_bf16_nan(si_wire_f32_to_bf16(from_bits(0x7f800001)))); /* payload dropped */
    assert_true(si_wire_bf16_to_f32(0x3f80) == 1.0f);
    assert_true(isnan(si_wire_bf16_to_f32(0x7fc0)));
    for (uint64_t x = 0; x <= 0xffffffffu; x += 1021) {
        float f = from_bits((uint32_t)x);
        uint16_t got = si_wire_f32_to_bf16(f);
        if (isnan(f))
            assert_true(is_bf16_nan(got));
        else if (got != bf16_ref(f))
            fail_msg("bf16(%a) = 0x%04x, reference 0x%04x", (double)f, got, bf16_ref(f));
    }
    for (uint32_t h = 0; h <= 0xffff; h++) /* bf16 -> f32 -> bf16 is the identity */
        if (!is_bf16_nan((uint16_t)h))
            assert_int_equal(si_wire_f32_to_bf16(si_wire_bf16_to_f32((uint16_t)h)), h);
}

static void test_pack_elems(void **state) {
    (void)state;
    float src[5] = {1.0f, -2.5f, 65504.0f, 0x1p-24f, 3.14159f}, dst[5];
    uint8_t b[20];
    si_wire_pack_elems(SI_WIRE_FP16, src, 5, b);
    assert_int_equal(b[0], 0x00); /* 1.0 = 0x3c00, little-endian */
    assert_int_equal(b[1], 0x3c);
    si_wire_unpack_elems(SI_WIRE_FP16, b, 5, dst);
    for (int i = 0; i < 4; i++) assert_true(dst[i] == src[i]);
    assert_true(fabsf(dst[4] - src[4]) <= src[4] * 0x1p-11f);
    si_wire_pack_elems(SI_WIRE_BF16, src, 5, b);
    assert_int_equal(b[0], 0x80); /* 1.0 = 0x3f80 */
    assert_int_equal(b[1], 0x3f);
    si_wire_pack_elems(SI_WIRE_FP32, src, 5, b);
    si_wire_unpack_elems(SI_WIRE_FP32, b, 5, dst);
    assert_memory_equal(dst, src, sizeof src);
}

/* The array conversions (vectorized where the CPU allows) give exactly the
 * scalar conversion of every element: float bit patterns spread over the
 * whole range (NaNs, infinities, subnormals, ties), and every half. */
static void test_pack_elems_match_scalar(void **state) {
    (void)state;
    size_t n = 1u << 20;
    float *f = malloc(n * sizeof *f), *back = malloc(n * sizeof *back);
    uint8_t *b = malloc(2 * n);
    for (size_t i = 0; i < n; i++) f[i] = from_bits((uint32_t)(i * 4099u + rnd() % 4096u));
    for (size_t i = 0; i < 64; i++) f[i] = from_bits(0x477ff000u + (uint32_t)i - 32u); /* near 65520 */
    si_wire_pack_elems(SI_WIRE_FP16, f, n - 3, b); /* odd length: a tail for the C code */
    for (size_t i = 0; i < n - 3; i++) {
        uint16_t got = (uint16_t)(b[2 * i] | b[2 * i + 1] << 8), want = si_wire_f32_to_f16(f[i]);
        if (got != want) fail_msg("element %zu (0x%08x): 0x%04x, scalar 0x%04x", i, bits(f[i]), got, want);
    }
    for (size_t i = 0; i < 65536; i++) b[2 * i] = (uint8_t)i, b[2 * i + 1] = (uint8_t)(i >> 8);
    si_wire_unpack_elems(SI_WIRE_FP16, b, 65536, back);
    for (size_t i = 0; i < 65536; i++) {
        float want = si_wire_f16_to_f32((uint16_t)i);
        if (bits(back[i]) != bits(want) && !(isnan(back[i]) && isnan(want)))
            fail_msg("half 0x%04zx: %g, scalar %g", i, back[i], want);
    }
    free(f), free(back), free(b);
}

/* ---- messages ---- */

static void check_request_fields(const si_wire_request_t *d, si_wire_dtype_t dt) {
    assert_string_equal(d->request_id, "req-42");
    assert_string_equal(d->segment, "layer2.1..head");
    assert_int_equal(d->input.ndim, 4);
    int64_t dims[4] = {1, 2, 3, 4};
    assert_memory_equal(d->input.dims, dims, sizeof dims);
    assert_int_equal(d->input.dtype, dt);
    assert_int_equal(d->input_row0, 5);
    assert_int_equal(d->out_row_begin, 2);
    assert_int_equal(d->out_row_end, 7);
    assert_int_equal(d->reply_dtype, SI_WIRE_FP16);
}

static void test_request_fp32_exact(void **state) {
    (void)state;
    fill_small(1);
    si_wire_request_t r = small_request(SI_WIRE_FP32);
    uint8_t *buf = NULL;
    size_t len = 0;
    si_err_t err = {""};
    assert_int_equal(si_wire_encode_request(&r, &buf, &len, &err), 0);
    assert_true(len > 24 * 4);
    si_wire_request_t d;
    assert_int_equal(si_wire_decode_request(buf, len, &d, NULL, &err), 0);
    check_request_fields(&d, SI_WIRE_FP32);
    assert_memory_equal(d.input.data, small, sizeof small); /* bit-exact, NaN payload too */
    assert_int_equal(si_wire_tensor_numel(&d.input), 24);
    si_wire_request_free(&d);
    assert_null(d.owned.msg);
    si_wire_request_free(&d); /* twice is harmless */
    free(buf);
}

static void test_request_narrow(void **state) {
    (void)state;
    fill_small(0);
    small[0] = 65504.0f, small[1] = 1e-7f, small[2] = 1.0f + 0x1p-11f;
    si_wire_dtype_t dts[2] = {SI_WIRE_BF16, SI_WIRE_FP16};
    for (int k = 0; k < 2; k++) {
        si_wire_request_t r = small_request(dts[k]);
        uint8_t *buf = NULL;
        size_t len = 0;
        si_err_t err = {""};
        assert_int_equal(si_wire_encode_request(&r, &buf, &len, &err), 0);
        si_wire_request_t d;
        assert_int_equal(si_wire_decode_request(buf, len, &d, NULL, &err), 0);
        check_request_fields(&d, dts[k]);
        for (int i = 0; i < 24; i++) {
            float x = small[i], y = d.input.data[i];
            /* exactly what the scalar conversion gives ... */
            float want = dts[k] == SI_WIRE_BF16 ? si_wire_bf16_to_f32(si_wire_f32_to_bf16(x))
                                                : si_wire_f16_to_f32(si_wire_f32_to_f16(x));
            assert_true(bits(y) == bits(want));
            /* ... which is within half an ulp: 2^-8 (bf16) or 2^-11 (fp16) relative,
             * or 2^-25 absolute in fp16's subnormal range */
            float tol =
                dts[k] == SI_WIRE_BF16 ? fabsf(x) * 0x1p-8f : fmaxf(fabsf(x) * 0x1p-11f, 0x1p-25f);
            if (!(fabsf(x - y) <= tol))
                fail_msg("%s: %a -> %a", si_wire_dtype_name(dts[k]), (double)x, (double)y);
        }
        if (dts[k] == SI_WIRE_FP16) {
            assert_true(d.input.data[0] == 65504.0f);
            assert_true(d.input.data[1] == 2 * 0x1p-24f);
            assert_true(d.input.data[2] == 1.0f);
        }
        /* 2 bytes an element on the wire */
        assert_true(len < 24 * 4);
        si_wire_request_free(&d);
        free(buf);
    }
}

static void test_reply_roundtrip(void **state) {
    (void)state;
    float logits[1000];
    for (int i = 0; i < 1000; i++) logits[i] = frand(20);
    for (int dt = 0; dt < 3; dt++) {
        si_wire_reply_t r = {.request_id = "abc", .out_row0 = 0};
        r.output = (si_wire_tensor_t){
            .ndim = 2, .dims = {1, 1000}, .data = logits, .dtype = (si_wire_dtype_t)dt};
        r.timings = (si_wire_timings_t){1, 2, 3000000000000ull, 4, 5};
        uint8_t *buf = NULL;
        size_t len = 0;
        si_err_t err = {""};
        assert_int_equal(si_wire_encode_reply(&r, &buf, &len, &err), 0);
        si_wire_reply_t d;
        assert_int_equal(si_wire_decode_reply(buf, len, &d, NULL, &err), 0);
        assert_string_equal(d.request_id, "abc");
        assert_int_equal(d.output.ndim, 2);
        assert_int_equal(d.output.dims[1], 1000);
        assert_int_equal(d.output.dtype, dt);
        assert_int_equal(d.timings.decode_us, 1);
        assert_int_equal(d.timings.queue_us, 2);
        assert_true(d.timings.compute_us == 3000000000000ull);
        assert_int_equal(d.timings.encode_us, 4);
        assert_int_equal(d.timings.forward_us, 5);
        assert_int_equal(d.n_chain, 0);
        for (int i = 0; i < 1000; i++) {
            float tol = dt == 0 ? 0 : fabsf(logits[i]) * (dt == 1 ? 0x1p-8f : 0x1p-11f);
            assert_true(fabsf(d.output.data[i] - logits[i]) <= tol);
        }
        si_wire_reply_free(&d);
        free(buf);
    }
    /* a band of a 4-d output, no request id, no timings */
    fill_small(0);
    si_wire_reply_t r = {.out_row0 = 3};
    r.output = (si_wire_tensor_t){.ndim = 4, .dims = {1, 2, 3, 4}, .data = small};
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(si_wire_encode_reply(&r, &buf, &len, NULL), 0);
    si_wire_reply_t d;
    assert_int_equal(si_wire_decode_reply(buf, len, &d, NULL, NULL), 0);
    assert_string_equal(d.request_id, "");
    assert_int_equal(d.out_row0, 3);
    assert_int_equal(d.timings.compute_us, 0);
    assert_memory_equal(d.output.data, small, sizeof small);
    si_wire_reply_free(&d);
    free(buf);
}

/* A bigger tensor, the size of a real stage band. */
static void test_large(void **state) {
    (void)state;
    size_t n = 64 * 112 * 112;
    float *x = malloc(n * sizeof *x);
    assert_non_null(x);
    for (size_t i = 0; i < n; i++) x[i] = frand(10);
    si_wire_request_t r = {.segment = "layer1"};
    r.input = (si_wire_tensor_t){.ndim = 4, .dims = {1, 64, 112, 112}, .data = x};
    uint8_t *buf = NULL;
    size_t len = 0;
    si_err_t err = {""};
    assert_int_equal(si_wire_encode_request(&r, &buf, &len, &err), 0);
    si_wire_request_t d;
    assert_int_equal(si_wire_decode_request(buf, len, &d, NULL, &err), 0);
    assert_memory_equal(d.input.data, x, n * sizeof *x);
    si_wire_request_free(&d);
    free(buf);
    free(x);
}

/* ---- zero copy ---- */

static void test_zero_copy_decode(void **state) {
    (void)state;
    fill_small(0);
    si_wire_request_t r = small_request(SI_WIRE_FP32);
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(si_wire_encode_request(&r, &buf, &len, NULL), 0);
    float scratch[64];
    si_wire_decode_opts_t opts = {.scratch = scratch, .scratch_cap = 64};
    si_wire_request_t d;
    assert_int_equal(si_wire_decode_request(buf, len, &d, &opts, NULL), 0);
    /* fp32: the view is the unpacked message's own bytes - neither scratch nor a copy
     * of ours (protobuf-c's unpack copies out of the packed buffer; that is its design) */
    const Splitinfer__StageRequest *m = d.owned.msg;
    assert_non_null(m);
    assert_ptr_equal(d.input.data, (const void *)m->input->data.data);
    assert_true(m->input->data.len == sizeof small);
    assert_null(d.owned.floats);
    uintptr_t p = (uintptr_t)d.input.data;
    assert_false(p >= (uintptr_t)buf && p < (uintptr_t)(buf + len));
    assert_memory_equal(d.input.data, small, sizeof small);
    si_wire_request_free(&d);
    free(buf);

    /* fp16: converted into the scratch when it fits ... */
    r = small_request(SI_WIRE_FP16);
    assert_int_equal(si_wire_encode_request(&r, &buf, &len, NULL), 0);
    assert_int_equal(si_wire_decode_request(buf, len, &d, &opts, NULL), 0);
    assert_ptr_equal(d.input.data, scratch);
    assert_null(d.owned.floats);
    si_wire_request_free(&d);
    /* ... else into an array the struct owns */
    opts.scratch_cap = 23;
    assert_int_equal(si_wire_decode_request(buf, len, &d, &opts, NULL), 0);
    assert_non_null(d.owned.floats);
    assert_ptr_equal(d.input.data, d.owned.floats);
    for (int i = 0; i < 24; i++)
        assert_true(d.input.data[i] == si_wire_f16_to_f32(si_wire_f32_to_f16(small[i])));
    si_wire_request_free(&d);
    free(buf);
}

static void concat(const si_wire_packed_t *p, uint8_t *dst) {
    size_t off = 0;
    for (int i = 0; i < p->iovcnt; i++) {
        memcpy(dst + off, p->iov[i].iov_base, p->iov[i].iov_len);
        off += p->iov[i].iov_len;
    }
    assert_int_equal(off, p->len);
}

static void test_zero_copy_encode_iov(void **state) {
    (void)state;
    fill_small(1);
    for (int dt = 0; dt < 3; dt++) {
        si_wire_request_t r = small_request((si_wire_dtype_t)dt);
        uint8_t *flat = NULL, cat[512];
        size_t len = 0;
        si_wire_packed_t p;
        si_err_t err = {""};
        assert_int_equal(si_wire_encode_request(&r, &flat, &len, &err), 0);
        assert_int_equal(si_wire_encode_request_iov(&r, &p, &err), 0);
        assert_int_equal(p.len, len);
        if (dt == SI_WIRE_FP32) { /* header, then the caller's floats themselves */
            assert_int_equal(p.iovcnt, 2);
            assert_ptr_equal(p.iov[1].iov_base, small);
            assert_int_equal(p.iov[1].iov_len, sizeof small);
            assert_true(p.iov[0].iov_len < 64);
        } else {
            assert_int_equal(p.iovcnt, 1);
        }
        concat(&p, cat);
        assert_memory_equal(cat, flat, len);
        si_wire_packed_free(&p);
        assert_null(p.owned);
        free(flat);
    }
    si_wire_reply_t rep = {.request_id = "x", .out_row0 = 1, .timings = {5, 6, 7, 8}};
    rep.output = (si_wire_tensor_t){.ndim = 4, .dims = {1, 2, 3, 4}, .data = small};
    si_wire_packed_t p;
    uint8_t cat[512];
    assert_int_equal(si_wire_encode_reply_iov(&rep, &p, NULL), 0);
    assert_int_equal(p.iovcnt, 2);
    assert_ptr_equal(p.iov[1].iov_base, small);
    concat(&p, cat);
    si_wire_reply_t d;
    assert_int_equal(si_wire_decode_reply(cat, p.len, &d, NULL, NULL), 0);
    assert_int_equal(d.timings.encode_us, 8);
    assert_memory_equal(d.output.data, small, sizeof small);
    si_wire_reply_free(&d);
    si_wire_packed_free(&p);
}

/* An allocator that puts blocks of one chosen size at an odd address, to reach
 * the path for fp32 bytes that are not 4-byte aligned. Everything else stays
 * 16-aligned so protobuf-c's structs are fine. */
typedef struct odd_alloc {
    size_t odd_size;
    int live;
} odd_alloc_t;

static void *odd_alloc(void *data, size_t size) {
    odd_alloc_t *a = data;
    uint8_t *raw = malloc(size + 32);
    if (!raw) return NULL;
    uint8_t *p = raw + (size == a->odd_size ? 17 : 16);
    memcpy(p - sizeof raw, &raw, sizeof raw);
    a->live++;
    return p;
}

static void odd_free(void *data, void *p) {
    odd_alloc_t *a = data;
    uint8_t *raw;
    memcpy(&raw, (uint8_t *)p - sizeof raw, sizeof raw);
    free(raw);
    a->live--;
}

static void test_unaligned_fp32(void **state) {
    (void)state;
    /* 25 floats: 100 bytes, a size no protobuf-c struct of ours has (a
     * multiple of 8 once was: StageRequest's own 96 bytes). */
    float x[25];
    for (int i = 0; i < 25; i++) x[i] = frand(3);
    si_wire_request_t r = small_request(SI_WIRE_FP32);
    r.input.dims[1] = 5, r.input.dims[2] = 5, r.input.dims[3] = 1, r.input.data = x;
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(si_wire_encode_request(&r, &buf, &len, NULL), 0);
    odd_alloc_t oa = {.odd_size = sizeof x};
    ProtobufCAllocator pa = {.alloc = odd_alloc, .free = odd_free, .allocator_data = &oa};
    si_wire_decode_opts_t opts = {.alloc = &pa};
    si_wire_request_t d;
    assert_int_equal(si_wire_decode_request(buf, len, &d, &opts, NULL), 0);
    const Splitinfer__StageRequest *m = d.owned.msg;
    assert_true((uintptr_t)m->input->data.data % 4 != 0); /* the allocator did its trick */
    assert_ptr_equal(d.input.data, d.owned.floats);       /* so the view is a copy */
    assert_true((uintptr_t)d.input.data % _Alignof(float) == 0);
    assert_memory_equal(d.input.data, x, sizeof x);
    assert_true(oa.live > 0);
    si_wire_request_free(&d);
    assert_int_equal(oa.live, 0); /* freed through the same allocator */
    free(buf);
}

/* ---- malformed input ---- */

/* Decodes buf as both message types; a failure must say why, a success must hold
 * the invariants the header promises. */
/* The view decoders accept exactly what the copying ones accept, with the
 * same values. */
static void view_agrees(const uint8_t *buf, size_t len) {
    si_wire_request_t a, b;
    int ra = si_wire_decode_request(buf, len, &a, NULL, NULL);
    int rb = si_wire_decode_request_view(buf, len, &b, NULL, NULL);
    assert_int_equal(ra, rb);
    if (ra == 0) {
        assert_string_equal(a.segment, b.segment);
        assert_string_equal(a.request_id, b.request_id);
        assert_int_equal(a.input_row0, b.input_row0);
        assert_int_equal(a.out_row_end, b.out_row_end);
        assert_int_equal(a.input.ndim, b.input.ndim);
        int64_t n = si_wire_tensor_numel(&a.input);
        assert_memory_equal(a.input.data, b.input.data, (size_t)n * sizeof(float));
        si_wire_request_free(&a), si_wire_request_free(&b);
    }
    si_wire_reply_t c, d;
    int rc = si_wire_decode_reply(buf, len, &c, NULL, NULL);
    int rd = si_wire_decode_reply_view(buf, len, &d, NULL, NULL);
    assert_int_equal(rc, rd);
    if (rc == 0) {
        assert_int_equal(c.out_row0, d.out_row0);
        assert_memory_equal(&c.timings, &d.timings, sizeof c.timings);
        int64_t n = si_wire_tensor_numel(&c.output);
        assert_memory_equal(c.output.data, d.output.data, (size_t)n * sizeof(float));
        si_wire_reply_free(&c), si_wire_reply_free(&d);
    }
}

static void decode_any(const uint8_t *buf, size_t len) {
    view_agrees(buf, len);
    si_err_t err = {""};
    si_wire_request_t q;
    if (si_wire_decode_request(buf, len, &q, NULL, &err) == 0) {
        assert_true(q.input.ndim == 2 || q.input.ndim == 4);
        int64_t n = si_wire_tensor_numel(&q.input);
        assert_true(n > 0 && n <= SI_WIRE_MAX_ELEMS);
        volatile float sink = q.input.data[n - 1]; /* the view is readable to its end */
        (void)sink;
        assert_true(q.input_row0 >= 0);
        si_wire_request_free(&q);
    } else {
        assert_true(err.msg[0] != '\0');
        assert_null(q.owned.msg);
    }
    err.msg[0] = '\0';
    si_wire_reply_t p;
    if (si_wire_decode_reply(buf, len, &p, NULL, &err) == 0) {
        int64_t n = si_wire_tensor_numel(&p.output);
        assert_true(n > 0);
        volatile float sink = p.output.data[n - 1];
        (void)sink;
        si_wire_reply_free(&p);
    } else {
        assert_true(err.msg[0] != '\0');
    }
}

/* The tensor is the last field, so every proper prefix of a message cuts it:
 * none may decode. */
/* An aligned fp32 tensor decoded by the view decoder points into the
 * caller's buffer: no copy at all. */
static void test_view_zero_copy(void **state) {
    (void)state;
    fill_small(0);
    si_wire_request_t r = small_request(SI_WIRE_FP32);
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(si_wire_encode_request(&r, &buf, &len, NULL), 0);
    /* Place the message so that its tensor bytes are 4-byte aligned. */
    uint8_t *slab = aligned_alloc(64, (len + 64 + 63) & ~(size_t)63);
    for (size_t shift = 0; shift < 4; shift++) {
        memcpy(slab + shift, buf, len);
        si_wire_request_t d;
        assert_int_equal(si_wire_decode_request_view(slab + shift, len, &d, NULL, NULL), 0);
        assert_memory_equal(d.input.data, small, sizeof small);
        const uint8_t *p = (const uint8_t *)d.input.data;
        if (p >= slab + shift && p < slab + shift + len) {
            assert_null(d.owned.floats); /* viewed in place */
        } else {
            assert_true((uintptr_t)(slab + shift + (len - sizeof small)) % 4 != 0); /* had to copy */
        }
        si_wire_request_free(&d);
    }
    free(slab), free(buf);
}

/* raw: a reply's fp32 elements are never copied. At each of the four
 * alignments bytes points into the buffer and holds the elements; data is
 * the same pointer when aligned and NULL when not. */
static void test_view_raw(void **state) {
    (void)state;
    fill_small(1);
    si_wire_reply_t rep = {.request_id = "r", .out_row0 = 1};
    rep.output = (si_wire_tensor_t){.ndim = 4, .dims = {1, 2, 3, 4}, .data = small, .dtype = SI_WIRE_FP32};
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(si_wire_encode_reply(&rep, &buf, &len, NULL), 0);
    uint8_t *slab = aligned_alloc(64, (len + 64 + 63) & ~(size_t)63);
    si_wire_decode_opts_t opts = {.raw = 1};
    int aligned = 0, unaligned = 0;
    for (size_t shift = 0; shift < 4; shift++) {
        memcpy(slab + shift, buf, len);
        si_wire_reply_t d;
        assert_int_equal(si_wire_decode_reply_view(slab + shift, len, &d, &opts, NULL), 0);
        const uint8_t *b = d.output.bytes;
        assert_true(b >= slab + shift && b + sizeof small <= slab + shift + len);
        assert_memory_equal(b, small, sizeof small);
        if ((uintptr_t)b % 4 == 0) {
            assert_ptr_equal(d.output.data, b);
            aligned++;
        } else {
            assert_null(d.output.data);
            unaligned++;
        }
        assert_null(d.owned.floats); /* nothing was copied */
        si_wire_reply_free(&d);
    }
    assert_int_equal(aligned, 1);
    assert_int_equal(unaligned, 3);
    /* Without the option the same unaligned bytes are copied into aligned memory. */
    memcpy(slab + 1, buf, len);
    si_wire_reply_t d;
    assert_int_equal(si_wire_decode_reply_view(slab + 1, len, &d, NULL, NULL), 0);
    if ((uintptr_t)d.output.bytes % 4 != 0) assert_ptr_equal(d.output.data, d.owned.floats);
    assert_memory_equal(d.output.data, small, sizeof small);
    si_wire_reply_free(&d);
    free(slab), free(buf);
}

/* Forwarding: fwd (its input elements encoded already, at `bytes`) packs to the
 * same message as want (the same elements from floats), and its iov form
 * sends them by reference. Returns the flat message (*len bytes; free it). */
static uint8_t *assert_forwarded(const si_wire_request_t *want, const si_wire_request_t *fwd,
                                 const void *bytes, size_t *len) {
    uint8_t *a = NULL, *b = NULL;
    size_t alen = 0, blen = 0;
    assert_int_equal(si_wire_encode_request(want, &a, &alen, NULL), 0);
    assert_int_equal(si_wire_encode_request(fwd, &b, &blen, NULL), 0);
    assert_int_equal(alen, blen);
    assert_memory_equal(a, b, alen);
    si_wire_packed_t pk;
    assert_int_equal(si_wire_encode_request_iov(fwd, &pk, NULL), 0);
    assert_int_equal(pk.iovcnt, 2);
    assert_ptr_equal(pk.iov[1].iov_base, bytes); /* by reference */
    assert_int_equal(pk.iov[0].iov_len + pk.iov[1].iov_len, alen);
    assert_memory_equal(pk.iov[0].iov_base, a, pk.iov[0].iov_len);
    assert_memory_equal(pk.iov[1].iov_base, a + pk.iov[0].iov_len, pk.iov[1].iov_len);
    si_wire_packed_free(&pk);
    free(b);
    *len = alen;
    return a;
}

/* raw for a 16-bit dtype: the elements are left encoded (bytes, no data, no
 * conversion); encoding those bytes again (the gateway forwarding a reply as
 * the next request) sends them as they are, by reference in the iov form, and
 * both forms give the same message as encoding the floats. */
static void test_forward_encoded(void **state) {
    (void)state;
    fill_small(0);
    for (int dt = SI_WIRE_BF16; dt <= SI_WIRE_FP16; dt++) {
        si_wire_reply_t rep = {.request_id = "r"};
        rep.output = (si_wire_tensor_t){.ndim = 4, .dims = {1, 2, 3, 4}, .data = small, .dtype = dt};
        uint8_t *buf = NULL;
        size_t len = 0;
        assert_int_equal(si_wire_encode_reply(&rep, &buf, &len, NULL), 0);
        si_wire_decode_opts_t opts = {.raw = 1};
        si_wire_reply_t d;
        assert_int_equal(si_wire_decode_reply_view(buf, len, &d, &opts, NULL), 0);
        assert_null(d.output.data);
        assert_null(d.owned.floats);
        assert_true((const uint8_t *)d.output.bytes > buf && (const uint8_t *)d.output.bytes + 48 == buf + len);

        si_wire_request_t want = {.segment = "layer2"}, fwd = {.segment = "layer2"};
        want.input = rep.output;
        fwd.input = (si_wire_tensor_t){.ndim = 4, .dims = {1, 2, 3, 4}, .bytes = d.output.bytes, .dtype = dt};
        size_t alen;
        free(assert_forwarded(&want, &fwd, d.output.bytes, &alen));
        si_wire_reply_free(&d);
        free(buf);
    }
}

/* Decodes buf with the protobuf-c decoder (view 0) or the fast reader (view
 * 1), which must take the message itself rather than fall back. */
static void decode_request_by(int view, const uint8_t *buf, size_t len, si_wire_request_t *d) {
    assert_int_equal(view ? si_wire_decode_request_view(buf, len, d, NULL, NULL)
                          : si_wire_decode_request(buf, len, d, NULL, NULL), 0);
    if (view) assert_null(d->owned.msg);
}

/* Decodes a reply with the protobuf-c decoder (view 0) or the fast reader (1). */
static void decode_reply_by(int view, const uint8_t *buf, size_t len, si_wire_reply_t *d) {
    assert_int_equal(view ? si_wire_decode_reply_view(buf, len, d, NULL, NULL)
                          : si_wire_decode_reply(buf, len, d, NULL, NULL), 0);
}

/* r's iov form is [header][the caller's elements], the header being the
 * first bytes of its flat encoding. */
static void assert_iov_form(const si_wire_request_t *r, const uint8_t *flat) {
    si_wire_packed_t pk;
    assert_int_equal(si_wire_encode_request_iov(r, &pk, NULL), 0);
    assert_int_equal(pk.iovcnt, 2);
    assert_ptr_equal(pk.iov[1].iov_base, r->input.data);
    assert_memory_equal(pk.iov[0].iov_base, flat, pk.iov[0].iov_len);
    si_wire_packed_free(&pk);
}

/* A chained request (then, timeout_ms) and its reply (chain timings) come
 * back the same from the fast reader and from protobuf-c, and still pack as
 * [header][elements]. */
static void test_chain(void **state) {
    (void)state;
    fill_small(1);
    static const char *const then[] = {"layer3", "layer4..head"};
    si_wire_request_t r = small_request(SI_WIRE_FP32);
    r.out_row_begin = r.out_row_end = 0;
    r.input_row0 = 0;
    r.then = then, r.n_then = 2, r.timeout_ms = 9000;
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(si_wire_encode_request(&r, &buf, &len, NULL), 0);
    for (int view = 0; view < 2; view++) {
        si_wire_request_t d;
        decode_request_by(view, buf, len, &d);
        assert_int_equal(d.n_then, 2);
        assert_string_equal(d.then[0], "layer3");
        assert_string_equal(d.then[1], "layer4..head");
        assert_int_equal(d.timeout_ms, 9000);
        assert_string_equal(d.segment, "layer2.1..head");
        assert_memory_equal(d.input.data, small, sizeof small);
        si_wire_request_free(&d);
    }
    assert_iov_form(&r, buf);
    free(buf);

    si_wire_reply_t rep = {.request_id = "req-42"};
    rep.output = (si_wire_tensor_t){.ndim = 2, .dims = {1, 24}, .data = small};
    rep.timings = (si_wire_timings_t){1, 2, 3, 4, 700};
    rep.n_chain = 2;
    rep.chain[0] = (si_wire_timings_t){10, 20, 30, 40, 300};
    rep.chain[1] = (si_wire_timings_t){11, 21, 31, 41, 0};
    assert_int_equal(si_wire_encode_reply(&rep, &buf, &len, NULL), 0);
    for (int view = 0; view < 2; view++) {
        si_wire_reply_t d;
        decode_reply_by(view, buf, len, &d);
        if (view) assert_null(d.owned.msg);
        assert_int_equal(d.timings.forward_us, 700);
        assert_int_equal(d.n_chain, 2);
        assert_int_equal(d.chain[0].compute_us, 30);
        assert_int_equal(d.chain[0].forward_us, 300);
        assert_int_equal(d.chain[1].encode_us, 41);
        assert_int_equal(si_wire_timings_own_us(&d.chain[1]), 11 + 21 + 31 + 41);
        assert_memory_equal(d.output.data, small, sizeof small);
        si_wire_reply_free(&d);
    }
    free(buf);

    /* What a chain may not be. */
    si_err_t err = {""};
    si_wire_request_t bad = r;
    bad.out_row_begin = 0, bad.out_row_end = 2; /* a band */
    assert_int_equal(si_wire_encode_request(&bad, &buf, &len, &err), -1);
    assert_non_null(strstr(err.msg, "whole tensors"));
    static const char *const empty[] = {""};
    bad = r, bad.then = empty, bad.n_then = 1;
    assert_int_equal(si_wire_encode_request(&bad, &buf, &len, &err), -1);
    assert_non_null(strstr(err.msg, "empty segment"));
    bad = r, bad.n_then = SI_WIRE_MAX_CHAIN + 1;
    assert_int_equal(si_wire_encode_request(&bad, &buf, &len, &err), -1);
    bad = r, bad.timeout_ms = -1;
    assert_int_equal(si_wire_encode_request(&bad, &buf, &len, &err), -1);
    rep.n_chain = SI_WIRE_MAX_CHAIN + 1;
    assert_int_equal(si_wire_encode_reply(&rep, &buf, &len, &err), -1);
    /* A chain of exactly the most segments still goes through both ways. */
    const char *many[SI_WIRE_MAX_CHAIN];
    for (int i = 0; i < SI_WIRE_MAX_CHAIN; i++) many[i] = "layer1.0";
    bad = r, bad.then = many, bad.n_then = SI_WIRE_MAX_CHAIN;
    assert_int_equal(si_wire_encode_request(&bad, &buf, &len, NULL), 0);
    si_wire_request_t d;
    assert_int_equal(si_wire_decode_request_view(buf, len, &d, NULL, NULL), 0);
    assert_int_equal(d.n_then, SI_WIRE_MAX_CHAIN);
    assert_string_equal(d.then[SI_WIRE_MAX_CHAIN - 1], "layer1.0");
    si_wire_request_free(&d);
    free(buf);
}

/* Resident bands: StageRequest.resident goes through both decoders (the view
 * reads it, it does not fall back to protobuf-c), the bulk bytes still come
 * last, a from_held request may carry no rows, and what makes no sense is
 * refused on the way out and in. */
static void test_resident(void **state) {
    (void)state;
    fill_small(0);
    si_wire_request_t r = small_request(SI_WIRE_FP32);
    r.input.layout = SI_WIRE_NHWC, r.reply_layout = SI_WIRE_NHWC;
    r.hold = 1, r.from_held = 1, r.reply_row_begin = 3, r.reply_row_end = 5;
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(si_wire_encode_request(&r, &buf, &len, NULL), 0);
    for (int view = 0; view < 2; view++) {
        si_wire_request_t d;
        decode_request_by(view, buf, len, &d);
        assert_int_equal(d.hold, 1);
        assert_int_equal(d.from_held, 1);
        assert_int_equal(d.reply_row_begin, 3);
        assert_int_equal(d.reply_row_end, 5);
        assert_int_equal(d.out_row_end, 7);
        assert_memory_equal(d.input.data, small, sizeof small);
        si_wire_request_free(&d);
    }
    assert_iov_form(&r, buf);
    free(buf);

    /* Nothing carried: every row the step needs is held. */
    si_wire_request_t z = r;
    z.input.dims[2] = 0, z.hold = 0, z.reply_row_begin = z.reply_row_end = 0;
    assert_int_equal(si_wire_encode_request(&z, &buf, &len, NULL), 0);
    for (int view = 0; view < 2; view++) {
        si_wire_request_t d;
        decode_request_by(view, buf, len, &d);
        assert_int_equal(d.from_held, 1);
        assert_int_equal(d.hold, 0);
        assert_int_equal(d.input.ndim, 4);
        assert_int_equal(d.input.dims[2], 0);
        assert_int_equal(d.input.dims[3], 4);
        si_wire_request_free(&d);
    }
    free(buf);

    si_err_t err = {""};
    si_wire_request_t bad = z;
    bad.from_held = 0; /* no rows in an ordinary call */
    assert_int_equal(si_wire_encode_request(&bad, &buf, &len, &err), -1);
    assert_non_null(strstr(err.msg, "dim 2 is not > 0"));
    bad = r, bad.hold = 0; /* reply rows would lose the rest of the band */
    assert_int_equal(si_wire_encode_request(&bad, &buf, &len, &err), -1);
    assert_non_null(strstr(err.msg, "without hold"));
    bad = r, bad.reply_row_begin = 5; /* empty */
    assert_int_equal(si_wire_encode_request(&bad, &buf, &len, &err), -1);
    assert_non_null(strstr(err.msg, "empty"));
    static const char *const then[] = {"layer3"};
    bad = r, bad.then = then, bad.n_then = 1, bad.out_row_begin = bad.out_row_end = 0;
    assert_int_equal(si_wire_encode_request(&bad, &buf, &len, &err), -1);
    assert_non_null(strstr(err.msg, "not chained"));
}

/* Layouts (wire format 3): NHWC travels as a field of the tensor, both
 * decoders read it, the bulk bytes still come last, and nothing is reordered
 * (the elements are the caller's, as they lie). */
static void test_layout(void **state) {
    (void)state;
    fill_small(0);
    si_wire_request_t r = small_request(SI_WIRE_FP32);
    r.input.layout = SI_WIRE_NHWC, r.reply_layout = SI_WIRE_NHWC;
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(si_wire_encode_request(&r, &buf, &len, NULL), 0);
    for (int view = 0; view < 2; view++) { /* the fast reader knows fields 4 and 10 */
        si_wire_request_t d;
        decode_request_by(view, buf, len, &d);
        assert_int_equal(d.input.layout, SI_WIRE_NHWC);
        assert_int_equal(d.reply_layout, SI_WIRE_NHWC);
        assert_memory_equal(d.input.data, small, sizeof small);
        si_wire_request_free(&d);
    }
    assert_iov_form(&r, buf); /* data is still last */
    free(buf);
    /* The default is NCHW, also when decoded: an old-style client's tensor. */
    r = small_request(SI_WIRE_FP32);
    assert_int_equal(si_wire_encode_request(&r, &buf, &len, NULL), 0);
    si_wire_request_t d;
    assert_int_equal(si_wire_decode_request_view(buf, len, &d, NULL, NULL), 0);
    assert_int_equal(d.input.layout, SI_WIRE_NCHW);
    assert_int_equal(d.reply_layout, SI_WIRE_NCHW);
    si_wire_request_free(&d);
    free(buf);

    si_wire_reply_t rep = {.request_id = "r", .out_row0 = 1};
    rep.output = (si_wire_tensor_t){.ndim = 4, .dims = {1, 2, 3, 4}, .data = small,
                                    .dtype = SI_WIRE_FP16, .layout = SI_WIRE_NHWC};
    assert_int_equal(si_wire_encode_reply(&rep, &buf, &len, NULL), 0);
    for (int view = 0; view < 2; view++) {
        si_wire_reply_t dr;
        decode_reply_by(view, buf, len, &dr);
        assert_int_equal(dr.output.layout, SI_WIRE_NHWC);
        assert_int_equal(dr.output.dtype, SI_WIRE_FP16);
        for (int i = 0; i < 24; i++)
            assert_float_equal(dr.output.data[i], si_wire_f16_to_f32(si_wire_f32_to_f16(small[i])), 0);
        si_wire_reply_free(&dr);
    }
    free(buf);
}

static void test_truncations(void **state) {
    (void)state;
    fill_small(1);
    for (int dt = 0; dt < 3; dt++) {
        si_wire_request_t r = small_request((si_wire_dtype_t)dt);
        uint8_t *buf = NULL;
        size_t len = 0;
        assert_int_equal(si_wire_encode_request(&r, &buf, &len, NULL), 0);
        for (size_t cut = 0; cut < len; cut++) {
            uint8_t *part = malloc(cut ? cut : 1); /* exact size: ASan sees any overread */
            memcpy(part, buf, cut);
            si_err_t err = {""};
            si_wire_request_t d;
            if (si_wire_decode_request(part, cut, &d, NULL, &err) == 0)
                fail_msg("%s request cut to %zu of %zu bytes decoded",
                         si_wire_dtype_name(r.input.dtype), cut, len);
            assert_true(err.msg[0] != '\0');
            decode_any(part, cut);
            free(part);
        }
        free(buf);

        si_wire_reply_t rep = {.request_id = "r", .out_row0 = 2, .timings = {1, 2, 3, 4}};
        rep.output = (si_wire_tensor_t){
            .ndim = 4, .dims = {1, 2, 3, 4}, .data = small, .dtype = (si_wire_dtype_t)dt};
        assert_int_equal(si_wire_encode_reply(&rep, &buf, &len, NULL), 0);
        for (size_t cut = 0; cut < len; cut++) {
            uint8_t *part = malloc(cut ? cut : 1);
            memcpy(part, buf, cut);
            si_err_t err = {""};
            si_wire_reply_t d;
            if (si_wire_decode_reply(part, cut, &d, NULL, &err) == 0)
                fail_msg("reply cut to %zu of %zu bytes decoded", cut, len);
            assert_true(err.msg[0] != '\0');
            free(part);
        }
        free(buf);
    }
}

static void test_random_bytes(void **state) {
    (void)state;
    uint8_t b[256];
    for (int it = 0; it < 20000; it++) {
        size_t len = rnd() % sizeof b;
        for (size_t i = 0; i < len; i++) b[i] = (uint8_t)rnd();
        uint8_t *exact = malloc(len ? len : 1);
        memcpy(exact, b, len);
        decode_any(exact, len);
        free(exact);
    }
    /* mutations of a valid message reach deeper than random bytes */
    fill_small(1);
    si_wire_request_t r = small_request(SI_WIRE_FP16);
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(si_wire_encode_request(&r, &buf, &len, NULL), 0);
    int decoded = 0;
    for (int it = 0; it < 20000; it++) {
        uint8_t *m = malloc(len);
        memcpy(m, buf, len);
        int flips = 1 + (int)(rnd() % 3);
        for (int k = 0; k < flips; k++) m[rnd() % len] ^= (uint8_t)(1u << (rnd() % 8));
        si_wire_request_t d;
        if (si_wire_decode_request(m, len, &d, NULL, NULL) == 0) {
            decoded++;
            si_wire_request_free(&d);
        }
        decode_any(m, len);
        free(m);
    }
    assert_true(decoded > 0); /* flips in the float bytes are still valid messages */
    free(buf);
    si_err_t err = {""};
    si_wire_request_t d;
    assert_int_equal(si_wire_decode_request(NULL, 5, &d, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "NULL"));
    assert_int_equal(si_wire_decode_request(NULL, 0, &d, NULL, &err), -1); /* no tensor */
    assert_non_null(strstr(err.msg, "missing"));
}

/* Packs a hand-made message (bypassing our encoder's checks) and expects the
 * decoder to refuse it with a message containing want. */
static void expect_request_error(const Splitinfer__StageRequest *m, const char *want) {
    size_t len = splitinfer__stage_request__get_packed_size(m);
    uint8_t *buf = malloc(len ? len : 1);
    splitinfer__stage_request__pack(m, buf);
    si_err_t err = {""};
    si_wire_request_t d;
    if (si_wire_decode_request(buf, len, &d, NULL, &err) != -1)
        fail_msg("decoded a request that should fail with '%s'", want);
    if (!strstr(err.msg, want)) fail_msg("error '%s' lacks '%s'", err.msg, want);
    free(buf);
}

static void expect_reply_error(const Splitinfer__StageReply *m, const char *want) {
    size_t len = splitinfer__stage_reply__get_packed_size(m);
    uint8_t *buf = malloc(len ? len : 1);
    splitinfer__stage_reply__pack(m, buf);
    si_err_t err = {""};
    si_wire_reply_t d;
    if (si_wire_decode_reply(buf, len, &d, NULL, &err) != -1)
        fail_msg("decoded a reply that should fail with '%s'", want);
    if (!strstr(err.msg, want)) fail_msg("error '%s' lacks '%s'", err.msg, want);
    free(buf);
}

static void test_malformed_fields(void **state) {
    (void)state;
    uint8_t data[4096] = {0};
    int64_t dims[5] = {1, 2, 3, 4, 5};
    Splitinfer__Tensor t = SPLITINFER__TENSOR__INIT;
    Splitinfer__StageRequest m = SPLITINFER__STAGE_REQUEST__INIT;
    t.n_dims = 4, t.dims = dims, t.data.data = data, t.data.len = 24 * 4;
    m.input = &t;
    { /* the baseline is valid */
        size_t len = splitinfer__stage_request__get_packed_size(&m);
        uint8_t buf[256];
        splitinfer__stage_request__pack(&m, buf);
        si_wire_request_t d;
        assert_int_equal(si_wire_decode_request(buf, len, &d, NULL, NULL), 0);
        si_wire_request_free(&d);
    }
    m.input = NULL;
    expect_request_error(&m, "missing");
    m.input = &t;

    t.n_dims = 3, t.data.len = 6 * 4;
    expect_request_error(&m, "3 dims");
    t.n_dims = 5, t.data.len = 120 * 4;
    expect_request_error(&m, "5 dims");
    t.n_dims = 0, t.data.len = 0;
    expect_request_error(&m, "0 dims");
    t.n_dims = 4, t.data.len = 24 * 4;

    dims[2] = 0, t.data.len = 0; /* no rows: only a from_held request */
    expect_request_error(&m, "dim 2 is not > 0");
    t.data.len = 24 * 4;
    dims[2] = -3;
    expect_request_error(&m, "dim 2 is not > 0");
    dims[2] = 3;

    int64_t huge[4] = {1 << 20, 1 << 20, 1 << 20, 1 << 20}; /* product overflows int64 */
    t.dims = huge;
    expect_request_error(&m, "more than");
    int64_t big[4] = {1, 64, 1024, 1025}; /* just over SI_WIRE_MAX_ELEMS */
    t.dims = big;
    expect_request_error(&m, "more than");
    t.dims = dims;

    t.data.len = 24 * 4 - 1;
    expect_request_error(&m, "data bytes");
    t.data.len = 24 * 4 + 1;
    expect_request_error(&m, "data bytes");
    t.dtype = SPLITINFER__TENSOR__DTYPE__BFLOAT16, t.data.len = 24 * 4; /* fp32 size as bf16 */
    expect_request_error(&m, "as bf16 need 48");
    t.dtype = (Splitinfer__Tensor__DType)7;
    expect_request_error(&m, "unknown dtype 7");
    t.dtype = SPLITINFER__TENSOR__DTYPE__FLOAT32;

    m.reply_dtype = (Splitinfer__Tensor__DType)9;
    expect_request_error(&m, "reply_dtype");
    m.reply_dtype = SPLITINFER__TENSOR__DTYPE__FLOAT16;

    t.layout = (Splitinfer__Tensor__Layout)7;
    expect_request_error(&m, "unknown layout 7");
    t.layout = SPLITINFER__TENSOR__LAYOUT__NCHW;
    m.reply_layout = (Splitinfer__Tensor__Layout)2;
    expect_request_error(&m, "reply_layout");
    m.reply_layout = SPLITINFER__TENSOR__LAYOUT__NHWC;

    m.input_row0 = -1;
    expect_request_error(&m, "negative");
    m.input_row0 = INT32_MAX - 1; /* + 3 rows overflows */
    expect_request_error(&m, "overflow");
    m.input_row0 = 0;
    m.out_row_begin = -2, m.out_row_end = 3;
    expect_request_error(&m, "negative");
    m.out_row_begin = 4, m.out_row_end = 4;
    expect_request_error(&m, "empty");
    m.out_row_begin = 5, m.out_row_end = 1;
    expect_request_error(&m, "empty");
    m.out_row_begin = 0, m.out_row_end = 0;

    int64_t nc[2] = {1, 24};
    t.n_dims = 2, t.dims = nc;
    m.input_row0 = 3;
    expect_request_error(&m, "no rows");
    m.input_row0 = 0;
    t.layout = SPLITINFER__TENSOR__LAYOUT__NHWC;
    expect_request_error(&m, "2-d tensor");
    t.layout = SPLITINFER__TENSOR__LAYOUT__NCHW;
    t.n_dims = 4, t.dims = dims;

    char longid[SI_WIRE_MAX_STR + 2];
    memset(longid, 'x', sizeof longid - 1);
    longid[sizeof longid - 1] = '\0';
    m.request_id = longid;
    expect_request_error(&m, "request_id");
    m.request_id = (char *)"";
    m.segment = longid;
    expect_request_error(&m, "segment");

    Splitinfer__StageReply rep = SPLITINFER__STAGE_REPLY__INIT;
    expect_reply_error(&rep, "StageReply.output: missing");
    rep.output = &t;
    rep.out_row0 = -4;
    expect_reply_error(&rep, "negative");
    rep.out_row0 = 0;
    t.data.len = 7;
    expect_reply_error(&rep, "data bytes");
}

static void test_encode_rejects(void **state) {
    (void)state;
    fill_small(0);
    si_wire_request_t r;
    uint8_t *buf = NULL;
    size_t len = 0;
    si_wire_packed_t p = {0};
    si_err_t err;
#define REJECT(edit, want)                                                                         \
    do {                                                                                           \
        r = small_request(SI_WIRE_FP32);                                                           \
        edit;                                                                                      \
        err.msg[0] = '\0';                                                                         \
        assert_int_equal(si_wire_encode_request(&r, &buf, &len, &err), -1);                        \
        assert_null(buf);                                                                          \
        if (!strstr(err.msg, want)) fail_msg("error '%s' lacks '%s'", err.msg, want);              \
        assert_int_equal(si_wire_encode_request_iov(&r, &p, &err), -1);                            \
        assert_null(p.owned);                                                                      \
    } while (0)
    REJECT(r.input.ndim = 3, "3 dims");
    REJECT(r.input.dims[1] = 0, "not > 0");
    REJECT(r.input.data = NULL, "no data");
    REJECT(r.input.dtype = (si_wire_dtype_t)5, "unknown dtype 5");
    REJECT(r.reply_dtype = (si_wire_dtype_t)-1, "reply_dtype");
    REJECT(r.input.layout = (si_wire_layout_t)3, "unknown layout 3");
    REJECT(r.reply_layout = (si_wire_layout_t)2, "reply_layout");
    REJECT((r.input.ndim = 2, r.input.dims[1] = 24, r.input_row0 = 0, r.input.layout = SI_WIRE_NHWC),
           "2-d tensor");
    REJECT(r.input_row0 = -1, "negative");
    REJECT((r.out_row_begin = 3, r.out_row_end = 3), "empty");
    REJECT((r.input.ndim = 2, r.input.dims[1] = 24, r.input_row0 = 1), "no rows");
#undef REJECT
    assert_int_equal(si_wire_encode_request(NULL, &buf, &len, &err), -1);
    si_wire_reply_t rep = {.out_row0 = -1};
    rep.output = (si_wire_tensor_t){.ndim = 4, .dims = {1, 2, 3, 4}, .data = small};
    assert_int_equal(si_wire_encode_reply(&rep, &buf, &len, &err), -1);
    assert_non_null(strstr(err.msg, "negative"));
    assert_int_equal(si_wire_encode_reply_iov(&rep, &p, &err), -1);
    si_wire_tensor_t bad = {.ndim = 4, .dims = {1, -1, 1, 1}};
    assert_int_equal(si_wire_tensor_numel(&bad), 0);
}


/* ---- the ZEROS encoding ---- */

/* The encoding as the .proto words it, one element at a time: what the
 * vector code must produce byte for byte. */
static size_t zeros_reference(const float *src, size_t n, uint8_t *dst) {
    size_t nb = (n + 7) / 8, k = 0;
    memset(dst, 0, nb);
    for (size_t i = 0; i < n; i++) {
        uint32_t x = bits(src[i]);
        if (!x) continue;
        dst[i / 8] |= (uint8_t)(1u << (i % 8));
        memcpy(dst + nb + 4 * k++, &x, 4);
    }
    return nb + 4 * k;
}

/* n elements, a fraction zero_pct / 100 of them +0.0, the rest random with
 * -0.0, NaN and infinities among them (all kept: they are not all-zero bits). */
static float *zeros_input(size_t n, int zero_pct) {
    float *x = malloc((n ? n : 1) * sizeof *x);
    for (size_t i = 0; i < n; i++) {
        x[i] = (int)(rnd() % 100) < zero_pct ? 0.0f : frand(4);
        if (x[i] == 0.0f && rnd() % 50 == 0) x[i] = -0.0f;
    }
    if (n > 3 && zero_pct < 100) x[1] = from_bits(0x7fc00001), x[2] = INFINITY, x[3] = -0.0f;
    return x;
}

/* Every length around the 16-element vector blocks and the 8-element bitmap
 * bytes, every density: encoded exactly as the reference, checked, decoded
 * back bit for bit. */
static void test_zeros_codec(void **state) {
    (void)state;
    const size_t ns[] = {1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 100, 1000, 100003};
    const int pcts[] = {0, 30, 90, 100};
    for (size_t a = 0; a < sizeof ns / sizeof *ns; a++)
        for (size_t b = 0; b < sizeof pcts / sizeof *pcts; b++) {
            size_t n = ns[a];
            float *x = zeros_input(n, pcts[b]), *y = malloc(n * sizeof *y);
            size_t cap = (n + 7) / 8 + 4 * n;
            uint8_t *want = malloc(cap), *got = malloc(cap);
            size_t wl = zeros_reference(x, n, want);
            assert_int_equal(si_wire_zeros_bitmap(n), (n + 7) / 8);
            assert_int_equal(si_wire_zeros_bitmap(n) + 4 * si_wire_zeros_count(x, n), wl);
            assert_int_equal(si_wire_zeros_pack(x, n, got), wl);
            assert_memory_equal(got, want, wl);
            assert_int_equal(si_wire_zeros_check(got, wl, n), 0);
            memset(y, 0xa5, n * sizeof *y);
            si_wire_zeros_unpack(got, n, y);
            for (size_t i = 0; i < n; i++) assert_int_equal(bits(y[i]), bits(x[i]));
            free(x), free(y), free(want), free(got);
        }
}

/* What si_wire_zeros_check refuses: a bitmap cut short, a bit past the last
 * element, elements missing or over, a length that is not whole elements. */
static void test_zeros_check_rejects(void **state) {
    (void)state;
    float x[13] = {1, 0, 2, 0, 0, 3, 0, 0, 0, 4, 0, 0, 5};
    uint8_t e[64];
    size_t len = si_wire_zeros_pack(x, 13, e); /* 2 bitmap bytes + 5 elements */
    assert_int_equal(len, 2 + 5 * 4);
    assert_int_equal(si_wire_zeros_check(e, len, 13), 0);
    assert_int_equal(si_wire_zeros_check(e, 1, 13), -1);       /* no room for the bitmap */
    assert_int_equal(si_wire_zeros_check(e, len - 4, 13), -1); /* an element missing */
    assert_int_equal(si_wire_zeros_check(e, len - 1, 13), -1); /* not whole elements */
    assert_int_equal(si_wire_zeros_check(e, len, 12), -1);     /* the 13th bit is past 12 */
    uint8_t f[64];
    memcpy(f, e, len);
    memset(f + len, 0, 4);
    assert_int_equal(si_wire_zeros_check(f, len + 4, 13), -1); /* an element over */
    f[1] |= 0x80;                                              /* bit 15 of 13 */
    assert_int_equal(si_wire_zeros_check(f, len + 4, 13), -1);
}

/* ZEROS in messages: chosen only when it saves bytes, decoded exactly by
 * both decoders, left encoded by a raw decode and forwarded as it came (by
 * reference), refused for 16-bit dtypes and when corrupt; reply_encoding
 * travels. */
static void test_zeros_messages(void **state) {
    (void)state;
    enum { N = 8 * 7 * 32 }; /* [1, 8, 7, 32] */
    float *sparse = zeros_input(N, 60), *dense = zeros_input(N, 0);
    si_wire_reply_t rep = {.request_id = "z", .out_row0 = 0};
    rep.output = (si_wire_tensor_t){.ndim = 4, .dims = {1, 8, 7, 32}, .data = sparse,
                                    .dtype = SI_WIRE_FP32, .layout = SI_WIRE_NHWC,
                                    .encoding = SI_WIRE_ZEROS};
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(si_wire_encode_reply(&rep, &buf, &len, NULL), 0);
    size_t zlen = si_wire_zeros_bitmap(N) + 4 * si_wire_zeros_count(sparse, N);
    assert_true(zlen < (size_t)N * 4 * 6 / 10); /* 60% zeros: well under dense */
    assert_true(len > zlen && len < zlen + 64);
    for (int view = 0; view < 2; view++) {
        si_wire_reply_t d;
        decode_reply_by(view, buf, len, &d);
        assert_int_equal(d.output.encoding, SI_WIRE_ZEROS);
        assert_int_equal(d.output.nbytes, zlen);
        for (int i = 0; i < N; i++) assert_int_equal(bits(d.output.data[i]), bits(sparse[i]));
        float *f = malloc(N * sizeof *f);
        si_wire_tensor_floats(&d.output, f);
        assert_memory_equal(f, sparse, N * sizeof *f);
        free(f);
        si_wire_reply_free(&d);
    }
    /* raw: left encoded; forwarded as the next request's input, the same
     * message as encoding the floats, its elements by reference. */
    si_wire_decode_opts_t raw = {.raw = 1};
    si_wire_reply_t d;
    assert_int_equal(si_wire_decode_reply_view(buf, len, &d, &raw, NULL), 0);
    assert_null(d.output.data);
    assert_null(d.owned.floats);
    assert_true((const uint8_t *)d.output.bytes + zlen == buf + len);
    float *f = malloc(N * sizeof *f);
    si_wire_tensor_floats(&d.output, f);
    assert_memory_equal(f, sparse, N * sizeof *f);
    free(f);
    si_wire_request_t want = {.segment = "layer2", .reply_encoding = SI_WIRE_ZEROS};
    si_wire_request_t fwd = want;
    want.input = rep.output;
    fwd.input = d.output;
    size_t alen;
    uint8_t *a = assert_forwarded(&want, &fwd, d.output.bytes, &alen);
    assert_true(alen > zlen && alen < zlen + 64); /* the elements: the ZEROS bytes */
    for (int view = 0; view < 2; view++) {
        si_wire_request_t q;
        assert_int_equal(view ? si_wire_decode_request_view(a, alen, &q, NULL, NULL)
                              : si_wire_decode_request(a, alen, &q, NULL, NULL), 0);
        assert_int_equal(q.reply_encoding, SI_WIRE_ZEROS);
        assert_int_equal(q.input.encoding, SI_WIRE_ZEROS);
        assert_memory_equal(q.input.data, sparse, N * sizeof(float));
        si_wire_request_free(&q);
    }
    /* Every proper prefix is refused (the tensor is last, the check exact). */
    for (size_t cut = 0; cut < alen; cut += 1 + cut / 16) {
        si_wire_request_t q;
        assert_int_equal(si_wire_decode_request_view(a, cut, &q, NULL, NULL), -1);
    }
    /* A corrupt bitmap is refused by both decoders. */
    si_err_t err = {""};
    si_wire_request_t q;
    uint8_t *c = malloc(alen);
    memcpy(c, a, alen);
    c[alen - zlen] ^= 0x01; /* flip element 0's bit: one element too many or too few */
    assert_int_equal(si_wire_decode_request_view(c, alen, &q, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "not a ZEROS encoding"));
    assert_int_equal(si_wire_decode_request(c, alen, &q, NULL, &err), -1);
    free(c);
    free(a);
    si_wire_reply_free(&d);
    free(buf);
    /* Dense data: ZEROS allowed but not worth it, so DENSE goes out. */
    rep.output.data = dense;
    assert_int_equal(si_wire_encode_reply(&rep, &buf, &len, NULL), 0);
    assert_int_equal(si_wire_decode_reply_view(buf, len, &d, NULL, NULL), 0);
    assert_int_equal(d.output.encoding, SI_WIRE_DENSE);
    assert_int_equal(d.output.nbytes, (size_t)N * 4);
    si_wire_reply_free(&d);
    free(buf);
    /* ZEROS is float32 only, both ways; an unknown encoding is refused. */
    rep.output.data = sparse, rep.output.dtype = SI_WIRE_FP16;
    assert_int_equal(si_wire_encode_reply(&rep, &buf, &len, &err), -1);
    assert_non_null(strstr(err.msg, "ZEROS encodes float32 only"));
    rep.output.dtype = SI_WIRE_FP32, rep.output.encoding = (si_wire_encoding_t)7;
    assert_int_equal(si_wire_encode_reply(&rep, &buf, &len, &err), -1);
    assert_non_null(strstr(err.msg, "unknown encoding 7"));
    uint16_t h[24] = {0};
    int64_t dims[4] = {1, 2, 3, 4};
    Splitinfer__Tensor t = SPLITINFER__TENSOR__INIT;
    t.n_dims = 4, t.dims = dims, t.dtype = SPLITINFER__TENSOR__DTYPE__FLOAT16;
    t.encoding = SPLITINFER__TENSOR__ENCODING__ZEROS, t.data.data = (uint8_t *)h, t.data.len = 3;
    Splitinfer__StageReply m = SPLITINFER__STAGE_REPLY__INIT;
    m.output = &t;
    expect_reply_error(&m, "ZEROS encodes float32 only");
    Splitinfer__StageRequest mr = SPLITINFER__STAGE_REQUEST__INIT;
    t.dtype = SPLITINFER__TENSOR__DTYPE__FLOAT32, t.encoding = SPLITINFER__TENSOR__ENCODING__DENSE;
    t.data.len = 24 * 4;
    float z[24] = {0};
    t.data.data = (uint8_t *)z;
    mr.input = &t;
    mr.reply_encoding = (Splitinfer__Tensor__Encoding)5;
    expect_request_error(&mr, "reply_encoding: unknown encoding 5");
    free(sparse), free(dense);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dtype_names),
        cmocka_unit_test(test_f16_cases),
        cmocka_unit_test(test_f16_exhaustive),
        cmocka_unit_test(test_f16_vs_compiler),
        cmocka_unit_test(test_bf16),
        cmocka_unit_test(test_pack_elems),
        cmocka_unit_test(test_pack_elems_match_scalar),
        cmocka_unit_test(test_request_fp32_exact),
        cmocka_unit_test(test_request_narrow),
        cmocka_unit_test(test_reply_roundtrip),
        cmocka_unit_test(test_large),
        cmocka_unit_test(test_zero_copy_decode),
        cmocka_unit_test(test_zero_copy_encode_iov),
        cmocka_unit_test(test_unaligned_fp32),
        cmocka_unit_test(test_view_raw),
        cmocka_unit_test(test_forward_encoded),
        cmocka_unit_test(test_chain),
        cmocka_unit_test(test_resident),
        cmocka_unit_test(test_view_zero_copy),
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_truncations),
        cmocka_unit_test(test_random_bytes),
        cmocka_unit_test(test_malformed_fields),
        cmocka_unit_test(test_encode_rejects),
        cmocka_unit_test(test_zeros_codec),
        cmocka_unit_test(test_zeros_check_rejects),
        cmocka_unit_test(test_zeros_messages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
