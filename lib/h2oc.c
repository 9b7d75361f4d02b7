/* h2oc.c - a blocking HTTP/1.1 POST client on libh2o's http1client. See h2oc.h. */
#include "h2oc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <h2o.h>

#define POOL_CAPACITY 16     /* keep-alive connections kept per client */
#define POOL_IDLE_MS 5000    /* under the servers' 10 s keep-alive limit (http.h): a
                                pooled connection is dropped before its server drops it */
#define DEFAULT_TIMEOUT_MS 30000
#define HEAD_MAX 1024        /* the request line and headers we send */

struct si_h2oc {
    h2o_evloop_t *loop;
    h2o_multithread_queue_t *queue;       /* for h2o's threaded name lookups */
    h2o_multithread_receiver_t getaddr_receiver;
    h2o_timeout_t io_timeout;
    h2o_http1client_ctx_t ctx;
    h2o_socketpool_t pool;
    int have_pool, have_timeout;
    char url[SI_ERR_MAX / 2];             /* as given, for messages */
    char path[SI_ERR_MAX / 2], authority[256];
};

/* One call in flight: what the callbacks fill in. */
typedef struct call {
    h2o_http1client_t *client; /* NULL once h2o is done with it (it frees it) */
    h2o_iovec_t *bufs;
    size_t nbufs;
    si_h2oc_resp_t *out;
    size_t cap, max;
    int done;
    const char *url;
} call_t;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void finish(call_t *x, si_h2oc_error_t e, const char *why) {
    x->client = NULL;
    x->done = 1;
    if (e == SI_H2OC_OK) return;
    x->out->error = e;
    x->out->status = 0;
    snprintf(x->out->error_msg, sizeof x->out->error_msg, "POST %s: %s", x->url, why);
}

static int reserve(call_t *x, size_t want) {
    if (want + 1 <= x->cap) return 0;
    size_t cap = x->cap ? x->cap : 16384;
    while (cap < want + 1) cap *= 2;
    char *p = realloc(x->out->body, cap);
    if (!p) return -1;
    x->out->body = p, x->cap = cap;
    return 0;
}

/* Body bytes arrive in the socket's input buffer: moved to ours, consumed. */
static int on_body(h2o_http1client_t *client, const char *errstr) {
    call_t *x = client->data;
    if (errstr && errstr != h2o_http1client_error_is_eos) {
        finish(x, SI_H2OC_IO, errstr);
        return -1;
    }
    h2o_buffer_t *in = client->sock->input;
    size_t len = x->out->len;
    if (in->size > x->max - len) {
        finish(x, SI_H2OC_OTHER, "response larger than the limit");
        return -1;
    }
    if (in->size) {
        if (reserve(x, len + in->size) < 0) {
            finish(x, SI_H2OC_OTHER, "out of memory");
            return -1;
        }
        memcpy(x->out->body + len, in->bytes, in->size);
        x->out->len = len + in->size;
        x->out->body[x->out->len] = 0;
        h2o_buffer_consume(&client->sock->input, in->size);
    }
    if (errstr == h2o_http1client_error_is_eos) finish(x, SI_H2OC_OK, NULL);
    return 0;
}

static h2o_http1client_body_cb on_head(h2o_http1client_t *client, const char *errstr, int minor_version,
                                       int status, h2o_iovec_t msg, h2o_header_t *headers,
                                       size_t num_headers, int rlen) {
    (void)minor_version, (void)msg, (void)rlen;
    call_t *x = client->data;
    if (errstr && errstr != h2o_http1client_error_is_eos) {
        finish(x, SI_H2OC_IO, errstr);
        return NULL;
    }
    x->out->status = status;
    if (errstr == h2o_http1client_error_is_eos) { /* no body */
        finish(x, SI_H2OC_OK, NULL);
        return NULL;
    }
    /* The whole body at once when its length is announced (up to the limit). */
    for (size_t i = 0; i < num_headers; i++)
        if (headers[i].name == &H2O_TOKEN_CONTENT_LENGTH->buf) {
            size_t n = h2o_strtosize(headers[i].value.base, headers[i].value.len);
            if (n != SIZE_MAX && n <= x->max && reserve(x, n) < 0) {
                finish(x, SI_H2OC_OTHER, "out of memory");
                return NULL;
            }
        }
    return on_body;
}

static h2o_http1client_head_cb on_connect(h2o_http1client_t *client, const char *errstr,
                                          h2o_iovec_t **reqbufs, size_t *reqbufcnt, int *method_is_head) {
    call_t *x = client->data;
    if (errstr) {
        finish(x, SI_H2OC_CONNECT, errstr);
        return NULL;
    }
    *reqbufs = x->bufs, *reqbufcnt = x->nbufs, *method_is_head = 0;
    return on_head;
}

