/* test_graph.c - graph IR, segments, .sfm files and the engine on small
 * hand-built graphs, checked against a naive reference written here. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine.h"
#include "graph.h"
#include "hugemem.h"
#include "modelfile.h"
#include "onnx.h"

static unsigned rng = 1;
static float frand(void) { /* uniform in [-1, 1), reproducible */
    rng = rng * 1664525u + 1013904223u;
    return (float)(rng >> 8) / (float)(1u << 23) - 1.0f;
}

static float *rand_array(size_t n, float scale) {
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++) p[i] = frand() * scale;
    return p;
}

static si_node_t node(si_op_t op, int in, int out) {
    si_node_t n;
    memset(&n, 0, sizeof n);
    n.op = op, n.in = in, n.in2 = -1, n.out = out, n.group = 1;
    n.kh = n.kw = n.sh = n.sw = n.dh = n.dw = 1;
    snprintf(n.name, sizeof n.name, "%s_%d", si_op_name(op), out);
    return n;
}

static si_node_t conv(int in, int out, int cin, int cout, int k, int s, int pad, int group) {
    si_node_t n = node(SI_OP_CONV, in, out);
    n.kh = n.kw = k, n.sh = n.sw = s;
    n.pad_t = n.pad_l = n.pad_b = n.pad_r = pad;
    n.group = group, n.cout = cout, n.cin = cin / group;
    n.w = rand_array((size_t)cout * (size_t)(cin / group) * (size_t)(k * k), 0.3f);
    n.b = rand_array((size_t)cout, 0.1f);
    return n;
}

/* A small residual network: the shapes of a ResNet block and a MobileNet
 * depthwise conv in one.
 *   v0 [1,4,9,9] -conv3x3 s1 relu-> v1 [1,8,9,9] -maxpool3 s2 p1-> v2 [1,8,5,5]
 *   v2 -conv1x1-> v3; v3 -dwconv3x3 clip(0,6)-> v4; v4 -conv1x1 +v2 relu-> v5
 *   v5 -avgpool(global)-> v6 [1,8,1,1] -flatten-> v7 [1,8] -dense-> v8 [1,5]  */
static si_graph_t *tiny_graph(void) {
    si_graph_t *g = si_graph_new();
    int d0[4] = {1, 4, 9, 9}, dx[4] = {1, 0, 0, 0};
    si_graph_add_value(g, 4, d0);
    for (int v = 1; v <= 6; v++) si_graph_add_value(g, 4, dx);
    si_graph_add_value(g, 2, dx);
    si_graph_add_value(g, 2, dx);
    si_node_t n = conv(0, 1, 4, 8, 3, 1, 1, 1);
    n.act = SI_ACT_RELU;
    si_graph_add_node(g, &n);
    n = node(SI_OP_POOL_MAX, 1, 2);
    n.kh = n.kw = 3, n.sh = n.sw = 2, n.pad_t = n.pad_l = n.pad_b = n.pad_r = 1;
    si_graph_add_node(g, &n);
    n = conv(2, 3, 8, 8, 1, 1, 0, 1);
    si_graph_add_node(g, &n);
    n = conv(3, 4, 8, 8, 3, 1, 1, 8);
    n.act = SI_ACT_CLIP, n.act_lo = 0, n.act_hi = 6;
    si_graph_add_node(g, &n);
    n = conv(4, 5, 8, 8, 1, 1, 0, 1);
    n.in2 = 2, n.act = SI_ACT_RELU;
    si_graph_add_node(g, &n);
    n = node(SI_OP_POOL_AVG, 5, 6);
    n.kh = n.kw = 0;
    si_graph_add_node(g, &n);
    n = node(SI_OP_FLATTEN, 6, 7);
    si_graph_add_node(g, &n);
    n = node(SI_OP_DENSE, 7, 8);
    n.cout = 5, n.cin = 8;
    n.w = rand_array(40, 0.5f), n.b = rand_array(5, 0.1f);
    si_graph_add_node(g, &n);
    g->output = 8;
    return g;
}

static void free_tiny(si_graph_t *g) {
    for (int i = 0; i < g->n_nodes; i++) free((void *)g->nodes[i].w), free((void *)g->nodes[i].b);
    si_graph_free(g);
}

/* Naive reference of one node on batch 1, plain layouts. */
static void ref_node(const si_graph_t *g, const si_node_t *n, float **vals) {
    const si_value_t *x = &g->values[n->in], *y = &g->values[n->out];
    const float *X = vals[n->in];
    float *Y = vals[n->out] = calloc(si_value_numel(y), sizeof(float));
    int C = x->ndim == 4 ? x->dims[1] : x->dims[1], H = x->ndim == 4 ? x->dims[2] : 1,
        W = x->ndim == 4 ? x->dims[3] : 1;
    int OC = y->dims[1], OH = y->ndim == 4 ? y->dims[2] : 1, OW = y->ndim == 4 ? y->dims[3] : 1;
    switch (n->op) {
    case SI_OP_CONV: {
        int icg = C / n->group, ocg = OC / n->group;
        for (int o = 0; o < OC; o++)
            for (int oh = 0; oh < OH; oh++)
                for (int ow = 0; ow < OW; ow++) {
                    double acc = n->b[o];
                    int gi = o / ocg;
                    for (int ci = 0; ci < icg; ci++)
                        for (int kh = 0; kh < n->kh; kh++)
                            for (int kw = 0; kw < n->kw; kw++) {
                                int ih = oh * n->sh - n->pad_t + kh * n->dh;
                                int iw = ow * n->sw - n->pad_l + kw * n->dw;
                                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                                acc += X[((size_t)(gi * icg + ci) * H + ih) * W + iw] *
                                       n->w[(((size_t)o * icg + ci) * n->kh + kh) * n->kw + kw];
                            }
                    Y[((size_t)o * OH + oh) * OW + ow] = (float)acc;
                }
        break;
    }
    case SI_OP_POOL_MAX:
    case SI_OP_POOL_AVG:
        for (int c = 0; c < C; c++)
            for (int oh = 0; oh < OH; oh++)
                for (int ow = 0; ow < OW; ow++) {
                    double acc = n->op == SI_OP_POOL_MAX ? -INFINITY : 0;
                    int cnt = 0;
                    for (int kh = 0; kh < n->kh; kh++)
                        for (int kw = 0; kw < n->kw; kw++) {
                            int ih = oh * n->sh - n->pad_t + kh, iw = ow * n->sw - n->pad_l + kw;
                            if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                            float v = X[((size_t)c * H + ih) * W + iw];
                            if (n->op == SI_OP_POOL_MAX) acc = v > acc ? v : acc;
                            else acc += v;
                            cnt++;
                        }
                    Y[((size_t)c * OH + oh) * OW + ow] =
                        (float)(n->op == SI_OP_POOL_MAX ? acc : acc / cnt);
                }
        break;
    case SI_OP_FLATTEN: memcpy(Y, X, si_value_numel(x) * sizeof(float)); break;
    case SI_OP_DENSE:
        for (int o = 0; o < OC; o++) {
            double acc = n->b[o];
            for (int i = 0; i < n->cin; i++) acc += X[i] * n->w[(size_t)o * n->cin + i];
            Y[o] = (float)acc;
        }
        break;
    default: break;
    }
    size_t ny = si_value_numel(y);
    if (n->in2 >= 0)
        for (size_t i = 0; i < ny; i++) Y[i] += vals[n->in2][i];
    for (size_t i = 0; i < ny; i++) {
        if (n->act == SI_ACT_RELU && Y[i] < 0) Y[i] = 0;
        if (n->act == SI_ACT_CLIP) Y[i] = Y[i] < n->act_lo ? n->act_lo : Y[i] > n->act_hi ? n->act_hi : Y[i];
    }
}

