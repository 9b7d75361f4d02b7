/*
 * httpc.c - HTTP client on libcurl's multi interface; see httpc.h.
 *
 * Every call, even a single one, goes through the client's one CURLM: curl
 * keeps finished connections in the multi handle's cache, so they are reused
 * by whichever easy handle runs next. Easy handles themselves are recycled
 * (curl_easy_reset) to keep their buffers and avoid an allocation per call.
 */
#include "httpc.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#define IDLE_EASY 16    /* recycled easy handles kept per client */
#define MAX_CONNECTS 64 /* connection cache per client: fan-out x hosts */
/* Bytes per read(): curl's 16 KiB default means ~200 callbacks for one 3 MiB tensor. */
#define RECV_BUFFER (256 << 10)
#define MAX_IDLE_S 5 /* seconds a pooled connection may sit idle and still be reused */
#define EXPECT_TIMEOUT_MS 250 /* wait for "100 Continue" at most this long */

struct si_httpc {
    CURLM *multi;
    CURL *idle[IDLE_EASY];
    int n_idle;
    size_t max_response;
};

/* One transfer in flight. */
typedef struct xfer {
    CURL *easy;
    struct curl_slist *hdrs;
    si_httpc_resp_t *out;
    const char *method, *url;
    size_t cap; /* bytes allocated for out->body */
    size_t max; /* response limit */
    int too_big, oom;
    int added; /* in the multi handle */
    const struct iovec *iov; /* the body in pieces, read out by on_read */
    int iovcnt, iov_i;
    size_t iov_off;
    struct iovec one; /* a body given whole: iov's one piece */
    size_t taken;     /* body bytes curl took, a resend's again */
    char errbuf[CURL_ERROR_SIZE];
} xfer_t;

/* Feeds curl the pieces of an iovec body, in order, without joining them
 * first: the gateway sends [header][tensor floats] as they lie. */
static size_t on_read(char *dst, size_t size, size_t nmemb, void *ud) {
    xfer_t *x = ud;
    size_t room = size * nmemb, n = 0;
    while (n < room && x->iov_i < x->iovcnt) {
        const struct iovec *v = &x->iov[x->iov_i];
        size_t take = v->iov_len - x->iov_off;
        if (take > room - n) take = room - n;
        memcpy(dst + n, (const char *)v->iov_base + x->iov_off, take);
        n += take, x->iov_off += take;
        if (x->iov_off == v->iov_len) x->iov_i++, x->iov_off = 0;
    }
    x->taken += n;
    return n;
}

/* Rewinds an iovec body: curl resends it when a kept-alive connection turns
 * out to be closed (the server's idle timeout) and it retries on a fresh one.
 * Without this the call fails with "necessary data rewind wasn't possible". */
static int on_seek(void *ud, curl_off_t offset, int origin) {
    xfer_t *x = ud;
    if (origin != SEEK_SET || offset < 0) return CURL_SEEKFUNC_CANTSEEK;
    size_t left = (size_t)offset;
    x->iov_i = 0, x->iov_off = 0;
    while (x->iov_i < x->iovcnt && left >= x->iov[x->iov_i].iov_len) left -= x->iov[x->iov_i++].iov_len;
    if (x->iov_i == x->iovcnt && left) return CURL_SEEKFUNC_FAIL;
    x->iov_off = left;
    return CURL_SEEKFUNC_OK;
}

/* Formats out->error_msg; returns -1 like si_err_set. */
__attribute__((format(printf, 2, 3))) static int set_msg(si_httpc_resp_t *out, const char *fmt,
                                                         ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out->error_msg, sizeof out->error_msg, fmt, ap);
    va_end(ap);
    return -1;
}

/* One DNS cache for every client of the process. Each gateway worker has its
 * own client, so without it a function's name was looked up once per worker
 * and per cache expiry: 16 workers x every function, each lookup a chance to
 * hit a slow resolver (seen here: podman's aardvark-dns forwarding to an
 * unreachable upstream, 30 s and a 504 for a name it had just answered).
 * Names stay cached DNS_CACHE_S; a Service's ClusterIP does not move. */
