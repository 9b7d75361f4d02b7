/* test_metrics.c - the Prometheus registry: every rendered line is parsed back
 * with a strict parser of format 0.0.4 (written here, independent of the
 * renderer) and checked for exact values - counts from concurrent threads,
 * cumulative buckets, escaped labels, the process_* gauges. */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "metrics.h"

/* ---- a strict parser of the text format ---- */

#define MAX_L 10
typedef struct sample {
    char name[128];
    int n; /* labels */
    char k[MAX_L][64];
    char v[MAX_L][512]; /* unescaped */
    double value;
} sample_t;

typedef struct parsed {
    sample_t *s;
    int n;
    char types[64][192]; /* "name type" of each # TYPE line */
    int n_types;
    int n_help;
} parsed_t;

static int is_name_char(char c, int first) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
           (!first && c >= '0' && c <= '9');
}

/* Parses one sample line; fails the test on anything malformed. */
static void parse_sample(const char *line, sample_t *s) {
    const char *p = line;
    size_t n = 0;
    memset(s, 0, sizeof *s);
    while (is_name_char(*p, n == 0) && n < sizeof s->name - 1) s->name[n++] = *p++;
    if (n == 0) fail_msg("no metric name: '%s'", line);
    if (*p == '{') {
        p++;
        while (*p != '}') {
            if (s->n == MAX_L) fail_msg("too many labels: '%s'", line);
            size_t k = 0;
            while (is_name_char(*p, k == 0) && *p != ':' && k < 63) s->k[s->n][k++] = *p++;
            if (k == 0 || p[0] != '=' || p[1] != '"') fail_msg("bad label: '%s'", line);
            p += 2;
            size_t v = 0;
            for (; *p != '"'; p++) {
                if (!*p || *p == '\n') fail_msg("unterminated label value: '%s'", line);
                char c = *p;
                if (c == '\\') {
                    p++;
                    c = *p == 'n' ? '\n' : *p == '\\' ? '\\' : *p == '"' ? '"' : 0;
                    if (!c) fail_msg("bad escape in '%s'", line);
                }
                if (v < 511) s->v[s->n][v++] = c;
            }
            p++;
            s->n++;
            if (*p == ',')
                p++;
            else if (*p != '}')
                fail_msg("expected , or }: '%s'", line);
        }
        p++;
    }
    if (*p != ' ') fail_msg("no space before the value: '%s'", line);
    p++;
    char *end;
    if (strcmp(p, "+Inf") == 0)
        s->value = INFINITY;
    else if (strcmp(p, "-Inf") == 0)
        s->value = -INFINITY;
    else if (strcmp(p, "NaN") == 0)
        s->value = NAN;
    else {
        s->value = strtod(p, &end);
        if (end == p || *end) fail_msg("bad value: '%s'", line);
    }
}

/* Splits text into lines; every line must be a HELP, a TYPE or a sample. */
static void parse(const char *text, parsed_t *out) {
    memset(out, 0, sizeof *out);
    size_t len = strlen(text);
    if (len) assert_true(text[len - 1] == '\n');
    int cap = 64;
    out->s = malloc((size_t)cap * sizeof *out->s);
    char line[4096];
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        assert_non_null(nl);
        size_t l = (size_t)(nl - p);
        assert_true(l < sizeof line);
        memcpy(line, p, l);
        line[l] = '\0';
        p = nl + 1;
        if (strncmp(line, "# HELP ", 7) == 0) {
            out->n_help++;
            for (const char *q = line + 7; *q; q++) /* only \\ and \n escapes in HELP */
                if (*q == '\\') {
                    q++;
                    assert_true(*q == '\\' || *q == 'n');
                }
            continue;
        }
        if (strncmp(line, "# TYPE ", 7) == 0) {
            char name[128], type[32];
            assert_int_equal(sscanf(line + 7, "%127s %31s", name, type), 2);
            assert_true(strcmp(type, "counter") == 0 || strcmp(type, "gauge") == 0 ||
                        strcmp(type, "histogram") == 0);
            assert_true(out->n_types < 64);
            snprintf(out->types[out->n_types++], sizeof out->types[0], "%s %s", name, type);
            continue;
        }
        assert_true(line[0] != '#');
        if (out->n == cap) out->s = realloc(out->s, (size_t)(cap *= 2) * sizeof *out->s);
        parse_sample(line, &out->s[out->n++]);
    }
}

