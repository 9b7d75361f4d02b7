/* stage.c - a stage function's core. See stage.h. */
#include "stage.h"

#include <pthread.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "engine.h"
#include "modelfile.h"

/* Cached engines: a plain stage uses one or two (batch, band, layouts); a
 * resident one one per step, and a Service serving every band one per step
 * and band. */
#define STAGE_ENGINES 96

typedef struct cached {
    int cut_begin, cut_end;                 /* key: segment, */
    int batch, out_begin, out_end;          /*   batch, output rows, */
    si_wire_layout_t in_layout, out_layout; /*   and layouts */
    int in_begin, in_end;                   /* input rows it reads */
    si_engine_t *engine;
    uint64_t last_used;
} cached_t;

/* A band of a resident step's output, kept for the request's next call. */
typedef struct held {
    char id[SI_WIRE_MAX_STR + 1]; /* request_id; "" = free slot */
    int value;                    /* graph value these are rows of */
    int row_begin, row_end;
    size_t bytes;                 /* of data: rows x W x C floats (NHWC) */
    float *data;                  /* row_begin's row, in base */
    float *base;                  /* malloc'd: rows [cap_begin, cap_end), data's and */
    int cap_begin, cap_end;       /*   free margins where the next step's halo goes */
    uint64_t last_used;
} held_t;

/* Rows of room a held band keeps on each side for the halo its next step
 * reads: the next call then computes on the held rows where they lie, with
 * the halo rows written beside them, instead of joining both into a copy.
 * ResNet50's resident steps of one or two blocks read at most 3 rows beyond
 * (two 3x3 convs behind a stride 2); a wider halo is joined by a copy. */
#define HELD_MARGIN_ROWS 4

struct si_stage {
    si_graph_t *g;
    si_segment_t seg;
    char spec[SI_MAX_NAME];
    pthread_mutex_t lock; /* guards everything below and the engines' runs */
    cached_t cache[STAGE_ENGINES];
    uint64_t tick;
    uint64_t last_encode_us; /* see si_stage_call */
    int threads; /* compute threads: the creating thread's si_engine_threads() */
    /* The move to huge pages (si_stage_hot_start), on a thread of its own. */
    pthread_t hot_thread;
    int hot_started;
    atomic_int hot_state; /* 0 not yet, 1 done, -1 failed */
    atomic_int hot_stop;  /* si_stage_free asks it to give up */
    si_err_t hot_err;
    int has_next; /* chained requests are passed on (si_stage_set_next) */
    si_segment_t steps[SI_STAGE_MAX_STEPS]; /* resident steps (si_stage_add_step) */
    int n_steps;
    held_t held[SI_STAGE_HELD];
    size_t held_bytes;
    /* What si_stage_held reports: set by each call before it lets go of the
     * lock, so that reading them never waits for the next call's compute. */
    atomic_int held_pub;
    atomic_size_t held_bytes_pub;
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
    memset(c, 0, sizeof *c);
}

static void held_clear(si_stage_t *s, held_t *h) {
    s->held_bytes -= h->bytes;
    free(h->base);
    memset(h, 0, sizeof *h);
}

void si_stage_free(si_stage_t *s) {
    if (!s) return;
    if (s->hot_started) {
        atomic_store(&s->hot_stop, 1);
        pthread_join(s->hot_thread, NULL);
    }
    for (int i = 0; i < STAGE_ENGINES; i++) cached_clear(&s->cache[i]);
    for (int i = 0; i < SI_STAGE_HELD; i++) held_clear(s, &s->held[i]);
    pthread_mutex_destroy(&s->lock);
    si_graph_free(s->g);
    free(s);
}

void si_stage_set_next(si_stage_t *s, int has_next) { s->has_next = has_next; }