#define DNS_CACHE_S 60L
static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static int global_rc;
static CURLSH *dns_share;
static pthread_mutex_t share_mu[CURL_LOCK_DATA_LAST];

static void share_lock(CURL *e, curl_lock_data data, curl_lock_access access, void *ud) {
    (void)e, (void)access, (void)ud;
    pthread_mutex_lock(&share_mu[data]);
}
static void share_unlock(CURL *e, curl_lock_data data, void *ud) {
    (void)e, (void)ud;
    pthread_mutex_unlock(&share_mu[data]);
}

static void global_init(void) {
    if ((global_rc = curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)) return;
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++) pthread_mutex_init(&share_mu[i], NULL);
    /* Without the share each client keeps its own cache: slower, still correct. */
    if (!(dns_share = curl_share_init())) return;
    if (curl_share_setopt(dns_share, CURLSHOPT_LOCKFUNC, share_lock) != CURLSHE_OK ||
        curl_share_setopt(dns_share, CURLSHOPT_UNLOCKFUNC, share_unlock) != CURLSHE_OK ||
        curl_share_setopt(dns_share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) != CURLSHE_OK) {
        curl_share_cleanup(dns_share);
        dns_share = NULL;
    }
}

const char *si_httpc_error_name(si_httpc_error_t error) {
    switch (error) {
    case SI_HTTPC_OK: return "ok";
    case SI_HTTPC_CONNECT: return "connect";
    case SI_HTTPC_TIMEOUT: return "timeout";
    case SI_HTTPC_IO: return "io";
    default: return "other";
    }
}

si_httpc_t *si_httpc_new(void) {
    pthread_once(&global_once, global_init);
    if (global_rc) return NULL;
    si_httpc_t *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    if (!(c->multi = curl_multi_init())) {
        free(c);
        return NULL;
    }
    curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, (long)MAX_CONNECTS);
    c->max_response = SI_HTTPC_DEFAULT_MAX_RESPONSE;
    return c;
}

void si_httpc_free(si_httpc_t *c) {
    if (!c) return;
    for (int i = 0; i < c->n_idle; i++) curl_easy_cleanup(c->idle[i]);
    curl_multi_cleanup(c->multi);
    free(c);
}

void si_httpc_set_max_response(si_httpc_t *c, size_t bytes) {
    c->max_response = bytes ? bytes : SI_HTTPC_DEFAULT_MAX_RESPONSE;
}

void si_httpc_resp_free(si_httpc_resp_t *r) {
    if (!r) return;
    free(r->body);
    memset(r, 0, sizeof *r);
}

/* Grows out->body to hold want bytes plus the NUL. */
static int reserve(xfer_t *x, size_t want) {
    if (want + 1 <= x->cap) return 0;
    size_t cap = x->cap ? x->cap : 16384;
    while (cap < want + 1) cap *= 2;
    char *p = realloc(x->out->body, cap);
    if (!p) return x->oom = 1, -1;
    x->out->body = p;
    x->cap = cap;
    return 0;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud) {
    xfer_t *x = ud;
    size_t n = size * nmemb, len = x->out->len;
    if (n > x->max - len) return x->too_big = 1, 0; /* != n: curl aborts, CURLE_WRITE_ERROR */
    if (reserve(x, len + n) != 0) return 0;
    memcpy(x->out->body + len, data, n);
    x->out->len = len + n;
    x->out->body[len + n] = 0;
    return n;
}

/* Reserves the whole body at once when the server announces its length, so a
 * multi-MiB tensor is not copied by repeated doubling. */
static size_t on_header(char *line, size_t size, size_t nmemb, void *ud) {
    xfer_t *x = ud;
    size_t n = size * nmemb;
    static const char cl[] = "content-length:";
    if (n > sizeof cl - 1 && strncasecmp(line, cl, sizeof cl - 1) == 0) {
        unsigned long long v = strtoull(line + sizeof cl - 1, NULL, 10);
        if (v > 0 && v <= x->max) reserve(x, (size_t)v);
    }
    return n;
}

