/* test_wino.c - Winograd 3x3 convolution against a naive direct convolution
 * in double, on ResNet50's 3x3 shapes and on row bands (pads 0/1 at top and
 * bottom independently), for both tiles F(2x2,3x3) and F(4x4,3x3), with and
 * without the residual sum, for every activation, batch 1 and 2; plus the
 * bad descriptors create must refuse, and thread-count independence.
 *
 * Bar: max |wino - ref| <= 1e-4 * max |ref| with kaiming weights
 * N(0, sqrt(2 / 9C)) and inputs N(0, 1). */
#include <math.h>
#include <omp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "wino.h"

#define TOL 1e-4

/* ---- deterministic N(0, 1) ---- */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static double uniform(void) { /* (0, 1), xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return ((rng_state * 0x2545F4914F6CDD1Dull >> 11) + 0.5) / 9007199254740992.0;
}

static double normal(void) { /* Box-Muller */
    return sqrt(-2 * log(uniform())) * cos(6.283185307179586 * uniform());
}

static float *randn(size_t n, double sd) {
    float *p = malloc(n * sizeof *p);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++) p[i] = (float)(normal() * sd);
    return p;
}

/* ---- a case: shape, data, and the reference before the epilogue ---- */

typedef struct conv_case {
    int n, c, h, w, k, pt, pb, pl, pr, oh, ow;
    float *src;  /* [n][c/8][h][w][8] */
    float *wt;   /* [k][c][3][3] */
    float *bias; /* [k] */
    float *res;  /* residual [n][k/8][oh][ow][8] */
    double *ref; /* direct convolution + bias, no residual or activation, plain [n][k][oh][ow] */
} conv_case_t;

static size_t idx8(int c, int h, int w, int n, int ch, int y, int x) { /* nChw8c offset */
    return ((((size_t)n * (c / 8) + ch / 8) * h + y) * w + x) * 8 + ch % 8;
}

/* Naive direct convolution in double: every output is a plain sum over
 * (c, ky, kx), independent of the code under test. */
static void reference(conv_case_t *cc) {
    size_t plane = (size_t)cc->oh * cc->ow;
    double *in = malloc((size_t)cc->n * cc->c * cc->h * cc->w * sizeof *in);
    cc->ref = malloc((size_t)cc->n * cc->k * plane * sizeof *cc->ref);
    assert_non_null(in);
    assert_non_null(cc->ref);
    for (int n = 0; n < cc->n; n++) /* to plain NCHW, in double */
        for (int ch = 0; ch < cc->c; ch++)
            for (int y = 0; y < cc->h; y++)
                for (int x = 0; x < cc->w; x++)
                    in[(((size_t)n * cc->c + ch) * cc->h + y) * cc->w + x] =
                        cc->src[idx8(cc->c, cc->h, cc->w, n, ch, y, x)];
    for (int n = 0; n < cc->n; n++) {
        for (int k = 0; k < cc->k; k++) {
            double *o = cc->ref + ((size_t)n * cc->k + k) * plane;
            for (size_t i = 0; i < plane; i++) o[i] = cc->bias[k];
            for (int ch = 0; ch < cc->c; ch++) {
                const double *ip = in + ((size_t)n * cc->c + ch) * cc->h * cc->w;
                for (int ky = 0; ky < 3; ky++) {
                    for (int kx = 0; kx < 3; kx++) {
                        double wv = cc->wt[(((size_t)k * cc->c + ch) * 3 + ky) * 3 + kx];
                        /* output column x reads input column x + kx - pl */
                        int xa = cc->pl - kx > 0 ? cc->pl - kx : 0;
                        int xb = cc->w + cc->pl - kx < cc->ow ? cc->w + cc->pl - kx : cc->ow;
                        for (int y = 0; y < cc->oh; y++) {
                            int iy = y + ky - cc->pt;
                            if (iy < 0 || iy >= cc->h) continue;
                            const double *row = ip + (size_t)iy * cc->w + kx - cc->pl;
                            double *orow = o + (size_t)y * cc->ow;
                            for (int x = xa; x < xb; x++) orow[x] += wv * row[x];
                        }
                    }
                }
            }
        }
    }
    free(in);
}

