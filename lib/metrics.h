/*
 * metrics.h - Prometheus metrics: counters, gauges and histograms with labels,
 * rendered in the text exposition format 0.0.4 for GET /metrics, plus the
 * process_* metrics the standard clients export (read from /proc at render
 * time), so a dashboard works with or without cAdvisor.
 *
 * Model. A registry holds metric families in registration order. A family has
 * a name, a help text, a type and a fixed list of label names; each distinct
 * tuple of label values is one series, created on first use and kept until the
 * registry is freed. A family without labels has its one series from the start,
 * so it renders 0 before anything happens (as the Go client does).
 *
 * Names follow Prometheus conventions: the application's start with
 * "splitinfer_", units in the name (_seconds, _bytes), counters end in "_total"
 * (enforced). Label names are fixed per family, e.g. {"function","step","code"}.
 *
 * Threads. Registering, updating and rendering may run on any threads at once:
 * each family has a mutex held for a lookup plus an update (a few hundred ns;
 * a stage does a handful per request), and rendering holds it while it prints
 * that family, so a histogram's buckets, sum and count are always consistent.
 * Only si_metrics_free must not race with anything.
 *
 * Memory is bounded: a family refuses more than SI_METRICS_MAX_SERIES series, so
 * a label fed from untrusted input cannot grow the process without limit.
 */
#ifndef SI_METRICS_H
#define SI_METRICS_H

#include <stddef.h>

#include "err.h"

#define SI_METRICS_MAX_LABELS 8     /* label names per family */
#define SI_METRICS_MAX_BUCKETS 64   /* explicit histogram bounds per family */
#define SI_METRICS_MAX_SERIES 10000 /* label-value tuples per family */

/* Default histogram bounds (seconds): 1 ms .. 10 s in 1-2.5-5 steps, the Go
 * client's DefBuckets shifted one decade down, since a stage answers in ms. */
#define SI_METRICS_LATENCY_BUCKETS_N 13
extern const double si_metrics_latency_buckets[SI_METRICS_LATENCY_BUCKETS_N];

typedef struct si_metrics si_metrics_t; /* a registry */
typedef struct si_metric si_metric_t;   /* one family, owned by its registry */

/* A growable text buffer: base[0..len) is the text, NUL-terminated when len > 0.
 * Start from all zero; release base with free() or si_metrics_buf_free. */
typedef struct si_metrics_buf {
    char *base; /* malloc'd */
    size_t len; /* bytes of text, without the NUL */
    size_t cap; /* bytes allocated */
} si_metrics_buf_t;

/* An empty registry; NULL on OOM. */
si_metrics_t *si_metrics_new(void);

/* Frees the registry and all its families. Nothing may use it concurrently. */
void si_metrics_free(si_metrics_t *r);

/* Registers a counter (name must end in "_total"). label_names: n_labels
 * strings (copied), none "le" or starting "__". NULL on a bad or duplicate name. */
si_metric_t *si_metrics_counter(si_metrics_t *r, const char *name, const char *help, int n_labels,
                                const char *const *label_names, si_err_t *err);

/* Registers a gauge; as si_metrics_counter. */
si_metric_t *si_metrics_gauge(si_metrics_t *r, const char *name, const char *help, int n_labels,
                              const char *const *label_names, si_err_t *err);

/* Registers a histogram with n_bounds finite, strictly increasing upper bounds
 * (+Inf is implicit); bounds NULL means si_metrics_latency_buckets. */
si_metric_t *si_metrics_histogram(si_metrics_t *r, const char *name, const char *help, int n_labels,
                                  const char *const *label_names, const double *bounds,
                                  int n_bounds, si_err_t *err);

/* Registers the process collector: process_cpu_seconds_total,
 * process_resident_memory_bytes, process_virtual_memory_bytes,
 * process_start_time_seconds, process_open_fds, process_max_fds, read from
 * /proc/self at each render (a value that cannot be read is left out). */
int si_metrics_add_process(si_metrics_t *r, si_err_t *err);

/* Updates the series of m with the given label values (as many as the family has
 * label names; NULL when it has none). The values are copied on first use.
 * Fails on a NULL value, a type the update does not apply to, or a full family. */

/* Counter: adds v >= 0. Gauge: adds any finite v. */
int si_metrics_add(si_metric_t *m, const char *const *label_values, double v, si_err_t *err);

/* si_metrics_add(m, label_values, 1, err). */
int si_metrics_inc(si_metric_t *m, const char *const *label_values, si_err_t *err);

/* Gauge: sets the value (any double, NaN and inf included). */
int si_metrics_set(si_metric_t *m, const char *const *label_values, double v, si_err_t *err);

/* Histogram: counts v (not NaN) in the first bucket whose bound is >= v and adds it
 * to the sum. Seconds for latencies. */
int si_metrics_observe(si_metric_t *m, const char *const *label_values, double v, si_err_t *err);

/* Appends the exposition text of every family (# HELP, # TYPE, one line per
 * series; histograms as cumulative _bucket{le=...}, _sum, _count) and of the
 * process collector to buf. Fails only on OOM; buf then holds what fit. */
int si_metrics_render(si_metrics_t *r, si_metrics_buf_t *buf, si_err_t *err);

/* The Content-Type to serve the text with. */
#define SI_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Appends printf-style text to buf; -1 on OOM. */
int si_metrics_buf_printf(si_metrics_buf_t *buf, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Frees buf->base and zeroes buf. */
void si_metrics_buf_free(si_metrics_buf_t *buf);

#endif
