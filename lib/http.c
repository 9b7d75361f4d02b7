/*
 * http.c - HTTP server framework on libh2o (evloop flavour); see http.h.
 *
 * Threads: one acceptor (poll + accept4 on the listener) and n workers, each
 * with its own h2o evloop and h2o_context_t. The acceptor passes a new fd to a
 * worker through h2o's multithread queue (a pipe the worker's loop watches).
 * All h2o objects of a worker are created, used and destroyed on that worker:
 * h2o keeps per-thread buffer caches (__thread), so even creating a context on
 * another thread would mix them up.
 *
 * h2o wiring: one host, one path "/" whose single handler does our routing (so
 * 404/405 are ours), plus the host's fallback path, which h2o binds when it
 * answers a request itself before routing (413, broken framing). A filter on
 * the fallback path rewrites those plain-text answers to JSON; a logger on
 * both paths feeds the access hook once the response is written.
 *
 * Graceful stop, per worker: mark the context shut down (requests parsed
 * from then on get "Connection: close"), then every 10 ms close connections
 * that are idle (nothing buffered, nothing being written, nothing waiting in
 * the kernel) until none is left or the drain deadline passes; then shut down
 * the rest. h2o 2.2.5 itself does nothing for idle HTTP/1 connections on
 * shutdown (they would linger until request_timeout).
 */
#include "http.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <h2o.h>
#include <jansson.h>

#define DRAIN_POLL_MS 10    /* how often a draining worker looks for idle connections */
#define DRAIN_FRESH_MS 250  /* a connection younger than this with no bytes yet is not idle:
                               its first request may still be on the way */
#define FORCE_GRACE_MS 1000 /* after cutting connections, wait this long for h2o to free them */
#define MAX_HEADER_NAME 256 /* bytes; longer names are not looked up */

typedef struct route {
    char *method;  /* "*" = any */
    char *pattern; /* as registered */
    size_t len;    /* bytes of pattern that must match (without the '*') */
    int prefix;    /* 1 if pattern ended in '*' */
    si_http_handler_fn fn;
    void *ud;
} route_t;

struct worker;

/* One accepted connection. Invariant: it is on its worker's conns list from
 * accept until h2o closes the socket (sock->on_close), and counted in n_open
 * from dispatch by the acceptor until then. */
typedef struct conn {
    h2o_linklist_t link;
    struct worker *w;
    h2o_socket_t *sock;
    int fd;   /* the socket's fd (h2o's evloop socket does not expose it) */
    int shut; /* 1 once we called shutdown() on it */
    long long accepted_ms; /* now_ms() when it came in */
} conn_t;

/* A new fd travelling from the acceptor to a worker. */
typedef struct conn_msg {
    h2o_multithread_message_t super;
    int fd;
} conn_msg_t;

typedef struct worker {
    si_http_server_t *srv;
    pthread_t tid;
    int started; /* pthread_create succeeded */
    h2o_evloop_t *loop;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    h2o_multithread_receiver_t rx; /* new connections (and wake-ups) */
    h2o_linklist_t conns;          /* conn_t, owned by this thread */
    atomic_uint_fast64_t n_open;   /* read by the acceptor to balance */
    uint64_t last_handed;          /* srv->handed when it got its last connection; acceptor only */
    atomic_int drain;              /* set by stop; the loop then drains and exits */
    int cut;                       /* connections cut at the drain deadline */
} worker_t;

struct si_http_server {
    si_http_config_t cfg; /* defaults applied; host points into host_buf */
    char host_buf[64];
    h2o_globalconf_t config;
    h2o_pathconf_t *root;
    int listen_fd;
    int port;
    int wake[2]; /* pipe: stop -> acceptor */
    pthread_t acceptor;
    worker_t *workers;
    int n_workers;
    uint64_t handed; /* connections handed out so far; acceptor thread only */
    route_t *routes;
    int n_routes;
    int state; /* 0 new, 1 running, 2 stopped */
    atomic_uint_fast64_t accepted, responses;
    atomic_llong drain_deadline_ms; /* CLOCK_MONOTONIC ms; written before the drain flags */
    pthread_mutex_t mu;             /* guards n_ready during start */
    pthread_cond_t cv;
    int n_ready;
};

/* h2o objects with a pointer back to the server. */
typedef struct glue_handler {
    h2o_handler_t super;
    si_http_server_t *srv;
} glue_handler_t;

typedef struct glue_logger {
    h2o_logger_t super;
    si_http_server_t *srv;
} glue_logger_t;

