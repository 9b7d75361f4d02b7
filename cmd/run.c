/* run.c - the subcommands that run a model: classify, infer, bench. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "image.h"
#include "labels.h"

/* Indices of the k largest of x[0..n) in descending order (k <= n). */
static void topk(const float *x, int n, int k, int *idx) {
    for (int j = 0; j < k; j++) idx[j] = -1;
    for (int i = 0; i < n; i++) {
        int j = k;
        while (j > 0 && (idx[j - 1] < 0 || x[i] > x[idx[j - 1]])) j--;
        if (j >= k) continue;
        memmove(idx + j + 1, idx + j, (size_t)(k - j - 1) * sizeof *idx);
        idx[j] = i;
    }
}

/* A model damaged in its weights can load and still compute: refuse to
 * present NaN/Inf as an answer. */
static int all_finite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

static void print_top(const char *file, const float *logits, int n, int k, int json) {
    float mx = logits[0];
    for (int i = 1; i < n; i++) mx = logits[i] > mx ? logits[i] : mx;
    double sum = 0;
    for (int i = 0; i < n; i++) sum += exp((double)(logits[i] - mx));
    int idx[1000];
    topk(logits, n, k, idx);
    if (json) {
        json_t *top = json_array();
        for (int j = 0; j < k; j++)
            json_array_append_new(top, json_pack("{s:i, s:s, s:f}", "index", idx[j], "label",
                                                 si_label(idx[j]), "prob",
                                                 exp((double)(logits[idx[j]] - mx)) / sum));
        json_t *o = json_pack("{s:s, s:o}", "file", file, "top", top);
        char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
        if (s) puts(s);
        free(s);
        json_decref(o);
        return;
    }
    printf("%s\n", file);
    for (int j = 0; j < k; j++)
        printf("  %d. %4d  %.4f  %s\n", j + 1, idx[j], exp((double)(logits[idx[j]] - mx)) / sum,
               si_label(idx[j]));
}

int si_cmd_classify(int argc, char **argv) {
    cli_opts_t o;
    if (cli_parse(argc, argv, "mtkj", &o)) return 1;
    if (!o.n_args) return cli_fail("usage: splitinfer classify -m MODEL [-t N] [-k 5] [--json] IMAGE...");
    si_graph_t *g;
    si_segment_t seg;
    si_engine_t *e;
    int rc = cli_setup(&o, 1, &g, &seg, &e);
    int dims[4];
    if (!rc && (si_engine_in_dims(e, dims) != 4 || dims[1] != 3 || dims[2] != SI_IMAGE_SIZE ||
                dims[3] != SI_IMAGE_SIZE || si_engine_out_dims(e, dims) != 2))
        rc = cli_fail("%s: classify needs a model of input [1,3,%d,%d] and output [1,classes]",
                      o.model, SI_IMAGE_SIZE, SI_IMAGE_SIZE);
    float *in = NULL, *out = NULL;
    int classes = dims[1];
    if (!rc) {
        in = malloc(si_engine_in_numel(e) * sizeof *in);
        out = malloc(si_engine_out_numel(e) * sizeof *out);
        if (!in || !out) rc = cli_fail("out of memory");
    }
    if (!rc && o.topk > classes) o.topk = classes;
    for (int i = 0; !rc && i < o.n_args; i++) {
        si_err_t err = {{0}};
        if (si_image_file_to_tensor(o.args[i], in, &err) < 0 || si_engine_run(e, in, out, &err) < 0) {
            cli_fail("%s", err.msg);
            rc = 1; /* keep going: one bad photo should not hide the others' answers */
            for (i++; i < o.n_args; i++)
                if (si_image_file_to_tensor(o.args[i], in, &err) == 0 &&
                    si_engine_run(e, in, out, &err) == 0)
                    print_top(o.args[i], out, classes, o.topk, o.json);
                else
                    cli_fail("%s", err.msg);
            break;
        }
        if (!all_finite(out, (size_t)classes)) {
            rc = cli_fail("%s: the model computed non-finite scores (damaged weights?)", o.model);
            break;
        }
        print_top(o.args[i], out, classes, o.topk, o.json);
    }
    free(in), free(out), free(o.args);
    si_engine_free(e);
    si_graph_free(g);
    return rc;
}

/* Copies rows [a, b) of every channel plane of x (planes of h rows of w
 * floats) to dst: the band a stage function receives. */
static void slice_rows(const float *x, int planes, int h, int w, int a, int b, float *dst) {
    for (int p = 0; p < planes; p++)
        memcpy(dst + (size_t)p * (size_t)(b - a) * (size_t)w, x + ((size_t)p * (size_t)h + (size_t)a) * (size_t)w,
               (size_t)(b - a) * (size_t)w * sizeof *dst);
}

