/*
 * modelfile.h - packed model files (.sfm) and loading any model file.
 *
 * An .sfm holds a graph after import (BN folded, activations and residual
 * sums fused) so loading it is a mmap and a table walk, not a protobuf parse.
 * Layout, all little-endian:
 *
 *   header   64 bytes: magic "SIFMODEL", version, counts, table and weight
 *            offsets, the cut range whose weights the file carries
 *   values   n_values x { i32 ndim; i32 dims[4] }
 *   nodes    n_nodes  x fixed-size records (op, geometry, activation, name,
 *            byte offsets of weights and bias or -1 when left out, and the
 *            weights' layout when they are prepacked)
 *   weights  float32 arrays, each starting on a 64-byte boundary
 *
 * Every node is present even in a segment-only file (what a stage image
 * carries), so cut points and segment names are the same as the full model's;
 * only the weights outside the segment are left out (their pointers are NULL
 * and the engine refuses to compile those nodes). Weight pointers point into
 * the read-only mapping; nothing is copied at load.
 */
#ifndef SI_MODELFILE_H
#define SI_MODELFILE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "graph.h"

#define SI_SFM_MAGIC "SIFMODEL"
#define SI_SFM_VERSION 2

/* Loads a model file: .sfm (recognized by its magic) or ONNX. */
si_graph_t *si_model_load(const char *path, si_err_t *err);

/* Maps and validates an .sfm file. Corrupt or truncated files fail cleanly. */
si_graph_t *si_sfm_load(const char *path, si_err_t *err);

/* Writes g as an .sfm. With seg, only the weights of nodes inside it are
 * written. */
int si_sfm_save(const si_graph_t *g, const si_segment_t *seg, const char *path, si_err_t *err);

/* Tells the graph that [p, p+len) will not be read again (the engine keeps a
 * reordered copy): pages of a mapped file are dropped so the process does not
 * hold the weights twice. A no-op for memory the graph owns. */
void si_model_drop(const si_graph_t *g, const void *p, size_t len);

/* Copies the weights and biases of seg's nodes into one region on huge pages
 * (hugemem.h: why), points those nodes at the copies and drops the mapped
 * file's pages they came from. For a process that runs seg many times - a
 * stage function, a benchmark - not one that only reads the structure (the
 * gateway). Nodes outside seg are untouched. Costs one copy at load (ResNet50:
 * 100 MB). Returns 0, also when seg has no weights; -1 with err set when the
 * region cannot be mapped (g is unchanged and still works). */
int si_model_hot(si_graph_t *g, const si_segment_t *seg, si_err_t *err);

/* si_model_hot in steps, for a process that keeps running seg's weights
 * meanwhile (a stage: stage.h) and must not hold them twice. Each step
 * drops the mapped pages of the next nodes' arrays, up to chunk bytes of
 * them, and copies the arrays into the region (from the file, not through
 * the mapping); it changes no pointer, so it may run beside readers of g,
 * which read dropped pages back in from the file. Then, with no reader
 * running, the caller points whatever else reads those arrays in place at
 * their copies (mv->moved: si_engine_repoint) and calls si_model_hot_swap,
 * which points the nodes at them and drops the pages read back meanwhile.
 * The peak is the weights plus one step's, whatever runs beside it; the
 * weights alone when nothing does.
 *
 *     si_hot_move_t mv;
 *     if (si_model_hot_begin(g, seg, &mv, err) == 0) {
 *         while ((n = si_model_hot_step(g, &mv, chunk, err)) > 0) {
 *             [readers stopped] repoint mv.moved[0..n); si_model_hot_swap(g, &mv); [go on]
 *         }
 *         si_model_hot_end(g, &mv);  -- also after a failed step
 *     }
 */
typedef struct si_hot_moved {
    const void *from; /* where the array was read until now */
    void *to;         /* its copy */
    size_t len;       /* bytes */
} si_hot_moved_t;

typedef struct si_hot_move {
    int node_begin, node_end; /* seg's nodes */
    int node;                 /* the next one to copy */
    int step_begin;           /* nodes of the last step: [step_begin, node) */
    uint8_t *p;               /* the region (hugemem.h); NULL: no weights to move */
    size_t len, off;          /* mapped; bytes laid out so far */
    si_hot_moved_t *moved;    /* the last step's arrays */
    int n_moved;
} si_hot_move_t;

/* 0, with the region reserved (not yet resident), or with mv->p NULL when
 * there is nothing to move (seg has no weights, or they are on huge pages
 * already); -1 with err set when it cannot be mapped (g is unchanged). */
int si_model_hot_begin(const si_graph_t *g, const si_segment_t *seg, si_hot_move_t *mv,
                       si_err_t *err);

/* Drops the mapped pages of the next nodes' arrays, whole nodes, at most
 * chunk bytes of them (or one node, if larger), copies them into the region
 * and lists them in mv->moved. Returns how many arrays (0 when every node is
 * moved), or -1 with err set when the file could not be read (the nodes
 * already swapped stay moved; call si_model_hot_end). */
int si_model_hot_step(const si_graph_t *g, si_hot_move_t *mv, size_t chunk, si_err_t *err);

/* Points the last step's nodes at their copies and drops the mapped pages
 * readers brought back during the step (whole pages only: the edges may
 * hold a neighbour's). No reader of those nodes' arrays may run meanwhile. */
void si_model_hot_swap(si_graph_t *g, si_hot_move_t *mv);

/* Hands the region to g (freed by si_graph_free; freed here if no step was
 * swapped), drops the rest of the mapping's pages once every node moved,
 * and frees mv's own memory. */
void si_model_hot_end(si_graph_t *g, si_hot_move_t *mv);

#endif
