/* onnx.c - ONNX import with folding. See onnx.h. */
#include "onnx.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "onnx.pb-c.h"

/* One ONNX tensor name: either an activation (a value of the graph) or a
 * constant (an initializer or the output of a Constant node). */
typedef struct sym {
    const char *name;
    int value;                 /* value id, or -1 for constants */
    const Onnx__TensorProto *t; /* constant data, or NULL */
    int uses;                  /* nodes (and graph outputs) reading it */
} sym_t;

typedef struct importer {
    si_graph_t *g;
    sym_t *syms;
    int n_syms, cap_syms;
    float *arena_top; /* bump pointer into g->arena */
    float *arena_end;
    int *producer;    /* value id -> node index that writes it (or -1) */
    int *vuses;       /* value id -> nodes (and graph outputs) still to read it */
    int cap_track;    /* length of producer[] and vuses[] */
    si_err_t *err;
} importer_t;

static sym_t *sym_find(importer_t *im, const char *name) {
    /* Linear: ResNet152 has ~1000 names, so this costs well under a
     * millisecond per model; a hash would not pay for its code. */
    for (int i = im->n_syms - 1; i >= 0; i--)
        if (!strcmp(im->syms[i].name, name)) return &im->syms[i];
    return NULL;
}

static sym_t *sym_add(importer_t *im, const char *name) {
    sym_t *s = sym_find(im, name);
    if (s) return s;
    if (im->n_syms == im->cap_syms) {
        int cap = im->cap_syms ? 2 * im->cap_syms : 256;
        sym_t *p = realloc(im->syms, (size_t)cap * sizeof *p);
        if (!p) return NULL;
        im->syms = p, im->cap_syms = cap;
    }
    s = &im->syms[im->n_syms++];
    memset(s, 0, sizeof *s);
    s->name = name, s->value = -1;
    return s;
}

/* Floats from the arena, 64-byte aligned (16 floats). */
static float *arena_take(importer_t *im, size_t n) {
    float *p = im->arena_top;
    size_t rounded = (n + 15) & ~(size_t)15;
    if (p + rounded > im->arena_end) return NULL;
    im->arena_top += rounded;
    return p;
}

static size_t tensor_numel(const Onnx__TensorProto *t) {
    size_t n = 1;
    for (size_t i = 0; i < t->n_dims; i++) n *= t->dims[i] > 0 ? (size_t)t->dims[i] : 0;
    return n;
}

/* Copies a float tensor's data into dst (n floats); raw_data may be unaligned.
 * Fails on NaN or infinity: a trained model has none, and a file damaged in
 * its weights would otherwise load and answer nonsense. */
static int tensor_floats(const Onnx__TensorProto *t, float *dst, size_t n) {
    if (t->data_type != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT) return -1;
    if (t->has_raw_data) {
        if (t->raw_data.len != n * sizeof(float)) return -1;
        memcpy(dst, t->raw_data.data, n * sizeof(float)); /* little-endian host */
    } else {
        if (t->n_float_data != n) return -1;
        memcpy(dst, t->float_data, n * sizeof(float));
    }
    for (size_t i = 0; i < n; i++)
        if (!isfinite(dst[i])) return -1;
    return 0;
}

/* Reads an int64 tensor (Reshape's shape, Clip bounds are float). */
static int tensor_ints(const Onnx__TensorProto *t, int64_t *dst, size_t max, size_t *n) {
    if (t->data_type != ONNX__TENSOR_PROTO__DATA_TYPE__INT64) return -1;
    size_t k = tensor_numel(t);
    if (k > max) return -1;
    if (t->has_raw_data) {
        if (t->raw_data.len != k * sizeof(int64_t)) return -1;
        memcpy(dst, t->raw_data.data, k * sizeof(int64_t));
    } else {
        if (t->n_int64_data != k) return -1;
        memcpy(dst, t->int64_data, k * sizeof(int64_t));
    }
    *n = k;
    return 0;
}

static const Onnx__AttributeProto *attr(const Onnx__NodeProto *n, const char *name) {
    for (size_t i = 0; i < n->n_attribute; i++)
        if (n->attribute[i]->name && !strcmp(n->attribute[i]->name, name)) return n->attribute[i];
    return NULL;
}

static int64_t attr_int(const Onnx__NodeProto *n, const char *name, int64_t dflt) {
    const Onnx__AttributeProto *a = attr(n, name);
    return a && a->has_i ? a->i : dflt;
}