static void case_init(conv_case_t *cc, int n, int c, int h, int w, int k, int pt, int pb) {
    memset(cc, 0, sizeof *cc);
    cc->n = n, cc->c = c, cc->h = h, cc->w = w, cc->k = k;
    cc->pt = pt, cc->pb = pb, cc->pl = 1, cc->pr = 1;
    cc->oh = h + pt + pb - 2, cc->ow = w + 2 - 2;
    cc->src = randn((size_t)n * c * h * w, 1.0);
    cc->wt = randn((size_t)k * c * 9, sqrt(2.0 / (9.0 * c))); /* kaiming */
    cc->bias = randn((size_t)k, 0.1);
    cc->res = randn((size_t)n * k * cc->oh * cc->ow, 1.0);
    reference(cc);
}

static void case_free(conv_case_t *cc) {
    free(cc->src);
    free(cc->wt);
    free(cc->bias);
    free(cc->res);
    free(cc->ref);
}

static si_wino_desc_t desc_of(const conv_case_t *cc, int n, int tile, int with_sum, int act) {
    si_wino_desc_t d = {.N = n,
                        .C = cc->c,
                        .H = cc->h,
                        .W = cc->w,
                        .K = cc->k,
                        .pad_t = cc->pt,
                        .pad_b = cc->pb,
                        .pad_l = cc->pl,
                        .pad_r = cc->pr,
                        .w = cc->wt,
                        .b = cc->bias,
                        .with_sum = with_sum,
                        .act = act,
                        .lo = 0.0f,
                        .hi = 6.0f,
                        .tile = tile};
    return d;
}

/* Runs the Winograd conv on the first n images of cc with tile/with_sum/act
 * and returns max|diff| / max|ref| against the epilogue applied to cc->ref. */
static double run_and_compare(const conv_case_t *cc, int n, int tile, int with_sum, int act) {
    si_err_t err = {""};
    si_wino_desc_t d = desc_of(cc, n, tile, with_sum, act);
    si_wino_t *wc = si_wino_create(&d, &err);
    if (!wc) fail_msg("create: %s", err.msg);
    if (tile) assert_int_equal(si_wino_tile(wc), tile);
    size_t out = (size_t)n * cc->k * cc->oh * cc->ow;
    float *dst = malloc(out * sizeof *dst);
    void *scratch = malloc(si_wino_scratch_bytes(wc));
    assert_non_null(dst);
    assert_non_null(scratch);
    if (with_sum)
        memcpy(dst, cc->res, out * sizeof *dst);
    else
        for (size_t i = 0; i < out; i++) dst[i] = NAN; /* every output must be written */
    assert_int_equal(si_wino_run(wc, cc->src, dst, scratch), 0);
    double max_ref = 0, max_diff = 0;
    for (int im = 0; im < n; im++) {
        for (int k = 0; k < cc->k; k++) {
            for (int y = 0; y < cc->oh; y++) {
                for (int x = 0; x < cc->ow; x++) {
                    size_t o8 = idx8(cc->k, cc->oh, cc->ow, im, k, y, x);
                    double r = cc->ref[(((size_t)im * cc->k + k) * cc->oh + y) * cc->ow + x];
                    if (with_sum) r += cc->res[o8];
                    if (act == SI_WINO_ACT_RELU) r = r > 0 ? r : 0;
                    if (act == SI_WINO_ACT_CLIP) r = r < 0 ? 0 : r > 6 ? 6 : r;
                    double diff = fabs((double)dst[o8] - r);
                    if (!(diff <= max_diff)) max_diff = diff; /* NaN sticks */
                    if (fabs(r) > max_ref) max_ref = fabs(r);
                }
            }
        }
    }
    free(scratch);
    free(dst);
    si_wino_free(wc);
    assert_true(max_ref > 0);
    return max_diff / max_ref;
}

