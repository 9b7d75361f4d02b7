/* modelfile.c - .sfm packing and mapping. See modelfile.h. */
#include "modelfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hugemem.h"
#include "onnx.h"

typedef struct sfm_header {
    char magic[8];
    uint32_t version;
    uint32_t n_nodes, n_values, output;
    uint32_t cut_begin, cut_end; /* weights present for nodes of this cut range */
    uint64_t values_off, nodes_off, weights_off, file_len;
} sfm_header_t;

typedef struct sfm_value {
    int32_t ndim, dims[4];
} sfm_value_t;

typedef struct sfm_node {
    int32_t op, in, in2, out;
    int32_t kh, kw, sh, sw, dh, dw, pad_t, pad_l, pad_b, pad_r;
    int32_t group, count_include_pad, act, cout, cin;
    float act_lo, act_hi;
    char name[SI_MAX_NAME];
    int32_t pad0_;        /* explicit: the file has no implicit padding bytes */
    int64_t w_off, b_off; /* bytes from the start of the file, -1: left out */
    int64_t w_bytes;      /* bytes at w_off */
    int32_t packed;       /* SI_WEIGHTS_*: plain, blocked in `layout`, Winograd */
    int32_t pad_;
    si_layout_t layout;
} sfm_node_t;

_Static_assert(sizeof(sfm_header_t) == 64, "header is 64 bytes");
_Static_assert(sizeof(sfm_node_t) == 432, "node records have no implicit padding");

static uint64_t align64(uint64_t x) { return (x + 63) & ~(uint64_t)63; }

static size_t weight_floats(const si_node_t *n) {
    return (size_t)n->cout * (size_t)n->cin * (size_t)(n->kh * n->kw);
}

static size_t weight_bytes(const si_node_t *n) {
    return n->w_kind != SI_WEIGHTS_PLAIN ? n->w_bytes : weight_floats(n) * sizeof(float);
}

/* A layout read from a file: sane enough to hand to oneDNN, which checks the
 * rest (the engine also compares dims and size with the node's). */
static int layout_ok(const si_layout_t *l) {
    if (l->ndims < 2 || l->ndims > 5 || l->inner_nblks < 0 || l->inner_nblks > SI_LAYOUT_MAX_DIMS)
        return 0;
    for (int i = 0; i < l->ndims; i++)
        if (l->dims[i] < 1 || l->padded_dims[i] < l->dims[i] || l->padded_dims[i] > 1 << 20 ||
            l->strides[i] < 0 || l->strides[i] > (int64_t)1 << 40)
            return 0;
    for (int i = 0; i < l->inner_nblks; i++)
        if (l->inner_blks[i] < 1 || l->inner_blks[i] > 64 || l->inner_idxs[i] < 0 ||
            l->inner_idxs[i] >= l->ndims)
            return 0;
    return 1;
}

static int has_weights(const si_node_t *n) { return n->op == SI_OP_CONV || n->op == SI_OP_DENSE; }