static float attr_float(const Onnx__NodeProto *n, const char *name, float dflt) {
    const Onnx__AttributeProto *a = attr(n, name);
    return a && a->has_f ? a->f : dflt;
}

/* Fills out[0..want) from an ints attribute; absent -> dflt for each. */
static int attr_ints(const Onnx__NodeProto *n, const char *name, int want, int *out, int dflt) {
    const Onnx__AttributeProto *a = attr(n, name);
    for (int i = 0; i < want; i++) out[i] = dflt;
    if (!a) return 0;
    if ((int)a->n_ints != want) return -1;
    for (int i = 0; i < want; i++) {
        if (a->ints[i] < 0 || a->ints[i] > 1 << 16) return -1;
        out[i] = (int)a->ints[i];
    }
    return 0;
}

/* Rejects attributes this importer does not understand: silently ignoring
 * one (say ceil_mode=1) would compute a different network. */
static int check_attrs(importer_t *im, const Onnx__NodeProto *n, const char *const *known) {
    for (size_t i = 0; i < n->n_attribute; i++) {
        const char *a = n->attribute[i]->name ? n->attribute[i]->name : "";
        int ok = 0;
        for (const char *const *k = known; *k && !ok; k++) ok = !strcmp(*k, a);
        if (!ok)
            return si_err_set(im->err, "node %s (%s): unsupported attribute '%s'", n->name,
                              n->op_type, a);
    }
    return 0;
}

static const char *node_name(const Onnx__NodeProto *n) { return n->name ? n->name : ""; }

/* Value id of input i of node n, failing when it is missing or a constant. */
static int in_value(importer_t *im, const Onnx__NodeProto *n, size_t i) {
    if (i >= n->n_input || !n->input[i][0]) {
        si_err_set(im->err, "node %s (%s): missing input %zu", node_name(n), n->op_type, i);
        return -1;
    }
    sym_t *s = sym_find(im, n->input[i]);
    if (!s || s->value < 0) {
        si_err_set(im->err, "node %s (%s): input '%s' is not computed by any earlier node",
                   node_name(n), n->op_type, n->input[i]);
        return -1;
    }
    return s->value;
}

/* Constant input i of node n, or NULL (err set) when it is not a constant. */
static const Onnx__TensorProto *in_const(importer_t *im, const Onnx__NodeProto *n, size_t i) {
    sym_t *s = i < n->n_input && n->input[i][0] ? sym_find(im, n->input[i]) : NULL;
    if (!s || !s->t) {
        si_err_set(im->err, "node %s (%s): input %zu must be a constant (initializer)",
                   node_name(n), n->op_type, i);
        return NULL;
    }
    return s->t;
}

/* Grows producer[] and vuses[] to cover value v. */
static int track(importer_t *im, int v) {
    if (v < im->cap_track) return 0;
    int cap = im->g->cap_values > v ? im->g->cap_values : v + 1;
    int *p = realloc(im->producer, (size_t)cap * sizeof *p);
    if (p) im->producer = p;
    int *u = realloc(im->vuses, (size_t)cap * sizeof *u);
    if (u) im->vuses = u;
    if (!p || !u) return si_err_set(im->err, "out of memory");
    for (int i = im->cap_track; i < cap; i++) im->producer[i] = -1, im->vuses[i] = 0;
    im->cap_track = cap;
    return 0;
}

/* Binds output 0 of n to value v. fresh: v was just created for n; else n
 * was folded into v's producer, so n's read of v is replaced by the readers
 * of n's output. */
static int bind_out(importer_t *im, const Onnx__NodeProto *n, int v, int fresh) {
    if (n->n_output < 1) return si_err_set(im->err, "node %s: no output", node_name(n));
    sym_t *s = sym_add(im, n->output[0]);
    if (!s) return si_err_set(im->err, "out of memory");
    if (s->value >= 0 || s->t)
        return si_err_set(im->err, "node %s: output '%s' is written twice", node_name(n),
                          n->output[0]);
    if (track(im, v) < 0) return -1;
    s->value = v;
    im->vuses[v] = fresh ? s->uses : im->vuses[v] - 1 + s->uses;
    return 0;
}

