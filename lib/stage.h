/*
 * stage.h - a stage function's core: one segment of a model, answering
 * StageRequests (wire.h) with StageReplies. No HTTP here: cmd/stage.c puts
 * this behind a server.
 *
 * A stage compiles one engine per (batch, output band, layouts) it is asked
 * for and keeps the most recent few (a plan asks for the same bands again and
 * again; with prepacked weights a compile costs milliseconds). Engines share the
 * graph's weights. Calls are serialized by one lock: compute threads are
 * the engine's (OpenMP), and two requests computing at once on the same cores
 * would only slow each other down; time spent waiting is reported as queue
 * time.
 *
 * Chains (StageRequest.then, see proto/). A stage started with a next
 * function answers a chained request in two parts: si_stage_call computes
 * and packs the request for the next function instead of a reply, the
 * server sends it there, and si_stage_chain_reply turns the answer into this
 * stage's reply (the last function's output, every function's timings).
 * The HTTP call between them is the server's (this module has no HTTP); the
 * compute lock is not held while it waits.
 *
 * Resident steps (StageRequest.resident, plan.h "resident"). A stage may also
 * serve sub-segments of its own ("layer3.2" in a stage of "#2..#18"), the
 * steps of a resident run, named with si_stage_add_step. For those it can
 * hold its band of a step's output for the request's next call:
 *   - hold: the output band (float32 NHWC) is kept under (request_id, value)
 *     and the reply carries only the rows asked for: the edges its
 *     neighbours need for the next step;
 *   - from_held: of the input rows the step needs, those held are taken from
 *     there; the request carries the rest (the halo from the neighbours).
 * A request keeps at most two generations (its last call's input and
 * output: a retried call still finds its input); a from_held call without
 * hold (the run's last step) ends the request and drops them. At most SI_STAGE_HELD entries and
 * SI_STAGE_HELD_BYTES are held; the least recently used go first (a request
 * its gateway gave up on is never ended). A call whose rows are gone
 * (evicted, or the process restarted) fails with SI_STAGE_NOT_HELD, which
 * the gateway answers by running the request again.
 */
#ifndef SI_STAGE_H
#define SI_STAGE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "graph.h"
#include "wire.h"

typedef struct si_stage si_stage_t;

/* What went wrong with a call, so the server can pick a status code. */
typedef enum si_stage_status {
    SI_STAGE_OK = 0,
    SI_STAGE_BAD_MESSAGE, /* not a valid StageRequest (HTTP 400) */
    SI_STAGE_BAD_SHAPE,   /* valid, but not for this segment: wrong segment, shape
                             or rows (HTTP 422) */
    SI_STAGE_FAILED,      /* ours: out of memory, engine failure (HTTP 500) */
    SI_STAGE_NOT_HELD,    /* from_held, but the rows are not held here (HTTP 409) */
} si_stage_status_t;

#define SI_STAGE_MAX_STEPS 64                      /* sub-segments a stage serves */
#define SI_STAGE_HELD 64                           /* held output bands, all requests */
#define SI_STAGE_HELD_BYTES ((size_t)1 << 29)      /* and their bytes: 512 MiB */
/* Largest input a call may expand to as float32 (a ZEROS or 16-bit input):
 * what a dense body under the server's 64 MiB limit could carry (HTTP 422). */
#define SI_STAGE_MAX_INPUT_BYTES ((size_t)64 << 20)

/* A reply ready to send: the packed StageReply is packed.iov[0..iovcnt),
 * [protobuf header][the output floats] for dense fp32, the floats copied
 * once out of the engine into `out`; one piece for ZEROS or 16-bit, encoded
 * straight from the engine's memory (no copy of the output at all). Owned by
 * the reply until si_stage_reply_free (which a server calls once the bytes
 * are written). */
typedef struct si_stage_reply {
    si_wire_packed_t packed; /* the StageReply; when forward is set, the StageRequest
                                for the next function */
    float *out; /* dense fp32 output floats, malloc'd per call (the iov points into
                   it), or NULL */
    si_wire_timings_t timings;
    int64_t out_elems; /* elements computed */
    /* A chained call (forward set by si_stage_call): */
    int forward;
    int forward_timeout_ms; /* how long to wait for the next function: what the
                               caller left (0: not said; the server then allows
                               its own default, cmd/stage.c) */
    char request_id[SI_WIRE_MAX_STR + 1];
    char *down_body;        /* the next function's reply body, and */
    si_wire_reply_t down;   /* its decoding: the packed reply points at its elements */
} si_stage_reply_t;