/* The sample with this name and exactly these labels (k, v pairs, NULL-ended). */
static const sample_t *find(const parsed_t *ps, const char *name, ...) {
    for (int i = 0; i < ps->n; i++) {
        const sample_t *s = &ps->s[i];
        if (strcmp(s->name, name) != 0) continue;
        va_list ap;
        va_start(ap, name);
        int n = 0, ok = 1;
        for (const char *k; (k = va_arg(ap, const char *));) {
            const char *v = va_arg(ap, const char *);
            int hit = 0;
            for (int j = 0; j < s->n; j++) hit |= !strcmp(s->k[j], k) && !strcmp(s->v[j], v);
            ok &= hit;
            n++;
        }
        va_end(ap);
        if (ok && n == s->n) return s;
    }
    return NULL;
}

static double value(const sample_t *s) {
    if (!s) fail_msg("sample not found");
    return s->value;
}

static char *render(si_metrics_t *r) {
    si_metrics_buf_t b = {0};
    si_err_t err = {""};
    assert_int_equal(si_metrics_render(r, &b, &err), 0);
    return b.base ? b.base : strdup("");
}

/* ---- tests ---- */

static const char *const LABELS[3] = {"function", "step", "code"};

typedef struct worker {
    si_metric_t *c;
    int id;
} worker_t;

static void *work(void *arg) {
    worker_t *w = arg;
    char step[16];
    snprintf(step, sizeof step, "t%d", w->id);
    const char *shared[3] = {"stage", "1", "200"}, *own[3] = {"stage", step, "200"};
    for (int i = 0; i < 100000; i++) {
        if (si_metrics_inc(w->c, shared, NULL)) return (void *)1;
        if (i % 100 == 0 && si_metrics_add(w->c, own, 0.5, NULL)) return (void *)1;
    }
    return NULL;
}

static void test_counter_two_threads(void **state) {
    (void)state;
    si_metrics_t *r = si_metrics_new();
    si_err_t err = {""};
    si_metric_t *c =
        si_metrics_counter(r, "splitinfer_requests_total", "Requests handled.", 3, LABELS, &err);
    assert_non_null(c);
    pthread_t th[2];
    worker_t w[2] = {{c, 0}, {c, 1}};
    for (int i = 0; i < 2; i++) assert_int_equal(pthread_create(&th[i], NULL, work, &w[i]), 0);
    for (int i = 0; i < 20; i++) { /* scrapes while the workers count must stay well-formed */
        char *t = render(r);
        parsed_t ps;
        parse(t, &ps);
        free(ps.s);
        free(t);
    }
    for (int i = 0; i < 2; i++) {
        void *rv;
        pthread_join(th[i], &rv);
        assert_null(rv);
    }
    char *t = render(r);
    parsed_t ps;
    parse(t, &ps);
    assert_true(value(find(&ps, "splitinfer_requests_total", "function", "stage", "step", "1",
                           "code", "200", NULL)) == 200000);
    assert_true(value(find(&ps, "splitinfer_requests_total", "function", "stage", "step", "t0",
                           "code", "200", NULL)) == 500);
    assert_true(value(find(&ps, "splitinfer_requests_total", "function", "stage", "step", "t1",
                           "code", "200", NULL)) == 500);
    assert_int_equal(ps.n, 3);
    assert_string_equal(ps.types[0], "splitinfer_requests_total counter");
    assert_non_null(strstr(t, "# HELP splitinfer_requests_total Requests handled.\n"
                              "# TYPE splitinfer_requests_total counter\n"
                              "splitinfer_requests_total{function=\"stage\",step=\"1\","
                              "code=\"200\"} 200000\n"));
    free(ps.s);
    free(t);
    si_metrics_free(r);
}

