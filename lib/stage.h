/*
 * stage.h - a stage function's core: one segment of a model, answering
 * StageRequests (wire.h) with StageReplies. No HTTP here: cmd/stage.c puts
 * this behind a server.
 *
 * A stage compiles one engine per (batch, output band) it is asked for and
 * keeps the most recent few (a plan asks for the same bands again and again;
 * with prepacked weights a compile costs milliseconds). Engines share the
 * graph's weights. Calls are serialized by one lock: compute threads are
 * the engine's (OpenMP), and two requests computing at once on the same cores
 * would only slow each other down; time spent waiting is reported as queue
 * time.
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
} si_stage_status_t;

/* A reply ready to send: the packed StageReply is packed.iov[0..iovcnt),
 * [protobuf header][the output floats] for fp32 - the engine writes its output
 * straight into the buffer that goes on the wire. Owned by the reply until
 * si_stage_reply_free (which a server calls once the bytes are written). */
typedef struct si_stage_reply {
    si_wire_packed_t packed;
    float *out; /* the output tensor, malloc'd per call (the iov may point into it) */
    si_wire_timings_t timings;
    int64_t out_elems; /* elements computed */
} si_stage_reply_t;

/* Takes ownership of g. segment: the spec this stage serves ("layer2").
 * Computes on as many threads as si_engine_threads() says in the calling
 * thread, whichever thread later calls si_stage_call. */
si_stage_t *si_stage_new(si_graph_t *g, const char *segment, si_err_t *err);
void si_stage_free(si_stage_t *s);

/* Compiles the engine for output band k of K (K = 1: the whole tensor; k < 0:
 * every band of K) and runs it once on zeros, so the first real request pays
 * no compile and no page faults. */
int si_stage_warmup(si_stage_t *s, int k, int K, si_err_t *err);

/* Answers one packed StageRequest. Thread-safe. On failure returns the status
 * class and err says why in a sentence fit for the client. */
si_stage_status_t si_stage_call(si_stage_t *s, const uint8_t *body, size_t len,
                                si_stage_reply_t *reply, si_err_t *err);

void si_stage_reply_free(si_stage_reply_t *reply);

/* The resolved segment and its input / output shapes (batch 1). */
const si_segment_t *si_stage_segment(const si_stage_t *s);
const si_graph_t *si_stage_graph(const si_stage_t *s);

#endif
