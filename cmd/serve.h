/*
 * serve.h - what the stage and gateway servers share: port and signal
 * handling, /metrics, and the access hook that counts every exchange.
 */
#ifndef SI_SERVE_H
#define SI_SERVE_H

#include <signal.h>

#include "http.h"
#include "metrics.h"

/* The port to listen on: the flag if given (>= 0), else $PORT (Knative sets
 * it), else 8080. */
int serve_port(int flag_port);

/* Blocks SIGTERM, SIGINT and SIGPIPE in the calling thread (and so in every
 * thread it starts later), so they can be taken with serve_wait. Call first. */
void serve_block_signals(void);

/* Keeps freed tensor-sized blocks in the process for the next request
 * instead of returning them to the kernel (see serve.c). Call before the
 * server starts threads. */
void serve_tune_malloc(void);

/* Waits for SIGTERM or SIGINT; returns the signal. */
int serve_wait(void);

/* Per-server metrics every exchange updates; `function` labels them. */
typedef struct serve_metrics {
    si_metrics_t *reg;
    const char *function;
    si_metric_t *requests;  /* splitinfer_requests_total{function,route,code} */
    si_metric_t *latency;   /* splitinfer_request_seconds{function,route} */
    si_metric_t *bytes_in;  /* splitinfer_received_bytes_total{function} */
    si_metric_t *bytes_out; /* splitinfer_sent_bytes_total{function} */
} serve_metrics_t;

/* Registers the families above and the process collector. */
int serve_metrics_init(serve_metrics_t *m, const char *function, si_err_t *err);

/* The access hook (http.h); ud is a serve_metrics_t. */
void serve_on_access(const si_http_access_t *rec, void *ud);

/* GET /metrics; ud is a serve_metrics_t. */
int serve_metrics_handler(si_http_req_t *req, si_http_resp_t *resp, void *ud);

/* True when the request's Content-Type is `want` (parameters ignored). */
int serve_content_type_is(const si_http_req_t *req, const char *want);

#endif
