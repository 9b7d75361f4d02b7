/* cli.c - shared option parsing and model setup for the subcommands. */
#include "cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "modelfile.h"

int cli_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("splitinfer: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

static int int_arg(const char *flag, const char *v, int lo, int hi, int *out) {
    char *end;
    errno = 0;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || errno || *end || end == v || x < lo || x > hi)
        return cli_fail("%s wants an integer in %d..%d, got '%s'", flag, lo, hi, v ? v : "");
    *out = (int)x;
    return 0;
}

static int parse(int argc, char **argv, const char *allowed, cli_opts_t *o);

int cli_parse(int argc, char **argv, const char *allowed, cli_opts_t *o) {
    int rc = parse(argc, argv, allowed, o);
    if (rc) { /* callers return at once on failure: nothing of o survives */
        free(o->args);
        o->args = NULL;
    }
    return rc;
}

static int parse(int argc, char **argv, const char *allowed, cli_opts_t *o) {
    memset(o, 0, sizeof *o);
    o->model = getenv("SPLITINFER_MODEL");
    o->topk = 5, o->n = 20, o->batch = 1, o->warmup = 3, o->port = -1;
    o->cold = -1, o->seconds = -1, o->warmup_runs = -1;
    o->args = calloc((size_t)argc + 1, sizeof *o->args);
    if (!o->args) return cli_fail("out of memory");
    static const struct { char key; const char *s, *l; int has_arg; } flags[] = {
        {'m', "-m", "--model", 1},   {'s', NULL, "--segment", 1}, {'o', "-o", "--output", 1},
        {'i', NULL, "--input", 1},   {'t', "-t", "--threads", 1}, {'k', "-k", "--top", 1},
        {'j', NULL, "--json", 0},    {'n', "-n", NULL, 1},        {'b', NULL, "--batch", 1},
        {'w', NULL, "--warmup", 1}, {'B', NULL, "--band", 1},    {'E', NULL, "--evict-mb", 1},
        {'P', NULL, "--plain", 0},   {'p', NULL, "--port", 1},    {'H', NULL, "--host", 1},
        {'N', NULL, "--name", 1},    {'L', NULL, "--plan", 1},    {'W', NULL, "--workdir", 1},
        {'t', NULL, "--threads-per-function", 1}, {'K', NULL, "--bands", 1},
        {'l', NULL, "--plans", 1},   {'I', NULL, "--images", 1},  {'R', NULL, "--runtime", 1},
        {'C', NULL, "--cpus", 1},    {'M', NULL, "--memory", 1},  {'c', NULL, "--concurrency", 1},
        {'D', NULL, "--cold", 1},    {'O', NULL, "--out", 1},     {'S', NULL, "--seconds", 1},
        {'X', NULL, "--next", 1},    {'Y', NULL, "--layout", 1},
        {'U', NULL, "--warmup-runs", 1}, {'T', NULL, "--steps", 1},
    };
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || !a[1]) {
            o->args[o->n_args++] = argv[i];
            continue;
        }
        int k = -1;
        for (size_t f = 0; f < sizeof flags / sizeof *flags; f++)
            if ((flags[f].s && !strcmp(a, flags[f].s)) || (flags[f].l && !strcmp(a, flags[f].l)))
                k = (int)f;
        if (k < 0 || !strchr(allowed, flags[k].key)) return cli_fail("unknown option %s", a);
        const char *v = NULL;
        if (flags[k].has_arg) {
            if (i + 1 >= argc) return cli_fail("%s needs a value", a);
            v = argv[++i];
        }
        switch (flags[k].key) {
        case 'm': o->model = v; break;
        case 's': o->segment = v; break;
        case 'o': o->output = v; break;
        case 'i': o->input = v; break;
        case 't': if (int_arg(a, v, 0, 1024, &o->threads)) return 1; break;
        case 'k': if (int_arg(a, v, 1, 1000, &o->topk)) return 1; break;
        case 'j': o->json = 1; break;
        case 'P': o->plain = 1; break;
        case 'p': if (int_arg(a, v, 0, 65535, &o->port)) return 1; break;
        case 'H': o->host = v; break;
        case 'N': o->name = v; break;
        case 'L': o->plan = v; break;
        case 'W': o->workdir = v; break;
        case 'K': if (int_arg(a, v, 1, 64, &o->bands)) return 1; break;
        case 'n': if (int_arg(a, v, 1, 1000000, &o->n)) return 1; break;
        case 'l': o->plans = v; break;
        case 'I': o->images = v; break;
        case 'R': o->runtime = v; break;
        case 'C': o->cpus = v; break;
        case 'M': o->memory = v; break;
        case 'c': o->concurrency = v; break;
        case 'D': if (int_arg(a, v, 1, 1000, &o->cold)) return 1; break;
        case 'O': o->out = v; break;
        case 'X': o->next = v; break;
        case 'T': o->steps = v; break;
        case 'U': if (int_arg(a, v, 0, 100, &o->warmup_runs)) return 1; break;
        case 'Y':
            if (!strcmp(v, "nchw")) o->layout = SI_IO_NCHW;
            else if (!strcmp(v, "nhwc")) o->layout = SI_IO_NHWC;
            else return cli_fail("--layout wants nchw or nhwc, got '%s'", v);
            break;
        case 'S': if (int_arg(a, v, 1, 3600, &o->seconds)) return 1; break;
        case 'b': if (int_arg(a, v, 1, 4096, &o->batch)) return 1; break;
        case 'w': if (int_arg(a, v, 0, 1000000, &o->warmup)) return 1; break;
        case 'E': if (int_arg(a, v, 0, 4096, &o->evict_mb)) return 1; break;
        case 'B': {
            int used = 0;
            if (sscanf(v, "%d/%d%n", &o->band_k, &o->band_n, &used) != 2 || v[used] ||
                o->band_n < 1 || o->band_k < 0 || o->band_k >= o->band_n)
                return cli_fail("--band wants k/K with 0 <= k < K, got '%s'", v);
            break;
        }
        }
    }
    return 0;
}