int si_stage_add_step(si_stage_t *s, const char *segment, si_err_t *err) {
    if (s->n_steps == SI_STAGE_MAX_STEPS)
        return si_err_set(err, "more than %d resident steps", SI_STAGE_MAX_STEPS);
    si_segment_t seg;
    if (si_graph_segment(s->g, segment, &seg, err) < 0) return -1;
    if (seg.cut_begin < s->seg.cut_begin || seg.cut_end > s->seg.cut_end)
        return si_err_set(err, "step %s is not within this function's segment %s", segment, s->spec);
    pthread_mutex_lock(&s->lock);
    s->steps[s->n_steps++] = seg;
    pthread_mutex_unlock(&s->lock);
    return 0;
}

int si_stage_held(si_stage_t *s, size_t *bytes) {
    if (bytes) *bytes = atomic_load(&s->held_bytes_pub);
    return atomic_load(&s->held_pub);
}

/* Publishes what is held for si_stage_held. Caller holds the lock. */
static void held_publish(si_stage_t *s) {
    int n = 0;
    for (int i = 0; i < SI_STAGE_HELD; i++) n += s->held[i].id[0] != 0;
    atomic_store(&s->held_pub, n);
    atomic_store(&s->held_bytes_pub, s->held_bytes);
}

/* The held rows of value v for request id, or NULL. Caller holds the lock. */
static held_t *held_find(si_stage_t *s, const char *id, int v) {
    for (int i = 0; i < SI_STAGE_HELD; i++)
        if (s->held[i].id[0] && s->held[i].value == v && !strcmp(s->held[i].id, id)) return &s->held[i];
    return NULL;
}

/* Ends request id: drops everything it holds. Caller holds the lock. */
static void held_drop(si_stage_t *s, const char *id) {
    for (int i = 0; i < SI_STAGE_HELD; i++)
        if (s->held[i].id[0] && !strcmp(s->held[i].id, id)) held_clear(s, &s->held[i]);
}

/* Keeps a copy of src, rows [a, b) of value v (row floats each), with
 * HELD_MARGIN_ROWS of room on each side, for request id. Of the request's
 * older entries only keep (value v_in) stays: a retry of this call finds its
 * input still. Makes room by dropping the least recently used entries.
 * Returns -1 when out of memory. Caller holds the lock. */
static int held_put(si_stage_t *s, const char *id, int v, int v_in, int a, int b, size_t row,
                    const float *src) {
    for (int i = 0; i < SI_STAGE_HELD; i++) {
        held_t *h = &s->held[i];
        if (h->id[0] && !strcmp(h->id, id) && h->value != v_in) held_clear(s, h);
    }
    const si_value_t *y = &s->g->values[v];
    int cap_begin = a > HELD_MARGIN_ROWS ? a - HELD_MARGIN_ROWS : 0;
    int cap_end = b + HELD_MARGIN_ROWS < y->dims[2] ? b + HELD_MARGIN_ROWS : y->dims[2];
    size_t bytes = (size_t)(cap_end - cap_begin) * row * sizeof(float);
    float *base = malloc(bytes);
    if (!base) return -1;
    float *data = base + (size_t)(a - cap_begin) * row;
    memcpy(data, src, (size_t)(b - a) * row * sizeof(float));
    for (;;) {
        held_t *free_slot = NULL, *lru = NULL;
        for (int i = 0; i < SI_STAGE_HELD; i++) {
            held_t *h = &s->held[i];
            if (!h->id[0]) {
                if (!free_slot) free_slot = h;
            } else if (!lru || h->last_used < lru->last_used) {
                lru = h;
            }
        }
        if (free_slot && s->held_bytes + bytes <= SI_STAGE_HELD_BYTES) {
            snprintf(free_slot->id, sizeof free_slot->id, "%s", id);
            free_slot->value = v, free_slot->row_begin = a, free_slot->row_end = b;
            free_slot->bytes = bytes, free_slot->data = data, free_slot->base = base;
            free_slot->cap_begin = cap_begin, free_slot->cap_end = cap_end;
            free_slot->last_used = ++s->tick;
            s->held_bytes += bytes;
            return 0;
        }
        if (!lru) { /* larger than the whole budget: not kept, the next call says so */
            free(base);
            return 0;
        }
        held_clear(s, lru);
    }
}

const si_segment_t *si_stage_segment(const si_stage_t *s) { return &s->seg; }
const si_graph_t *si_stage_graph(const si_stage_t *s) { return s->g; }