struct si_http_resp {
    h2o_req_t *req;
    int status;
    h2o_iovec_t body;
    h2o_iovec_t body2; /* a second piece sent after body (si_http_resp_body_iov); len 0: none */
};

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Status table: reason phrase and our error code. */
static const struct {
    int status;
    const char *reason, *code;
} statuses[] = {
    {200, "OK", "ok"},
    {201, "Created", "created"},
    {202, "Accepted", "accepted"},
    {204, "No Content", "no_content"},
    {400, "Bad Request", "bad_request"},
    {401, "Unauthorized", "unauthorized"},
    {403, "Forbidden", "forbidden"},
    {404, "Not Found", "not_found"},
    {405, "Method Not Allowed", "method_not_allowed"},
    {408, "Request Timeout", "request_timeout"},
    {409, "Conflict", "conflict"},
    {411, "Length Required", "length_required"},
    {413, "Payload Too Large", "payload_too_large"},
    {415, "Unsupported Media Type", "unsupported_media_type"},
    {417, "Expectation Failed", "expectation_failed"},
    {422, "Unprocessable Entity", "unprocessable_entity"},
    {429, "Too Many Requests", "too_many_requests"},
    {500, "Internal Server Error", "internal"},
    {501, "Not Implemented", "not_implemented"},
    {502, "Bad Gateway", "bad_gateway"},
    {503, "Service Unavailable", "unavailable"},
    {504, "Gateway Timeout", "gateway_timeout"},
};

static const char *status_reason(int status) {
    for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++)
        if (statuses[i].status == status) return statuses[i].reason;
    return status < 400 ? "OK" : "Error"; /* clients ignore the phrase */
}

const char *si_http_status_code(int status) {
    for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++)
        if (statuses[i].status == status) return statuses[i].code;
    return "error";
}

/* ---- JSON errors ------------------------------------------------------- */

/* {"error":{"code":..,"message":..}} in pool memory. jansson refuses strings
 * that are not UTF-8; then bytes >= 0x80 become '?' (messages may quote
 * client input such as a path). Falls back to a fixed body on OOM. */
static h2o_iovec_t json_error_body(h2o_mem_pool_t *pool, const char *code, const char *msg,
                                   size_t msg_len) {
    json_t *o = json_pack("{s:{s:s,s:s%}}", "error", "code", code, "message", msg, msg_len);
    if (!o) {
        char *clean = h2o_mem_alloc_pool(pool, msg_len + 1);
        for (size_t i = 0; i < msg_len; i++)
            clean[i] = (unsigned char)msg[i] >= 0x80 || msg[i] == 0 ? '?' : msg[i];
        o = json_pack("{s:{s:s,s:s%}}", "error", "code", code, "message", clean, msg_len);
    }
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!s)
        return h2o_iovec_init(H2O_STRLIT("{\"error\":{\"code\":\"internal\",\"message\":"
                                         "\"out of memory\"}}"));
    h2o_iovec_t out = h2o_strdup(pool, s, SIZE_MAX);
    free(s);
    return out;
}

int si_http_json_error(si_http_resp_t *resp, int status, const char *code, const char *fmt, ...) {
    h2o_mem_pool_t *pool = &resp->req->pool;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    char *msg = h2o_mem_alloc_pool(pool, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(msg, (size_t)n + 1, fmt, ap);
    va_end(ap);
    si_http_resp_status(resp, status);
    si_http_resp_content_type(resp, "application/json");
    resp->body = json_error_body(pool, code ? code : si_http_status_code(status), msg, (size_t)n);
    resp->body2 = h2o_iovec_init(NULL, 0);
    return -1;
}

/* The fallback-path filter: h2o's own error answers (text/plain) become JSON.
 * h2o sends them with one final h2o_send, so one do_send sees the whole text. */
static void jsonify_send(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *bufs, size_t n,
                         h2o_send_state_t state) {
    size_t len = 0;
    for (size_t i = 0; i < n; i++) len += bufs[i].len;
    char *text = h2o_mem_alloc_pool(&req->pool, len + 1);
    len = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(text + len, bufs[i].base, bufs[i].len);
        len += bufs[i].len;
    }
    h2o_iovec_t body = json_error_body(&req->pool, si_http_status_code(req->res.status), text, len);
    h2o_set_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE,
                   H2O_STRLIT("application/json"), 1);
    req->res.content_length = body.len;
    /* HEAD: h2o passes no bytes; keep it that way, only the length changes. */
    h2o_ostream_send_next(self, req, n ? &body : NULL, n ? 1 : 0, state);
}

static void jsonify_setup(h2o_filter_t *self, h2o_req_t *req, h2o_ostream_t **slot) {
    (void)self;
    if (req->res.status >= 400) {
        h2o_ostream_t *os = h2o_add_ostream(req, sizeof *os, slot);
        os->do_send = jsonify_send;
        slot = &os->next;
    }
    h2o_setup_next_ostream(req, slot);
}

/* ---- routing ----------------------------------------------------------- */

static int method_is(const route_t *r, const char *m, size_t mlen) {
    return (r->method[0] == '*' && r->method[1] == 0) ||
           (strlen(r->method) == mlen && memcmp(r->method, m, mlen) == 0);
}

/* Best route for (method, path) or NULL. When NULL and some route matches
 * the path with another method, their methods go into allow ("GET, POST"). */
