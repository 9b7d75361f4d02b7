/* gateway.c - splitinfer gateway: takes images, runs a plan over the stage
 * functions, answers the top classes.
 *
 *   POST /v1/classify              image/png -> {"top": [...], ...}
 *                                  ?k=N top-k (default 5), ?logits=1 adds the logits
 *   GET  /v2/health/live, /v2/health/ready, GET /v2/models/{name},
 *   POST /v2/models/{name}/infer   Open Inference Protocol v2 (REST), FP32 [1,3,224,224]
 *   GET  /healthz, /readyz (this process only), /metrics
 *
 * Each HTTP worker blocks on its upstream calls, so --threads bounds the
 * requests in flight (default 16); every worker keeps its own keep-alive
 * connections to the functions. */
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "gateway.h"
#include "image.h"
#include "labels.h"
#include "modelfile.h"
#include "serve.h"

/* Limits: a PNG body, and an OIP JSON body (150528 floats as text). */
#define GW_MAX_BODY (32u << 20) /* bytes */

typedef struct gw_srv {
    si_gateway_t *gw;
    serve_metrics_t m;
    si_metric_t *step_s, *net_s, *hop_bytes, *upstream_err;
    char step_names[SI_PLAN_MAX_STEPS][SI_MAX_NAME + 8];
    pthread_key_t client_key; /* per worker thread: its si_httpc_t */
} gw_srv_t;

static void client_free(void *c) { si_httpc_free(c); }

static si_httpc_t *thread_client(gw_srv_t *s) {
    si_httpc_t *c = pthread_getspecific(s->client_key);
    if (!c && (c = si_httpc_new())) pthread_setspecific(s->client_key, c);
    return c;
}

static int status_of(si_gateway_status_t st) {
    switch (st) {
    case SI_GW_OK: return 200;
    case SI_GW_BAD_INPUT: return 422;
    case SI_GW_UPSTREAM_DOWN: return 503;
    case SI_GW_UPSTREAM_TIMEOUT: return 504;
    case SI_GW_UPSTREAM_ERROR: return 502;
    default: return 500;
    }
}

/* Runs the plan and records its trace in the metrics. -1 with resp set on failure. */
static int run_plan(gw_srv_t *s, const float *in, float *out, si_gateway_trace_t *tr,
                    si_http_resp_t *resp) {
    si_httpc_t *c = thread_client(s);
    if (!c) return si_http_json_error(resp, 500, "internal", "out of memory");
    si_err_t err = {{0}};
    si_gateway_status_t st = si_gateway_run(s->gw, c, in, out, tr, &err);
    /* A function's bug (or an fp16 plan's overflow) must not become a 200
     * with NaN probabilities or a JSON array that silently drops values. */
    for (size_t i = 0, n = si_gateway_out_numel(s->gw); st == SI_GW_OK && i < n; i++)
        if (!isfinite(out[i])) {
            st = SI_GW_UPSTREAM_ERROR;
            si_err_set(&err, "the plan's output is not finite (%g at element %zu)", (double)out[i], i);
        }
    for (int i = 0; i < tr->n_steps; i++) {
        const char *lv[] = {s->step_names[i]};
        const si_gateway_step_trace_t *t = &tr->steps[i];
        si_metrics_observe(s->step_s, lv, t->seconds, NULL);
        if (st == SI_GW_OK || i + 1 < tr->n_steps) si_metrics_observe(s->net_s, lv, t->network, NULL);
        const char *sent[] = {s->step_names[i], "sent"}, *recv[] = {s->step_names[i], "received"};
        si_metrics_add(s->hop_bytes, sent, (double)t->bytes_sent, NULL);
        si_metrics_add(s->hop_bytes, recv, (double)t->bytes_received, NULL);
    }
    if (st == SI_GW_OK) return 0;
    int status = status_of(st);
    char code[8];
    snprintf(code, sizeof code, "%d", status);
    const char *lv[] = {code};
    /* Only what a function caused: the gateway's own failures (out of
     * memory, 500) are in splitinfer_requests_total by code. */
    if (st == SI_GW_UPSTREAM_DOWN || st == SI_GW_UPSTREAM_TIMEOUT || st == SI_GW_UPSTREAM_ERROR)
        si_metrics_inc(s->upstream_err, lv, NULL);
    /* One line per failed request on stderr (the container log): which step,
     * band and function failed and how, after how long. */
    fprintf(stderr, "splitinfer gateway %s: %d after %.0f ms: %s\n", s->m.function, status,
            tr->seconds * 1e3, err.msg);
    return si_http_json_error(resp, status, si_http_status_code(status), "%s", err.msg);
}

