/* stage.c - splitinfer stage: one segment of a model behind HTTP.
 *
 *   POST /v1/stage   application/x-protobuf StageRequest -> StageReply
 *   GET  /healthz    200 while the process serves
 *   GET  /readyz     200 once the weights are mapped in and the engine compiled
 *                    (they move to huge pages after the first call: si_stage_hot_start)
 *                    (and --warmup-runs N runs done; default 0: see stage.h)
 *   GET  /metrics    Prometheus text
 *
 * Two HTTP workers: one computes while the other still answers probes and
 * scrapes (compute itself is serialized inside lib/stage).
 *
 * --next URL: the function a chained request (StageRequest.then) goes on
 * to. The worker that computed then waits for it, without the compute lock,
 * so such a stage has four workers: two may wait on the rest of the chain
 * while a third computes. Its errors come back as 503 (next function down),
 * 504 (it ran out of the caller's time) or 502 (it answered an error).
 *
 * --steps A,B,...: the resident steps (stage.h) this function serves within
 * its --segment, each warmed at its --band. A call continuing rows it does
 * not hold is answered 409. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "h2oc.h"
#include "modelfile.h"
#include "serve.h"
#include "stage.h"

typedef struct stage_srv {
    si_stage_t *stage;
    atomic_int ready;
    serve_metrics_t m;
    si_metric_t *phase;   /* splitinfer_stage_phase_seconds{function,phase} */
    si_metric_t *errors;  /* splitinfer_stage_errors_total{function,kind} */
    si_metric_t *held[2]; /* splitinfer_stage_held_{bands,bytes}{function}: resident steps only */
    si_metric_t *hot;     /* splitinfer_stage_weights_hot{function} */
    atomic_int hot_kicked; /* the move to huge pages has been started */
    char next_url[512];        /* --next + "/v1/stage", "" when none */
    pthread_key_t client_key;  /* per worker thread: its si_h2oc_t to next_url */
} stage_srv_t;

/* The next function's reply: its output tensor (the logits, or a run's
 * output) and a few hundred bytes of timings. */
#define NEXT_MAX_RESPONSE (SI_WIRE_MAX_ELEMS * 4 + (1u << 20))
/* A chained call whose caller gave no timeout: both tries of the next call
 * together (the gateway always gives one). */
#define NEXT_DEFAULT_TIMEOUT_MS 30000

static void client_free(void *c) { si_h2oc_free(c); }

/* Passes a chained call on: reply->packed (the next function's request) goes
 * to next_url, and its answer becomes reply's. 0, or an HTTP status with err
 * set. One retry when the connection failed or broke: a stage call is
 * idempotent. */
static int forward(stage_srv_t *s, si_stage_reply_t *reply, si_err_t *err) {
    si_h2oc_t *c = pthread_getspecific(s->client_key);
    if (!c && (c = si_h2oc_new(s->next_url, err))) pthread_setspecific(s->client_key, c);
    if (!c) return 500;
    si_h2oc_resp_t r;
    /* Both tries share one budget: the caller's time left, or when it said
     * none, NEXT_DEFAULT_TIMEOUT_MS. */
    int budget = reply->forward_timeout_ms > 0 ? reply->forward_timeout_ms : NEXT_DEFAULT_TIMEOUT_MS;
    si_h2oc_post(c, "application/x-protobuf", reply->packed.iov, reply->packed.iovcnt, budget,
                 NEXT_MAX_RESPONSE, &r);
    double seconds = r.seconds;
    int left = budget - (int)(seconds * 1e3);
    if ((r.error == SI_H2OC_CONNECT || r.error == SI_H2OC_IO) && left > 0) {
        si_h2oc_resp_free(&r); /* within what is left of the caller's time */
        si_h2oc_post(c, "application/x-protobuf", reply->packed.iov, reply->packed.iovcnt, left,
                     NEXT_MAX_RESPONSE, &r);
        seconds += r.seconds;
    }
    uint64_t us = (uint64_t)(seconds * 1e6);
    int status = 0;
    if (r.error != SI_H2OC_OK) {
        si_err_set(err, "next function: %s", r.error_msg);
        status = r.error == SI_H2OC_CONNECT ? 503 : r.error == SI_H2OC_TIMEOUT ? 504 : 502;
    } else if (r.status != 200) {
        si_err_set(err, "next function %s answered %d: %.*s", s->next_url, r.status,
                   (int)(r.len > 300 ? 300 : r.len), r.body ? r.body : "");
        status = r.status == 503 || r.status == 504 ? r.status : 502;
    } else {
        char *body = r.body;
        r.body = NULL;
        if (si_stage_chain_reply(reply, body, r.len, us, err) < 0) {
            si_err_prefix(err, "next function %s: bad reply", s->next_url);
            status = 502;
        }
    }
    si_h2oc_resp_free(&r);
    return status;
}

