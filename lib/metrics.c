/*
 * metrics.c - Prometheus text exposition 0.0.4 (see metrics.h).
 *
 * Each family keeps its series twice: on a list in creation order, which is
 * the order they render in, and in a chained hash table keyed by the label
 * values, so an update is one hash and (almost always) one string compare per
 * label however many series there are. Series are never removed, so pointers
 * to them stay valid; SI_METRICS_MAX_SERIES bounds how many there can be.
 *
 * Number formatting goes through printf/strtod, which follow LC_NUMERIC: the
 * program must keep the "C" numeric locale (it never calls setlocale).
 */
#include "metrics.h"

#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

const double si_metrics_latency_buckets[SI_METRICS_LATENCY_BUCKETS_N] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

typedef enum kind { KIND_COUNTER, KIND_GAUGE, KIND_HISTOGRAM } kind_t;

typedef struct series {
    struct series *next;  /* creation order */
    struct series *chain; /* same hash slot */
    uint64_t hash;        /* of the label values */
    char **values;        /* n_labels strings, in the same allocation as the series */
    double value;         /* counter, gauge */
    double sum;           /* histogram: sum of observations */
    uint64_t count;       /* histogram: number of observations */
    uint64_t *buckets;    /* histogram: n_bounds + 1 per-bucket (not cumulative)
                             counts, the last one for +Inf; same allocation */
} series_t;

struct si_metric {
    struct si_metric *next; /* registration order */
    kind_t kind;
    char *name, *help;
    int n_labels;
    char *label_names[SI_METRICS_MAX_LABELS];
    int n_bounds;
    double *bounds; /* histogram upper bounds, strictly increasing */

    pthread_mutex_t mu; /* guards everything below */
    series_t *first, *last;
    series_t **table; /* table_len slots, a power of two; NULL until first series */
    size_t table_len;
    size_t n_series;
};

/* What the process collector reads once: neither changes while we run. */
typedef struct proc_static {
    int on;            /* si_metrics_add_process was called */
    double start_time; /* seconds since the epoch; < 0 when unknown */
} proc_static_t;

struct si_metrics {
    pthread_mutex_t mu; /* guards the family list and proc */
    si_metric_t *first, *last;
    proc_static_t proc;
};

/* The names the process collector renders; a family may not take them. */
static const char *const proc_names[] = {
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_start_time_seconds",
    "process_open_fds",
    "process_max_fds",
};
#define N_PROC_NAMES (sizeof proc_names / sizeof proc_names[0])

/* ---- text buffer ---- */

/* Makes room for extra more bytes plus a NUL. */
static int buf_reserve(si_metrics_buf_t *b, size_t extra) {
    if (b->cap > b->len && b->cap - b->len > extra) return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->len <= extra) {
        if (cap > SIZE_MAX / 2) return -1;
        cap *= 2;
    }
    char *p = realloc(b->base, cap);
    if (!p) return -1;
    b->base = p, b->cap = cap;
    return 0;
}

int si_metrics_buf_printf(si_metrics_buf_t *b, const char *fmt, ...) {
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    size_t room = b->cap > b->len ? b->cap - b->len : 0;
    int n = vsnprintf(room ? b->base + b->len : NULL, room, fmt, ap);
    va_end(ap);
    int rc = 0;
    if (n < 0) {
        rc = -1;
    } else if ((size_t)n >= room) { /* did not fit: grow and print again */
        if (buf_reserve(b, (size_t)n) == 0)
            vsnprintf(b->base + b->len, b->cap - b->len, fmt, ap2);
        else
            rc = -1;
    }
    va_end(ap2);
    if (rc == 0)
        b->len += (size_t)n;
    else if (b->base && b->cap > b->len)
        b->base[b->len] = '\0'; /* drop a cut-off tail */
    return rc;
}

void si_metrics_buf_free(si_metrics_buf_t *b) {
    if (!b) return;
    free(b->base);
    memset(b, 0, sizeof *b);
}

static int buf_puts(si_metrics_buf_t *b, const char *s) {
    size_t n = strlen(s);
    if (buf_reserve(b, n)) return -1;
    memcpy(b->base + b->len, s, n + 1);
    b->len += n;
    return 0;
}

/* Appends s escaped: backslash and newline always, the double quote too inside
 * a label value (in_label). What format 0.0.4 requires of label values and of
 * HELP text respectively. */