static void test_histogram(void **state) {
    (void)state;
    si_metrics_t *r = si_metrics_new();
    si_err_t err = {""};
    const char *fs[1] = {"function"};
    si_metric_t *h =
        si_metrics_histogram(r, "splitinfer_stage_seconds", "Stage latency.", 1, fs, NULL, 0, &err);
    assert_non_null(h);
    const char *a[1] = {"a"}, *b[1] = {"b"};
    double obs[] = {0.0005, 0.003, 0.003, 0.2, 20, 0.001}, sum = 0;
    for (size_t i = 0; i < sizeof obs / sizeof *obs; i++) {
        assert_int_equal(si_metrics_observe(h, a, obs[i], &err), 0);
        sum += obs[i];
    }
    assert_int_equal(si_metrics_observe(h, b, 7, &err), 0);
    char *t = render(r);
    parsed_t ps;
    parse(t, &ps);
    /* cumulative: le="0.001" holds 0.0005 and 0.001 (a bound includes itself) */
    struct {
        const char *le;
        double want;
    } exp[] = {{"0.001", 2}, {"0.0025", 2}, {"0.005", 4}, {"0.01", 4}, {"0.025", 4},
               {"0.05", 4},  {"0.1", 4},    {"0.25", 5},  {"0.5", 5},  {"1", 5},
               {"2.5", 5},   {"5", 5},      {"10", 5},    {"+Inf", 6}};
    assert_int_equal(sizeof exp / sizeof *exp, SI_METRICS_LATENCY_BUCKETS_N + 1);
    double prev = 0;
    for (size_t i = 0; i < sizeof exp / sizeof *exp; i++) {
        double v = value(
            find(&ps, "splitinfer_stage_seconds_bucket", "function", "a", "le", exp[i].le, NULL));
        if (v != exp[i].want) fail_msg("le=%s: %g, want %g", exp[i].le, v, exp[i].want);
        assert_true(v >= prev);
        prev = v;
    }
    /* the shortest round-trip formatting makes the sum exact */
    assert_true(value(find(&ps, "splitinfer_stage_seconds_sum", "function", "a", NULL)) == sum);
    assert_true(value(find(&ps, "splitinfer_stage_seconds_count", "function", "a", NULL)) == 6);
    assert_true(
        value(find(&ps, "splitinfer_stage_seconds_bucket", "function", "b", "le", "5", NULL)) == 0);
    assert_true(value(find(&ps, "splitinfer_stage_seconds_bucket", "function", "b", "le", "10",
                           NULL)) == 1);
    assert_true(value(find(&ps, "splitinfer_stage_seconds_count", "function", "b", NULL)) == 1);
    assert_int_equal(ps.n, 2 * (SI_METRICS_LATENCY_BUCKETS_N + 3));
    assert_string_equal(ps.types[0], "splitinfer_stage_seconds histogram");
    free(ps.s);
    free(t);

    /* explicit bounds, no labels: present (all zero) before any observation */
    double bounds[3] = {1024, 65536, 1048576};
    si_metric_t *hb = si_metrics_histogram(r, "splitinfer_message_bytes", "Message sizes.", 0, NULL,
                                           bounds, 3, &err);
    assert_non_null(hb);
    t = render(r);
    parse(t, &ps);
    assert_true(value(find(&ps, "splitinfer_message_bytes_bucket", "le", "65536", NULL)) == 0);
    assert_true(value(find(&ps, "splitinfer_message_bytes_count", NULL)) == 0);
    free(ps.s);
    free(t);
    assert_int_equal(si_metrics_observe(hb, NULL, 65536, &err), 0);
    assert_int_equal(si_metrics_observe(hb, NULL, 3e6, &err), 0);
    t = render(r);
    parse(t, &ps);
    assert_true(value(find(&ps, "splitinfer_message_bytes_bucket", "le", "1024", NULL)) == 0);
    assert_true(value(find(&ps, "splitinfer_message_bytes_bucket", "le", "65536", NULL)) == 1);
    assert_true(value(find(&ps, "splitinfer_message_bytes_bucket", "le", "1048576", NULL)) == 1);
    assert_true(value(find(&ps, "splitinfer_message_bytes_bucket", "le", "+Inf", NULL)) == 2);
    assert_true(value(find(&ps, "splitinfer_message_bytes_sum", NULL)) == 3065536);
    free(ps.s);
    free(t);
    si_metrics_free(r);
}