int si_sfm_save(const si_graph_t *g, const si_segment_t *seg, const char *path, si_err_t *err) {
    sfm_header_t h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, SI_SFM_MAGIC, 8);
    h.version = SI_SFM_VERSION;
    h.n_nodes = (uint32_t)g->n_nodes, h.n_values = (uint32_t)g->n_values;
    h.output = (uint32_t)g->output;
    int nb = seg ? seg->node_begin : 0, ne = seg ? seg->node_end : g->n_nodes;
    h.cut_begin = seg ? (uint32_t)seg->cut_begin : 0;
    h.cut_end = seg ? (uint32_t)seg->cut_end : (uint32_t)(g->n_cuts - 1);
    h.values_off = sizeof h;
    h.nodes_off = h.values_off + (uint64_t)g->n_values * sizeof(sfm_value_t);
    h.weights_off = align64(h.nodes_off + (uint64_t)g->n_nodes * sizeof(sfm_node_t));

    sfm_node_t *nodes = calloc((size_t)g->n_nodes, sizeof *nodes);
    sfm_value_t *vals = calloc((size_t)g->n_values, sizeof *vals);
    FILE *f = NULL;
    if (!nodes || !vals) {
        si_err_set(err, "out of memory");
        goto fail;
    }
    uint64_t off = h.weights_off;
    for (int i = 0; i < g->n_nodes; i++) {
        const si_node_t *n = &g->nodes[i];
        sfm_node_t *r = &nodes[i];
        memset(r, 0, sizeof *r);
        *r = (sfm_node_t){n->op, n->in, n->in2, n->out, n->kh, n->kw, n->sh, n->sw, n->dh, n->dw,
                          n->pad_t, n->pad_l, n->pad_b, n->pad_r, n->group, n->count_include_pad,
                          n->act, n->cout, n->cin, n->act_lo, n->act_hi, {0}, 0, -1, -1, 0, 0, 0, {0}};
        memcpy(r->name, n->name, SI_MAX_NAME);
        if (has_weights(n) && i >= nb && i < ne) {
            if (!n->w || !n->b) {
                si_err_set(err, "node %s: weights missing from the source model", n->name);
                goto fail;
            }
            r->w_off = (int64_t)off;
            r->w_bytes = (int64_t)weight_bytes(n);
            r->packed = n->w_kind;
            if (n->w_kind == SI_WEIGHTS_BLOCKED) r->layout = *n->w_layout;
            off = align64(off + weight_bytes(n));
            r->b_off = (int64_t)off;
            off = align64(off + (size_t)n->cout * sizeof(float));
        }
    }
    h.file_len = off;
    for (int v = 0; v < g->n_values; v++) {
        vals[v].ndim = g->values[v].ndim;
        memcpy(vals[v].dims, g->values[v].dims, sizeof vals[v].dims);
    }
    f = fopen(path, "wb");
    if (!f) {
        si_err_set(err, "%s: %s", path, strerror(errno));
        goto fail;
    }
    static const char zeros[64];
    int ok = fwrite(&h, sizeof h, 1, f) == 1 &&
             fwrite(vals, sizeof *vals, (size_t)g->n_values, f) == (size_t)g->n_values &&
             fwrite(nodes, sizeof *nodes, (size_t)g->n_nodes, f) == (size_t)g->n_nodes;
    uint64_t pos = h.nodes_off + (uint64_t)g->n_nodes * sizeof(sfm_node_t);
    for (int i = 0; ok && i < g->n_nodes; i++) {
        const si_node_t *n = &g->nodes[i];
        if (nodes[i].w_off < 0) continue;
        const void *parts[2] = {n->w, n->b};
        int64_t offs[2] = {nodes[i].w_off, nodes[i].b_off};
        size_t lens[2] = {weight_bytes(n), (size_t)n->cout * sizeof(float)};
        for (int k = 0; k < 2 && ok; k++) {
            ok = fwrite(zeros, 1, (size_t)((uint64_t)offs[k] - pos), f) == (size_t)((uint64_t)offs[k] - pos) &&
                 fwrite(parts[k], 1, lens[k], f) == lens[k];
            pos = (uint64_t)offs[k] + lens[k];
        }
    }
    if (ok && pos < h.file_len) ok = fwrite(zeros, 1, h.file_len - pos, f) == h.file_len - pos;
    if (fclose(f) != 0 || !ok) {
        f = NULL;
        si_err_set(err, "%s: write failed: %s", path, strerror(errno));
        goto fail;
    }
    free(nodes), free(vals);
    return 0;
fail:
    if (f) fclose(f);
    free(nodes), free(vals);
    return -1;
}

/* Checks that [off, off + len) lies inside the file and is 4-byte aligned. */
static int in_file(int64_t off, uint64_t len, uint64_t file_len) {
    return off >= 0 && (uint64_t)off <= file_len && len <= file_len - (uint64_t)off && !(off & 3);
}