int cli_band(const cli_opts_t *o, const si_graph_t *g, const si_segment_t *seg, si_band_t *band) {
    memset(band, 0, sizeof *band);
    if (!o->band_n) return 0;
    const si_value_t *y = &g->values[seg->out];
    int h = y->ndim == 4 ? y->dims[2] : 1, a, b;
    if (o->band_n > h)
        return cli_fail("--band %d/%d: the output has only %d rows", o->band_k, o->band_n, h);
    si_rows_split(h, o->band_n, o->band_k, &a, &b);
    si_err_t err = {{0}};
    if (si_graph_band(g, seg, a, b, band, &err) < 0) return cli_fail("%s", err.msg);
    return 0;
}

int cli_setup_timed(const cli_opts_t *o, int batch, si_graph_t **g, si_segment_t *seg,
                    si_engine_t **e, double *load_ms, double *compile_ms) {
    si_err_t err = {{0}};
    *g = NULL;
    if (e) *e = NULL;
    if (!o->model) return cli_fail("no model: pass -m MODEL or set SPLITINFER_MODEL");
    si_engine_set_threads(o->threads);
    double t0 = cli_now_ms();
    *g = si_model_load(o->model, &err);
    if (!*g) return cli_fail("%s", err.msg);
    if (si_graph_segment(*g, o->segment, seg, &err) < 0) return cli_fail("%s", err.msg);
    /* What runs is timed as a stage function runs it: weights on huge pages. */
    if (e && si_model_hot(*g, seg, &err) < 0) return cli_fail("%s", err.msg);
    double t1 = cli_now_ms();
    if (load_ms) *load_ms = t1 - t0;
    if (!e) return 0;
    si_band_t band;
    if (cli_band(o, *g, seg, &band)) return 1;
    *e = si_engine_create_io(*g, seg, o->band_n ? &band : NULL, batch, o->layout, o->layout, &err);
    si_band_free(&band);
    if (!*e) return cli_fail("%s", err.msg);
    if (compile_ms) *compile_ms = cli_now_ms() - t1;
    return 0;
}

int cli_read_file(const char *path, void **buf, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return cli_fail("%s: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *p = malloc(cap);
    while (p) {
        n += fread(p + n, 1, cap - n, f);
        if (n < cap) break;
        char *q = realloc(p, cap *= 2);
        if (!q) free(p);
        p = q;
    }
    int bad = ferror(f);
    fclose(f);
    if (!p || bad) {
        free(p);
        return cli_fail("%s: read failed", path);
    }
    *buf = p, *len = n;
    return 0;
}

double cli_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}
