/* gateway.c - plan execution over stage functions. See gateway.h. */
#include "gateway.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/random.h>
#include <unistd.h>

#include "wire.h"

typedef struct band_rows {
    int out_begin, out_end; /* rows of the step's output this band computes */
    int in_begin, in_end;   /* rows of the step's input it needs */
    /* A resident step (plan.h): */
    int held_begin, held_end;   /* from_held: input rows the function holds */
    int reply_begin, reply_end; /* hold: output rows the other bands need next */
} band_rows_t;

typedef struct step {
    si_segment_t seg;
    int bands;
    int from_held, hold; /* a resident step after the run's first / before its last */
    band_rows_t rows[SI_PLAN_MAX_BANDS];
    char urls[SI_PLAN_MAX_BANDS][SI_PLAN_MAX_URL + 16]; /* function + "/v1/stage" */
} step_t;

struct si_gateway {
    si_graph_t *g;
    si_plan_t plan;
    step_t *steps;
    si_wire_dtype_t dtype;
    si_wire_layout_t layout; /* of the activations between functions */
    int zeros;               /* whole activations may travel as ZEROS (plan "encoding") */
    unsigned long long id_prefix; /* request ids: "<prefix>-<seq>", random per gateway */
    atomic_ullong seq;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

si_gateway_t *si_gateway_new(const si_plan_t *plan, si_graph_t *g, si_err_t *err) {
    si_gateway_t *gw = calloc(1, sizeof *gw);
    si_segment_t *segs = calloc(SI_PLAN_MAX_STEPS, sizeof *segs);
    if (!gw || !segs || !(gw->steps = calloc((size_t)plan->n_steps, sizeof *gw->steps))) {
        si_err_set(err, "out of memory");
        goto fail;
    }
    gw->g = g;
    gw->plan = *plan;
    if (si_wire_dtype_parse(plan->dtype, &gw->dtype, err) < 0) goto fail;
    gw->layout = strcmp(plan->layout, "nchw") ? SI_WIRE_NHWC : SI_WIRE_NCHW;
    gw->zeros = !strcmp(plan->encoding, "zeros") && gw->dtype == SI_WIRE_FP32;
    if (si_plan_check(plan, g, segs, err) < 0) goto fail;
    for (int i = 0; i < plan->n_steps; i++) {
        const si_plan_step_t *ps = &plan->steps[i];
        step_t *st = &gw->steps[i];
        st->seg = segs[i];
        st->bands = ps->bands;
        const si_value_t *y = &g->values[st->seg.out];
        int h = y->ndim == 4 ? y->dims[2] : 1;
        for (int k = 0; k < ps->bands; k++) {
            band_rows_t *r = &st->rows[k];
            si_rows_split(h, ps->bands, k, &r->out_begin, &r->out_end);
            si_band_t band;
            if (si_graph_band(g, &st->seg, r->out_begin, r->out_end, &band, err) < 0) goto fail;
            r->in_begin = band.in_begin, r->in_end = band.in_end;
            si_band_free(&band);
            const char *url = si_plan_function(ps, k);
            if (!url[0]) {
                si_err_set(err, "step %d (%s): no function URL for band %d", i, ps->segment, k);
                goto fail;
            }
            snprintf(st->urls[k], sizeof st->urls[k], "%s/v1/stage", url);
        }
    }
    /* Resident runs: what each band holds and what the others need of it. */
    for (int i = 0, j; i < plan->n_steps; i = j) {
        j = si_plan_resident_end(plan, i);
        for (int m = i; m < j && j > i + 1; m++) {
            step_t *st = &gw->steps[m], *nx = m + 1 < j ? &gw->steps[m + 1] : NULL;
            st->from_held = m > i, st->hold = nx != NULL;
            for (int k = 0; k < st->bands; k++) {
                band_rows_t *r = &st->rows[k];
                if (st->from_held) {
                    const band_rows_t *p = &gw->steps[m - 1].rows[k];
                    r->held_begin = p->out_begin > r->in_begin ? p->out_begin : r->in_begin;
                    r->held_end = p->out_end < r->in_end ? p->out_end : r->in_end;
                    if (r->held_begin >= r->held_end) {
                        si_err_set(err, "step %d (%s) band %d needs input rows [%d, %d), none of "
                                   "which its band of step %d, [%d, %d), holds: no resident run "
                                   "here", m, plan->steps[m].segment, k, r->in_begin, r->in_end,
                                   m - 1, p->out_begin, p->out_end);
                        goto fail;
                    }
                }
                if (!nx) continue;
                /* The hull of what the other bands of the next step need
                 * from this band's rows (at least one row: a reply has rows). */
                int lo = r->out_end, hi = r->out_begin;
                for (int o = 0; o < st->bands; o++) {
                    if (o == k) continue;
                    int a = nx->rows[o].in_begin > r->out_begin ? nx->rows[o].in_begin : r->out_begin;
                    int b = nx->rows[o].in_end < r->out_end ? nx->rows[o].in_end : r->out_end;
                    if (a < b) lo = a < lo ? a : lo, hi = b > hi ? b : hi;
                }
                if (lo >= hi) lo = r->out_begin, hi = lo + 1;
                r->reply_begin = lo, r->reply_end = hi;
            }
        }
    }
    /* Random, not pid and time: in a container every gateway is pid 1, and
     * replicas started in the same second would share ids, and so a resident
     * band's held rows. */
    if (getrandom(&gw->id_prefix, sizeof gw->id_prefix, 0) != (ssize_t)sizeof gw->id_prefix) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        gw->id_prefix = ((unsigned long long)ts.tv_sec << 30 ^ (unsigned long long)ts.tv_nsec) *
                            0x9e3779b97f4a7c15ull ^ (unsigned long long)getpid();
    }
    free(segs);
    return gw;
fail:
    free(segs);
    if (gw) {
        free(gw->steps);
        free(gw);
    }
    si_graph_free(g);
    return NULL;
}

