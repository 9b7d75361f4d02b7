/*
 * h2oc.h - a blocking HTTP/1.1 POST client on libh2o's own client
 * (h2o/http1client.h), for the stage binary.
 *
 * Why a second client next to httpc (libcurl): a stage function of a chained
 * plan calls the next function, one call at a time, from the thread that
 * computed. Its image carries libh2o already (the server); libcurl would
 * add ~11 MiB of shared libraries to every stage image. This is the small
 * part of an HTTP client a stage needs - one URL, POST, keep-alive, a total
 * timeout - on the library it already has. The gateway's fan-out stays on
 * httpc.
 *
 * One si_h2oc_t per thread (not thread-safe): it owns a private h2o event
 * loop, which runs only inside si_h2oc_post, and a pool of keep-alive
 * connections to the one host:port of its URL. Only http:// URLs. The
 * calling thread must have SIGPIPE blocked or ignored (h2o writes with
 * writev): the servers' threads do (http.h, serve.c).
 */
#ifndef SI_H2OC_H
#define SI_H2OC_H

#include <stddef.h>
#include <sys/uio.h>

#include "err.h"

typedef struct si_h2oc si_h2oc_t;

/* How a call ended; as si_httpc_error_t (httpc.h), which they mirror. */
typedef enum si_h2oc_error {
    SI_H2OC_OK = 0,  /* a response arrived (any status) */
    SI_H2OC_CONNECT, /* no connection: refused, unreachable, name not resolved. The
                        request never reached the server: safe to retry once */
    SI_H2OC_TIMEOUT, /* timeout_ms passed; the server may still be working on it */
    SI_H2OC_IO,      /* the connection broke after the request went out, or the
                        response was garbled: retry only idempotent calls */
    SI_H2OC_OTHER,   /* a response over the caller's limit, out of memory */
} si_h2oc_error_t;

typedef struct si_h2oc_resp {
    si_h2oc_error_t error;
    int status;                 /* HTTP status, 0 unless error == SI_H2OC_OK */
    char *body;                 /* malloc'd body plus a NUL (not counted in len); NULL if empty */
    size_t len;
    double seconds;             /* round trip: call start -> last byte */
    char error_msg[SI_ERR_MAX]; /* why, when error != SI_H2OC_OK (names the URL) */
} si_h2oc_resp_t;

/* A client for url ("http://host[:port]/path"); NULL and err set for a URL it
 * cannot use or out of memory. */
si_h2oc_t *si_h2oc_new(const char *url, si_err_t *err);
void si_h2oc_free(si_h2oc_t *c);

/* POSTs the body (iovcnt pieces, sent as they lie, borrowed for the call)
 * with content_type to the client's URL and waits at most timeout_ms (<= 0:
 * 30 s) for the whole response, of at most max_response bytes. *out is
 * overwritten; free it with si_h2oc_resp_free in every case. Returns the
 * HTTP status, or -1 (out->error says how it failed). */
int si_h2oc_post(si_h2oc_t *c, const char *content_type, const struct iovec *iov, int iovcnt,
                 int timeout_ms, size_t max_response, si_h2oc_resp_t *out);

void si_h2oc_resp_free(si_h2oc_resp_t *r);

#endif
