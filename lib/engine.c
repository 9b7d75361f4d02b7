/* engine.c - oneDNN executor for graph segments. See engine.h.
 *
 * Compilation walks the segment's nodes in order and keeps, for every value,
 * the dnnl memory that holds it (its layout is whatever its producer chose).
 * A consumer that wants another layout gets a reorder step into a cached
 * converted copy. Activation memory comes from a small pool of buffers: a
 * value's buffer returns to the pool after its last reader, and a new value
 * takes the free buffer nearest in size (growing it if needed). Buffers are
 * allocated only once planning is done, so their final sizes are known.
 */
#include "engine.h"

#include <dnnl.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "modelfile.h"
#include "wino.h"

#define MAX_ARGS 8

/* One step of a run: a oneDNN primitive, or (prim NULL) a Winograd
 * convolution of ours reading memory src and writing memory dst. */
typedef struct step {
    dnnl_primitive_t prim;
    int nargs;
    dnnl_exec_arg_t args[MAX_ARGS];
    si_wino_t *wino;
    dnnl_memory_t src, dst;
} step_t;

typedef struct buffer {
    size_t size; /* bytes */
    int in_use;
    void *ptr;
} buffer_t;

/* A memory object and the pool buffer it lives in (-1: user or weights).
 * Several memories may view one buffer (an in-place sum, a flatten view, a
 * band's rows); exactly one of them owns it and gives it back when its value
 * dies. A view of some of a value's rows starts off bytes into the buffer
 * (or into the caller's input, for a view of it). */
typedef struct mem {
    dnnl_memory_t m;
    int buf;
    int owns;
    int user_in; /* its handle is the caller's input plus off, set per run */
    size_t off;  /* bytes from the start of its buffer or of the input */
} mem_t;

struct si_engine {
    const si_graph_t *g;
    si_segment_t seg;
    int batch;
    dnnl_engine_t eng;
    dnnl_stream_t stream;

    step_t *steps;
    int n_steps, cap_steps;

    mem_t *mems; /* every memory object we created, for freeing and handles */
    int n_mems, cap_mems;

    buffer_t *bufs;
    int n_bufs, cap_bufs;

    void **owned; /* reordered weights (aligned_alloc) */
    int n_owned, cap_owned;
    size_t owned_bytes;
    size_t reordered_bytes; /* weights re-laid out at compile (si_engine_reordered_bytes) */

    size_t scratch_size;      /* bytes: oneDNN's and Winograd's, shared (steps run in turn) */
    size_t wino_bytes;        /* transformed Winograd weights */
    void *scratch;
    dnnl_memory_t scratch_mem; /* shared by every primitive (user scratchpad mode) */

    int *row_begin, *row_end; /* value id -> rows held (a band, or all of them) */
    int *node_wmem;           /* node index -> memory of its weights as run (-1) */
    int *node_wino;           /* node index -> its Winograd step (-1) */
    int *val_mem;  /* value id -> index into mems of its memory (-1 if none) */
    int *val_conv; /* value id -> index of a cached reorder of it, or -1 */
    int *last_use; /* value id -> last node reading it; seg end for the output */

    int user_in, user_out; /* indices into mems; handles set per run */
    int tmp[4], n_tmp;     /* crops made for the node being compiled */
    int in_views[8], n_in_views; /* views of the caller's input, set per run */
    int out_direct;        /* the output value already lies as the caller wants it:
                              si_engine_run_view skips the copy-out (the last step) */
    float *view_out;       /* si_engine_run_view's copy-out when !out_direct (lazy) */
    size_t copy_bytes;     /* bytes the reorders between nodes write per run */
    int in_ndim, out_ndim;
    int in_dims[4], out_dims[4];
    si_err_t *err;         /* compile-time only */
};

static int fail(si_engine_t *e, const char *what, const si_node_t *n, dnnl_status_t s) {
    return si_err_set(e->err, "oneDNN could not %s%s%s (status %d)", what, n ? " for node " : "",
                      n ? n->name : "", (int)s);
}

#define TRY(e, call, what, node)                                                               \
    do {                                                                                       \
        dnnl_status_t s_ = (call);                                                             \
        if (s_ != dnnl_success) return fail((e), (what), (node), s_);                          \
    } while (0)

static int grow(void **p, int *cap, int n, size_t elem, si_err_t *err) {
    if (n < *cap) return 0;
    int ncap = *cap ? 2 * *cap : 32;
    void *q = realloc(*p, (size_t)ncap * elem);
    if (!q) return si_err_set(err, "out of memory");
    *p = q, *cap = ncap;
    return 0;
}

void si_engine_set_threads(int n) {
    if (n < 1) n = omp_get_num_procs();
    omp_set_num_threads(n);
}

int si_engine_threads(void) { return omp_get_max_threads(); }

/* md of rows [ra, rb) of value v, batch applied, in layout tag. */
static void rows_md(const si_engine_t *e, int v, int ra, int rb, dnnl_format_tag_t tag,
                    dnnl_memory_desc_t *md) {
    const si_value_t *val = &e->g->values[v];
    dnnl_dims_t d = {0};
    for (int i = 0; i < val->ndim; i++) d[i] = val->dims[i];
    d[0] = e->batch;
    if (val->ndim == 4) d[2] = rb - ra;
    if (val->ndim == 2) tag = tag == dnnl_format_tag_any ? tag : dnnl_nc;
    dnnl_memory_desc_init_by_tag(md, val->ndim, d, dnnl_f32, tag);
}

/* Plain / any-layout md of a value as the engine holds it (its band). */
static void plain_md(const si_engine_t *e, int v, dnnl_memory_desc_t *md) {
    rows_md(e, v, e->row_begin[v], e->row_end[v], dnnl_nchw, md);
}

static void any_md(const si_engine_t *e, int v, dnnl_memory_desc_t *md) {
    rows_md(e, v, e->row_begin[v], e->row_end[v], dnnl_format_tag_any, md);
}

/* Takes a pool buffer of at least size bytes: the free one nearest in size. */
static int buf_take(si_engine_t *e, size_t size) {
    int best = -1;
    for (int i = 0; i < e->n_bufs; i++) {
        if (e->bufs[i].in_use) continue;
        if (best < 0) { best = i; continue; }
        size_t bs = e->bufs[best].size, is = e->bufs[i].size;
        int i_fits = is >= size, b_fits = bs >= size;
        if ((i_fits && (!b_fits || is < bs)) || (!i_fits && !b_fits && is > bs)) best = i;
    }
    if (best < 0) {
        if (grow((void **)&e->bufs, &e->cap_bufs, e->n_bufs, sizeof *e->bufs, e->err) < 0) return -1;
        best = e->n_bufs++;
        e->bufs[best] = (buffer_t){0, 0, NULL};
    }
    if (e->bufs[best].size < size) e->bufs[best].size = size;
    e->bufs[best].in_use = 1;
    return best;
}

/* A memory object with md over pool buffer buf (-1: no buffer; the handle
 * is set later). Returns its index in mems. */
static int mem_new(si_engine_t *e, const dnnl_memory_desc_t *md, int buf, void *handle) {
    if (grow((void **)&e->mems, &e->cap_mems, e->n_mems, sizeof *e->mems, e->err) < 0) return -1;
    dnnl_memory_t m;
    dnnl_status_t s = dnnl_memory_create(&m, md, e->eng, handle ? handle : DNNL_MEMORY_NONE);
    if (s != dnnl_success) return fail(e, "create a memory object", NULL, s);
    e->mems[e->n_mems] = (mem_t){m, buf, buf >= 0, 0, 0};
    return e->n_mems++;
}