void si_gateway_free(si_gateway_t *gw) {
    if (!gw) return;
    si_graph_free(gw->g);
    free(gw->steps);
    free(gw);
}

size_t si_gateway_in_numel(const si_gateway_t *gw) { return si_value_numel(&gw->g->values[0]); }
size_t si_gateway_out_numel(const si_gateway_t *gw) {
    return si_value_numel(&gw->g->values[gw->g->output]);
}
const si_graph_t *si_gateway_graph(const si_gateway_t *gw) { return gw->g; }
const si_plan_t *si_gateway_plan(const si_gateway_t *gw) { return &gw->plan; }

/* A step's output between steps, in the plan's wire encoding: forwarded to
 * the next step as it came, never converted or copied to float32 on the way
 * (only the first input and the last output are floats). */
typedef struct held {
    si_wire_reply_t rp; /* a whole-tensor reply, decoded raw: the elements lie in ... */
    char *body;         /* ... its body, or: */
    uint8_t *stitched;  /* the bands' rows stitched together */
} held_t;

/* The held elements, at any alignment. */
static const uint8_t *held_bytes(const held_t *h) {
    return h->stitched ? h->stitched : (const uint8_t *)h->rp.output.bytes;
}

static void held_free(held_t *h) {
    si_wire_reply_free(&h->rp);
    free(h->body);
    free(h->stitched);
    memset(h, 0, sizeof *h);
}

/* How rows lie in a 4-d tensor of batch 1 (dims N, C, H, W): as `planes`
 * planes of h rows of `row` elements. NCHW: a plane per channel, rows of W
 * elements; NHWC: one plane, rows of W x C elements. */
typedef struct rows_shape {
    int planes, h;
    size_t row; /* elements per row */
} rows_shape_t;

static rows_shape_t rows_shape(const si_value_t *v, si_wire_layout_t layout) {
    if (layout == SI_WIRE_NHWC) return (rows_shape_t){1, v->dims[2], (size_t)v->dims[3] * (size_t)v->dims[1]};
    return (rows_shape_t){v->dims[1], v->dims[2], (size_t)v->dims[3]};
}

/* Rows [a, b) of every plane of x -> dst, contiguous. */
static void slice_rows(const float *x, rows_shape_t s, int a, int b, float *dst) {
    size_t n = (size_t)(b - a) * s.row;
    for (int p = 0; p < s.planes; p++)
        memcpy(dst + (size_t)p * n, x + ((size_t)p * (size_t)s.h + (size_t)a) * s.row, n * sizeof *dst);
}