/* Appends node nd writing a new value of ndim dims, binds output 0 of n. */
static int emit(importer_t *im, const Onnx__NodeProto *n, si_node_t *nd, int ndim) {
    int dims[4] = {1, 0, 0, 0};
    int v = si_graph_add_value(im->g, ndim, dims);
    if (v < 0) return si_err_set(im->err, "out of memory");
    nd->out = v;
    snprintf(nd->name, sizeof nd->name, "%s", n->name && n->name[0] ? n->name : n->op_type);
    int idx = si_graph_add_node(im->g, nd);
    if (idx < 0 || track(im, v) < 0) return si_err_set(im->err, "out of memory");
    im->producer[v] = idx;
    return bind_out(im, n, v, 1);
}

static si_node_t blank_node(si_op_t op, int in) {
    si_node_t nd;
    memset(&nd, 0, sizeof nd);
    nd.op = op, nd.in = in, nd.in2 = -1, nd.group = 1;
    nd.kh = nd.kw = nd.sh = nd.sw = nd.dh = nd.dw = 1;
    return nd;
}

/* The node producing v when it may absorb what follows: v is read by exactly
 * one node and the producer has no activation yet. */
static si_node_t *fusable(importer_t *im, int v, int want_op) {
    if (v <= 0 || im->vuses[v] != 1) return NULL;
    si_node_t *p = &im->g->nodes[im->producer[v]];
    if (p->act != SI_ACT_NONE) return NULL;
    if (want_op && (int)p->op != want_op) return NULL;
    return p;
}

static int geometry(importer_t *im, const Onnx__NodeProto *n, si_node_t *nd, int has_kernel) {
    int k[2], s[2], d[2], p[4];
    const Onnx__AttributeProto *ap = attr(n, "auto_pad");
    if (ap && ap->has_s && !(ap->s.len == 6 && !memcmp(ap->s.data, "NOTSET", 6)))
        return si_err_set(im->err, "node %s: auto_pad is not supported (export with explicit "
                          "pads)", node_name(n));
    if (attr_ints(n, "kernel_shape", 2, k, 0) < 0 || attr_ints(n, "strides", 2, s, 1) < 0 ||
        attr_ints(n, "dilations", 2, d, 1) < 0 || attr_ints(n, "pads", 4, p, 0) < 0)
        return si_err_set(im->err, "node %s (%s): only 2-D kernels with non-negative pads, "
                          "strides and dilations are supported", node_name(n), n->op_type);
    if (has_kernel && (k[0] < 1 || k[1] < 1))
        return si_err_set(im->err, "node %s: kernel_shape missing", node_name(n));
    if (s[0] < 1 || s[1] < 1 || d[0] < 1 || d[1] < 1)
        return si_err_set(im->err, "node %s: strides and dilations must be >= 1", node_name(n));
    nd->kh = k[0], nd->kw = k[1], nd->sh = s[0], nd->sw = s[1], nd->dh = d[0], nd->dw = d[1];
    nd->pad_t = p[0], nd->pad_l = p[1], nd->pad_b = p[2], nd->pad_r = p[3];
    return 0;
}

static int op_conv(importer_t *im, const Onnx__NodeProto *n) {
    static const char *const known[] = {"kernel_shape", "strides", "pads", "dilations",
                                        "group", "auto_pad", NULL};
    if (check_attrs(im, n, known) < 0) return -1;
    int x = in_value(im, n, 0);
    if (x < 0) return -1;
    const Onnx__TensorProto *w = in_const(im, n, 1);
    if (!w) return -1;
    if (w->n_dims != 4)
        return si_err_set(im->err, "node %s: only 2-D convolution is supported", node_name(n));
    si_node_t nd = blank_node(SI_OP_CONV, x);
    if (geometry(im, n, &nd, 0) < 0) return -1;
    int64_t group = attr_int(n, "group", 1);
    if (group < 1 || group > w->dims[0] || w->dims[0] < 1 || w->dims[1] < 1)
        return si_err_set(im->err, "node %s: bad weight shape or group", node_name(n));
    nd.group = (int)group;
    nd.cout = (int)w->dims[0], nd.cin = (int)w->dims[1];
    if (nd.kh != w->dims[2] || nd.kw != w->dims[3]) {
        if (attr(n, "kernel_shape"))
            return si_err_set(im->err, "node %s: kernel_shape disagrees with the weights",
                              node_name(n));
        nd.kh = (int)w->dims[2], nd.kw = (int)w->dims[3];
    }
    size_t nw = tensor_numel(w);
    float *wd = arena_take(im, nw), *bd = arena_take(im, (size_t)nd.cout);
    if (!wd || !bd) return si_err_set(im->err, "weights larger than the model file claims");
    if (tensor_floats(w, wd, nw) < 0)
        return si_err_set(im->err, "node %s: weights are not finite float32 of the stated size",
                          node_name(n));
    memset(bd, 0, (size_t)nd.cout * sizeof *bd);
    if (n->n_input > 2 && n->input[2][0]) {
        const Onnx__TensorProto *b = in_const(im, n, 2);
        if (!b || tensor_numel(b) != (size_t)nd.cout || tensor_floats(b, bd, (size_t)nd.cout) < 0)
            return si_err_set(im->err, "node %s: bias is not finite float32[%d]", node_name(n), nd.cout);
    }
    nd.w = wd, nd.b = bd;
    return emit(im, n, &nd, 4);
}