static const route_t *route_match(const si_http_server_t *srv, const char *m, size_t mlen,
                                  const char *path, size_t plen, char *allow, size_t allow_sz) {
    const route_t *best = NULL;
    size_t best_rank = 0;
    if (allow) allow[0] = 0;
    for (int i = 0; i < srv->n_routes; i++) {
        const route_t *r = &srv->routes[i];
        int hit = r->prefix ? plen >= r->len && memcmp(path, r->pattern, r->len) == 0
                            : plen == r->len && memcmp(path, r->pattern, plen) == 0;
        if (!hit) continue;
        size_t rank = r->prefix ? r->len + 1 : SIZE_MAX; /* exact beats any prefix */
        if (method_is(r, m, mlen)) {
            if (!best || rank > best_rank) best = r, best_rank = rank;
        } else if (allow && !strstr(allow, r->method)) {
            size_t used = strlen(allow);
            snprintf(allow + used, allow_sz - used, "%s%s", used ? ", " : "", r->method);
        }
    }
    return best;
}

int si_http_route(si_http_server_t *srv, const char *method, const char *path,
                  si_http_handler_fn fn, void *ud, si_err_t *err) {
    if (!srv || !method || !*method || !path || path[0] != '/' || !fn)
        return si_err_set(err, "route: need a method, a path starting with '/' and a handler");
    if (srv->state != 0)
        return si_err_set(err, "route %s %s: server already started", method, path);
    size_t plen = strlen(path);
    int prefix = path[plen - 1] == '*';
    if (memchr(path, '*', plen - (size_t)prefix))
        return si_err_set(err, "route %s: '*' only at the end (a prefix route)", path);
    for (int i = 0; i < srv->n_routes; i++)
        if (!strcmp(srv->routes[i].pattern, path) && !strcmp(srv->routes[i].method, method))
            return si_err_set(err, "route %s %s registered twice", method, path);
    route_t *rs = realloc(srv->routes, (size_t)(srv->n_routes + 1) * sizeof *rs);
    if (!rs) return si_err_set(err, "route: out of memory");
    srv->routes = rs;
    route_t *r = &rs[srv->n_routes];
    r->method = strdup(method);
    r->pattern = strdup(path);
    if (!r->method || !r->pattern) {
        free(r->method), free(r->pattern);
        return si_err_set(err, "route: out of memory");
    }
    r->len = plen - (size_t)prefix;
    r->prefix = prefix;
    r->fn = fn;
    r->ud = ud;
    srv->n_routes++;
    return 0;
}

/* ---- request / response glue ------------------------------------------ */

static void send_resp(h2o_req_t *req, si_http_resp_t *resp) {
    static h2o_generator_t generator = {NULL, NULL}; /* one-shot body: nothing to pull or stop */
    req->res.status = resp->status;
    req->res.reason = status_reason(resp->status);
    req->res.content_length = resp->body.len + resp->body2.len;
    h2o_start_response(req, &generator);
    if (req->res.content_length == 0 ||
        h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD")))
        h2o_send(req, NULL, 0, H2O_SEND_STATE_FINAL);
    else {
        h2o_iovec_t bufs[2] = {resp->body, resp->body2}; /* h2o copies the descriptors */
        h2o_send(req, bufs, resp->body2.len ? 2 : 1, H2O_SEND_STATE_FINAL);
    }
}

static int on_req(h2o_handler_t *self, h2o_req_t *req) {
    si_http_server_t *srv = ((glue_handler_t *)self)->srv;
    si_http_resp_t resp = {req, 200, {NULL, 0}, {NULL, 0}};
    char allow[128];
    const route_t *r =
        route_match(srv, req->method.base, req->method.len, req->path_normalized.base,
                    req->path_normalized.len, allow, sizeof allow);
    if (!r) {
        if (allow[0]) {
            h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL,
                           h2o_strdup(&req->pool, allow, SIZE_MAX).base, strlen(allow));
            si_http_json_error(&resp, 405, NULL, "method %.*s not allowed on %.*s (allowed: %s)",
                               (int)req->method.len, req->method.base,
                               (int)req->path_normalized.len, req->path_normalized.base, allow);
        } else {
            si_http_json_error(&resp, 404, NULL, "no route for %.*s", (int)req->path_normalized.len,
                               req->path_normalized.base);
        }
        send_resp(req, &resp);
        return 0;
    }
    si_http_req_t hr;
    memset(&hr, 0, sizeof hr);
    hr.method = h2o_strdup(&req->pool, req->method.base, req->method.len).base;
    hr.path = h2o_strdup(&req->pool, req->path_normalized.base, req->path_normalized.len).base;
    hr.path_len = req->path_normalized.len;
    hr.rest = r->prefix ? hr.path + r->len : "";
    hr.route = r->pattern;
    if (req->query_at != SIZE_MAX)
        hr.query = h2o_strdup(&req->pool, req->path.base + req->query_at + 1,
                              req->path.len - req->query_at - 1)
                       .base;
    else
        hr.query = "";
    ssize_t ct = h2o_find_header(&req->headers, H2O_TOKEN_CONTENT_TYPE, -1);
    if (ct != -1)
        hr.content_type = h2o_strdup(&req->pool, req->headers.entries[ct].value.base,
                                     req->headers.entries[ct].value.len)
                              .base;
    hr.body = req->entity.base ? req->entity.base : "";
    hr.body_len = req->entity.base ? req->entity.len : 0;
    hr._priv = req;
    if (r->fn(&hr, &resp, r->ud) != 0 && resp.status < 400)
        si_http_json_error(&resp, 500, "internal", "handler for %s failed", r->pattern);
    send_resp(req, &resp);
    return 0;
}