/* A handle ready for setopt, with our receive buffer size. curl only takes
 * CURLOPT_BUFFERSIZE before it allocated the buffer; a recycled handle whose
 * last transfer failed early may still hold one, so such a handle is
 * replaced rather than left at curl's 16 KiB. */
static CURL *easy_get(si_httpc_t *c) {
    while (c->n_idle > 0) {
        CURL *e = c->idle[--c->n_idle];
        curl_easy_reset(e);
        if (curl_easy_setopt(e, CURLOPT_BUFFERSIZE, (long)RECV_BUFFER) == CURLE_OK) return e;
        curl_easy_cleanup(e);
    }
    CURL *e = curl_easy_init();
    if (e) curl_easy_setopt(e, CURLOPT_BUFFERSIZE, (long)RECV_BUFFER);
    return e;
}

static void easy_put(si_httpc_t *c, CURL *e) {
    if (c->n_idle < IDLE_EASY)
        c->idle[c->n_idle++] = e;
    else
        curl_easy_cleanup(e);
}

/* Prepares x for call k; on failure x->out says why and no handle is kept. */
static int xfer_setup(si_httpc_t *c, xfer_t *x, const si_httpc_call_t *k) {
    si_httpc_resp_t *o = x->out;
    x->url = k->url;
    x->method = k->method ? k->method : (k->body || k->len || k->iovcnt) ? "POST" : "GET";
    x->max = c->max_response;
    if (!k->url || !*k->url) {
        o->error = SI_HTTPC_OTHER;
        return set_msg(o, "no URL");
    }
    if (k->len && !k->body) {
        o->error = SI_HTTPC_OTHER;
        return set_msg(o, "%s %s: %zu body bytes but no body", x->method, k->url, k->len);
    }
    if (!(x->easy = easy_get(c))) goto oom;
    CURL *e = x->easy;
    int has_body = strcmp(x->method, "GET") != 0 && strcmp(x->method, "HEAD") != 0;
    char ct[256];
    snprintf(ct, sizeof ct, "Content-Type: %s",
             k->content_type ? k->content_type : "application/octet-stream");
    if (has_body && !(x->hdrs = curl_slist_append(x->hdrs, ct))) goto oom;
    for (const char *const *h = k->headers; h && *h; h++) {
        struct curl_slist *l = curl_slist_append(x->hdrs, *h);
        if (!l) goto oom;
        x->hdrs = l;
    }
    long timeout = k->timeout_ms > 0 ? k->timeout_ms : SI_HTTPC_DEFAULT_TIMEOUT_MS;
    x->errbuf[0] = 0;
    const char *bad = NULL; /* the first option curl refused */
#define SET(opt, val)                                                                              \
    do {                                                                                           \
        if (!bad && curl_easy_setopt(e, opt, val) != CURLE_OK) bad = #opt;                         \
    } while (0)
    SET(CURLOPT_URL, k->url);
    SET(CURLOPT_NOSIGNAL, 1L); /* threads: no SIGALRM */
    SET(CURLOPT_PROXY, "");    /* ignore *_proxy env */
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_TIMEOUT_MS, timeout);
    if (dns_share) SET(CURLOPT_SHARE, dns_share);
    SET(CURLOPT_DNS_CACHE_TIMEOUT, DNS_CACHE_S);
    SET(CURLOPT_EXPECT_100_TIMEOUT_MS, (long)EXPECT_TIMEOUT_MS);
    SET(CURLOPT_ERRORBUFFER, x->errbuf);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, x);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, x);
    SET(CURLOPT_PRIVATE, x);
    /* Drop a kept-alive connection before a server's 10 s idle limit (http.h)
     * drops it under a request; on_seek covers the rest of that race. */
    SET(CURLOPT_MAXAGE_CONN, (long)MAX_IDLE_S);
    if (x->hdrs) SET(CURLOPT_HTTPHEADER, x->hdrs);
    if (!strcmp(x->method, "GET")) {
        SET(CURLOPT_HTTPGET, 1L);
    } else if (!strcmp(x->method, "HEAD")) {
        SET(CURLOPT_NOBODY, 1L);
    } else {
        /* Every body goes through on_read, a whole one as one piece: it
         * counts what curl took (resends included, which POSTFIELDS would
         * not tell) at the cost of one copy into curl's buffer. */
        SET(CURLOPT_POST, 1L);
        if (k->iovcnt > 0) {
            x->iov = k->iov, x->iovcnt = k->iovcnt;
        } else {
            x->one = (struct iovec){(void *)k->body, k->body ? k->len : 0};
            x->iov = &x->one, x->iovcnt = 1;
        }
        size_t total = 0;
        for (int i = 0; i < x->iovcnt; i++) total += x->iov[i].iov_len;
        x->iov_i = 0, x->iov_off = 0, x->taken = 0;
        SET(CURLOPT_READFUNCTION, on_read);
        SET(CURLOPT_READDATA, x);
        SET(CURLOPT_SEEKFUNCTION, on_seek);
        SET(CURLOPT_SEEKDATA, x);
        /* curl copies a read-callback body through this buffer, 64 KiB by
         * default: a 3 MB tensor would be 49 callbacks and sends. */
        SET(CURLOPT_UPLOAD_BUFFERSIZE, 1L << 20);
        SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)total);
        if (strcmp(x->method, "POST") != 0) SET(CURLOPT_CUSTOMREQUEST, x->method);
    }