static void test_escaping(void **state) {
    (void)state;
    si_metrics_t *r = si_metrics_new();
    si_err_t err = {""};
    const char *ln[2] = {"path", "code"};
    si_metric_t *c = si_metrics_counter(r, "splitinfer_errors_total",
                                        "Errors, by \"path\".\nA back\\slash.", 2, ln, &err);
    assert_non_null(c);
    const char *weird = "a\"b\\c\nd";
    const char *v[2] = {weird, ""};
    assert_int_equal(si_metrics_add(c, v, 2.5, &err), 0);
    const char *v2[2] = {"ab", "c"}, *v3[2] = {"a", "bc"}; /* same concatenation, two series */
    assert_int_equal(si_metrics_inc(c, v2, &err), 0);
    assert_int_equal(si_metrics_inc(c, v3, &err), 0);
    assert_int_equal(si_metrics_inc(c, v3, &err), 0);
    char *t = render(r);
    assert_non_null(strstr(t, "{path=\"a\\\"b\\\\c\\nd\",code=\"\"} 2.5\n"));
    assert_non_null(
        strstr(t, "# HELP splitinfer_errors_total Errors, by \"path\".\\nA back\\\\slash.\n"));
    parsed_t ps;
    parse(t, &ps);
    assert_true(value(find(&ps, "splitinfer_errors_total", "path", weird, "code", "", NULL)) ==
                2.5);
    assert_true(value(find(&ps, "splitinfer_errors_total", "path", "ab", "code", "c", NULL)) == 1);
    assert_true(value(find(&ps, "splitinfer_errors_total", "path", "a", "code", "bc", NULL)) == 2);
    free(ps.s);
    free(t);
    si_metrics_free(r);
}

static void test_gauge_and_formatting(void **state) {
    (void)state;
    si_metrics_t *r = si_metrics_new();
    si_err_t err = {""};
    si_metric_t *g = si_metrics_gauge(r, "splitinfer_inflight", "In flight.", 0, NULL, &err);
    const char *dn[1] = {"dtype"};
    si_metric_t *g2 = si_metrics_gauge(r, "splitinfer_ratio", "", 1, dn, &err);
    assert_non_null(g);
    assert_non_null(g2);
    char *t = render(r);
    assert_non_null(strstr(t, "\nsplitinfer_inflight 0\n")); /* there from the start */
    assert_null(strstr(t, "\nsplitinfer_ratio"));            /* no series yet */
    assert_non_null(strstr(t, "# TYPE splitinfer_ratio gauge\n"));
    free(t);
    assert_int_equal(si_metrics_set(g, NULL, 5, &err), 0);
    assert_int_equal(si_metrics_add(g, NULL, -7.25, &err), 0);
    const char *a[1] = {"a"}, *b[1] = {"b"}, *c[1] = {"c"}, *d[1] = {"d"};
    assert_int_equal(si_metrics_set(g2, a, 0.1, &err), 0);
    assert_int_equal(si_metrics_set(g2, b, NAN, &err), 0);
    assert_int_equal(si_metrics_set(g2, c, -INFINITY, &err), 0);
    assert_int_equal(si_metrics_set(g2, d, 1e300, &err), 0);
    t = render(r);
    assert_non_null(strstr(t, "\nsplitinfer_inflight -2.25\n"));
    assert_non_null(strstr(t, "splitinfer_ratio{dtype=\"a\"} 0.1\n")); /* shortest form */
    assert_non_null(strstr(t, "splitinfer_ratio{dtype=\"b\"} NaN\n"));
    assert_non_null(strstr(t, "splitinfer_ratio{dtype=\"c\"} -Inf\n"));
    parsed_t ps;
    parse(t, &ps);
    assert_true(value(find(&ps, "splitinfer_ratio", "dtype", "d", NULL)) == 1e300);
    assert_true(isnan(value(find(&ps, "splitinfer_ratio", "dtype", "b", NULL))));
    free(ps.s);
    free(t);
    si_metrics_free(r);
}

static void expect_err(int rc, const si_err_t *err, const char *want) {
    assert_int_equal(rc, -1);
    if (!strstr(err->msg, want)) fail_msg("error '%s' lacks '%s'", err->msg, want);
}