static void on_log(h2o_logger_t *self, h2o_req_t *req) {
    si_http_server_t *srv = ((glue_logger_t *)self)->srv;
    atomic_fetch_add(&srv->responses, 1);
    if (!srv->cfg.on_access) return;
    si_http_access_t a;
    memset(&a, 0, sizeof a);
    a.method = h2o_strdup(&req->pool, req->method.base, req->method.len).base;
    a.path = h2o_strdup(&req->pool, req->path_normalized.base, req->path_normalized.len).base;
    if (req->pathconf == srv->root) {
        const route_t *r =
            route_match(srv, req->method.base, req->method.len, req->path_normalized.base,
                        req->path_normalized.len, NULL, 0);
        a.route = r ? r->pattern : NULL;
    }
    a.status = req->res.status;
    a.bytes_in = req->entity.base ? req->entity.len : 0;
    a.bytes_out = req->bytes_sent;
    /* h2o's timestamps come from the loop's clock, read once per loop
     * iteration: request_begin_at is right (the iteration that read the first
     * bytes), but a blocking handler runs inside one iteration, so
     * response_end_at may still show its start. Read the clock now: the log
     * runs when the response write has completed (or the connection died). */
    struct timeval end, begin = req->timestamps.request_begin_at;
    gettimeofday(&end, NULL);
    if (begin.tv_sec == 0) begin = end;
    a.seconds = (double)(end.tv_sec - begin.tv_sec) + (double)(end.tv_usec - begin.tv_usec) * 1e-6;
    if (a.seconds < 0) a.seconds = 0;
    srv->cfg.on_access(&a, srv->cfg.access_ud);
}

const char *si_http_req_header(const si_http_req_t *req, const char *name) {
    h2o_req_t *r = req->_priv;
    char lc[MAX_HEADER_NAME];
    size_t n = strlen(name);
    if (n == 0 || n >= sizeof lc) return NULL;
    for (size_t i = 0; i < n; i++)
        lc[i] = (char)h2o_tolower(name[i]); /* h2o stores names lower-case */
    ssize_t i = h2o_find_header_by_str(&r->headers, lc, n, -1);
    if (i == -1) return NULL;
    return h2o_strdup(&r->pool, r->headers.entries[i].value.base, r->headers.entries[i].value.len)
        .base;
}

void *si_http_alloc(si_http_req_t *req, size_t n) {
    return h2o_mem_alloc_pool(&((h2o_req_t *)req->_priv)->pool, n ? n : 1);
}

void si_http_resp_status(si_http_resp_t *resp, int status) {
    resp->status = status >= 100 && status <= 599 ? status : 500;
}

void si_http_resp_content_type(si_http_resp_t *resp, const char *type) {
    h2o_req_t *req = resp->req;
    h2o_iovec_t v = h2o_strdup(&req->pool, type, SIZE_MAX);
    h2o_set_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, v.base, v.len, 1);
}

int si_http_resp_header(si_http_resp_t *resp, const char *name, const char *value, si_err_t *err) {
    static const char *const reserved[] = {"content-length", "connection", "transfer-encoding",
                                           "date"};
    h2o_req_t *req = resp->req;
    size_t n = strlen(name);
    if (n == 0 || n >= MAX_HEADER_NAME) return si_err_set(err, "header name empty or too long");
    h2o_iovec_t lc = h2o_strdup(&req->pool, name, n);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c <= ' ' || c >= 0x7f || strchr("()<>@,;:\\\"/[]?={}", c))
            return si_err_set(err, "header name %s: not a token", name);
        lc.base[i] = (char)h2o_tolower((int)c);
    }
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++)
        if (!strcmp(lc.base, reserved[i]))
            return si_err_set(err, "header %s is written by the server", name);
    if (strpbrk(value, "\r\n")) return si_err_set(err, "header %s: CR/LF in value", name);
    h2o_iovec_t v = h2o_strdup(&req->pool, value, SIZE_MAX);
    h2o_iovec_t orig = h2o_strdup(&req->pool, name, n);
    h2o_add_header_by_str(&req->pool, &req->res.headers, lc.base, lc.len, 1, orig.base, v.base,
                          v.len);
    return 0;
}

