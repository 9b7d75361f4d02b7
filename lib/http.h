/*
 * http.h - a small HTTP/1.1 server framework on libh2o's own event loop.
 *
 * A server owns one listening socket, one acceptor thread and n_threads
 * worker threads. Each worker runs its own h2o evloop; the acceptor hands
 * every new connection to the worker with the fewest open connections (of
 * those, the one that got a connection last: the warmest), and the
 * connection stays on that worker for its whole life (keep-alive).
 *
 * Why one listener and an acceptor rather than SO_REUSEPORT per worker (or
 * workers racing on a shared listener): handlers here block (inference,
 * upstream calls). With SO_REUSEPORT the kernel hashes connections onto
 * workers, so two of four concurrent connections often land on one worker
 * while another sits idle and their requests run one after the other; with
 * a shared listener whichever worker wakes first may take several. Placing
 * each connection by open-connection count spreads concurrent clients evenly.
 * The cost is one mostly sleeping thread and one cross-thread hand-off per
 * connection (not per request).
 *
 * Handlers run synchronously on the worker that owns the connection and may
 * block; while one runs, that worker serves nothing else. So at most
 * n_threads handlers run at once: concurrency = n_threads. A handler must
 * bound its own time (upstream timeouts): nothing here can interrupt it.
 *
 * Responses h2o produces itself, before any handler runs, are rewritten to
 * the JSON error shape: 413 (body over max_body_bytes), 400 (broken chunked
 * encoding or Content-Length), 417, 404 for request targets that are not
 * paths. A request line h2o cannot parse at all gets h2o's plain-text
 * "400 Bad Request" and the connection is closed.
 *
 * Errors: {"error": {"code": "...", "message": "..."}} with the status.
 * HTTP/1.x only (no h2c upgrade, no TLS). The worker threads block every
 * signal, so SIGTERM/SIGINT reach the caller's thread (sigwait or a
 * self-pipe) and a write to a vanished client fails with EPIPE instead of
 * raising SIGPIPE. Nothing here installs signal handlers or prints.
 */
#ifndef SI_HTTP_H
#define SI_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "err.h"

#define SI_HTTP_DEFAULT_MAX_BODY (64u << 20)     /* bytes: 64 MiB */
#define SI_HTTP_DEFAULT_REQUEST_TIMEOUT_MS 10000 /* h2o 2.2.5's own default */
#define SI_HTTP_DEFAULT_DRAIN_TIMEOUT_MS 5000
#define SI_HTTP_MAX_THREADS 256

typedef struct si_http_server si_http_server_t;
typedef struct si_http_resp si_http_resp_t;

/* One request as a handler sees it. All strings are NUL-terminated and live
 * in the request's pool: valid until the handler returns. */
typedef struct si_http_req {
    const char *method;       /* as sent, e.g. "POST" (methods are case-sensitive) */
    const char *path;         /* percent-decoded, "."/".." resolved, no query */
    size_t path_len;          /* bytes of path (a decoded %00 would end the C string early) */
    const char *query;        /* raw text after '?', not decoded; "" if none */
    const char *rest;         /* prefix routes: path after the prefix; "" for exact routes */
    const char *route;        /* the pattern that matched, as registered */
    const char *content_type; /* Content-Type header value, or NULL */
    const void *body;         /* request body, fully buffered (h2o's input buffer, no copy) */
    size_t body_len;          /* bytes; 0 if none */
    void *_priv;              /* the h2o request; private */
} si_http_req_t;

/* A handler. Fill resp with the si_http_resp_* functions. Return 0 to send
 * resp (status 200 unless set). Return -1 on failure: if the handler set an
 * error status (>= 400, e.g. with si_http_json_error) that is sent, else a
 * 500 {"code":"internal"}. Runs on a worker thread; see the top comment. */
typedef int (*si_http_handler_fn)(si_http_req_t *req, si_http_resp_t *resp, void *ud);

/* One finished exchange, for the access hook. Strings are valid only during
 * the call. */
typedef struct si_http_access {
    const char *method; /* as sent */
    const char *path;   /* normalized path, as in si_http_req_t */
    const char *route;  /* matched route pattern, NULL if none (404, 405, 413 ...):
                           use it, not path, as a metrics label (bounded set) */
    int status;         /* status sent; 0 if the client left before a response */
    size_t bytes_in;    /* request body bytes received (0 when refused by its header) */
    size_t bytes_out;   /* response body bytes written (headers not counted) */
    double seconds;     /* first request byte read -> response handed to the kernel */
} si_http_access_t;

/* The access hook; runs on the worker thread after each response (so it may
 * run after the client already has the response, and on several workers at
 * once: make it thread-safe). Must not block: the worker serves nothing else
 * meanwhile. A request line h2o cannot parse (its plain 400) is not seen. */
typedef void (*si_http_access_fn)(const si_http_access_t *rec, void *ud);

/* Server configuration; zero means "the default" for every numeric field. */
typedef struct si_http_config {
    const char *host;       /* numeric listen address; NULL = "127.0.0.1"; "0.0.0.0", "::" ok */
    int port;               /* 0 = a free port the kernel picks (see si_http_server_port) */
    int n_threads;          /* worker threads = handlers running at once; 0 = 1 */
    size_t max_body_bytes;  /* request body limit, default SI_HTTP_DEFAULT_MAX_BODY: a
                               Content-Length over it gets 413 before any body byte is
                               read; a chunked body is cut off with 413 once it reaches it */
    int request_timeout_ms; /* a connection must deliver a complete request (headers and
                               body) within this long after connecting or after the previous
                               response, else it is closed; so also the keep-alive idle
                               limit. Does not bound handlers. */
    int drain_timeout_ms;   /* si_http_server_stop waits this long for in-flight requests */
    size_t input_buffer_bytes; /* 0, or the request size this server expects (headers and
                                  body): each connection's input buffer starts this large, so
                                  a tensor body lands in one allocation instead of growing by
                                  doubling (a copy of the whole body per request) */
    si_http_access_fn on_access; /* optional access hook */
    void *access_ud;             /* passed to on_access */
} si_http_config_t;

