/* graph.c - graph IR, shape inference, cut points and ResNet names. See graph.h. */
#include "graph.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "hugemem.h"

si_graph_t *si_graph_new(void) {
    si_graph_t *g = calloc(1, sizeof *g);
    if (g) g->map_fd = -1;
    return g;
}

void si_graph_free(si_graph_t *g) {
    if (!g) return;
    free(g->nodes);
    free(g->values);
    free(g->cuts);
    free(g->block_cut);
    free(g->block_layer);
    free(g->block_index);
    free(g->arena);
    free(g->layouts);
    if (g->map) munmap(g->map, g->map_len);
    if (g->map_fd >= 0) close(g->map_fd);
    si_huge_free(g->hot, g->hot_len);
    free(g);
}

/* Growth by doubling: each array is rebuilt at most log2(n) times. */
static int reserve(void **p, int *cap, int n, size_t elem) {
    if (n < *cap) return 0;
    int ncap = *cap ? 2 * *cap : 64;
    void *q = realloc(*p, (size_t)ncap * elem);
    if (!q) return -1;
    *p = q, *cap = ncap;
    return 0;
}

int si_graph_add_value(si_graph_t *g, int ndim, const int *dims) {
    if (ndim != 2 && ndim != 4) return -1;
    if (reserve((void **)&g->values, &g->cap_values, g->n_values, sizeof *g->values) < 0)
        return -1;
    si_value_t *v = &g->values[g->n_values];
    memset(v, 0, sizeof *v);
    v->ndim = ndim;
    memcpy(v->dims, dims, (size_t)ndim * sizeof(int));
    return g->n_values++;
}

int si_graph_add_node(si_graph_t *g, const si_node_t *n) {
    if (reserve((void **)&g->nodes, &g->cap_nodes, g->n_nodes, sizeof *g->nodes) < 0) return -1;
    g->nodes[g->n_nodes] = *n;
    return g->n_nodes++;
}

size_t si_value_numel(const si_value_t *v) {
    size_t n = 1;
    for (int i = 0; i < v->ndim; i++) n *= (size_t)v->dims[i];
    return n;
}

const char *si_op_name(si_op_t op) {
    switch (op) {
    case SI_OP_CONV: return "Conv";
    case SI_OP_POOL_MAX: return "MaxPool";
    case SI_OP_POOL_AVG: return "AvgPool";
    case SI_OP_DENSE: return "Dense";
    case SI_OP_ADD: return "Add";
    case SI_OP_ACT: return "Act";
    case SI_OP_FLATTEN: return "Flatten";
    }
    return "?";
}

static int out_side(int in, int k, int s, int d, int p0, int p1) {
    int span = d * (k - 1) + 1;
    if (in + p0 + p1 < span || s < 1) return -1;
    return (in + p0 + p1 - span) / s + 1;
}