static const dnnl_memory_desc_t *mem_md(si_engine_t *e, int mi) {
    const dnnl_memory_desc_t *md = NULL;
    dnnl_memory_get_memory_desc(e->mems[mi].m, &md);
    return md;
}

static int step_add(si_engine_t *e, dnnl_primitive_t p, const dnnl_exec_arg_t *args, int nargs) {
    if (grow((void **)&e->steps, &e->cap_steps, e->n_steps, sizeof *e->steps, e->err) < 0) {
        if (p) dnnl_primitive_destroy(p);
        return -1;
    }
    step_t *st = &e->steps[e->n_steps++];
    memset(st, 0, sizeof *st);
    st->prim = p, st->nargs = nargs;
    if (nargs) memcpy(st->args, args, (size_t)nargs * sizeof *args);
    return 0;
}

/* Creates a primitive from pd, accounts its scratchpad, and appends a step
 * with args (+ scratchpad). Takes ownership of pd. */
static int prim_add(si_engine_t *e, dnnl_primitive_desc_t pd, dnnl_exec_arg_t *args, int nargs,
                    const si_node_t *n) {
    const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    size_t ss = smd ? dnnl_memory_desc_get_size(smd) : 0;
    if (ss > e->scratch_size) e->scratch_size = ss;
    dnnl_primitive_t p;
    dnnl_status_t s = dnnl_primitive_create(&p, pd);
    dnnl_primitive_desc_destroy(pd);
    if (s != dnnl_success) return fail(e, "create a primitive", n, s);
    if (ss) args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, NULL}; /* bound at the end */
    return step_add(e, p, args, nargs);
}

static dnnl_primitive_attr_t attr_new(void) {
    dnnl_primitive_attr_t a = NULL;
    if (dnnl_primitive_attr_create(&a) != dnnl_success) return NULL;
    dnnl_primitive_attr_set_scratchpad_mode(a, dnnl_scratchpad_mode_user);
    return a;
}

/* A reorder step from memory src to a fresh memory of layout md; returns
 * the new memory's index. */
static int reorder_to(si_engine_t *e, int src, const dnnl_memory_desc_t *md, int buf) {
    dnnl_primitive_desc_t pd;
    dnnl_primitive_attr_t a = attr_new();
    dnnl_status_t s = dnnl_reorder_primitive_desc_create(&pd, mem_md(e, src), e->eng, md, e->eng, a);
    dnnl_primitive_attr_destroy(a);
    if (s != dnnl_success) return fail(e, "build a reorder", NULL, s);
    if (buf == -2) buf = buf_take(e, dnnl_memory_desc_get_size(md));
    if (buf < 0) {
        dnnl_primitive_desc_destroy(pd);
        return -1;
    }
    int dst = mem_new(e, md, buf, NULL);
    if (dst < 0) {
        dnnl_primitive_desc_destroy(pd);
        return -1;
    }
    e->copy_bytes += dnnl_memory_desc_get_size(md);
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_FROM, e->mems[src].m}, {DNNL_ARG_TO, e->mems[dst].m}};
    if (prim_add(e, pd, args, 2, NULL) < 0) return -1;
    return dst;
}

/* The memory holding value v in layout md: v's own, or a cached reordered
 * copy (the copy's buffer is released with v's). */
static int value_as(si_engine_t *e, int v, const dnnl_memory_desc_t *md) {
    int mi = e->val_mem[v];
    if (dnnl_memory_desc_equal(mem_md(e, mi), md)) return mi;
    int ci = e->val_conv[v];
    if (ci >= 0 && dnnl_memory_desc_equal(mem_md(e, ci), md)) return ci;
    if (ci >= 0 && e->mems[ci].owns) e->bufs[e->mems[ci].buf].in_use = 0;
    ci = reorder_to(e, mi, md, -2);
    if (ci < 0) return -1;
    e->val_conv[v] = ci;
    return ci;
}

/* A memory that is md over the bytes of memory mi, off bytes further on: no
 * copy. It owns nothing; a view of the caller's input gets its handle per run. */
static int mem_view(si_engine_t *e, int mi, const dnnl_memory_desc_t *md, size_t off) {
    int from_user = e->mems[mi].user_in;
    if (from_user && e->n_in_views == (int)(sizeof e->in_views / sizeof *e->in_views))
        return si_err_set(e->err, "segment input read at too many different bands");
    int view = mem_new(e, md, e->mems[mi].buf, NULL);
    if (view < 0) return -1;
    e->mems[view].owns = 0;
    e->mems[view].user_in = from_user;
    e->mems[view].off = e->mems[mi].off + off;
    if (from_user) e->in_views[e->n_in_views++] = view;
    return view;
}

/* Rows [ra, rb) of the value in memory mi, which holds rows [row0, ...), as a
 * view when they lie there as one contiguous run in exactly layout md: a
 * plain layout whose rows are outermost (NHWC at batch 1, what oneDNN's
 * AVX-512 kernels run on), where a band's rows are a slice of the bytes.
 * Returns the view, -1 on error, -2 when the rows do not lie that way. */
static int rows_view(si_engine_t *e, int mi, int row0, int ra, int rb, const dnnl_memory_desc_t *md) {
    dnnl_memory_desc_t c = *mem_md(e, mi);
    dnnl_dims_t *st = &c.format_desc.blocking.strides;
    if (c.ndims != 4 || c.format_kind != dnnl_blocked || c.format_desc.blocking.inner_nblks ||
        c.offset0 || c.extra.flags || (*st)[2] < (*st)[1] * c.padded_dims[1] ||
        (*st)[2] < (*st)[3] * c.padded_dims[3])
        return -2;
    c.dims[2] = c.padded_dims[2] = rb - ra;
    /* One image: its stride is never stepped over, whatever it says. */
    if (c.dims[0] == 1 && md->format_kind == dnnl_blocked) (*st)[0] = md->format_desc.blocking.strides[0];
    if (!dnnl_memory_desc_equal(&c, md)) return -2;
    return mem_view(e, mi, md, (size_t)(ra - row0) * (size_t)(*st)[2] * sizeof(float));
}

/* The memory holding rows [ra, rb) of value v in layout md (md's height is
 * rb - ra). Rows the value holds beyond those (a hull over several readers:
 * in ResNet, shortcuts at band edges) are left out by a view where the rows
 * lie contiguously in md's layout, else cropped off by a reorder from a
 * sub-memory view into a buffer released after the current node. */
static int value_rows_as(si_engine_t *e, int v, int ra, int rb, const dnnl_memory_desc_t *md) {
    if (ra == e->row_begin[v] && rb == e->row_end[v]) return value_as(e, v, md);
    int mi = e->val_mem[v];
    int rv = rows_view(e, mi, e->row_begin[v], ra, rb, md);
    if (rv != -2) return rv;
    const dnnl_memory_desc_t *full = mem_md(e, mi);
    dnnl_memory_desc_t sub;
    dnnl_dims_t d, off = {0, 0, ra - e->row_begin[v], 0};
    for (int i = 0; i < 4; i++) d[i] = full->dims[i];
    d[2] = rb - ra;
    dnnl_status_t s = dnnl_memory_desc_init_submemory(&sub, full, d, off);
    if (s != dnnl_success) return fail(e, "describe a crop of rows", NULL, s);
    int view = mem_view(e, mi, &sub, 0);
    if (view < 0) return -1;
    int crop = reorder_to(e, view, md, -2);
    if (crop >= 0) e->tmp[e->n_tmp++] = crop;
    return crop;
}

