/* wino_bench.c - Winograd (lib/wino.c) against oneDNN's direct 3x3 conv on ResNet50's shapes.
 *
 * Usage: cc -O2 -fopenmp -Ilib bench/wino_bench.c lib/wino.c lib/err.c -ldnnl -lm \
 *            -o build/wino_bench && OMP_NUM_THREADS=1 build/wino_bench && \
 *        OMP_NUM_THREADS=2 build/wino_bench         [optional arg: seconds per shape, default 2]
 *
 * For each shape oneDNN's convolution is built as lib/engine.c builds it
 * (src/dst/weights format "any", bias, ReLU post-op, user scratchpad,
 * weights reordered once); it picks nChw8c and jit:avx2, which this checks.
 * Winograd runs with the same nChw8c buffers at tile 2, tile 4 and the
 * automatic choice. The runs are interleaved (direct, F2, F4, auto, then the
 * same rotated by one, ...) so a noisy neighbour on the VM hits all alike,
 * and each column is the median of all repetitions. GF/s is the direct convolution's work
 * (2 C K 9 OH OW N flops) over the median time, for every column.
 */
#include <dnnl.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "wino.h"

typedef struct shape {
    const char *name;
    int c, h, w, pad_t, pad_b; /* K = C, N = 1, pad_l = pad_r = 1 */
} shape_t;

/* The four 3x3 convs of ResNet50's stages, one row band of each as the band
 * engine cuts them (top half, bottom half, a middle quarter, top band), and
 * the worst case for Winograd: bands of one output row (H 3, no pads), where
 * most of every tile is wasted. */
static const shape_t shapes[] = {
    {"64ch 56x56", 64, 56, 56, 1, 1},      {"128ch 28x28", 128, 28, 28, 1, 1},
    {"256ch 14x14", 256, 14, 14, 1, 1},    {"512ch 7x7", 512, 7, 7, 1, 1},
    {"band 64 H29 1/0", 64, 29, 56, 1, 0}, {"band 128 H15 0/1", 128, 15, 28, 0, 1},
    {"band 256 H6 0/0", 256, 6, 14, 0, 0}, {"band 512 H5 1/0", 512, 5, 7, 1, 0},
    {"thin 64 H3 0/0", 64, 3, 56, 0, 0},   {"thin 128 H3 0/0", 128, 3, 28, 0, 0},
    {"thin 256 H3 0/0", 256, 3, 14, 0, 0}, {"thin 512 H3 0/0", 512, 3, 7, 0, 0},
    {"thin 512 H2 1/0", 512, 2, 7, 1, 0},
};