/* Infers node i's output shape from its input, or fails naming the node. */
static int infer_node(si_graph_t *g, int i, si_err_t *err) {
    si_node_t *n = &g->nodes[i];
    const si_value_t *x = &g->values[n->in];
    si_value_t *y = &g->values[n->out];
    switch (n->op) {
    case SI_OP_CONV:
    case SI_OP_POOL_MAX:
    case SI_OP_POOL_AVG: {
        if (x->ndim != 4) return si_err_set(err, "node %s: input is not 4-D", n->name);
        if (n->op == SI_OP_POOL_AVG && n->kh == 0) { /* GlobalAveragePool */
            n->kh = x->dims[2], n->kw = x->dims[3];
            n->sh = n->sw = n->dh = n->dw = 1;
            n->pad_t = n->pad_l = n->pad_b = n->pad_r = 0;
        }
        int c = x->dims[1];
        if (n->op == SI_OP_CONV) {
            if (n->group < 1 || c % n->group || n->cout % n->group || n->cin != c / n->group)
                return si_err_set(err, "node %s: weights [%d,%d,..] do not fit input channels %d "
                                  "(group %d)", n->name, n->cout, n->cin, c, n->group);
            c = n->cout;
        }
        int h = out_side(x->dims[2], n->kh, n->sh, n->dh, n->pad_t, n->pad_b);
        int w = out_side(x->dims[3], n->kw, n->sw, n->dw, n->pad_l, n->pad_r);
        if (h < 1 || w < 1)
            return si_err_set(err, "node %s: kernel %dx%d does not fit input %dx%d", n->name,
                              n->kh, n->kw, x->dims[2], x->dims[3]);
        y->ndim = 4;
        y->dims[0] = 1, y->dims[1] = c, y->dims[2] = h, y->dims[3] = w;
        break;
    }
    case SI_OP_DENSE:
        if (x->ndim != 2 || x->dims[1] != n->cin)
            return si_err_set(err, "node %s: input of %d features, weights expect %d", n->name,
                              x->ndim == 2 ? x->dims[1] : -1, n->cin);
        y->ndim = 2, y->dims[0] = 1, y->dims[1] = n->cout;
        break;
    case SI_OP_FLATTEN:
        y->ndim = 2, y->dims[0] = 1, y->dims[1] = (int)si_value_numel(x);
        break;
    case SI_OP_ADD:
        if (n->in2 < 0 || memcmp(x, &g->values[n->in2], sizeof *x))
            return si_err_set(err, "node %s: Add of tensors of different shapes", n->name);
        /* fallthrough */
    case SI_OP_ACT:
        *y = *x;
        break;
    default:
        return si_err_set(err, "node %s: unknown op %d", n->name, (int)n->op);
    }
    if (n->op == SI_OP_CONV && n->in2 >= 0 && memcmp(y, &g->values[n->in2], sizeof *y))
        return si_err_set(err, "node %s: residual input shape differs from the output", n->name);
    return 0;
}

/* Computes cut points: positions where exactly one value is live. */
static int find_cuts(si_graph_t *g, si_err_t *err) {
    int *last = malloc((size_t)g->n_values * sizeof *last);
    int *prod = malloc((size_t)g->n_values * sizeof *prod);
    g->cuts = malloc((size_t)(g->n_nodes + 1) * sizeof *g->cuts);
    if (!last || !prod || !g->cuts) {
        free(last), free(prod);
        return si_err_set(err, "out of memory");
    }
    for (int v = 0; v < g->n_values; v++) last[v] = -1, prod[v] = -1;
    for (int i = 0; i < g->n_nodes; i++) {
        const si_node_t *n = &g->nodes[i];
        last[n->in] = i;
        if (n->in2 >= 0) last[n->in2] = i;
        prod[n->out] = i;
    }
    last[g->output] = g->n_nodes;
    /* live(c) = #{v : prod[v] < c <= last[v]}; a difference array makes it
     * O(nodes + values) instead of O(nodes x values). */
    int *delta = calloc((size_t)g->n_nodes + 2, sizeof *delta);
    if (!delta) {
        free(last), free(prod);
        return si_err_set(err, "out of memory");
    }
    for (int v = 0; v < g->n_values; v++) {
        if (last[v] < 0) { /* a dead value would make "one live value" ambiguous */
            int p = prod[v];
            free(delta), free(last), free(prod);
            return si_err_set(err, "the output of node %s is never used",
                              p >= 0 ? g->nodes[p].name : "(input)");
        }
        delta[prod[v] + 1]++;
        delta[last[v] + 1]--;
    }
    int live = 0;
    g->n_cuts = 0;
    for (int c = 0; c <= g->n_nodes; c++) {
        live += delta[c];
        if (live == 1) g->cuts[g->n_cuts++] = c;
    }
    free(delta), free(last), free(prod);
    if (g->n_cuts < 2 || g->cuts[0] != 0 || g->cuts[g->n_cuts - 1] != g->n_nodes)
        return si_err_set(err, "graph has values that are never used or an output that is "
                          "never computed");
    return 0;
}

static int find_cut(const si_graph_t *g, int pos) {
    for (int c = 0; c < g->n_cuts; c++)
        if (g->cuts[c] == pos) return c;
    return -1;
}

/* Names ResNet segments when the graph has the shape of one: a stem ending in
 * MaxPool, then segments with exactly one residual node each (the blocks),
 * then a head without residuals. Blocks with a projection shortcut (the
 * residual operand is computed inside the block) start a new layer, except
 * the first, which always starts layer1 (ResNet18/34's layer1.0 has none). */
