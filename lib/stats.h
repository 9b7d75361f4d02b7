/*
 * stats.h - summaries of measured samples: mean, spread, percentiles, and the
 * mean without outliers that the paper reports ("the average of multiple
 * experimental results, excluding all outliers", section 3.2.2).
 *
 * Percentiles interpolate linearly between order statistics (numpy's default,
 * "type 7"): p50 of {1, 2, 3, 4} is 2.5. Outliers are Tukey's: outside
 * [Q1 - 1.5 IQR, Q3 + 1.5 IQR].
 */
#ifndef SI_STATS_H
#define SI_STATS_H

#include "err.h"

typedef struct si_stats {
    int n;           /* samples */
    double mean, sd; /* sd: sample standard deviation (n - 1); 0 for one sample */
    double min, max;
    double p50, p95, p99;
    double mean_trimmed; /* mean of the samples inside Tukey's fences */
    int n_outliers;      /* samples outside them */
} si_stats_t;

/* Summarizes x[0..n). x is not modified (a sorted copy is made). -1 when
 * n < 1, a sample is not finite, or out of memory. */
int si_stats_summarize(const double *x, int n, si_stats_t *out, si_err_t *err);

/* The p-th percentile (0..100) of sorted[0..n), n >= 1, interpolated. */
double si_stats_percentile(const double *sorted, int n, double p);

#endif