/* Folds y = (x - mean) / sqrt(var + eps) * scale + B into the Conv before it. */
static int op_batchnorm(importer_t *im, const Onnx__NodeProto *n) {
    static const char *const known[] = {"epsilon", "momentum", "training_mode", "spatial", NULL};
    if (check_attrs(im, n, known) < 0) return -1;
    if (attr_int(n, "training_mode", 0))
        return si_err_set(im->err, "node %s: BatchNormalization in training mode", node_name(n));
    int x = in_value(im, n, 0);
    if (x < 0) return -1;
    si_node_t *c = fusable(im, x, SI_OP_CONV);
    if (!c || c->in2 >= 0)
        return si_err_set(im->err, "node %s: BatchNormalization is supported only directly after "
                          "a Conv whose output nothing else reads", node_name(n));
    const Onnx__TensorProto *t[4];
    float *p[4];
    for (int i = 0; i < 4; i++) {
        t[i] = in_const(im, n, (size_t)i + 1);
        if (!t[i]) return -1;
        if (tensor_numel(t[i]) != (size_t)c->cout)
            return si_err_set(im->err, "node %s: parameter %d is not finite float32[%d]", node_name(n),
                              i + 1, c->cout);
    }
    float *tmp = malloc(4 * (size_t)c->cout * sizeof *tmp);
    if (!tmp) return si_err_set(im->err, "out of memory");
    for (int i = 0; i < 4; i++) {
        p[i] = tmp + (size_t)i * (size_t)c->cout;
        if (tensor_floats(t[i], p[i], (size_t)c->cout) < 0) {
            free(tmp);
            return si_err_set(im->err, "node %s: parameter %d is not finite float32", node_name(n), i + 1);
        }
    }
    double eps = attr_float(n, "epsilon", 1e-5f);
    float *w = (float *)c->w, *b = (float *)c->b; /* arena memory, ours to change */
    size_t per = (size_t)c->cin * (size_t)(c->kh * c->kw);
    for (int o = 0; o < c->cout; o++) {
        /* double for the scale: var + eps can be tiny and this runs once */
        double s = p[0][o] / sqrt((double)p[3][o] + eps);
        for (size_t k = 0; k < per; k++) w[(size_t)o * per + k] = (float)(w[(size_t)o * per + k] * s);
        b[o] = (float)((b[o] - p[2][o]) * s + p[1][o]);
    }
    free(tmp);
    return bind_out(im, n, c->out, 0); /* the conv's output now carries BN's name */
}

static int fold_act(importer_t *im, const Onnx__NodeProto *n, si_act_t act, float lo, float hi) {
    int x = in_value(im, n, 0);
    if (x < 0) return -1;
    si_node_t *p = fusable(im, x, 0);
    if (p && (p->op == SI_OP_CONV || p->op == SI_OP_DENSE || p->op == SI_OP_ADD)) {
        p->act = act, p->act_lo = lo, p->act_hi = hi;
        return bind_out(im, n, x, 0);
    }
    si_node_t nd = blank_node(SI_OP_ACT, x);
    nd.act = act, nd.act_lo = lo, nd.act_hi = hi;
    return emit(im, n, &nd, im->g->values[x].ndim);
}

static int op_clip(importer_t *im, const Onnx__NodeProto *n) {
    static const char *const known[] = {"min", "max", NULL};
    if (check_attrs(im, n, known) < 0) return -1;
    float lo = attr_float(n, "min", -INFINITY), hi = attr_float(n, "max", INFINITY);
    for (size_t i = 1; i < 3 && i < n->n_input; i++) { /* opset >= 11: bounds as inputs */
        if (!n->input[i][0]) continue;
        const Onnx__TensorProto *t = in_const(im, n, i);
        float v;
        if (!t || tensor_numel(t) != 1 || tensor_floats(t, &v, 1) < 0)
            return si_err_set(im->err, "node %s: Clip bound is not a float32 scalar", node_name(n));
        if (i == 1) lo = v;
        else hi = v;
    }
    if (lo == 0 && hi == INFINITY) return fold_act(im, n, SI_ACT_RELU, 0, 0);
    return fold_act(im, n, SI_ACT_CLIP, lo, hi);
}