static void name_resnet(si_graph_t *g) {
    int pool = -1;
    for (int i = 0; i < g->n_nodes && pool < 0; i++)
        if (g->nodes[i].op == SI_OP_POOL_MAX) pool = i;
    int stem = pool < 0 ? -1 : find_cut(g, pool + 1);
    if (stem < 0) return;
    int nb = 0, layer = 0, index = 0;
    int *bc = malloc((size_t)g->n_cuts * sizeof(int));
    int *bl = malloc((size_t)g->n_cuts * sizeof(int));
    int *bi = malloc((size_t)g->n_cuts * sizeof(int));
    if (!bc || !bl || !bi) goto fail;
    int c = stem;
    for (; c + 1 < g->n_cuts; c++) {
        int resid = -1, count = 0;
        for (int i = g->cuts[c]; i < g->cuts[c + 1]; i++)
            if (g->nodes[i].in2 >= 0) resid = i, count++;
        if (count == 0) break;
        if (count > 1) goto fail;
        int operand = g->nodes[resid].in2, projection = 0;
        for (int i = g->cuts[c]; i < resid; i++)
            if (g->nodes[i].out == operand) projection = 1;
        if (nb == 0 || projection) layer++, index = 0;
        bc[nb] = c, bl[nb] = layer, bi[nb] = index++;
        nb++;
    }
    for (int c2 = c; c2 + 1 < g->n_cuts; c2++) /* the head has no residuals */
        for (int i = g->cuts[c2]; i < g->cuts[c2 + 1]; i++)
            if (g->nodes[i].in2 >= 0) goto fail;
    if (layer != 4 || c + 1 >= g->n_cuts) goto fail;
    g->n_blocks = nb, g->block_cut = bc, g->block_layer = bl, g->block_index = bi;
    g->head_cut = c;
    return;
fail:
    free(bc), free(bl), free(bi);
}

int si_graph_finish(si_graph_t *g, si_err_t *err) {
    if (g->n_nodes < 1 || g->n_values < 2) return si_err_set(err, "graph is empty");
    if (g->output <= 0 || g->output >= g->n_values)
        return si_err_set(err, "graph output is not computed by any node");
    char *made = calloc((size_t)g->n_values, 1);
    if (!made) return si_err_set(err, "out of memory");
    made[0] = 1;
    for (int i = 0; i < g->n_nodes; i++) {
        si_node_t *n = &g->nodes[i];
        int bad = n->in < 0 || n->in >= g->n_values || !made[n->in] ||
                  (n->in2 >= 0 && (n->in2 >= g->n_values || !made[n->in2])) || n->out <= 0 ||
                  n->out >= g->n_values || made[n->out];
        if (bad) {
            free(made);
            return si_err_set(err, "node %s: reads a value not computed before it, or writes one "
                              "twice (graph not in topological order?)", n->name);
        }
        if (infer_node(g, i, err) < 0) {
            free(made);
            return -1;
        }
        made[n->out] = 1;
    }
    free(made);
    free(g->cuts), g->cuts = NULL;
    free(g->block_cut), free(g->block_layer), free(g->block_index);
    g->block_cut = g->block_layer = g->block_index = NULL;
    g->n_blocks = 0;
    if (find_cuts(g, err) < 0) return -1;
    g->default_cut_begin = 0, g->default_cut_end = g->n_cuts - 1;
    name_resnet(g);
    return 0;
}

void si_graph_cut_name(const si_graph_t *g, int c, char *buf, size_t len) {
    if (c == 0 && g->n_blocks) {
        snprintf(buf, len, "stem");
        return;
    }
    if (g->n_blocks && c == g->head_cut) {
        snprintf(buf, len, "head");
        return;
    }
    for (int b = 0; b < g->n_blocks; b++)
        if (g->block_cut[b] == c) {
            snprintf(buf, len, "layer%d.%d", g->block_layer[b], g->block_index[b]);
            return;
        }
    snprintf(buf, len, "#%d", c);
}

