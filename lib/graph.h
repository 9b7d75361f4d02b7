/*
 * graph.h - the CNN graph IR: values, nodes, shapes, cut points and segments.
 *
 * A graph is the network after import-time rewriting: BatchNormalization is
 * folded into the Conv before it, ReLU/Clip are folded into the node before
 * them as an activation, and a residual Add is folded into one of the Convs
 * that feed it as a "sum" input. What is left maps one to one onto oneDNN
 * primitives, so the engine never pattern-matches again.
 *
 * Invariants (checked by si_graph_finish):
 *   - nodes are in topological order: a node only reads values produced by
 *     earlier nodes, or the graph input (value 0);
 *   - every value has exactly one producer (node index) except value 0;
 *   - value dims are batch-1 NCHW (ndim 4) or NC (ndim 2); the engine scales
 *     the batch.
 *
 * Cut points. Cut c is the position before node c (0 <= c <= n_nodes). It is
 * a cut point when exactly one value is live there: every node before it
 * feeds only one value forward. A segment [a, b) between two cut points is a
 * self-contained function of one tensor in and one tensor out - what a stage
 * function runs. For ResNet-family graphs (stem ending in MaxPool, residual
 * blocks, head) segments also have torchvision's names: "stem", "layer1".."layer4",
 * "layer1.0".."layer4.2", "head" and ranges "A..B". Any graph accepts cut
 * indices: "#3..#7" is the segment between cut points 3 and 7 (indices into
 * si_graph_t.cuts, not node numbers).
 *
 * Ownership: the graph owns its nodes and names. Weights are either owned
 * (a malloc'd arena freed with the graph) or borrowed from a mapping the
 * graph keeps (see modelfile.h); nodes only hold pointers into one of them.
 */
#ifndef SI_GRAPH_H
#define SI_GRAPH_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define SI_MAX_NAME 64 /* bytes for node/segment names, including NUL */

typedef enum si_op {
    SI_OP_CONV = 1, /* conv (+bias) (+sum input) (+activation) */
    SI_OP_POOL_MAX, /* MaxPool */
    SI_OP_POOL_AVG, /* AveragePool / GlobalAveragePool (kernel = whole map) */
    SI_OP_DENSE,    /* Gemm / MatMul(+Add): y = x W^T + b, x [N,C] */
    SI_OP_ADD,      /* elementwise add not foldable into a conv (+activation) */
    SI_OP_ACT,      /* standalone activation */
    SI_OP_FLATTEN,  /* [N,C,H,W] -> [N,C*H*W]; a reorder to plain layout */
} si_op_t;

typedef enum si_act {
    SI_ACT_NONE = 0,
    SI_ACT_RELU,
    SI_ACT_CLIP, /* min(max(x, lo), hi); ReLU6 is clip(0, 6) */
} si_act_t;

typedef struct si_value_rec { /* not "si_value": <signal.h> defines that name */
    int ndim;    /* 2 or 4 */
    int dims[4]; /* N=1, C, H, W (or N=1, C) */
} si_value_t;

/* A blocked layout of a weight tensor: how the kernels of this machine want
 * it (oneDNN's blocking descriptor, in our own terms so that model files can
 * carry weights already in it; see modelfile.h). dims are the kernel's view:
 * [cout, cin, kh, kw], [group, cout/group, cin/group, kh, kw] or [cout, cin]. */
#define SI_LAYOUT_MAX_DIMS 6
typedef struct si_layout {
    int32_t ndims, inner_nblks;
    int64_t dims[SI_LAYOUT_MAX_DIMS];
    int64_t padded_dims[SI_LAYOUT_MAX_DIMS];
    int64_t strides[SI_LAYOUT_MAX_DIMS];
    int64_t inner_blks[SI_LAYOUT_MAX_DIMS];
    int64_t inner_idxs[SI_LAYOUT_MAX_DIMS];
} si_layout_t;

/* How a node's weights are stored. */
enum {
    SI_WEIGHTS_PLAIN = 0,   /* [cout, cin/group, kh, kw] or [cout, cin] */
    SI_WEIGHTS_BLOCKED = 1, /* a oneDNN blocked layout, described by w_layout */
    SI_WEIGHTS_WINO2 = 2,   /* Winograd F(2x2,3x3) transformed (wino.h, si_wino_weights) */
};

typedef struct si_node {
    si_op_t op;
    char name[SI_MAX_NAME]; /* ONNX node name (or op type + index) */
    int in;                 /* value read (data input) */
    int in2;                /* second value: the residual input of a CONV's
                               sum post-op or of an ADD; -1 when none */
    int out;                /* value written */

    /* CONV and pooling geometry (pixels). pad_* are the ONNX pads. */
    int kh, kw, sh, sw, dh, dw;
    int pad_t, pad_l, pad_b, pad_r;
    int group;              /* CONV: 1, or C for depthwise */
    int count_include_pad;  /* POOL_AVG */

    si_act_t act;           /* applied last (after the sum for CONV/ADD) */
    float act_lo, act_hi;   /* SI_ACT_CLIP bounds */

    /* CONV: w [cout, cin/group, kh, kw]; DENSE: w [cout, cin]; b [cout].
     * Both NULL when the weights of this node were left out of a
     * segment-only model file. Prepacked by `convert` (w_kind), w holds
     * w_bytes bytes in that layout instead. */
    int cout, cin;
    const float *w;
    const float *b;
    int w_kind;                  /* SI_WEIGHTS_* */
    const si_layout_t *w_layout; /* SI_WEIGHTS_BLOCKED: the layout */
    size_t w_bytes;
} si_node_t;