static int out_rows(const si_stage_t *s, const si_segment_t *seg) {
    const si_value_t *y = &s->g->values[seg->out];
    return y->ndim == 4 ? y->dims[2] : 1;
}

/* Compiles seg for output rows [a, b) of batch, in layouts lin -> lout, on
 * the graph's weights as they are now; *ib, *ie get the input rows it reads. */
static si_engine_t *compile(const si_stage_t *s, const si_segment_t *seg, int batch, int a, int b,
                            si_wire_layout_t lin, si_wire_layout_t lout, int *ib, int *ie,
                            si_err_t *err) {
    si_band_t band;
    if (si_graph_band(s->g, seg, a, b, &band, err) < 0) return NULL;
    si_engine_t *e = si_engine_create_io(s->g, seg, &band, batch, (si_io_layout_t)lin,
                                         (si_io_layout_t)lout, err);
    *ib = band.in_begin, *ie = band.in_end;
    si_band_free(&band);
    return e;
}

/* The engine for (segment, batch, rows [a, b), layouts), compiled on a miss;
 * the least recently used one makes room. Caller holds the lock. */
static cached_t *engine_for(si_stage_t *s, const si_segment_t *seg, int batch, int a, int b,
                            si_wire_layout_t lin, si_wire_layout_t lout, si_err_t *err) {
    cached_t *victim = &s->cache[0];
    for (int i = 0; i < STAGE_ENGINES; i++) {
        cached_t *c = &s->cache[i];
        if (c->engine && c->cut_begin == seg->cut_begin && c->cut_end == seg->cut_end &&
            c->batch == batch && c->out_begin == a && c->out_end == b &&
            c->in_layout == lin && c->out_layout == lout) {
            c->last_used = ++s->tick;
            return c;
        }
        if (!c->engine || (victim->engine && c->last_used < victim->last_used)) victim = c;
    }
    cached_clear(victim);
    int ib, ie;
    si_engine_t *e = compile(s, seg, batch, a, b, lin, lout, &ib, &ie, err);
    if (!e) return NULL;
    *victim = (cached_t){seg->cut_begin, seg->cut_end, batch, a, b, lin, lout, ib, ie, e,
                         ++s->tick};
    return victim;
}

/* The mapped model file's pages, in before the first request needs them
 * (until si_stage_hot_start has moved the weights). */
static void populate_weights(const si_stage_t *s) {
    if (!s->g->map || !s->g->map_len) return; /* weights read into memory: in already */
#ifdef MADV_POPULATE_READ
    if (madvise(s->g->map, s->g->map_len, MADV_POPULATE_READ) == 0) return;
#endif
    volatile const char *p = s->g->map; /* older kernels: one read per page */
    for (size_t i = 0; i < s->g->map_len; i += 4096) (void)p[i];
}

/* The move to huge pages (stage.h), at nice 10, about HOT_STEP bytes of
 * weights at a time: each step's copy runs beside requests (it reads the
 * file, not the mapping); then, under the compute lock, between two
 * requests, the cached engines and the graph's nodes are pointed at the
 * copies and the mapping's pages go (ResNet50's 100 MB: 13 steps). The
 * engines keep their primitives: only where they read the weights changes. */
#define HOT_STEP ((size_t)8 << 20)

