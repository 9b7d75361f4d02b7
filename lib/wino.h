/*
 * wino.h - Winograd convolution for 3x3, stride 1, dilation 1, group 1 (fp32, AVX2+FMA).
 *
 * oneDNN 2.6 on AVX2 has no Winograd and its direct 3x3 kernel reaches only
 * 50-70% of the FMA peak at ResNet50's small spatial sizes. Winograd's minimal
 * filtering (Lavin & Gray 2015, "Fast Algorithms for Convolutional Neural
 * Networks") computes an m x m output tile from an (m+2) x (m+2) input tile
 * with (m+2)^2 multiplies per channel pair instead of 9 m^2:
 *   F(2x2,3x3): 16 positions, 2.25x fewer multiplies, 1.78x the weight bytes;
 *   F(4x4,3x3): 36 positions, 4x fewer multiplies, 4x the weight bytes and
 *   ~15x the rounding error: on kaiming weights and N(0,1) inputs the worst
 *   |error| / max|output| is 1.1e-6 for F(2x2) and 1.5e-5 for F(4x4) over
 *   ResNet50's shapes (tests/test_wino.c asserts <= 1e-4).
 * A run transforms the input tiles, does one GEMM per position (tiles x C
 * times C x K, with our own 6x16 AVX2 micro-kernel) and transforms back,
 * fusing bias, the residual sum and the activation into the last step.
 *
 * Layouts are oneDNN's nChw8c (tag aBcd8b): [N][C/8][H][W][8] floats, so the
 * tensors of the engine are read and written in place, with no reorder.
 *
 * Lifecycle: si_wino_create once (transforms the weights), then any number
 * of si_wino_run with a caller-owned scratch of si_wino_scratch_bytes; no
 * allocation and no locking in run. One si_wino_t may serve several threads
 * at once as long as each passes its own scratch.
 *
 * Threads: run splits its work over the OpenMP team (omp_get_max_threads()
 * at run time), capped at the team size current when create was called
 * (the scratch is sized for it). Inside a parallel region it runs on the
 * calling thread only. At one thread it opens no parallel region. Results
 * are bit-identical whatever the thread count.
 *
 * When to use it: the tile and the verdict come from a cost model fitted to
 * bench/wino_bench.c on a 2-core AMD EPYC (Zen 3, AVX2), one thread. There
 * Winograd takes 0.38-0.64 of oneDNN's time on ResNet50's four 3x3 shapes,
 * 0.40-0.75 on their row bands, and loses on bands of one output row (most of
 * every tile is wasted; at 512 channels it also streams 1.8x the weight bytes).
 * si_wino_recommended says which; callers should keep oneDNN where it says no.
 */
#ifndef SI_WINO_H
#define SI_WINO_H

#include <stddef.h>

#include "err.h"

/* Activation applied last (after bias and residual sum). */
enum {
    SI_WINO_ACT_NONE = 0, /* identity */
    SI_WINO_ACT_RELU = 1, /* max(x, 0) */
    SI_WINO_ACT_CLIP = 2  /* min(max(x, lo), hi), e.g. ReLU6 with lo 0, hi 6 */
};

/* What to convolve. Output size: OH = H + pad_t + pad_b - 2 rows,
 * OW = W + pad_l + pad_r - 2 columns; both must be >= 1. */
typedef struct si_wino_desc {
    int N;          /* images in the batch, >= 1 */
    int C;          /* input channels, a multiple of 8 */
    int H;          /* input rows, >= 1 (a band of rows is just a short image) */
    int W;          /* input columns, >= 1 */
    int K;          /* output channels, a multiple of 8 */
    int pad_t;      /* zero rows above the input, >= 0 (0 inside a band, 1 at the image top) */
    int pad_b;      /* zero rows below the input, >= 0 */
    int pad_l;      /* zero columns left of the input, >= 0 */
    int pad_r;      /* zero columns right of the input, >= 0 */
    const float *w; /* weights, plain [K][C][3][3]; only read during create */
    const float *b; /* bias [K], or NULL for none; copied during create */
    int with_sum;   /* 1: dst = act(conv + b + dst), the residual already in dst; 0: overwrite */
    int act;        /* SI_WINO_ACT_* */
    float lo, hi;   /* bounds of SI_WINO_ACT_CLIP (lo <= hi); ignored otherwise */
    const float *u; /* or NULL: weights already transformed (si_wino_weights of a create with
                       the same C, K and tile; tile must then be given), used in place and not
                       copied - they must outlive the si_wino_t; w is then not read */
    int tile;       /* output tile m: 2 = F(2x2,3x3), 4 = F(4x4,3x3), 0 = the faster for the
                       shape (si_wino_pick_tile) */
} si_wino_desc_t;

typedef struct si_wino si_wino_t;

/* Builds a convolution: checks d, transforms the weights once (in double,
 * then rounded to float) into the layout of the GEMMs and copies the bias.
 * d and its arrays are not referenced after the call. NULL + err on bad
 * shapes (C or K not a multiple of 8, empty output, negative pads, bad tile),
 * a CPU without AVX2+FMA, or out of memory. */
si_wino_t *si_wino_create(const si_wino_desc_t *d, si_err_t *err);

/* Bytes of scratch one si_wino_run needs: the transformed tiles of the
 * blocks in flight (one per thread when there are enough blocks, else one
 * shared), plus 64 for alignment. */
size_t si_wino_scratch_bytes(const si_wino_t *wc);

/* Bytes the convolution itself holds (transformed weights and bias). */
size_t si_wino_bytes(const si_wino_t *wc);

/* The output tile m in use: 2 or 4. */
int si_wino_tile(const si_wino_t *wc);

/* The transformed weights (*bytes of them), to store and pass back as
 * si_wino_desc_t.u: they depend on the weights, C, K and the tile only. */
const float *si_wino_weights(const si_wino_t *wc, size_t *bytes);

/* Borrowed transformed weights (si_wino_desc_t.u) that lay in [from, from +
 * len) are read at the same offset from to from now on: the caller moved
 * them (modelfile.h, si_model_hot_step). Returns 1 if they were, else 0.
 * Not beside a run. */
int si_wino_repoint(si_wino_t *wc, const void *from, size_t len, void *to);

/* Convolves: src is [N][C/8][H][W][8], dst is [N][K/8][OH][OW][8] (nChw8c);
 * with_sum reads dst first. src and dst must not overlap; scratch holds
 * si_wino_scratch_bytes bytes, any alignment, contents irrelevant. No
 * allocation. Returns 0, or -1 if an argument is NULL. */
int si_wino_run(const si_wino_t *wc, const float *src, float *dst, void *scratch);

/* Frees wc and its weights; NULL is a no-op. */
void si_wino_free(si_wino_t *wc);

/* The tile the automatic choice (d->tile == 0) takes for this shape: 2 or 4,
 * whichever the cost model predicts faster (F(2x2) when the tiles are few:
 * F(4x4)'s 4x weight bytes then cost more than its multiplies save). Only the
 * shape fields of d are read (N, C, H, W, K, pads). */
int si_wino_pick_tile(const si_wino_desc_t *d);

/* 1 when this code is predicted at least 10% faster than oneDNN 2.6's
 * jit:avx2 direct convolution for the shape in d (one thread, weights not in
 * cache), 0 when oneDNN should keep it (and for an empty output). Only the
 * shape fields of d are read; validity is not checked. */
int si_wino_recommended(const si_wino_desc_t *d);

#endif