void si_http_resp_body(si_http_resp_t *resp, const void *data, size_t len) {
    void *p = si_http_resp_body_alloc(resp, len);
    if (len) memcpy(p, data, len);
}

void *si_http_resp_body_alloc(si_http_resp_t *resp, size_t len) {
    void *p = h2o_mem_alloc_pool(&resp->req->pool, len ? len : 1);
    resp->body = h2o_iovec_init(p, len);
    resp->body2 = h2o_iovec_init(NULL, 0);
    return p;
}

typedef struct borrow {
    void (*fn)(void *);
    void *ud;
} borrow_t;

static void borrow_dispose(void *p) {
    borrow_t *b = p;
    if (b->fn) b->fn(b->ud);
}

void si_http_resp_body_borrow(si_http_resp_t *resp, const void *data, size_t len,
                              void (*free_fn)(void *), void *free_ud) {
    /* A shared chunk linked to the pool: h2o calls borrow_dispose when the pool
     * is cleared, which is after the last byte was written (or the conn died). */
    if (free_fn) {
        borrow_t *b = h2o_mem_alloc_shared(&resp->req->pool, sizeof *b, borrow_dispose);
        b->fn = free_fn;
        b->ud = free_ud;
    }
    resp->body = h2o_iovec_init(data, len);
    resp->body2 = h2o_iovec_init(NULL, 0);
}

void si_http_resp_body_iov(si_http_resp_t *resp, const struct iovec *iov, int n,
                           void (*free_fn)(void *), void *free_ud) {
    si_http_resp_body_borrow(resp, n > 0 ? iov[0].iov_base : NULL, n > 0 ? iov[0].iov_len : 0,
                             free_fn, free_ud);
    if (n > 1) resp->body2 = h2o_iovec_init(iov[1].iov_base, iov[1].iov_len);
}

/* ---- connections and workers ------------------------------------------ */

static void on_conn_close(void *data) {
    conn_t *c = data;
    h2o_linklist_unlink(&c->link);
    atomic_fetch_sub(&c->w->n_open, 1);
    free(c);
}

static void accept_fd(worker_t *w, int fd) {
    conn_t *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        atomic_fetch_sub(&w->n_open, 1);
        return;
    }
    c->w = w;
    c->fd = fd;
    c->accepted_ms = now_ms();
    c->sock = h2o_evloop_socket_create(w->loop, fd, H2O_SOCKET_FLAG_IS_ACCEPTED_CONNECTION);
    c->sock->on_close.cb = on_conn_close;
    c->sock->on_close.data = c;
    h2o_linklist_insert(&w->conns, &c->link);
    h2o_accept(&w->accept_ctx, c->sock);
}

static void on_conn_msgs(h2o_multithread_receiver_t *rx, h2o_linklist_t *msgs) {
    worker_t *w = H2O_STRUCT_FROM_MEMBER(worker_t, rx, rx);
    while (!h2o_linklist_is_empty(msgs)) {
        conn_msg_t *m = H2O_STRUCT_FROM_MEMBER(conn_msg_t, super.link, msgs->next);
        h2o_linklist_unlink(&m->super.link);
        accept_fd(w, m->fd);
        free(m);
    }
}

/* Idle = between requests: nothing of a request buffered by h2o (http1 keeps
 * the request in sock->input until its response is written), no write in
 * flight, no bytes waiting in the kernel (a request just sent by the client
 * must still be served), and not just accepted (a client that connected right
 * before the drain may not have sent its request yet; the drain's deadline
 * still bounds the wait). */
static int conn_idle(const conn_t *c) {
    int pending = 0;
    if (c->sock->input->size != 0 || h2o_socket_is_writing(c->sock)) return 0;
    if (now_ms() - c->accepted_ms < DRAIN_FRESH_MS) return 0;
    if (ioctl(c->fd, FIONREAD, &pending) == 0 && pending > 0) return 0;
    return 1;
}

/* shutdown() rather than h2o_socket_close: h2o's http1 connection owns the
 * socket; a shut socket reads EOF, and h2o then closes and frees it itself. */
static void shut_conns(worker_t *w, int force) {
    for (h2o_linklist_t *l = w->conns.next; l != &w->conns; l = l->next) {
        conn_t *c = H2O_STRUCT_FROM_MEMBER(conn_t, link, l);
        if (c->shut || !(force || conn_idle(c))) continue;
        shutdown(c->fd, SHUT_RDWR);
        c->shut = 1;
    }
}

static void worker_drain(worker_t *w) {
    long long deadline = atomic_load(&w->srv->drain_deadline_ms);
    /* What h2o_context_request_shutdown does for HTTP/1 (requests parsed from
     * now on get "Connection: close"). Not the call itself: its HTTP/2 half
     * arms a 1 s GOAWAY timer even with no HTTP/2 connection, and
     * h2o_context_dispose then asserts on the still-linked timer. */
    w->ctx.shutdown_requested = 1;
    for (;;) {
        shut_conns(w, 0);
        if (atomic_load(&w->n_open) == 0 || now_ms() >= deadline) break;
        h2o_evloop_run(w->loop, DRAIN_POLL_MS);
    }
    if (atomic_load(&w->n_open) == 0) return;
    w->cut = (int)atomic_load(&w->n_open);
    long long grace = now_ms() + FORCE_GRACE_MS;
    while (atomic_load(&w->n_open) > 0 && now_ms() < grace) {
        shut_conns(w, 1);
        h2o_evloop_run(w->loop, DRAIN_POLL_MS);
    }
}