#undef SET
    if (bad) {
        o->error = SI_HTTPC_OTHER;
        return set_msg(o, "%s %s: curl refused %s", x->method, k->url, bad);
    }
    return 0;
oom:
    o->error = SI_HTTPC_OTHER;
    return set_msg(o, "%s %s: out of memory", x->method, k->url ? k->url : "");
}

static si_httpc_error_t classify(CURLcode rc) {
    switch (rc) {
    case CURLE_OK: return SI_HTTPC_OK;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT: return SI_HTTPC_CONNECT;
    case CURLE_OPERATION_TIMEDOUT: return SI_HTTPC_TIMEOUT;
    case CURLE_SEND_FAIL_REWIND:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM: return SI_HTTPC_IO;
    default: return SI_HTTPC_OTHER;
    }
}

/* Fills x->out from a finished transfer. */
static void xfer_finish(xfer_t *x, CURLcode rc) {
    si_httpc_resp_t *o = x->out;
    CURL *e = x->easy;
    curl_off_t us = 0, down = 0;
    long connects = 0, status = 0;
    curl_easy_getinfo(e, CURLINFO_TOTAL_TIME_T, &us);
    curl_easy_getinfo(e, CURLINFO_NUM_CONNECTS, &connects);
    curl_easy_getinfo(e, CURLINFO_SIZE_DOWNLOAD_T, &down);
    o->seconds = (double)us * 1e-6;
    /* Ours, not CURLINFO_SIZE_UPLOAD_T: curl restarts that count when it
     * sends the body again on a fresh connection. */
    o->sent = x->taken;
    o->received = down > 0 ? (size_t)down : 0;
    o->new_connections = (int)connects;
    o->error = classify(rc);
    if (o->error == SI_HTTPC_OK) {
        const char *ct = NULL;
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_getinfo(e, CURLINFO_CONTENT_TYPE, &ct);
        o->status = (int)status;
        snprintf(o->content_type, sizeof o->content_type, "%s", ct ? ct : "");
        return;
    }
    free(o->body); /* a partial body would only mislead */
    o->body = NULL;
    o->len = 0;
    if (x->too_big)
        set_msg(o, "%s %s: response over %zu bytes", x->method, x->url, x->max);
    else if (x->oom)
        set_msg(o, "%s %s: out of memory for the response", x->method, x->url);
    else
        set_msg(o, "%s %s: %s", x->method, x->url,
                x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc));
}