static void layout_to_md(const si_layout_t *l, dnnl_memory_desc_t *md) {
    memset(md, 0, sizeof *md);
    md->ndims = l->ndims;
    md->data_type = dnnl_f32;
    md->format_kind = dnnl_blocked;
    for (int i = 0; i < l->ndims; i++) {
        md->dims[i] = l->dims[i];
        md->padded_dims[i] = l->padded_dims[i];
        md->format_desc.blocking.strides[i] = l->strides[i];
    }
    md->format_desc.blocking.inner_nblks = l->inner_nblks;
    for (int i = 0; i < l->inner_nblks; i++) {
        md->format_desc.blocking.inner_blks[i] = l->inner_blks[i];
        md->format_desc.blocking.inner_idxs[i] = l->inner_idxs[i];
    }
}

/* The layout of md when it is a plain f32 blocked layout we can carry in a
 * file; -1 otherwise (extra flags, offsets: not ours to reproduce). */
static int md_to_layout(const dnnl_memory_desc_t *md, si_layout_t *l) {
    if (md->format_kind != dnnl_blocked || md->ndims > SI_LAYOUT_MAX_DIMS || md->offset0 ||
        md->extra.flags || md->format_desc.blocking.inner_nblks > SI_LAYOUT_MAX_DIMS)
        return -1;
    memset(l, 0, sizeof *l);
    l->ndims = md->ndims;
    for (int i = 0; i < md->ndims; i++) {
        if (md->padded_offsets[i]) return -1;
        l->dims[i] = md->dims[i];
        l->padded_dims[i] = md->padded_dims[i];
        l->strides[i] = md->format_desc.blocking.strides[i];
    }
    l->inner_nblks = md->format_desc.blocking.inner_nblks;
    for (int i = 0; i < l->inner_nblks; i++) {
        l->inner_blks[i] = md->format_desc.blocking.inner_blks[i];
        l->inner_idxs[i] = md->format_desc.blocking.inner_idxs[i];
    }
    return 0;
}

/* The md of node n's weights as ONNX gives them: [cout, cin/group, kh, kw],
 * grouped [g, cout/g, cin/g... ] (goihw), or [cout, cin] for a dense node. */
static void plain_weights_md(const si_node_t *n, dnnl_memory_desc_t *md) {
    dnnl_dims_t d;
    if (n->op == SI_OP_DENSE) {
        d[0] = n->cout, d[1] = n->cin;
        dnnl_memory_desc_init_by_tag(md, 2, d, dnnl_f32, dnnl_oi);
    } else if (n->group > 1) {
        d[0] = n->group, d[1] = n->cout / n->group, d[2] = n->cin, d[3] = n->kh, d[4] = n->kw;
        dnnl_memory_desc_init_by_tag(md, 5, d, dnnl_f32, dnnl_goihw);
    } else {
        d[0] = n->cout, d[1] = n->cin, d[2] = n->kh, d[3] = n->kw;
        dnnl_memory_desc_init_by_tag(md, 4, d, dnnl_f32, dnnl_oihw);
    }
}

/* Reorders the bytes at `from` (layout from_md) into `to` (to_md) now. */
static int reorder_now(si_engine_t *e, const si_node_t *n, const dnnl_memory_desc_t *from_md,
                       void *from, const dnnl_memory_desc_t *to_md, void *to) {
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t r;
    TRY(e, dnnl_reorder_primitive_desc_create(&pd, from_md, e->eng, to_md, e->eng, NULL),
        "build the weights reorder", n);
    dnnl_status_t s = dnnl_primitive_create(&r, pd);
    dnnl_primitive_desc_destroy(pd);
    if (s != dnnl_success) return fail(e, "create the weights reorder", n, s);
    dnnl_memory_t src = NULL, dst = NULL;
    s = dnnl_memory_create(&src, from_md, e->eng, from);
    if (s == dnnl_success) s = dnnl_memory_create(&dst, to_md, e->eng, to);
    if (s == dnnl_success) {
        dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, src}, {DNNL_ARG_TO, dst}};
        /* One thread: a reorder is memory-bound, and OpenMP threads spinning
         * at its barriers cost far more than they save when the CPU is
         * shared or capped (a serverless function at 0.35 CPU). */
        int threads = omp_get_max_threads();
        omp_set_num_threads(1);
        s = dnnl_primitive_execute(r, e->stream, 2, args);
        if (s == dnnl_success) s = dnnl_stream_wait(e->stream);
        omp_set_num_threads(threads);
    }
    if (src) dnnl_memory_destroy(src);
    if (dst) dnnl_memory_destroy(dst);
    dnnl_primitive_destroy(r);
    return s == dnnl_success ? 0 : fail(e, "reorder the weights", n, s);
}

/* Weights for a primitive. Zero copy when the node's weights are already in
 * the layout the primitive wants (plain, or prepacked by convert); else one
 * reorder now into memory the engine owns. */
static int weights_mem(si_engine_t *e, int i, const si_node_t *n, const dnnl_memory_desc_t *want) {
    dnnl_memory_desc_t have, plain;
    plain_weights_md(n, &plain);
    if (n->w_kind == SI_WEIGHTS_BLOCKED) {
        layout_to_md(n->w_layout, &have);
        if (dnnl_memory_desc_get_size(&have) != n->w_bytes)
            return si_err_set(e->err, "node %s: packed weights do not match their layout", n->name);
    } else {
        have = plain;
    }
    if (have.ndims != want->ndims || memcmp(have.dims, want->dims, sizeof have.dims))
        return si_err_set(e->err, "node %s: weights of the wrong shape for this node", n->name);
    int src = mem_new(e, &have, -1, (void *)n->w); /* oneDNN only reads it */
    if (src < 0) return -1;
    if (dnnl_memory_desc_equal(&have, want)) return e->node_wmem[i] = src;
    size_t size = dnnl_memory_desc_get_size(want);
    if (grow((void **)&e->owned, &e->cap_owned, e->n_owned, sizeof *e->owned, e->err) < 0) return -1;
    void *p = aligned_alloc(64, (size + 63) & ~(size_t)63);
    if (!p) return si_err_set(e->err, "out of memory for weights of node %s", n->name);
    e->owned[e->n_owned++] = p;
    e->owned_bytes += size;
    int dst = mem_new(e, want, -1, p);
    if (dst < 0) return -1;
    int rc;
    if (n->w_kind == SI_WEIGHTS_BLOCKED) {
        /* Packed for another engine: another thread count, band height or
         * CPU. oneDNN reorders one blocked layout into another with its
         * reference kernel (53 ms for ResNet50's 2 MB layer4.0 conv1) but to
         * and from plain with its JIT one (2 ms each): go through plain. */
        size_t plain_size = dnnl_memory_desc_get_size(&plain);
        void *tmp = aligned_alloc(64, (plain_size + 63) & ~(size_t)63);
        if (!tmp) return si_err_set(e->err, "out of memory for weights of node %s", n->name);
        rc = reorder_now(e, n, &have, (void *)n->w, &plain, tmp);
        if (rc == 0) rc = reorder_now(e, n, &plain, tmp, want, p);
        free(tmp);
    } else {
        rc = reorder_now(e, n, &have, (void *)n->w, want, p);
    }
    if (rc < 0) return -1;
    e->reordered_bytes += dnnl_memory_desc_get_size(&have);
    /* The source is not read again: give a mapped model file's pages back. */
    si_model_drop(e->g, n->w, dnnl_memory_desc_get_size(&have));
    return e->node_wmem[i] = dst;
}