int si_cmd_infer(int argc, char **argv) {
    cli_opts_t o;
    if (cli_parse(argc, argv, "msiotB", &o)) return 1;
    if (!o.input || !o.output || o.n_args) {
        free(o.args);
        return cli_fail("usage: splitinfer infer -m MODEL [--segment A..B] [--band k/K] --input X.bin "
                        "--output Y.bin");
    }
    si_graph_t *g;
    si_segment_t seg;
    si_engine_t *e = NULL;
    si_band_t band = {0};
    si_err_t err = {{0}};
    void *in = NULL;
    size_t len = 0;
    float *out = NULL, *bin = NULL;
    int rc = cli_setup(&o, 1, &g, &seg, NULL);
    const si_value_t *x = rc ? NULL : &g->values[seg.in];
    /* Output band k of K; the input file holds the whole input. */
    if (!rc) rc = cli_band(&o, g, &seg, &band);
    if (!rc && !(e = si_engine_create_band(g, &seg, o.band_n ? &band : NULL, 1, &err)))
        rc = cli_fail("%s", err.msg);
    if (!rc) rc = cli_read_file(o.input, &in, &len);
    if (!rc && len != si_value_numel(x) * sizeof(float))
        rc = cli_fail("%s: %zu bytes, the segment's input [1,%d%s] float32 is %zu bytes", o.input,
                      len, x->dims[1], x->ndim == 4 ? ",H,W" : "", si_value_numel(x) * sizeof(float));
    const float *feed = in;
    if (!rc && o.band_n && x->ndim == 4) {
        if (!(bin = malloc(si_engine_in_numel(e) * sizeof *bin))) rc = cli_fail("out of memory");
        else slice_rows(in, x->dims[1], x->dims[2], x->dims[3], band.in_begin, band.in_end, bin);
        feed = bin;
    }
    if (!rc && !(out = malloc(si_engine_out_numel(e) * sizeof *out))) rc = cli_fail("out of memory");
    if (!rc && si_engine_run(e, feed, out, &err) < 0) rc = cli_fail("%s", err.msg);
    if (!rc && !all_finite(out, si_engine_out_numel(e)))
        rc = cli_fail("%s: the segment computed non-finite values (damaged weights or input?)",
                      o.model);
    if (!rc) {
        FILE *f = fopen(o.output, "wb");
        size_t n = si_engine_out_numel(e);
        if (!f || fwrite(out, sizeof *out, n, f) != n) rc = cli_fail("%s: write failed", o.output);
        if (f && fclose(f) != 0) rc = cli_fail("%s: write failed", o.output);
    }
    free(in), free(out), free(bin), free(o.args);
    si_band_free(&band);
    si_engine_free(e);
    si_graph_free(g);
    return rc;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int si_cmd_bench_plans(int argc, char **argv);

int si_cmd_bench(int argc, char **argv) {
    for (int i = 0; i < argc; i++) /* the plans benchmark (Table 1): cmd/benchplans.c */
        if (!strcmp(argv[i], "--plans")) return si_cmd_bench_plans(argc, argv);
    cli_opts_t o;
    if (cli_parse(argc, argv, "mstnbwBEY", &o)) return 1;
    si_graph_t *g;
    si_segment_t seg;
    si_engine_t *e;
    double load_ms = 0, compile_ms = 0, first_ms = 0;
    int rc = cli_setup_timed(&o, o.batch, &g, &seg, &e, &load_ms, &compile_ms);
    float *in = NULL;
    double *ms = calloc((size_t)o.n, sizeof *ms);
    /* --evict-mb: a function of a plan runs once per request, after the
     * others have had the caches; writing more than the last-level cache
     * between runs (untimed) gives it the same cold start each time. */
    size_t evict_n = (size_t)o.evict_mb << 20;
    unsigned char *evict = evict_n ? malloc(evict_n) : NULL;
    if (!rc) {
        in = malloc(si_engine_in_numel(e) * sizeof *in);
        if (!in || !ms || (evict_n && !evict)) rc = cli_fail("out of memory");
    }
    if (!rc) {
        unsigned s = 12345; /* fixed input: runs are comparable */
        for (size_t i = 0; i < si_engine_in_numel(e); i++)
            s = s * 1103515245u + 12345u, in[i] = (float)((s >> 9) & 0xffff) / 32768.0f - 1.0f;
    }
    si_err_t err = {{0}};
    for (int i = 0; !rc && i < o.warmup + o.n; i++) {
        if (evict) memset(evict, i & 0xff, evict_n);
        double t0 = cli_now_ms();
        /* As a stage function runs it: the output read where the engine left it. */
        const float *out;
        if (si_engine_run_view(e, in, &out, &err) < 0) rc = cli_fail("%s", err.msg);
        if (i == 0) first_ms = cli_now_ms() - t0;
        if (i >= o.warmup) ms[i - o.warmup] = cli_now_ms() - t0;
    }
    if (!rc) {
        qsort(ms, (size_t)o.n, sizeof *ms, cmp_double);
        double med = ms[o.n / 2], p90 = ms[(int)((o.n - 1) * 0.9 + 0.5)];
        printf("bench model=%s threads=%d batch=%d n=%d min_ms=%.3f median_ms=%.3f p90_ms=%.3f "
               "images_per_s=%.2f load_ms=%.1f compile_ms=%.1f first_ms=%.1f evict_mb=%d "
               "copy_bytes=%zu output_copied=%d\n",
               o.model, si_engine_threads(), o.batch, o.n, ms[0], med, p90, o.batch * 1000.0 / med,
               load_ms, compile_ms, first_ms, o.evict_mb, si_engine_copy_bytes(e),
               !si_engine_output_direct(e));
    }
    free(evict), free(in), free(ms), free(o.args);
    si_engine_free(e);
    si_graph_free(g);
    return rc;
}