/* The same rows of elements of es bytes as pieces of a message body, without
 * copying them: iov[1 + p] is plane p's rows [a, b) where they lie in x. */
static void gather_rows(const uint8_t *x, rows_shape_t s, size_t es, int a, int b, struct iovec *iov) {
    size_t row = s.row * es, n = (size_t)(b - a) * row;
    for (int p = 0; p < s.planes; p++)
        iov[1 + p] = (struct iovec){(void *)(x + ((size_t)p * (size_t)s.h + (size_t)a) * row), n};
}

/* The inverse: band rows of every plane, as they lie in a reply, into rows
 * [a, b) of y. */
static void place_rows(const uint8_t *band, rows_shape_t s, size_t es, int a, int b, uint8_t *y) {
    size_t row = s.row * es, n = (size_t)(b - a) * row;
    for (int p = 0; p < s.planes; p++)
        memcpy(y + ((size_t)p * (size_t)s.h + (size_t)a) * row, band + (size_t)p * n, n);
}

/* NHWC -> NCHW, batch 1: the plan's last output when it is 4-d. */
static void to_nchw(const float *x, int c, int h, int w, float *y) {
    for (int i = 0; i < h * w; i++)
        for (int k = 0; k < c; k++) y[(size_t)k * (size_t)(h * w) + (size_t)i] = x[(size_t)i * (size_t)c + (size_t)k];
}

/* How a call that got no 200 failed. A function that answers 503 or 504
 * says the same of a function after it in a chain. */
static si_gateway_status_t from_httpc(const si_httpc_resp_t *r) {
    int st = r->error == SI_HTTPC_OK ? r->status : 0;
    if (r->error == SI_HTTPC_TIMEOUT || st == 504) return SI_GW_UPSTREAM_TIMEOUT;
    if (r->error == SI_HTTPC_CONNECT || st == 503) return SI_GW_UPSTREAM_DOWN;
    return SI_GW_UPSTREAM_ERROR;
}

/* The traces of the steps [i, i + n) of one chained call, from the reply's
 * timings: hop 0 is the gateway's call (round trip rt), hop m > 0 the call of
 * the function before it, which reports that round trip as forward_us. */
static int trace_chain(const si_gateway_t *gw, int i, int n, const si_wire_reply_t *rp, double rt,
                       size_t received, si_gateway_step_trace_t *tr, si_err_t *err) {
    if (rp->n_chain != n - 1)
        return si_err_set(err, "replied with the timings of %d functions for a chain of %d",
                           rp->n_chain + 1, n);
    size_t es = si_wire_dtype_size(gw->dtype);
    double call = rt; /* round trip of the call into hop m, as its caller saw it */
    for (int m = 0; m < n; m++) {
        const si_wire_timings_t *t = m == 0 ? &rp->timings : &rp->chain[m - 1];
        double down = (double)t->forward_us * 1e-6, own = (double)si_wire_timings_own_us(t) * 1e-6;
        double net = call - own - down;
        tr[m].network = net > 0 ? net : 0;
        tr[m].compute = (double)t->compute_us * 1e-6;
        tr[m].seconds = call - down;
        /* The gateway sees only the first hop (its caller counts it); the
         * hops after it carry the step's input tensor (counted without its
         * few header bytes) and pass the run's output back. */
        if (m > 0) {
            tr[m].bytes_sent = si_value_numel(&gw->g->values[gw->steps[i + m].seg.in]) * es;
            tr[m].bytes_received = received;
        }
        call = down;
    }
    return 0;
}

/* The pieces of a from_held request's input (after iov[0], the header): the
 * rows of band k's input it does not hold, [in_begin, held_begin) then
 * [held_end, in_end), each from the edge reply of the band of the step
 * before that computed it. Returns the number of pieces, -1 with err set
 * when an edge lacks a row (which the rows set up in si_gateway_new rule
 * out). */