/* Value of key in a raw query string ("k=5&logits=1"), or NULL. */
static const char *query_get(const char *q, const char *key, char *buf, size_t len) {
    size_t kl = strlen(key);
    for (const char *p = q; p && *p;) {
        if (!strncmp(p, key, kl) && (p[kl] == '=' || p[kl] == '&' || !p[kl])) {
            const char *v = p[kl] == '=' ? p + kl + 1 : p + kl;
            size_t n = strcspn(v, "&");
            if (n >= len) n = len - 1;
            memcpy(buf, v, n), buf[n] = 0;
            return buf;
        }
        p = strchr(p, '&');
        if (p) p++;
    }
    return NULL;
}

static void send_json(si_http_resp_t *resp, int status, json_t *o) {
    char *text = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(9));
    json_decref(o);
    si_http_resp_status(resp, status);
    si_http_resp_content_type(resp, "application/json");
    if (text) si_http_resp_body_borrow(resp, text, strlen(text), free, text);
}

static int on_classify(si_http_req_t *req, si_http_resp_t *resp, void *ud) {
    gw_srv_t *s = ud;
    if (!serve_content_type_is(req, "image/png"))
        return si_http_json_error(resp, 415, "unsupported_media_type",
                                  "POST /v1/classify takes image/png");
    char qb[16];
    int k = query_get(req->query, "k", qb, sizeof qb) ? atoi(qb) : 5;
    int want_logits = query_get(req->query, "logits", qb, sizeof qb) && strcmp(qb, "0");
    size_t nout = si_gateway_out_numel(s->gw);
    if (k < 1 || k > (int)nout) k = k < 1 ? 1 : (int)nout;
    si_rgb_t img = {0};
    si_err_t err = {{0}};
    if (si_image_decode_png(req->body, req->body_len, &img, &err) < 0)
        return si_http_json_error(resp, 400, "bad_request", "%s", err.msg);
    float *in = si_http_alloc(req, si_gateway_in_numel(s->gw) * sizeof(float));
    float *out = si_http_alloc(req, nout * sizeof(float));
    if (si_gateway_in_numel(s->gw) != 3u * SI_IMAGE_SIZE * SI_IMAGE_SIZE) {
        si_rgb_free(&img);
        return si_http_json_error(resp, 422, "unprocessable_entity",
                                  "the model does not take a 3x%dx%d image", SI_IMAGE_SIZE,
                                  SI_IMAGE_SIZE);
    }
    int rc = si_image_preprocess(&img, in, &err);
    si_rgb_free(&img);
    if (rc < 0) return si_http_json_error(resp, 400, "bad_request", "%s", err.msg);
    si_gateway_trace_t tr;
    if (run_plan(s, in, out, &tr, resp) < 0) return -1;
    /* Softmax over the logits, then the k best. */
    float mx = out[0];
    for (size_t i = 1; i < nout; i++) mx = out[i] > mx ? out[i] : mx;
    double sum = 0;
    for (size_t i = 0; i < nout; i++) sum += exp((double)(out[i] - mx));
    json_t *top = json_array();
    char *taken = calloc(nout, 1);
    for (int j = 0; j < k && taken; j++) {
        size_t best = 0;
        while (taken[best]) best++;
        for (size_t i = best + 1; i < nout; i++)
            if (!taken[i] && out[i] > out[best]) best = i;
        taken[best] = 1;
        json_array_append_new(top, json_pack("{s:i, s:s, s:f}", "index", (int)best, "label",
                                             si_label((int)best),
                                             "prob", exp((double)(out[best] - mx)) / sum));
    }
    free(taken);
    double net = 0;
    for (int i = 0; i < tr.n_steps; i++) net += tr.steps[i].network;
    json_t *o = json_pack("{s:o, s:s, s:f, s:f}", "top", top, "plan", si_gateway_plan(s->gw)->name,
                          "ms", tr.seconds * 1e3, "network_ms", net * 1e3);
    json_t *steps = json_array();
    for (int i = 0; i < tr.n_steps; i++) {
        const si_gateway_step_trace_t *t = &tr.steps[i];
        json_array_append_new(steps, json_pack("{s:s, s:f, s:f, s:f, s:I, s:I}", "segment",
                                               si_gateway_plan(s->gw)->steps[i].segment, "ms",
                                               t->seconds * 1e3, "network_ms", t->network * 1e3,
                                               "compute_ms", t->compute * 1e3, "bytes_sent",
                                               (json_int_t)t->bytes_sent, "bytes_received",
                                               (json_int_t)t->bytes_received));
    }
    json_object_set_new(o, "steps", steps);
    if (want_logits) {
        json_t *l = json_array();
        for (size_t i = 0; i < nout; i++) json_array_append_new(l, json_real(out[i]));
        json_object_set_new(o, "logits", l);
    }
    send_json(resp, 200, o);
    return 0;
}