/* Counters of a running server (monotonic unless said otherwise). */
typedef struct si_http_stats {
    uint64_t connections_accepted; /* TCP connections accepted since new */
    uint64_t connections_open;     /* open right now (a gauge) */
    uint64_t responses;            /* exchanges finished (what the access hook saw) */
} si_http_stats_t;

/* Creates a server: binds and listens at once (so a port clash fails here and
 * si_http_server_port works before start), but serves nothing until
 * si_http_server_start. NULL on failure (bad address, port in use ...). */
si_http_server_t *si_http_server_new(const si_http_config_t *cfg, si_err_t *err);

/* The bound TCP port (the kernel's pick when cfg->port was 0). */
int si_http_server_port(const si_http_server_t *srv);

/* Registers handler fn for method ("GET", "POST", ...; "*" = any) on path.
 * A path ending in '*' is a prefix route: "/v2/models/" plus '*' matches
 * every path starting with "/v2/models/" and req->rest is what follows.
 * Lookup: an exact route beats a prefix route, a longer prefix beats a
 * shorter one; a path some route matches but not with this method gets 405
 * (with Allow); no match at all gets 404. Only before si_http_server_start.
 * ud is passed to fn as is (the caller keeps it alive until
 * si_http_server_free). */
int si_http_route(si_http_server_t *srv, const char *method, const char *path,
                  si_http_handler_fn fn, void *ud, si_err_t *err);

/* Starts the worker threads and the acceptor; returns once all are running.
 * Call once. */
int si_http_server_start(si_http_server_t *srv, si_err_t *err);

/* Graceful stop, from any thread but a worker (e.g. main after sigwait):
 * closes the listener (new connections are refused), lets requests already
 * received finish and their responses go out (their connections are then
 * closed), closes idle keep-alive connections, and joins the threads. Waits
 * at most drain_timeout_ms for in-flight requests, then cuts what is left;
 * a handler still running is waited for regardless (it cannot be
 * interrupted). Returns the number of connections that had to be cut at the
 * deadline (0 = clean). A no-op (returning 0) if not running. */
int si_http_server_stop(si_http_server_t *srv);

/* Stops (if running) and frees everything; srv may be NULL. */
void si_http_server_free(si_http_server_t *srv);

/* Current counters; safe from any thread while the server runs. */
void si_http_server_stats(const si_http_server_t *srv, si_http_stats_t *out);

/* Request helpers -------------------------------------------------------- */

/* Value of request header name (case-insensitive) as a NUL-terminated copy in
 * the request's pool; the first one if repeated; NULL if absent. */
const char *si_http_req_header(const si_http_req_t *req, const char *name);

/* n bytes of request-scoped memory (freed when the response is done; never
 * NULL: h2o aborts on out-of-memory). */
void *si_http_alloc(si_http_req_t *req, size_t n);

/* Response helpers (only inside the handler that got resp) --------------- */

/* Sets the status code (100..599; default 200). */
void si_http_resp_status(si_http_resp_t *resp, int status);

/* Sets Content-Type (copied). */
void si_http_resp_content_type(si_http_resp_t *resp, const char *type);

/* Adds a response header (both copied). Refuses names h2o writes itself
 * (Content-Length, Connection, Transfer-Encoding, Date) and any CR/LF. */
int si_http_resp_header(si_http_resp_t *resp, const char *name, const char *value, si_err_t *err);

/* Sets the body to a copy of data (in the request's pool). */
void si_http_resp_body(si_http_resp_t *resp, const void *data, size_t len);

/* Sets the body to len bytes of request-pool memory and returns it for the
 * handler to fill (encode straight into the response, no extra copy). */
void *si_http_resp_body_alloc(si_http_resp_t *resp, size_t len);

/* Sets the body to data without copying; free_fn(free_ud) is called (on the
 * worker thread) once the response has been written or the connection is
 * gone. free_fn may be NULL for static data. */
void si_http_resp_body_borrow(si_http_resp_t *resp, const void *data, size_t len,
                              void (*free_fn)(void *), void *free_ud);

/* As si_http_resp_body_borrow for a body of n pieces (1 or 2) sent in order
 * without being joined: a packed message header and the tensor behind it.
 * free_fn(free_ud) runs once all of them were written. */
void si_http_resp_body_iov(si_http_resp_t *resp, const struct iovec *iov, int n,
                           void (*free_fn)(void *), void *free_ud);

/* Makes resp a JSON error: status, Content-Type application/json, body
 * {"error":{"code":code,"message":<printf of fmt>}} (escaped by jansson; a
 * message that is not valid UTF-8 has its non-ASCII bytes replaced by '?').
 * code NULL = si_http_status_code(status). Returns -1, so a handler can end
 * with `return si_http_json_error(resp, 400, "bad_request", "...")`. */
int si_http_json_error(si_http_resp_t *resp, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The code string this module uses for an HTTP status in its own errors
 * ("not_found", "payload_too_large", ...; "error" for unlisted ones). */
const char *si_http_status_code(int status);

#endif