static void *worker_main(void *arg) {
    worker_t *w = arg;
    si_http_server_t *srv = w->srv;
    /* Request bodies over 32 MiB would go to mmap'd files under /tmp, which a
     * distroless or read-only container may lack (then h2o drops the
     * connection). Keep them in memory: max_body_bytes bounds them. */
    h2o_socket_buffer_prototype.mmap_settings = NULL; /* __thread: this worker only */
    /* h2o keeps a request's body in the connection's input buffer, which
     * starts at 8 KiB and doubles (realloc and copy) as bytes arrive, and is
     * freed once the request is consumed: a multi-MiB tensor was copied about
     * once more per request. Starting at the expected size makes it one
     * buffer, which the prototype's pool recycles. The pool is empty here
     * (no socket yet on this thread), so changing the chunk size is safe; at
     * most 4 pooled chunks per worker bound the memory kept. */
    if (srv->cfg.input_buffer_bytes > h2o_socket_buffer_prototype._initial_buf.capacity) {
        h2o_socket_buffer_prototype._initial_buf.capacity = srv->cfg.input_buffer_bytes;
        h2o_socket_buffer_prototype.allocator.max = 4;
    }
    w->loop = h2o_evloop_create();
    h2o_context_init(&w->ctx, w->loop, &srv->config);
    w->accept_ctx.ctx = &w->ctx;
    w->accept_ctx.hosts = srv->config.hosts;
    h2o_linklist_init_anchor(&w->conns);
    h2o_multithread_register_receiver(w->ctx.queue, &w->rx, on_conn_msgs);

    pthread_mutex_lock(&srv->mu);
    srv->n_ready++;
    pthread_cond_broadcast(&srv->cv);
    pthread_mutex_unlock(&srv->mu);

    while (!atomic_load(&w->drain)) h2o_evloop_run(w->loop, INT32_MAX);
    worker_drain(w);
    if (atomic_load(&w->n_open) > 0)
        return NULL; /* h2o still holds connections we could not free: leak, don't crash */

    h2o_multithread_unregister_receiver(w->ctx.queue, &w->rx);
    h2o_multithread_queue_t *queue = w->ctx.queue;
    h2o_context_dispose(&w->ctx);
    free(queue); /* h2o 2.2.5's evloop h2o_multithread_destroy_queue does not free it */
    h2o_evloop_destroy(w->loop);
    return NULL;
}

/* ---- acceptor ---------------------------------------------------------- */

/* The worker with the fewest open connections; of those, the one that got a
 * connection last. Why not the next in turn: a client that opens a
 * connection per request, one request at a time (curl in a shell loop, a
 * health checker), then meets the same warm worker every time - its malloc
 * arena, its buffers, its kept-alive upstream connections - rather than each
 * of n_threads workers in turn, each asleep for n_threads requests. On this
 * project's 2-vCPU VM (no PCID: every syscall flushes the TLB) a gateway with
 * 16 workers measured 5.0 ms of pipeline network time per image that way
 * against 7.3 ms in turn (bench/plans.sh, BURST=3). Concurrent clients still
 * spread: a busy worker holds open the connection it is busy with. */
static void dispatch(si_http_server_t *srv, int fd) {
    worker_t *best = &srv->workers[0];
    uint64_t best_open = atomic_load(&best->n_open);
    for (int i = 1; i < srv->n_workers; i++) {
        worker_t *w = &srv->workers[i];
        uint64_t open = atomic_load(&w->n_open);
        if (open < best_open || (open == best_open && w->last_handed > best->last_handed))
            best = w, best_open = open;
    }
    best->last_handed = ++srv->handed;
    conn_msg_t *m = calloc(1, sizeof *m);
    if (!m) {
        close(fd);
        return;
    }
    m->fd = fd;
    atomic_fetch_add(&best->n_open, 1); /* before the send: the worker decrements on close */
    atomic_fetch_add(&srv->accepted, 1);
    h2o_multithread_send_message(&best->rx, &m->super);
}

