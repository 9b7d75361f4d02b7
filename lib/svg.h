/*
 * svg.h - charts as SVG text, written by hand (no plotting library): a
 * document builder with a few primitives, and two charts that draw into a box
 * of a document, so one file can hold several panels (small multiples).
 *
 *   si_svg_t *s = si_svg_new(800, 400, "Inference time");
 *   si_svg_bar_chart(s, (si_svg_box_t){0, 0, 400, 400}, &bars);
 *   si_svg_line_chart(s, (si_svg_box_t){400, 0, 400, 400}, &lines);
 *   char *text = si_svg_finish(s, &len);   (consumes s; caller frees text)
 *
 * Coordinates are pixels, y pointing down. Text is XML-escaped; numbers are
 * written with a fixed precision, so equal inputs give byte-equal files. A
 * failed allocation is remembered and reported by si_svg_finish (NULL): the
 * drawing calls themselves never fail for memory, only for bad arguments.
 */
#ifndef SI_SVG_H
#define SI_SVG_H

#include <stddef.h>

typedef struct si_svg si_svg_t;

/* A rectangle of the document a chart draws into (title, axes, legend included). */
typedef struct si_svg_box {
    double x, y, w, h; /* px */
} si_svg_box_t;

/* A new document width x height px with a white background; title (may be
 * NULL) becomes its <title>. NULL when out of memory. */
si_svg_t *si_svg_new(double width, double height, const char *title);

/* Closes the document and frees s. Returns the text (malloc'd, NUL-terminated,
 * caller frees) and its length in *len (when not NULL); NULL if any allocation
 * failed along the way. */
char *si_svg_finish(si_svg_t *s, size_t *len);

/* Frees s without producing text; s may be NULL. */
void si_svg_free(si_svg_t *s);

/* ---- primitives ---- */

/* A filled rectangle; tooltip (may be NULL) becomes a <title> child. */
void si_svg_rect(si_svg_t *s, double x, double y, double w, double h, const char *fill,
                 const char *tooltip);
void si_svg_line(si_svg_t *s, double x1, double y1, double x2, double y2, const char *stroke,
                 double width, int dashed);
/* Text at (x, y) (the baseline); anchor "start", "middle" or "end"; size px. */
void si_svg_text(si_svg_t *s, double x, double y, const char *anchor, double size, const char *fmt,
                 ...) __attribute__((format(printf, 6, 7)));
/* Text rotated -90 degrees about (x, y), for a vertical axis label. */
void si_svg_vtext(si_svg_t *s, double x, double y, double size, const char *text);
void si_svg_polyline(si_svg_t *s, int n, const double *xs, const double *ys, const char *stroke,
                     double width);
void si_svg_circle(si_svg_t *s, double x, double y, double r, const char *fill);

/* The i-th colour of the palette (cycles; colour-blind safe, Okabe-Ito). */
const char *si_svg_color(int i);

/* Axis ticks: step is 1, 2 or 5 x 10^k, so that about max_ticks steps cover
 * [lo, hi]; *first = lo rounded down to a step (a multiple of it), and the
 * return value is the number of ticks from *first up to the first tick >= hi.
 * lo == hi is widened to a unit range; max_ticks < 1 counts as 1. */
int si_svg_ticks(double lo, double hi, int max_ticks, double *first, double *step);

/* ---- charts ---- */

/* Grouped bars: one group per category (e.g. a plan), one bar per series in
 * each (e.g. "ours", "paper"). The y axis starts at 0. */
typedef struct si_svg_bars {
    const char *title;         /* above the plot, may be NULL */
    const char *unit;          /* y axis label, may be NULL */
    int n_groups;              /* >= 1 */
    const char *const *groups; /* n_groups labels under the axis */
    int n_series;              /* >= 1 */
    const char *const *series; /* n_series names for the legend (no legend when 1) */
    const double *values;      /* values[series * n_groups + group]; NaN = no bar */
    const char *const *colors; /* n_series fills; NULL = the palette */
    int value_labels;          /* print each value above its bar */
} si_svg_bars_t;

/* Draws c into box. -1 on bad arguments (nothing drawn), else 0. */
int si_svg_bar_chart(si_svg_t *s, si_svg_box_t box, const si_svg_bars_t *c);

/* Lines through points: one polyline per series. */
typedef struct si_svg_lines {
    const char *title, *x_label, *y_label; /* may be NULL */
    int log2_x;                /* x axis in log2 (concurrency 1, 4, 16); x must be > 0 */
    int steps;                 /* draw each series as a step function (an empirical CDF) */
    int markers;               /* a dot at each point */
    double y_min, y_max;       /* y range; both 0 = from the data (starting at 0) */
    int n_series;              /* >= 1 */
    const char *const *series; /* names for the legend */
    const int *n_points;       /* points of each series (>= 1; 0 skips the series) */
    const double *const *xs;   /* xs[series][point], increasing within a series */
    const double *const *ys;
} si_svg_lines_t;

/* Draws c into box. -1 on bad arguments (nothing drawn), else 0. */
int si_svg_line_chart(si_svg_t *s, si_svg_box_t box, const si_svg_lines_t *c);

#endif