int si_engine_weights(const si_engine_t *e, int node, si_layout_t *layout, const void **data,
                      size_t *bytes) {
    if (node < e->seg.node_begin || node >= e->seg.node_end) return -1;
    if (e->node_wino[node] >= 0) {
        *data = si_wino_weights(e->steps[e->node_wino[node]].wino, bytes);
        return SI_WEIGHTS_WINO2;
    }
    if (e->node_wmem[node] < 0) return -1;
    dnnl_memory_t m = e->mems[e->node_wmem[node]].m;
    const dnnl_memory_desc_t *md = NULL;
    void *h = NULL;
    dnnl_memory_get_memory_desc(m, &md);
    dnnl_memory_get_data_handle(m, &h);
    *data = h;
    *bytes = dnnl_memory_desc_get_size(md);
    const si_node_t *n = &e->g->nodes[node];
    if (h == (void *)n->w && n->w_kind == SI_WEIGHTS_PLAIN) return SI_WEIGHTS_PLAIN;
    return md_to_layout(md, layout) < 0 ? -1 : SI_WEIGHTS_BLOCKED;
}

static int bias_mem(si_engine_t *e, const si_node_t *n, const dnnl_memory_desc_t *want) {
    return mem_new(e, want, -1, (void *)n->b);
}

/* Post-ops: optional sum (the residual), then the activation. */
static dnnl_primitive_attr_t attr_for(const si_node_t *n, int with_sum) {
    dnnl_primitive_attr_t a = attr_new();
    if (!a) return NULL;
    dnnl_post_ops_t po;
    if (dnnl_post_ops_create(&po) != dnnl_success) {
        dnnl_primitive_attr_destroy(a);
        return NULL;
    }
    if (with_sum) dnnl_post_ops_append_sum(po, 1.0f);
    if (n->act == SI_ACT_RELU) dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu, 0, 0);
    if (n->act == SI_ACT_CLIP)
        dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_clip, n->act_lo, n->act_hi);
    dnnl_primitive_attr_set_post_ops(a, po);
    dnnl_post_ops_destroy(po);
    return a;
}

/* Creates the pd for op_desc with attr and releases attr. */
static int make_pd(si_engine_t *e, dnnl_primitive_desc_t *pd, const void *op_desc,
                   dnnl_primitive_attr_t attr, const si_node_t *n) {
    if (!attr) return si_err_set(e->err, "out of memory");
    dnnl_status_t s = dnnl_primitive_desc_create(pd, op_desc, attr, e->eng, NULL);
    dnnl_primitive_attr_destroy(attr);
    if (s != dnnl_success) return fail(e, "build a primitive", n, s);
    return 0;
}

/* Gives back the buffers of values whose last reader is node i, and of the
 * node's crops. */
static void release_dead(si_engine_t *e, const si_node_t *n, int i) {
    for (int k = 0; k < e->n_tmp; k++) e->bufs[e->mems[e->tmp[k]].buf].in_use = 0;
    e->n_tmp = 0;
    int vs[2] = {n->in, n->in2};
    for (int k = 0; k < 2; k++) {
        int v = vs[k];
        if (v < 0 || e->last_use[v] != i) continue;
        int mi = e->val_mem[v], ci = e->val_conv[v];
        if (mi >= 0 && e->mems[mi].owns) e->bufs[e->mems[mi].buf].in_use = 0;
        if (ci >= 0 && e->mems[ci].owns) e->bufs[e->mems[ci].buf].in_use = 0;
    }
}

/* Registers the dst memory of node n from pd: a pool buffer, or (residual
 * sum) the residual operand's own buffer when it dies here. */
static int dst_mem_md(si_engine_t *e, const si_node_t *n, int i, const dnnl_memory_desc_t *md) {
    int mi;
    if (n->op == SI_OP_CONV && n->in2 >= 0) {
        int r = e->val_mem[n->in2];
        int same_rows = e->row_begin[n->in2] == e->row_begin[n->out] &&
                        e->row_end[n->in2] == e->row_end[n->out];
        /* In place: the conv accumulates onto the residual. Allowed when the
         * residual is a pool buffer holding the same rows in the same layout,
         * read by nobody after. */
        int dies = e->last_use[n->in2] == i && e->mems[r].owns;
        if (same_rows && dies && dnnl_memory_desc_equal(mem_md(e, r), md)) {
            mi = mem_new(e, md, e->mems[r].buf, NULL);
            if (mi >= 0) e->mems[r].owns = 0; /* the buffer now belongs to the output */
        } else if (dies && (mi = rows_view(e, r, e->row_begin[n->in2], e->row_begin[n->out],
                                            e->row_end[n->out], md)) != -2) {
            /* A band: the output's rows are a slice of the residual's. */
            if (mi >= 0) e->mems[mi].owns = 1, e->mems[r].owns = 0;
        } else {
            /* One copy: from a view of the rows where they lie so, else a crop. */
            int src = value_rows_as(e, n->in2, e->row_begin[n->out], e->row_end[n->out], md);
            mi = src < 0 ? -1 : reorder_to(e, src, md, -2);
        }
    } else {
        int b = buf_take(e, dnnl_memory_desc_get_size(md));
        mi = b < 0 ? -1 : mem_new(e, md, b, NULL);
    }
    if (mi >= 0) e->val_mem[n->out] = mi;
    return mi;
}

static int dst_mem(si_engine_t *e, const si_node_t *n, int i, dnnl_primitive_desc_t pd) {
    return dst_mem_md(e, n, i, dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0));
}

/* The step of primitive pd (node n, the i-th) reading memory a, or a and b
 * (b >= 0: a binary primitive's two sources), and writing a fresh output
 * memory for n. pd is consumed, on failure too. */
static int prim_add_to_out(si_engine_t *e, dnnl_primitive_desc_t pd, int a, int b,
                           const si_node_t *n, int i) {
    int d_m = dst_mem(e, n, i, pd);
    if (d_m < 0) {
        dnnl_primitive_desc_destroy(pd);
        return -1;
    }
    dnnl_exec_arg_t args[MAX_ARGS] = {{DNNL_ARG_SRC_0, e->mems[a].m}}; /* = DNNL_ARG_SRC */
    int k = 1;
    if (b >= 0) args[k++] = (dnnl_exec_arg_t){DNNL_ARG_SRC_1, e->mems[b].m};
    args[k++] = (dnnl_exec_arg_t){DNNL_ARG_DST, e->mems[d_m].m};
    return prim_add(e, pd, args, k, n);
}

/* The step of a conv or dense primitive pd reading memory s_m (-1: failed
 * already): its weights, bias and output memory, then the primitive.
 * Takes ownership of pd. */