/* Resolves one named unit to its [begin, end] cut indices. */
static int unit(const si_graph_t *g, const char *s, size_t len, int *b, int *e, si_err_t *err) {
    char name[SI_MAX_NAME];
    if (len == 0 || len >= sizeof name) return si_err_set(err, "empty or too long segment name");
    memcpy(name, s, len), name[len] = 0;
    if (name[0] == '#') {
        char *end;
        long c = strtol(name + 1, &end, 10);
        if (*end || end == name + 1 || c < 0 || c >= g->n_cuts)
            return si_err_set(err, "no cut point '%s' (the model has #0..#%d)", name,
                              g->n_cuts - 1);
        *b = *e = (int)c;
        return 0;
    }
    if (!g->n_blocks)
        return si_err_set(err, "segment '%s': the model is not ResNet-shaped, name its cut "
                          "points as #A..#B (see 'splitinfer info')", name);
    int layer = -1, index = -1, nread = 0;
    if (!strcmp(name, "stem")) {
        *b = 0, *e = g->block_cut[0];
        return 0;
    }
    if (!strcmp(name, "head")) {
        *b = g->head_cut, *e = g->n_cuts - 1;
        return 0;
    }
    if (sscanf(name, "layer%d%n.%d%n", &layer, &nread, &index, &nread) >= 1 &&
        nread == (int)len) {
        int first = -1, last = -1;
        for (int i = 0; i < g->n_blocks; i++)
            if (g->block_layer[i] == layer && (index < 0 || g->block_index[i] == index)) {
                if (first < 0) first = i;
                last = i;
            }
        if (first >= 0) {
            *b = g->block_cut[first];
            *e = last + 1 < g->n_blocks ? g->block_cut[last + 1] : g->head_cut;
            return 0;
        }
    }
    return si_err_set(err, "unknown segment '%s' (stem, layer1..layer4, layerL.B, head, #N)",
                      name);
}

const char *si_graph_default_segment(const si_graph_t *g, char *buf, size_t len) {
    if (g->default_cut_begin == 0 && g->default_cut_end == g->n_cuts - 1) return "all";
    snprintf(buf, len, "#%d..#%d", g->default_cut_begin, g->default_cut_end);
    return buf;
}

int si_graph_segment(const si_graph_t *g, const char *spec, si_segment_t *seg, si_err_t *err) {
    int cb = g->default_cut_begin, ce = g->default_cut_end;
    if (spec && !strcmp(spec, "all")) cb = 0, ce = g->n_cuts - 1;
    if (spec && *spec && strcmp(spec, "all")) {
        const char *dots = strstr(spec, "..");
        int b1, e1, b2, e2;
        if (!dots) {
            if (unit(g, spec, strlen(spec), &b1, &e1, err) < 0) return -1;
            if (b1 == e1) return si_err_set(err, "segment '%s' is empty: write #A..#B", spec);
            cb = b1, ce = e1;
        } else {
            if (unit(g, spec, (size_t)(dots - spec), &b1, &e1, err) < 0 ||
                unit(g, dots + 2, strlen(dots + 2), &b2, &e2, err) < 0)
                return -1;
            cb = b1, ce = e2;
        }
        if (cb >= ce) return si_err_set(err, "segment '%s' is empty or backwards", spec);
    }
    seg->cut_begin = cb, seg->cut_end = ce;
    seg->node_begin = g->cuts[cb], seg->node_end = g->cuts[ce];
    seg->in = seg->node_begin == 0 ? 0 : g->nodes[seg->node_begin - 1].out;
    seg->out = g->nodes[seg->node_end - 1].out;
    return 0;
}

uint64_t si_node_macs(const si_graph_t *g, const si_node_t *n) {
    const si_value_t *y = &g->values[n->out];
    switch (n->op) {
    case SI_OP_CONV:
        return (uint64_t)n->cout * (uint64_t)n->cin * (uint64_t)(n->kh * n->kw) *
               (uint64_t)y->dims[2] * (uint64_t)y->dims[3];
    case SI_OP_DENSE: return (uint64_t)n->cout * (uint64_t)n->cin;
    default: return 0;
    }
}

