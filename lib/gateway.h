/*
 * gateway.h - run a plan (plan.h) over stage functions for one input tensor.
 *
 * For each step the gateway cuts the step's input into the bands its
 * functions compute (rows plus halo, graph.h si_graph_band), sends them as
 * StageRequests (wire.h) concurrently, and stitches the replies' rows into the
 * step's output, which feeds the next step. The last step's output is the
 * logits. In a chained plan (plan.h) a run of one-band steps is one call to
 * the run's first function; the functions pass the tensor along themselves.
 * In a resident run (plan.h) the bands stay on their functions: the gateway
 * sends the run's input once, then each step only the halo rows each band
 * lacks, taken from the edge rows the other bands sent back, and stitches
 * the last step's bands. Each run is a request id of its own; a function that
 * lost what it held (HTTP 409: restarted, or evicted it) makes the gateway
 * run it again, once, from its input.
 *
 * The gateway holds the model's structure (a graph whose weights it never
 * touches: a full .sfm is mapped, not read) to know every step's shapes and
 * bands. It computes nothing itself.
 *
 * Timing: every hop reports its own decode/queue/compute/encode time, so the
 * network time of a hop is its round trip minus that (the paper's "network
 * latency", measured rather than guessed). In a chain each function also
 * reports its round trip to the next (forward_us), so every hop is still
 * traced as its own step.
 */
#ifndef SI_GATEWAY_H
#define SI_GATEWAY_H

#include <stddef.h>

#include "err.h"
#include "graph.h"
#include "httpc.h"
#include "plan.h"

typedef struct si_gateway si_gateway_t;

typedef enum si_gateway_status {
    SI_GW_OK = 0,
    SI_GW_BAD_INPUT,        /* the input tensor does not fit the model (HTTP 422) */
    SI_GW_UPSTREAM_DOWN,    /* a function refused the connection, after one retry (HTTP
                               503); one that dropped it mid-call is UPSTREAM_ERROR */
    SI_GW_UPSTREAM_TIMEOUT, /* a function did not answer within the plan's timeout (504) */
    SI_GW_UPSTREAM_ERROR,   /* a function answered with an error or a bad reply (502) */
    SI_GW_FAILED,           /* ours: out of memory (500) */
} si_gateway_status_t;

/* What one request cost, per step. Times in seconds, bytes of bodies as
 * they moved: every attempt of a retried call and of a resident run started
 * again counts (its time too). */
typedef struct si_gateway_step_trace {
    double seconds;       /* the step, send to last reply stitched */
    double network;       /* sum over its hops of round trip minus the stage's own time */
    double compute;       /* the largest compute time among its hops */
    size_t bytes_sent, bytes_received;
    int retries;
} si_gateway_step_trace_t;

typedef struct si_gateway_trace {
    int n_steps;
    double seconds; /* the whole plan */
    si_gateway_step_trace_t steps[SI_PLAN_MAX_STEPS];
} si_gateway_trace_t;

/* Takes ownership of g (structure only is needed); copies the plan. Fails
 * when the plan does not fit the model or a step has no function URL. */
si_gateway_t *si_gateway_new(const si_plan_t *plan, si_graph_t *g, si_err_t *err);
void si_gateway_free(si_gateway_t *gw);

/* Runs the plan on input (batch 1, the model's input shape, NCHW) and writes
 * the model's output into out (si_gateway_out_numel floats). client is the
 * calling thread's own HTTP client (keep-alive connections to the functions).
 * Thread-safe for distinct clients. */
si_gateway_status_t si_gateway_run(si_gateway_t *gw, si_httpc_t *client, const float *input,
                                   float *out, si_gateway_trace_t *trace, si_err_t *err);

size_t si_gateway_in_numel(const si_gateway_t *gw);
size_t si_gateway_out_numel(const si_gateway_t *gw);
const si_graph_t *si_gateway_graph(const si_gateway_t *gw);
const si_plan_t *si_gateway_plan(const si_gateway_t *gw);

#endif