static int add_weighted(si_engine_t *e, const si_node_t *n, int i, dnnl_primitive_desc_t pd,
                        int s_m) {
    int w_m = s_m < 0 ? -1 : weights_mem(e, i, n, dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0));
    int b_m = w_m < 0 ? -1 : bias_mem(e, n, dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 1));
    int d_m = b_m < 0 ? -1 : dst_mem(e, n, i, pd);
    if (d_m < 0) {
        dnnl_primitive_desc_destroy(pd);
        return -1;
    }
    dnnl_exec_arg_t args[MAX_ARGS] = {{DNNL_ARG_SRC, e->mems[s_m].m},
                                      {DNNL_ARG_WEIGHTS, e->mems[w_m].m},
                                      {DNNL_ARG_BIAS, e->mems[b_m].m},
                                      {DNNL_ARG_DST, e->mems[d_m].m}};
    return prim_add(e, pd, args, 4, n);
}

/* Input rows [*ia, *ib) a windowed node (conv, pool) reads for its output
 * band, and the top/bottom padding that makes the output exactly that band:
 * the true padding at the image border, zero (halo rows instead) inside. */
static void band_pads(const si_engine_t *e, const si_node_t *n, int *ia, int *ib, int *pt,
                      int *pb) {
    int oa = e->row_begin[n->out], ob = e->row_end[n->out];
    si_node_in_rows(e->g, n, oa, ob, ia, ib);
    *pt = n->pad_t - (oa * n->sh - *ia);
    *pb = (ob - oa - 1) * n->sh + n->dh * (n->kh - 1) + 1 - (*ib - *ia) - *pt;
    /* A strided window skips the last rows of its input when they do not
     * start a window (ResNet's 1x1 stride-2 shortcuts read rows 0, 2, .. 12
     * of 14). oneDNN sizes outputs with floor division, so such rows can stay:
     * no crop (a copy), and the 1x1 kernels, which refuse a height that is not
     * a multiple of the stride, stay eligible. */
    int extra = e->row_end[n->in] - *ib;
    if (*pb == 0 && extra > 0 && extra < n->sh) *ib += extra;
}

/* SPLITINFER_WINO (engine.h): 0 never, 1 always, -1 auto. Read per engine:
 * tests and comparisons set it in-process. */
static int wino_mode(void) {
    const char *v = getenv("SPLITINFER_WINO");
    if (v && !strcmp(v, "off")) return 0;
    if (v && !strcmp(v, "on")) return 1;
    return -1;
}

/* Whether oneDNN's direct convolutions here are the AVX2 kernels that
 * wino.c's cost model describes. With AVX-512 they use 16-wide vectors and
 * nChw16c, so they do about twice the work per cycle and the neighbours of
 * an (AVX2, nChw8c) Winograd conv would need a reorder each side: on a
 * 2-vCPU Xeon with AVX-512, ResNet50 ran 0.85-0.94x the time without it
 * (one thread, interleaved runs). */
static int direct_is_avx2(void) {
    /* ISAs are bit sets, each containing the ones below (avx2_vnni is 0x407). */
    unsigned isa = (unsigned)dnnl_get_effective_cpu_isa(), avx512 = (unsigned)dnnl_cpu_isa_avx512_core;
    return (isa & avx512) != avx512;
}

/* A 3x3 stride-1 convolution by Winograd (wino.h) where its cost model says
 * it beats oneDNN's direct kernel: 0.4-0.65x the time on ResNet50's 3x3
 * layers on AVX2, where oneDNN 2.6 has no Winograd of its own. Both tensors
 * in nChw8c, the layout the neighbouring oneDNN convolutions use on AVX2, so
 * no reorders. Not chosen where oneDNN runs AVX-512 (direct_is_avx2).
 * Returns 1 when compiled, 0 when the node is not for Winograd. */
static int compile_wino(si_engine_t *e, const si_node_t *n, int i, int ia, int ib, int pt, int pb) {
    int stored = n->w_kind == SI_WEIGHTS_WINO2; /* transformed by convert: Winograd it is */
    int mode = stored ? 1 : wino_mode();
    if (n->kh != 3 || n->kw != 3 || n->sh != 1 || n->sw != 1 || n->dh != 1 || n->dw != 1 ||
        n->group != 1 || n->cin % 8 || n->cout % 8 || n->w_kind == SI_WEIGHTS_BLOCKED || mode == 0 ||
        (mode < 0 && !direct_is_avx2()))
        return stored ? si_err_set(e->err, "node %s: Winograd weights for a conv that is not "
                                   "3x3 stride 1", n->name) : 0;
    const si_value_t *x = &e->g->values[n->in];
    si_wino_desc_t d = {.N = e->batch, .C = n->cin, .H = ib - ia, .W = x->dims[3], .K = n->cout,
                        .pad_t = pt, .pad_b = pb, .pad_l = n->pad_l, .pad_r = n->pad_r,
                        .w = n->w, .b = n->b, .with_sum = n->in2 >= 0,
                        .act = n->act == SI_ACT_RELU ? SI_WINO_ACT_RELU
                               : n->act == SI_ACT_CLIP ? SI_WINO_ACT_CLIP : SI_WINO_ACT_NONE,
                        .lo = n->act_lo, .hi = n->act_hi,
                        /* F(2x2) only: F(4x4) is ~4 ms faster over ResNet50, but its
                         * rounding (1.5e-5 of max|out|) depends on where a tile starts,
                         * so bands would no longer stitch to the whole within 1e-5. */
                        .tile = 2, .u = stored ? n->w : NULL};
    if (mode < 0 && !si_wino_recommended(&d)) return 0;
    dnnl_memory_desc_t src, dst;
    rows_md(e, n->in, ia, ib, dnnl_nChw8c, &src);
    rows_md(e, n->out, e->row_begin[n->out], e->row_end[n->out], dnnl_nChw8c, &dst);
    si_wino_t *w = si_wino_create(&d, e->err);
    if (!w) return si_err_prefix(e->err, "node %s", n->name);
    /* Plain weights are not read again: give a mapped file's pages back. */
    if (!stored) si_model_drop(e->g, n->w, (size_t)n->cout * (size_t)n->cin * 9 * sizeof(float));
    int s_m = value_rows_as(e, n->in, ia, ib, &src);
    int d_m = s_m < 0 ? -1 : dst_mem_md(e, n, i, &dst);
    if (d_m < 0 || step_add(e, NULL, NULL, 0) < 0) {
        si_wino_free(w);
        return -1;
    }
    step_t *st = &e->steps[e->n_steps - 1];
    st->wino = w, st->src = e->mems[s_m].m, st->dst = e->mems[d_m].m;
    e->node_wino[i] = e->n_steps - 1;
    size_t ss = si_wino_scratch_bytes(w);
    if (ss > e->scratch_size) e->scratch_size = ss;
    e->wino_bytes += si_wino_bytes(w);
    return 1;
}