static void *hot_main(void *arg) {
    si_stage_t *s = arg;
    /* Nice 10 (a tenth of a request's share of a busy CPU), not SCHED_IDLE:
     * an idle thread can starve in a function kept busy (podman at 0.35
     * CPU, back-to-back requests), which then runs on the mapping. */
    (void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 10);
    si_hot_move_t mv;
    if (si_model_hot_begin(s->g, &s->seg, &mv, &s->hot_err) < 0) {
        atomic_store(&s->hot_state, -1);
        return NULL;
    }
    int n = 0;
    while (!atomic_load(&s->hot_stop) &&
           (n = si_model_hot_step(s->g, &mv, HOT_STEP, &s->hot_err)) > 0) {
        pthread_mutex_lock(&s->lock);
        for (int i = 0; i < STAGE_ENGINES; i++)
            for (int j = 0; s->cache[i].engine && j < n; j++)
                si_engine_repoint(s->cache[i].engine, mv.moved[j].from, mv.moved[j].len,
                                  mv.moved[j].to);
        si_model_hot_swap(s->g, &mv);
        pthread_mutex_unlock(&s->lock);
    }
    int done = n == 0 && mv.node == mv.node_end;
    pthread_mutex_lock(&s->lock);
    si_model_hot_end(s->g, &mv);
    pthread_mutex_unlock(&s->lock);
    atomic_store(&s->hot_state, n < 0 ? -1 : done ? 1 : 0);
    return NULL;
}

int si_stage_hot_start(si_stage_t *s, si_err_t *err) {
    if (s->hot_started) return si_err_set(err, "the weights are moving already");
    if (pthread_create(&s->hot_thread, NULL, hot_main, s) != 0)
        return si_err_set(err, "no thread to move the weights to huge pages");
    s->hot_started = 1;
    return 0;
}

int si_stage_hot_state(si_stage_t *s, si_err_t *err) {
    int st = atomic_load(&s->hot_state);
    if (st < 0 && err) *err = s->hot_err;
    return st;
}

/* A 2-d tensor is NC: whatever was asked, it goes as NCHW. */
static si_wire_layout_t layout_of(const si_stage_t *s, int v, si_wire_layout_t asked) {
    return s->g->values[v].ndim == 4 ? asked : SI_WIRE_NCHW;
}

static si_wire_layout_t warm_in_layout(const si_stage_t *s, const si_segment_t *seg) {
    /* The gateway sends the model's input as it preprocessed it (NCHW) and
     * every activation as a function gave it (NHWC). */
    return seg->in == 0 ? SI_WIRE_NCHW : layout_of(s, seg->in, SI_WIRE_NHWC);
}

/* Warms band k of K (k < 0: every band) of seg. Caller holds the lock. */
static int warm_segment(si_stage_t *s, const si_segment_t *seg, int k, int K, int runs,
                        si_err_t *err) {
    int h = out_rows(s, seg);
    if (K < 1 || K > h || k >= K) return si_err_set(err, "band %d of %d: %s has %d rows", k, K, s->spec, h);
    int rc = 0;
    for (int j = k < 0 ? 0 : k; rc == 0 && j < (k < 0 ? K : k + 1); j++) {
        int a, b;
        si_rows_split(h, K, j, &a, &b);
        cached_t *c = engine_for(s, seg, 1, a, b, warm_in_layout(s, seg),
                                 layout_of(s, seg->out, SI_WIRE_NHWC), err);
        if (!c) return -1;
        float *in = runs ? calloc(si_engine_in_numel(c->engine), sizeof *in) : NULL;
        if (runs && !in) rc = si_err_set(err, "out of memory");
        const float *out;
        for (int r = 0; rc == 0 && r < runs; r++) rc = si_engine_run_view(c->engine, in, &out, err);
        free(in);
    }
    return rc;
}

