/* stage.c - a stage function's core. See stage.h. */
#include "stage.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "engine.h"

#define STAGE_ENGINES 8 /* cached (batch, band, layouts) engines; a plan uses one or two */

typedef struct cached {
    int batch, out_begin, out_end;          /* key: batch, output rows, */
    si_wire_layout_t in_layout, out_layout; /*   and layouts */
    int in_begin, in_end;                   /* input rows it reads */
    si_engine_t *engine;
    float *out;                    /* si_engine_out_numel floats, for warm-up runs */
    uint64_t last_used;
} cached_t;

struct si_stage {
    si_graph_t *g;
    si_segment_t seg;
    char spec[SI_MAX_NAME];
    pthread_mutex_t lock; /* guards everything below and the engines' runs */
    cached_t cache[STAGE_ENGINES];
    uint64_t tick;
    uint64_t last_encode_us; /* see si_stage_call */
    int threads; /* compute threads: the creating thread's si_engine_threads() */
    int has_next; /* chained requests are passed on (si_stage_set_next) */
};

static uint64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

si_stage_t *si_stage_new(si_graph_t *g, const char *segment, si_err_t *err) {
    si_stage_t *s = calloc(1, sizeof *s);
    if (!s) {
        si_err_set(err, "out of memory");
        si_graph_free(g);
        return NULL;
    }
    s->g = g;
    if (si_graph_segment(g, segment, &s->seg, err) < 0) {
        si_graph_free(g);
        free(s);
        return NULL;
    }
    snprintf(s->spec, sizeof s->spec, "%s", segment ? segment : "all");
    s->threads = si_engine_threads();
    pthread_mutex_init(&s->lock, NULL);
    return s;
}

static void cached_clear(cached_t *c) {
    si_engine_free(c->engine);
    free(c->out);
    memset(c, 0, sizeof *c);
}

void si_stage_free(si_stage_t *s) {
    if (!s) return;
    for (int i = 0; i < STAGE_ENGINES; i++) cached_clear(&s->cache[i]);
    pthread_mutex_destroy(&s->lock);
    si_graph_free(s->g);
    free(s);
}

void si_stage_set_next(si_stage_t *s, int has_next) { s->has_next = has_next; }

const si_segment_t *si_stage_segment(const si_stage_t *s) { return &s->seg; }
const si_graph_t *si_stage_graph(const si_stage_t *s) { return s->g; }

static int out_rows(const si_stage_t *s) {
    const si_value_t *y = &s->g->values[s->seg.out];
    return y->ndim == 4 ? y->dims[2] : 1;
}

/* The engine for (batch, rows [a, b), layouts), compiled on a miss; the least
 * recently used one makes room. Caller holds the lock. */
static cached_t *engine_for(si_stage_t *s, int batch, int a, int b, si_wire_layout_t lin,
                            si_wire_layout_t lout, si_err_t *err) {
    cached_t *victim = &s->cache[0];
    for (int i = 0; i < STAGE_ENGINES; i++) {
        cached_t *c = &s->cache[i];
        if (c->engine && c->batch == batch && c->out_begin == a && c->out_end == b &&
            c->in_layout == lin && c->out_layout == lout) {
            c->last_used = ++s->tick;
            return c;
        }
        if (!c->engine || (victim->engine && c->last_used < victim->last_used)) victim = c;
    }
    cached_clear(victim);
    si_band_t band;
    if (si_graph_band(s->g, &s->seg, a, b, &band, err) < 0) return NULL;
    si_engine_t *e = si_engine_create_io(s->g, &s->seg, &band, batch, (si_io_layout_t)lin,
                                         (si_io_layout_t)lout, err);
    int ib = band.in_begin, ie = band.in_end;
    si_band_free(&band);
    if (!e) return NULL;
    float *out = malloc(si_engine_out_numel(e) * sizeof *out);
    if (!out) {
        si_engine_free(e);
        si_err_set(err, "out of memory");
        return NULL;
    }
    *victim = (cached_t){batch, a, b, lin, lout, ib, ie, e, out, ++s->tick};
    return victim;
}

/* A 2-d tensor is NC: whatever was asked, it goes as NCHW. */
static si_wire_layout_t layout_of(const si_stage_t *s, int v, si_wire_layout_t asked) {
    return s->g->values[v].ndim == 4 ? asked : SI_WIRE_NCHW;
}

static si_wire_layout_t warm_in_layout(const si_stage_t *s) {
    /* The gateway sends the model's input as it preprocessed it (NCHW) and
     * every activation as a function gave it (NHWC). */
    return s->seg.in == 0 ? SI_WIRE_NCHW : layout_of(s, s->seg.in, SI_WIRE_NHWC);
}

/* The mapped model file's pages, in before the first request needs them. */
static void populate_weights(const si_stage_t *s) {
    if (!s->g->map || !s->g->map_len) return; /* weights read into memory: in already */
#ifdef MADV_POPULATE_READ
    if (madvise(s->g->map, s->g->map_len, MADV_POPULATE_READ) == 0) return;
#endif
    volatile const char *p = s->g->map; /* older kernels: one read per page */
    for (size_t i = 0; i < s->g->map_len; i += 4096) (void)p[i];
}