#define CHECK(call)                                                                                \
    do {                                                                                           \
        dnnl_status_t s_ = (call);                                                                 \
        if (s_ != dnnl_success) {                                                                  \
            fprintf(stderr, "%s:%d: %s failed (%d)\n", __FILE__, __LINE__, #call, (int)s_);        \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static float frand(unsigned *s) { /* uniform [-1, 1) */
    *s = *s * 1664525u + 1013904223u;
    return (float)(*s >> 8) / 8388608.0f - 1.0f;
}

/* oneDNN's conv for shape s; returns the primitive and fills its memories. */
typedef struct direct {
    dnnl_primitive_t prim;
    dnnl_memory_t src, wts, bias, dst, scratch;
    void *wbuf, *sbuf;
    char impl[64];
} direct_t;

static void direct_create(direct_t *dc, dnnl_engine_t eng, dnnl_stream_t st, const shape_t *s,
                          int oh, int ow, const float *w, const float *b, float *src, float *dst) {
    dnnl_memory_desc_t smd, wmd, bmd, dmd, want_s, want_d, plain_w;
    dnnl_dims_t sd = {1, s->c, s->h, s->w}, wd = {s->c, s->c, 3, 3}, bd = {s->c};
    dnnl_dims_t dd = {1, s->c, oh, ow};
    CHECK(dnnl_memory_desc_init_by_tag(&smd, 4, sd, dnnl_f32, dnnl_format_tag_any));
    CHECK(dnnl_memory_desc_init_by_tag(&wmd, 4, wd, dnnl_f32, dnnl_format_tag_any));
    CHECK(dnnl_memory_desc_init_by_tag(&bmd, 1, bd, dnnl_f32, dnnl_x));
    CHECK(dnnl_memory_desc_init_by_tag(&dmd, 4, dd, dnnl_f32, dnnl_format_tag_any));
    dnnl_dims_t strides = {1, 1}, pl = {s->pad_t, 1}, pr = {s->pad_b, 1};
    dnnl_convolution_desc_t cd;
    CHECK(dnnl_convolution_forward_desc_init(&cd, dnnl_forward_inference, dnnl_convolution_direct,
                                             &smd, &wmd, &bmd, &dmd, strides, pl, pr));
    dnnl_primitive_attr_t attr;
    dnnl_post_ops_t po;
    CHECK(dnnl_primitive_attr_create(&attr));
    CHECK(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user));
    CHECK(dnnl_post_ops_create(&po));
    CHECK(dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu, 0, 0));
    CHECK(dnnl_primitive_attr_set_post_ops(attr, po));
    dnnl_primitive_desc_t pd;
    CHECK(dnnl_primitive_desc_create(&pd, &cd, attr, eng, NULL));
    dnnl_post_ops_destroy(po);
    dnnl_primitive_attr_destroy(attr);
    const char *impl = NULL;
    CHECK(dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl));
    snprintf(dc->impl, sizeof dc->impl, "%s", impl);

    /* Winograd reads and writes nChw8c: the bench is only fair if oneDNN
     * chose it too (it does on AVX2 for these channel counts). */
    CHECK(dnnl_memory_desc_init_by_tag(&want_s, 4, sd, dnnl_f32, dnnl_aBcd8b));
    CHECK(dnnl_memory_desc_init_by_tag(&want_d, 4, dd, dnnl_f32, dnnl_aBcd8b));
    if (!dnnl_memory_desc_equal(dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0), &want_s) ||
        !dnnl_memory_desc_equal(dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0), &want_d)) {
        fprintf(stderr, "%s: oneDNN did not choose nChw8c: this machine's oneDNN is not AVX2, "
                        "and the engine does not run Winograd here (lib/engine.h)\n", s->name);
        exit(1);
    }
    const dnnl_memory_desc_t *wq = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    const dnnl_memory_desc_t *sq = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    CHECK(dnnl_memory_create(&dc->src, &want_s, eng, src));
    CHECK(dnnl_memory_create(&dc->dst, &want_d, eng, dst));
    CHECK(dnnl_memory_create(&dc->bias, &bmd, eng, (void *)b));
    dc->wbuf = aligned_alloc(64, (dnnl_memory_desc_get_size(wq) + 63) & ~(size_t)63);
    CHECK(dnnl_memory_create(&dc->wts, wq, eng, dc->wbuf));
    size_t ss = sq ? dnnl_memory_desc_get_size(sq) : 0;
    dc->sbuf = ss ? aligned_alloc(64, (ss + 63) & ~(size_t)63) : NULL;
    dc->scratch = NULL;
    if (ss) CHECK(dnnl_memory_create(&dc->scratch, sq, eng, dc->sbuf));

    /* weights: plain oihw -> the primitive's layout, once */
    CHECK(dnnl_memory_desc_init_by_tag(&plain_w, 4, wd, dnnl_f32, dnnl_oihw));
    dnnl_memory_t pw;
    CHECK(dnnl_memory_create(&pw, &plain_w, eng, (void *)w));
    dnnl_primitive_desc_t rpd;
    dnnl_primitive_t r;
    CHECK(dnnl_reorder_primitive_desc_create(&rpd, &plain_w, eng, wq, eng, NULL));
    CHECK(dnnl_primitive_create(&r, rpd));
    dnnl_exec_arg_t ra[2] = {{DNNL_ARG_FROM, pw}, {DNNL_ARG_TO, dc->wts}};
    CHECK(dnnl_primitive_execute(r, st, 2, ra));
    CHECK(dnnl_stream_wait(st));
    dnnl_primitive_destroy(r);
    dnnl_primitive_desc_destroy(rpd);
    dnnl_memory_destroy(pw);

    CHECK(dnnl_primitive_create(&dc->prim, pd));
    dnnl_primitive_desc_destroy(pd);
}

static void direct_run(direct_t *dc, dnnl_stream_t st) {
    dnnl_exec_arg_t args[5] = {{DNNL_ARG_SRC, dc->src},
                               {DNNL_ARG_WEIGHTS, dc->wts},
                               {DNNL_ARG_BIAS, dc->bias},
                               {DNNL_ARG_DST, dc->dst},
                               {DNNL_ARG_SCRATCHPAD, dc->scratch}};
    CHECK(dnnl_primitive_execute(dc->prim, st, dc->scratch ? 5 : 4, args));
    CHECK(dnnl_stream_wait(st));
}

static void direct_free(direct_t *dc) {
    dnnl_primitive_destroy(dc->prim);
    dnnl_memory_destroy(dc->src);
    dnnl_memory_destroy(dc->wts);
    dnnl_memory_destroy(dc->bias);
    dnnl_memory_destroy(dc->dst);
    if (dc->scratch) dnnl_memory_destroy(dc->scratch);
    free(dc->wbuf);
    free(dc->sbuf);
}

