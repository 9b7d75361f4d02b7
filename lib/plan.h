/*
 * plan.h - plans: how the gateway runs a model over stage functions.
 *
 * A plan is a list of steps. Each step runs one segment of the model (graph.h
 * names: "stem", "layer2", "layer4.0..head", "#3..#7", "all") on `bands`
 * functions, each computing a band of the segment's output rows (bands = 1:
 * the whole tensor). Steps are chained: step i's output is step i+1's input.
 *
 * JSON form (the files in plans/, and the gateway's ConfigMap on Kubernetes):
 *
 *   { "name": "pipeline",
 *     "model": "resnet50",           name served on the OIP v2 API
 *     "dtype": "fp32",               wire dtype of activations: fp32|bf16|fp16
 *     "layout": "nhwc",              how activations lie on the wire: nhwc|nchw
 *                                    (nhwc: as the kernels hold them, no reorders)
 *     "encoding": "zeros",           zeros: a whole fp32 activation that goes on to
 *                                    a one-band step may travel as Tensor.ZEROS
 *                                    (lossless, its zeros left out) where that
 *                                    is smaller; dense: never
 *     "timeout_ms": 10000,           per call to a function
 *     "chain": false,                true: see below
 *     "resident": false,             true: see below
 *     "steps": [
 *       { "segment": "stem", "bands": 1, "functions": ["http://127.0.0.1:9001"] },
 *       ... ] }
 *
 * "functions" holds either one URL per band, or one URL for every band (a
 * Service that autoscales and is called K times at once). It may be empty
 * in a plan template: `splitinfer up` fills it with the processes it starts.
 *
 * "chain": true makes each run of consecutive one-band steps one call: the
 * gateway sends the run's input to its first function, each function passes
 * its output straight on to the next (started with `stage --next` = the next
 * step's function), and the last answers back along the run. Activations
 * cross one hop instead of two. A banded step is never chained (the gateway
 * cuts and stitches its bands). The price, on Knative: a function waiting for
 * the rest of the run still counts as busy (a request in flight), so the
 * concurrency autoscaler sees its requests last as long as the whole run.
 *
 * "resident": true makes each run of consecutive banded steps with the same
 * band count a resident run: band k of every step in it is one function
 * (holding all the run's segments, `stage --steps`), which keeps its band of
 * each step's output and sends the gateway only the edge rows the other
 * bands need next (StageRequest.resident). Activations then cross as halos of
 * a few rows instead of whole tensors, which pays for steps as fine as one
 * residual block each, whose halo is one row, where a stage-sized step's halo
 * is as deep as the stage. Such functions hold state between the calls of a
 * request: each band must be one function (one URL per band; on Knative a
 * Service per band with one replica, or session affinity), and a function
 * that restarted mid-request makes the gateway run the request again.
 */
#ifndef SI_PLAN_H
#define SI_PLAN_H

#include "err.h"
#include "graph.h"

#define SI_PLAN_MAX_STEPS 64
#define SI_PLAN_MAX_BANDS 32
#define SI_PLAN_MAX_URL 256
/* Largest plan file si_plan_load reads: room for the largest plan the limits
 * above allow (64 steps of 32 URLs of 256 bytes, ~530 KB). */
#define SI_PLAN_MAX_FILE (1 << 20)

typedef struct si_plan_step {
    char segment[SI_MAX_NAME];
    int bands;                                      /* >= 1 */
    int n_functions;                                /* 0, 1 or bands */
    char functions[SI_PLAN_MAX_BANDS][SI_PLAN_MAX_URL]; /* base URLs, no trailing slash */
} si_plan_step_t;

typedef struct si_plan {
    char name[SI_MAX_NAME];
    char model[SI_MAX_NAME];
    char dtype[8];  /* "fp32", "bf16" or "fp16" */
    char layout[8]; /* "nhwc" or "nchw" */
    char encoding[8]; /* "zeros" or "dense" */
    int timeout_ms; /* per function call */
    int chain;      /* runs of one-band steps are chained (see above) */
    int resident;   /* runs of banded steps are resident (see above) */
    int n_steps;
    si_plan_step_t steps[SI_PLAN_MAX_STEPS];
} si_plan_t;

/* Parses a plan from JSON text / a file. Checks the JSON's own consistency
 * (types, ranges, URL count), not the model: see si_plan_check. */
int si_plan_parse(const char *json, size_t len, si_plan_t *p, si_err_t *err);
int si_plan_load(const char *path, si_plan_t *p, si_err_t *err);

/* Serializes a plan as JSON (malloc'd, caller frees). */
char *si_plan_dump(const si_plan_t *p);

/* Validates a plan against a model: every segment resolves, steps are
 * contiguous and cover the graph from input to output, and each step's bands
 * do not exceed its output's rows (1 for a flat output). Fills segs[i] with
 * step i's resolved segment when segs is not NULL. */
int si_plan_check(const si_plan_t *p, const si_graph_t *g, si_segment_t *segs, si_err_t *err);

/* URL of the function that computes band k of step s ("" when unassigned). */
const char *si_plan_function(const si_plan_step_t *s, int k);

/* One past the last step of the call that starts at step i: the end of its
 * chained run, or i + 1 (a resident run is one call per step). */
int si_plan_call_end(const si_plan_t *p, int i);

/* One past the last step of the resident run that starts at step i (plan
 * resident, step i banded): the steps after it with the same band count.
 * i + 1 when step i is not resident. */
int si_plan_resident_end(const si_plan_t *p, int i);

/* The function step i's function passes its output on to (its --next): step
 * i + 1's, when the two are in one chained run; else "". */
const char *si_plan_next_function(const si_plan_t *p, int i);

#endif