static int carried_rows(const si_gateway_t *gw, int i, int k, const held_t *prev, size_t rowbytes,
                        struct iovec *iov, si_err_t *err) {
    const step_t *pst = &gw->steps[i - 1];
    const band_rows_t *r = &gw->steps[i].rows[k];
    int n = 0, last = -1;
    for (int row = r->in_begin; row < r->in_end; row++) {
        if (row == r->held_begin) row = r->held_end;
        if (row >= r->in_end) break;
        int o = 0;
        while (o < pst->bands - 1 && row >= pst->rows[o].out_end) o++;
        const band_rows_t *pr = &pst->rows[o];
        if (row < pr->reply_begin || row >= pr->reply_end)
            return si_err_set(err, "step %d band %d: row %d of its input is in no edge of step %d",
                              i, k, row, i - 1);
        const uint8_t *at = held_bytes(&prev[o]) + (size_t)(row - pr->reply_begin) * rowbytes;
        if (o == last && (const uint8_t *)iov[n].iov_base + iov[n].iov_len == at) {
            iov[n].iov_len += rowbytes;
        } else {
            iov[++n] = (struct iovec){(void *)at, rowbytes};
            last = o;
        }
    }
    return n;
}

/* Runs the call of steps [i, j): one step (j = i + 1), or a chained run of
 * one-band steps. Its full input is x, elements of encoding xdt laid out as
 * xl: the caller's float32 NCHW for the first step, else the previous step's
 * output in the plan's dtype and layout; xz: x's xz_len bytes are the ZEROS
 * encoding of the elements (then step i has one band: x goes on whole). The
 * output of step j - 1 goes, in the plan's dtype and layout, to *y (the last
 * reply kept whole, or the bands stitched), or converted to float32 NCHW into
 * out when out is not NULL (the last step). tr: the traces of steps i..j-1,
 * zeroed by si_gateway_run; a step run again (a resident run started over)
 * adds its time and bytes to what the first attempt left there.
 * A resident step (one step) is request `id` of its run: from_held, its
 * input is the run's previous step's edge replies prev[] (x unused); with
 * hold, its bands' edge replies go to edges[] instead of *y. A function that
 * no longer holds the request's rows (409) sets *not_held. */
