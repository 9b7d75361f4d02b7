/* test_svg.c - the SVG builder and charts: documents are checked with a small
 * XML well-formedness checker written here (balanced tags, quoted attributes,
 * only the five predefined entities), element counts are exact, hostile text
 * is escaped, bars land where their values say, and bad arguments draw
 * nothing. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "svg.h"

/* ---- a strict little XML checker ---- */

static int is_name(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == ':';
}

/* 0 when text is one well-formed element (after an optional <?xml ...?>). */
static int xml_check(const char *t) {
    char stack[64][32];
    int depth = 0, roots = 0;
    const char *p = t;
    if (!strncmp(p, "<?xml", 5)) {
        p = strstr(p, "?>");
        if (!p) return -1;
        p += 2;
    }
    while (*p) {
        if (*p == '&') {
            static const char *ents[] = {"&amp;", "&lt;", "&gt;", "&quot;", "&apos;"};
            int ok = 0;
            for (int i = 0; i < 5; i++) ok |= !strncmp(p, ents[i], strlen(ents[i]));
            if (!ok) return -2;
            p++;
            continue;
        }
        if (*p == '>') return -3; /* a stray '>' in text is legal XML but we never write one */
        if (*p != '<') {
            if (depth == 0 && *p != '\n' && *p != ' ') return -4; /* text outside the root */
            p++;
            continue;
        }
        p++;
        int closing = *p == '/';
        if (closing) p++;
        char name[32];
        size_t n = 0;
        while (is_name(*p) && n < sizeof name - 1) name[n++] = *p++;
        name[n] = 0;
        if (!n) return -5;
        if (closing) {
            if (*p != '>' || depth == 0 || strcmp(stack[depth - 1], name)) return -6;
            depth--, p++;
            continue;
        }
        /* attributes: name="value" with no '<' inside a value */
        for (;;) {
            while (*p == ' ' || *p == '\n') p++;
            if (*p == '/' && p[1] == '>') {
                p += 2;
                if (depth == 0) roots++;
                break;
            }
            if (*p == '>') {
                p++;
                if (depth == 0) roots++;
                if (depth == 64) return -7;
                snprintf(stack[depth++], sizeof stack[0], "%s", name);
                break;
            }
            if (!is_name(*p)) return -8;
            while (is_name(*p)) p++;
            if (*p++ != '=' || *p++ != '"') return -9;
            while (*p && *p != '"') {
                if (*p == '<') return -10;
                if (*p == '&') {
                    if (strncmp(p, "&amp;", 5) && strncmp(p, "&lt;", 4) && strncmp(p, "&gt;", 4) &&
                        strncmp(p, "&quot;", 6) && strncmp(p, "&apos;", 6))
                        return -11;
                }
                p++;
            }
            if (*p++ != '"') return -12;
        }
    }
    return depth == 0 && roots == 1 ? 0 : -13;
}

static int count(const char *t, const char *needle) {
    int n = 0;
    for (const char *p = t; (p = strstr(p, needle)); p++) n++;
    return n;
}

static void test_checker_itself(void **state) {
    (void)state;
    assert_int_equal(xml_check("<a x=\"1\"><b/>t &amp; u</a>\n"), 0);
    assert_true(xml_check("<a><b></a>") < 0);
    assert_true(xml_check("<a>&nbsp;</a>") < 0);
    assert_true(xml_check("<a x=\"<\"/>") < 0);
    assert_true(xml_check("<a/><b/>") < 0);
    assert_true(xml_check("<a>") < 0);
}

static void test_empty_document(void **state) {
    (void)state;
    si_svg_t *s = si_svg_new(320, 200, "t <&> \"q\"");
    assert_non_null(s);
    size_t len = 0;
    char *t = si_svg_finish(s, &len);
    assert_non_null(t);
    assert_int_equal(len, strlen(t));
    assert_int_equal(xml_check(t), 0);
    assert_non_null(strstr(t, "<title>t &lt;&amp;&gt; &quot;q&quot;</title>"));
    assert_non_null(strstr(t, "width=\"320\" height=\"200\""));
    assert_int_equal(count(t, "<rect"), 1); /* the background */
    assert_true(len > 7 && !strcmp(t + len - 7, "</svg>\n"));
    free(t);
    si_svg_free(NULL);
    si_svg_free(si_svg_new(1, 1, NULL));
}