uint64_t si_segment_macs(const si_graph_t *g, const si_segment_t *seg, const si_band_t *band) {
    uint64_t sum = 0;
    for (int i = seg->node_begin; i < seg->node_end; i++) {
        const si_node_t *n = &g->nodes[i];
        const si_value_t *y = &g->values[n->out];
        uint64_t m = si_node_macs(g, n);
        /* A conv's MACs are proportional to its output rows; a flat output
         * (dense) is computed whole by every band. */
        if (band && y->ndim == 4 && y->dims[2] > 0) {
            int rows = band->row_end[n->out] - band->row_begin[n->out];
            m = rows > 0 ? m * (uint64_t)rows / (uint64_t)y->dims[2] : 0;
        }
        sum += m;
    }
    return sum;
}

uint64_t si_node_params(const si_node_t *n) {
    switch (n->op) {
    case SI_OP_CONV: return (uint64_t)n->cout * (uint64_t)(n->cin * n->kh * n->kw + 1);
    case SI_OP_DENSE: return (uint64_t)n->cout * (uint64_t)(n->cin + 1);
    default: return 0;
    }
}

void si_node_in_rows(const si_graph_t *g, const si_node_t *n, int oa, int ob, int *ia, int *ib) {
    const si_value_t *x = &g->values[n->in];
    if (x->ndim != 4 || g->values[n->out].ndim != 4) {
        *ia = 0, *ib = x->ndim == 4 ? x->dims[2] : 1;
        return;
    }
    int a = oa, b = ob;
    if (n->op == SI_OP_CONV || n->op == SI_OP_POOL_MAX || n->op == SI_OP_POOL_AVG) {
        a = oa * n->sh - n->pad_t;
        b = (ob - 1) * n->sh - n->pad_t + n->dh * (n->kh - 1) + 1;
    }
    *ia = a < 0 ? 0 : a;
    *ib = b > x->dims[2] ? x->dims[2] : b;
}

void si_rows_split(int h, int K, int k, int *begin, int *end) {
    int base = h / K, extra = h % K;
    *begin = k * base + (k < extra ? k : extra);
    *end = *begin + base + (k < extra);
}

void si_band_free(si_band_t *band) {
    free(band->row_begin), free(band->row_end);
    band->row_begin = band->row_end = NULL;
}

int si_graph_band(const si_graph_t *g, const si_segment_t *seg, int out_begin, int out_end,
                  si_band_t *band, si_err_t *err) {
    memset(band, 0, sizeof *band);
    const si_value_t *y = &g->values[seg->out];
    int h = y->ndim == 4 ? y->dims[2] : 1;
    if (out_begin < 0 || out_end > h || out_begin >= out_end)
        return si_err_set(err, "output rows [%d, %d) are not inside the %d rows of the output%s",
                          out_begin, out_end, h,
                          y->ndim == 4 ? "" : " (a flat output cannot be cut into bands)");
    band->row_begin = malloc((size_t)g->n_values * sizeof(int));
    band->row_end = malloc((size_t)g->n_values * sizeof(int));
    if (!band->row_begin || !band->row_end) {
        si_band_free(band);
        return si_err_set(err, "out of memory");
    }
    for (int v = 0; v < g->n_values; v++) band->row_begin[v] = 1 << 30, band->row_end[v] = -1;
    band->row_begin[seg->out] = out_begin, band->row_end[seg->out] = out_end;
    /* Backwards over the segment: a value's rows are the hull of what its
     * readers need. Nodes are in topological order, so every reader of a
     * value comes after its producer. */
    for (int i = seg->node_end - 1; i >= seg->node_begin; i--) {
        const si_node_t *n = &g->nodes[i];
        int oa = band->row_begin[n->out], ob = band->row_end[n->out];
        if (ob < 0) continue; /* not needed for this band */
        int ia, ib; /* a 2-D output has one "row": a flatten then needs all input rows */
        si_node_in_rows(g, n, oa, ob, &ia, &ib);
        int vs[2] = {n->in, n->in2}, as[2] = {ia, oa}, bs[2] = {ib, ob};
        for (int k = 0; k < 2; k++) {
            if (vs[k] < 0) continue;
            if (as[k] < band->row_begin[vs[k]]) band->row_begin[vs[k]] = as[k];
            if (bs[k] > band->row_end[vs[k]]) band->row_end[vs[k]] = bs[k];
        }
    }
    band->out_begin = out_begin, band->out_end = out_end;
    band->in_begin = band->row_begin[seg->in], band->in_end = band->row_end[seg->in];
    return 0;
}
