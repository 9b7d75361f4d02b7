/*
 * engine.h - run a segment of a graph with oneDNN (CPU, fp32).
 *
 * si_engine_create compiles a segment once for one batch size: one oneDNN
 * primitive per node, every layout chosen by oneDNN (format "any", so
 * blocked layouts such as nChw8c flow from layer to layer without reorders),
 * BN already folded, ReLU/Clip and the residual sum fused as post-ops, the
 * weights reordered into the primitives' layouts once, every activation
 * buffer planned ahead (buffers are reused once a value is dead) and one
 * shared scratchpad. si_engine_run then only executes: no allocation, no
 * layout decisions, no locking.
 *
 * Tensors cross the API in plain layout: NCHW (4-D) or NC (2-D) float32,
 * batch first, unless si_engine_create_io asks for NHWC. The engine borrows the graph: keep the graph alive as long as
 * any engine built from it.
 *
 * 3x3 stride-1 convolutions run by Winograd F(2x2,3x3) (wino.h, an AVX2
 * kernel) where oneDNN's own kernels are AVX2 and the cost model says it
 * beats them, or always when the model file holds Winograd-transformed
 * weights. Where oneDNN runs AVX-512, its direct kernels win and Winograd is
 * not chosen. SPLITINFER_WINO in the environment overrides the choice for
 * plain weights: "off" keeps oneDNN, "on" takes Winograd wherever the shape
 * allows (for comparisons and tests); unset or "auto" chooses.
 *
 * Threads: oneDNN in Debian uses OpenMP, whose thread count is process-wide.
 * si_engine_set_threads sets it; call it before creating engines.
 */
#ifndef SI_ENGINE_H
#define SI_ENGINE_H

#include <stddef.h>

#include "err.h"
#include "graph.h"

typedef struct si_engine si_engine_t;

/* Sets the process-wide compute thread count (n < 1: all cores). */
void si_engine_set_threads(int n);

/* Number of threads inference will use. */
int si_engine_threads(void);

/* Compiles segment seg of g for batch size batch (>= 1). NULL + err on
 * failure (an op oneDNN cannot build, out of memory, weights missing from a
 * segment-only model file). */
si_engine_t *si_engine_create(const si_graph_t *g, const si_segment_t *seg, int batch,
                              si_err_t *err);

/* Compiles the segment for one band of rows (graph.h, si_graph_band): the
 * input is the band's input rows, the output its output rows. band may be
 * NULL (the whole tensor); it is only read during the call. */
si_engine_t *si_engine_create_band(const si_graph_t *g, const si_segment_t *seg,
                                   const si_band_t *band, int batch, si_err_t *err);

/* How a 4-D tensor lies in memory at the API: NCHW (plain), or NHWC
 * (channels innermost). NHWC is what the engine's own kernels run on between
 * layers (oneDNN's choice for these convolutions, and Winograd's), so a
 * segment that takes and gives NHWC skips the reorder at each end: ~4 ms per
 * ResNet50 image over the pipeline's four cuts. A band of rows is also one
 * contiguous run per image in NHWC. 2-D tensors are NC either way. */
typedef enum si_io_layout { SI_IO_NCHW = 0, SI_IO_NHWC = 1 } si_io_layout_t;

/* si_engine_create_band with the input and output in the given layouts. */
si_engine_t *si_engine_create_io(const si_graph_t *g, const si_segment_t *seg,
                                 const si_band_t *band, int batch, si_io_layout_t in_layout,
                                 si_io_layout_t out_layout, si_err_t *err);

void si_engine_free(si_engine_t *e);

/* Shape of the segment input / output including the batch (and the band's
 * rows as the height): ndim is 2 or 4, dims[0] is the batch. Returns ndim. */
int si_engine_in_dims(const si_engine_t *e, int dims[4]);
int si_engine_out_dims(const si_engine_t *e, int dims[4]);

/* Element counts (batch included) of input and output. */
size_t si_engine_in_numel(const si_engine_t *e);
size_t si_engine_out_numel(const si_engine_t *e);

/* Runs the segment: in holds si_engine_in_numel floats, out receives
 * si_engine_out_numel floats. Not reentrant: one run at a time per engine. */
int si_engine_run(si_engine_t *e, const float *in, float *out, si_err_t *err);

/* Runs the segment and points *out at its output (si_engine_out_numel
 * floats, in the layout asked for at create), in the engine's own memory:
 * valid until the next run or si_engine_free, not to be written. Where the
 * last node's output already lies so (si_engine_output_direct), this skips
 * si_engine_run's copy-out - ResNet50's layer1 writes 3.2 MB - for a caller
 * that only reads the output (encodes or hashes it); otherwise the copy goes
 * to a buffer the engine allocates on the first such call. */
int si_engine_run_view(si_engine_t *e, const float *in, const float **out, si_err_t *err);

/* 1 when si_engine_run_view hands out the last node's output without a copy. */
int si_engine_output_direct(const si_engine_t *e);

/* Bytes the engine's reorders between nodes write per run: layout changes,
 * and crops of a band's rows where they do not lie contiguously. Rows in
 * NHWC (the layout oneDNN's AVX-512 kernels pick here) are read and summed
 * into in place, so a banded ResNet segment in NHWC copies nothing. Not
 * counting si_engine_run's copy-out. */
size_t si_engine_copy_bytes(const si_engine_t *e);

/* The weights node `node` (a graph node index inside the segment) runs with:
 * returns their kind (graph.h SI_WEIGHTS_*: PLAIN, the node's own; BLOCKED,
 * layout filled; WINO2, Winograd-transformed), or -1 when the node has none;
 * *data and *bytes point at them. The data lives as long as the engine. */
int si_engine_weights(const si_engine_t *e, int node, si_layout_t *layout, const void **data,
                      size_t *bytes);

/* The graph's arrays that the engine reads in place (weights it did not
 * reorder or transform, biases) and that lie in [from, from + len) are read
 * at the same offset from to from now on: their bytes were copied there
 * (modelfile.h, si_model_hot_step) and from may go. Returns how many of its
 * memories it repointed. Not beside a run of the engine. */
int si_engine_repoint(si_engine_t *e, const void *from, size_t len, void *to);

/* Points the weights of every node of the engine's segment in g (the graph
 * the engine was built from) at the engine's own packed or transformed copy,
 * so that si_sfm_save writes them as this machine runs them. layouts: caller
 * storage for g->n_nodes layouts. The engine must outlive every use of g's
 * weights after this. Returns the number of nodes repointed. */
int si_engine_pack_weights(const si_engine_t *e, si_graph_t *g, si_layout_t *layouts);

/* Bytes of model weights the engine re-laid out while compiling: 0 when every
 * node's weights were in the layout its primitive wanted (a file packed by
 * splitinfer convert for this CPU, thread count and rows). Prepacked weights
 * in another layout still load, through plain, at a cold-start cost. */
size_t si_engine_reordered_bytes(const si_engine_t *e);

/* Bytes the engine holds: reordered weights, activations, scratchpad. */
size_t si_engine_bytes(const si_engine_t *e);

#endif