static void test_shapes_and_cuts(void **state) {
    (void)state;
    si_graph_t *g = tiny_graph();
    si_err_t err = {{0}};
    assert_int_equal(si_graph_finish(g, &err), 0);
    assert_int_equal(g->values[2].dims[2], 5); /* (9 + 2 - 3) / 2 + 1 */
    assert_int_equal(g->values[6].dims[2], 1);
    assert_int_equal(g->values[8].dims[1], 5);
    assert_int_equal(g->nodes[5].kh, 5); /* global pool resolved to the map */
    /* v2 is live across nodes 2..4 (the residual): no cut at 3 and 4. */
    int want[] = {0, 1, 2, 5, 6, 7, 8};
    assert_int_equal(g->n_cuts, 7);
    for (int i = 0; i < 7; i++) assert_int_equal(g->cuts[i], want[i]);
    assert_int_equal(g->n_blocks, 0); /* one residual block is not a ResNet */
    si_segment_t s;
    assert_int_equal(si_graph_segment(g, "#2..#4", &s, &err), 0);
    assert_int_equal(s.node_begin, 2);
    assert_int_equal(s.node_end, 6);
    assert_int_equal(s.in, 2);
    assert_int_equal(s.out, 6);
    assert_int_equal(si_graph_segment(g, "#4..#2", &s, &err), -1);
    assert_non_null(strstr(err.msg, "backwards"));
    assert_int_equal(si_graph_segment(g, "#9..#10", &s, &err), -1);
    assert_non_null(strstr(err.msg, "no cut point"));
    assert_int_equal(si_graph_segment(g, "layer1", &s, &err), -1);
    assert_non_null(strstr(err.msg, "not ResNet-shaped"));
    assert_int_equal(si_graph_segment(g, NULL, &s, &err), 0);
    assert_int_equal(s.node_end, 8);
    free_tiny(g);
}

static void test_bad_graphs(void **state) {
    (void)state;
    si_err_t err = {{0}};
    si_graph_t *g = tiny_graph();
    g->nodes[2].in = 5; /* reads a value computed later */
    assert_int_equal(si_graph_finish(g, &err), -1);
    assert_non_null(strstr(err.msg, "topological"));
    free_tiny(g);
    g = tiny_graph();
    g->nodes[7].cin = 9; /* dense weights do not fit */
    assert_int_equal(si_graph_finish(g, &err), -1);
    assert_non_null(strstr(err.msg, "features"));
    free_tiny(g);
    g = tiny_graph();
    g->nodes[0].kh = 20; /* kernel larger than the padded input */
    assert_int_equal(si_graph_finish(g, &err), -1);
    assert_non_null(strstr(err.msg, "does not fit"));
    free_tiny(g);
}

/* Runs seg on the engine and compares with the naive reference. */
static void check_engine(si_graph_t *g, const char *spec, int batch) {
    si_err_t err = {{0}};
    si_segment_t s;
    assert_int_equal(si_graph_segment(g, spec, &s, &err), 0);
    float **vals = calloc((size_t)g->n_values, sizeof *vals);
    vals[s.in] = rand_array(si_value_numel(&g->values[s.in]), 1.0f);
    for (int i = s.node_begin; i < s.node_end; i++) ref_node(g, &g->nodes[i], vals);
    si_engine_t *e = si_engine_create(g, &s, batch, &err);
    assert_non_null(e);
    size_t nin = si_engine_in_numel(e), nout = si_engine_out_numel(e);
    size_t in1 = nin / (size_t)batch, out1 = nout / (size_t)batch;
    assert_int_equal(in1, si_value_numel(&g->values[s.in]));
    float *in = malloc(nin * sizeof *in), *out = malloc(nout * sizeof *out);
    for (int b = 0; b < batch; b++) memcpy(in + (size_t)b * in1, vals[s.in], in1 * sizeof *in);
    assert_int_equal(si_engine_run(e, in, out, &err), 0);
    assert_int_equal(si_engine_run(e, in, out, &err), 0); /* twice: buffers reused cleanly */
    const float *ref = vals[s.out];
    double mx = 0, md = 0;
    for (int b = 0; b < batch; b++)
        for (size_t i = 0; i < out1; i++) {
            double d = fabs(out[(size_t)b * out1 + i] - ref[i]);
            md = d > md ? d : md;
            mx = fabs(ref[i]) > mx ? fabs(ref[i]) : mx;
        }
    assert_true(mx > 0.01); /* the reference is not trivially zero */
    assert_true(md <= 1e-5 * (mx > 1 ? mx : 1));
    si_engine_free(e);
    free(in), free(out);
    for (int v = 0; v < g->n_values; v++) free(vals[v]);
    free(vals);
}

static void test_engine_matches_reference(void **state) {
    (void)state;
    si_graph_t *g = tiny_graph();
    assert_int_equal(si_graph_finish(g, NULL), 0);
    check_engine(g, NULL, 1);
    check_engine(g, NULL, 3);
    check_engine(g, "#2..#3", 1); /* the residual block alone */
    check_engine(g, "#3..#6", 2); /* pool, flatten, dense */
    free_tiny(g);
}