static void *acceptor_main(void *arg) {
    si_http_server_t *srv = arg;
    struct pollfd p[2] = {{srv->listen_fd, POLLIN, 0}, {srv->wake[0], POLLIN, 0}};
    for (;;) {
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR) continue;
            poll(NULL, 0, 10); /* should not happen; do not spin */
            continue;
        }
        if (p[1].revents) break;
        if (!(p[0].revents & POLLIN)) { /* POLLERR on a listener: do not spin */
            poll(NULL, 0, 10);
            continue;
        }
        for (;;) {
            int fd = accept4(srv->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0) {
                if (errno == EINTR || errno == ECONNABORTED) continue;
                /* EMFILE and friends: the listener stays readable; back off
                 * instead of spinning until a connection closes. */
                if (errno != EAGAIN && errno != EWOULDBLOCK) poll(NULL, 0, 10);
                break;
            }
            int one = 1; /* responses are one writev; never wait on Nagle for the tail */
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            dispatch(srv, fd);
        }
    }
    return NULL;
}

/* ---- LeakSanitizer ---------------------------------------------------- */

#ifdef __SANITIZE_ADDRESS__
/* h2o 2.2.5 keeps per-thread free lists of memory chunks (request pools,
 * socket buffers: h2o_mem_alloc_recycle) and never releases them; once a
 * worker thread exits they are unreachable and LeakSanitizer would fail every
 * ASan program that ran a server. Weak: a program may define its own list. */
__attribute__((weak)) const char *__lsan_default_suppressions(void);
__attribute__((weak)) const char *__lsan_default_suppressions(void) {
    return "leak:h2o_mem_alloc_recycle\n";
}
#endif

/* ---- lifecycle --------------------------------------------------------- */

static int listen_on(si_http_server_t *srv, si_err_t *err) {
    struct addrinfo hints, *ai = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV;
    char port[16];
    snprintf(port, sizeof port, "%d", srv->cfg.port);
    int rc = getaddrinfo(srv->cfg.host, port, &hints, &ai);
    if (rc != 0)
        return si_err_set(err, "listen address %s: %s (numeric IPv4/IPv6 only)", srv->cfg.host,
                          gai_strerror(rc));
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, SOMAXCONN) != 0) {
        si_err_set(err, "listen on %s:%d: %s", srv->cfg.host, srv->cfg.port, strerror(errno));
        if (fd >= 0) close(fd);
        freeaddrinfo(ai);
        return -1;
    }
    freeaddrinfo(ai);
    struct sockaddr_storage sa;
    socklen_t salen = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &salen);
    srv->port = sa.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&sa)->sin6_port)
                                         : ntohs(((struct sockaddr_in *)&sa)->sin_port);
    srv->listen_fd = fd;
    return 0;
}

