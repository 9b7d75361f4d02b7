/* test_stats.c - sample summaries against values worked out by hand (and
 * numpy's percentile, linear interpolation), outliers by Tukey's fences. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "stats.h"

static void test_small(void **state) {
    (void)state;
    const double x[] = {4, 1, 3, 2}; /* unsorted on purpose, and left so */
    si_stats_t s;
    si_err_t err = {{0}};
    assert_int_equal(si_stats_summarize(x, 4, &s, &err), 0);
    assert_int_equal(s.n, 4);
    assert_float_equal(s.mean, 2.5, 1e-12);
    assert_float_equal(s.sd, sqrt(5.0 / 3.0), 1e-12);
    assert_float_equal(s.min, 1, 0);
    assert_float_equal(s.max, 4, 0);
    assert_float_equal(s.p50, 2.5, 1e-12);  /* numpy.percentile([1,2,3,4], 50) */
    assert_float_equal(s.p95, 3.85, 1e-12); /* 1 + 0.95 * 3 = 3.85 -> 3 + 0.85 */
    assert_float_equal(s.p99, 3.97, 1e-12);
    assert_int_equal(s.n_outliers, 0);
    assert_float_equal(s.mean_trimmed, 2.5, 1e-12);
    assert_float_equal(x[0], 4, 0);
}

static void test_one(void **state) {
    (void)state;
    const double x[] = {7.5};
    si_stats_t s;
    assert_int_equal(si_stats_summarize(x, 1, &s, NULL), 0);
    assert_float_equal(s.p50, 7.5, 0);
    assert_float_equal(s.p99, 7.5, 0);
    assert_float_equal(s.sd, 0, 0);
    assert_float_equal(s.mean_trimmed, 7.5, 0);
}

static void test_outlier(void **state) {
    (void)state;
    /* 1..10 and one 1000: Q1 = 3.5, Q3 = 8.5, fences -4 and 16. */
    double x[11];
    for (int i = 0; i < 10; i++) x[i] = i + 1;
    x[10] = 1000;
    si_stats_t s;
    assert_int_equal(si_stats_summarize(x, 11, &s, NULL), 0);
    assert_int_equal(s.n_outliers, 1);
    assert_float_equal(s.mean_trimmed, 5.5, 1e-12);
    assert_float_equal(s.mean, 1055.0 / 11, 1e-12);
    assert_float_equal(s.p50, 6, 1e-12);
    assert_float_equal(s.p99, 10 + 0.9 * 990, 1e-9); /* r = 9.9: between 10 and 1000 */
}

static void test_percentile_edges(void **state) {
    (void)state;
    const double s[] = {10, 20, 30};
    assert_float_equal(si_stats_percentile(s, 3, 0), 10, 0);
    assert_float_equal(si_stats_percentile(s, 3, 100), 30, 0);
    assert_float_equal(si_stats_percentile(s, 3, 25), 15, 1e-12);
    assert_float_equal(si_stats_percentile(s, 3, -5), 10, 0);
    assert_float_equal(si_stats_percentile(s, 3, 250), 30, 0);
}

static void test_bad(void **state) {
    (void)state;
    si_stats_t s;
    si_err_t err = {{0}};
    assert_int_equal(si_stats_summarize(NULL, 0, &s, &err), -1);
    assert_non_null(strstr(err.msg, "no samples"));
    const double x[] = {1, NAN, 3};
    assert_int_equal(si_stats_summarize(x, 3, &s, &err), -1);
    assert_non_null(strstr(err.msg, "sample 1"));
    const double y[] = {1, INFINITY};
    assert_int_equal(si_stats_summarize(y, 2, &s, &err), -1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small),   cmocka_unit_test(test_one),
        cmocka_unit_test(test_outlier), cmocka_unit_test(test_percentile_edges),
        cmocka_unit_test(test_bad),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