si_h2oc_t *si_h2oc_new(const char *url, si_err_t *err) {
    h2o_url_t u;
    size_t n = url ? strlen(url) : 0;
    if (!n || h2o_url_parse(url, n, &u) != 0 || u.scheme != &H2O_URL_SCHEME_HTTP) {
        si_err_set(err, "'%s' is not an http:// URL", url ? url : "");
        return NULL;
    }
    si_h2oc_t *c = calloc(1, sizeof *c);
    if (!c) {
        si_err_set(err, "out of memory");
        return NULL;
    }
    if (n >= sizeof c->url || u.path.len >= sizeof c->path || u.authority.len >= sizeof c->authority) {
        si_err_set(err, "URL too long: %.80s...", url);
        free(c);
        return NULL;
    }
    memcpy(c->url, url, n + 1);
    memcpy(c->path, u.path.base, u.path.len);
    memcpy(c->authority, u.authority.base, u.authority.len);
    if (!(c->loop = h2o_evloop_create()) || !(c->queue = h2o_multithread_create_queue(c->loop))) {
        si_err_set(err, "out of memory");
        si_h2oc_free(c);
        return NULL;
    }
    h2o_multithread_register_receiver(c->queue, &c->getaddr_receiver, h2o_hostinfo_getaddr_receiver);
    /* Each I/O wait may last the whole call: the call's own deadline
     * (si_h2oc_post) is what times out. */
    h2o_timeout_init(c->loop, &c->io_timeout, 24ull * 3600 * 1000);
    c->have_timeout = 1;
    c->ctx = (h2o_http1client_ctx_t){.loop = c->loop, .getaddr_receiver = &c->getaddr_receiver,
                                     .io_timeout = &c->io_timeout};
    h2o_socketpool_init_by_hostport(&c->pool, u.host, h2o_url_get_port(&u), 0, POOL_CAPACITY);
    h2o_socketpool_set_timeout(&c->pool, c->loop, POOL_IDLE_MS);
    c->have_pool = 1;
    return c;
}

void si_h2oc_free(si_h2oc_t *c) {
    if (!c) return;
    if (c->have_pool) h2o_socketpool_dispose(&c->pool);
    if (c->have_timeout) h2o_timeout_dispose(c->loop, &c->io_timeout);
    if (c->queue) {
        h2o_multithread_unregister_receiver(c->queue, &c->getaddr_receiver);
        h2o_multithread_destroy_queue(c->queue);
        free(c->queue); /* h2o 2.2.5's evloop destroy_queue does not free it */
    }
    if (c->loop) h2o_evloop_destroy(c->loop);
    free(c);
}

int si_h2oc_post(si_h2oc_t *c, const char *content_type, const struct iovec *iov, int iovcnt,
                 int timeout_ms, size_t max_response, si_h2oc_resp_t *out) {
    memset(out, 0, sizeof *out);
    call_t x = {.out = out, .max = max_response, .url = c->url};
    double t0 = now_s(), deadline = t0 + (timeout_ms > 0 ? timeout_ms : DEFAULT_TIMEOUT_MS) * 1e-3;
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++) total += iov[i].iov_len;
    char head[HEAD_MAX];
    int hl = snprintf(head, sizeof head,
                      "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n\r\n",
                      c->path, c->authority, content_type ? content_type : "application/octet-stream",
                      total);
    if (hl < 0 || (size_t)hl >= sizeof head || !(x.bufs = malloc((size_t)(iovcnt + 1) * sizeof *x.bufs))) {
        out->error = SI_H2OC_OTHER;
        snprintf(out->error_msg, sizeof out->error_msg, "POST %s: request head too long or out of memory", c->url);
        free(x.bufs);
        return -1;
    }
    x.bufs[0] = h2o_iovec_init(head, (size_t)hl);
    for (int i = 0; i < iovcnt; i++) x.bufs[i + 1] = h2o_iovec_init(iov[i].iov_base, iov[i].iov_len);
    x.nbufs = (size_t)iovcnt + 1;
    h2o_http1client_connect_with_pool(&x.client, &x, &c->ctx, &c->pool, on_connect);
    while (!x.done) {
        double left = deadline - now_s();
        if (left <= 0) {
            if (x.client) h2o_http1client_cancel(x.client);
            char why[64];
            snprintf(why, sizeof why, "no answer within %d ms", timeout_ms > 0 ? timeout_ms : DEFAULT_TIMEOUT_MS);
            finish(&x, SI_H2OC_TIMEOUT, why);
            break;
        }
        /* h2o runs a socket's completed writes and applies its state changes
         * (start reading) only after its next poll: with work pending, poll
         * without waiting, or that poll sleeps on a socket that is not yet
         * watched (h2o's server loop never sleeps long; ours would, for the
         * whole wait). The fields are h2o 2.2's evloop.h. */
        int pending = c->loop->_pending_as_client || c->loop->_pending_as_server ||
                      c->loop->_statechanged.head;
        h2o_evloop_run(c->loop, pending ? 0 : (int32_t)(left * 1e3) + 1);
    }
    free(x.bufs);
    out->seconds = now_s() - t0;
    if (out->error != SI_H2OC_OK) {
        free(out->body);
        out->body = NULL, out->len = 0;
        return -1;
    }
    return out->status;
}

void si_h2oc_resp_free(si_h2oc_resp_t *r) {
    if (!r) return;
    free(r->body);
    memset(r, 0, sizeof *r);
}