static int op_pool(importer_t *im, const Onnx__NodeProto *n, si_op_t op) {
    static const char *const known[] = {"kernel_shape", "strides", "pads", "dilations",
                                        "auto_pad", "ceil_mode", "storage_order",
                                        "count_include_pad", NULL};
    if (check_attrs(im, n, known) < 0) return -1;
    if (attr_int(n, "ceil_mode", 0))
        return si_err_set(im->err, "node %s: ceil_mode=1 is not supported", node_name(n));
    if (n->n_output > 1 && n->output[1][0])
        return si_err_set(im->err, "node %s: MaxPool indices output is not supported",
                          node_name(n));
    int x = in_value(im, n, 0);
    if (x < 0) return -1;
    si_node_t nd = blank_node(op, x);
    if (geometry(im, n, &nd, 1) < 0) return -1;
    if (op == SI_OP_POOL_AVG && (nd.dh != 1 || nd.dw != 1))
        return si_err_set(im->err, "node %s: dilated AveragePool", node_name(n));
    nd.count_include_pad = (int)attr_int(n, "count_include_pad", 0);
    return emit(im, n, &nd, 4);
}

static int op_global_pool(importer_t *im, const Onnx__NodeProto *n) {
    static const char *const known[] = {NULL};
    if (check_attrs(im, n, known) < 0) return -1;
    int x = in_value(im, n, 0);
    if (x < 0) return -1;
    si_node_t nd = blank_node(SI_OP_POOL_AVG, x);
    nd.kh = nd.kw = 0; /* 0 = the whole map; resolved by shape inference */
    return emit(im, n, &nd, 4);
}

static int op_add(importer_t *im, const Onnx__NodeProto *n) {
    static const char *const known[] = {NULL};
    if (check_attrs(im, n, known) < 0) return -1;
    if (n->n_input != 2) return si_err_set(im->err, "node %s: Add needs 2 inputs", node_name(n));
    sym_t *s0 = sym_find(im, n->input[0]), *s1 = sym_find(im, n->input[1]);
    if (!s0 || !s1) return in_value(im, n, s0 ? 1 : 0);
    if (s0->t || s1->t) { /* MatMul/Gemm + bias */
        sym_t *sv = s0->t ? s1 : s0;
        const Onnx__TensorProto *t = s0->t ? s0->t : s1->t;
        si_node_t *d = sv->value >= 0 ? fusable(im, sv->value, SI_OP_DENSE) : NULL;
        if (!d || tensor_numel(t) != (size_t)d->cout)
            return si_err_set(im->err, "node %s: Add of a constant is supported only as the bias "
                              "of a MatMul/Gemm", node_name(n));
        float *bias = malloc((size_t)d->cout * sizeof *bias);
        if (!bias || tensor_floats(t, bias, (size_t)d->cout) < 0) {
            free(bias);
            return si_err_set(im->err, "node %s: bias is not finite float32", node_name(n));
        }
        float *b = (float *)d->b;
        for (int i = 0; i < d->cout; i++) b[i] += bias[i];
        free(bias);
        return bind_out(im, n, sv->value, 0);
    }
    int a = in_value(im, n, 0), b = in_value(im, n, 1);
    if (a < 0 || b < 0) return -1;
    /* Fold into the Conv computed later: the other operand then exists when
     * the conv runs, and the conv accumulates onto it (oneDNN sum post-op). */
    int pa = a > 0 ? im->producer[a] : -1, pb = b > 0 ? im->producer[b] : -1;
    int later = pa > pb ? a : b, other = pa > pb ? b : a;
    si_node_t *c = fusable(im, later, SI_OP_CONV);
    if (c && c->in2 < 0 && c->act == SI_ACT_NONE) {
        c->in2 = other; /* the add's read of `other` becomes the conv's: count unchanged */
        return bind_out(im, n, later, 0);
    }
    si_node_t nd = blank_node(SI_OP_ADD, a);
    nd.in2 = b;
    return emit(im, n, &nd, im->g->values[a].ndim);
}