si_graph_t *si_sfm_load(const char *path, si_err_t *err) {
    si_graph_t *g = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        si_err_set(err, "%s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || st.st_size < (off_t)sizeof(sfm_header_t)) {
        close(fd);
        si_err_set(err, "%s: truncated model file", path);
        return NULL;
    }
    size_t len = (size_t)st.st_size;
    void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        si_err_set(err, "%s: mmap: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    const uint8_t *base = map;
    sfm_header_t h;
    memcpy(&h, base, sizeof h);
    g = si_graph_new();
    if (!g) {
        munmap(map, len);
        close(fd);
        si_err_set(err, "out of memory");
        return NULL;
    }
    /* Freed with the graph from here on; the file stays open for si_model_hot. */
    g->map = map, g->map_len = len, g->map_fd = fd;
    if (memcmp(h.magic, SI_SFM_MAGIC, 8) || h.version != SI_SFM_VERSION) {
        si_err_set(err, "not an .sfm file of version %d", SI_SFM_VERSION);
        goto fail;
    }
    if (h.file_len != len || h.n_nodes == 0 || h.n_nodes > 1u << 20 || h.n_values > 1u << 20 ||
        !in_file((int64_t)h.values_off, (uint64_t)h.n_values * sizeof(sfm_value_t), len) ||
        !in_file((int64_t)h.nodes_off, (uint64_t)h.n_nodes * sizeof(sfm_node_t), len)) {
        si_err_set(err, "truncated or corrupt model file (header)");
        goto fail;
    }
    for (uint32_t v = 0; v < h.n_values; v++) {
        sfm_value_t r;
        memcpy(&r, base + h.values_off + v * sizeof r, sizeof r);
        int dims[4] = {1, 0, 0, 0};
        for (int d = 1; d < 4; d++) dims[d] = r.dims[d];
        if ((r.ndim != 2 && r.ndim != 4) || si_graph_add_value(g, r.ndim, dims) < 0) {
            si_err_set(err, "corrupt model file (value %u)", v);
            goto fail;
        }
    }
    if (g->values[0].ndim != 4 || g->values[0].dims[1] < 1 || g->values[0].dims[2] < 1 ||
        g->values[0].dims[3] < 1 || g->values[0].dims[2] > 1 << 16 || g->values[0].dims[3] > 1 << 16) {
        si_err_set(err, "corrupt model file (input shape)");
        goto fail;
    }
    for (uint32_t i = 0; i < h.n_nodes; i++) {
        sfm_node_t r;
        memcpy(&r, base + h.nodes_off + i * sizeof r, sizeof r);
        si_node_t n;
        memset(&n, 0, sizeof n);
        n.op = (si_op_t)r.op, n.in = r.in, n.in2 = r.in2, n.out = r.out;
        n.kh = r.kh, n.kw = r.kw, n.sh = r.sh, n.sw = r.sw, n.dh = r.dh, n.dw = r.dw;
        n.pad_t = r.pad_t, n.pad_l = r.pad_l, n.pad_b = r.pad_b, n.pad_r = r.pad_r;
        n.group = r.group, n.count_include_pad = r.count_include_pad;
        n.act = (si_act_t)r.act, n.act_lo = r.act_lo, n.act_hi = r.act_hi;
        n.cout = r.cout, n.cin = r.cin;
        memcpy(n.name, r.name, SI_MAX_NAME);
        n.name[SI_MAX_NAME - 1] = 0;
        int geo_ok = r.op >= SI_OP_CONV && r.op <= SI_OP_FLATTEN && r.act >= 0 &&
                     r.act <= SI_ACT_CLIP && r.kh >= 0 && r.kw >= 0 && r.kh <= 1 << 12 &&
                     r.kw <= 1 << 12 && r.sh >= 1 && r.sw >= 1 && r.dh >= 1 && r.dw >= 1 &&
                     r.pad_t >= 0 && r.pad_l >= 0 && r.pad_b >= 0 && r.pad_r >= 0 &&
                     r.pad_t <= 1 << 12 && r.pad_l <= 1 << 12 && r.pad_b <= 1 << 12 &&
                     r.pad_r <= 1 << 12 && r.group >= 1 && r.cout >= 0 && r.cin >= 0 &&
                     r.cout <= 1 << 20 && r.cin <= 1 << 20 && r.in2 >= -1;
        if (!geo_ok) {
            si_err_set(err, "corrupt model file (node %u)", i);
            goto fail;
        }
        if (has_weights(&n) && r.w_off >= 0) {
            size_t wl = weight_floats(&n) * sizeof(float), bl = (size_t)n.cout * sizeof(float);
            if (r.packed == SI_WEIGHTS_WINO2) {
                /* 16 transformed values per 3x3 kernel (wino.h) */
                if (n.kh != 3 || n.kw != 3 || r.w_bytes != (int64_t)(wl / 9 * 16)) {
                    si_err_set(err, "corrupt model file (Winograd weights of node %s)", n.name);
                    goto fail;
                }
                n.w_kind = SI_WEIGHTS_WINO2;
                n.w_bytes = wl = (size_t)r.w_bytes;
            } else if (r.packed == SI_WEIGHTS_BLOCKED) {
                if (!layout_ok(&r.layout) || r.w_bytes < (int64_t)wl || r.w_bytes > (int64_t)(16 * wl)) {
                    si_err_set(err, "corrupt model file (weight layout of node %s)", n.name);
                    goto fail;
                }
                if (!g->layouts && !(g->layouts = calloc(h.n_nodes, sizeof *g->layouts))) {
                    si_err_set(err, "out of memory");
                    goto fail;
                }
                g->layouts[i] = r.layout;
                n.w_kind = SI_WEIGHTS_BLOCKED;
                n.w_layout = &g->layouts[i];
                n.w_bytes = wl = (size_t)r.w_bytes;
            } else if (r.packed != SI_WEIGHTS_PLAIN) {
                si_err_set(err, "corrupt model file (weight kind of node %s)", n.name);
                goto fail;
            }
            if (!in_file(r.w_off, wl, len) || !in_file(r.b_off, bl, len)) {
                si_err_set(err, "truncated or corrupt model file (weights of node %s)", n.name);
                goto fail;
            }
            n.w = (const float *)(base + r.w_off);
            n.b = (const float *)(base + r.b_off);
        }
        if (si_graph_add_node(g, &n) < 0) {
            si_err_set(err, "out of memory");
            goto fail;
        }
    }
    g->output = (int)h.output;
    if (si_graph_finish(g, err) < 0) goto fail;
    if (h.cut_begin >= h.cut_end || h.cut_end >= (uint32_t)g->n_cuts) {
        si_err_set(err, "corrupt model file (segment #%u..#%u)", h.cut_begin, h.cut_end);
        goto fail;
    }
    g->default_cut_begin = (int)h.cut_begin, g->default_cut_end = (int)h.cut_end;
    return g;
fail:
    si_err_prefix(err, "%s", path);
    si_graph_free(g);
    return NULL;
}

si_graph_t *si_model_load(const char *path, si_err_t *err) {
    char magic[8] = {0};
    FILE *f = fopen(path, "rb");
    if (!f) {
        si_err_set(err, "%s: %s", path, strerror(errno));
        return NULL;
    }
    size_t got = fread(magic, 1, sizeof magic, f);
    fclose(f);
    if (got == sizeof magic && !memcmp(magic, SI_SFM_MAGIC, 8)) return si_sfm_load(path, err);
    return si_onnx_load(path, err);
}

void si_model_drop(const si_graph_t *g, const void *p, size_t len) {
    if (!g->map || !p) return;
    uintptr_t lo = (uintptr_t)p, hi = lo + len, mlo = (uintptr_t)g->map;
    if (lo < mlo || hi > mlo + g->map_len) return;
    long pg = sysconf(_SC_PAGESIZE);
    /* Only whole pages inside the range: a neighbour's weights may share the
     * edge pages. Dropped pages of a private read-only mapping are reread
     * from the file if ever touched again, so this can never lose data. */
    uintptr_t a = (lo + (uintptr_t)pg - 1) & ~((uintptr_t)pg - 1), b = hi & ~((uintptr_t)pg - 1);
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
}

/* Copies len bytes of weights at src into dst: from the file when src lies
 * in the mapping (pread: the page cache's bytes without faulting each 4 KiB
 * page of the mapping in first, 2.5-8x faster here than a memcpy from it),
 * else from memory. */
static int copy_weights(const si_graph_t *g, const void *src, size_t len, uint8_t *dst, si_err_t *err) {
    const uint8_t *s = src, *m = g->map;
    if (g->map_fd < 0 || s < m || s + len > m + g->map_len) {
        memcpy(dst, src, len);
        return 0;
    }
    for (size_t done = 0; done < len;) {
        ssize_t r = pread(g->map_fd, dst + done, len - done, (off_t)(s - m + done));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0)
            return si_err_set(err, "reading weights from the model file: %s",
                              r ? strerror(errno) : "short file");
        done += (size_t)r;
    }
    return 0;
}

