/*
 * httpc.h - HTTP client on libcurl: single calls and concurrent fan-out.
 *
 * One si_httpc_t per thread (not thread-safe). It owns a curl multi handle;
 * every call, single or fanned out, runs on it, so all calls share its
 * connection cache: a keep-alive connection opened by one call is reused by
 * the next call to the same host:port, and n concurrent calls to one host use
 * n connections (HTTP/1.1, one request per connection at a time). Host
 * names are resolved once per minute for the whole process: every client
 * shares one DNS cache (thread-safe), so a function's name is not looked up
 * again by each worker.
 *
 * Deliberate choices, all in-cluster oriented: proxies from the environment
 * (http_proxy ...) are ignored; only http and https; no redirects followed;
 * bodies over 1 MiB go out with "Expect: 100-continue" (curl's default), one
 * extra round trip that lets a server refuse a too-large body (413) before it
 * is sent instead of resetting the connection under it. A server that
 * ignores Expect costs at most 250 ms.
 */
#ifndef SI_HTTPC_H
#define SI_HTTPC_H

#include <stddef.h>
#include <sys/uio.h>

#include "err.h"

#define SI_HTTPC_DEFAULT_TIMEOUT_MS 30000
#define SI_HTTPC_DEFAULT_MAX_RESPONSE (256u << 20) /* bytes: 256 MiB */
#define SI_HTTPC_MAX_CALLS 1024                    /* per si_httpc_post_many */

typedef struct si_httpc si_httpc_t;

/* How a call ended. Only SI_HTTPC_OK means an HTTP response arrived (any
 * status, 4xx/5xx included). Mapping for a gateway in brackets. */
typedef enum si_httpc_error {
    SI_HTTPC_OK = 0,  /* got a response; see status */
    SI_HTTPC_CONNECT, /* no connection: refused, unreachable, name not resolved. The request
                         never reached the server: safe to retry any call once [503] */
    SI_HTTPC_TIMEOUT, /* timeout_ms passed (connecting or waiting); the server may still be
                         working on it: do not retry blindly [504] */
    SI_HTTPC_IO,      /* the connection broke after the request went out (reset, closed
                         without or mid-response, garbled response): retry only idempotent
                         calls [502] */
    SI_HTTPC_OTHER,   /* anything else: bad URL, response over the limit, out of memory [502] */
} si_httpc_error_t;

/* The result of one call; the calls overwrite it whole (no need to zero it
 * first). Free with si_httpc_resp_free. */
typedef struct si_httpc_resp {
    si_httpc_error_t error; /* see above */
    int status;             /* HTTP status, 0 unless error == SI_HTTPC_OK */
    char *body;             /* malloc'd response body plus a NUL after it (not counted in len),
                               so text can be used as a C string; NULL if empty */
    size_t len;             /* body bytes */
    char content_type[128]; /* Content-Type of the response, "" if none (cut if longer) */
    double seconds;         /* round trip: call start (incl. connecting) -> last byte received */
    int new_connections;    /* TCP connections opened for this call: 0 when one was reused */
    size_t sent;            /* request body bytes handed to the connection, every resend
                               included (curl sends a body again when a kept-alive connection
                               died under it); a call cut short may count some it buffered
                               but never sent. For failed calls too: bytes moved count */
    size_t received;        /* response body bytes that came in, a failed call's too */
    char error_msg[SI_ERR_MAX]; /* why, when error != SI_HTTPC_OK (names method and URL);
                                   "" otherwise */
} si_httpc_resp_t;

/* One call of a fan-out. Only url is required. */
typedef struct si_httpc_call {
    const char *method;       /* "POST" (NULL = POST when body/len given, else GET), "GET", ... */
    const char *url;          /* "http://host:port/path?query" */
    const char *content_type; /* request Content-Type; NULL = application/octet-stream for bodies */
    const void *body;         /* request body, borrowed (not copied) for the duration of the call */
    size_t len;               /* body bytes */
    int timeout_ms;           /* whole call incl. connecting; <= 0 = SI_HTTPC_DEFAULT_TIMEOUT_MS */
    const char *const *headers; /* optional NULL-terminated extra "Name: value" lines */
    const struct iovec *iov;    /* instead of body/len: the body in pieces, sent in order
                                   without being joined (borrowed for the call) */
    int iovcnt;                 /* pieces in iov; 0 = use body/len */
} si_httpc_call_t;

/* A new client, or NULL (out of memory / curl failed to initialize). The
 * first call also runs curl_global_init once per process (thread-safe). */
si_httpc_t *si_httpc_new(void);

/* Closes the client's connections and frees it; c may be NULL. */
void si_httpc_free(si_httpc_t *c);

/* Largest response body accepted (bytes; a larger one ends the call with
 * SI_HTTPC_OTHER). Default SI_HTTPC_DEFAULT_MAX_RESPONSE. */
void si_httpc_set_max_response(si_httpc_t *c, size_t bytes);

/* POSTs body to url and waits. Returns the HTTP status (100..599) when a
 * response arrived, -1 otherwise (out->error says how it failed; err and
 * out->error_msg say why). *out is overwritten (free with si_httpc_resp_free
 * in every case). */
int si_httpc_post(si_httpc_t *c, const char *url, const char *content_type, const void *body,
                  size_t len, int timeout_ms, si_httpc_resp_t *out, si_err_t *err);

/* GET, otherwise as si_httpc_post. */
int si_httpc_get(si_httpc_t *c, const char *url, int timeout_ms, si_httpc_resp_t *out,
                 si_err_t *err);

/* Runs n calls concurrently and waits for all of them (each bounded by its
 * own timeout_ms). outs[i] gets the result of calls[i] as in si_httpc_post
 * (free each with si_httpc_resp_free). Returns the number of calls that got
 * no response (0 = every call got one; check each status; when > 0, err
 * names the count and the first failure, and the caller may retry those
 * whose error allows it). Returns -1 only when nothing could run: bad
 * arguments (n < 1 or over SI_HTTPC_MAX_CALLS) or out of memory. */
int si_httpc_post_many(si_httpc_t *c, int n, const si_httpc_call_t *calls, si_httpc_resp_t *outs,
                       si_err_t *err);

/* Frees r->body and zeroes r; r may be NULL. */
void si_httpc_resp_free(si_httpc_resp_t *r);

/* A short name for an error ("ok", "connect", "timeout", "io", "other"). */
const char *si_httpc_error_name(si_httpc_error_t error);

#endif
