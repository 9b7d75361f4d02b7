/* svg.c - see svg.h. The document is one growable buffer; every element is
 * appended as it is drawn (painter's order: later elements lie on top). */
#include "svg.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct si_svg {
    char *buf;
    size_t len, cap;
    int oom; /* an append failed: finish returns NULL */
};

static void append_v(si_svg_t *s, const char *fmt, va_list ap) {
    if (s->oom) return;
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(s->buf + s->len, s->cap - s->len, fmt, ap2);
    va_end(ap2);
    if (n < 0) {
        s->oom = 1;
        return;
    }
    if ((size_t)n >= s->cap - s->len) {
        size_t cap = s->cap;
        while (cap - s->len <= (size_t)n) cap *= 2;
        char *b = realloc(s->buf, cap);
        if (!b) {
            s->oom = 1;
            return;
        }
        s->buf = b, s->cap = cap;
        vsnprintf(s->buf + s->len, s->cap - s->len, fmt, ap);
    }
    s->len += (size_t)n;
}

static void append(si_svg_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void append(si_svg_t *s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    append_v(s, fmt, ap);
    va_end(ap);
}

/* Text content or an attribute value, escaped. */
static void append_escaped(si_svg_t *s, const char *t) {
    for (; t && *t; t++) {
        switch (*t) {
        case '&': append(s, "&amp;"); break;
        case '<': append(s, "&lt;"); break;
        case '>': append(s, "&gt;"); break;
        case '"': append(s, "&quot;"); break;
        case '\'': append(s, "&apos;"); break;
        default:
            /* Control characters are not allowed in XML 1.0 (except tab, newline). */
            if ((unsigned char)*t < 0x20 && *t != '\t' && *t != '\n')
                append(s, " ");
            else
                append(s, "%c", *t);
        }
    }
}

si_svg_t *si_svg_new(double width, double height, const char *title) {
    si_svg_t *s = calloc(1, sizeof *s);
    if (!s || !(s->buf = malloc(s->cap = 8192))) {
        free(s);
        return NULL;
    }
    s->buf[0] = 0;
    append(s,
           "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
           "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
           "viewBox=\"0 0 %.0f %.0f\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n",
           width, height, width, height);
    if (title) {
        append(s, "<title>");
        append_escaped(s, title);
        append(s, "</title>\n");
    }
    append(s, "<rect x=\"0\" y=\"0\" width=\"%.0f\" height=\"%.0f\" fill=\"#ffffff\"/>\n", width,
           height);
    return s;
}

char *si_svg_finish(si_svg_t *s, size_t *len) {
    if (!s) return NULL;
    append(s, "</svg>\n");
    char *text = s->oom ? NULL : s->buf;
    if (!text) free(s->buf);
    if (len) *len = text ? s->len : 0;
    free(s);
    return text;
}

void si_svg_free(si_svg_t *s) {
    if (!s) return;
    free(s->buf);
    free(s);
}

void si_svg_rect(si_svg_t *s, double x, double y, double w, double h, const char *fill,
                 const char *tooltip) {
    append(s, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"", x, y,
           w < 0 ? 0 : w, h < 0 ? 0 : h);
    append_escaped(s, fill);
    if (!tooltip) {
        append(s, "\"/>\n");
        return;
    }
    append(s, "\"><title>");
    append_escaped(s, tooltip);
    append(s, "</title></rect>\n");
}

void si_svg_line(si_svg_t *s, double x1, double y1, double x2, double y2, const char *stroke,
                 double width, int dashed) {
    append(s, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"", x1, y1, x2, y2);
    append_escaped(s, stroke);
    append(s, "\" stroke-width=\"%.2f\"%s/>\n", width, dashed ? " stroke-dasharray=\"3 3\"" : "");
}

void si_svg_text(si_svg_t *s, double x, double y, const char *anchor, double size, const char *fmt,
                 ...) {
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    append(s, "<text x=\"%.2f\" y=\"%.2f\" font-size=\"%.1f\" text-anchor=\"", x, y, size);
    append_escaped(s, anchor ? anchor : "start");
    append(s, "\">");
    append_escaped(s, text);
    append(s, "</text>\n");
}

void si_svg_vtext(si_svg_t *s, double x, double y, double size, const char *text) {
    append(s,
           "<text x=\"%.2f\" y=\"%.2f\" font-size=\"%.1f\" text-anchor=\"middle\" "
           "transform=\"rotate(-90 %.2f %.2f)\">",
           x, y, size, x, y);
    append_escaped(s, text);
    append(s, "</text>\n");
}

void si_svg_polyline(si_svg_t *s, int n, const double *xs, const double *ys, const char *stroke,
                     double width) {
    if (n < 1) return;
    append(s, "<polyline fill=\"none\" stroke=\"");
    append_escaped(s, stroke);
    append(s, "\" stroke-width=\"%.2f\" stroke-linejoin=\"round\" points=\"", width);
    for (int i = 0; i < n; i++) append(s, "%s%.2f,%.2f", i ? " " : "", xs[i], ys[i]);
    append(s, "\"/>\n");
}

void si_svg_circle(si_svg_t *s, double x, double y, double r, const char *fill) {
    append(s, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"%.2f\" fill=\"", x, y, r);
    append_escaped(s, fill);
    append(s, "\"/>\n");
}

const char *si_svg_color(int i) {
    /* Okabe & Ito (2008), without yellow, which is unreadable on white. */
    static const char *const pal[] = {"#0072B2", "#E69F00", "#009E73", "#CC79A7",
                                      "#56B4E9", "#D55E00", "#000000"};
    int n = (int)(sizeof pal / sizeof *pal);
    return pal[((i % n) + n) % n];
}

int si_svg_ticks(double lo, double hi, int max_ticks, double *first, double *step) {
    if (max_ticks < 1) max_ticks = 1;
    if (!(hi > lo)) hi = lo + 1;
    double raw = (hi - lo) / max_ticks, mag = pow(10, floor(log10(raw))), f = raw / mag;
    double st = (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
    double a = floor(lo / st + 1e-9) * st;
    int n = 1;
    while (a + (n - 1) * st < hi - 1e-9 * st) n++;
    *first = a, *step = st;
    return n;
}

/* A value as a short label: 3 significant digits, no exponent for the usual range. */
static void fmt_value(char *buf, size_t len, double v) {
    double a = fabs(v);
    if (a >= 100 || a == 0)
        snprintf(buf, len, "%.0f", v);
    else if (a >= 10)
        snprintf(buf, len, "%.1f", v);
    else if (a >= 1)
        snprintf(buf, len, "%.2f", v);
    else
        snprintf(buf, len, "%.3g", v);
}

/* The plot area of a chart box: room for the title, the y labels, the x labels. */
typedef struct plot {
    double x0, y0, x1, y1; /* px: left, top, right, bottom */
} plot_t;

static plot_t plot_area(si_svg_box_t b, int has_x_label) {
    plot_t p = {b.x + 62, b.y + 34, b.x + b.w - 12, b.y + b.h - (has_x_label ? 48 : 34)};
    return p;
}

static void title_of(si_svg_t *s, si_svg_box_t b, const char *title) {
    if (title) si_svg_text(s, b.x + b.w / 2, b.y + 18, "middle", 13, "%s", title);
}

/* A legend in one row from (x, y) (bars: swatches), or in a column (lines). */
static void legend_row(si_svg_t *s, double x, double y, int n, const char *const *names,
                       const char *const *colors) {
    for (int i = 0; i < n; i++) {
        const char *name = names[i] ? names[i] : "";
        si_svg_rect(s, x, y, 10, 10, colors ? colors[i] : si_svg_color(i), NULL);
        si_svg_text(s, x + 14, y + 9, "start", 10, "%s", name);
        x += 14 + 6.2 * (double)strlen(name) + 14; /* ~6 px per character at 10 px */
    }
}

static void legend_column(si_svg_t *s, double x, double y, int n, const char *const *names) {
    for (int i = 0; i < n; i++, y += 15) {
        si_svg_line(s, x, y + 5, x + 14, y + 5, si_svg_color(i), 2.5, 0);
        si_svg_text(s, x + 18, y + 9, "start", 10, "%s", names[i] ? names[i] : "");
    }
}

/* Horizontal grid lines and labels of the y axis for [lo, hi]; returns the
 * range actually covered (rounded out to ticks) in *lo, *hi. */
static void y_axis(si_svg_t *s, const plot_t *p, double *lo, double *hi, const char *label) {
    double first, step;
    int n = si_svg_ticks(*lo, *hi, 5, &first, &step);
    double top = first + (n - 1) * step;
    if (top < *hi) top = *hi;
    *lo = first, *hi = top;
    for (int i = 0; i < n; i++) {
        double v = first + i * step, y = p->y1 - (v - first) / (top - first) * (p->y1 - p->y0);
        char t[32];
        snprintf(t, sizeof t, "%.6g",
                 fabs(v) < 1e-9 * step ? 0.0 : v); /* ticks: as short as can be */
        si_svg_line(s, p->x0, y, p->x1, y, i ? "#dddddd" : "#444444", 1, 0);
        si_svg_text(s, p->x0 - 5, y + 4, "end", 10, "%s", t);
    }
    if (label) si_svg_vtext(s, p->x0 - 46, (p->y0 + p->y1) / 2, 11, label);
}

int si_svg_bar_chart(si_svg_t *s, si_svg_box_t box, const si_svg_bars_t *c) {
    if (!s || !c || c->n_groups < 1 || c->n_series < 1 || !c->groups || !c->values) return -1;
    plot_t p = plot_area(box, 0);
    int has_legend = c->n_series > 1 && c->series;
    if (has_legend) p.y0 += 16; /* a row for the legend under the title */
    double hi = 0;
    for (int i = 0; i < c->n_groups * c->n_series; i++)
        if (isfinite(c->values[i]) && c->values[i] > hi) hi = c->values[i];
    if (hi <= 0) hi = 1;
    hi *= c->value_labels ? 1.12 : 1.0; /* room for the labels above the tallest bar */
    title_of(s, box, c->title);
    double lo = 0;
    y_axis(s, &p, &lo, &hi, c->unit);
    double gw = (p.x1 - p.x0) / c->n_groups, bw = gw * 0.8 / c->n_series;
    for (int g = 0; g < c->n_groups; g++) {
        double gx = p.x0 + g * gw + gw * 0.1;
        for (int k = 0; k < c->n_series; k++) {
            double v = c->values[k * c->n_groups + g];
            if (!isfinite(v)) continue;
            double h = (v - lo) / (hi - lo) * (p.y1 - p.y0), x = gx + k * bw;
            char t[32], tip[160];
            fmt_value(t, sizeof t, v);
            snprintf(tip, sizeof tip, "%s, %s: %s", c->groups[g] ? c->groups[g] : "",
                     c->series && c->series[k] ? c->series[k] : "", t);
            si_svg_rect(s, x + 1, p.y1 - h, bw - 2, h, c->colors ? c->colors[k] : si_svg_color(k),
                        tip);
            if (c->value_labels) si_svg_text(s, x + bw / 2, p.y1 - h - 3, "middle", 9, "%s", t);
        }
        si_svg_text(s, p.x0 + g * gw + gw / 2, p.y1 + 15, "middle", 10, "%s",
                    c->groups[g] ? c->groups[g] : "");
    }
    if (has_legend) legend_row(s, p.x0, box.y + 28, c->n_series, c->series, c->colors);
    return 0;
}

int si_svg_line_chart(si_svg_t *s, si_svg_box_t box, const si_svg_lines_t *c) {
    if (!s || !c || c->n_series < 1 || !c->n_points || !c->xs || !c->ys) return -1;
    double xlo = INFINITY, xhi = -INFINITY, ylo = 0, yhi = -INFINITY;
    for (int k = 0; k < c->n_series; k++)
        for (int i = 0; i < c->n_points[k]; i++) {
            double x = c->xs[k][i], y = c->ys[k][i];
            if (!isfinite(x) || !isfinite(y) || (c->log2_x && x <= 0)) return -1;
            if (c->log2_x) x = log2(x);
            xlo = x < xlo ? x : xlo, xhi = x > xhi ? x : xhi;
            yhi = y > yhi ? y : yhi, ylo = y < ylo ? y : ylo;
        }
    if (!isfinite(xlo)) return -1; /* no points at all */
    if (c->y_min != 0 || c->y_max != 0) ylo = c->y_min, yhi = c->y_max;
    if (!(yhi > ylo)) yhi = ylo + 1;
    plot_t p = plot_area(box, c->x_label != NULL);
    if (c->series) p.x1 -= 130; /* the legend's column, right of the plot */
    title_of(s, box, c->title);
    y_axis(s, &p, &ylo, &yhi, c->y_label);
    /* x axis: integer powers of 2 for log2, nice ticks otherwise. */
    double first, step;
    int n;
    if (c->log2_x) {
        first = floor(xlo), step = 1;
        n = (int)(ceil(xhi) - first) + 1;
        if (n < 2) n = 2;
    } else {
        n = si_svg_ticks(xlo, xhi, 6, &first, &step);
    }
    xlo = first;
    xhi = first + (n - 1) * step > xhi ? first + (n - 1) * step : xhi;
    if (!(xhi > xlo)) xhi = xlo + 1;
#define PX(x) (p.x0 + ((x)-xlo) / (xhi - xlo) * (p.x1 - p.x0))
#define PY(y) (p.y1 - ((y)-ylo) / (yhi - ylo) * (p.y1 - p.y0))
    for (int i = 0; i < n; i++) {
        double v = first + i * step, x = PX(v);
        char t[32];
        snprintf(t, sizeof t, "%.6g", c->log2_x ? exp2(v) : fabs(v) < 1e-9 * step ? 0.0 : v);
        si_svg_line(s, x, p.y0, x, p.y1, "#eeeeee", 1, 0);
        si_svg_text(s, x, p.y1 + 15, "middle", 10, "%s", t);
    }
    if (c->x_label) si_svg_text(s, (p.x0 + p.x1) / 2, p.y1 + 34, "middle", 11, "%s", c->x_label);
    for (int k = 0; k < c->n_series; k++) {
        int m = c->n_points[k], np = 0;
        if (m < 1) continue;
        double *px = malloc(sizeof *px * (size_t)(2 * m + 1));
        double *py = malloc(sizeof *py * (size_t)(2 * m + 1));
        if (!px || !py) {
            free(px), free(py);
            s->oom = 1;
            return 0;
        }
        for (int i = 0; i < m; i++) {
            double x = c->log2_x ? log2(c->xs[k][i]) : c->xs[k][i], y = c->ys[k][i];
            if (c->steps) /* a riser from the bottom, then a step at every point */
                px[np] = PX(x), py[np] = i ? py[np - 1] : PY(ylo), np++;
            px[np] = PX(x), py[np] = PY(y), np++;
        }
        si_svg_polyline(s, np, px, py, si_svg_color(k), 2);
        if (c->markers)
            for (int i = 0; i < m; i++) {
                double x = c->log2_x ? log2(c->xs[k][i]) : c->xs[k][i];
                si_svg_circle(s, PX(x), PY(c->ys[k][i]), 3, si_svg_color(k));
            }
        free(px), free(py);
    }
#undef PX
#undef PY
    if (c->series) legend_column(s, p.x1 + 12, p.y0, c->n_series, c->series);
    return 0;
}