static int compile_conv(si_engine_t *e, const si_node_t *n, int i) {
    dnnl_memory_desc_t src, w, b, dst;
    int ia, ib, pt, pb;
    band_pads(e, n, &ia, &ib, &pt, &pb);
    int wr = compile_wino(e, n, i, ia, ib, pt, pb);
    if (wr != 0) return wr < 0 ? -1 : 0;
    rows_md(e, n->in, ia, ib, dnnl_format_tag_any, &src);
    any_md(e, n->out, &dst);
    dnnl_dims_t wd;
    if (n->group > 1) {
        wd[0] = n->group, wd[1] = n->cout / n->group, wd[2] = n->cin, wd[3] = n->kh, wd[4] = n->kw;
        dnnl_memory_desc_init_by_tag(&w, 5, wd, dnnl_f32, dnnl_format_tag_any);
    } else {
        wd[0] = n->cout, wd[1] = n->cin, wd[2] = n->kh, wd[3] = n->kw;
        dnnl_memory_desc_init_by_tag(&w, 4, wd, dnnl_f32, dnnl_format_tag_any);
    }
    dnnl_dims_t bd = {n->cout};
    dnnl_memory_desc_init_by_tag(&b, 1, bd, dnnl_f32, dnnl_x);
    dnnl_dims_t st = {n->sh, n->sw}, dl = {n->dh - 1, n->dw - 1};
    dnnl_dims_t pl = {pt, n->pad_l}, pr = {pb, n->pad_r};
    dnnl_convolution_desc_t cd;
    TRY(e, dnnl_dilated_convolution_forward_desc_init(&cd, dnnl_forward_inference,
                                                      dnnl_convolution_direct, &src, &w, &b, &dst,
                                                      st, dl, pl, pr),
        "describe the convolution", n);
    dnnl_primitive_desc_t pd;
    if (make_pd(e, &pd, &cd, attr_for(n, n->in2 >= 0), n) < 0) return -1;
    return add_weighted(e, n, i, pd, value_rows_as(e, n->in, ia, ib,
                                                   dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0)));
}

static int compile_dense(si_engine_t *e, const si_node_t *n, int i) {
    dnnl_memory_desc_t src, w, b, dst;
    any_md(e, n->in, &src);
    any_md(e, n->out, &dst);
    dnnl_dims_t wd = {n->cout, n->cin}, bd = {n->cout};
    dnnl_memory_desc_init_by_tag(&w, 2, wd, dnnl_f32, dnnl_format_tag_any);
    dnnl_memory_desc_init_by_tag(&b, 1, bd, dnnl_f32, dnnl_x);
    dnnl_inner_product_desc_t ipd;
    TRY(e, dnnl_inner_product_forward_desc_init(&ipd, dnnl_forward_inference, &src, &w, &b, &dst),
        "describe the inner product", n);
    dnnl_primitive_desc_t pd;
    if (make_pd(e, &pd, &ipd, attr_for(n, 0), n) < 0) return -1;
    return add_weighted(e, n, i, pd,
                        value_as(e, n->in, dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0)));
}

static int compile_pool(si_engine_t *e, const si_node_t *n, int i) {
    dnnl_memory_desc_t dst;
    any_md(e, n->out, &dst);
    int ia, ib, pt, pb;
    band_pads(e, n, &ia, &ib, &pt, &pb);
    int s_m = e->val_mem[n->in];
    if (ia != e->row_begin[n->in] || ib != e->row_end[n->in]) {
        dnnl_memory_desc_t plain;
        rows_md(e, n->in, ia, ib, dnnl_nchw, &plain);
        s_m = value_rows_as(e, n->in, ia, ib, &plain);
        if (s_m < 0) return -1;
    }
    dnnl_alg_kind_t alg = n->op == SI_OP_POOL_MAX ? dnnl_pooling_max
                          : n->count_include_pad ? dnnl_pooling_avg_include_padding
                                                 : dnnl_pooling_avg_exclude_padding;
    dnnl_dims_t st = {n->sh, n->sw}, k = {n->kh, n->kw}, dl = {n->dh - 1, n->dw - 1};
    dnnl_dims_t pl = {pt, n->pad_l}, pr = {pb, n->pad_r};
    dnnl_pooling_v2_desc_t pdsc;
    TRY(e, dnnl_pooling_v2_forward_desc_init(&pdsc, dnnl_forward_inference, alg, mem_md(e, s_m),
                                             &dst, st, k, dl, pl, pr),
        "describe the pooling", n);
    dnnl_primitive_desc_t pd;
    if (make_pd(e, &pd, &pdsc, attr_new(), n) < 0) return -1;
    return prim_add_to_out(e, pd, s_m, -1, n, i);
}

/* The memory of value v cropped to node n's output rows (readers that work
 * row for row: activation, add), in v's own layout. */
static int same_rows(si_engine_t *e, int v, const si_node_t *n) {
    int mi = e->val_mem[v];
    if (e->row_begin[v] == e->row_begin[n->out] && e->row_end[v] == e->row_end[n->out]) return mi;
    dnnl_memory_desc_t plain;
    rows_md(e, v, e->row_begin[n->out], e->row_end[n->out], dnnl_nchw, &plain);
    return value_rows_as(e, v, e->row_begin[n->out], e->row_end[n->out], &plain);
}

static int compile_eltwise(si_engine_t *e, const si_node_t *n, int i) {
    int s_m = same_rows(e, n->in, n);
    if (s_m < 0) return -1;
    dnnl_alg_kind_t alg = n->act == SI_ACT_CLIP ? dnnl_eltwise_clip : dnnl_eltwise_relu;
    float lo = n->act == SI_ACT_CLIP ? n->act_lo : 0, hi = n->act == SI_ACT_CLIP ? n->act_hi : 0;
    dnnl_eltwise_desc_t ed;
    TRY(e, dnnl_eltwise_forward_desc_init(&ed, dnnl_forward_inference, alg, mem_md(e, s_m), lo, hi),
        "describe the activation", n);
    dnnl_primitive_desc_t pd;
    if (make_pd(e, &pd, &ed, attr_new(), n) < 0) return -1;
    return prim_add_to_out(e, pd, s_m, -1, n, i);
}

static int compile_add(si_engine_t *e, const si_node_t *n, int i) {
    int a = same_rows(e, n->in, n);
    int b = a < 0 ? -1 : same_rows(e, n->in2, n);
    if (b >= 0 && !dnnl_memory_desc_equal(mem_md(e, a), mem_md(e, b))) {
        b = reorder_to(e, b, mem_md(e, a), -2); /* same layout: the fast binary kernel */
        if (b >= 0) e->tmp[e->n_tmp++] = b;
    }
    if (b < 0) return -1;
    dnnl_memory_desc_t dst;
    any_md(e, n->out, &dst);
    dnnl_binary_desc_t bd;
    TRY(e, dnnl_binary_desc_init(&bd, dnnl_binary_add, mem_md(e, a), mem_md(e, b), &dst),
        "describe the add", n);
    dnnl_primitive_desc_t pd;
    if (make_pd(e, &pd, &bd, attr_for(n, 0), n) < 0) return -1;
    return prim_add_to_out(e, pd, a, b, n, i);
}

/* Flatten: reorder to plain NCHW, then view the same bytes as NC. */
static int compile_flatten(si_engine_t *e, const si_node_t *n) {
    const si_value_t *x = &e->g->values[n->in];
    dnnl_memory_desc_t plain4, flat;
    plain_md(e, n->in, &plain4);
    plain_md(e, n->out, &flat);
    int src = e->val_mem[n->in];
    int b = buf_take(e, dnnl_memory_desc_get_size(&plain4));
    if (b < 0) return -1;
    int mid = x->ndim == 4 ? reorder_to(e, src, &plain4, b) : reorder_to(e, src, &flat, b);
    if (mid < 0) return -1;
    int out = mem_new(e, &flat, b, NULL);
    if (out < 0) return -1;
    e->mems[mid].owns = 0; /* the buffer belongs to the NC view */
    e->val_mem[n->out] = out;
    return 0;
}