static int op_flatten(importer_t *im, const Onnx__NodeProto *n) {
    int x = in_value(im, n, 0);
    if (x < 0) return -1;
    if (!strcmp(n->op_type, "Flatten")) {
        static const char *const known[] = {"axis", NULL};
        if (check_attrs(im, n, known) < 0) return -1;
        if (attr_int(n, "axis", 1) != 1)
            return si_err_set(im->err, "node %s: Flatten with axis != 1", node_name(n));
    } else {
        static const char *const known[] = {"allowzero", NULL};
        if (check_attrs(im, n, known) < 0) return -1;
        const Onnx__TensorProto *t = in_const(im, n, 1);
        int64_t shape[8];
        size_t k = 0;
        if (!t || tensor_ints(t, shape, 8, &k) < 0 || k != 2 || !(shape[0] == 1 || shape[0] == 0 ||
            shape[0] == -1) || (shape[1] != -1 && shape[1] <= 0))
            return si_err_set(im->err, "node %s: only Reshape to 2-D [N, -1] is supported",
                              node_name(n));
    }
    si_node_t nd = blank_node(SI_OP_FLATTEN, x);
    return emit(im, n, &nd, 2);
}

/* Gemm (alpha, beta, transB folded into the weights) and MatMul. */
static int op_dense(importer_t *im, const Onnx__NodeProto *n) {
    int gemm = !strcmp(n->op_type, "Gemm");
    static const char *const known[] = {"alpha", "beta", "transA", "transB", NULL};
    if (check_attrs(im, n, known) < 0) return -1;
    if (attr_int(n, "transA", 0))
        return si_err_set(im->err, "node %s: Gemm with transA=1", node_name(n));
    int x = in_value(im, n, 0);
    if (x < 0) return -1;
    const Onnx__TensorProto *w = in_const(im, n, 1);
    if (!w) return -1;
    if (w->n_dims != 2 || w->dims[0] < 1 || w->dims[1] < 1)
        return si_err_set(im->err, "node %s: weights are not 2-D", node_name(n));
    int transb = gemm ? (int)attr_int(n, "transB", 0) : 0;
    float alpha = gemm ? attr_float(n, "alpha", 1) : 1, beta = gemm ? attr_float(n, "beta", 1) : 1;
    si_node_t nd = blank_node(SI_OP_DENSE, x);
    nd.cout = (int)(transb ? w->dims[0] : w->dims[1]);
    nd.cin = (int)(transb ? w->dims[1] : w->dims[0]);
    size_t nw = tensor_numel(w);
    float *wd = arena_take(im, nw), *bd = arena_take(im, (size_t)nd.cout);
    float *raw = malloc(nw * sizeof *raw);
    if (!wd || !bd || !raw) {
        free(raw);
        return si_err_set(im->err, "out of memory");
    }
    if (tensor_floats(w, raw, nw) < 0) {
        free(raw);
        return si_err_set(im->err, "node %s: weights are not finite float32", node_name(n));
    }
    for (int o = 0; o < nd.cout; o++) /* to [cout, cin], the layout oneDNN's "oi" names */
        for (int i = 0; i < nd.cin; i++)
            wd[(size_t)o * (size_t)nd.cin + (size_t)i] =
                alpha * (transb ? raw[(size_t)o * (size_t)nd.cin + (size_t)i]
                                : raw[(size_t)i * (size_t)nd.cout + (size_t)o]);
    free(raw);
    memset(bd, 0, (size_t)nd.cout * sizeof *bd);
    if (gemm && n->n_input > 2 && n->input[2][0]) {
        const Onnx__TensorProto *b = in_const(im, n, 2);
        if (!b || tensor_numel(b) != (size_t)nd.cout || tensor_floats(b, bd, (size_t)nd.cout) < 0)
            return si_err_set(im->err, "node %s: bias is not finite float32[%d]", node_name(n), nd.cout);
        for (int o = 0; o < nd.cout; o++) bd[o] *= beta;
    }
    nd.w = wd, nd.b = bd;
    return emit(im, n, &nd, 2);
}

static int op_alias(importer_t *im, const Onnx__NodeProto *n) {
    sym_t *src = n->n_input ? sym_find(im, n->input[0]) : NULL;
    if (src && src->t && n->n_output) { /* exporters pass shared weights through Identity */
        const Onnx__TensorProto *t = src->t;
        sym_t *s = sym_add(im, n->output[0]);
        if (!s) return si_err_set(im->err, "out of memory");
        s->t = t;
        return 0;
    }
    int x = in_value(im, n, 0);
    if (x < 0) return -1;
    return bind_out(im, n, x, 0);
}