/* Stitched bands equal the whole output: every K up to the output's height. */
static void test_bands_stitch(void **state) {
    (void)state;
    si_err_t err = {{0}};
    si_graph_t *g = tiny_graph();
    assert_int_equal(si_graph_finish(g, NULL), 0);
    const char *specs[] = {"#0..#3", "#1..#3", "#2..#3", "#0..#1"};
    for (size_t sp = 0; sp < sizeof specs / sizeof *specs; sp++) {
        si_segment_t s;
        assert_int_equal(si_graph_segment(g, specs[sp], &s, &err), 0);
        const si_value_t *x = &g->values[s.in], *y = &g->values[s.out];
        int C = x->dims[1], H = x->dims[2], W = x->dims[3];
        int OC = y->dims[1], OH = y->dims[2], OW = y->dims[3];
        float *in = rand_array((size_t)C * H * W, 1.0f), *whole = malloc(sizeof(float) * OC * OH * OW);
        si_engine_t *e = si_engine_create(g, &s, 1, &err);
        assert_non_null(e);
        assert_int_equal(si_engine_run(e, in, whole, &err), 0);
        si_engine_free(e);
        for (int K = 2; K <= OH; K++)
            for (int k = 0; k < K; k++) {
                int a, b;
                si_rows_split(OH, K, k, &a, &b);
                si_band_t band;
                assert_int_equal(si_graph_band(g, &s, a, b, &band, &err), 0);
                assert_true(band.in_begin >= 0 && band.in_end <= H && band.in_begin < band.in_end);
                e = si_engine_create_band(g, &s, &band, 1, &err);
                if (!e) fail_msg("%s K=%d k=%d: %s", specs[sp], K, k, err.msg);
                int hin = band.in_end - band.in_begin;
                float *bin = malloc(sizeof(float) * C * hin * W), *bout = malloc(sizeof(float) * OC * (b - a) * OW);
                for (int c = 0; c < C; c++)
                    memcpy(bin + (size_t)c * hin * W, in + ((size_t)c * H + band.in_begin) * W,
                           sizeof(float) * hin * W);
                assert_int_equal(si_engine_run(e, bin, bout, &err), 0);
                for (int c = 0; c < OC; c++)
                    for (int r = a; r < b; r++)
                        for (int w = 0; w < OW; w++) {
                            float u = bout[((size_t)c * (b - a) + (r - a)) * OW + w];
                            float v = whole[((size_t)c * OH + r) * OW + w];
                            if (fabsf(u - v) > 1e-5f * (1 + fabsf(v)))
                                fail_msg("%s K=%d k=%d c=%d r=%d w=%d: %g vs %g", specs[sp], K, k, c, r, w, u, v);
                        }
                free(bin), free(bout);
                si_engine_free(e);
                si_band_free(&band);
            }
        free(in), free(whole);
    }
    si_segment_t s;
    si_band_t band;
    assert_int_equal(si_graph_segment(g, NULL, &s, &err), 0);
    assert_int_equal(si_graph_band(g, &s, 0, 1, &band, &err), 0); /* the whole flat output */
    si_band_free(&band);
    assert_int_equal(si_graph_band(g, &s, 0, 2, &band, &err), -1);
    assert_non_null(strstr(err.msg, "flat output"));
    free_tiny(g);
}

/* A band's MACs count the rows each node materializes, halo included. */
static void test_segment_macs(void **state) {
    (void)state;
    si_err_t err = {{0}};
    si_graph_t *g = tiny_graph();
    assert_int_equal(si_graph_finish(g, NULL), 0);
    si_segment_t s;
    si_band_t band;
    /* The first conv alone: 8 out x 4 in x 3x3 x 9x9 outputs. */
    assert_int_equal(si_graph_segment(g, "#0..#1", &s, &err), 0);
    assert_int_equal(si_segment_macs(g, &s, NULL), 8 * 4 * 9 * 9 * 9);
    assert_int_equal(si_graph_band(g, &s, 0, 5, &band, &err), 0);
    assert_int_equal(si_segment_macs(g, &s, &band), 8 * 4 * 9 * 5 * 9);
    si_band_free(&band);
    /* The block on 5x5 maps: 1x1 (8x8), depthwise 3x3 (8x9), 1x1 (8x8). Output
     * rows [0, 2) need rows [0, 3) of the depthwise conv's input: the first
     * 1x1 computes one halo row more than the others. */
    assert_int_equal(si_graph_segment(g, "#1..#3", &s, &err), 0);
    assert_int_equal(si_segment_macs(g, &s, NULL), (64 + 72 + 64) * 25);
    assert_int_equal(si_graph_band(g, &s, 0, 2, &band, &err), 0);
    assert_int_equal(si_segment_macs(g, &s, &band), 64 * 5 * 3 + 72 * 5 * 2 + 64 * 5 * 2);
    si_band_free(&band);
    /* The whole graph, with the dense layer a band computes whole. */
    assert_int_equal(si_graph_segment(g, NULL, &s, &err), 0);
    uint64_t sum = 0;
    for (int i = 0; i < g->n_nodes; i++) sum += si_node_macs(g, &g->nodes[i]);
    assert_int_equal(si_segment_macs(g, &s, NULL), sum);
    assert_int_equal(sum, 23328 + 5000 + 40);
    free_tiny(g);
}