/* A node's weight arrays as si_model_hot lays them out: the weights, then
 * the bias, each where present, each from a 64-byte boundary. Returns how
 * many (0-2); slot[k] is the node's pointer to array k, len[k] its bytes. */
static int hot_pieces(si_node_t *n, const float **slot[2], size_t len[2]) {
    int k = 0;
    if (n->w) slot[k] = &n->w, len[k++] = weight_bytes(n);
    if (n->b) slot[k] = &n->b, len[k++] = (size_t)n->cout * sizeof(float);
    return k;
}

int si_model_hot_begin(const si_graph_t *g, const si_segment_t *seg, si_hot_move_t *mv,
                       si_err_t *err) {
    memset(mv, 0, sizeof *mv);
    mv->node_begin = mv->node = mv->step_begin = seg->node_begin;
    mv->node_end = seg->node_end;
    if (g->hot) { /* moved already: nothing left to move */
        mv->node = mv->step_begin = mv->node_end;
        return 0;
    }
    const float **slot[2];
    size_t len[2], total = 0;
    int arrays = 0;
    for (int i = seg->node_begin; i < seg->node_end; i++)
        for (int k = 0, m = hot_pieces(&g->nodes[i], slot, len); k < m; k++)
            total += align64(len[k]), arrays++;
    if (total == 0) {
        mv->node = mv->step_begin = mv->node_end;
        return 0;
    }
    if (!(mv->moved = malloc((size_t)arrays * sizeof *mv->moved)))
        return si_err_set(err, "out of memory");
    if (!(mv->p = si_huge_reserve(total, &mv->len, err))) {
        free(mv->moved);
        mv->moved = NULL;
        return -1;
    }
    return 0;
}

