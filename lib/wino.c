/* wino.c - Winograd 3x3 convolution on nChw8c tensors. See wino.h.
 *
 * Notation (Lavin & Gray 2015): an output tile of m x m pixels needs an input
 * tile of a x a, a = m + 2; Y = A^T [ (G g G^T) .* (B^T d B) ] A per channel
 * pair, summed over input channels. The a^2 element-wise products summed over
 * C are, for each of the T = a^2 positions, one matrix product
 *   M[p] (tiles x K) = V[p] (tiles x C) * U[p] (C x K).
 *
 * A run walks the tiles (over the whole batch, row-major) in blocks so that a
 * block's V and M stay in L2 between the three phases: input transform ->
 * T GEMMs -> output transform. Layers with big weights (U over 2 MB) use one
 * block of all tiles instead, so that every weight is streamed once per run,
 * not once per block. With 2+ threads either each thread runs whole blocks
 * on its own scratch (enough blocks: no barriers), or the team shares the
 * single block, split inside each phase with a barrier after phases 1 and 2.
 *
 * Layouts (floats):
 *   U: [T][K/16][C][16]  (a trailing panel of 8 when K % 16 == 8): for one
 *      position and one 16-channel output panel, C rows of 16, read as a
 *      stream by the micro-kernel.
 *   V: [T][G][C/8][6][8] per block, G groups of up to 6 tiles: the values
 *      the kernel broadcasts for one input channel lie 8 floats apart, and
 *      the input transform writes 8 channels of one tile as one vector.
 *   M: [T][tiles][K] per block: the kernel stores rows of 16 outputs; the
 *      output transform reads one vector of 8 output channels per position.
 * Every output is a sum in a fixed order whichever block or thread computes
 * it, so results do not depend on the thread count.
 */
#include "wino.h"

#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define SI_AVX2 __attribute__((target("avx2,fma")))
#define SI_AVX2_INLINE __attribute__((target("avx2,fma"), always_inline)) inline

#define MR 6  /* tiles per micro-kernel call: 6 x 2 accumulators = 12 of 16 ymm */
#define NR 16 /* output channels per weight panel (2 ymm) */
/* The micro-kernel prefetches the weight stream this many floats (4 KiB)
 * ahead: hardware prefetchers stop at 4 KiB pages, and at 7x7 / 14x14 the
 * weights (up to 38 MB) come from DRAM. Measured ~10% there, neutral when
 * the weights are cached (the panels after the current one are contiguous). */
#define PF_DIST 1024
/* V + M of one block should fit this, to stay in a core's L2 (512 KiB on
 * EPYC Zen 3) between phases with room for the weight panels. */
#define BLOCK_BUDGET (320u << 10)
/* Weights (U) larger than this are streamed from L3 or DRAM; then a block
 * takes every tile so each weight is read once per run. */
#define BIG_U (2u << 20)

/* Where one tile sits: image, top-left output pixel, and how much of it is
 * inside (rows x cols of output; in_full: its whole input tile is inside). */
typedef struct tile_pos {
    int img, oy, ox;
    int rows, cols, in_full;
} tile_pos_t;

struct si_wino {
    int n, c, h, w, k;
    int pad_t, pad_l;
    int oh, ow;
    int m, a, t;       /* output tile, input tile (m + 2), positions (a * a) */
    int th, tw, tiles; /* tile rows and columns per image, tiles in the batch */
    int with_sum, act;
    float lo, hi;
    int block_tiles;    /* tiles per block at most (a multiple of MR unless all tiles) */
    int threads;        /* team size the scratch is sized for (omp_get_max_threads at create) */
    int buffers;        /* blocks in flight at most: min(blocks, threads) */
    size_t block_bytes; /* V + M of one block of block_tiles, 64-aligned */
    float *u;           /* transformed weights, see the top comment; 64-aligned */
    int u_borrowed;     /* u is the caller's (si_wino_desc_t.u): not freed here */
    float *bias;        /* [k], zeros when the desc had none */
    tile_pos_t *tp;     /* [tiles], row-major over (image, tile row, tile column) */
};

/* ---- transforms (Lavin & Gray 2015, section 4.1 and 4.2) ----
 *
 * F(2x2,3x3), interpolation points 0, 1, -1:
 *   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]
 *   G   = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]
 *   A^T = [1 1 1 0; 0 1 -1 -1]
 * F(4x4,3x3), points 0, 1, -1, 2, -2:
 *   B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0;
 *          0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1]
 *   G   = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1]
 *   A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]
 * Each vector holds the same pixel of 8 channels, so one transform serves 8
 * channels at once. */