static void test_primitives_escape(void **state) {
    (void)state;
    si_svg_t *s = si_svg_new(100, 100, NULL);
    si_svg_text(s, 1, 2, "middle", 10, "a<b & %s", "c>\"d'\x01");
    si_svg_vtext(s, 5, 50, 11, "ms </text>");
    si_svg_rect(s, 0, 0, 10, -3, "#fff", "tip & <b>");
    si_svg_line(s, 0, 0, 1, 1, "red", 1, 1);
    double xs[] = {0, 1, 2}, ys[] = {3, 4, 5};
    si_svg_polyline(s, 3, xs, ys, "blue", 2);
    si_svg_polyline(s, 0, xs, ys, "blue", 2); /* nothing */
    si_svg_circle(s, 1, 1, 2, "green");
    char *t = si_svg_finish(s, NULL);
    assert_int_equal(xml_check(t), 0);
    assert_non_null(strstr(t, ">a&lt;b &amp; c&gt;&quot;d&apos; </text>"));
    assert_non_null(strstr(t, "ms &lt;/text&gt;</text>"));
    assert_non_null(strstr(t, "height=\"0.00\"")); /* negative sizes are clamped */
    assert_non_null(strstr(t, "<title>tip &amp; &lt;b&gt;</title></rect>"));
    assert_non_null(strstr(t, "stroke-dasharray"));
    assert_non_null(strstr(t, "points=\"0.00,3.00 1.00,4.00 2.00,5.00\""));
    assert_int_equal(count(t, "<polyline"), 1);
    free(t);
}

static void test_ticks(void **state) {
    (void)state;
    double first, step;
    int n = si_svg_ticks(0, 379, 5, &first, &step);
    assert_float_equal(step, 100, 1e-9);
    assert_float_equal(first, 0, 0);
    assert_int_equal(n, 5); /* 0 100 200 300 400 */
    n = si_svg_ticks(0, 1, 5, &first, &step);
    assert_float_equal(step, 0.2, 1e-12);
    assert_int_equal(n, 6);
    n = si_svg_ticks(12, 47, 5, &first, &step);
    assert_float_equal(step, 10, 1e-9);
    assert_float_equal(first, 10, 1e-9);
    assert_int_equal(n, 5);                   /* 10 .. 50 */
    n = si_svg_ticks(3, 3, 5, &first, &step); /* empty range: widened */
    assert_true(n >= 2 && step > 0);
    n = si_svg_ticks(0, 1481.2, 0, &first, &step);
    assert_float_equal(step, 2000, 1e-9);
    assert_int_equal(n, 2);
}

static void test_bar_chart(void **state) {
    (void)state;
    const char *groups[] = {"baseline", "pipeline", "blocks"};
    const char *series[] = {"ours", "paper <2025>"};
    const double values[] = {95, 130, NAN, 379, 482, 313};
    si_svg_bars_t c = {.title = "Average inference time",
                       .unit = "ms",
                       .n_groups = 3,
                       .groups = groups,
                       .n_series = 2,
                       .series = series,
                       .values = values,
                       .value_labels = 1};
    si_svg_t *s = si_svg_new(400, 300, NULL);
    assert_int_equal(si_svg_bar_chart(s, (si_svg_box_t){0, 0, 400, 300}, &c), 0);
    char *t = si_svg_finish(s, NULL);
    assert_int_equal(xml_check(t), 0);
    /* background + 5 bars (the NaN is skipped) + 2 legend swatches */
    assert_int_equal(count(t, "<rect"), 8);
    assert_int_equal(count(t, "<title>"), 5);
    assert_non_null(strstr(t, "<title>pipeline, paper &lt;2025&gt;: 482</title>"));
    assert_non_null(strstr(t, ">482</text>"));
    assert_non_null(strstr(t, ">blocks</text>"));
    assert_non_null(strstr(t, ">Average inference time</text>"));
    /* The tallest bar (482) reaches higher (smaller y) than the 379 one. */
    const char *a = strstr(t, "baseline, paper"), *b = strstr(t, "pipeline, paper");
    assert_non_null(a);
    assert_non_null(b);
    const char *ra = a, *rb = b;
    while (ra > t && strncmp(ra, "<rect", 5)) ra--;
    while (rb > t && strncmp(rb, "<rect", 5)) rb--;
    double ya, yb, ha, hb;
    assert_int_equal(sscanf(ra, "<rect x=\"%*f\" y=\"%lf\" width=\"%*f\" height=\"%lf\"", &ya, &ha),
                     2);
    assert_int_equal(sscanf(rb, "<rect x=\"%*f\" y=\"%lf\" width=\"%*f\" height=\"%lf\"", &yb, &hb),
                     2);
    assert_true(yb < ya);
    assert_float_equal(ha / hb, 379.0 / 482.0, 0.01);
    assert_float_equal(ya + ha, yb + hb, 0.01); /* a common base line */
    free(t);
}