static void test_errors(void **state) {
    (void)state;
    si_metrics_t *r = si_metrics_new();
    si_err_t err = {""};
#define REG_FAIL(call, want)                                                                       \
    do {                                                                                           \
        err.msg[0] = '\0';                                                                         \
        assert_null(call);                                                                         \
        if (!strstr(err.msg, want)) fail_msg("error '%s' lacks '%s'", err.msg, want);              \
    } while (0)
    const char *l1[1] = {"le"}, *l2[2] = {"a", "a"}, *l3[1] = {"__x"}, *l4[1] = {"a-b"};
    const char *l9[9] = {"a", "b", "c", "d", "e", "f", "g", "h", "i"};
    REG_FAIL(si_metrics_counter(r, "9bad_total", "", 0, NULL, &err), "not [a-zA-Z_:]");
    REG_FAIL(si_metrics_counter(r, "has space_total", "", 0, NULL, &err), "not");
    REG_FAIL(si_metrics_counter(r, NULL, "", 0, NULL, &err), "(null)");
    REG_FAIL(si_metrics_counter(r, "splitinfer_requests", "", 0, NULL, &err), "_total");
    REG_FAIL(si_metrics_histogram(r, "h_seconds", "", 1, l1, NULL, 0, &err), "'le'");
    REG_FAIL(si_metrics_gauge(r, "g", "", 2, l2, &err), "twice");
    REG_FAIL(si_metrics_gauge(r, "g", "", 1, l3, &err), "__");
    REG_FAIL(si_metrics_gauge(r, "g", "", 1, l4, &err), "a-b");
    REG_FAIL(si_metrics_gauge(r, "g", "", 9, l9, &err), "at most 8");
    REG_FAIL(si_metrics_gauge(r, "g", "", 1, NULL, &err), "label names");
    REG_FAIL(si_metrics_gauge(r, "process_open_fds", "", 0, NULL, &err), "reserved");
    double bad1[3] = {1, 1, 2}, bad2[2] = {0.1, NAN};
    REG_FAIL(si_metrics_histogram(r, "h", "", 0, NULL, bad1, 3, &err), "increasing");
    REG_FAIL(si_metrics_histogram(r, "h", "", 0, NULL, bad2, 2, &err), "finite");
    REG_FAIL(si_metrics_histogram(r, "h", "", 0, NULL, bad1, 0, &err), "bucket bounds");
    REG_FAIL(si_metrics_counter(NULL, "x_total", "", 0, NULL, &err), "NULL");

    const char *ln[1] = {"code"};
    si_metric_t *c = si_metrics_counter(r, "x_total", "", 1, ln, &err);
    si_metric_t *h = si_metrics_histogram(r, "h_seconds", "", 0, NULL, NULL, 0, &err);
    si_metric_t *g = si_metrics_gauge(r, "g", "", 0, NULL, &err);
    assert_non_null(c);
    assert_non_null(h);
    assert_non_null(g);
    REG_FAIL(si_metrics_gauge(r, "x_total", "", 0, NULL, &err), "registered twice");
#undef REG_FAIL
    const char *ok[1] = {"200"}, *nullv[1] = {NULL};
    expect_err(si_metrics_add(c, ok, -1, &err), &err, "cannot add -1");
    expect_err(si_metrics_add(c, ok, NAN, &err), &err, "cannot add");
    expect_err(si_metrics_add(c, ok, INFINITY, &err), &err, "cannot add");
    expect_err(si_metrics_add(g, NULL, NAN, &err), &err, "cannot add");
    expect_err(si_metrics_inc(c, NULL, &err), &err, "1 label values needed");
    expect_err(si_metrics_inc(c, nullv, &err), &err, "'code' has no value");
    expect_err(si_metrics_set(c, ok, 3, &err), &err, "set on a counter");
    expect_err(si_metrics_observe(c, ok, 3, &err), &err, "observe on a counter");
    expect_err(si_metrics_add(h, NULL, 1, &err), &err, "add on a histogram");
    expect_err(si_metrics_observe(h, NULL, NAN, &err), &err, "NaN");
    expect_err(si_metrics_inc(NULL, NULL, &err), &err, "NULL");
    expect_err(si_metrics_render(NULL, NULL, &err), &err, "NULL");
    /* nothing above left a trace */
    char *t = render(r);
    parsed_t ps;
    parse(t, &ps);
    assert_int_equal(ps.n, SI_METRICS_LATENCY_BUCKETS_N + 3 + 1); /* h's series and g */
    assert_int_equal(ps.n_types, 3);
    assert_int_equal(ps.n_help, 3);
    free(ps.s);
    free(t);
    si_metrics_free(r);
    si_metrics_free(NULL);
}