static const double G2[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
static const double G4[6][3] = {{1.0 / 4, 0, 0},
                                {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                {0, 0, 1}};

/* B^T x for a = 4. */
SI_AVX2_INLINE static void bt4(const __m256 *x, __m256 *y) {
    y[0] = _mm256_sub_ps(x[0], x[2]);
    y[1] = _mm256_add_ps(x[1], x[2]);
    y[2] = _mm256_sub_ps(x[2], x[1]);
    y[3] = _mm256_sub_ps(x[1], x[3]);
}

/* B^T x for a = 6, in the factored form: 4 FMAs, 1 mul and 8 adds, not 20. */
SI_AVX2_INLINE static void bt6(const __m256 *x, __m256 *y) {
    const __m256 c2 = _mm256_set1_ps(2), c4 = _mm256_set1_ps(4), c5 = _mm256_set1_ps(5);
    __m256 t0 = _mm256_fnmadd_ps(c4, x[2], x[4]); /* x4 - 4 x2 */
    __m256 t1 = _mm256_fnmadd_ps(c4, x[1], x[3]); /* x3 - 4 x1 */
    __m256 t2 = _mm256_sub_ps(x[4], x[2]);
    __m256 t3 = _mm256_mul_ps(c2, _mm256_sub_ps(x[3], x[1]));
    y[0] = _mm256_fmadd_ps(c4, x[0], _mm256_fnmadd_ps(c5, x[2], x[4]));
    y[1] = _mm256_add_ps(t0, t1);
    y[2] = _mm256_sub_ps(t0, t1);
    y[3] = _mm256_add_ps(t2, t3);
    y[4] = _mm256_sub_ps(t2, t3);
    y[5] = _mm256_fmadd_ps(c4, x[1], _mm256_fnmadd_ps(c5, x[3], x[5]));
}

/* A^T x for a = 4 (2 outputs). */
SI_AVX2_INLINE static void at4(const __m256 *x, __m256 *y) {
    y[0] = _mm256_add_ps(_mm256_add_ps(x[0], x[1]), x[2]);
    y[1] = _mm256_sub_ps(_mm256_sub_ps(x[1], x[2]), x[3]);
}

/* A^T x for a = 6 (4 outputs). */
SI_AVX2_INLINE static void at6(const __m256 *x, __m256 *y) {
    const __m256 c2 = _mm256_set1_ps(2), c4 = _mm256_set1_ps(4), c8 = _mm256_set1_ps(8);
    __m256 s1 = _mm256_add_ps(x[1], x[2]), d1 = _mm256_sub_ps(x[1], x[2]);
    __m256 s2 = _mm256_add_ps(x[3], x[4]), d2 = _mm256_sub_ps(x[3], x[4]);
    y[0] = _mm256_add_ps(_mm256_add_ps(x[0], s1), s2);
    y[1] = _mm256_fmadd_ps(c2, d2, d1);
    y[2] = _mm256_fmadd_ps(c4, s2, s1);
    y[3] = _mm256_add_ps(_mm256_fmadd_ps(c8, d2, d1), x[5]);
}

/* Input transform of one tile of 8 channels (a is a constant where this is
 * inlined, so every loop unrolls). Pixel (i, j) of the tile is at
 * d + (i - r0) * rs + (j - c0) * 8 when i in [r0, r1) and j in [c0, c1),
 * else zero padding (FULL: the whole tile is inside, r0 = c0 = 0); d points
 * at a real pixel so no pointer leaves the tensor. Writes the a * a vectors of B^T d B to
 * v, positions vs floats apart. */
SI_AVX2_INLINE static void in_tile(int a, int FULL, const float *d, ptrdiff_t rs, int r0, int r1,
                                   int c0, int c1, float *v, ptrdiff_t vs) {
    __m256 t[36], x[6], y[6];
#pragma GCC unroll 6
    for (int j = 0; j < a; j++) { /* columns: B^T d */
#pragma GCC unroll 6
        for (int i = 0; i < a; i++)
            x[i] = FULL || (i >= r0 && i < r1 && j >= c0 && j < c1)
                       ? _mm256_loadu_ps(d + (i - r0) * rs + (j - c0) * 8)
                       : _mm256_setzero_ps();
        if (a == 4)
            bt4(x, y);
        else
            bt6(x, y);
#pragma GCC unroll 6
        for (int i = 0; i < a; i++) t[i * a + j] = y[i];
    }
#pragma GCC unroll 6
    for (int i = 0; i < a; i++) { /* rows: (B^T d) B */
        if (a == 4)
            bt4(t + i * a, y);
        else
            bt6(t + i * a, y);
#pragma GCC unroll 6
        for (int j = 0; j < a; j++) _mm256_storeu_ps(v + (i * a + j) * vs, y[j]);
    }
}

/* What the output transform adds after A^T M A. */
typedef struct epilogue {
    __m256 bias, lo, hi;
    int with_sum, act;
} epilogue_t;

SI_AVX2_INLINE static void put(const epilogue_t *ep, __m256 r, float *py) {
    r = _mm256_add_ps(r, ep->bias);
    if (ep->with_sum) r = _mm256_add_ps(r, _mm256_loadu_ps(py));
    if (ep->act == SI_WINO_ACT_RELU)
        r = _mm256_max_ps(r, _mm256_setzero_ps());
    else if (ep->act == SI_WINO_ACT_CLIP)
        r = _mm256_min_ps(_mm256_max_ps(r, ep->lo), ep->hi);
    _mm256_storeu_ps(py, r);
}

/* Output transform of one tile of 8 channels: reads a * a vectors from mm
 * (ms floats apart) and writes the rows x cols valid pixels of
 * act(A^T M A + bias (+ dst)) to y, rows ys floats apart (FULL: all m x m). */
SI_AVX2_INLINE static void out_tile(int a, int FULL, const float *mm, ptrdiff_t ms,
                                    const epilogue_t *ep, float *y, ptrdiff_t ys, int rows,
                                    int cols) {
    const int m = a - 2;
    __m256 t[24], x[6], o[4];
#pragma GCC unroll 6
    for (int j = 0; j < a; j++) { /* A^T M: m x a */
#pragma GCC unroll 6
        for (int i = 0; i < a; i++) x[i] = _mm256_loadu_ps(mm + (i * a + j) * ms);
        if (a == 4)
            at4(x, o);
        else
            at6(x, o);
#pragma GCC unroll 4
        for (int i = 0; i < m; i++) t[i * a + j] = o[i];
    }
#pragma GCC unroll 4
    for (int i = 0; i < m; i++) { /* (A^T M) A: m x m */
        if (a == 4)
            at4(t + i * a, o);
        else
            at6(t + i * a, o);
        if (FULL || i < rows) {
#pragma GCC unroll 4
            for (int j = 0; j < m; j++)
                if (FULL || j < cols) put(ep, o[j], y + i * ys + j * 8);
        }
    }
}

/* ---- the GEMM micro-kernel ----
 * out[i][0..8*NV) = sum over c of v[tile i][c] * u[c][0..8*NV), for i < ROWS.
 * v is one group of the V layout ([C/8][6][8]), u one weight panel ([C][8*NV]),
 * out rows ldo floats apart. The whole C is reduced in registers, so M is
 * written once and never read back by the GEMM. */
SI_AVX2_INLINE static void kern(int ROWS, int NV, const float *v, const float *u, int ncb,
                                float *out, ptrdiff_t ldo) {
    /* Every loop over ROWS, NV and the 8 channels is unrolled outright (-O2
     * alone does not), so the 12 accumulators live in registers. */
    __m256 acc[MR][2];
#pragma GCC unroll 6
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    for (int cb = 0; cb < ncb; cb++) {
#pragma GCC unroll 8
        for (int cc = 0; cc < 8; cc++) {
            __m256 w0 = _mm256_loadu_ps(u + cc * 8 * NV);
            __m256 w1 = NV == 2 ? _mm256_loadu_ps(u + cc * 8 * NV + 8) : w0;
#pragma GCC unroll 6
            for (int i = 0; i < ROWS; i++) {
                __m256 x = _mm256_broadcast_ss(v + i * 8 + cc);
                acc[i][0] = _mm256_fmadd_ps(x, w0, acc[i][0]);
                if (NV == 2) acc[i][1] = _mm256_fmadd_ps(x, w1, acc[i][1]);
            }
        }
#pragma GCC unroll 8
        for (int l = 0; l < 4 * NV; l++) /* the 4 * NV cache lines this cb step consumed */
            _mm_prefetch((const char *)(u + PF_DIST + 16 * l), _MM_HINT_T0);
        u += 64 * NV;
        v += MR * 8;
    }
#pragma GCC unroll 6
    for (int i = 0; i < ROWS; i++) {
        _mm256_storeu_ps(out + i * ldo, acc[i][0]);
        if (NV == 2) _mm256_storeu_ps(out + i * ldo + 8, acc[i][1]);
    }
}

/* kern with ROWS and NV as constants: one specialized loop each. */
SI_AVX2 static void kern_any(int rows, int nv, const float *v, const float *u, int ncb, float *out,
                             ptrdiff_t ldo) {
    if (nv == 2) {
        switch (rows) {
        case 1: kern(1, 2, v, u, ncb, out, ldo); break;
        case 2: kern(2, 2, v, u, ncb, out, ldo); break;
        case 3: kern(3, 2, v, u, ncb, out, ldo); break;
        case 4: kern(4, 2, v, u, ncb, out, ldo); break;
        case 5: kern(5, 2, v, u, ncb, out, ldo); break;
        default: kern(6, 2, v, u, ncb, out, ldo); break;
        }
    } else {
        switch (rows) {
        case 1: kern(1, 1, v, u, ncb, out, ldo); break;
        case 2: kern(2, 1, v, u, ncb, out, ldo); break;
        case 3: kern(3, 1, v, u, ncb, out, ldo); break;
        case 4: kern(4, 1, v, u, ncb, out, ldo); break;
        case 5: kern(5, 1, v, u, ncb, out, ldo); break;
        default: kern(6, 1, v, u, ncb, out, ldo); break;
        }
    }
}

/* ---- one block of tiles ---- */

/* Tiles of a block go to ngr = ceil(nt / MR) kernel groups of balanced size
 * (49 tiles: 4 x 6 + 5 x 5, not 8 x 6 + 1: a 1-row call runs at a third of
 * the speed of the others). The first `big` groups have base + 1 tiles. */
typedef struct groups {
    int ngr, base, big;
} groups_t;

static groups_t groups_of(int nt) {
    groups_t g;
    g.ngr = (nt + MR - 1) / MR;
    g.base = nt / g.ngr, g.big = nt % g.ngr;
    return g;
}

/* First tile of group g. */
static int group_start(const groups_t *gs, int g) {
    return g * gs->base + (g < gs->big ? g : gs->big);
}

/* Group and slot of tile ti. */
static void group_of(const groups_t *gs, int ti, int *g, int *slot) {
    int cut = gs->big * (gs->base + 1);
    if (ti < cut)
        *g = ti / (gs->base + 1), *slot = ti % (gs->base + 1);
    else
        *g = gs->big + (ti - cut) / gs->base, *slot = (ti - cut) % gs->base;
}

/* Phase 1, items [lo, hi) of (channel block major, tile): input tiles to V.
 * Channel block major so that neighbouring tiles, which overlap by 2
 * columns, are transformed one after the other. */
SI_AVX2_INLINE static void phase_in(int a, const si_wino_t *wc, const float *src, int t0, int nt,
                                    const groups_t *gs, float *V, ptrdiff_t vs, int lo, int hi) {
    const int C = wc->c, ncb = C / 8;
    const ptrdiff_t rs = (ptrdiff_t)wc->w * 8, plane = (ptrdiff_t)wc->h * rs;
    for (int it = lo; it < hi;) {
        int cb = it / nt, ti = it % nt, end = (cb + 1) * nt < hi ? (cb + 1) * nt : hi;
        for (; it < end; it++, ti++) {
            const tile_pos_t *tp = &wc->tp[t0 + ti];
            const float *p = src + ((ptrdiff_t)tp->img * ncb + cb) * plane;
            int g, slot;
            group_of(gs, ti, &g, &slot);
            float *v = V + (ptrdiff_t)g * MR * C + (cb * MR + slot) * 8;
            int y0 = tp->oy - wc->pad_t, x0 = tp->ox - wc->pad_l;
            if (tp->in_full) {
                in_tile(a, 1, p + y0 * rs + x0 * 8, rs, 0, a, 0, a, v, vs);
            } else { /* rows/columns outside the input read as zeros (padding) */
                int r0 = y0 < 0 ? -y0 : 0, r1 = wc->h - y0 < a ? wc->h - y0 : a;
                int c0 = x0 < 0 ? -x0 : 0, c1 = wc->w - x0 < a ? wc->w - x0 : a;
                in_tile(a, 0, p + (y0 + r0) * rs + (x0 + c0) * 8, rs, r0, r1, c0, c1, v, vs);
            }
        }
    }
}

/* Phase 3, items [lo, hi) of (output channel block major, tile): M to dst. */
SI_AVX2_INLINE static void phase_out(int a, const si_wino_t *wc, float *dst, int t0, int nt,
                                     const float *M, ptrdiff_t ms, int lo, int hi) {
    const int K = wc->k, nkb = K / 8;
    const ptrdiff_t rs = (ptrdiff_t)wc->ow * 8, plane = (ptrdiff_t)wc->oh * rs;
    epilogue_t ep = {_mm256_setzero_ps(), _mm256_set1_ps(wc->lo), _mm256_set1_ps(wc->hi),
                     wc->with_sum, wc->act};
    for (int it = lo; it < hi;) {
        int kb = it / nt, ti = it % nt, end = (kb + 1) * nt < hi ? (kb + 1) * nt : hi;
        ep.bias = _mm256_loadu_ps(wc->bias + kb * 8);
        for (; it < end; it++, ti++) {
            const tile_pos_t *tp = &wc->tp[t0 + ti];
            float *y = dst + ((ptrdiff_t)tp->img * nkb + kb) * plane + tp->oy * rs + tp->ox * 8;
            const float *mm = M + (ptrdiff_t)ti * K + kb * 8;
            if (tp->rows == a - 2 && tp->cols == a - 2)
                out_tile(a, 1, mm, ms, &ep, y, rs, a - 2, a - 2);
            else
                out_tile(a, 0, mm, ms, &ep, y, rs, tp->rows, tp->cols);
        }
    }
}

/* One block in flight: tiles [t0, t0 + nt), its V and M. */
typedef struct block {
    int t0, nt;
    groups_t gs;
    float *V, *M;
    ptrdiff_t vs, ms; /* floats between positions in V and in M */
} block_t;

static block_t block_at(const si_wino_t *wc, int t0, int nt, float *buf) {
    block_t b = {t0, nt, groups_of(nt), buf, NULL, 0, 0};
    b.vs = (ptrdiff_t)b.gs.ngr * MR * wc->c;
    b.ms = (ptrdiff_t)nt * wc->k;
    b.M = buf + wc->t * b.vs;
    return b;
}

/* Work items of each phase: (channel block, tile), (position, weight
 * panel), (output channel block, tile). */
static int items(const si_wino_t *wc, const block_t *b, int phase) {
    return phase == 1   ? b->nt * (wc->c / 8)
           : phase == 2 ? wc->t * ((wc->k + NR - 1) / NR)
                        : b->nt * (wc->k / 8);
}

/* Phase 1 (input transform) or 3 (output transform), items [lo, hi). */
SI_AVX2 static void transform(const si_wino_t *wc, const block_t *b, int phase, const float *src,
                              float *dst, int lo, int hi) {
    if (phase == 1 && wc->a == 4) phase_in(4, wc, src, b->t0, b->nt, &b->gs, b->V, b->vs, lo, hi);
    if (phase == 1 && wc->a == 6) phase_in(6, wc, src, b->t0, b->nt, &b->gs, b->V, b->vs, lo, hi);
    if (phase == 3 && wc->a == 4) phase_out(4, wc, dst, b->t0, b->nt, b->M, b->ms, lo, hi);
    if (phase == 3 && wc->a == 6) phase_out(6, wc, dst, b->t0, b->nt, b->M, b->ms, lo, hi);
}

/* Phase 2, items [lo, hi) of (position, weight panel): M[p] = V[p] U[p]
 * for one 16-channel panel of U (C x 16 floats), which stays in L1/L2
 * while every tile group of the block passes by it. */
SI_AVX2 static void gemms(const si_wino_t *wc, const block_t *b, int lo, int hi) {
    const int C = wc->c, K = wc->k, nkp = (K + NR - 1) / NR;
    for (int it = lo; it < hi; it++) {
        int p = it / nkp, kp = it % nkp, nv = K - kp * NR >= NR ? 2 : 1;
        const float *u = wc->u + (size_t)p * C * K + (size_t)kp * NR * C;
        for (int g = 0; g < b->gs.ngr; g++) {
            int first = group_start(&b->gs, g), rows = b->gs.base + (g < b->gs.big);
            kern_any(rows, nv, b->V + p * b->vs + (ptrdiff_t)g * MR * C, u, C / 8,
                     b->M + p * b->ms + (ptrdiff_t)first * K + kp * NR, K);
        }
    }
}

/* A whole block on the calling thread. */
static void run_block(const si_wino_t *wc, const block_t *b, const float *src, float *dst) {
    transform(wc, b, 1, src, dst, 0, items(wc, b, 1));
    gemms(wc, b, 0, items(wc, b, 2));
    transform(wc, b, 3, src, dst, 0, items(wc, b, 3));
}

/* A block shared by the team (call from every thread of it). Each phase is
 * cut into chunks taken dynamically, so a thread slowed down by another
 * process on its core takes fewer. Two barriers: after phase 1 (V complete)
 * and after phase 2 (M complete). Phase 3 needs none: the next block writes
 * M only after its own phase-1 barrier, which every thread reaches after
 * finishing its phase 3 here. */
static void run_block_shared(const si_wino_t *wc, const block_t *b, const float *src, float *dst,
                             int nth) {
    for (int phase = 1; phase <= 3; phase++) {
        int n = items(wc, b, phase), nch = n < 16 * nth ? n : 16 * nth;
        if (phase < 3) {
#pragma omp for schedule(dynamic, 1)
            for (int ch = 0; ch < nch; ch++) {
                int lo = (int)((long long)n * ch / nch), hi = (int)((long long)n * (ch + 1) / nch);
                if (phase == 1)
                    transform(wc, b, 1, src, dst, lo, hi);
                else
                    gemms(wc, b, lo, hi);
            }
        } else {
#pragma omp for schedule(dynamic, 1) nowait
            for (int ch = 0; ch < nch; ch++) {
                int lo = (int)((long long)n * ch / nch), hi = (int)((long long)n * (ch + 1) / nch);
                transform(wc, b, 3, src, dst, lo, hi);
            }
        }
    }
}

/* ---- create / run ---- */

/* V + M of a block of nt tiles (see block_at), 64-aligned; grows with nt. */
static size_t block_bytes(int nt, int t, int c, int k) {
    size_t vrows = (size_t)(nt + MR - 1) / MR * MR;
    size_t floats = (size_t)t * (vrows * (size_t)c + (size_t)nt * (size_t)k);
    return (floats * sizeof(float) + 63) & ~(size_t)63;
}

/* ---- choosing: a cost model fitted to bench/wino_bench.c ----
 * Both are bound by two things: multiply-adds and streaming the weights
 * (in a whole network they never stay cached: ResNet50 holds ~100 MB). On
 * a 2-core EPYC (Zen 3), 1 thread, fitted over 13 shapes (ResNet50's, bands,
 * 1-row bands) with a fixed 0.3 ns per transformed element:
 *   Winograd: GEMM flops / 77 GF/s + U bytes / 23 GB/s
 *             + 0.3 ns x T x tiles x (C + K), GEMM rows below 4 per kernel
 *             call slowed in proportion (FMA latency 4 x 2 pipes needs 8
 *             independent accumulators: 4 rows x 2 vectors);
 *   oneDNN direct: flops / 73 GF/s + weight bytes / 21 GB/s.
 * It picks the measured winner in all 26 decisions of that bench. */

static int oh_of(const si_wino_desc_t *d) {
    return d->H + d->pad_t + d->pad_b - 2;
}
static int ow_of(const si_wino_desc_t *d) {
    return d->W + d->pad_l + d->pad_r - 2;
}

/* Predicted ms of a run with tile m (output at least 1 x 1). */
static double wino_ms(const si_wino_desc_t *d, int m) {
    double T = (m + 2) * (m + 2), ck = (double)d->C * d->K;
    long long nt = (long long)d->N * ((oh_of(d) + m - 1) / m) * ((ow_of(d) + m - 1) / m);
    double tiles = (double)nt, groups = (double)((nt + MR - 1) / MR), rows = tiles / groups;
    double slow = rows < 4 ? 4 / rows : 1;
    return T * ck * (2 * tiles * slow / 77e6 + 4 / 23e6) + 0.3e-6 * T * tiles * (d->C + d->K);
}

/* Predicted ms of oneDNN's jit:avx2 direct convolution. */
static double direct_ms(const si_wino_desc_t *d) {
    double ck9 = 9.0 * d->C * d->K;
    return ck9 * (2.0 * d->N * oh_of(d) * ow_of(d) / 73e6 + 4 / 21e6);
}

int si_wino_pick_tile(const si_wino_desc_t *d) {
    if (oh_of(d) < 1 || ow_of(d) < 1) return 2;
    return wino_ms(d, 4) < wino_ms(d, 2) ? 4 : 2;
}

int si_wino_recommended(const si_wino_desc_t *d) {
    if (oh_of(d) < 1 || ow_of(d) < 1) return 0;
    /* a 10% margin: the model's error on the bench is about that */
    return wino_ms(d, si_wino_pick_tile(d)) < 0.9 * direct_ms(d);
}

/* U[p][panel][c][kk] = (G g G^T)[p] for g = w[k][c], in double. */
static void transform_weights(si_wino_t *wc, const float *w) {
    const int a = wc->a, C = wc->c, K = wc->k;
    const double(*G)[3] = a == 4 ? G2 : G4;
    for (int k = 0; k < K; k++) {
        int kp = k / NR, pw = K - kp * NR >= NR ? NR : K - kp * NR;
        for (int c = 0; c < C; c++) {
            const float *g = w + ((size_t)k * C + c) * 9;
            double tg[6][3], u[6][6];
            for (int i = 0; i < a; i++) /* G g */
                for (int j = 0; j < 3; j++)
                    tg[i][j] = G[i][0] * g[j] + G[i][1] * g[3 + j] + G[i][2] * g[6 + j];
            for (int i = 0; i < a; i++) /* (G g) G^T */
                for (int j = 0; j < a; j++)
                    u[i][j] = tg[i][0] * G[j][0] + tg[i][1] * G[j][1] + tg[i][2] * G[j][2];
            for (int p = 0; p < a * a; p++)
                wc->u[(size_t)p * C * K + (size_t)kp * NR * C + (size_t)c * pw + k % NR] =
                    (float)u[p / a][p % a];
        }
    }
}

si_wino_t *si_wino_create(const si_wino_desc_t *d, si_err_t *err) {
    if (!d || (!d->w && !d->u)) {
        si_err_set(err, "winograd: no descriptor or no weights");
        return NULL;
    }
    int oh = d->H + d->pad_t + d->pad_b - 2, ow = d->W + d->pad_l + d->pad_r - 2;
    if (d->N < 1 || d->C < 8 || d->K < 8 || d->H < 1 || d->W < 1 || d->C % 8 || d->K % 8) {
        si_err_set(err,
                   "winograd: needs N >= 1, H, W >= 1 and C, K multiples of 8 "
                   "(have N %d C %d H %d W %d K %d)",
                   d->N, d->C, d->H, d->W, d->K);
        return NULL;
    }
    if (d->pad_t < 0 || d->pad_b < 0 || d->pad_l < 0 || d->pad_r < 0 || oh < 1 || ow < 1) {
        si_err_set(err, "winograd: pads %d %d %d %d on %dx%d leave a %dx%d output", d->pad_t,
                   d->pad_b, d->pad_l, d->pad_r, d->H, d->W, oh, ow);
        return NULL;
    }
    if (d->tile != 0 && d->tile != 2 && d->tile != 4) {
        si_err_set(err, "winograd: tile %d is not 0 (auto), 2 or 4", d->tile);
        return NULL;
    }
    if (d->act < SI_WINO_ACT_NONE || d->act > SI_WINO_ACT_CLIP ||
        (d->act == SI_WINO_ACT_CLIP && !(d->lo <= d->hi))) {
        si_err_set(err, "winograd: bad activation %d (lo %g, hi %g)", d->act, (double)d->lo,
                   (double)d->hi);
        return NULL;
    }
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
        si_err_set(err, "winograd: this CPU has no AVX2+FMA");
        return NULL;
    }
    if ((size_t)d->C * d->K > ((size_t)1 << 26)) { /* keeps p * C * K in range everywhere */
        si_err_set(err, "winograd: C x K = %d x %d is too large", d->C, d->K);
        return NULL;
    }
    si_wino_t *wc = calloc(1, sizeof *wc);
    if (!wc) goto oom;
    wc->n = d->N, wc->c = d->C, wc->h = d->H, wc->w = d->W, wc->k = d->K;
    wc->pad_t = d->pad_t, wc->pad_l = d->pad_l, wc->oh = oh, wc->ow = ow;
    wc->m = d->tile ? d->tile : si_wino_pick_tile(d);
    wc->a = wc->m + 2, wc->t = wc->a * wc->a;
    wc->th = (oh + wc->m - 1) / wc->m, wc->tw = (ow + wc->m - 1) / wc->m;
    long long tiles = (long long)d->N * wc->th * wc->tw;
    if (tiles > (1 << 26)) {
        si_err_set(err, "winograd: %lld tiles is too many", tiles);
        free(wc);
        return NULL;
    }
    wc->tiles = (int)tiles;
    wc->with_sum = d->with_sum != 0, wc->act = d->act, wc->lo = d->lo, wc->hi = d->hi;

    /* Block size: as many tiles as keep V + M within BLOCK_BUDGET (whole
     * groups of MR), but all of them when the weights are big. */
    size_t ubytes = (size_t)wc->t * d->C * d->K * sizeof(float);
    size_t per_tile = (size_t)wc->t * (d->C + d->K) * sizeof(float);
    int bt = (int)(BLOCK_BUDGET / per_tile) / MR * MR;
    if (bt < MR) bt = MR;
    if (ubytes > BIG_U || bt > wc->tiles) bt = wc->tiles;
    wc->block_tiles = bt;
    wc->threads = omp_get_max_threads();
    int blocks = (wc->tiles + bt - 1) / bt; /* plan() runs blocks in parallel only if >= team */
    wc->buffers = blocks < wc->threads ? blocks : wc->threads;
    wc->block_bytes = block_bytes(bt, wc->t, d->C, d->K);

    if (d->u && !d->tile) {
        si_err_set(err, "winograd: pre-transformed weights need an explicit tile");
        si_wino_free(wc);
        return NULL;
    }
    /* Pre-transformed weights (a model file made by convert) are used where
     * they lie, typically a read-only file mapping: no copy, no transform. */
    wc->u = d->u ? (float *)d->u : aligned_alloc(64, (ubytes + 63) & ~(size_t)63);
    wc->u_borrowed = d->u != NULL;
    wc->bias = calloc((size_t)d->K, sizeof(float));
    if (!wc->u || !wc->bias) goto oom;
    if (d->b) memcpy(wc->bias, d->b, (size_t)d->K * sizeof(float));
    wc->tp = malloc((size_t)wc->tiles * sizeof *wc->tp);
    if (!wc->tp) goto oom;
    for (int t = 0; t < wc->tiles; t++) {
        tile_pos_t *tp = &wc->tp[t];
        int per_img = wc->th * wc->tw, m = wc->m;
        tp->img = t / per_img;
        tp->oy = t % per_img / wc->tw * m, tp->ox = t % wc->tw * m;
        tp->rows = oh - tp->oy < m ? oh - tp->oy : m;
        tp->cols = ow - tp->ox < m ? ow - tp->ox : m;
        int y0 = tp->oy - d->pad_t, x0 = tp->ox - d->pad_l;
        tp->in_full = y0 >= 0 && x0 >= 0 && y0 + wc->a <= d->H && x0 + wc->a <= d->W;
    }
    if (!d->u) transform_weights(wc, d->w);
    return wc;
oom:
    si_wino_free(wc);
    si_err_set(err, "winograd: out of memory for the weights of a %d -> %d conv", d->C, d->K);
    return NULL;
}

/* Blocks of a run with nth threads: shared = 1 when the team splits each
 * block (fewer blocks than threads), else each thread takes whole blocks;
 * the block count is then a multiple of nth so they finish together. */
static void plan(const si_wino_t *wc, int nth, int *shared, int *nblocks, int *bt) {
    int nb = (wc->tiles + wc->block_tiles - 1) / wc->block_tiles;
    *shared = nth > 1 && nb < nth;
    if (nth > 1 && !*shared) nb = (nb + nth - 1) / nth * nth;
    *nblocks = nb;
    *bt = (wc->tiles + nb - 1) / nb;
}

size_t si_wino_scratch_bytes(const si_wino_t *wc) {
    return (size_t)wc->buffers * wc->block_bytes + 64;
}

size_t si_wino_bytes(const si_wino_t *wc) {
    return (size_t)wc->t * wc->c * wc->k * sizeof(float) + (size_t)wc->k * sizeof(float);
}

int si_wino_tile(const si_wino_t *wc) {
    return wc->m;
}

const float *si_wino_weights(const si_wino_t *wc, size_t *bytes) {
    *bytes = (size_t)wc->t * wc->c * wc->k * sizeof(float);
    return wc->u;
}

int si_wino_repoint(si_wino_t *wc, const void *from, size_t len, void *to) {
    const char *u = (const char *)wc->u, *lo = from;
    if (!wc->u_borrowed || u < lo || u >= lo + len) return 0;
    wc->u = (float *)((char *)to + (u - lo));
    return 1;
}

int si_wino_run(const si_wino_t *wc, const float *src, float *dst, void *scratch) {
    if (!wc || !src || !dst || !scratch) return -1;
    float *base = (float *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    int nth = omp_in_parallel() ? 1 : omp_get_max_threads();
    if (nth > wc->threads) nth = wc->threads;
    int shared, nb, bt;
    plan(wc, nth, &shared, &nb, &bt);
    if (nth == 1) { /* no parallel region at all: nothing to pay for at one thread */
        for (int t0 = 0; t0 < wc->tiles; t0 += bt) {
            block_t b = block_at(wc, t0, wc->tiles - t0 < bt ? wc->tiles - t0 : bt, base);
            run_block(wc, &b, src, dst);
        }
        return 0;
    }
    size_t stride = wc->block_bytes / sizeof(float);
#pragma omp parallel num_threads(nth)
    {
        if (shared) {
            for (int t0 = 0; t0 < wc->tiles; t0 += bt) {
                block_t b = block_at(wc, t0, wc->tiles - t0 < bt ? wc->tiles - t0 : bt, base);
                run_block_shared(wc, &b, src, dst, omp_get_num_threads());
            }
        } else {
            float *mine = base + (size_t)omp_get_thread_num() * stride;
#pragma omp for schedule(dynamic, 1)
            for (int i = 0; i < nb; i++) {
                int t0 = i * bt;
                if (t0 >= wc->tiles) continue;
                block_t b = block_at(wc, t0, wc->tiles - t0 < bt ? wc->tiles - t0 : bt, mine);
                run_block(wc, &b, src, dst);
            }
        }
    }
    return 0;
}

void si_wino_free(si_wino_t *wc) {
    if (!wc) return;
    if (!wc->u_borrowed) free(wc->u);
    free(wc->bias);
    free(wc->tp);
    free(wc);
}