/* Checks every tile x epilogue x batch combination on one case; prints the
 * worst error of each tile so the margin to the bar is visible. */
static void check_case(const conv_case_t *cc, const char *name) {
    static const int tiles[] = {2, 4, 0};
    double worst[3] = {0, 0, 0};
    for (int ti = 0; ti < 3; ti++) {
        for (int with_sum = 0; with_sum < 2; with_sum++) {
            for (int act = SI_WINO_ACT_NONE; act <= SI_WINO_ACT_CLIP; act++) {
                for (int n = 1; n <= cc->n; n++) {
                    double e = run_and_compare(cc, n, tiles[ti], with_sum, act);
                    if (!(e <= TOL))
                        fail_msg("%s: tile %d sum %d act %d N %d: rel error %.3g > %g", name,
                                 tiles[ti], with_sum, act, n, e, TOL);
                    if (e > worst[ti]) worst[ti] = e;
                }
            }
        }
    }
    print_message("%-32s max rel error F(2x2) %.2e  F(4x4) %.2e\n", name, worst[0], worst[1]);
}

/* ---- tests ---- */

static void resnet_shape(int c, int hw) {
    conv_case_t cc;
    char name[64];
    case_init(&cc, 2, c, hw, hw, c, 1, 1);
    snprintf(name, sizeof name, "%d ch %dx%d", c, hw, hw);
    check_case(&cc, name);
    case_free(&cc);
}

static void test_resnet_56(void **state) {
    (void)state;
    resnet_shape(64, 56);
}

static void test_resnet_28(void **state) {
    (void)state;
    resnet_shape(128, 28);
}

static void test_resnet_14(void **state) {
    (void)state;
    resnet_shape(256, 14);
}

static void test_resnet_7(void **state) {
    (void)state;
    resnet_shape(512, 7);
}

/* Bands: every height in the list with each top/bottom pad 0 or 1. C = 16
 * and K = 24 (a trailing 8-wide weight panel), W = 13 (a partial last
 * tile column for both tiles). */
static void test_bands(void **state) {
    (void)state;
    static const int hs[] = {1, 2, 3, 5, 8, 15};
    int checked = 0;
    for (size_t i = 0; i < sizeof hs / sizeof *hs; i++) {
        for (int pt = 0; pt < 2; pt++) {
            for (int pb = 0; pb < 2; pb++) {
                if (hs[i] + pt + pb - 2 < 1) continue; /* no output rows: see test_refused */
                conv_case_t cc;
                char name[64];
                case_init(&cc, 2, 16, hs[i], 13, 24, pt, pb);
                snprintf(name, sizeof name, "band H %d pad_t %d pad_b %d", hs[i], pt, pb);
                check_case(&cc, name);
                case_free(&cc);
                checked++;
            }
        }
    }
    /* 24 combinations minus the 4 with no output rows (H + pad_t + pad_b < 3) */
    assert_int_equal(checked, 20);
}

/* Bands of the ResNet50 sizes, as the band engine cuts them (9 rows, one
 * image edge each side, and an inner band). */
static void test_resnet_bands(void **state) {
    (void)state;
    static const int shapes[][5] = {/* c, w, h, pad_t, pad_b */
                                    {64, 56, 9, 1, 0},
                                    {128, 28, 9, 0, 1},
                                    {256, 14, 9, 0, 0},
                                    {512, 7, 5, 1, 0},
                                    {512, 7, 4, 0, 1}};
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        conv_case_t cc;
        char name[64];
        const int *s = shapes[i];
        case_init(&cc, 2, s[0], s[2], s[1], s[0], s[3], s[4]);
        snprintf(name, sizeof name, "band %d ch W %d H %d pads %d/%d", s[0], s[1], s[2], s[3],
                 s[4]);
        check_case(&cc, name);
        case_free(&cc);
    }
}