int si_stage_warmup(si_stage_t *s, int k, int K, int runs, si_err_t *err) {
    if (runs < 0) return si_err_set(err, "warm-up runs %d < 0", runs);
    pthread_mutex_lock(&s->lock);
    int rc = 0;
    if (!s->n_steps) rc = warm_segment(s, &s->seg, k, K, runs, err);
    for (int i = 0; rc == 0 && i < s->n_steps; i++) rc = warm_segment(s, &s->steps[i], k, K, runs, err);
    if (rc == 0 && runs == 0) populate_weights(s);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

/* Checks a decoded request against this segment (or one of its resident
 * steps, *seg); fills the band wanted. */
static int check_request(const si_stage_t *s, const si_wire_request_t *rq, const si_segment_t **seg,
                         int *a, int *b, si_err_t *err) {
    si_segment_t asked;
    if (si_graph_segment(s->g, rq->segment, &asked, err) < 0) return -1;
    *seg = NULL;
    if (asked.cut_begin == s->seg.cut_begin && asked.cut_end == s->seg.cut_end) *seg = &s->seg;
    for (int i = 0; !*seg && i < s->n_steps; i++)
        if (asked.cut_begin == s->steps[i].cut_begin && asked.cut_end == s->steps[i].cut_end)
            *seg = &s->steps[i];
    if (!*seg)
        return si_err_set(err, "this function serves segment %s%s, not %s", s->spec,
                          s->n_steps ? " and its resident steps" : "", rq->segment);
    const si_value_t *x = &s->g->values[(*seg)->in], *y = &s->g->values[(*seg)->out];
    const si_wire_tensor_t *t = &rq->input;
    if (t->ndim != x->ndim || t->dims[1] != x->dims[1] || (x->ndim == 4 && t->dims[3] != x->dims[3]))
        return si_err_set(err, "input of %d dims with %lld channels; segment %s takes [N,%d%s]",
                          t->ndim, (long long)t->dims[1], rq->segment, x->dims[1],
                          x->ndim == 4 ? ",H,W" : "");
    if (t->dims[0] < 1 || t->dims[0] > 64)
        return si_err_set(err, "batch %lld outside 1..64", (long long)t->dims[0]);
    if (x->ndim == 4 && t->dims[2] > x->dims[2])
        return si_err_set(err, "input of %lld rows; segment %s's input has %d", (long long)t->dims[2],
                          rq->segment, x->dims[2]);
    if (rq->n_then && !s->has_next)
        return si_err_set(err, "this function (%s) has no next function to pass its output on to "
                          "%s: start it with --next URL", s->spec, rq->then[0]);
    *a = rq->out_row_begin, *b = rq->out_row_end;
    if (*a == 0 && *b == 0) *b = out_rows(s, *seg);
    if (*a < 0 || *b > out_rows(s, *seg) || *a >= *b)
        return si_err_set(err, "output rows [%d, %d) outside the %d rows of %s", *a, *b,
                          out_rows(s, *seg), rq->segment);
    if (!rq->hold && !rq->from_held) return 0;
    /* A resident band: rows of one image, channels innermost, so a band of
     * rows is one run of floats at either end. */
    if (*seg == &s->seg && !s->n_steps)
        return si_err_set(err, "this function (%s) serves no resident steps (stage --steps)", s->spec);
    if (!rq->request_id || !rq->request_id[0])
        return si_err_set(err, "a resident call needs a request_id");
    if (t->dims[0] != 1) return si_err_set(err, "a resident call is for batch 1, not %lld", (long long)t->dims[0]);
    if (rq->from_held && (x->ndim != 4 || t->layout != SI_WIRE_NHWC))
        return si_err_set(err, "from_held takes a 4-d NHWC input");
    if (rq->hold && (y->ndim != 4 || rq->reply_layout != SI_WIRE_NHWC))
        return si_err_set(err, "hold keeps a 4-d NHWC output; ask for reply_layout NHWC");
    int rb = rq->reply_row_begin, re = rq->reply_row_end;
    if ((rb || re) && (rb < *a || re > *b))
        return si_err_set(err, "reply rows [%d, %d) outside the output rows [%d, %d) computed",
                          rb, re, *a, *b);
    return 0;
}

/* The input of a from_held call, whole: rows [c->in_begin, c->in_end) of
 * the step's input, of which those held come from there and the rest, in
 * order, from the request. Where the held band's margins have room, the
 * request's rows are written there and the input is the held buffer itself;
 * otherwise it is a joined copy, which *copy then owns (else NULL). NULL
 * with *st and err set when they do not fit. Caller holds the lock. */
static const float *join_held(si_stage_t *s, const si_segment_t *seg, const cached_t *c,
                              const si_wire_request_t *rq, float **copy, si_stage_status_t *st,
                              si_err_t *err) {
    *copy = NULL;
    held_t *h = held_find(s, rq->request_id, seg->in);
    if (!h) {
        *st = SI_STAGE_NOT_HELD;
        si_err_set(err, "request %s: the rows its previous step left here are gone (evicted, "
                   "or this function restarted)", rq->request_id);
        return NULL;
    }
    *st = SI_STAGE_BAD_SHAPE;
    const si_value_t *x = &s->g->values[seg->in];
    size_t row = (size_t)x->dims[1] * (size_t)x->dims[3];
    int h0 = h->row_begin > c->in_begin ? h->row_begin : c->in_begin;
    int h1 = h->row_end < c->in_end ? h->row_end : c->in_end;
    if (h0 >= h1) { /* rows of the same value, seg->in: the same row length */
        si_err_set(err, "request %s: the rows held, [%d, %d), are none of the input rows [%d, %d) "
                   "this band needs", rq->request_id, h->row_begin, h->row_end, c->in_begin, c->in_end);
        return NULL;
    }
    int carried = (c->in_end - c->in_begin) - (h1 - h0), got = (int)rq->input.dims[2];
    if (rq->input_row0 != c->in_begin || got != carried) {
        si_err_set(err, "output rows [%d, %d) of %s need input rows [%d, %d), [%d, %d) of them held: "
                   "want the other %d from row %d, got %d from row %d", c->out_begin, c->out_end,
                   rq->segment, c->in_begin, c->in_end, h0, h1, carried, c->in_begin, got,
                   (int)rq->input_row0);
        return NULL;
    }
    float *in;
    if (c->in_begin >= h->cap_begin && c->in_end <= h->cap_end) {
        /* Rows outside [row_begin, row_end) are only ever halo written here,
         * the same rows again by a retry of this call. */
        in = h->base + (size_t)(c->in_begin - h->cap_begin) * row;
    } else if (!(in = *copy = malloc((size_t)(c->in_end - c->in_begin) * row * sizeof *in))) {
        *st = SI_STAGE_FAILED;
        si_err_set(err, "out of memory");
        return NULL;
    }
    size_t top = (size_t)(h0 - c->in_begin) * row, mid = (size_t)(h1 - h0) * row;
    size_t bottom = (size_t)carried * row - top;
    if (top) memcpy(in, rq->input.data, top * sizeof *in);
    if (*copy) memcpy(in + top, h->data + (size_t)(h0 - h->row_begin) * row, mid * sizeof *in);
    if (bottom) memcpy(in + top + mid, rq->input.data + top, bottom * sizeof *in);
    h->last_used = ++s->tick;
    *st = SI_STAGE_OK;
    return in;
}

/* Makes the packed message independent of the engine's memory: a float32
 * piece that points at the output (iov form, wire.h) is copied to reply->out,
 * which the reply owns; an encoded one (ZEROS, 16-bit) already is. This copy
 * is the one si_engine_run would make; a ZEROS reply makes none. */
static int own_output(si_stage_reply_t *reply, const float *data, si_err_t *err) {
    si_wire_packed_t *p = &reply->packed;
    for (int i = 0; i < p->iovcnt; i++) {
        if (p->iov[i].iov_base != (const void *)data) continue;
        if (!(reply->out = malloc(p->iov[i].iov_len ? p->iov[i].iov_len : 1)))
            return si_err_set(err, "out of memory");
        memcpy(reply->out, data, p->iov[i].iov_len);
        p->iov[i].iov_base = reply->out;
    }
    return 0;
}

si_stage_status_t si_stage_call(si_stage_t *s, const uint8_t *body, size_t len,
                                si_stage_reply_t *reply, si_err_t *err) {
    memset(reply, 0, sizeof *reply);
    uint64_t t0 = now_us();
    si_wire_request_t rq;
    /* raw: elements that are not aligned float32 as they lie (bf16, fp16,
     * ZEROS) are converted only once the request is known to fit: a ZEROS
     * bitmap of 8 MiB could otherwise have us fill 256 MiB. */
    si_wire_decode_opts_t raw = {.raw = 1};
    if (si_wire_decode_request_view(body, len, &rq, &raw, err) < 0) return SI_STAGE_BAD_MESSAGE;
    int a = 0, b = 0;
    const si_segment_t *seg;
    float *conv = NULL; /* the input as float32, when it did not come so */
    if (check_request(s, &rq, &seg, &a, &b, err) < 0) {
        si_wire_request_free(&rq);
        return SI_STAGE_BAD_SHAPE;
    }
    if (!rq.input.data) {
        size_t n = (size_t)si_wire_tensor_numel(&rq.input);
        si_stage_status_t bad = SI_STAGE_OK;
        if (n > SI_STAGE_MAX_INPUT_BYTES / sizeof(float)) {
            si_err_set(err, "input of %zu elements: more than %zu MiB as float32", n,
                       SI_STAGE_MAX_INPUT_BYTES >> 20);
            bad = SI_STAGE_BAD_SHAPE;
        } else if (!(conv = malloc((n ? n : 1) * sizeof *conv))) {
            si_err_set(err, "out of memory for an input of %zu elements", n);
            bad = SI_STAGE_FAILED;
        }
        if (bad != SI_STAGE_OK) {
            si_wire_request_free(&rq);
            return bad;
        }
        si_wire_tensor_floats(&rq.input, conv);
        rq.input.data = conv;
    }
    uint64_t t1 = now_us();
    pthread_mutex_lock(&s->lock);
    uint64_t t2 = now_us();
    float *joined = NULL; /* a from_held call's input, when joined by a copy */
    /* OpenMP's thread count belongs to each thread: a server's workers start
     * with the default (every core), not what the stage was made with. Two
     * threads in a function meant to have one burn a capped quota spinning.
     * Set before engine_for: oneDNN sizes its kernels for it at compile. */
    if (si_engine_threads() != s->threads) si_engine_set_threads(s->threads);
    si_stage_status_t st = SI_STAGE_FAILED;
    si_wire_layout_t lout = layout_of(s, seg->out, rq.reply_layout);
    cached_t *c = engine_for(s, seg, (int)rq.input.dims[0], a, b, rq.input.layout, lout, err);
    if (!c) goto unlock;
    const si_value_t *x = &s->g->values[seg->in];
    int h = x->ndim == 4 ? (int)rq.input.dims[2] : 1;
    const float *in = rq.input.data;
    if (rq.from_held) {
        if (!(in = join_held(s, seg, c, &rq, &joined, &st, err))) goto unlock;
        st = SI_STAGE_FAILED;
    } else if (x->ndim == 4 && (rq.input_row0 != c->in_begin || rq.input_row0 + h != c->in_end)) {
        si_err_set(err, "output rows [%d, %d) of %s need input rows [%d, %d), got [%d, %d)", a, b,
                   rq.segment, c->in_begin, c->in_end, rq.input_row0, rq.input_row0 + h);
        st = SI_STAGE_BAD_SHAPE;
        goto unlock;
    }
    /* The output in the engine's memory, until its next run: whatever goes
     * out after the lock is released is copied (own_output). ZEROS and 16-bit
     * replies are encoded from it straight into the packed message. */
    const float *out;
    if (si_engine_run_view(c->engine, in, &out, err) < 0) goto unlock;
    uint64_t t3 = now_us();
    int od[4];
    /* ZEROS (lossless) where the caller allows it; the encoder sends it only
     * when it is smaller, and only float32 has it. */
    si_wire_tensor_t y = {.ndim = si_engine_out_dims(c->engine, od), .data = out,
                          .dtype = rq.reply_dtype, .layout = lout,
                          .encoding = rq.reply_dtype == SI_WIRE_FP32 ? rq.reply_encoding
                                                                     : SI_WIRE_DENSE};
    for (int i = 0; i < y.ndim; i++) y.dims[i] = od[i];
    reply->out_elems = (int64_t)si_engine_out_numel(c->engine);
    int row0 = y.ndim == 4 ? a : 0;
    if (rq.hold) {
        /* The band stays here; the reply carries the rows asked for (the
         * neighbours' halo), copied: the held band may be evicted while the
         * reply is still being written. */
        int rb = rq.reply_row_begin, re = rq.reply_row_end;
        if (!rb && !re) rb = a, re = b;
        size_t row = (size_t)od[1] * (size_t)od[3];
        if (held_put(s, rq.request_id, seg->out, seg->in, a, b, row, out) < 0) {
            si_err_set(err, "out of memory");
            goto unlock;
        }
        y.data = out + (size_t)(rb - a) * row, y.dims[2] = re - rb, row0 = rb;
    } else if (rq.from_held) {
        held_drop(s, rq.request_id); /* the request's last resident step */
    }
    if (rq.n_then) {
        /* A chain: the output, whole, becomes the next function's input, in
         * the chain's dtype, with the rest of the chain and the time left. */
        si_wire_request_t next = {.request_id = rq.request_id, .segment = rq.then[0], .input = y,
                                  .reply_dtype = rq.reply_dtype,
                                  .reply_layout = rq.reply_layout,
                                  .reply_encoding = rq.reply_encoding, .then = rq.then + 1,
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
        if (si_wire_encode_request_iov(&next, &reply->packed, err) < 0 ||
            own_output(reply, y.data, err) < 0)
            goto unlock;
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
    rp.out_row0 = row0;
    /* The encode time of this reply is not known while packing it: report the
     * previous one's, which for the same band is the same work. */
    rp.timings = (si_wire_timings_t){t1 - t0, t2 - t1, t3 - t2, s->last_encode_us, 0};
    if (si_wire_encode_reply_iov(&rp, &reply->packed, err) < 0 || own_output(reply, y.data, err) < 0)
        goto unlock;
    s->last_encode_us = now_us() - t3;
    reply->timings = rp.timings;
    reply->timings.encode_us = s->last_encode_us;
    st = SI_STAGE_OK;
unlock:
    held_publish(s);
    pthread_mutex_unlock(&s->lock);
    free(joined);
    free(conv);
    si_wire_request_free(&rq);
    if (st != SI_STAGE_OK) si_stage_reply_free(reply);
    return st;
}

int si_stage_chain_reply(si_stage_reply_t *reply, char *body, size_t len, uint64_t forward_us,
                         si_err_t *err) {
    free(reply->down_body);
    reply->down_body = body;
    si_wire_reply_free(&reply->down);
    si_wire_decode_opts_t raw = {.raw = 1};
    /* Kept in the reply: the packed reply points at its elements, which lie
     * in body, or in memory of its own when the decoder was protobuf-c's. */
    si_wire_reply_t *down = &reply->down;
    if (si_wire_decode_reply_view(body, len, down, &raw, err) < 0) return -1;
    if (down->n_chain + 1 > SI_WIRE_MAX_CHAIN) {
        si_err_set(err, "the chain after this function reports %d functions; at most %d",
                   down->n_chain + 1, SI_WIRE_MAX_CHAIN);
        si_wire_reply_free(down);
        return -1;
    }
    /* Ours first, then the next function's, then the ones after it. */
    si_wire_reply_t rp;
    memset(&rp, 0, sizeof rp);
    rp.request_id = reply->request_id;
    rp.output = down->output;
    rp.output.data = NULL; /* the elements go on as they came: bytes */
    rp.out_row0 = down->out_row0;
    rp.timings = reply->timings;
    rp.timings.forward_us = forward_us;
    rp.chain[0] = down->timings;
    memcpy(rp.chain + 1, down->chain, (size_t)down->n_chain * sizeof *down->chain);
    rp.n_chain = down->n_chain + 1;
    si_wire_packed_t packed;
    if (si_wire_encode_reply_iov(&rp, &packed, err) < 0) {
        si_wire_reply_free(down);
        return -1;
    }
    si_wire_packed_free(&reply->packed);
    reply->packed = packed;
    reply->timings = rp.timings;
    free(reply->out); /* sent to the next function; no longer pointed at */
    reply->out = NULL;
    reply->forward = 0;
    return 0;
}

void si_stage_reply_free(si_stage_reply_t *reply) {
    si_wire_packed_free(&reply->packed);
    free(reply->out);
    si_wire_reply_free(&reply->down);
    free(reply->down_body);
    memset(reply, 0, sizeof *reply);
}