static int op_constant(importer_t *im, const Onnx__NodeProto *n) {
    const Onnx__AttributeProto *a = attr(n, "value");
    if (!a || !a->t || n->n_attribute != 1 || n->n_output < 1)
        return si_err_set(im->err, "node %s: Constant without a tensor 'value'", node_name(n));
    sym_t *s = sym_add(im, n->output[0]);
    if (!s) return si_err_set(im->err, "out of memory");
    s->t = a->t;
    return 0;
}

static int import_node(importer_t *im, const Onnx__NodeProto *n) {
    const char *op = n->op_type ? n->op_type : "";
    if (n->domain && n->domain[0] && strcmp(n->domain, "ai.onnx"))
        return si_err_set(im->err, "node %s: op %s of domain %s is not supported", node_name(n),
                          op, n->domain);
    if (!strcmp(op, "Conv")) return op_conv(im, n);
    if (!strcmp(op, "BatchNormalization")) return op_batchnorm(im, n);
    if (!strcmp(op, "Relu")) {
        if (n->n_attribute) return si_err_set(im->err, "node %s: Relu with attributes", node_name(n));
        return fold_act(im, n, SI_ACT_RELU, 0, 0);
    }
    if (!strcmp(op, "Clip")) return op_clip(im, n);
    if (!strcmp(op, "MaxPool")) return op_pool(im, n, SI_OP_POOL_MAX);
    if (!strcmp(op, "AveragePool")) return op_pool(im, n, SI_OP_POOL_AVG);
    if (!strcmp(op, "GlobalAveragePool")) return op_global_pool(im, n);
    if (!strcmp(op, "Add")) return op_add(im, n);
    if (!strcmp(op, "Flatten") || !strcmp(op, "Reshape")) return op_flatten(im, n);
    if (!strcmp(op, "Gemm") || !strcmp(op, "MatMul")) return op_dense(im, n);
    if (!strcmp(op, "Identity") || !strcmp(op, "Dropout")) return op_alias(im, n);
    if (!strcmp(op, "Constant")) return op_constant(im, n);
    return si_err_set(im->err, "node %s: unsupported op %s", node_name(n), op);
}

/* Upper bound of the arena: every weight-carrying node copies its weights and
 * a bias, each rounded up to 64 bytes. */
static size_t arena_bound(importer_t *im, const Onnx__GraphProto *gp) {
    size_t total = 0;
    for (size_t i = 0; i < gp->n_node; i++) {
        const Onnx__NodeProto *n = gp->node[i];
        if (!n->op_type || n->n_input < 2) continue;
        if (strcmp(n->op_type, "Conv") && strcmp(n->op_type, "Gemm") && strcmp(n->op_type, "MatMul"))
            continue;
        sym_t *s = sym_find(im, n->input[1]);
        if (!s || !s->t) continue; /* reported when the node is imported */
        size_t nw = tensor_numel(s->t);
        size_t cout = s->t->n_dims ? (size_t)(s->t->dims[0] > s->t->dims[s->t->n_dims - 1]
                                                  ? s->t->dims[0] : s->t->dims[s->t->n_dims - 1])
                                   : 0;
        total += nw + cout + 32;
    }
    return total;
}

/* Graph input: the first declared input that is not an initializer. */
static int import_input(importer_t *im, const Onnx__GraphProto *gp) {
    for (size_t i = 0; i < gp->n_input; i++) {
        const Onnx__ValueInfoProto *vi = gp->input[i];
        sym_t *s = sym_find(im, vi->name);
        if (s && s->t) continue;
        const Onnx__TypeProto *tp = vi->type;
        if (!tp || tp->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !tp->tensor_type->shape ||
            tp->tensor_type->elem_type != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT ||
            tp->tensor_type->shape->n_dim != 4)
            return si_err_set(im->err, "input '%s' is not a float32 4-D tensor", vi->name);
        int dims[4] = {1, 0, 0, 0};
        for (int d = 1; d < 4; d++) {
            const Onnx__TensorShapeProto__Dimension *dm = tp->tensor_type->shape->dim[d];
            if (dm->value_case != ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE ||
                dm->dim_value < 1 || dm->dim_value > 1 << 16)
                return si_err_set(im->err, "input '%s': dimension %d is not a fixed size",
                                  vi->name, d);
            dims[d] = (int)dm->dim_value;
        }
        if (si_graph_add_value(im->g, 4, dims) != 0 || track(im, 0) < 0)
            return si_err_set(im->err, "out of memory");
        s = sym_add(im, vi->name);
        if (!s) return si_err_set(im->err, "out of memory");
        s->value = 0;
        im->vuses[0] = s->uses;
        return 0;
    }
    return si_err_set(im->err, "the graph has no input tensor");
}