/* Results do not depend on the thread count (each tile's sums run in the
 * same order whichever block or thread computes it): bit-identical. The
 * first case has many small blocks (one per thread at a time), the second
 * weights big enough for a single block that the threads share. */
static void test_threads(void **state) {
    (void)state;
    static const int shapes[][4] = {{64, 20, 32, 2}, {256, 6, 256, 1}}; /* c, h = w, k, n */
    int saved = omp_get_max_threads();
    for (int si = 0; si < 2; si++) {
        conv_case_t cc;
        case_init(&cc, shapes[si][3], shapes[si][0], shapes[si][1], shapes[si][1], shapes[si][2], 1,
                  1);
        for (int tile = 2; tile <= 4; tile += 2) {
            size_t out = (size_t)cc.n * cc.k * cc.oh * cc.ow;
            float *a = calloc(out, sizeof *a), *b = calloc(out, sizeof *b);
            si_wino_desc_t d = desc_of(&cc, cc.n, tile, 0, SI_WINO_ACT_RELU);
            omp_set_num_threads(2);
            si_wino_t *wc = si_wino_create(&d, NULL);
            assert_non_null(wc);
            /* misaligned on purpose: run aligns inside the slack it asked for */
            char *scratch = malloc(si_wino_scratch_bytes(wc) + 1);
            assert_non_null(a);
            assert_non_null(b);
            assert_non_null(scratch);
            omp_set_num_threads(1);
            assert_int_equal(si_wino_run(wc, cc.src, a, scratch + 1), 0);
            omp_set_num_threads(2);
            assert_int_equal(si_wino_run(wc, cc.src, b, scratch + 1), 0);
            assert_memory_equal(a, b, out * sizeof *a);
            omp_set_num_threads(8); /* more than create saw: capped, same scratch suffices */
            memset(b, 0, out * sizeof *b);
            assert_int_equal(si_wino_run(wc, cc.src, b, scratch + 1), 0);
            assert_memory_equal(a, b, out * sizeof *a);
            free(scratch);
            free(a);
            free(b);
            si_wino_free(wc);
        }
        case_free(&cc);
    }
    omp_set_num_threads(saved);
}

static void expect_refused(si_wino_desc_t d, const char *needle) {
    si_err_t err = {""};
    assert_null(si_wino_create(&d, &err));
    if (!strstr(err.msg, needle)) fail_msg("message '%s' lacks '%s'", err.msg, needle);
}

static void test_refused(void **state) {
    (void)state;
    float w[16 * 16 * 9] = {0};
    si_wino_desc_t ok = {.N = 1,
                         .C = 16,
                         .H = 4,
                         .W = 4,
                         .K = 16,
                         .pad_t = 1,
                         .pad_b = 1,
                         .pad_l = 1,
                         .pad_r = 1,
                         .w = w};
    si_wino_desc_t d = ok;
    d.C = 12;
    expect_refused(d, "multiples of 8");
    d = ok, d.K = 20;
    expect_refused(d, "multiples of 8");
    d = ok, d.H = 1, d.pad_t = 0, d.pad_b = 1;
    expect_refused(d, "0x4 output");
    d = ok, d.pad_l = -1;
    expect_refused(d, "pads");
    d = ok, d.tile = 3;
    expect_refused(d, "tile 3");
    d = ok, d.act = SI_WINO_ACT_CLIP, d.lo = 1, d.hi = 0;
    expect_refused(d, "activation");
    d = ok, d.w = NULL;
    expect_refused(d, "no weights");
    assert_null(si_wino_create(NULL, NULL));
    si_wino_t *wc = si_wino_create(&ok, NULL);
    assert_non_null(wc);
    float x[16 * 16];
    assert_int_equal(si_wino_run(wc, NULL, x, x), -1);
    assert_int_equal(si_wino_run(NULL, x, x, x), -1);
    assert_true(si_wino_bytes(wc) >= 16 * 16 * 16 * sizeof(float));
    si_wino_free(wc);
    si_wino_free(NULL);
}