int si_model_hot_step(const si_graph_t *g, si_hot_move_t *mv, size_t chunk, si_err_t *err) {
    mv->n_moved = 0;
    mv->step_begin = mv->node;
    if (!mv->p) return 0;
    const float **slot[2];
    size_t len[2], bytes = 0, off0 = mv->off;
    int i = mv->node;
    for (; i < mv->node_end; i++) {
        int m = hot_pieces(&g->nodes[i], slot, len);
        size_t node_bytes = 0;
        for (int k = 0; k < m; k++) node_bytes += len[k];
        if (bytes > 0 && bytes + node_bytes > chunk) break; /* the next step's */
        for (int k = 0; k < m; k++) {
            uint8_t *to = mv->p + mv->off;
            /* The mapping's pages go before their copy comes: an idle
             * process never holds them twice. A reader meanwhile gets them
             * back from the file, one step's worth at most, until the swap. */
            si_model_drop(g, *slot[k], len[k]);
            si_huge_populate(to, len[k]); /* as it fills: not the whole region at once */
            if (copy_weights(g, *slot[k], len[k], to, err) < 0) {
                mv->n_moved = 0, mv->off = off0; /* nothing of this step swaps */
                return -1;
            }
            mv->moved[mv->n_moved++] = (si_hot_moved_t){*slot[k], to, len[k]};
            mv->off += align64(len[k]);
        }
        bytes += node_bytes;
    }
    mv->node = i;
    return mv->n_moved;
}

void si_model_hot_swap(si_graph_t *g, si_hot_move_t *mv) {
    const float **slot[2];
    size_t len[2];
    int j = 0; /* mv->moved is in the order of hot_pieces over the step's nodes */
    for (int i = mv->step_begin; i < mv->node; i++)
        for (int k = 0, m = hot_pieces(&g->nodes[i], slot, len); k < m; k++, j++) {
            *slot[k] = mv->moved[j].to;
            si_model_drop(g, mv->moved[j].from, mv->moved[j].len);
        }
    mv->n_moved = 0;
    mv->step_begin = mv->node;
}

void si_model_hot_end(si_graph_t *g, si_hot_move_t *mv) {
    free(mv->moved);
    if (mv->p) {
        if (mv->node == mv->node_begin) {
            si_huge_free(mv->p, mv->len); /* no step swapped */
        } else {
            g->hot = mv->p, g->hot_len = mv->len;
            /* Pages at the edges of the arrays, kept while a neighbour
             * still read them: with every node moved, none does. */
            if (mv->node == mv->node_end && g->map) si_model_drop(g, g->map, g->map_len);
        }
    }
    memset(mv, 0, sizeof *mv);
    /* An ONNX import's arena goes when no node reads it any more (seg was the
     * whole model); else it stays, as a mapping does (its pages untouched). */
    if (g->arena) {
        const uint8_t *lo = (const uint8_t *)g->arena, *hi = lo + g->arena_len * sizeof(float);
        int used = 0;
        for (int i = 0; i < g->n_nodes && !used; i++) {
            const uint8_t *w = (const uint8_t *)g->nodes[i].w, *b = (const uint8_t *)g->nodes[i].b;
            used = (w >= lo && w < hi) || (b >= lo && b < hi);
        }
        if (!used) free(g->arena), g->arena = NULL, g->arena_len = 0;
    }
}

int si_model_hot(si_graph_t *g, const si_segment_t *seg, si_err_t *err) {
    if (g->hot) return si_err_set(err, "weights already on huge pages");
    si_hot_move_t mv;
    if (si_model_hot_begin(g, seg, &mv, err) < 0) return -1;
    /* One step: with no reader beside it, dropping the pages before the
     * copy is all it takes not to hold the weights twice. */
    int n;
    while ((n = si_model_hot_step(g, &mv, SIZE_MAX, err)) > 0) si_model_hot_swap(g, &mv);
    si_model_hot_end(g, &mv);
    return n < 0 ? -1 : 0;
}