static void free_reply(void *p) {
    si_stage_reply_free(p);
    free(p);
}

static int on_stage(si_http_req_t *req, si_http_resp_t *resp, void *ud) {
    stage_srv_t *s = ud;
    if (!serve_content_type_is(req, "application/x-protobuf"))
        return si_http_json_error(resp, 415, "unsupported_media_type",
                                  "POST /v1/stage takes application/x-protobuf (a StageRequest)");
    si_stage_reply_t *reply = malloc(sizeof *reply);
    if (!reply) return si_http_json_error(resp, 500, "internal", "out of memory");
    si_err_t err = {{0}};
    si_stage_status_t st = si_stage_call(s->stage, req->body, req->body_len, reply, &err);
    /* The weights move to huge pages after the first call, not at ready:
     * started at ready, the move took CPU from the first request (in
     * podman at 0.35 CPU, its quota), which a cold start is timed to. */
    if (!atomic_exchange(&s->hot_kicked, 1)) {
        si_err_t herr = {{0}};
        if (si_stage_hot_start(s->stage, &herr) < 0)
            fprintf(stderr, "splitinfer stage %s: %s; the weights stay mapped\n", s->m.function,
                    herr.msg);
    }
    const char *fn = s->m.function;
    if (s->held[0]) { /* what resident requests left here, after this call */
        size_t bytes = 0;
        int n = si_stage_held(s->stage, &bytes);
        si_metrics_set(s->held[0], &fn, n, NULL);
        si_metrics_set(s->held[1], &fn, (double)bytes, NULL);
    }
    if (st != SI_STAGE_OK) {
        static const char *kinds[] = {"ok", "bad_message", "bad_shape", "failed", "not_held"};
        const char *lv[] = {fn, kinds[st]};
        si_metrics_inc(s->errors, lv, NULL);
        free(reply);
        int status = st == SI_STAGE_BAD_MESSAGE ? 400 : st == SI_STAGE_BAD_SHAPE ? 422
                     : st == SI_STAGE_NOT_HELD  ? 409 : 500;
        return si_http_json_error(resp, status, si_http_status_code(status), "%s", err.msg);
    }
    int fwd = reply->forward, status = fwd ? forward(s, reply, &err) : 0;
    if (status) {
        const char *lv[] = {fn, status == 503 ? "next_down" : status == 504 ? "next_timeout" : "next_error"};
        si_metrics_inc(s->errors, lv, NULL);
        free_reply(reply);
        return si_http_json_error(resp, status, si_http_status_code(status), "%s", err.msg);
    }
    const char *phases[] = {"decode", "queue", "compute", "encode", "forward"};
    uint64_t us[] = {reply->timings.decode_us, reply->timings.queue_us,
                     reply->timings.compute_us, reply->timings.encode_us, reply->timings.forward_us};
    for (int i = 0; i < 4 + fwd; i++) {
        const char *lv[] = {fn, phases[i]};
        si_metrics_observe(s->phase, lv, (double)us[i] * 1e-6, NULL);
    }
    si_http_resp_content_type(resp, "application/x-protobuf");
    /* [header][output floats] go out as they lie, freed once written: no copy. */
    si_http_resp_body_iov(resp, reply->packed.iov, reply->packed.iovcnt, free_reply, reply);
    return 0;
}