static void test_sfm_roundtrip(void **state) {
    (void)state;
    si_err_t err = {{0}};
    si_graph_t *g = tiny_graph();
    assert_int_equal(si_graph_finish(g, NULL), 0);
    char full[] = "/tmp/si_test_XXXXXX", part[] = "/tmp/si_test_XXXXXX";
    close(mkstemp(full)), close(mkstemp(part));
    assert_int_equal(si_sfm_save(g, NULL, full, &err), 0);
    si_segment_t s;
    assert_int_equal(si_graph_segment(g, "#2..#3", &s, &err), 0);
    assert_int_equal(si_sfm_save(g, &s, part, &err), 0);

    si_graph_t *h = si_model_load(full, &err);
    assert_non_null(h);
    assert_int_equal(h->n_nodes, g->n_nodes);
    assert_int_equal(h->n_cuts, g->n_cuts);
    for (int i = 0; i < g->n_nodes; i++) {
        const si_node_t *a = &g->nodes[i], *b = &h->nodes[i];
        assert_int_equal(a->op, b->op);
        assert_int_equal(a->in2, b->in2);
        assert_int_equal(a->act, b->act);
        assert_string_equal(a->name, b->name);
        if (a->w) {
            assert_memory_equal(a->w, b->w, (size_t)a->cout * a->cin * a->kh * a->kw * sizeof(float));
            assert_int_equal((uintptr_t)b->w % 64, 0); /* aligned in the mapping */
        }
    }
    si_graph_free(h);

    /* A segment-only file: the segment runs, the rest is refused by name. */
    h = si_model_load(part, &err);
    assert_non_null(h);
    assert_null(h->nodes[0].w);
    assert_non_null(h->nodes[4].w);
    si_segment_t hs;
    assert_int_equal(si_graph_segment(h, "#2..#3", &hs, &err), 0);
    si_engine_t *e = si_engine_create(h, &hs, 1, &err);
    assert_non_null(e);
    si_engine_free(e);
    assert_int_equal(si_graph_segment(h, "all", &hs, &err), 0);
    assert_null(si_engine_create(h, &hs, 1, &err));
    assert_non_null(strstr(err.msg, "not in this model file"));
    /* No spec means the segment the file holds. */
    assert_int_equal(si_graph_segment(h, NULL, &hs, &err), 0);
    assert_int_equal(hs.cut_begin, 2);
    assert_int_equal(hs.cut_end, 3);
    si_graph_free(h);

    /* Truncated and corrupted copies fail with a message. */
    FILE *f = fopen(full, "rb");
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)len);
    assert_int_equal(fread(buf, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    long cuts[] = {0, 10, 63, 64, 200, len / 2, len - 1};
    for (size_t k = 0; k < sizeof cuts / sizeof *cuts; k++) {
        f = fopen(part, "wb");
        fwrite(buf, 1, (size_t)cuts[k], f);
        fclose(f);
        err.msg[0] = 0;
        assert_null(si_model_load(part, &err));
        assert_true(strlen(err.msg) > 0);
    }
    for (int trial = 0; trial < 200; trial++) { /* random byte flips in the tables */
        unsigned char *c = malloc((size_t)len);
        memcpy(c, buf, (size_t)len);
        for (int k = 0; k < 4; k++) c[8 + (unsigned)(frand() + 1) * 600 % 2000] ^= 0x5a;
        f = fopen(part, "wb");
        fwrite(c, 1, (size_t)len, f);
        fclose(f);
        si_graph_t *x = si_model_load(part, NULL); /* may load or not; must not crash */
        if (x) {
            si_segment_t xs;
            si_engine_t *xe = si_graph_segment(x, NULL, &xs, NULL) == 0 ? si_engine_create(x, &xs, 1, NULL) : NULL;
            si_engine_free(xe);
        }
        si_graph_free(x);
        free(c);
    }
    free(buf);
    unlink(full), unlink(part);
    free_tiny(g);
}

/* Weights saved in the engine's own layout load back zero-copy from the
 * mapping and compute the same output. */
static void test_sfm_prepacked(void **state) {
    (void)state;
    si_err_t err = {{0}};
    si_graph_t *g = tiny_graph();
    assert_int_equal(si_graph_finish(g, NULL), 0);
    si_segment_t s;
    assert_int_equal(si_graph_segment(g, NULL, &s, &err), 0);
    si_engine_t *e = si_engine_create(g, &s, 1, &err);
    assert_non_null(e);
    float *in = rand_array(4 * 9 * 9, 1.0f), want[5], got[5];
    assert_int_equal(si_engine_run(e, in, want, &err), 0);
    si_layout_t layouts[16];
    const float *orig_w[16];
    for (int i = 0; i < g->n_nodes; i++) orig_w[i] = g->nodes[i].w;
    int packed = si_engine_pack_weights(e, g, layouts);
    assert_true(packed >= 3); /* the 3x3 and 1x1 convs are blocked on this CPU */
    char path[] = "/tmp/si_test_XXXXXX";
    close(mkstemp(path));
    assert_int_equal(si_sfm_save(g, NULL, path, &err), 0);
    si_engine_free(e);
    for (int i = 0; i < g->n_nodes; i++)
        g->nodes[i].w = orig_w[i], g->nodes[i].w_layout = NULL, g->nodes[i].w_kind = SI_WEIGHTS_PLAIN;

    si_graph_t *h = si_model_load(path, &err);
    assert_non_null(h);
    si_segment_t hs;
    assert_int_equal(si_graph_segment(h, NULL, &hs, &err), 0);
    e = si_engine_create(h, &hs, 1, &err);
    assert_non_null(e);
    assert_int_equal(si_engine_run(e, in, got, &err), 0);
    for (int k = 0; k < 5; k++) assert_true(fabsf(got[k] - want[k]) <= 1e-6f * (1 + fabsf(want[k])));
    int zero_copy = 0;
    for (int i = 0; i < h->n_nodes; i++) {
        si_layout_t l;
        const void *data;
        size_t bytes;
        if (!h->nodes[i].w_layout || si_engine_weights(e, i, &l, &data, &bytes) < 0) continue;
        if ((const char *)data >= (const char *)h->map &&
            (const char *)data < (const char *)h->map + h->map_len)
            zero_copy++;
    }
    assert_int_equal(zero_copy, packed);
    assert_int_equal(si_engine_reordered_bytes(e), 0);
    /* A layout that disagrees with the node's shape is refused, not trusted. */
    for (int i = 0; i < h->n_nodes; i++)
        if (h->nodes[i].w_layout) {
            h->layouts[i].dims[0] += 8;
            break;
        }
    si_engine_free(e);
    assert_null(si_engine_create(h, &hs, 1, &err));
    assert_non_null(strstr(err.msg, "wrong shape"));
    si_graph_free(h);
    unlink(path);
    free(in);
    free_tiny(g);
}

/* Weights packed in a layout the primitive does not want (here ohwi, as a
 * file packed for another CPU or thread count would be) go through plain into
 * the wanted one and compute the same output. */
static void test_packed_for_another_engine(void **state) {
    (void)state;
    si_err_t err = {{0}};
    si_graph_t *g = tiny_graph();
    assert_int_equal(si_graph_finish(g, NULL), 0);
    si_segment_t s;
    assert_int_equal(si_graph_segment(g, NULL, &s, &err), 0);
    si_engine_t *e = si_engine_create(g, &s, 1, &err);
    assert_non_null(e);
    float *in = rand_array(4 * 9 * 9, 1.0f), want[5], got[5];
    assert_int_equal(si_engine_run(e, in, want, &err), 0);
    si_engine_free(e);

    si_node_t *n = &g->nodes[0]; /* conv 4 -> 8, 3x3 */
    int O = n->cout, I = n->cin, H = n->kh, W = n->kw;
    float *ohwi = malloc((size_t)O * I * H * W * sizeof *ohwi);
    for (int o = 0; o < O; o++)
        for (int i = 0; i < I; i++)
            for (int h = 0; h < H; h++)
                for (int w = 0; w < W; w++)
                    ohwi[((o * H + h) * W + w) * I + i] = n->w[((o * I + i) * H + h) * W + w];
    si_layout_t l = {.ndims = 4, .dims = {O, I, H, W}, .padded_dims = {O, I, H, W},
                     .strides = {H * W * I, 1, W * I, I}};
    const float *plain = n->w;
    n->w = ohwi, n->w_kind = SI_WEIGHTS_BLOCKED, n->w_layout = &l;
    n->w_bytes = (size_t)O * I * H * W * sizeof *ohwi;
    e = si_engine_create(g, &s, 1, &err);
    assert_non_null(e);
    assert_int_equal(si_engine_run(e, in, got, &err), 0);
    for (int k = 0; k < 5; k++) assert_true(fabsf(got[k] - want[k]) <= 1e-6f * (1 + fabsf(want[k])));
    assert_true(si_engine_reordered_bytes(e) >= n->w_bytes);
    si_engine_free(e);
    n->w = plain, n->w_kind = SI_WEIGHTS_PLAIN, n->w_layout = NULL;
    free(ohwi), free(in);
    free_tiny(g);
}

/* Two 3x3 convs of 64 channels at 14x14 (ResNet's layer3 shape, scaled
 * down): the engine runs them by Winograd. Checked against the naive
 * reference, as bands, and through a prepacked file holding the transformed
 * weights, which must load zero-copy. */
static void test_winograd(void **state) {
    (void)state;
    /* Winograd wherever the shape allows: on an AVX-512 machine the engine
     * would not choose it (engine.h), and this tests the kernel. */
    setenv("SPLITINFER_WINO", "on", 1);
    si_err_t err = {{0}};
    si_graph_t *g = si_graph_new();
    int d0[4] = {1, 64, 14, 14}, dx[4] = {1, 0, 0, 0};
    si_graph_add_value(g, 4, d0);
    si_graph_add_value(g, 4, dx);
    si_graph_add_value(g, 4, dx);
    si_node_t n = conv(0, 1, 64, 64, 3, 1, 1, 1);
    n.act = SI_ACT_RELU;
    si_graph_add_node(g, &n);
    n = conv(1, 2, 64, 64, 3, 1, 1, 1);
    n.in2 = 0, n.act = SI_ACT_RELU;
    si_graph_add_node(g, &n);
    g->output = 2;
    assert_int_equal(si_graph_finish(g, &err), 0);
    check_engine(g, NULL, 1);
    check_engine(g, NULL, 2);
    si_segment_t s;
    assert_int_equal(si_graph_segment(g, NULL, &s, &err), 0);
    si_engine_t *e = si_engine_create(g, &s, 1, &err);
    assert_non_null(e);
    si_layout_t layouts[2], l;
    const void *data;
    size_t bytes;
    assert_int_equal(si_engine_weights(e, 0, &l, &data, &bytes), SI_WEIGHTS_WINO2);
    assert_int_equal(bytes, 64 * 64 * 16 * sizeof(float));
    float *in = rand_array(64 * 14 * 14, 1.0f), *whole = malloc(sizeof(float) * 64 * 14 * 14);
    assert_int_equal(si_engine_run(e, in, whole, &err), 0);
    for (int K = 2; K <= 7; K += 5) /* bands: their tiles start elsewhere, same numbers */
        for (int k = 0; k < K; k++) {
            int a, b;
            si_rows_split(14, K, k, &a, &b);
            si_band_t band;
            assert_int_equal(si_graph_band(g, &s, a, b, &band, &err), 0);
            si_engine_t *be = si_engine_create_band(g, &s, &band, 1, &err);
            assert_non_null(be);
            int h = band.in_end - band.in_begin;
            float *bin = malloc(sizeof(float) * 64 * h * 14), *bout = malloc(sizeof(float) * 64 * (b - a) * 14);
            for (int c = 0; c < 64; c++)
                memcpy(bin + (size_t)c * h * 14, in + ((size_t)c * 14 + band.in_begin) * 14, sizeof(float) * h * 14);
            assert_int_equal(si_engine_run(be, bin, bout, &err), 0);
            double mx = 0, md = 0;
            for (int c = 0; c < 64; c++)
                for (int r = a; r < b; r++)
                    for (int w = 0; w < 14; w++) {
                        double u = bout[((size_t)c * (b - a) + r - a) * 14 + w], v = whole[((size_t)c * 14 + r) * 14 + w];
                        md = fabs(u - v) > md ? fabs(u - v) : md;
                        mx = fabs(v) > mx ? fabs(v) : mx;
                    }
            assert_true(md <= 1e-5 * mx);
            free(bin), free(bout);
            si_engine_free(be);
            si_band_free(&band);
        }
    /* Prepacked: the file holds the transformed weights; they load in place. */
    const float *orig[2] = {g->nodes[0].w, g->nodes[1].w};
    assert_int_equal(si_engine_pack_weights(e, g, layouts), 2);
    char path[] = "/tmp/si_test_XXXXXX";
    close(mkstemp(path));
    assert_int_equal(si_sfm_save(g, NULL, path, &err), 0);
    si_engine_free(e);
    for (int i = 0; i < 2; i++) g->nodes[i].w = orig[i], g->nodes[i].w_kind = SI_WEIGHTS_PLAIN;
    si_graph_t *h = si_model_load(path, &err);
    assert_non_null(h);
    assert_int_equal(h->nodes[1].w_kind, SI_WEIGHTS_WINO2);
    si_segment_t hs;
    assert_int_equal(si_graph_segment(h, NULL, &hs, &err), 0);
    e = si_engine_create(h, &hs, 1, &err);
    assert_non_null(e);
    float *again = malloc(sizeof(float) * 64 * 14 * 14);
    assert_int_equal(si_engine_run(e, in, again, &err), 0);
    assert_memory_equal(again, whole, sizeof(float) * 64 * 14 * 14); /* same transform, same sums */
    assert_int_equal(si_engine_weights(e, 1, &l, &data, &bytes), SI_WEIGHTS_WINO2);
    assert_true((const char *)data >= (const char *)h->map &&
                (const char *)data < (const char *)h->map + h->map_len);
    si_engine_free(e);
    si_graph_free(h);
    unlink(path);
    free(in), free(whole), free(again);
    unsetenv("SPLITINFER_WINO");
    free_tiny(g);
}

/* x [C,H,W] (batch 1) in NCHW -> NHWC, or back. */
static void transpose_chw(const float *x, int C, int H, int W, int to_nhwc, float *y) {
    for (int c = 0; c < C; c++)
        for (int i = 0; i < H * W; i++) {
            size_t chw = (size_t)c * H * W + i, hwc = (size_t)i * C + c;
            if (to_nhwc) y[hwc] = x[chw];
            else y[chw] = x[hwc];
        }
}

/* NHWC in and out (si_engine_create_io): every combination of layouts, whole
 * and in bands, gives the NCHW engine's numbers, laid out as asked. */
static void test_io_layouts(void **state) {
    (void)state;
    si_err_t err = {{0}};
    si_graph_t *g = tiny_graph();
    assert_int_equal(si_graph_finish(g, NULL), 0);
    const char *specs[] = {"#0..#3", "#2..#3", "#1..#6"};
    for (size_t sp = 0; sp < sizeof specs / sizeof *specs; sp++) {
        si_segment_t s;
        assert_int_equal(si_graph_segment(g, specs[sp], &s, &err), 0);
        const si_value_t *x = &g->values[s.in], *y = &g->values[s.out];
        int C = x->dims[1], H = x->dims[2], W = x->dims[3];
        int flat = y->ndim == 2, OC = y->dims[1], OH = flat ? 1 : y->dims[2], OW = flat ? 1 : y->dims[3];
        float *in = rand_array((size_t)C * H * W, 1.0f), *whole = malloc(sizeof(float) * OC * OH * OW);
        si_engine_t *e = si_engine_create(g, &s, 1, &err);
        assert_non_null(e);
        assert_int_equal(si_engine_run(e, in, whole, &err), 0);
        si_engine_free(e);
        for (int lin = 0; lin < 2; lin++)
            for (int lout = 0; lout < 2; lout++)
                for (int K = 1; K <= (flat ? 1 : 3); K++)
                    for (int k = 0; k < K; k++) {
                        int a = 0, b = OH;
                        si_band_t band;
                        si_rows_split(OH, K, k, &a, &b);
                        assert_int_equal(si_graph_band(g, &s, a, b, &band, &err), 0);
                        e = si_engine_create_io(g, &s, &band, 1, (si_io_layout_t)lin,
                                                (si_io_layout_t)lout, &err);
                        if (!e) fail_msg("%s %d/%d: %s", specs[sp], lin, lout, err.msg);
                        int hin = band.in_end - band.in_begin, rows = b - a;
                        float *bin = malloc(sizeof(float) * C * hin * W), *t = malloc(sizeof(float) * C * hin * W);
                        float *bout = malloc(sizeof(float) * OC * rows * OW), *u = malloc(sizeof(float) * OC * rows * OW);
                        for (int c = 0; c < C; c++)
                            memcpy(t + (size_t)c * hin * W, in + ((size_t)c * H + band.in_begin) * W,
                                   sizeof(float) * hin * W);
                        if (lin) transpose_chw(t, C, hin, W, 1, bin);
                        else memcpy(bin, t, sizeof(float) * C * hin * W);
                        assert_int_equal(si_engine_run(e, bin, bout, &err), 0);
                        if (lout && !flat) transpose_chw(bout, OC, rows, OW, 0, u); /* back to NCHW */
                        else memcpy(u, bout, sizeof(float) * OC * rows * OW);
                        for (int c = 0; c < OC; c++)
                            for (int r = 0; r < rows * OW; r++) {
                                float got = u[(size_t)c * rows * OW + r], want = whole[((size_t)c * OH + a) * OW + r];
                                if (fabsf(got - want) > 1e-5f * (1 + fabsf(want)))
                                    fail_msg("%s in %d out %d K=%d k=%d c=%d: %g vs %g", specs[sp], lin,
                                             lout, K, k, c, got, want);
                            }
                        free(bin), free(t), free(bout), free(u);
                        si_engine_free(e);
                        si_band_free(&band);
                    }
        free(in), free(whole);
    }
    si_segment_t s;
    assert_int_equal(si_graph_segment(g, NULL, &s, &err), 0);
    assert_null(si_engine_create_io(g, &s, NULL, 1, (si_io_layout_t)2, SI_IO_NCHW, &err));
    assert_non_null(strstr(err.msg, "layout"));
    free_tiny(g);
}

/* Two bottleneck blocks as in a ResNet stage (the first with a projection
 * shortcut), 64 channels wide so that oneDNN's AVX-512 kernels run them in
 * NHWC:
 *   v0 [1,64,12,10] -1x1-> v1 -3x3-> v2 -1x1 (+v3) relu-> v4;  v0 -1x1-> v3
 *   v4 -1x1-> v5 -3x3-> v6 -1x1 (+v4) relu-> v7 */
static si_graph_t *blocks_graph(void) {
    si_graph_t *g = si_graph_new();
    int d0[4] = {1, 64, 12, 10}, dx[4] = {1, 0, 0, 0};
    si_graph_add_value(g, 4, d0);
    for (int v = 1; v <= 7; v++) si_graph_add_value(g, 4, dx);
    int spec[][5] = {/* in, out, cin, cout, k */
                     {0, 1, 64, 32, 1}, {1, 2, 32, 32, 3}, {0, 3, 64, 64, 1}, {2, 4, 32, 64, 1},
                     {4, 5, 64, 32, 1}, {5, 6, 32, 32, 3}, {6, 7, 32, 64, 1}};
    for (int i = 0; i < 7; i++) {
        si_node_t n = conv(spec[i][0], spec[i][1], spec[i][2], spec[i][3], spec[i][4], 1,
                           spec[i][4] / 2, 1);
        n.act = i == 2 ? SI_ACT_NONE : SI_ACT_RELU;
        if (spec[i][1] == 4) n.in2 = 3;
        if (spec[i][1] == 7) n.in2 = 4;
        si_graph_add_node(g, &n);
    }
    g->output = 7;
    return g;
}

/* si_engine_run_view gives si_engine_run's numbers, whole and in bands, in
 * both layouts. In NHWC a band's rows are read and summed into where they
 * lie: where oneDNN runs the blocks in NHWC (its output needs no copy-out),
 * a banded engine copies nothing between nodes (before row views, each band
 * cropped the second block's shortcut twice). */
static void test_run_view(void **state) {
    (void)state;
    si_err_t err = {{0}};
    si_graph_t *g = blocks_graph();
    assert_int_equal(si_graph_finish(g, NULL), 0);
    si_segment_t s;
    assert_int_equal(si_graph_segment(g, NULL, &s, &err), 0);
    const int C = 64, H = 12, W = 10;
    float *in = rand_array((size_t)C * H * W, 1.0f), *nhwc = malloc(sizeof(float) * C * H * W);
    float *whole = malloc(sizeof(float) * C * H * W), *t = malloc(sizeof(float) * C * H * W);
    transpose_chw(in, C, H, W, 1, nhwc);
    si_engine_t *e = si_engine_create(g, &s, 1, &err);
    assert_non_null(e);
    assert_int_equal(si_engine_run(e, in, whole, &err), 0); /* NCHW */
    si_engine_free(e);
    for (int lay = 0; lay < 2; lay++)
        for (int K = 1; K <= 4; K++)
            for (int k = 0; k < K; k++) {
                int a, b;
                si_rows_split(H, K, k, &a, &b);
                si_band_t band;
                assert_int_equal(si_graph_band(g, &s, a, b, &band, &err), 0);
                e = si_engine_create_io(g, &s, &band, 1, (si_io_layout_t)lay, (si_io_layout_t)lay, &err);
                if (!e) fail_msg("K=%d k=%d: %s", K, k, err.msg);
                int hin = band.in_end - band.in_begin, rows = b - a;
                float *bin = malloc(sizeof(float) * C * hin * W);
                if (lay) { /* NHWC: the band's rows are one run */
                    memcpy(bin, nhwc + (size_t)band.in_begin * W * C, sizeof(float) * C * hin * W);
                } else {
                    for (int c = 0; c < C; c++)
                        memcpy(bin + (size_t)c * hin * W, in + ((size_t)c * H + band.in_begin) * W,
                               sizeof(float) * hin * W);
                }
                const float *out = NULL;
                for (int run = 0; run < 2; run++) /* a second run: the same numbers */
                    assert_int_equal(si_engine_run_view(e, bin, &out, &err), 0);
                if (lay) transpose_chw(out, C, rows, W, 0, t);
                else memcpy(t, out, sizeof(float) * C * rows * W);
                for (int c = 0; c < C; c++)
                    for (int r = 0; r < rows * W; r++) {
                        float got = t[(size_t)c * rows * W + r], want = whole[((size_t)c * H + a) * W + r];
                        if (fabsf(got - want) > 1e-5f * (1 + fabsf(want)))
                            fail_msg("layout %d K=%d k=%d c=%d: %g vs %g", lay, K, k, c, got, want);
                    }
                if (lay && si_engine_output_direct(e) && si_engine_copy_bytes(e) != 0)
                    fail_msg("NHWC K=%d k=%d: %zu bytes copied between nodes per run", K, k,
                             si_engine_copy_bytes(e));
                if (!lay) assert_false(si_engine_output_direct(e)); /* NCHW is never the kernels' */
                free(bin);
                si_engine_free(e);
                si_band_free(&band);
            }
    free(in), free(nhwc), free(whole), free(t);
    free_tiny(g);
}

/* Huge-page regions: aligned, zeroed, and backed by huge pages where the
 * kernel offers them for madvise'd memory. */
static void test_huge_alloc(void **state) {
    (void)state;
    si_err_t err = {{0}};
    size_t mapped = 0;
    unsigned char *p = si_huge_alloc(5u << 20, &mapped, &err);
    assert_non_null(p);
    assert_int_equal(mapped, 6u << 20);
    assert_int_equal((uintptr_t)p % SI_HUGE_PAGE, 0);
    for (size_t i = 0; i < mapped; i += 4096) assert_int_equal(p[i], 0);
    memset(p, 0x5a, mapped);
    long long backed = si_huge_backed(p, mapped);
    assert_true(backed >= 0 && backed <= (long long)mapped);
    char thp[128] = "";
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (f) {
        if (!fgets(thp, sizeof thp, f)) thp[0] = 0;
        thp[strcspn(thp, "\n")] = 0;
        fclose(f);
    }
    /* With THP on for madvise'd memory, touching 6 MiB got at least one huge
     * page (a fragmented host could refuse some, not all three). */
    if (strstr(thp, "[always]") || strstr(thp, "[madvise]")) {
        if (backed < (long long)SI_HUGE_PAGE) fail_msg("THP is %s yet %lld bytes on huge pages", thp, backed);
    } else {
        print_message("transparent huge pages are off here (%s): 4 KiB pages only\n", thp);
    }
    si_huge_free(p, mapped);
    /* Small: 4 KiB pages, not a huge page of padding. */
    p = si_huge_alloc(100000, &mapped, &err);
    assert_non_null(p);
    assert_int_equal(mapped, 102400);
    assert_int_equal(p[mapped - 1], 0);
    si_huge_free(p, mapped);
    assert_null(si_huge_alloc(0, &mapped, &err));
    assert_non_null(strstr(err.msg, "bad length"));
    /* Reserved: nothing resident until a part is populated, then that part
     * (a whole huge page, where THP is on), not the rest. */
    p = si_huge_reserve(6u << 20, &mapped, &err);
    assert_non_null(p);
    assert_int_equal(si_huge_backed(p, mapped), 0);
    si_huge_populate(p + (2u << 20) + 100, 10);
    assert_int_equal(p[(2u << 20) + 100], 0);
    if (strstr(thp, "[always]") || strstr(thp, "[madvise]"))
        assert_int_equal(si_huge_backed(p, mapped), (long long)SI_HUGE_PAGE);
    si_huge_free(p, mapped);
}

/* What the huge-page tests compare against: the blocks graph saved as an
 * .sfm file (path; hot_case_free removes it), a random input and the output
 * of the model as mapped from that file. */
typedef struct hot_case {
    si_graph_t *g;
    char path[32];
    size_t n; /* floats of the input, and of the output */
    float *in, *want, *got;
} hot_case_t;

static void hot_case_init(hot_case_t *c) {
    si_err_t err = {{0}};
    c->g = blocks_graph();
    assert_int_equal(si_graph_finish(c->g, NULL), 0);
    snprintf(c->path, sizeof c->path, "/tmp/si_test_XXXXXX");
    close(mkstemp(c->path));
    assert_int_equal(si_sfm_save(c->g, NULL, c->path, &err), 0);
    c->n = (size_t)64 * 12 * 10;
    c->in = rand_array(c->n, 1.0f);
    c->want = malloc(c->n * sizeof(float)), c->got = malloc(c->n * sizeof(float));
    si_graph_t *h = si_model_load(c->path, &err);
    assert_non_null(h);
    si_segment_t s;
    assert_int_equal(si_graph_segment(h, NULL, &s, &err), 0);
    si_engine_t *e = si_engine_create(h, &s, 1, &err);
    assert_non_null(e);
    assert_int_equal(si_engine_run(e, c->in, c->want, &err), 0);
    si_engine_free(e);
    si_graph_free(h);
}

static void hot_case_free(hot_case_t *c) {
    unlink(c->path);
    free(c->in), free(c->want), free(c->got);
    free_tiny(c->g);
}

/* si_model_hot moves a segment's weights out of the mapped file and changes
 * no number: the engine's output is bit for bit the mapped model's. */
static void test_model_hot(void **state) {
    (void)state;
    si_err_t err = {{0}};
    hot_case_t c;
    hot_case_init(&c);
    const char *path = c.path;

    /* A part: its nodes point into the huge region, the others still into the map. */
    si_graph_t *h = si_model_load(path, &err);
    assert_non_null(h);
    assert_true(h->n_cuts >= 3);
    si_segment_t part = {0};
    char spec[32];
    snprintf(spec, sizeof spec, "#1..#%d", h->n_cuts - 1);
    assert_int_equal(si_graph_segment(h, spec, &part, &err), 0);
    assert_int_equal(si_model_hot(h, &part, &err), 0);
    assert_non_null(h->hot);
    const char *hot = h->hot, *map = h->map;
    for (int i = 0; i < h->n_nodes; i++) {
        const char *w = (const char *)h->nodes[i].w;
        int in_part = i >= part.node_begin && i < part.node_end;
        if (in_part) assert_true(w >= hot && w < hot + h->hot_len);
        else assert_true(w >= map && w < map + h->map_len);
    }
    assert_int_equal(si_model_hot(h, &part, &err), -1); /* once */
    si_graph_free(h);

    /* The whole model from huge pages: the same numbers. */
    h = si_model_load(path, &err);
    assert_non_null(h);
    si_segment_t s;
    assert_int_equal(si_graph_segment(h, NULL, &s, &err), 0);
    assert_int_equal(si_model_hot(h, &s, &err), 0);
    si_engine_t *e = si_engine_create(h, &s, 1, &err);
    assert_non_null(e);
    assert_int_equal(si_engine_run(e, c.in, c.got, &err), 0);
    assert_memory_equal(c.got, c.want, c.n * sizeof(float));
    si_engine_free(e);
    si_graph_free(h);
    hot_case_free(&c);
}

/* The move in steps (modelfile.h, si_model_hot_begin): an engine compiled on
 * the mapping, repointed after each step of one node, gives the mapped
 * model's numbers bit for bit in every mixed state between, and reads
 * nothing but the copy at the end. */
static void test_model_hot_steps(void **state) {
    (void)state;
    si_err_t err = {{0}};
    hot_case_t c;
    hot_case_init(&c);
    si_graph_t *h = si_model_load(c.path, &err);
    assert_non_null(h);
    si_segment_t s;
    assert_int_equal(si_graph_segment(h, NULL, &s, &err), 0);
    si_engine_t *e = si_engine_create(h, &s, 1, &err);
    assert_non_null(e);
    si_hot_move_t mv;
    assert_int_equal(si_model_hot_begin(h, &s, &mv, &err), 0);
    assert_non_null(mv.p);
    int steps = 0, repointed = 0, k;
    while ((k = si_model_hot_step(h, &mv, 1, &err)) > 0) {
        assert_true(k <= 2); /* chunk 1: one node, its weights and bias */
        for (int j = 0; j < k; j++) {
            repointed += si_engine_repoint(e, mv.moved[j].from, mv.moved[j].len, mv.moved[j].to);
            assert_memory_equal(mv.moved[j].to, mv.moved[j].from, mv.moved[j].len);
        }
        si_model_hot_swap(h, &mv);
        assert_int_equal(si_engine_run(e, c.in, c.got, &err), 0);
        assert_memory_equal(c.got, c.want, c.n * sizeof(float));
        steps++;
    }
    assert_int_equal(k, 0);
    si_model_hot_end(h, &mv);
    assert_non_null(h->hot);
    assert_true(steps >= 3);
    assert_true(repointed > 0);
    /* Every array the engine reads in place now lies in the copy. */
    const char *hot = h->hot;
    for (int i = s.node_begin; i < s.node_end; i++) {
        si_layout_t lay;
        const void *data;
        size_t bytes;
        int kind = si_engine_weights(e, i, &lay, &data, &bytes);
        if (kind < 0) continue;
        const char *w = (const char *)h->nodes[i].w;
        assert_true(w >= hot && w < hot + h->hot_len);
        const char *d = data; /* the node's own array, or the engine's reordered copy */
        if (d >= (const char *)h->map && d < (const char *)h->map + h->map_len)
            fail_msg("node %d: the engine still reads the mapping", i);
    }
    assert_int_equal(si_model_hot(h, &s, &err), -1); /* moved already */
    si_engine_free(e);
    si_graph_free(h);
    hot_case_free(&c);
}

static void test_onnx_garbage(void **state) {
    (void)state;
    si_err_t err = {{0}};
    unsigned char junk[4096];
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = (unsigned char)(frand() * 128 + 128);
    assert_null(si_onnx_parse(junk, sizeof junk, &err));
    assert_true(strlen(err.msg) > 0);
    assert_null(si_onnx_parse("", 0, &err));
    assert_null(si_onnx_load("/nonexistent/model.onnx", &err));
    assert_non_null(strstr(err.msg, "No such file"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shapes_and_cuts),
        cmocka_unit_test(test_bad_graphs),
        cmocka_unit_test(test_engine_matches_reference),
        cmocka_unit_test(test_bands_stitch),
        cmocka_unit_test(test_io_layouts),
        cmocka_unit_test(test_run_view),
        cmocka_unit_test(test_huge_alloc),
        cmocka_unit_test(test_model_hot),
        cmocka_unit_test(test_model_hot_steps),
        cmocka_unit_test(test_segment_macs),
        cmocka_unit_test(test_sfm_roundtrip),
        cmocka_unit_test(test_sfm_prepacked),
        cmocka_unit_test(test_packed_for_another_engine),
        cmocka_unit_test(test_winograd),
        cmocka_unit_test(test_onnx_garbage),
    };
    si_engine_set_threads(1);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