static int compile_node(si_engine_t *e, int i) {
    const si_node_t *n = &e->g->nodes[i];
    if ((n->op == SI_OP_CONV || n->op == SI_OP_DENSE) && (!n->w || !n->b))
        return si_err_set(e->err, "node %s: weights are not in this model file (it holds another "
                          "segment)", n->name);
    int r;
    switch (n->op) {
    case SI_OP_CONV: r = compile_conv(e, n, i); break;
    case SI_OP_DENSE: r = compile_dense(e, n, i); break;
    case SI_OP_POOL_MAX:
    case SI_OP_POOL_AVG: r = compile_pool(e, n, i); break;
    case SI_OP_ACT: r = compile_eltwise(e, n, i); break;
    case SI_OP_ADD: r = compile_add(e, n, i); break;
    case SI_OP_FLATTEN: r = compile_flatten(e, n); break;
    default: r = si_err_set(e->err, "node %s: unknown op", n->name);
    }
    if (r < 0) return -1;
    release_dead(e, n, i);
    return 0;
}

/* Allocates the planned buffers and the scratchpad, and binds handles. */
static int bind_buffers(si_engine_t *e) {
    for (int i = 0; i < e->n_bufs; i++) {
        size_t sz = (e->bufs[i].size + 63) & ~(size_t)63;
        e->bufs[i].ptr = aligned_alloc(64, sz ? sz : 64);
        if (!e->bufs[i].ptr) return si_err_set(e->err, "out of memory for activations");
        memset(e->bufs[i].ptr, 0, sz); /* blocked layouts rely on zeroed padding */
    }
    for (int i = 0; i < e->n_mems; i++) {
        int b = e->mems[i].buf;
        if (b >= 0) dnnl_memory_set_data_handle(e->mems[i].m, (char *)e->bufs[b].ptr + e->mems[i].off);
    }
    if (e->scratch_size) {
        e->scratch = aligned_alloc(64, (e->scratch_size + 63) & ~(size_t)63);
        if (!e->scratch) return si_err_set(e->err, "out of memory for the scratchpad");
        dnnl_memory_desc_t md;
        dnnl_dims_t d = {(dnnl_dim_t)e->scratch_size};
        dnnl_memory_desc_init_by_tag(&md, 1, d, dnnl_u8, dnnl_x);
        if (dnnl_memory_create(&e->scratch_mem, &md, e->eng, e->scratch) != dnnl_success)
            return si_err_set(e->err, "oneDNN could not create the scratchpad");
        for (int s = 0; s < e->n_steps; s++)
            for (int a = 0; a < e->steps[s].nargs; a++)
                if (e->steps[s].args[a].arg == DNNL_ARG_SCRATCHPAD)
                    e->steps[s].args[a].memory = e->scratch_mem;
    }
    return 0;
}

si_engine_t *si_engine_create(const si_graph_t *g, const si_segment_t *seg, int batch,
                              si_err_t *err) {
    return si_engine_create_band(g, seg, NULL, batch, err);
}

si_engine_t *si_engine_create_band(const si_graph_t *g, const si_segment_t *seg,
                                   const si_band_t *band, int batch, si_err_t *err) {
    return si_engine_create_io(g, seg, band, batch, SI_IO_NCHW, SI_IO_NCHW, err);
}

static dnnl_format_tag_t io_tag(si_io_layout_t l) { return l == SI_IO_NHWC ? dnnl_nhwc : dnnl_nchw; }

si_engine_t *si_engine_create_io(const si_graph_t *g, const si_segment_t *seg,
                                 const si_band_t *band, int batch, si_io_layout_t in_layout,
                                 si_io_layout_t out_layout, si_err_t *err) {
    if (batch < 1 || batch > 4096) {
        si_err_set(err, "batch must be in 1..4096");
        return NULL;
    }
    if ((in_layout != SI_IO_NCHW && in_layout != SI_IO_NHWC) ||
        (out_layout != SI_IO_NCHW && out_layout != SI_IO_NHWC)) {
        si_err_set(err, "unknown tensor layout %d / %d", (int)in_layout, (int)out_layout);
        return NULL;
    }
    si_engine_t *e = calloc(1, sizeof *e);
    if (!e) {
        si_err_set(err, "out of memory");
        return NULL;
    }
    e->g = g, e->seg = *seg, e->batch = batch, e->err = err;
    e->val_mem = malloc((size_t)g->n_values * sizeof(int));
    e->val_conv = malloc((size_t)g->n_values * sizeof(int));
    e->last_use = malloc((size_t)g->n_values * sizeof(int));
    e->row_begin = malloc((size_t)g->n_values * sizeof(int));
    e->row_end = malloc((size_t)g->n_values * sizeof(int));
    e->node_wmem = malloc((size_t)g->n_nodes * sizeof(int));
    e->node_wino = malloc((size_t)g->n_nodes * sizeof(int));
    if (!e->val_mem || !e->val_conv || !e->last_use || !e->row_begin || !e->row_end ||
        !e->node_wmem || !e->node_wino) {
        si_err_set(err, "out of memory");
        goto fail;
    }
    for (int i = 0; i < g->n_nodes; i++) e->node_wmem[i] = e->node_wino[i] = -1;
    for (int v = 0; v < g->n_values; v++) {
        e->val_mem[v] = e->val_conv[v] = e->last_use[v] = -1;
        const si_value_t *val = &g->values[v];
        e->row_begin[v] = band ? band->row_begin[v] : 0;
        e->row_end[v] = band ? band->row_end[v] : val->ndim == 4 ? val->dims[2] : 1;
    }
    for (int i = seg->node_begin; i < seg->node_end; i++) {
        e->last_use[g->nodes[i].in] = i;
        if (g->nodes[i].in2 >= 0) e->last_use[g->nodes[i].in2] = i;
    }
    e->last_use[seg->out] = seg->node_end; /* read by the final copy-out */
    dnnl_status_t s = dnnl_engine_create(&e->eng, dnnl_cpu, 0);
    if (s == dnnl_success) s = dnnl_stream_create(&e->stream, e->eng, dnnl_stream_default_flags);
    if (s != dnnl_success) {
        fail(e, "create a CPU engine", NULL, s);
        goto fail;
    }
    dnnl_memory_desc_t md;
    rows_md(e, seg->in, e->row_begin[seg->in], e->row_end[seg->in], io_tag(in_layout), &md);
    e->user_in = mem_new(e, &md, -1, NULL);
    if (e->user_in < 0) goto fail;
    e->mems[e->user_in].user_in = 1;
    e->val_mem[seg->in] = e->user_in;
    e->in_ndim = g->values[seg->in].ndim;
    memcpy(e->in_dims, g->values[seg->in].dims, sizeof e->in_dims);
    e->in_dims[0] = batch;
    if (e->in_ndim == 4) e->in_dims[2] = e->row_end[seg->in] - e->row_begin[seg->in];
    for (int i = seg->node_begin; i < seg->node_end; i++)
        if (compile_node(e, i) < 0) goto fail;
    rows_md(e, seg->out, e->row_begin[seg->out], e->row_end[seg->out], io_tag(out_layout), &md);
    e->user_out = mem_new(e, &md, -1, NULL);
    if (e->user_out < 0) goto fail;
    dnnl_primitive_desc_t pd;
    dnnl_primitive_attr_t a = attr_new();
    s = dnnl_reorder_primitive_desc_create(&pd, mem_md(e, e->val_mem[seg->out]), e->eng, &md,
                                           e->eng, a);
    dnnl_primitive_attr_destroy(a);
    if (s != dnnl_success) {
        fail(e, "build the output reorder", NULL, s);
        goto fail;
    }
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_FROM, e->mems[e->val_mem[seg->out]].m},
                               {DNNL_ARG_TO, e->mems[e->user_out].m}};
    if (prim_add(e, pd, args, 2, NULL) < 0) goto fail;
    /* The copy-out is the last step; si_engine_run_view can do without it
     * when the output lies in a buffer of ours exactly as the caller wants. */
    const mem_t *om = &e->mems[e->val_mem[seg->out]];
    e->out_direct = om->buf >= 0 && dnnl_memory_desc_equal(mem_md(e, e->val_mem[seg->out]), &md);
    e->out_ndim = g->values[seg->out].ndim;
    memcpy(e->out_dims, g->values[seg->out].dims, sizeof e->out_dims);
    e->out_dims[0] = batch;
    if (e->out_ndim == 4) e->out_dims[2] = e->row_end[seg->out] - e->row_begin[seg->out];
    if (bind_buffers(e) < 0) goto fail;
    e->err = NULL;
    return e;