static int on_healthz(si_http_req_t *req, si_http_resp_t *resp, void *ud) {
    (void)req, (void)ud;
    si_http_resp_content_type(resp, "text/plain");
    si_http_resp_body(resp, "ok\n", 3);
    return 0;
}

/* /metrics, with where the weights are read from as of now. */
static int on_metrics(si_http_req_t *req, si_http_resp_t *resp, void *ud) {
    stage_srv_t *s = ud;
    const char *fn = s->m.function;
    si_metrics_set(s->hot, &fn, si_stage_hot_state(s->stage, NULL), NULL);
    return serve_metrics_handler(req, resp, &s->m);
}

static int on_readyz(si_http_req_t *req, si_http_resp_t *resp, void *ud) {
    (void)req;
    stage_srv_t *s = ud;
    if (!atomic_load(&s->ready))
        return si_http_json_error(resp, 503, "not_ready", "loading weights and warming up");
    si_http_resp_content_type(resp, "text/plain");
    si_http_resp_body(resp, "ready\n", 6);
    return 0;
}

int si_cmd_stage(int argc, char **argv) {
    cli_opts_t o;
    if (cli_parse(argc, argv, "mstpHNBKXUT", &o)) return 1;
    if (o.n_args) {
        free(o.args);
        return cli_fail("usage: splitinfer stage -m MODEL [--segment A..B] [--port P] [--threads N] "
                        "[--host ADDR] [--name NAME] [--band k/K | --bands K] [--next URL] "
                        "[--warmup-runs N] [--steps A,B,...]");
    }
    double t0 = cli_now_ms();
    serve_block_signals();
    serve_tune_malloc();
    stage_srv_t s = {0};
    si_err_t err = {{0}};
    si_http_server_t *srv = NULL;
    int rc = 1, have_key = 0;
    if (o.next) {
        size_t n = strlen(o.next);
        while (n && o.next[n - 1] == '/') n--;
        if (strncmp(o.next, "http://", 7) && strncmp(o.next, "https://", 8)) {
            cli_fail("--next wants an http:// or https:// URL, got '%s'", o.next);
            goto out;
        }
        if (n + sizeof "/v1/stage" > sizeof s.next_url) {
            cli_fail("--next URL too long");
            goto out;
        }
        snprintf(s.next_url, sizeof s.next_url, "%.*s/v1/stage", (int)n, o.next);
        if (pthread_key_create(&s.client_key, client_free)) {
            cli_fail("out of memory");
            goto out;
        }
        have_key = 1;
    }
    if (!o.model) {
        cli_fail("no model: pass -m MODEL or set SPLITINFER_MODEL");
        goto out;
    }
    si_engine_set_threads(o.threads ? o.threads : 1);
    si_graph_t *g = si_model_load(o.model, &err);
    if (!g) {
        cli_fail("%s", err.msg);
        goto out;
    }
    char defseg[SI_MAX_NAME];
    const char *segment = o.segment ? o.segment : si_graph_default_segment(g, defseg, sizeof defseg);
    if (!(s.stage = si_stage_new(g, segment, &err))) {
        cli_fail("%s", err.msg);
        goto out;
    }
    si_stage_set_next(s.stage, o.next != NULL);
    for (const char *p = o.steps; p && *p;) {
        char step[SI_MAX_NAME];
        size_t n = strcspn(p, ",");
        snprintf(step, sizeof step, "%.*s", (int)(n < sizeof step ? n : sizeof step - 1), p);
        if (si_stage_add_step(s.stage, step, &err) < 0) {
            cli_fail("--steps: %s", err.msg);
            goto out;
        }
        p += n + (p[n] == ',');
    }
    static const char *const fp[] = {"function", "phase"}, *const fk[] = {"function", "kind"};
    const char *name = o.name ? o.name : segment;
    if (serve_metrics_init(&s.m, name, &err) < 0 ||
        !(s.phase = si_metrics_histogram(s.m.reg, "splitinfer_stage_phase_seconds",
                                         "Where a stage call's time went: decode, queue, compute, "
                                         "encode.", 2, fp, NULL, 0, &err)) ||
        !(s.errors = si_metrics_counter(s.m.reg, "splitinfer_stage_errors_total",
                                        "Stage calls refused, by kind.", 2, fk, &err)) ||
        !(s.hot = si_metrics_gauge(s.m.reg, "splitinfer_stage_weights_hot",
                                   "1 once the weights run from huge pages, 0 before (from the "
                                   "mapped file), -1 if moving them failed (stage.h).",
                                   1, (const char *const[]){"function"}, &err))) {
        cli_fail("%s", err.msg);
        goto out;
    }
    static const char *const ff[] = {"function"};
    if (o.steps && (!(s.held[0] = si_metrics_gauge(s.m.reg, "splitinfer_stage_held_bands",
                                                  "Output bands held for resident requests' next "
                                                  "calls (stage.h).", 1, ff, &err)) ||
                    !(s.held[1] = si_metrics_gauge(s.m.reg, "splitinfer_stage_held_bytes",
                                                  "Bytes of the bands held.", 1, ff, &err)))) {
        cli_fail("%s", err.msg);
        goto out;
    }
    /* A request is the segment's input tensor (or a band of it) plus a few
     * hundred bytes of HTTP and protobuf headers. */
    const si_graph_t *sg = si_stage_graph(s.stage);
    size_t in_bytes = si_value_numel(&sg->values[si_stage_segment(s.stage)->in]) * sizeof(float);
    si_http_config_t cfg = {.host = o.host ? o.host : "0.0.0.0", .port = serve_port(o.port),
                            .n_threads = o.next ? 4 : 2, .input_buffer_bytes = in_bytes + 16384,
                            .on_access = serve_on_access, .access_ud = &s.m};
    if (!(srv = si_http_server_new(&cfg, &err)) ||
        si_http_route(srv, "POST", "/v1/stage", on_stage, &s, &err) < 0 ||
        si_http_route(srv, "GET", "/healthz", on_healthz, &s, &err) < 0 ||
        si_http_route(srv, "GET", "/readyz", on_readyz, &s, &err) < 0 ||
        si_http_route(srv, "GET", "/metrics", on_metrics, &s, &err) < 0 ||
        si_http_server_start(srv, &err) < 0) {
        cli_fail("%s", err.msg);
        goto out;
    }
    /* Serving (live) from here; ready once compiled and the weights mapped
     * in, after --warmup-runs N runs (default none, see stage.h). */
    double t1 = cli_now_ms();
    /* Warm what this function will be asked for: its band, or all K bands
     * when one Service serves every band of a step. */
    int wk = o.band_n ? o.band_k : -1, wn = o.band_n ? o.band_n : o.bands ? o.bands : 1;
    if (si_stage_warmup(s.stage, wk, wn, o.warmup_runs < 0 ? 0 : o.warmup_runs, &err) < 0) {
        cli_fail("warm-up of %s failed: %s", segment, err.msg);
        goto out;
    }
    double t2 = cli_now_ms();
    si_metric_t *load = si_metrics_gauge(s.m.reg, "splitinfer_model_load_seconds",
                                         "Start of the process to weights loaded and warm.", 1,
                                         (const char *const[]){"function"}, &err);
    if (load) si_metrics_set(load, (const char *const[]){name}, (t2 - t0) / 1e3, NULL);
    atomic_store(&s.ready, 1);
    fprintf(stderr, "splitinfer stage %s: serving %s on port %d (load %.0f ms, warm-up %.0f ms)%s%s\n",
            name, segment, si_http_server_port(srv), t1 - t0, t2 - t1, o.next ? ", chained to " : "",
            o.next ? o.next : "");
    int sig = serve_wait();
    fprintf(stderr, "splitinfer stage %s: signal %d, finishing requests in flight\n", name, sig);
    si_http_server_stop(srv);
    rc = 0;
out:
    si_http_server_free(srv);
    si_stage_free(s.stage);
    if (s.m.reg) si_metrics_free(s.m.reg);
    if (have_key) pthread_key_delete(s.client_key);
    free(o.args);
    return rc;
}
