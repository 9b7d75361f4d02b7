/* stats.c - see stats.h. */
#include "stats.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double si_stats_percentile(const double *sorted, int n, double p) {
    if (n == 1 || p <= 0) return sorted[0];
    if (p >= 100) return sorted[n - 1];
    double r = p / 100.0 * (n - 1);
    int i = (int)r;
    double f = r - i;
    return i + 1 < n ? sorted[i] + f * (sorted[i + 1] - sorted[i]) : sorted[i];
}

int si_stats_summarize(const double *x, int n, si_stats_t *o, si_err_t *err) {
    if (n < 1) return si_err_set(err, "stats: no samples");
    for (int i = 0; i < n; i++)
        if (!isfinite(x[i])) return si_err_set(err, "stats: sample %d is not finite", i);
    double *s = malloc((size_t)n * sizeof *s);
    if (!s) return si_err_set(err, "stats: out of memory");
    memcpy(s, x, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    memset(o, 0, sizeof *o);
    o->n = n;
    o->min = s[0], o->max = s[n - 1];
    double sum = 0;
    for (int i = 0; i < n; i++) sum += s[i];
    o->mean = sum / n;
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (s[i] - o->mean) * (s[i] - o->mean);
    o->sd = n > 1 ? sqrt(ss / (n - 1)) : 0;
    o->p50 = si_stats_percentile(s, n, 50);
    o->p95 = si_stats_percentile(s, n, 95);
    o->p99 = si_stats_percentile(s, n, 99);
    double q1 = si_stats_percentile(s, n, 25), q3 = si_stats_percentile(s, n, 75);
    double lo = q1 - 1.5 * (q3 - q1), hi = q3 + 1.5 * (q3 - q1), tsum = 0;
    int kept = 0;
    for (int i = 0; i < n; i++)
        if (s[i] >= lo && s[i] <= hi) tsum += s[i], kept++;
    o->n_outliers = n - kept;
    o->mean_trimmed = kept ? tsum / kept : o->mean; /* kept >= 1: the median lies inside */
    free(s);
    return 0;
}