int main(int argc, char **argv) {
    double budget_ms = (argc > 1 ? atof(argv[1]) : 2.0) * 1e3;
    dnnl_engine_t eng;
    dnnl_stream_t st;
    CHECK(dnnl_engine_create(&eng, dnnl_cpu, 0));
    CHECK(dnnl_stream_create(&st, eng, dnnl_stream_default_flags));
    int nth = omp_get_max_threads();
    printf("threads %d; median ms of interleaved runs; GF/s = direct-conv flops / time\n", nth);
    printf("%-17s %5s | %7s %6s | %7s %6s %5s | %7s %6s %5s | %4s %5s %5s\n", "shape", "reps",
           "direct", "GF/s", "F2 ms", "GF/s", "ratio", "F4 ms", "GF/s", "ratio", "auto", "ratio",
           "rec");
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        const shape_t *s = &shapes[si];
        int oh = s->h + s->pad_t + s->pad_b - 2, ow = s->w;
        size_t nsrc = (size_t)s->c * s->h * s->w, ndst = (size_t)s->c * oh * ow;
        size_t nw = (size_t)s->c * s->c * 9;
        float *src = aligned_alloc(64, nsrc * 4), *w = malloc(nw * 4), *b = malloc(s->c * 4);
        float *dst_d = aligned_alloc(64, ndst * 4), *dst_w[3];
        unsigned seed = 12345;
        float ws = sqrtf(6.0f / (9.0f * s->c)); /* uniform with kaiming variance */
        for (size_t i = 0; i < nsrc; i++) src[i] = frand(&seed);
        for (size_t i = 0; i < nw; i++) w[i] = ws * frand(&seed);
        for (int i = 0; i < s->c; i++) b[i] = 0.1f * frand(&seed);

        direct_t dc;
        direct_create(&dc, eng, st, s, oh, ow, w, b, src, dst_d);
        si_wino_t *wc[3];
        void *scratch[3];
        static const int tiles[3] = {2, 4, 0};
        si_wino_desc_t d = {.N = 1,
                            .C = s->c,
                            .H = s->h,
                            .W = s->w,
                            .K = s->c,
                            .pad_t = s->pad_t,
                            .pad_b = s->pad_b,
                            .pad_l = 1,
                            .pad_r = 1,
                            .w = w,
                            .b = b,
                            .act = SI_WINO_ACT_RELU};
        for (int v = 0; v < 3; v++) {
            si_err_t err = {""};
            d.tile = tiles[v];
            wc[v] = si_wino_create(&d, &err);
            if (!wc[v]) {
                fprintf(stderr, "%s: %s\n", s->name, err.msg);
                return 1;
            }
            scratch[v] = aligned_alloc(64, (si_wino_scratch_bytes(wc[v]) + 63) & ~(size_t)63);
            dst_w[v] = aligned_alloc(64, ndst * 4);
        }

        /* warm up (first-touch, caches), time one round, check agreement */
        direct_run(&dc, st);
        for (int v = 0; v < 3; v++) si_wino_run(wc[v], src, dst_w[v], scratch[v]);
        double t0 = now_ms();
        direct_run(&dc, st);
        for (int v = 0; v < 3; v++) si_wino_run(wc[v], src, dst_w[v], scratch[v]);
        double round_ms = now_ms() - t0;
        double maxd = 0, maxr = 0;
        for (int v = 0; v < 3; v++) {
            for (size_t i = 0; i < ndst; i++) {
                double e = fabs((double)dst_w[v][i] - dst_d[i]);
                if (!(e <= maxd)) maxd = e;
                if (fabs(dst_d[i]) > maxr) maxr = fabs(dst_d[i]);
            }
        }
        if (!(maxd <= 1e-4 * maxr)) {
            fprintf(stderr, "%s: winograd disagrees with oneDNN: %g of %g\n", s->name, maxd, maxr);
            return 1;
        }

        int reps = (int)(budget_ms / round_ms);
        if (reps < 21) reps = 21;
        if (reps > 2001) reps = 2001;
        double *t[4];
        for (int v = 0; v < 4; v++) t[v] = malloc((size_t)reps * sizeof(double));
        /* the order rotates every repetition: each variant follows each other
         * one equally often (what ran before decides what is left in cache) */
        for (int r = 0; r < reps; r++) {
            for (int j = 0; j < 4; j++) {
                int v = (r + j) % 4;
                double a = now_ms();
                if (v == 0)
                    direct_run(&dc, st);
                else
                    si_wino_run(wc[v - 1], src, dst_w[v - 1], scratch[v - 1]);
                t[v][r] = now_ms() - a;
            }
        }
        double med[4], gf[4];
        double flops = 2.0 * s->c * s->c * 9 * oh * ow;
        for (int v = 0; v < 4; v++) {
            med[v] = median(t[v], reps);
            gf[v] = flops / med[v] / 1e6;
        }
        printf("%-17s %5d | %7.3f %6.1f | %7.3f %6.1f %5.2f | %7.3f %6.1f %5.2f | F%d  %5.2f %5d\n",
               s->name, reps, med[0], gf[0], med[1], gf[1], med[1] / med[0], med[2], gf[2],
               med[2] / med[0], si_wino_tile(wc[2]), med[3] / med[0], si_wino_recommended(&d));
        if (!strstr(dc.impl, "avx2")) printf("  (oneDNN used %s, not jit:avx2)\n", dc.impl);
        fflush(stdout);

        for (int v = 0; v < 4; v++) free(t[v]);
        for (int v = 0; v < 3; v++) {
            si_wino_free(wc[v]);
            free(scratch[v]);
            free(dst_w[v]);
        }
        direct_free(&dc);
        free(src);
        free(w);
        free(b);
        free(dst_d);
    }
    dnnl_stream_destroy(st);
    dnnl_engine_destroy(eng);
    return 0;
}