static int on_live(si_http_req_t *req, si_http_resp_t *resp, void *ud) {
    (void)req, (void)ud;
    send_json(resp, 200, json_pack("{s:b}", "live", 1));
    return 0;
}

/* Ready when every function of the plan answers /readyz. */
static int on_ready(si_http_req_t *req, si_http_resp_t *resp, void *ud) {
    (void)req;
    gw_srv_t *s = ud;
    si_httpc_t *c = thread_client(s);
    const si_plan_t *p = si_gateway_plan(s->gw);
    for (int i = 0; c && i < p->n_steps; i++)
        for (int k = 0; k < (p->steps[i].n_functions ? p->steps[i].n_functions : 0); k++) {
            char url[SI_PLAN_MAX_URL + 16];
            snprintf(url, sizeof url, "%s/readyz", p->steps[i].functions[k]);
            si_httpc_resp_t r;
            int st = si_httpc_get(c, url, 2000, &r, NULL);
            si_httpc_resp_free(&r);
            if (st != 200)
                return si_http_json_error(resp, 503, "not_ready", "function %s is not ready",
                                          p->steps[i].functions[k]);
        }
    send_json(resp, 200, json_pack("{s:b}", "ready", 1));
    return 0;
}

static json_t *tensor_meta(const char *name, const si_value_t *v) {
    json_t *shape = json_array();
    for (int d = 0; d < v->ndim; d++) json_array_append_new(shape, json_integer(v->dims[d]));
    return json_pack("{s:s, s:s, s:o}", "name", name, "datatype", "FP32", "shape", shape);
}

/* OIP v2 infer: {"inputs": [{"name", "shape": [1,3,224,224], "datatype": "FP32",
 * "data": [150528 numbers, flat]}]} -> {"model_name", "outputs": [logits]}. */