/* A family stops at SI_METRICS_MAX_SERIES series; the ones it has keep working. */
static void test_cardinality_limit(void **state) {
    (void)state;
    si_metrics_t *r = si_metrics_new();
    si_err_t err = {""};
    const char *ln[1] = {"id"};
    si_metric_t *c = si_metrics_counter(r, "ids_total", "", 1, ln, &err);
    char id[32];
    const char *v[1] = {id};
    for (int i = 0; i < SI_METRICS_MAX_SERIES; i++) {
        snprintf(id, sizeof id, "%d", i);
        assert_int_equal(si_metrics_add(c, v, i, &err), 0);
    }
    snprintf(id, sizeof id, "one-too-many");
    expect_err(si_metrics_inc(c, v, &err), &err, "more than 10000");
    for (int i = 0; i < SI_METRICS_MAX_SERIES; i += 997) { /* found again, not re-created */
        snprintf(id, sizeof id, "%d", i);
        assert_int_equal(si_metrics_inc(c, v, &err), 0);
    }
    char *t = render(r);
    parsed_t ps;
    parse(t, &ps);
    assert_int_equal(ps.n, SI_METRICS_MAX_SERIES);
    assert_true(value(find(&ps, "ids_total", "id", "1994", NULL)) == 1995);
    assert_true(value(find(&ps, "ids_total", "id", "9999", NULL)) == 9999);
    free(ps.s);
    free(t);
    si_metrics_free(r);
}

static void test_process(void **state) {
    (void)state;
    /* burn ~0.2 s of CPU so the counter has something to show */
    struct timespec t0, t1;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t0);
    volatile double x = 0;
    do {
        for (int i = 0; i < 100000; i++) x += sqrt((double)i);
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t1);
    } while ((double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9 < 0.2);

    si_metrics_t *r = si_metrics_new();
    si_err_t err = {""};
    assert_int_equal(si_metrics_add_process(r, &err), 0);
    char *t = render(r);
    parsed_t ps;
    parse(t, &ps);
    double rss = value(find(&ps, "process_resident_memory_bytes", NULL));
    double vms = value(find(&ps, "process_virtual_memory_bytes", NULL));
    double start = value(find(&ps, "process_start_time_seconds", NULL));
    double cpu = value(find(&ps, "process_cpu_seconds_total", NULL));
    double fds = value(find(&ps, "process_open_fds", NULL));
    double now = (double)time(NULL);
    assert_true(rss > 1e6);
    assert_true(vms >= rss);
    if (!(fabs(now - start) < 60)) fail_msg("start %.2f, now %.0f", start, now);
    assert_true(start <= now + 1);
    assert_true(cpu >= 0.19 && cpu < 1000);
    assert_true(fds >= 3);
    assert_non_null(strstr(t, "# TYPE process_cpu_seconds_total counter\n"));
    assert_non_null(strstr(t, "# TYPE process_resident_memory_bytes gauge\n"));
    /* the start time is the same at every scrape */
    char *t2 = render(r);
    parsed_t ps2;
    parse(t2, &ps2);
    assert_true(value(find(&ps2, "process_start_time_seconds", NULL)) == start);
    free(ps.s);
    free(ps2.s);
    free(t);
    free(t2);
    si_metrics_free(r);
}

static void test_buf(void **state) {
    (void)state;
    si_metrics_buf_t b = {0};
    char big[10000];
    memset(big, 'y', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(si_metrics_buf_printf(&b, "%s", "x"), 0);
    assert_int_equal(si_metrics_buf_printf(&b, "%s", big), 0);
    assert_int_equal(si_metrics_buf_printf(&b, "%d", 42), 0);
    assert_int_equal(b.len, 1 + 9999 + 2);
    assert_int_equal(strlen(b.base), b.len);
    assert_int_equal(b.base[0], 'x');
    assert_string_equal(b.base + 10000, "42");
    /* render appends */
    si_metrics_t *r = si_metrics_new();
    assert_non_null(si_metrics_gauge(r, "g", "", 0, NULL, NULL));
    assert_int_equal(si_metrics_render(r, &b, NULL), 0);
    assert_string_equal(b.base + 10002, "# HELP g \n# TYPE g gauge\ng 0\n");
    si_metrics_buf_free(&b);
    assert_null(b.base);
    si_metrics_free(r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counter_two_threads),
        cmocka_unit_test(test_histogram),
        cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_gauge_and_formatting),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_cardinality_limit),
        cmocka_unit_test(test_process),
        cmocka_unit_test(test_buf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