static si_gateway_status_t run_step(si_gateway_t *gw, si_httpc_t *client, int i, int j,
                                    const void *x, si_wire_dtype_t xdt, si_wire_layout_t xl,
                                    int xz, size_t xz_len, held_t *y, float *out,
                                    si_gateway_step_trace_t *tr,
                                    const char *id, const held_t *prev, held_t *edges,
                                    int *not_held, si_err_t *err) {
    const step_t *st = &gw->steps[i];
    const si_value_t *xv = &gw->g->values[st->seg.in], *yv = &gw->g->values[gw->steps[j - 1].seg.out];
    int K = st->bands;
    const char *then[SI_PLAN_MAX_STEPS];
    for (int m = i + 1; m < j; m++) then[m - i - 1] = gw->plan.steps[m].segment;
    /* x goes out as it lies when it is in the wire's encoding already; else
     * (float32 input, fp16/bf16 plan) it is converted by the encoder. */
    int as_is = xdt == gw->dtype;
    size_t es = si_wire_dtype_size(gw->dtype), numel = si_value_numel(yv);
    if (xv->ndim != 4) xl = SI_WIRE_NCHW;
    si_wire_layout_t yl = yv->ndim == 4 ? gw->layout : SI_WIRE_NCHW;
    rows_shape_t xs = xv->ndim == 4 ? rows_shape(xv, xl) : (rows_shape_t){0};
    rows_shape_t ys = yv->ndim == 4 ? rows_shape(yv, yl) : (rows_shape_t){0};
    si_gateway_status_t rc = SI_GW_FAILED;
    float *slices[SI_PLAN_MAX_BANDS] = {0};         /* a band's input rows, copied to convert */
    struct iovec *gathers[SI_PLAN_MAX_BANDS] = {0}; /* or gathered where they lie */
    si_wire_packed_t packed[SI_PLAN_MAX_BANDS];
    memset(packed, 0, sizeof packed);
    si_httpc_call_t calls[SI_PLAN_MAX_BANDS];
    si_httpc_resp_t resps[SI_PLAN_MAX_BANDS];
    memset(resps, 0, sizeof resps);
    memset(y, 0, sizeof *y);
    /* A whole reply may come as ZEROS when what takes it is the gateway (the
     * logits) or a one-band step, which gets it on as it came; bands are cut
     * and stitched by rows, which needs them dense. */
    int zeros_ok = gw->zeros && K == 1 && (j == gw->plan.n_steps || gw->steps[j].bands == 1);
    if (xz && (K != 1 || !as_is)) {
        si_err_set(err, "step %d: a ZEROS input for a banded step", i);
        return SI_GW_FAILED;
    }
    /* No "Expect: 100-continue": a stage takes any body under its limit,
     * and waiting for the 100 costs a round trip per megabyte-sized hop. */
    static const char *const no_expect[] = {"Expect:", NULL};
    double t0 = now_s();
    for (int k = 0; k < K; k++) {
        const band_rows_t *r = &st->rows[k];
        si_wire_request_t rq;
        memset(&rq, 0, sizeof rq);
        rq.segment = gw->plan.steps[i].segment;
        rq.input.ndim = xv->ndim;
        for (int d = 0; d < xv->ndim; d++) rq.input.dims[d] = xv->dims[d];
        if (as_is)
            rq.input.bytes = x;
        else
            rq.input.data = x;
        if (xz) rq.input.encoding = SI_WIRE_ZEROS, rq.input.nbytes = xz_len;
        rq.input.dtype = gw->dtype;
        rq.input.layout = xl;
        rq.reply_dtype = gw->dtype;
        rq.reply_layout = gw->layout;
        rq.reply_encoding = zeros_ok ? SI_WIRE_ZEROS : SI_WIRE_DENSE;
        rq.then = then, rq.n_then = j - i - 1;
        rq.timeout_ms = gw->plan.timeout_ms;
        rq.request_id = id;
        rq.hold = st->hold;
        if (st->hold) rq.reply_row_begin = r->reply_begin, rq.reply_row_end = r->reply_end;
        if (st->from_held) {
            /* Only the rows it does not hold, from the other bands' edges, as
             * they came (in the wire's encoding): no copy. */
            rq.from_held = 1;
            rq.input.dims[2] = (r->in_end - r->in_begin) - (r->held_end - r->held_begin);
            rq.input_row0 = r->in_begin;
            rq.input.data = NULL, rq.input.bytes = held_bytes(&prev[0]); /* stands in, see below */
            rq.input.dtype = gw->dtype, rq.input.layout = SI_WIRE_NHWC;
            rq.out_row_begin = r->out_begin, rq.out_row_end = r->out_end;
            size_t rowbytes = (size_t)xv->dims[1] * (size_t)xv->dims[3] * es;
            if (!(gathers[k] = malloc((2 + (size_t)rq.input.dims[2]) * sizeof *gathers[k]))) {
                si_err_set(err, "out of memory");
                goto out;
            }
            /* As for a band of x below: only the header (which counts the
             * rows' bytes) is used; the pieces of the edges follow it. */
            if (si_wire_encode_request_iov(&rq, &packed[k], err) < 0) goto out;
            if (packed[k].iovcnt > 2 ||
                (packed[k].iovcnt == 2 && packed[k].iov[1].iov_len != (size_t)rq.input.dims[2] * rowbytes)) {
                si_err_set(err, "step %d band %d: request not packed as header + elements", i, k);
                goto out;
            }
            gathers[k][0] = packed[k].iov[0];
            int n = carried_rows(gw, i, k, prev, rowbytes, gathers[k], err);
            if (n < 0) goto out;
            calls[k] = (si_httpc_call_t){.url = st->urls[k], .content_type = "application/x-protobuf",
                                         .iov = gathers[k], .iovcnt = 1 + n,
                                         .timeout_ms = gw->plan.timeout_ms, .headers = no_expect};
            continue;
        }
        if (xv->ndim == 4) {
            int h = r->in_end - r->in_begin;
            rq.input.dims[2] = h;
            rq.input_row0 = r->in_begin;
            /* A band: its rows, contiguous per plane (one plane in NHWC).
             * Elements in the wire's encoding are sent from x as they lie (the
             * encoder writes only the header; see below); the rest from a
             * contiguous copy. */
            if (h != xv->dims[2]) {
                if (as_is)
                    gathers[k] = malloc(((size_t)xs.planes + 1) * sizeof *gathers[k]);
                else
                    slices[k] = malloc((size_t)xs.planes * (size_t)h * xs.row * sizeof(float));
                if (!gathers[k] && !slices[k]) {
                    si_err_set(err, "out of memory");
                    goto out;
                }
                if (slices[k]) {
                    slice_rows(x, xs, r->in_begin, r->in_end, slices[k]);
                    rq.input.data = slices[k];
                }
            }
            /* A chain passes whole tensors: 0, 0 says all rows. */
            if (j == i + 1) rq.out_row_begin = r->out_begin, rq.out_row_end = r->out_end;
        }
        /* fp32, or bytes encoded already, go out as [header][the elements
         * where they lie]: no copy. */
        if (si_wire_encode_request_iov(&rq, &packed[k], err) < 0) goto out;
        const struct iovec *iov = packed[k].iov;
        int iovcnt = packed[k].iovcnt;
        if (gathers[k]) {
            /* The encoder was handed x itself as the band's elements, so its
             * iov[1] is the first bytes of x: only its header (which counts
             * the band's bytes) is used, and the planes' rows replace iov[1]. */
            if (packed[k].iovcnt != 2) {
                si_err_set(err, "step %d band %d: request not packed as header + elements", i, k);
                goto out;
            }
            gathers[k][0] = packed[k].iov[0];
            gather_rows(x, xs, es, r->in_begin, r->in_end, gathers[k]);
            iov = gathers[k], iovcnt = xs.planes + 1;
        }
        calls[k] = (si_httpc_call_t){.url = st->urls[k], .content_type = "application/x-protobuf",
                                     .iov = iov, .iovcnt = iovcnt,
                                     .timeout_ms = gw->plan.timeout_ms, .headers = no_expect};
    }
    if (si_httpc_post_many(client, K, calls, resps, err) < 0) goto out;
    /* Bytes as they moved, every attempt counted: a call retried after its
     * connection broke may have sent its whole body already. */
    for (int k = 0; k < K; k++) tr->bytes_sent += resps[k].sent, tr->bytes_received += resps[k].received;
    /* A stage call is idempotent: one retry of what failed to connect or lost
     * its connection (a function restarting, a keep-alive connection the peer
     * closed), the bands that need it at once, in what is left of the plan's
     * timeout. A timeout is not retried: the time is spent. */
    int again[SI_PLAN_MAX_BANDS], n_again = 0;
    int left_ms = gw->plan.timeout_ms - (int)((now_s() - t0) * 1e3);
    for (int k = 0; k < K && left_ms > 0; k++)
        if (resps[k].error == SI_HTTPC_CONNECT || resps[k].error == SI_HTTPC_IO) again[n_again++] = k;
    if (n_again) {
        si_httpc_call_t rc_calls[SI_PLAN_MAX_BANDS];
        si_httpc_resp_t rc_resps[SI_PLAN_MAX_BANDS];
        for (int a = 0; a < n_again; a++) {
            rc_calls[a] = calls[again[a]];
            rc_calls[a].timeout_ms = left_ms;
        }
        if (si_httpc_post_many(client, n_again, rc_calls, rc_resps, err) < 0) goto out;
        for (int a = 0; a < n_again; a++) {
            tr->bytes_sent += rc_resps[a].sent, tr->bytes_received += rc_resps[a].received;
            si_httpc_resp_free(&resps[again[a]]);
            resps[again[a]] = rc_resps[a];
        }
        tr->retries += n_again;
    }
    /* A whole reply is kept as it came; band replies are stitched in the
     * wire's encoding (one copy of their rows). */
    int keep = K == 1;
    if (!keep && !st->hold && !(y->stitched = malloc(numel * es))) {
        si_err_set(err, "out of memory");
        goto out;
    }
    for (int k = 0; k < K; k++) {
        const band_rows_t *r = &st->rows[k];
        if (resps[k].error != SI_HTTPC_OK || resps[k].status != 200) {
            rc = from_httpc(&resps[k]);
            if (resps[k].error == SI_HTTPC_OK && resps[k].status == 409) *not_held = 1;
            if (resps[k].error != SI_HTTPC_OK)
                si_err_set(err, "step %d (%s) band %d: %s: %s", i, gw->plan.steps[i].segment, k,
                           st->urls[k], resps[k].error_msg);
            else
                si_err_set(err, "step %d (%s) band %d: %s answered %d: %.*s", i,
                           gw->plan.steps[i].segment, k, st->urls[k], resps[k].status,
                           (int)(resps[k].len > 300 ? 300 : resps[k].len), (const char *)resps[k].body);
            goto out;
        }
        si_wire_decode_opts_t opts = {.raw = 1};
        si_wire_reply_t rp;
        if (si_wire_decode_reply_view(resps[k].body, resps[k].len, &rp, &opts, err) < 0) {
            si_err_prefix(err, "step %d band %d: bad reply from %s", i, k, st->urls[k]);
            rc = SI_GW_UPSTREAM_ERROR;
            goto out;
        }
        int rows = r->out_end - r->out_begin, row0 = r->out_begin;
        if (st->hold) rows = r->reply_end - r->reply_begin, row0 = r->reply_begin;
        int ok = rp.output.ndim == yv->ndim && rp.output.dims[0] == 1 && rp.output.dims[1] == yv->dims[1] &&
                 (yv->ndim == 2 || (rp.output.dims[2] == rows && rp.output.dims[3] == yv->dims[3] &&
                                    rp.out_row0 == row0));
        /* Dense unless ZEROS was allowed: stitching and edges index rows. */
        int enc_ok = rp.output.encoding == SI_WIRE_DENSE || zeros_ok;
        if (!ok || rp.output.dtype != gw->dtype || rp.output.layout != yl || !enc_ok) {
            si_err_set(err, "step %d band %d: %s replied with %s", i, k, st->urls[k],
                       !ok                            ? "a tensor of the wrong shape or rows"
                       : rp.output.dtype != gw->dtype ? "another dtype than asked for"
                       : rp.output.layout != yl       ? "another layout than asked for"
                                                      : "ZEROS where it asked for dense");
            si_wire_reply_free(&rp);
            rc = SI_GW_UPSTREAM_ERROR;
            goto out;
        }
        if (j > i + 1) {
            if (trace_chain(gw, i, j - i, &rp, resps[k].seconds, resps[k].len, tr, err) < 0) {
                si_err_prefix(err, "step %d: %s", i, st->urls[k]);
                si_wire_reply_free(&rp);
                rc = SI_GW_UPSTREAM_ERROR;
                goto out;
            }
        } else {
            double own = (double)si_wire_timings_own_us(&rp.timings) * 1e-6;
            double net = resps[k].seconds - own;
            tr->network += net > 0 ? net : 0;
            double comp = (double)rp.timings.compute_us * 1e-6;
            if (comp > tr->compute) tr->compute = comp;
        }
        if (keep || st->hold) {
            held_t *h = st->hold ? &edges[k] : y;
            h->rp = rp; /* the elements lie in the body: both stay alive */
            h->body = resps[k].body;
            resps[k].body = NULL;
            continue;
        }
        if (yv->ndim == 4)
            place_rows(rp.output.bytes, ys, es, r->out_begin, r->out_end, y->stitched);
        else
            memcpy(y->stitched, rp.output.bytes, numel * es);
        si_wire_reply_free(&rp);
    }
    if (out) {
        float *tmp = yl == SI_WIRE_NHWC ? malloc(numel * sizeof *tmp) : out;
        if (!tmp) {
            si_err_set(err, "out of memory");
            goto out;
        }
        if (y->stitched)
            si_wire_unpack_elems(gw->dtype, y->stitched, numel, tmp);
        else
            si_wire_tensor_floats(&y->rp.output, tmp); /* any dtype, either encoding */
        if (tmp != out) {
            to_nchw(tmp, yv->dims[1], yv->dims[2], yv->dims[3], out);
            free(tmp);
        }
    }
    rc = SI_GW_OK;
out:
    /* A chain's steps were traced from its reply; a failed call is the first step's. */
    if (j == i + 1 || rc != SI_GW_OK) tr->seconds += now_s() - t0;
    if (rc != SI_GW_OK || out) held_free(y);
    if (rc != SI_GW_OK && st->hold)
        for (int k = 0; k < K; k++) held_free(&edges[k]);
    for (int k = 0; k < K; k++) {
        free(slices[k]);
        free(gathers[k]);
        si_wire_packed_free(&packed[k]);
        si_httpc_resp_free(&resps[k]);
    }
    return rc;
}