static void test_line_chart(void **state) {
    (void)state;
    const double x0[] = {1, 4, 16}, y0[] = {9.5, 10.2, 10.1};
    const double x1[] = {1, 4, 16}, y1[] = {6, 14, 15};
    const double *xs[] = {x0, x1}, *ys[] = {y0, y1};
    const int np[] = {3, 3};
    const char *series[] = {"baseline", "pipeline"};
    si_svg_lines_t c = {.title = "Throughput",
                        .x_label = "concurrency",
                        .y_label = "requests/s",
                        .log2_x = 1,
                        .markers = 1,
                        .n_series = 2,
                        .series = series,
                        .n_points = np,
                        .xs = xs,
                        .ys = ys};
    si_svg_t *s = si_svg_new(500, 300, NULL);
    assert_int_equal(si_svg_line_chart(s, (si_svg_box_t){0, 0, 500, 300}, &c), 0);
    char *t = si_svg_finish(s, NULL);
    assert_int_equal(xml_check(t), 0);
    assert_int_equal(count(t, "<polyline"), 2);
    assert_int_equal(count(t, "<circle"), 6);
    /* log2 ticks 1, 2, 4, 8, 16 */
    assert_non_null(strstr(t, ">1</text>"));
    assert_non_null(strstr(t, ">8</text>"));
    assert_non_null(strstr(t, ">16</text>"));
    assert_non_null(strstr(t, ">concurrency</text>"));
    free(t);
}

static void test_cdf_steps(void **state) {
    (void)state;
    const double x[] = {10, 20, 30}, y[] = {1.0 / 3, 2.0 / 3, 1};
    const double *xs[] = {x}, *ys[] = {y};
    const int np[] = {3};
    si_svg_lines_t c = {
        .steps = 1, .y_min = 0, .y_max = 1, .n_series = 1, .n_points = np, .xs = xs, .ys = ys};
    si_svg_t *s = si_svg_new(300, 200, NULL);
    assert_int_equal(si_svg_line_chart(s, (si_svg_box_t){0, 0, 300, 200}, &c), 0);
    char *t = si_svg_finish(s, NULL);
    assert_int_equal(xml_check(t), 0);
    const char *pts = strstr(t, "points=\"");
    assert_non_null(pts);
    int n = 1;
    for (const char *q = pts + 8; *q != '"'; q++) n += *q == ' ';
    assert_int_equal(n, 6); /* 3 points + 3 risers (the first from 0) */
    free(t);
}

static void test_bad_arguments(void **state) {
    (void)state;
    si_svg_t *s = si_svg_new(100, 100, NULL);
    si_svg_bars_t b = {.n_groups = 0};
    assert_int_equal(si_svg_bar_chart(s, (si_svg_box_t){0, 0, 100, 100}, &b), -1);
    assert_int_equal(si_svg_bar_chart(s, (si_svg_box_t){0, 0, 100, 100}, NULL), -1);
    const double x[] = {0, 1}, y[] = {1, 2};
    const double *xs[] = {x}, *ys[] = {y};
    const int np[] = {2}, none[] = {0};
    si_svg_lines_t l = {.log2_x = 1, .n_series = 1, .n_points = np, .xs = xs, .ys = ys};
    assert_int_equal(si_svg_line_chart(s, (si_svg_box_t){0, 0, 100, 100}, &l), -1); /* log2(0) */
    l.log2_x = 0, l.n_points = none;
    assert_int_equal(si_svg_line_chart(s, (si_svg_box_t){0, 0, 100, 100}, &l), -1); /* no points */
    const double yn[] = {1, NAN};
    const double *ysn[] = {yn};
    l.n_points = np, l.ys = ysn;
    assert_int_equal(si_svg_line_chart(s, (si_svg_box_t){0, 0, 100, 100}, &l), -1);
    char *t = si_svg_finish(s, NULL);
    assert_int_equal(count(t, "<rect"), 1); /* nothing was drawn */
    assert_int_equal(count(t, "<text"), 0);
    free(t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checker_itself),    cmocka_unit_test(test_empty_document),
        cmocka_unit_test(test_primitives_escape), cmocka_unit_test(test_ticks),
        cmocka_unit_test(test_bar_chart),         cmocka_unit_test(test_line_chart),
        cmocka_unit_test(test_cdf_steps),         cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