si_graph_t *si_onnx_parse(const void *buf, size_t len, si_err_t *err) {
    importer_t im;
    memset(&im, 0, sizeof im);
    im.err = err;
    Onnx__ModelProto *m = onnx__model_proto__unpack(NULL, len, buf);
    if (!m) {
        si_err_set(err, "not a valid ONNX model (protobuf does not parse; truncated or corrupt)");
        return NULL;
    }
    const Onnx__GraphProto *gp = m->graph;
    if (!gp || !gp->n_node || !gp->n_output) {
        si_err_set(err, "ONNX model has no graph");
        goto fail;
    }
    im.g = si_graph_new();
    if (!im.g) goto oom;
    for (size_t i = 0; i < gp->n_initializer; i++) {
        sym_t *s = gp->initializer[i]->name ? sym_add(&im, gp->initializer[i]->name) : NULL;
        if (!s) goto oom;
        s->t = gp->initializer[i];
    }
    /* Count readers so that folding can tell whether a producer's output is
     * read by the folded node alone. Constant outputs are counted too: harmless. */
    for (size_t i = 0; i < gp->n_node; i++)
        for (size_t j = 0; j < gp->node[i]->n_input; j++) {
            sym_t *s = gp->node[i]->input[j][0] ? sym_add(&im, gp->node[i]->input[j]) : NULL;
            if (s) s->uses++;
        }
    for (size_t i = 0; i < gp->n_output; i++) {
        sym_t *s = sym_add(&im, gp->output[i]->name);
        if (!s) goto oom;
        s->uses++;
    }
    /* Names counted above but never bound are inputs nobody computes:
     * in_value reports them at the node. */
    if (import_input(&im, gp) < 0) goto fail;
    im.g->arena_len = arena_bound(&im, gp);
    if (im.g->arena_len) {
        im.g->arena = aligned_alloc(64, im.g->arena_len * sizeof(float));
        if (!im.g->arena) goto oom;
    }
    im.arena_top = im.g->arena, im.arena_end = im.g->arena + im.g->arena_len;
    for (size_t i = 0; i < gp->n_node; i++)
        if (import_node(&im, gp->node[i]) < 0) goto fail;
    if (gp->n_output != 1) {
        si_err_set(err, "model has %zu outputs; one is supported", gp->n_output);
        goto fail;
    }
    sym_t *o = sym_find(&im, gp->output[0]->name);
    if (!o || o->value <= 0) {
        si_err_set(err, "output '%s' is not computed by the graph", gp->output[0]->name);
        goto fail;
    }
    im.g->output = o->value;
    if (si_graph_finish(im.g, err) < 0) goto fail;
    free(im.syms), free(im.producer), free(im.vuses);
    onnx__model_proto__free_unpacked(m, NULL);
    return im.g;
oom:
    si_err_set(err, "out of memory");
fail:
    free(im.syms), free(im.producer), free(im.vuses);
    si_graph_free(im.g);
    onnx__model_proto__free_unpacked(m, NULL);
    return NULL;
}

si_graph_t *si_onnx_load(const char *path, si_err_t *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        si_err_set(err, "%s: %s", path, strerror(errno));
        return NULL;
    }
    void *buf = NULL;
    long len = -1;
    if (fseek(f, 0, SEEK_END) == 0) len = ftell(f);
    if (len < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        si_err_set(err, "%s: cannot read", path);
        return NULL;
    }
    if (len == 0) {
        fclose(f);
        si_err_set(err, "%s: empty file", path);
        return NULL;
    }
    buf = malloc((size_t)len);
    if (!buf || fread(buf, 1, (size_t)len, f) != (size_t)len) {
        free(buf);
        fclose(f);
        si_err_set(err, "%s: cannot read", path);
        return NULL;
    }
    fclose(f);
    si_graph_t *g = si_onnx_parse(buf, (size_t)len, err);
    free(buf);
    if (!g) si_err_prefix(err, "%s", path);
    return g;
}