static int oip_infer(gw_srv_t *s, si_http_req_t *req, si_http_resp_t *resp, const char *model) {
    if (req->content_type && !serve_content_type_is(req, "application/json"))
        return si_http_json_error(resp, 415, "unsupported_media_type", "infer takes application/json");
    json_error_t je;
    json_t *root = json_loadb(req->body, req->body_len, 0, &je);
    if (!root) return si_http_json_error(resp, 400, "bad_request", "JSON: %s", je.text);
    const si_graph_t *g = si_gateway_graph(s->gw);
    const si_value_t *x = &g->values[0];
    size_t n = si_gateway_in_numel(s->gw);
    json_t *in0 = json_array_get(json_object_get(root, "inputs"), 0);
    json_t *shape = json_object_get(in0, "shape"), *data = json_object_get(in0, "data");
    const char *dt = json_string_value(json_object_get(in0, "datatype"));
    int rc = -1;
    if (!in0 || !json_is_array(data) || !json_is_array(shape)) {
        si_http_json_error(resp, 400, "bad_request", "need inputs[0] with shape, datatype and data");
        goto out;
    }
    int shape_ok = dt && !strcmp(dt, "FP32") && json_array_size(shape) == (size_t)x->ndim;
    for (int d = 0; shape_ok && d < x->ndim; d++)
        shape_ok = json_integer_value(json_array_get(shape, (size_t)d)) == x->dims[d];
    if (!shape_ok || json_array_size(data) != n) {
        si_http_json_error(resp, 422, "unprocessable_entity",
                           "inputs[0] must be FP32 [1,%d,%d,%d] with %zu values (flat)", x->dims[1],
                           x->dims[2], x->dims[3], n);
        goto out;
    }
    float *in = si_http_alloc(req, n * sizeof *in);
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(data, i);
        if (!json_is_number(v)) {
            si_http_json_error(resp, 400, "bad_request", "inputs[0].data[%zu] is not a number", i);
            goto out;
        }
        in[i] = (float)json_number_value(v);
    }
    size_t nout = si_gateway_out_numel(s->gw);
    float *out = si_http_alloc(req, nout * sizeof *out);
    si_gateway_trace_t tr;
    if (run_plan(s, in, out, &tr, resp) < 0) goto out;
    json_t *vals = json_array();
    for (size_t i = 0; i < nout; i++) json_array_append_new(vals, json_real(out[i]));
    json_t *o = tensor_meta("logits", &g->values[g->output]);
    json_object_set_new(o, "data", vals);
    send_json(resp, 200, json_pack("{s:s, s:[o]}", "model_name", model, "outputs", o));
    rc = 0;
out:
    json_decref(root);
    return rc;
}

/* /v2/models/{name}[/ready|/infer] */
static int on_models(si_http_req_t *req, si_http_resp_t *resp, void *ud) {
    gw_srv_t *s = ud;
    const si_plan_t *p = si_gateway_plan(s->gw);
    char name[SI_MAX_NAME];
    size_t nl = strcspn(req->rest, "/");
    const char *tail = req->rest + nl;
    if (nl == 0 || nl >= sizeof name)
        return si_http_json_error(resp, 404, "not_found", "no model named '%.*s'", (int)nl, req->rest);
    memcpy(name, req->rest, nl), name[nl] = 0;
    if (strcmp(name, p->model))
        return si_http_json_error(resp, 404, "not_found", "no model '%s' (this gateway serves '%s')",
                                  name, p->model);
    int post = !strcmp(req->method, "POST");
    if (!strcmp(tail, "/infer")) {
        if (!post) return si_http_json_error(resp, 405, "method_not_allowed", "infer takes POST");
        return oip_infer(s, req, resp, name);
    }
    if (strcmp(req->method, "GET") && strcmp(req->method, "HEAD"))
        return si_http_json_error(resp, 405, "method_not_allowed", "%s: GET only, POST only to /infer",
                                  req->method);
    if (!strcmp(tail, "/ready")) return on_ready(req, resp, ud);
    if (*tail) return si_http_json_error(resp, 404, "not_found", "no such route");
    const si_graph_t *g = si_gateway_graph(s->gw);
    send_json(resp, 200,
              json_pack("{s:s, s:[s], s:s, s:[o], s:[o]}", "name", name, "versions", "1", "platform",
                        "splitinfer", "inputs", tensor_meta("input", &g->values[0]), "outputs",
                        tensor_meta("logits", &g->values[g->output])));
    return 0;
}