/* Borrowed transformed weights follow a move (si_wino_repoint); weights it
 * transformed itself are its own and stay. */
static void test_repoint(void **state) {
    (void)state;
    float w[16 * 16 * 9];
    for (int i = 0; i < 16 * 16 * 9; i++) w[i] = (float)(i % 7) - 3.0f;
    si_wino_desc_t d = {.N = 1, .C = 16, .H = 4, .W = 4, .K = 16, .pad_t = 1, .pad_b = 1,
                        .pad_l = 1, .pad_r = 1, .w = w, .tile = 2};
    si_wino_t *own = si_wino_create(&d, NULL);
    assert_non_null(own);
    size_t bytes;
    const float *u = si_wino_weights(own, &bytes);
    float *a = malloc(bytes), *b = malloc(bytes);
    memcpy(a, u, bytes), memcpy(b, u, bytes);
    assert_int_equal(si_wino_repoint(own, u, bytes, b), 0); /* its own: not moved */
    assert_ptr_equal(si_wino_weights(own, &bytes), u);
    d.w = NULL, d.u = a;
    si_wino_t *lent = si_wino_create(&d, NULL);
    assert_non_null(lent);
    assert_ptr_equal(si_wino_weights(lent, &bytes), a);
    assert_int_equal(si_wino_repoint(lent, b, bytes, a), 0); /* not in that range */
    assert_int_equal(si_wino_repoint(lent, a, bytes, b), 1);
    assert_ptr_equal(si_wino_weights(lent, &bytes), b);
    /* Same numbers from the moved copy as from its own. */
    float x[16 * 16], y1[16 * 16] = {0}, y2[16 * 16] = {0};
    for (int i = 0; i < 16 * 16; i++) x[i] = (float)(i % 5) * 0.5f;
    memset(a, 0, bytes); /* the old place is gone */
    size_t ss = si_wino_scratch_bytes(own) > si_wino_scratch_bytes(lent) ? si_wino_scratch_bytes(own)
                                                                         : si_wino_scratch_bytes(lent);
    float *scratch = aligned_alloc(64, (ss + 63) & ~(size_t)63);
    assert_int_equal(si_wino_run(own, x, y1, scratch), 0);
    assert_int_equal(si_wino_run(lent, x, y2, scratch), 0);
    assert_memory_equal(y1, y2, sizeof y1);
    si_wino_free(own), si_wino_free(lent);
    free(a), free(b), free(scratch);
}

/* The automatic tile is one of the two, and a recommendation exists for
 * every ResNet50 shape (the values themselves are benchmark results). */
static void test_choice(void **state) {
    (void)state;
    static const int shapes[][2] = {{64, 56}, {128, 28}, {256, 14}, {512, 7}};
    for (int i = 0; i < 4; i++) {
        si_wino_desc_t d = {.N = 1,
                            .C = shapes[i][0],
                            .K = shapes[i][0],
                            .H = shapes[i][1],
                            .W = shapes[i][1],
                            .pad_t = 1,
                            .pad_b = 1,
                            .pad_l = 1,
                            .pad_r = 1};
        int t = si_wino_pick_tile(&d);
        assert_true(t == 2 || t == 4);
        int r = si_wino_recommended(&d);
        assert_true(r == 0 || r == 1);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refused),      cmocka_unit_test(test_choice),
        cmocka_unit_test(test_bands),        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_resnet_bands), cmocka_unit_test(test_resnet_7),
        cmocka_unit_test(test_resnet_14),    cmocka_unit_test(test_resnet_28),
        cmocka_unit_test(test_resnet_56),    cmocka_unit_test(test_repoint),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