/* Runs the resident run of steps [i, j) (plan.h): one call per step, the
 * bands' edges passed from each step to the next. Arguments as run_step's;
 * trace: the whole plan's. A function that lost the request's rows (it
 * restarted, or evicted them) makes the run start again, once, as a new
 * request: x, its input, is still here. On failure *failed is the step that
 * failed (of the last attempt): the steps after it have no trace. */
static si_gateway_status_t run_resident(si_gateway_t *gw, si_httpc_t *client, int i, int j,
                                        const void *x, si_wire_dtype_t xdt, si_wire_layout_t xl,
                                        held_t *y, float *out, si_gateway_trace_t *trace,
                                        int *failed, si_err_t *err) {
    int K = gw->steps[i].bands, restarts = 0;
    held_t *e = calloc(2 * (size_t)K, sizeof *e), *prev = e, *next = e + K; /* per request: K, not the most */
    if (!e) {
        si_err_set(err, "out of memory");
        return SI_GW_FAILED;
    }
    si_gateway_status_t rc = SI_GW_FAILED;
    *failed = i;
    for (int attempt = 0; attempt < 2; attempt++) {
        char id[48];
        snprintf(id, sizeof id, "%016llx-%llu", gw->id_prefix,
                 (unsigned long long)atomic_fetch_add(&gw->seq, 1));
        int not_held = 0;
        for (int m = i; m < j; m++) {
            rc = run_step(gw, client, m, m + 1, x, xdt, xl, 0, 0, y, m == j - 1 ? out : NULL,
                          &trace->steps[m], id, prev, next, &not_held, err);
            for (int k = 0; k < K; k++) held_free(&prev[k]);
            held_t *t = prev;
            prev = next, next = t;
            *failed = m;
            if (rc != SI_GW_OK) break;
        }
        for (int k = 0; k < K; k++) held_free(&prev[k]);
        if (rc == SI_GW_OK || !not_held) break;
        restarts++;
    }
    trace->steps[i].retries += restarts;
    free(e);
    return rc;
}