fail:
    si_engine_free(e);
    return NULL;
}

void si_engine_free(si_engine_t *e) {
    if (!e) return;
    for (int i = 0; i < e->n_steps; i++) {
        if (e->steps[i].prim) dnnl_primitive_destroy(e->steps[i].prim);
        si_wino_free(e->steps[i].wino);
    }
    for (int i = 0; i < e->n_mems; i++) dnnl_memory_destroy(e->mems[i].m);
    for (int i = 0; i < e->n_bufs; i++) free(e->bufs[i].ptr);
    for (int i = 0; i < e->n_owned; i++) free(e->owned[i]);
    if (e->scratch_mem) dnnl_memory_destroy(e->scratch_mem);
    free(e->scratch);
    free(e->view_out);
    if (e->stream) dnnl_stream_destroy(e->stream);
    if (e->eng) dnnl_engine_destroy(e->eng);
    free(e->steps), free(e->mems), free(e->bufs), free(e->owned);
    free(e->val_mem), free(e->val_conv), free(e->last_use), free(e->row_begin), free(e->row_end);
    free(e->node_wmem), free(e->node_wino);
    free(e);
}

int si_engine_in_dims(const si_engine_t *e, int dims[4]) {
    memcpy(dims, e->in_dims, sizeof e->in_dims);
    return e->in_ndim;
}

int si_engine_out_dims(const si_engine_t *e, int dims[4]) {
    memcpy(dims, e->out_dims, sizeof e->out_dims);
    return e->out_ndim;
}

static size_t numel(const int *d, int n) {
    size_t k = 1;
    for (int i = 0; i < n; i++) k *= (size_t)d[i];
    return k;
}

size_t si_engine_in_numel(const si_engine_t *e) { return numel(e->in_dims, e->in_ndim); }
size_t si_engine_out_numel(const si_engine_t *e) { return numel(e->out_dims, e->out_ndim); }

size_t si_engine_bytes(const si_engine_t *e) {
    size_t b = e->owned_bytes + e->scratch_size + e->wino_bytes;
    for (int i = 0; i < e->n_bufs; i++) b += e->bufs[i].size;
    return b;
}

/* Runs steps [0, n) on input in (only read). */
static int run_steps(si_engine_t *e, const float *in, int n, si_err_t *err) {
    dnnl_memory_set_data_handle(e->mems[e->user_in].m, (void *)in);
    for (int i = 0; i < e->n_in_views; i++) {
        mem_t *v = &e->mems[e->in_views[i]];
        dnnl_memory_set_data_handle(v->m, (char *)in + v->off);
    }
    for (int i = 0; i < n; i++) {
        step_t *st = &e->steps[i];
        if (st->wino) {
            void *src = NULL, *dst = NULL;
            dnnl_memory_get_data_handle(st->src, &src);
            dnnl_memory_get_data_handle(st->dst, &dst);
            if (si_wino_run(st->wino, src, dst, e->scratch) < 0)
                return si_err_set(err, "Winograd convolution failed at step %d", i);
            continue;
        }
        dnnl_status_t s = dnnl_primitive_execute(st->prim, e->stream, st->nargs, st->args);
        if (s != dnnl_success) return si_err_set(err, "oneDNN failed at step %d (status %d)", i, (int)s);
    }
    dnnl_status_t s = dnnl_stream_wait(e->stream);
    if (s != dnnl_success) return si_err_set(err, "oneDNN stream failed (status %d)", (int)s);
    return 0;
}

int si_engine_run(si_engine_t *e, const float *in, float *out, si_err_t *err) {
    dnnl_memory_set_data_handle(e->mems[e->user_out].m, out);
    return run_steps(e, in, e->n_steps, err);
}

int si_engine_run_view(si_engine_t *e, const float *in, const float **out, si_err_t *err) {
    if (e->out_direct) {
        if (run_steps(e, in, e->n_steps - 1, err) < 0) return -1;
        void *h = NULL;
        dnnl_memory_get_data_handle(e->mems[e->val_mem[e->seg.out]].m, &h);
        *out = h;
        return 0;
    }
    if (!e->view_out && !(e->view_out = malloc(si_engine_out_numel(e) * sizeof(float))))
        return si_err_set(err, "out of memory for the output");
    if (si_engine_run(e, in, e->view_out, err) < 0) return -1;
    *out = e->view_out;
    return 0;
}

size_t si_engine_copy_bytes(const si_engine_t *e) { return e->copy_bytes; }
int si_engine_output_direct(const si_engine_t *e) { return e->out_direct; }

size_t si_engine_reordered_bytes(const si_engine_t *e) { return e->reordered_bytes; }

int si_engine_repoint(si_engine_t *e, const void *from, size_t len, void *to) {
    const char *lo = from;
    int n = 0;
    /* Activations, the caller's tensors and the engine's own copies lie
     * elsewhere: only memories created on the graph's arrays are in range. */
    for (int i = 0; i < e->n_mems; i++) {
        void *h = NULL;
        if (e->mems[i].buf >= 0 || e->mems[i].user_in || i == e->user_out ||
            dnnl_memory_get_data_handle(e->mems[i].m, &h) != dnnl_success)
            continue;
        const char *c = h;
        if (c < lo || c >= lo + len) continue;
        dnnl_memory_set_data_handle(e->mems[i].m, (char *)to + (c - lo));
        n++;
    }
    for (int i = 0; i < e->n_steps; i++)
        if (e->steps[i].wino) n += si_wino_repoint(e->steps[i].wino, from, len, to);
    return n;
}

int si_engine_pack_weights(const si_engine_t *e, si_graph_t *g, si_layout_t *layouts) {
    int packed = 0;
    for (int i = e->seg.node_begin; i < e->seg.node_end; i++) {
        const void *data;
        size_t bytes;
        int kind = si_engine_weights(e, i, &layouts[i], &data, &bytes);
        if (kind <= SI_WEIGHTS_PLAIN) continue;
        si_node_t *n = &g->nodes[i];
        n->w = data, n->w_kind = kind, n->w_bytes = bytes;
        n->w_layout = kind == SI_WEIGHTS_BLOCKED ? &layouts[i] : NULL;
        packed++;
    }
    return packed;
}