/* Takes ownership of g. segment: the spec this stage serves ("layer2").
 * Computes on as many threads as si_engine_threads() says in the calling
 * thread, whichever thread later calls si_stage_call. */
si_stage_t *si_stage_new(si_graph_t *g, const char *segment, si_err_t *err);
void si_stage_free(si_stage_t *s);

/* Compiles the engine for output band k of K (K = 1: the whole tensor; k < 0:
 * every band of K; with resident steps, of every step) and runs it `runs` times on zeros, so the first real
 * request pays no compile and no page faults. runs = 0 compiles and maps the
 * weights' pages in (MADV_POPULATE_READ) without running, which is what
 * `splitinfer stage` does by default: measured in podman at 0.35 CPU, the
 * first request took as long either way (223 and 224 ms, median of 5), while
 * a run before ready added ~360 ms to the cold start (1055 against 681 ms):
 * with prepacked, mapped weights and compiled primitives there is nothing
 * left for a run to warm but the activations' first touch. It warms the layouts the gateway uses: the
 * input NCHW for a segment that takes the model's input (the preprocessed
 * image), else NHWC (another function's output); the output NHWC (if 4-d).
 * A request in other layouts compiles its own engine on first use. */
int si_stage_warmup(si_stage_t *s, int k, int K, int runs, si_err_t *err);


/* Moves the segment's weights from the mapped model file onto huge pages
 * (hugemem.h: a function idle between requests ran up to twice as slow on
 * the mapping), on a thread of its own at nice 10, behind requests: a stage
 * is ready on the mapping (a copy before ready cost 0.25 s of cold start at
 * 0.35 CPU; `splitinfer stage` starts the move after its first call, which
 * a cold start is timed to). It moves 8 MiB at a time (modelfile.h,
 * si_model_hot_step): the copy runs beside requests; under the compute lock,
 * between two of them, the cached engines read the copy from then on
 * (si_engine_repoint) and the mapping's pages go. So the weights are never
 * resident twice, beyond one step, even when requests run throughout (they
 * were, up to the whole weights, when requests read the mapping back in
 * behind a copy made in one piece). Results are the same numbers either
 * way. Call once, after si_stage_warmup. -1 when no thread could start. */
int si_stage_hot_start(si_stage_t *s, si_err_t *err);

/* 0 while the weights are still read from the mapping, 1 once every engine
 * reads the huge-page copy, -1 when the copy failed (err, if not NULL, says
 * why; the stage goes on from the mapping). */
int si_stage_hot_state(si_stage_t *s, si_err_t *err);

/* Serves segment (a sub-segment of the stage's own, cut to cut) as a
 * resident step too. si_stage_warmup then warms the steps, not the whole. */
int si_stage_add_step(si_stage_t *s, const char *segment, si_err_t *err);

/* Output bands held (see resident steps above), and their bytes, as the last
 * call left them: read without the compute lock, so a server can report them
 * after a call without waiting for the next one's compute. */
int si_stage_held(si_stage_t *s, size_t *bytes);

/* Whether this stage has a next function to pass chained requests on to
 * (default no: a chained request is then refused as BAD_SHAPE). */
void si_stage_set_next(si_stage_t *s, int has_next);

/* Answers one packed StageRequest. Thread-safe. On failure returns the status
 * class and err says why in a sentence fit for the client. For a chained
 * request reply->forward is set and reply->packed is the next function's
 * request: send it, then call si_stage_chain_reply. */
si_stage_status_t si_stage_call(si_stage_t *s, const uint8_t *body, size_t len,
                                si_stage_reply_t *reply, si_err_t *err);

/* Completes a chained call: body (len bytes, malloc'd; ownership passes to
 * reply in every case) is the next function's 200 answer, which took
 * forward_us. On success reply->packed is this stage's StageReply, carrying
 * the answer's output as it came (by reference) and its timings after ours;
 * on failure (a reply that is not a valid StageReply, a chain too long) -1,
 * reply unchanged but for the body. */
int si_stage_chain_reply(si_stage_reply_t *reply, char *body, size_t len, uint64_t forward_us,
                         si_err_t *err);

void si_stage_reply_free(si_stage_reply_t *reply);

/* The resolved segment and its input / output shapes (batch 1). */
const si_segment_t *si_stage_segment(const si_stage_t *s);
const si_graph_t *si_stage_graph(const si_stage_t *s);

#endif