int si_cmd_gateway(int argc, char **argv) {
    cli_opts_t o;
    if (cli_parse(argc, argv, "mLptHN", &o)) return 1;
    if (o.n_args || !o.plan) {
        free(o.args);
        return cli_fail("usage: splitinfer gateway --plan PLAN.json -m MODEL [--port P] "
                        "[--threads N] [--host ADDR]");
    }
    serve_block_signals();
    serve_tune_malloc();
    gw_srv_t s;
    memset(&s, 0, sizeof s);
    pthread_key_create(&s.client_key, client_free);
    si_err_t err = {{0}};
    si_http_server_t *srv = NULL;
    si_plan_t *plan = malloc(sizeof *plan);
    int rc = 1;
    si_graph_t *g = NULL;
    if (!plan) goto out;
    if (si_plan_load(o.plan, plan, &err) < 0) {
        cli_fail("%s", err.msg);
        goto out;
    }
    if (!o.model) {
        cli_fail("no model: pass -m MODEL (its structure gives the steps' shapes)");
        goto out;
    }
    /* A mapped .sfm costs the gateway nothing: it never touches the weights. */
    if (!(g = si_model_load(o.model, &err)) || !(s.gw = si_gateway_new(plan, g, &err))) {
        cli_fail("%s", err.msg);
        goto out;
    }
    for (int i = 0; i < plan->n_steps; i++)
        snprintf(s.step_names[i], sizeof s.step_names[i], "%d:%s", i, plan->steps[i].segment);
    static const char *const ls[] = {"step"}, *const lsd[] = {"step", "direction"},
                             *const lc[] = {"code"};
    if (serve_metrics_init(&s.m, "gateway", &err) < 0 ||
        !(s.step_s = si_metrics_histogram(s.m.reg, "splitinfer_step_seconds",
                                          "Plan step latency at the gateway (send to stitched).",
                                          1, ls, NULL, 0, &err)) ||
        !(s.net_s = si_metrics_histogram(s.m.reg, "splitinfer_hop_network_seconds",
                                         "Network time of a step: round trip minus the stage's own "
                                         "time, summed over its hops.", 1, ls, NULL, 0, &err)) ||
        !(s.hop_bytes = si_metrics_counter(s.m.reg, "splitinfer_hop_bytes_total",
                                           "Bytes sent to and received from the functions.", 2,
                                           lsd, &err)) ||
        !(s.upstream_err = si_metrics_counter(s.m.reg, "splitinfer_upstream_errors_total",
                                              "Requests failed because of a function, by the "
                                              "status answered.", 1, lc, &err))) {
        cli_fail("%s", err.msg);
        goto out;
    }
    si_http_config_t cfg = {.host = o.host ? o.host : "0.0.0.0", .port = serve_port(o.port),
                            .n_threads = o.threads ? o.threads : 16, .max_body_bytes = GW_MAX_BODY,
                            .on_access = serve_on_access, .access_ud = &s.m};
    if (!(srv = si_http_server_new(&cfg, &err)) ||
        si_http_route(srv, "POST", "/v1/classify", on_classify, &s, &err) < 0 ||
        si_http_route(srv, "GET", "/v2/health/live", on_live, &s, &err) < 0 ||
        si_http_route(srv, "GET", "/v2/health/ready", on_ready, &s, &err) < 0 ||
        si_http_route(srv, "GET", "/healthz", on_live, &s, &err) < 0 ||
        /* /readyz is shallow: a Knative readiness probe must not wake every
         * function (they could never scale to zero); /v2/health/ready asks them. */
        si_http_route(srv, "GET", "/readyz", on_live, &s, &err) < 0 ||
        si_http_route(srv, "*", "/v2/models/*", on_models, &s, &err) < 0 ||
        si_http_route(srv, "GET", "/metrics", serve_metrics_handler, &s.m, &err) < 0 ||
        si_http_server_start(srv, &err) < 0) {
        cli_fail("%s", err.msg);
        goto out;
    }
    fprintf(stderr, "splitinfer gateway: plan %s (%d steps) on port %d\n", plan->name,
            plan->n_steps, si_http_server_port(srv));
    serve_wait();
    si_http_server_stop(srv);
    rc = 0;
out:
    si_http_server_free(srv);
    si_gateway_free(s.gw);
    if (s.m.reg) si_metrics_free(s.m.reg);
    free(plan), free(o.args);
    return rc;
}