typedef struct si_segment {
    int cut_begin, cut_end;   /* indices into cuts[] */
    int node_begin, node_end; /* nodes [node_begin, node_end) */
    int in, out;              /* the one value live at each end */
} si_segment_t;

typedef struct si_graph {
    si_node_t *nodes;
    int n_nodes;
    si_value_t *values; /* value 0 is the graph input */
    int n_values;
    int output;         /* value id of the graph output */
    int cap_nodes, cap_values; /* allocated lengths of nodes[] and values[] */

    int *cuts;          /* node positions that are cut points, ascending;
                           always includes 0 and n_nodes */
    int n_cuts;

    /* ResNet naming, filled by si_graph_finish when the graph has the shape of
     * one: block_cut[i] is the index into cuts[] where block i starts, layer of
     * block i in block_layer[i] (1..4), its index within the layer in
     * block_index[i]. n_blocks = 0 for other graphs. */
    int n_blocks;
    int *block_cut, *block_layer, *block_index;
    int head_cut;       /* index into cuts[] where the head starts */

    /* The segment a spec of NULL or "" means: the whole graph, or what a
     * segment-only model file holds (set by its loader). */
    int default_cut_begin, default_cut_end;

    si_layout_t *layouts; /* per node, for prepacked weights (owned; may be NULL) */

    /* Weight storage: an arena or a mapping, exactly one of them; and a
     * segment's weights may have been copied to huge pages (si_model_hot). */
    float *arena;      /* owned, freed by si_graph_free */
    size_t arena_len;  /* floats */
    void *map;         /* mmap'd model file, unmapped by si_graph_free */
    size_t map_len;    /* bytes */
    int map_fd;        /* that file, open (si_model_hot reads it), closed by si_graph_free;
                          -1 when there is no mapping */
    void *hot;         /* si_model_hot's copies (hugemem.h), freed by si_graph_free */
    size_t hot_len;    /* bytes mapped */
} si_graph_t;

/* An empty graph with room to grow; NULL on OOM. */
si_graph_t *si_graph_new(void);
void si_graph_free(si_graph_t *g);

/* Appends a value / node; returns its index, -1 on OOM. */
int si_graph_add_value(si_graph_t *g, int ndim, const int *dims);
int si_graph_add_node(si_graph_t *g, const si_node_t *n);

/* Validates the invariants above, infers every node's output shape (the
 * values' dims are overwritten from the input's), computes cut points and
 * ResNet names. Call once after building or loading. */
int si_graph_finish(si_graph_t *g, si_err_t *err);

/* Resolves a segment spec ("stem", "layer2.1..head", "#2..#5"), "all" for the
 * whole graph, or NULL/"" for the default segment (the whole graph, or the
 * segment a segment-only model file holds). */
int si_graph_segment(const si_graph_t *g, const char *spec, si_segment_t *seg, si_err_t *err);

/* The default segment as a spec: "all", or "#a..#b" (written into buf). */
const char *si_graph_default_segment(const si_graph_t *g, char *buf, size_t len);

/* Name of the segment that starts at cut index c ("layer3.2"), or "#c". */
void si_graph_cut_name(const si_graph_t *g, int c, char *buf, size_t len);

/* Row bands. A stage can compute output rows [out_begin, out_end) of its
 * segment from a band of its input: the output band widened by the segment's
 * receptive field (the halo), clipped at the true image border. Zero padding
 * is applied only at the true border; inside the image the halo rows stand in
 * for it, so stitched bands equal the whole output. For every value of the
 * segment the band records the rows that must be materialized (the hull over
 * its readers; a reader that needs fewer rows crops). */
typedef struct si_band_rec { /* not "si_band": <signal.h> defines that name */
    int out_begin, out_end; /* rows of the segment output */
    int in_begin, in_end;   /* rows of the segment input needed */
    int *row_begin;         /* per value id: first row materialized (malloc'd) */
    int *row_end;           /* per value id: one past the last (malloc'd) */
} si_band_t;

/* Computes the band for output rows [out_begin, out_end) of seg. A 2-D
 * output counts as one row: only [0, 1), the whole, is a valid band there.
 * Free with si_band_free. */
int si_graph_band(const si_graph_t *g, const si_segment_t *seg, int out_begin, int out_end,
                  si_band_t *band, si_err_t *err);
void si_band_free(si_band_t *band);

/* Rows of node n's data input needed for its output rows [oa, ob), clipped to
 * the input's height. For 2-D values (dense, flatten) all rows: [0, 1). */
void si_node_in_rows(const si_graph_t *g, const si_node_t *n, int oa, int ob, int *ia, int *ib);

/* Band k of K over h rows: an even split, the first h % K bands one row
 * longer. Requires 1 <= K <= h. */
void si_rows_split(int h, int K, int k, int *begin, int *end);

/* Number of elements of a value (batch 1). */
size_t si_value_numel(const si_value_t *v);

/* Multiply-accumulates of a node (batch 1) and its parameter count. */
uint64_t si_node_macs(const si_graph_t *g, const si_node_t *n);
uint64_t si_node_params(const si_node_t *n);

/* Multiply-accumulates of a segment (batch 1), or of one band of it: each
 * node then computes only the rows the band materializes of its output,
 * halo rows included (band NULL: the whole segment). A plan's compute cost
 * without any runtime noise: `splitinfer plan check` sums it per step. */
uint64_t si_segment_macs(const si_graph_t *g, const si_segment_t *seg, const si_band_t *band);

const char *si_op_name(si_op_t op);

#endif