static int buf_put_escaped(si_metrics_buf_t *b, const char *s, int in_label) {
    if (buf_reserve(b, 2 * strlen(s))) return -1;
    char *p = b->base + b->len;
    for (; *s; s++) {
        if (*s == '\\')
            *p++ = '\\', *p++ = '\\';
        else if (*s == '\n')
            *p++ = '\\', *p++ = 'n';
        else if (*s == '"' && in_label)
            *p++ = '\\', *p++ = '"';
        else
            *p++ = *s;
    }
    *p = '\0';
    b->len = (size_t)(p - b->base);
    return 0;
}

/* Shortest of %.15g..%.17g that reads back as v (Go's strconv 'g', -1 is the
 * reference here); Prometheus's spellings for the non-finite. */
static void fmt_double(double v, char *buf, size_t len) {
    if (isnan(v)) {
        snprintf(buf, len, "NaN");
    } else if (isinf(v)) {
        snprintf(buf, len, v > 0 ? "+Inf" : "-Inf");
    } else {
        for (int prec = 15; prec <= 17; prec++) {
            snprintf(buf, len, "%.*g", prec, v);
            if (strtod(buf, NULL) == v) break;
        }
    }
}

/* ---- names ---- */

static int name_ok(const char *s, int metric) {
    if (!s || !*s) return 0;
    for (const char *p = s; *p; p++) {
        int alpha = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' ||
                    (metric && *p == ':');
        if (!alpha && !(p > s && *p >= '0' && *p <= '9')) return 0;
    }
    return 1;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* si_err_set for functions that return a pointer. */
static void *fail_null(si_err_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void *fail_null(si_err_t *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return NULL;
}

/* ---- registry ---- */

si_metrics_t *si_metrics_new(void) {
    si_metrics_t *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    if (pthread_mutex_init(&r->mu, NULL)) {
        free(r);
        return NULL;
    }
    return r;
}

static void family_free(si_metric_t *m) {
    for (series_t *s = m->first, *next; s; s = next) {
        next = s->next;
        free(s);
    }
    free(m->table);
    for (int i = 0; i < m->n_labels; i++) free(m->label_names[i]);
    free(m->name);
    free(m->help);
    free(m->bounds);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

void si_metrics_free(si_metrics_t *r) {
    if (!r) return;
    for (si_metric_t *m = r->first, *next; m; m = next) {
        next = m->next;
        family_free(m);
    }
    pthread_mutex_destroy(&r->mu);
    free(r);
}

static series_t *series_get(si_metric_t *m, const char *const *values, si_err_t *err);

/* Checks everything about a new family that does not need the registry. */
static int family_check(const char *name, int n_labels, const char *const *label_names, kind_t kind,
                        si_err_t *err) {
    if (!name_ok(name, 1))
        return si_err_set(err, "metric name '%s' is not [a-zA-Z_:][a-zA-Z0-9_:]*",
                          name ? name : "(null)");
    if (kind == KIND_COUNTER && !ends_with(name, "_total"))
        return si_err_set(err, "counter '%s' must end in _total", name);
    if (n_labels < 0 || n_labels > SI_METRICS_MAX_LABELS || (n_labels && !label_names))
        return si_err_set(err, "%s: %d label names (at most %d)", name, n_labels,
                          SI_METRICS_MAX_LABELS);
    for (int i = 0; i < n_labels; i++) {
        const char *l = label_names[i];
        if (!name_ok(l, 0) || strncmp(l, "__", 2) == 0)
            return si_err_set(err,
                              "%s: label name '%s' is not [a-zA-Z_][a-zA-Z0-9_]* "
                              "without a leading __",
                              name, l ? l : "(null)");
        if (kind == KIND_HISTOGRAM && strcmp(l, "le") == 0)
            return si_err_set(err, "%s: 'le' is the histogram's own label", name);
        for (int j = 0; j < i; j++)
            if (strcmp(l, label_names[j]) == 0)
                return si_err_set(err, "%s: label '%s' twice", name, l);
    }
    for (size_t i = 0; i < N_PROC_NAMES; i++)
        if (strcmp(name, proc_names[i]) == 0)
            return si_err_set(err, "%s: reserved for si_metrics_add_process", name);
    return 0;
}

static si_metric_t *family_new(si_metrics_t *r, kind_t kind, const char *name, const char *help,
                               int n_labels, const char *const *label_names, const double *bounds,
                               int n_bounds, si_err_t *err) {
    if (!r) return fail_null(err, "metrics: NULL registry");
    if (family_check(name, n_labels, label_names, kind, err)) return NULL;
    if (kind == KIND_HISTOGRAM) {
        if (!bounds) bounds = si_metrics_latency_buckets, n_bounds = SI_METRICS_LATENCY_BUCKETS_N;
        if (n_bounds < 1 || n_bounds > SI_METRICS_MAX_BUCKETS)
            return fail_null(err, "%s: %d bucket bounds (1..%d)", name, n_bounds,
                             SI_METRICS_MAX_BUCKETS);
        for (int i = 0; i < n_bounds; i++)
            if (!isfinite(bounds[i]) || (i && !(bounds[i] > bounds[i - 1])))
                return fail_null(err,
                                 "%s: bucket bounds must be finite and increasing "
                                 "(bound %d is %g)",
                                 name, i, bounds[i]);
    }
    si_metric_t *m = calloc(1, sizeof *m);
    if (!m || pthread_mutex_init(&m->mu, NULL)) {
        free(m);
        return fail_null(err, "%s: out of memory", name);
    }
    m->kind = kind;
    m->name = strdup(name);
    m->help = strdup(help ? help : "");
    int oom = !m->name || !m->help;
    for (int i = 0; i < n_labels; i++) {
        m->label_names[i] = strdup(label_names[i]);
        m->n_labels = i + 1; /* so family_free frees what was copied */
        oom |= !m->label_names[i];
    }
    if (kind == KIND_HISTOGRAM) {
        m->n_bounds = n_bounds;
        m->bounds = malloc((size_t)n_bounds * sizeof *m->bounds);
        if (m->bounds) memcpy(m->bounds, bounds, (size_t)n_bounds * sizeof *bounds);
        oom |= !m->bounds;
    }
    /* A family without labels has its one series from the start, so it shows 0. */
    if (oom || (n_labels == 0 && !series_get(m, NULL, err))) {
        family_free(m);
        return fail_null(err, "%s: out of memory", name);
    }

    pthread_mutex_lock(&r->mu);
    for (si_metric_t *o = r->first; o; o = o->next) {
        if (strcmp(o->name, name) == 0) {
            pthread_mutex_unlock(&r->mu);
            family_free(m);
            return fail_null(err, "metric '%s' registered twice", name);
        }
    }
    if (r->last)
        r->last->next = m;
    else
        r->first = m;
    r->last = m;
    pthread_mutex_unlock(&r->mu);
    return m;
}

si_metric_t *si_metrics_counter(si_metrics_t *r, const char *name, const char *help, int n_labels,
                                const char *const *label_names, si_err_t *err) {
    return family_new(r, KIND_COUNTER, name, help, n_labels, label_names, NULL, 0, err);
}

si_metric_t *si_metrics_gauge(si_metrics_t *r, const char *name, const char *help, int n_labels,
                              const char *const *label_names, si_err_t *err) {
    return family_new(r, KIND_GAUGE, name, help, n_labels, label_names, NULL, 0, err);
}

si_metric_t *si_metrics_histogram(si_metrics_t *r, const char *name, const char *help, int n_labels,
                                  const char *const *label_names, const double *bounds,
                                  int n_bounds, si_err_t *err) {
    return family_new(r, KIND_HISTOGRAM, name, help, n_labels, label_names, bounds, n_bounds, err);
}

/* ---- series ---- */

/* FNV-1a over the values, each followed by a 0 byte so ("ab","c") != ("a","bc"). */
static uint64_t values_hash(const char *const *values, int n) {
    uint64_t h = 14695981039346656037ull;
    for (int i = 0; i < n; i++) {
        for (const unsigned char *p = (const unsigned char *)values[i];; p++) {
            h = (h ^ *p) * 1099511628211ull;
            if (!*p) break;
        }
    }
    return h;
}

static int values_equal(const series_t *s, const char *const *values, int n) {
    for (int i = 0; i < n; i++)
        if (strcmp(s->values[i], values[i]) != 0) return 0;
    return 1;
}

/* Doubles the hash table (or makes the first one); on OOM the old one stays,
 * which only makes chains longer. */
static void table_grow(si_metric_t *m) {
    size_t len = m->table_len ? m->table_len * 2 : 16;
    series_t **t = calloc(len, sizeof *t);
    if (!t) return;
    for (series_t *s = m->first; s; s = s->next) {
        size_t i = (size_t)s->hash & (len - 1);
        s->chain = t[i], t[i] = s;
    }
    free(m->table);
    m->table = t, m->table_len = len;
}

/* The series of values, created when new. Called with m->mu held (or before m
 * is shared). values were checked by the caller. */
static series_t *series_get(si_metric_t *m, const char *const *values, si_err_t *err) {
    int n = m->n_labels;
    uint64_t h = values_hash(values, n);
    /* Without a table (its first allocation failed) the list still finds it. */
    series_t *s = m->table ? m->table[(size_t)h & (m->table_len - 1)] : m->first;
    for (; s; s = m->table ? s->chain : s->next)
        if (s->hash == h && values_equal(s, values, n)) return s;
    if (m->n_series >= SI_METRICS_MAX_SERIES)
        return fail_null(err, "%s: more than %d label value sets", m->name, SI_METRICS_MAX_SERIES);

    /* One allocation: the series, its bucket counts, the value pointers, the strings. */
    size_t nb = m->kind == KIND_HISTOGRAM ? (size_t)m->n_bounds + 1 : 0;
    size_t size = sizeof(series_t) + nb * sizeof(uint64_t) + (size_t)n * sizeof(char *);
    for (int i = 0; i < n; i++) size += strlen(values[i]) + 1;
    s = calloc(1, size);
    if (!s) return fail_null(err, "%s: out of memory", m->name);
    s->buckets = (uint64_t *)(s + 1);
    s->values = (char **)(s->buckets + nb);
    char *p = (char *)(s->values + n);
    for (int i = 0; i < n; i++) {
        size_t l = strlen(values[i]) + 1;
        memcpy(p, values[i], l);
        s->values[i] = p, p += l;
    }
    s->hash = h;
    if (m->last)
        m->last->next = s;
    else
        m->first = s;
    m->last = s;
    m->n_series++;
    if (m->table) {
        size_t i = (size_t)h & (m->table_len - 1);
        s->chain = m->table[i], m->table[i] = s;
    }
    if (m->n_series > m->table_len) table_grow(m); /* keeps chains ~1 long */
    return s;
}

static int check_values(const si_metric_t *m, const char *const *values, si_err_t *err) {
    if (m->n_labels && !values)
        return si_err_set(err, "%s: %d label values needed, got none", m->name, m->n_labels);
    for (int i = 0; i < m->n_labels; i++)
        if (!values[i])
            return si_err_set(err, "%s: label '%s' has no value", m->name, m->label_names[i]);
    return 0;
}

/* Locks m and finds the series; on success the caller unlocks. */
static series_t *lock_series(si_metric_t *m, const char *const *values, si_err_t *err) {
    if (check_values(m, values, err)) return NULL;
    pthread_mutex_lock(&m->mu);
    series_t *s = series_get(m, values, err);
    if (!s) pthread_mutex_unlock(&m->mu);
    return s;
}

static const char *kind_name(kind_t k) {
    return k == KIND_COUNTER ? "counter" : k == KIND_GAUGE ? "gauge" : "histogram";
}

int si_metrics_add(si_metric_t *m, const char *const *label_values, double v, si_err_t *err) {
    if (!m) return si_err_set(err, "metrics: NULL metric");
    if (m->kind == KIND_HISTOGRAM)
        return si_err_set(err, "%s: add on a histogram (use observe)", m->name);
    if (m->kind == KIND_COUNTER && !(v >= 0))
        return si_err_set(err, "%s: a counter cannot add %g", m->name, v);
    if (!isfinite(v)) return si_err_set(err, "%s: cannot add %g", m->name, v);
    series_t *s = lock_series(m, label_values, err);
    if (!s) return -1;
    s->value += v;
    pthread_mutex_unlock(&m->mu);
    return 0;
}

int si_metrics_inc(si_metric_t *m, const char *const *label_values, si_err_t *err) {
    return si_metrics_add(m, label_values, 1.0, err);
}

int si_metrics_set(si_metric_t *m, const char *const *label_values, double v, si_err_t *err) {
    if (!m) return si_err_set(err, "metrics: NULL metric");
    if (m->kind != KIND_GAUGE)
        return si_err_set(err, "%s: set on a %s", m->name, kind_name(m->kind));
    series_t *s = lock_series(m, label_values, err);
    if (!s) return -1;
    s->value = v;
    pthread_mutex_unlock(&m->mu);
    return 0;
}

int si_metrics_observe(si_metric_t *m, const char *const *label_values, double v, si_err_t *err) {
    if (!m) return si_err_set(err, "metrics: NULL metric");
    if (m->kind != KIND_HISTOGRAM)
        return si_err_set(err, "%s: observe on a %s", m->name, kind_name(m->kind));
    if (isnan(v)) return si_err_set(err, "%s: cannot observe NaN", m->name);
    /* Linear: a dozen bounds, and the small ones (fast requests) come first. */
    int b = 0;
    while (b < m->n_bounds && v > m->bounds[b]) b++;
    series_t *s = lock_series(m, label_values, err);
    if (!s) return -1;
    s->buckets[b]++;
    s->count++;
    s->sum += v;
    pthread_mutex_unlock(&m->mu);
    return 0;
}

/* ---- rendering ---- */

static int put_header(si_metrics_buf_t *b, const char *name, const char *help, const char *type) {
    return si_metrics_buf_printf(b, "# HELP %s ", name) || buf_put_escaped(b, help, 0) ||
           si_metrics_buf_printf(b, "\n# TYPE %s %s\n", name, type);
}

/* name{l1="v1",...[,le="bound"]} value */
static int put_sample(si_metrics_buf_t *b, const si_metric_t *m, const series_t *s,
                      const char *suffix, const char *le, double v) {
    char num[32];
    if (buf_puts(b, m->name) || buf_puts(b, suffix)) return -1;
    if (m->n_labels || le) {
        if (buf_puts(b, "{")) return -1;
        for (int i = 0; i < m->n_labels; i++)
            if (si_metrics_buf_printf(b, "%s%s=\"", i ? "," : "", m->label_names[i]) ||
                buf_put_escaped(b, s->values[i], 1) || buf_puts(b, "\""))
                return -1;
        if (le && si_metrics_buf_printf(b, "%sle=\"%s\"", m->n_labels ? "," : "", le)) return -1;
        if (buf_puts(b, "}")) return -1;
    }
    fmt_double(v, num, sizeof num);
    return si_metrics_buf_printf(b, " %s\n", num);
}

static int put_family(si_metrics_buf_t *b, const si_metric_t *m) {
    if (put_header(b, m->name, m->help, kind_name(m->kind))) return -1;
    for (const series_t *s = m->first; s; s = s->next) {
        if (m->kind != KIND_HISTOGRAM) {
            if (put_sample(b, m, s, "", NULL, s->value)) return -1;
            continue;
        }
        char le[32];
        uint64_t cum = 0; /* the exposition's buckets are cumulative */
        for (int i = 0; i <= m->n_bounds; i++) {
            cum += s->buckets[i];
            if (i < m->n_bounds)
                fmt_double(m->bounds[i], le, sizeof le);
            else
                snprintf(le, sizeof le, "+Inf");
            if (put_sample(b, m, s, "_bucket", le, (double)cum)) return -1;
        }
        if (put_sample(b, m, s, "_sum", NULL, s->sum) ||
            put_sample(b, m, s, "_count", NULL, (double)s->count))
            return -1;
    }
    return 0;
}

/* ---- process collector ---- */

/* Reads up to len - 1 bytes of a small /proc file, NUL-terminated; -1 on failure. */
static ssize_t read_small(const char *path, char *buf, size_t len) {
    FILE *f = fopen(path, "re");
    if (!f) return -1;
    size_t n = fread(buf, 1, len - 1, f);
    int bad = ferror(f);
    fclose(f);
    if (bad) return -1;
    buf[n] = '\0';
    return (ssize_t)n;
}

/* Fields of /proc/self/stat (proc(5) numbering, 1-based) that we use. */
typedef struct proc_stat {
    unsigned long long utime, stime; /* 14, 15: clock ticks */
    unsigned long long starttime;    /* 22: clock ticks after boot */
    unsigned long long vsize;        /* 23: bytes */
} proc_stat_t;

static int read_proc_stat(proc_stat_t *ps) {
    char buf[4096];
    if (read_small("/proc/self/stat", buf, sizeof buf) < 0) return -1;
    /* Field 2 is the command name in parentheses and may itself hold spaces and
     * ')': the fields we want are counted from the last ')'. */
    char *p = strrchr(buf, ')');
    if (!p) return -1;
    unsigned long long f[24] = {0};
    int field = 2;
    for (p++; *p && field < 23;) {
        while (*p == ' ') p++;
        if (!*p) break;
        char *end;
        field++;
        f[field] = strtoull(p, &end, 10); /* field 3, the state letter, reads as 0 */
        while (*end && *end != ' ') end++;
        p = end;
    }
    if (field < 23) return -1;
    ps->utime = f[14], ps->stime = f[15], ps->starttime = f[22], ps->vsize = f[23];
    return 0;
}

/* Boot time, seconds since the epoch: the "btime" line of /proc/stat. The file
 * has a line per CPU and a long "intr" line first, so it is read line by line. */
static double read_btime(void) {
    FILE *f = fopen("/proc/stat", "re");
    if (!f) return -1;
    char *line = NULL;
    size_t cap = 0;
    double bt = -1;
    while (getline(&line, &cap, f) > 0) {
        unsigned long long v;
        if (strncmp(line, "btime ", 6) == 0 && sscanf(line + 6, "%llu", &v) == 1) {
            bt = (double)v;
            break;
        }
    }
    free(line);
    fclose(f);
    return bt;
}

static long count_open_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) return -1;
    long n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n; /* includes the descriptor of d itself, as other clients do */
}

int si_metrics_add_process(si_metrics_t *r, si_err_t *err) {
    if (!r) return si_err_set(err, "metrics: NULL registry");
    double start = -1;
    proc_stat_t ps;
    long tck = sysconf(_SC_CLK_TCK);
    double btime = read_btime();
    if (tck > 0 && btime >= 0 && read_proc_stat(&ps) == 0)
        start = btime + (double)ps.starttime / (double)tck;
    pthread_mutex_lock(&r->mu);
    r->proc.on = 1;
    r->proc.start_time = start;
    pthread_mutex_unlock(&r->mu);
    return 0;
}

static int put_single(si_metrics_buf_t *b, const char *name, const char *help, const char *type,
                      double v) {
    char num[32];
    fmt_double(v, num, sizeof num);
    return put_header(b, name, help, type) || si_metrics_buf_printf(b, "%s %s\n", name, num);
}

static int put_process(si_metrics_buf_t *b, const proc_static_t *pc) {
    proc_stat_t ps;
    long tck = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    if (read_proc_stat(&ps) == 0) {
        if (tck > 0 &&
            put_single(b, proc_names[0], "Total user and system CPU time spent in seconds.",
                       "counter", (double)(ps.utime + ps.stime) / (double)tck))
            return -1;
        if (put_single(b, proc_names[2], "Virtual memory size in bytes.", "gauge",
                       (double)ps.vsize))
            return -1;
    }
    char statm[256];
    unsigned long long size, resident;
    if (page > 0 && read_small("/proc/self/statm", statm, sizeof statm) > 0 &&
        sscanf(statm, "%llu %llu", &size, &resident) == 2 &&
        put_single(b, proc_names[1], "Resident memory size in bytes.", "gauge",
                   (double)resident * (double)page))
        return -1;
    if (pc->start_time >= 0 &&
        put_single(b, proc_names[3], "Start time of the process since unix epoch in seconds.",
                   "gauge", pc->start_time))
        return -1;
    long fds = count_open_fds();
    if (fds >= 0 &&
        put_single(b, proc_names[4], "Number of open file descriptors.", "gauge", (double)fds))
        return -1;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        put_single(b, proc_names[5], "Maximum number of open file descriptors.", "gauge",
                   (double)rl.rlim_cur))
        return -1;
    return 0;
}

int si_metrics_render(si_metrics_t *r, si_metrics_buf_t *buf, si_err_t *err) {
    if (!r || !buf) return si_err_set(err, "metrics: NULL registry or buffer");
    int rc = 0;
    pthread_mutex_lock(&r->mu);
    for (si_metric_t *m = r->first; m && rc == 0; m = m->next) {
        pthread_mutex_lock(&m->mu);
        rc = put_family(buf, m);
        pthread_mutex_unlock(&m->mu);
    }
    proc_static_t pc = r->proc;
    pthread_mutex_unlock(&r->mu);
    if (rc == 0 && pc.on) rc = put_process(buf, &pc);
    if (rc) return si_err_set(err, "metrics: out of memory rendering");
    return 0;
}