int si_stage_warmup(si_stage_t *s, int k, int K, int runs, si_err_t *err) {
    int h = out_rows(s);
    if (K < 1 || K > h || k >= K) return si_err_set(err, "band %d of %d: %s has %d rows", k, K, s->spec, h);
    if (runs < 0) return si_err_set(err, "warm-up runs %d < 0", runs);
    pthread_mutex_lock(&s->lock);
    int rc = 0;
    for (int j = k < 0 ? 0 : k; rc == 0 && j < (k < 0 ? K : k + 1); j++) {
        int a, b;
        si_rows_split(h, K, j, &a, &b);
        cached_t *c = engine_for(s, 1, a, b, warm_in_layout(s),
                                 layout_of(s, s->seg.out, SI_WIRE_NHWC), err);
        if (!c) {
            rc = -1;
            break;
        }
        float *in = runs ? calloc(si_engine_in_numel(c->engine), sizeof *in) : NULL;
        if (runs && !in) rc = si_err_set(err, "out of memory");
        for (int r = 0; rc == 0 && r < runs; r++) rc = si_engine_run(c->engine, in, c->out, err);
        free(in);
    }
    if (rc == 0 && runs == 0) populate_weights(s);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

/* Checks a decoded request against this segment; fills the band wanted. */
static int check_request(const si_stage_t *s, const si_wire_request_t *rq, int *a, int *b,
                         si_err_t *err) {
    si_segment_t asked;
    if (si_graph_segment(s->g, rq->segment, &asked, err) < 0) return -1;
    if (asked.cut_begin != s->seg.cut_begin || asked.cut_end != s->seg.cut_end)
        return si_err_set(err, "this function serves segment %s, not %s", s->spec, rq->segment);
    const si_value_t *x = &s->g->values[s->seg.in];
    const si_wire_tensor_t *t = &rq->input;
    if (t->ndim != x->ndim || t->dims[1] != x->dims[1] || (x->ndim == 4 && t->dims[3] != x->dims[3]))
        return si_err_set(err, "input of %d dims with %lld channels; segment %s takes [N,%d%s]",
                          t->ndim, (long long)t->dims[1], s->spec, x->dims[1],
                          x->ndim == 4 ? ",H,W" : "");
    if (t->dims[0] < 1 || t->dims[0] > 64)
        return si_err_set(err, "batch %lld outside 1..64", (long long)t->dims[0]);
    if (rq->n_then && !s->has_next)
        return si_err_set(err, "this function (%s) has no next function to pass its output on to "
                          "%s: start it with --next URL", s->spec, rq->then[0]);
    *a = rq->out_row_begin, *b = rq->out_row_end;
    if (*a == 0 && *b == 0) *b = out_rows(s);
    if (*a < 0 || *b > out_rows(s) || *a >= *b)
        return si_err_set(err, "output rows [%d, %d) outside the %d rows of %s", *a, *b,
                          out_rows(s), s->spec);
    return 0;
}

si_stage_status_t si_stage_call(si_stage_t *s, const uint8_t *body, size_t len,
                                si_stage_reply_t *reply, si_err_t *err) {
    memset(reply, 0, sizeof *reply);
    uint64_t t0 = now_us();
    si_wire_request_t rq;
    if (si_wire_decode_request_view(body, len, &rq, NULL, err) < 0) return SI_STAGE_BAD_MESSAGE;
    int a = 0, b = 0;
    if (check_request(s, &rq, &a, &b, err) < 0) {
        si_wire_request_free(&rq);
        return SI_STAGE_BAD_SHAPE;
    }
    uint64_t t1 = now_us();
    pthread_mutex_lock(&s->lock);
    uint64_t t2 = now_us();
    /* OpenMP's thread count belongs to each thread: a server's workers start
     * with the default (every core), not what the stage was made with. Two
     * threads in a function meant to have one burn a capped quota spinning.
     * Set before engine_for: oneDNN sizes its kernels for it at compile. */
    if (si_engine_threads() != s->threads) si_engine_set_threads(s->threads);
    si_stage_status_t st = SI_STAGE_FAILED;
    si_wire_layout_t lout = layout_of(s, s->seg.out, rq.reply_layout);
    cached_t *c = engine_for(s, (int)rq.input.dims[0], a, b, rq.input.layout, lout, err);
    if (!c) goto unlock;
    const si_value_t *x = &s->g->values[s->seg.in];
    int h = x->ndim == 4 ? (int)rq.input.dims[2] : 1;
    if (x->ndim == 4 && (rq.input_row0 != c->in_begin || rq.input_row0 + h != c->in_end)) {
        si_err_set(err, "output rows [%d, %d) of %s need input rows [%d, %d), got [%d, %d)", a, b,
                   s->spec, c->in_begin, c->in_end, rq.input_row0, rq.input_row0 + h);
        st = SI_STAGE_BAD_SHAPE;
        goto unlock;
    }
    /* A buffer per call: the reply sends it as it lies, after this call
     * returns, while the next call may already run the same engine. */
    reply->out = malloc(si_engine_out_numel(c->engine) * sizeof *reply->out);
    if (!reply->out) {
        si_err_set(err, "out of memory");
        goto unlock;
    }
    if (si_engine_run(c->engine, rq.input.data, reply->out, err) < 0) goto unlock;
    uint64_t t3 = now_us();
    int od[4];
    si_wire_tensor_t y = {.ndim = si_engine_out_dims(c->engine, od), .data = reply->out,
                          .dtype = rq.reply_dtype, .layout = lout};
    for (int i = 0; i < y.ndim; i++) y.dims[i] = od[i];
    reply->out_elems = (int64_t)si_engine_out_numel(c->engine);
    if (rq.n_then) {
        /* A chain: the output, whole, becomes the next function's input, in
         * the chain's dtype, with the rest of the chain and the time left. */
        si_wire_request_t next = {.request_id = rq.request_id, .segment = rq.then[0], .input = y,
                                  .reply_dtype = rq.reply_dtype,
                                  .reply_layout = rq.reply_layout, .then = rq.then + 1,
                                  .n_then = rq.n_then - 1};
        if (rq.timeout_ms) {
            /* We give up a little before our caller does (a tenth of the time
             * left, at most 100 ms), and the next function gets what we wait:
             * the error a caller sees then names the function that was slow. */
            int64_t left = (int64_t)rq.timeout_ms - (int64_t)((t3 - t0) / 1000);
            left -= left / 10 < 100 ? left / 10 : 100;
            next.timeout_ms = (int32_t)(left < 1 ? 1 : left);
            reply->forward_timeout_ms = next.timeout_ms;
        }
        if (si_wire_encode_request_iov(&next, &reply->packed, err) < 0) goto unlock;
        snprintf(reply->request_id, sizeof reply->request_id, "%s", rq.request_id ? rq.request_id : "");
        reply->timings = (si_wire_timings_t){t1 - t0, t2 - t1, t3 - t2, now_us() - t3, 0};
        reply->forward = 1;
        st = SI_STAGE_OK;
        goto unlock;
    }
    si_wire_reply_t rp;
    memset(&rp, 0, sizeof rp);
    rp.request_id = rq.request_id;
    rp.output = y;
    rp.out_row0 = rp.output.ndim == 4 ? a : 0;
    /* The encode time of this reply is not known while packing it: report the
     * previous one's, which for the same band is the same work. */
    rp.timings = (si_wire_timings_t){t1 - t0, t2 - t1, t3 - t2, s->last_encode_us, 0};
    if (si_wire_encode_reply_iov(&rp, &reply->packed, err) < 0) goto unlock;
    s->last_encode_us = now_us() - t3;
    reply->timings = rp.timings;
    reply->timings.encode_us = s->last_encode_us;
    st = SI_STAGE_OK;
unlock:
    pthread_mutex_unlock(&s->lock);
    si_wire_request_free(&rq);
    if (st != SI_STAGE_OK) si_stage_reply_free(reply);
    return st;
}

int si_stage_chain_reply(si_stage_reply_t *reply, char *body, size_t len, uint64_t forward_us,
                         si_err_t *err) {
    free(reply->down_body);
    reply->down_body = body;
    si_wire_decode_opts_t raw = {.raw = 1};
    si_wire_reply_t down;
    if (si_wire_decode_reply_view(body, len, &down, &raw, err) < 0) return -1;
    int rc = -1;
    if (down.n_chain + 1 > SI_WIRE_MAX_CHAIN) {
        si_err_set(err, "the chain after this function reports %d functions; at most %d",
                   down.n_chain + 1, SI_WIRE_MAX_CHAIN);
        goto out;
    }
    /* Ours first, then the next function's, then the ones after it. */
    si_wire_reply_t rp;
    memset(&rp, 0, sizeof rp);
    rp.request_id = reply->request_id;
    rp.output = down.output;
    rp.output.data = NULL; /* the elements go on as they came: bytes */
    rp.out_row0 = down.out_row0;
    rp.timings = reply->timings;
    rp.timings.forward_us = forward_us;
    rp.chain[0] = down.timings;
    memcpy(rp.chain + 1, down.chain, (size_t)down.n_chain * sizeof *down.chain);
    rp.n_chain = down.n_chain + 1;
    si_wire_packed_t packed;
    if (si_wire_encode_reply_iov(&rp, &packed, err) < 0) goto out;
    si_wire_packed_free(&reply->packed);
    reply->packed = packed;
    reply->timings = rp.timings;
    free(reply->out); /* sent to the next function; no longer pointed at */
    reply->out = NULL;
    reply->forward = 0;
    rc = 0;
out:
    si_wire_reply_free(&down);
    return rc;
}

void si_stage_reply_free(si_stage_reply_t *reply) {
    si_wire_packed_free(&reply->packed);
    free(reply->out);
    free(reply->down_body);
    memset(reply, 0, sizeof *reply);
}
