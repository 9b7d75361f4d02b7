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

/* si_model_hot in two halves, for a process that keeps running seg's
 * weights from the mapping meanwhile (a stage: stage.h). The copy reads g and
 * changes no pointer, so it may run beside readers of g; it drops the
 * mapping's pages before it copies (whatever reads them there gets them
 * back from the file), so the weights are not resident twice. The swap
 * repoints the nodes and must not run beside readers; engines compiled
 * before it keep reading the mapping. A copy not swapped is freed with
 * si_hot_free. */
typedef struct si_hot {
    void *p;    /* the region, NULL when seg has no weights */
    size_t len; /* mapped */
} si_hot_t;
int si_model_hot_copy(const si_graph_t *g, const si_segment_t *seg, si_hot_t *h, si_err_t *err);
void si_model_hot_swap(si_graph_t *g, const si_segment_t *seg, si_hot_t *h);
void si_hot_free(si_hot_t *h);

#endif