int si_httpc_post_many(si_httpc_t *c, int n, const si_httpc_call_t *calls, si_httpc_resp_t *outs,
                       si_err_t *err) {
    if (!c || !calls || !outs || n < 1 || n > SI_HTTPC_MAX_CALLS) {
        for (int i = 0; outs && i < n && i < SI_HTTPC_MAX_CALLS; i++) {
            memset(&outs[i], 0, sizeof outs[i]);
            outs[i].error = SI_HTTPC_OTHER;
            set_msg(&outs[i], "bad arguments");
        }
        return si_err_set(err, "http calls: bad arguments (n = %d, at most %d)", n,
                          SI_HTTPC_MAX_CALLS);
    }
    xfer_t *xs = calloc((size_t)n, sizeof *xs);
    if (!xs) return si_err_set(err, "http calls: out of memory");
    for (int i = 0; i < n; i++) {
        memset(&outs[i], 0, sizeof outs[i]);
        xs[i].out = &outs[i];
        if (xfer_setup(c, &xs[i], &calls[i]) != 0) continue;
        if (curl_multi_add_handle(c->multi, xs[i].easy) != CURLM_OK) {
            outs[i].error = SI_HTTPC_OTHER;
            set_msg(&outs[i], "%s %s: curl_multi_add_handle failed", xs[i].method, xs[i].url);
            continue;
        }
        xs[i].added = 1;
    }

    int running = 1;
    CURLMcode mc = CURLM_OK;
    while (running) {
        if ((mc = curl_multi_perform(c->multi, &running)) != CURLM_OK) break;
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(c->multi, &left))) {
            if (msg->msg != CURLMSG_DONE) continue;
            xfer_t *x = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
            CURLcode rc = msg->data.result; /* msg is invalid after remove_handle */
            xfer_finish(x, rc);
            curl_multi_remove_handle(c->multi, x->easy);
            x->added = 0;
        }
        if (running && (mc = curl_multi_poll(c->multi, NULL, 0, 1000, NULL)) != CURLM_OK) break;
    }

    int failed = 0, first = -1;
    for (int i = 0; i < n; i++) {
        xfer_t *x = &xs[i];
        if (x->added) { /* only after a multi-level failure */
            curl_multi_remove_handle(c->multi, x->easy);
            free(outs[i].body);
            memset(&outs[i], 0, sizeof outs[i]);
            outs[i].error = SI_HTTPC_OTHER;
            set_msg(&outs[i], "%s %s: %s", x->method, x->url, curl_multi_strerror(mc));
        }
        if (x->easy) easy_put(c, x->easy);
        curl_slist_free_all(x->hdrs);
        if (outs[i].error != SI_HTTPC_OK && failed++ == 0) first = i;
    }
    free(xs);
    if (failed > 0 && n == 1) si_err_set(err, "%s", outs[first].error_msg);
    if (failed > 0 && n > 1)
        si_err_set(err, "%d of %d calls failed; call %d: %s", failed, n, first,
                   outs[first].error_msg);
    return failed;
}

static int one_call(si_httpc_t *c, const si_httpc_call_t *k, si_httpc_resp_t *out, si_err_t *err) {
    return si_httpc_post_many(c, 1, k, out, err) == 0 ? out->status : -1;
}

int si_httpc_post(si_httpc_t *c, const char *url, const char *content_type, const void *body,
                  size_t len, int timeout_ms, si_httpc_resp_t *out, si_err_t *err) {
    si_httpc_call_t k = {"POST", url, content_type, body, len, timeout_ms, NULL, NULL, 0};
    return one_call(c, &k, out, err);
}

int si_httpc_get(si_httpc_t *c, const char *url, int timeout_ms, si_httpc_resp_t *out,
                 si_err_t *err) {
    si_httpc_call_t k = {"GET", url, NULL, NULL, 0, timeout_ms, NULL, NULL, 0};
    return one_call(c, &k, out, err);
}