si_http_server_t *si_http_server_new(const si_http_config_t *cfg, si_err_t *err) {
    si_http_config_t c;
    memset(&c, 0, sizeof c);
    if (cfg) c = *cfg;
    if (!c.host) c.host = "127.0.0.1";
    if (c.n_threads <= 0) c.n_threads = 1;
    if (c.max_body_bytes == 0) c.max_body_bytes = SI_HTTP_DEFAULT_MAX_BODY;
    if (c.input_buffer_bytes > c.max_body_bytes + 65536) c.input_buffer_bytes = c.max_body_bytes + 65536;
    if (c.request_timeout_ms <= 0) c.request_timeout_ms = SI_HTTP_DEFAULT_REQUEST_TIMEOUT_MS;
    if (c.drain_timeout_ms <= 0) c.drain_timeout_ms = SI_HTTP_DEFAULT_DRAIN_TIMEOUT_MS;
    if (c.n_threads > SI_HTTP_MAX_THREADS)
        return si_err_set(err, "http server: %d threads (at most %d)", c.n_threads,
                          SI_HTTP_MAX_THREADS),
               NULL;
    if (c.port < 0 || c.port > 65535)
        return si_err_set(err, "http server: port %d out of range", c.port), NULL;
    if (strlen(c.host) >= 64) return si_err_set(err, "http server: host too long"), NULL;

    si_http_server_t *srv = calloc(1, sizeof *srv);
    worker_t *ws = calloc((size_t)c.n_threads, sizeof *ws);
    if (!srv || !ws) {
        free(srv), free(ws);
        return si_err_set(err, "http server: out of memory"), NULL;
    }
    srv->cfg = c;
    strcpy(srv->host_buf, c.host);
    srv->cfg.host = srv->host_buf;
    srv->workers = ws;
    srv->n_workers = c.n_threads;
    srv->listen_fd = srv->wake[0] = srv->wake[1] = -1;
    for (int i = 0; i < c.n_threads; i++) ws[i].srv = srv;
    pthread_mutex_init(&srv->mu, NULL);
    pthread_cond_init(&srv->cv, NULL);

    h2o_config_init(&srv->config);
    srv->config.server_name = h2o_iovec_init("", 0); /* no Server header */
    srv->config.max_request_entity_size = c.max_body_bytes;
    srv->config.http1.req_timeout = (uint64_t)c.request_timeout_ms;
    srv->config.http1.upgrade_to_http2 = 0; /* HTTP/1.x only: the drain logic assumes it */
    h2o_hostconf_t *host =
        h2o_config_register_host(&srv->config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    srv->root = h2o_config_register_path(host, "/", 0);
    glue_handler_t *h = (glue_handler_t *)h2o_create_handler(srv->root, sizeof *h);
    h->super.on_req = on_req;
    h->srv = srv;
    h2o_pathconf_t *paths[2] = {srv->root, &host->fallback_path};
    for (int i = 0; i < 2; i++) {
        glue_logger_t *lg = (glue_logger_t *)h2o_create_logger(paths[i], sizeof *lg);
        lg->super.log_access = on_log;
        lg->srv = srv;
    }
    h2o_filter_t *f = h2o_create_filter(&host->fallback_path, sizeof *f);
    f->on_setup_ostream = jsonify_setup;

    if (listen_on(srv, err) != 0 || pipe2(srv->wake, O_CLOEXEC) != 0) {
        if (srv->listen_fd >= 0) si_err_set(err, "http server: pipe: %s", strerror(errno));
        si_http_server_free(srv);
        return NULL;
    }
    return srv;
}

int si_http_server_port(const si_http_server_t *srv) {
    return srv->port;
}

/* Sets drain on every started worker and wakes it (its loop may sleep in
 * epoll with no timeout). */
static void signal_workers(si_http_server_t *srv) {
    for (int i = 0; i < srv->n_workers; i++) {
        worker_t *w = &srv->workers[i];
        if (!w->started) continue;
        atomic_store(&w->drain, 1);
        h2o_multithread_send_message(&w->rx, NULL);
    }
}

int si_http_server_start(si_http_server_t *srv, si_err_t *err) {
    if (srv->state != 0) return si_err_set(err, "http server: start called twice");
    /* Threads inherit this mask: process signals go to the caller's threads and
     * SIGPIPE from writing to a closed connection becomes EPIPE. Faults stay
     * unblocked so a crash still reports (ASan, core dumps). */
    sigset_t all, old;
    sigfillset(&all);
    int faults[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT, SIGSYS};
    for (size_t i = 0; i < sizeof faults / sizeof faults[0]; i++) sigdelset(&all, faults[i]);
    pthread_sigmask(SIG_SETMASK, &all, &old);

    int rc = 0, n = 0;
    for (; n < srv->n_workers; n++) {
        if ((rc = pthread_create(&srv->workers[n].tid, NULL, worker_main, &srv->workers[n]))) break;
        srv->workers[n].started = 1;
    }
    pthread_mutex_lock(&srv->mu);
    while (srv->n_ready < n) pthread_cond_wait(&srv->cv, &srv->mu);
    pthread_mutex_unlock(&srv->mu);
    if (!rc) rc = pthread_create(&srv->acceptor, NULL, acceptor_main, srv);
    pthread_sigmask(SIG_SETMASK, &old, NULL);

    if (rc) {
        atomic_store(&srv->drain_deadline_ms, now_ms());
        signal_workers(srv);
        for (int i = 0; i < n; i++) pthread_join(srv->workers[i].tid, NULL);
        srv->state = 2;
        return si_err_set(err, "http server: pthread_create: %s", strerror(rc));
    }
    srv->state = 1;
    return 0;
}

int si_http_server_stop(si_http_server_t *srv) {
    if (!srv || srv->state != 1) return 0;
    /* 1. No new connections: the acceptor exits, the listener closes (the
     *    kernel refuses further connects). */
    while (write(srv->wake[1], "x", 1) < 0 && errno == EINTR) {
    }
    pthread_join(srv->acceptor, NULL);
    close(srv->listen_fd);
    srv->listen_fd = -1;
    /* 2. Workers drain against one deadline, then exit. */
    atomic_store(&srv->drain_deadline_ms, now_ms() + srv->cfg.drain_timeout_ms);
    signal_workers(srv);
    int cut = 0;
    for (int i = 0; i < srv->n_workers; i++) {
        pthread_join(srv->workers[i].tid, NULL);
        cut += srv->workers[i].cut;
    }
    srv->state = 2;
    return cut;
}

void si_http_server_free(si_http_server_t *srv) {
    if (!srv) return;
    si_http_server_stop(srv);
    if (srv->listen_fd >= 0) close(srv->listen_fd);
    if (srv->wake[0] >= 0) close(srv->wake[0]), close(srv->wake[1]);
    h2o_config_dispose(&srv->config);
    for (int i = 0; i < srv->n_routes; i++)
        free(srv->routes[i].method), free(srv->routes[i].pattern);
    free(srv->routes);
    free(srv->workers);
    pthread_mutex_destroy(&srv->mu);
    pthread_cond_destroy(&srv->cv);
    free(srv);
}

void si_http_server_stats(const si_http_server_t *srv, si_http_stats_t *out) {
    si_http_server_t *s = (si_http_server_t *)srv; /* atomics are read, not changed */
    memset(out, 0, sizeof *out);
    out->connections_accepted = atomic_load(&s->accepted);
    for (int i = 0; i < s->n_workers; i++)
        out->connections_open += atomic_load(&s->workers[i].n_open);
    out->responses = atomic_load(&s->responses);
}