si_gateway_status_t si_gateway_run(si_gateway_t *gw, si_httpc_t *client, const float *input,
                                   float *out, si_gateway_trace_t *trace, si_err_t *err) {
    si_gateway_trace_t local;
    if (!trace) trace = &local;
    memset(trace, 0, sizeof *trace);
    double t0 = now_s();
    const void *x = input;
    si_wire_dtype_t xdt = SI_WIRE_FP32;
    si_wire_layout_t xl = SI_WIRE_NCHW;
    int xz = 0; /* x is a ZEROS encoding of xz_len bytes */
    size_t xz_len = 0;
    held_t cur = {0}; /* the previous step's output: x, until the next step has sent it */
    si_gateway_status_t rc = SI_GW_OK;
    for (int i = 0, j; i < gw->plan.n_steps && rc == SI_GW_OK; i = j) {
        held_t next = {0}; /* a run that fails early may not touch it */
        int failed = i;     /* the step that failed, if one did */
        if (si_plan_resident_end(&gw->plan, i) > i + 1) {
            j = si_plan_resident_end(&gw->plan, i);
            rc = run_resident(gw, client, i, j, x, xdt, xl, &next, j == gw->plan.n_steps ? out : NULL,
                              trace, &failed, err);
        } else {
            j = si_plan_call_end(&gw->plan, i);
            int not_held = 0;
            rc = run_step(gw, client, i, j, x, xdt, xl, xz, xz_len, &next,
                          j == gw->plan.n_steps ? out : NULL,
                          &trace->steps[i], NULL, NULL, NULL, &not_held, err);
        }
        /* Only steps with a trace: a failed call traced its first step only
         * (a chain's), a failed resident run those up to the one that failed. */
        trace->n_steps = rc == SI_GW_OK ? j : failed + 1;
        held_free(&cur);
        cur = next;
        x = held_bytes(&cur), xdt = gw->dtype, xl = gw->layout;
        xz = !cur.stitched && cur.rp.output.encoding == SI_WIRE_ZEROS;
        xz_len = xz ? cur.rp.output.nbytes : 0;
    }
    held_free(&cur);
    trace->seconds = now_s() - t0;
    return rc;
}
