/* benchplans.c - splitinfer bench --plans: the paper's Table 1 for our plans.
 *
 *   splitinfer bench --plans baseline,pipeline,blocks,parallel -m MODEL --images DIR
 *                    [-n 100] [--runtime process|podman|process,podman] [--cpus 0.35]
 *                    [--memory 512m] [--concurrency 1,4,16] [--cold 5] [--seconds 5]
 *                    [--warmup-runs 0] [--out DIR]
 *
 * For each runtime and plan:
 *  1. Cold start, K times: every function of the plan and the gateway are
 *     started at once (t0), each stage function is polled on /readyz and the
 *     gateway on /healthz, then the first image is classified. The time to
 *     the first answer is split into process (container) start, weight load +
 *     warm-up (the slowest function's splitinfer_model_load_seconds, and the
 *     "load X ms, warm-up Y ms" of its log), and the first inference. The
 *     last deployment is kept for:
 *  2. N warm requests, one at a time, over the PNGs of DIR (cycling).
 *  3. Throughput: C client threads in a closed loop for S seconds, each C.
 * and the metrics of Table 1 from what was measured: inference time, cold
 * start, CPU utilization (from /proc/PID/stat of the functions), memory (peak
 * RSS, VmHWM), network latency (the gateway's per-hop round trip minus the
 * stage's own time), bytes moved, requests per second.
 *
 * Runtimes. process: one `splitinfer stage` process per function as `up`
 * starts them (one compute thread each, so a function's CPU quota is taken
 * as 1 CPU; nothing caps it). podman: one container per function from the
 * images `make images` builds, with --cpus/--memory (the paper's 0.35 CPU and
 * 512 MB), on a podman network this command creates (without DNS when it
 * can give every container an address); the gateway reaches the
 * functions (and a chained function the next) by their addresses on it,
 * this process reaches the gateway (and probes the functions) through ports
 * published on 127.0.0.1.
 *
 * Output: a Markdown table beside the paper's (stdout and OUT/table.md),
 * OUT/results.json with every sample, and SVG charts drawn by lib/svg.
 * Progress goes to stderr (a bar when stderr is a terminal, a line per phase
 * otherwise); the functions' own logs go to OUT/logs. */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "httpc.h"
#include "launch.h"
#include "modelfile.h"
#include "plan.h"
#include "procstat.h"
#include "stats.h"
#include "svg.h"

#define BP_MAX_FNS 128             /* functions of one plan (the blocks plan has 18) */
#define BP_MAX_CONC 16             /* concurrency levels */
#define BP_MAX_RUNS 32             /* runtime x plan */
#define BP_READY_TIMEOUT_MS 300000 /* 19 containers warming up at 0.35 CPU on 2 cores */
#define BP_CALL_TIMEOUT_MS 120000  /* one classify, from the client */
#define BP_PLAN_TIMEOUT_MS                                                                         \
    60000                       /* per function call in the deployed plan (the plan                \
                                   files say 10 s; a 0.35-CPU function behind 15                   \
                                   queued requests can take longer) */
#define BP_MB (1024.0 * 1024.0) /* "MB" in the tables: 2^20 bytes */

/* Table 1 of the paper (section 3.2.3): Baseline, Preliminary, Advanced. */
static const char *const paper_cols[3] = {"Baseline", "Preliminary", "Advanced"};
static const double paper_inference_ms[3] = {379, 482, 313};
static const double paper_cold_ms[3] = {947, 1023, 731};
static const double paper_cpu_pct[3] = {92.1, 89.3, 93.5};
static const double paper_mem_mb[3] = {1481.2, 684.8, 779.4};
static const double paper_net_ms[3] = {50, 179, 223};

static volatile sig_atomic_t g_stop; /* SIGINT/SIGTERM: finish the current call, clean up */

static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

typedef struct image {
    char name[256];
    void *png;
    size_t len;
} image_t;

/* One function (a band of a step) or the gateway, in one deployment. */
typedef struct fn {
    char name[48];  /* "step2-band0", "gateway" */
    int step, band; /* step -1: the gateway */
    int step_end;   /* one past its last step: step + 1, or a resident run's end (plan.h) */
    char segment[SI_MAX_NAME]; /* a resident run's: "#first..#last" cut */
    char steps[LAUNCH_ARG_LEN]; /* a resident run's steps, for --steps; "" for none */
    int port;                  /* on 127.0.0.1: the process's own, or the container's published */
    char container[64];        /* podman */
    char ip[48];               /* podman: its address on the network, "" if by name */
    char image[256];           /* podman */
    char log[320];             /* its stderr */
    launch_proc_t *proc;       /* process: the function; podman: the `podman run -d` client */
    int run_done;              /* podman: the client exited 0 */
    pid_t pid;                 /* the function's process as this host sees it */
    double run_ms;             /* since t0: podman run returned (podman), fork returned (process) */
    double ready_ms;           /* since t0: /readyz (gateway: /healthz) first answered 200 */
    double load_warm_ms;       /* splitinfer_model_load_seconds, main() to warm; -1 unknown */
    double load_ms, warmup_ms; /* from its log line; -1 unknown */
    si_procstat_t ps0;         /* at the start of a measured window */
    double cpu_s;              /* CPU seconds in the warm window */
    double busy_s;             /* its step's round trips summed over the warm window */
    double hwm_warm_mb, hwm_end_mb; /* peak RSS after the warm requests / at the end */
    si_cgroupstat_t cg;             /* at the end */
} fn_t;

typedef struct deploy {
    int podman;
    si_plan_t plan; /* with every function's URL */
    fn_t fns[BP_MAX_FNS + 1];
    int n;                /* stage functions; fns[n] is the gateway */
    launch_proc_t *procs; /* n + 1 */
    char plan_path[PATH_MAX];
    char gw_url[64];
    double t0;
    double t_mark; /* ms: just before the CPU clocks were read by read_all */
    int live; /* started and not yet stopped */
} deploy_t;

/* What the table and the charts need of one runtime x plan. */
typedef struct run_sum {
    char runtime[16], plan[SI_MAX_NAME];
    int paper; /* index into paper_cols, -1 none */
    int ok;    /* measured to the end */
    int n_fns;
    si_stats_t inf, gw, net, cold, bytes;
    double cold_start_ms, cold_load_ms, cold_first_ms; /* means of the split */
    double cpu_util, cpu_active, quota;
    double other_cpus; /* CPUs busy with other processes than ours during the warm requests */
    double mem_sum, mem_max, mem_gw, mem_sum_end; /* MB */
    char mem_max_fn[48];
    int n_conc;
    double rps[BP_MAX_CONC], conc_p50[BP_MAX_CONC];
    double *lat; /* sorted client ms of the warm requests (for the CDF) */
    int n_lat;
    int errors;
} run_sum_t;

typedef struct bench {
    cli_opts_t o;
    int n, cold, seconds, n_conc, conc[BP_MAX_CONC];
    double cpus;        /* podman quota per function */
    const char *memory; /* podman limit per function, as podman takes it */
    char out[PATH_MAX]; /* absolute */
    image_t *images;
    int n_images;
    si_graph_t *g;
    char net[64]; /* podman network, "" when none made */
    char net_base[32]; /* "a.b.c" of its /24 (or wider) IPv4 subnet: containers get
                          a.b.c.(10 + i); "" when unknown (then they are named) */
    char prefix[128], tag[64];
    int tty;
    double t_start;
    si_httpc_t *c;
    json_t *runs;
    run_sum_t sums[BP_MAX_RUNS];
    int n_sums;
    int run_idx, n_runs; /* progress */
    deploy_t *live;      /* the deployment to tear down on any exit path */
} bench_t;

/* ---- small helpers ---- */

static double ms_since(double t0) {
    return cli_now_ms() - t0;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Messages to stderr: on a terminal the progress line is cleared first. */
static void note(const bench_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(const bench_t *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (b->tty) fputs("\r\033[K", stderr);
    fputs("bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* The progress bar (terminal) or a line at the start of each phase (log). */
static void progress(const bench_t *b, const run_sum_t *r, const char *phase, int done, int total) {
    double el = ms_since(b->t_start) / 1e3;
    if (!b->tty) {
        if (done == 0)
            fprintf(stderr, "bench: [%d/%d %s %s] %s (%d) at %.0f s\n", b->run_idx + 1, b->n_runs,
                    r->runtime, r->plan, phase, total, el);
        return;
    }
    char bar[31];
    int fill = total > 0 ? (int)(30.0 * done / total) : 0;
    for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
    bar[30] = 0;
    fprintf(stderr, "\r\033[K[%d/%d %s %s] %-10s %4d/%-4d [%s] %d:%02d", b->run_idx + 1, b->n_runs,
            r->runtime, r->plan, phase, done, total, bar, (int)el / 60, (int)el % 60);
    fflush(stderr);
}

static int parse_ints(const char *s, int *out, int max, int lo, int hi) {
    int n = 0;
    while (s && *s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < lo || v > hi || n == max || (*end && *end != ',')) return -1;
        out[n++] = (int)v;
        s = *end ? end + 1 : end;
    }
    return n;
}

/* Next comma-separated item of *s into buf; 0 at the end. */
static int next_item(const char **s, char *buf, size_t len) {
    while (**s == ',') (*s)++;
    if (!**s) return 0;
    size_t n = strcspn(*s, ",");
    snprintf(buf, len, "%.*s", (int)n, *s);
    *s += n;
    return 1;
}

/* A plan name ("pipeline") is plans/NAME.json here or next to the binary
 * (build/../plans); anything with a '/' or ending in .json is a path. */
static int find_plan(const char *name, char *path, size_t len) {
    size_t nl = strlen(name);
    if (strchr(name, '/') || (nl > 5 && !strcmp(name + nl - 5, ".json"))) {
        snprintf(path, len, "%s", name);
        return access(path, R_OK);
    }
    snprintf(path, len, "plans/%s.json", name);
    if (access(path, R_OK) == 0) return 0;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return -1;
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    if (slash) *slash = 0;
    snprintf(path, len, "%.*s/../plans/%s.json", (int)(PATH_MAX / 2), exe, name);
    return access(path, R_OK);
}

/* The paper's column a plan reproduces: baseline -> Baseline, pipeline ->
 * Preliminary, blocks and parallel -> Advanced (as written / done right). */
static int paper_col(const char *plan) {
    if (strstr(plan, "baseline")) return 0;
    if (strstr(plan, "pipeline")) return 1;
    if (strstr(plan, "blocks") || strstr(plan, "parallel")) return 2;
    return -1;
}

/* The image name slug of a segment, as k8s/images.sh makes it: lower case,
 * ".." and any of ".#_" become '-', runs of '-' squeezed, no leading '-'. */
static void segment_slug(const char *seg, char *out, size_t len) {
    size_t n = 0;
    for (const char *p = seg; *p && n + 1 < len; p++) {
        char ch = *p;
        if (ch == '.' || ch == '#' || ch == '_')
            ch = '-';
        else if (ch >= 'A' && ch <= 'Z')
            ch = (char)(ch - 'A' + 'a');
        if (ch == '-' && (n == 0 || out[n - 1] == '-')) continue;
        out[n++] = ch;
    }
    out[n] = 0;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp(((const image_t *)a)->name, ((const image_t *)b)->name);
}

static int load_images(bench_t *b, const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return cli_fail("--images %s: %s", dir, strerror(errno));
    int cap = 0;
    for (struct dirent *e; (e = readdir(d));) {
        size_t nl = strlen(e->d_name);
        if (nl < 5 || strcasecmp(e->d_name + nl - 4, ".png")) continue;
        if (b->n_images == cap) {
            cap = cap ? cap * 2 : 64;
            image_t *p = realloc(b->images, (size_t)cap * sizeof *p);
            if (!p) break;
            b->images = p;
        }
        image_t *im = &b->images[b->n_images];
        memset(im, 0, sizeof *im);
        snprintf(im->name, sizeof im->name, "%s/%s", dir, e->d_name);
        b->n_images++;
    }
    closedir(d);
    if (b->n_images == 0) return cli_fail("--images %s: no .png files", dir);
    qsort(b->images, (size_t)b->n_images, sizeof *b->images, cmp_name);
    for (int i = 0; i < b->n_images; i++)
        if (cli_read_file(b->images[i].name, &b->images[i].png, &b->images[i].len)) return 1;
    return 0;
}

/* Runs a shell command (our own, fixed text), output to log (or dropped).
 * Returns its exit status, -1 when it could not run. */
static int shell(const char *log, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int shell(const char *log, const char *fmt, ...) {
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(cmd, sizeof cmd - 400, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof cmd - 400) return -1;
    snprintf(cmd + n, sizeof cmd - (size_t)n, " >>'%s' 2>&1 </dev/null", log ? log : "/dev/null");
    int st = system(cmd);
    return st == -1 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The last line of a log with text in it (for error messages). */
static void log_tail(const char *path, char *buf, size_t len) {
    buf[0] = 0;
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        size_t n = strlen(line);
        if (n && len) {
            if (n >= len) n = len - 1;
            memcpy(buf, line, n), buf[n] = 0;
        }
    }
    fclose(f);
}

/* "load X ms, warm-up Y ms" of a stage's log (podman's k8s-file lines carry a
 * prefix; the text is the same). */
static void parse_stage_log(fn_t *f) {
    FILE *fp = fopen(f->log, "r");
    if (!fp) return;
    char line[1024];
    while (fgets(line, sizeof line, fp)) {
        const char *p = strstr(line, "(load ");
        double l, w;
        if (p && sscanf(p, "(load %lf ms, warm-up %lf ms)", &l, &w) == 2)
            f->load_ms = l, f->warmup_ms = w;
    }
    fclose(fp);
}

/* The value of a gauge in Prometheus text (first series), -1 when absent. */
static double metric_value(const char *text, const char *name) {
    size_t nl = strlen(name);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, name, nl) || (p[nl] != '{' && p[nl] != ' ')) continue;
        const char *eol = strchr(p, '\n');
        const char *sp = eol ? eol : p + strlen(p);
        while (sp > p && sp[-1] != ' ') sp--;
        return atof(sp);
    }
    return -1;
}

/* A gauge of function f's /metrics, -1 when it did not answer or lacks it. */
static double fn_metric(bench_t *b, const fn_t *f, const char *name) {
    char url[96];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", f->port);
    si_httpc_resp_t resp;
    double v = -1;
    if (si_httpc_get(b->c, url, 5000, &resp, NULL) == 200 && resp.body)
        v = metric_value(resp.body, name);
    si_httpc_resp_free(&resp);
    return v;
}

static void loadavg(char *buf, size_t len) {
    FILE *f = fopen("/proc/loadavg", "r");
    double a = 0, b = 0, c = 0;
    if (f && fscanf(f, "%lf %lf %lf", &a, &b, &c) == 3)
        snprintf(buf, len, "%.2f/%.2f/%.2f", a, b, c);
    else
        snprintf(buf, len, "?");
    if (f) fclose(f);
}

/* ---- deployments ---- */

static int fn_log_path(const bench_t *b, const run_sum_t *r, int trial, const char *name,
                       const char *what, char *out, size_t len) {
    char nm[64]; /* a copy: name may lie in the same struct as out */
    snprintf(nm, sizeof nm, "%s", name);
    int n = snprintf(out, len, "%s/logs/%s-%s-cold%d-%s%s.log", b->out, r->runtime, r->plan, trial,
                     nm, what);
    return n < 0 || (size_t)n >= len ? cli_fail("--out: the path %s is too long", b->out) : 0;
}

/* Adds the arguments of a stage function after the program's name. */
/* A stage's arguments; plan has every function's URL filled in (a chained
 * function is told the next one's). */
static void stage_args(launch_proc_t *p, const fn_t *f, const si_plan_t *plan, int warmup_runs) {
    const si_plan_step_t *ps = &plan->steps[f->step];
    launch_arg(p, "stage");
    launch_arg(p, "--segment"), launch_arg(p, f->segment);
    if (f->steps[0]) launch_arg(p, "--steps"), launch_arg(p, f->steps);
    launch_arg(p, "--threads"), launch_arg(p, "1");
    launch_arg(p, "--name"), launch_arg(p, f->name);
    if (ps->bands > 1) {
        char band[24];
        snprintf(band, sizeof band, "%d/%d", f->band, ps->bands);
        launch_arg(p, "--band"), launch_arg(p, band);
    }
    const char *next = si_plan_next_function(plan, f->step);
    if (next[0]) launch_arg(p, "--next"), launch_arg(p, next);
    if (warmup_runs >= 0) { /* else the stage's default (none) */
        char runs[16];
        snprintf(runs, sizeof runs, "%d", warmup_runs);
        launch_arg(p, "--warmup-runs"), launch_arg(p, runs); /* launch_arg copies */
    }
}

/* podman run -d with the limits, on our network, the port published on loopback. */
static void podman_run_args(const bench_t *b, launch_proc_t *p, const fn_t *f) {
    char v[PATH_MAX + 64];
    p->exe = "podman";
    launch_arg(p, "podman"), launch_arg(p, "run"), launch_arg(p, "-d");
    launch_arg(p, "--name"), launch_arg(p, f->container);
    launch_arg(p, "--network"), launch_arg(p, b->net);
    if (f->ip[0]) launch_arg(p, "--ip"), launch_arg(p, f->ip);
    snprintf(v, sizeof v, "%g", b->cpus);
    launch_arg(p, "--cpus"), launch_arg(p, v);
    launch_arg(p, "--memory"), launch_arg(p, b->memory);
    snprintf(v, sizeof v, "127.0.0.1:%d:8080", f->port);
    launch_arg(p, "-p"), launch_arg(p, v);
    snprintf(v, sizeof v, "path=%s", f->log);
    launch_arg(p, "--log-driver"), launch_arg(p, "k8s-file");
    launch_arg(p, "--log-opt"), launch_arg(p, v);
}

/* Starts every function of the plan and the gateway at once. The plan's URLs
 * are filled in first (ports are picked before anything starts). */
static int deploy_start(bench_t *b, deploy_t *d, const run_sum_t *r, int trial,
                        const char *stepdir) {
    const si_plan_t *plan = &d->plan;
    d->n = 0;
    for (int i = 0, j; i < plan->n_steps; i = j) {
        const si_plan_step_t *ps = &plan->steps[i];
        j = si_plan_resident_end(plan, i); /* a resident run: K functions for all its steps */
        for (int k = 0; k < ps->bands; k++) {
            if (d->n == BP_MAX_FNS)
                return cli_fail("plan %s has over %d functions", r->plan, BP_MAX_FNS);
            fn_t *f = &d->fns[d->n++];
            memset(f, 0, sizeof *f);
            f->step = i, f->band = k, f->step_end = j;
            si_segment_t seg;
            si_err_t err = {{0}};
            if (launch_run_segment(b->g, plan, i, j, &seg, f->segment, f->steps, &err) < 0)
                return cli_fail("step %d (%s): %s", i, ps->segment, err.msg);
            snprintf(f->name, sizeof f->name, "step%d-band%d", i, k);
        }
    }
    fn_t *gw = &d->fns[d->n];
    memset(gw, 0, sizeof *gw);
    gw->step = -1;
    snprintf(gw->name, sizeof gw->name, "gateway");
    for (int i = 0; i <= d->n; i++) {
        fn_t *f = &d->fns[i];
        f->load_warm_ms = f->load_ms = f->warmup_ms = -1;
        f->port = launch_free_port();
        if (f->port < 0) return cli_fail("no free port: %s", strerror(errno));
        if (fn_log_path(b, r, trial, f->name, "", f->log, sizeof f->log)) return 1;
        unlink(f->log);
        if (d->podman) {
            snprintf(f->container, sizeof f->container, "sib%d-%d-%d-%s", (int)getpid(), b->run_idx,
                     trial, f->step < 0 ? "gw" : f->name);
            char slug[SI_MAX_NAME];
            segment_slug(f->segment, slug, sizeof slug);
            int n = f->step < 0
                        ? snprintf(f->image, sizeof f->image, "%s-gateway:%s", b->prefix, b->tag)
                        : snprintf(f->image, sizeof f->image, "%s-stage-%s:%s", b->prefix, slug,
                                   b->tag);
            if (n < 0 || (size_t)n >= sizeof f->image) return cli_fail("image name too long");
            if (b->net_base[0]) snprintf(f->ip, sizeof f->ip, "%s.%d", b->net_base, 10 + i);
        }
        if (f->step >= 0) {
            si_plan_step_t *ps = &d->plan.steps[f->step];
            ps->n_functions = ps->bands;
            /* By address, not by name: a name lookup that meets podman's DNS
             * (aardvark-dns) while it reloads for a container starting or
             * going waits out glibc's 5 s timeout twice - seen as 10 s first
             * calls in cold starts, one in 6. */
            char host[sizeof f->container];
            memcpy(host, f->ip[0] ? f->ip : f->container, sizeof host);
            if (d->podman)
                snprintf(ps->functions[f->band], SI_PLAN_MAX_URL, "http://%s:8080", host);
            else
                snprintf(ps->functions[f->band], SI_PLAN_MAX_URL, "http://127.0.0.1:%d", f->port);
            for (int m = f->step + 1; m < f->step_end; m++) { /* the rest of a resident run */
                d->plan.steps[m].n_functions = ps->bands;
                memcpy(d->plan.steps[m].functions[f->band], ps->functions[f->band], SI_PLAN_MAX_URL);
            }
        }
    }
    d->plan.timeout_ms = BP_PLAN_TIMEOUT_MS;
    int pl = snprintf(d->plan_path, sizeof d->plan_path, "%s/work/%s-%s-cold%d.plan.json", b->out,
                      r->runtime, r->plan, trial);
    if (pl < 0 || (size_t)pl >= sizeof d->plan_path) return cli_fail("--out: path too long");
    char *json = si_plan_dump(&d->plan);
    FILE *fp = fopen(d->plan_path, "w");
    int wrote = fp && json && fputs(json, fp) >= 0;
    if (fp && fclose(fp) != 0) wrote = 0;
    free(json);
    if (!wrote) return cli_fail("%s: cannot write", d->plan_path);
    chmod(d->plan_path, 0644); /* the gateway container runs as uid 65532 */
    snprintf(d->gw_url, sizeof d->gw_url, "http://127.0.0.1:%d", gw->port);

    /* Argument lists first, so that t0 .. the last spawn is only forks. */
    for (int i = 0; i <= d->n; i++) {
        fn_t *f = &d->fns[i];
        launch_proc_t *p = &d->procs[i];
        memset(p, 0, sizeof *p);
        snprintf(p->name, sizeof p->name, "%s", f->name);
        f->proc = p;
        char port[16], model[PATH_MAX];
        snprintf(port, sizeof port, "%d", f->port);
        if (d->podman) {
            if (fn_log_path(b, r, trial, f->name, "-podman-run", p->log, sizeof p->log)) return 1;
            unlink(p->log);
            podman_run_args(b, p, f);
            if (f->step < 0) {
                char v[PATH_MAX + 64];
                snprintf(v, sizeof v, "%s:/etc/splitinfer/plan.json:ro", d->plan_path);
                launch_arg(p, "-v"), launch_arg(p, v);
                launch_arg(p, f->image); /* its CMD: gateway --plan /etc/splitinfer/plan.json */
            } else {
                launch_arg(p, f->image);
                stage_args(p, f, &d->plan, b->o.warmup_runs);
            }
        } else {
            snprintf(p->log, sizeof p->log, "%s", f->log);
            launch_arg(p, "splitinfer");
            if (f->step < 0) {
                snprintf(model, sizeof model, "%s/step0.sfm", stepdir);
                launch_arg(p, "gateway");
                launch_arg(p, "--plan"), launch_arg(p, d->plan_path);
                launch_arg(p, "-m"), launch_arg(p, model);
            } else {
                snprintf(model, sizeof model, "%s/step%d.sfm", stepdir, f->step);
                stage_args(p, f, &d->plan, b->o.warmup_runs);
                launch_arg(p, "-m"), launch_arg(p, model);
            }
            launch_arg(p, "--host"), launch_arg(p, "127.0.0.1");
            launch_arg(p, "--port"), launch_arg(p, port);
        }
    }
    d->live = 1;
    b->live = d;
    d->t0 = cli_now_ms();
    for (int i = 0; i <= d->n; i++) {
        fn_t *f = &d->fns[i];
        if (launch_spawn(f->proc) < 0)
            return cli_fail("cannot start %s: %s", f->name, strerror(errno));
        if (!d->podman) f->run_ms = ms_since(d->t0), f->pid = f->proc->pid;
    }
    return 0;
}

/* Polls until every function answers /readyz and the gateway /healthz. */
static int deploy_wait_ready(bench_t *b, deploy_t *d) {
    char tail[400];
    for (;;) {
        int left = 0;
        double t = ms_since(d->t0);
        if (t > BP_READY_TIMEOUT_MS || g_stop) break;
        for (int i = 0; i <= d->n; i++) {
            fn_t *f = &d->fns[i];
            int status;
            if (f->proc->pid > 0 && waitpid(f->proc->pid, &status, WNOHANG) == f->proc->pid) {
                f->proc->pid = 0;
                if (d->podman && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
                    f->run_done = 1, f->run_ms = ms_since(d->t0);
                } else {
                    log_tail(f->proc->log, tail, sizeof tail);
                    return cli_fail("%s %s: %s", d->podman ? "podman run of" : "function", f->name,
                                    tail[0] ? tail : "exited");
                }
            }
            if (f->ready_ms > 0) continue;
            left++;
            char url[96];
            snprintf(url, sizeof url, "http://127.0.0.1:%d/%s", f->port,
                     f->step < 0 ? "healthz" : "readyz");
            si_httpc_resp_t resp;
            int st = si_httpc_get(b->c, url, 1000, &resp, NULL);
            si_httpc_resp_free(&resp);
            if (st == 200) f->ready_ms = ms_since(d->t0), left--;
        }
        if (d->podman)
            for (int i = 0; i <= d->n; i++) left += !d->fns[i].run_done;
        if (!left) return 0;
        sleep_ms(5);
    }
    for (int i = 0; i <= d->n; i++)
        if (d->fns[i].ready_ms <= 0) {
            log_tail(d->fns[i].log, tail, sizeof tail);
            return cli_fail("%s did not become ready in %d s%s%s", d->fns[i].name,
                            BP_READY_TIMEOUT_MS / 1000, tail[0] ? ": " : "", tail);
        }
    return cli_fail("interrupted");
}

/* The host pid of every container's main process (podman inspect). */
static int deploy_pids(deploy_t *d) {
    if (!d->podman) return 0;
    char cmd[8192];
    int n = snprintf(cmd, sizeof cmd, "podman inspect --format '{{.Name}} {{.State.Pid}}'");
    for (int i = 0; i <= d->n && n < (int)sizeof cmd - 80; i++)
        n += snprintf(cmd + n, sizeof cmd - (size_t)n, " %s", d->fns[i].container);
    FILE *p = popen(cmd, "r");
    if (!p) return cli_fail("podman inspect: %s", strerror(errno));
    char name[128];
    int pid;
    while (fscanf(p, "%127s %d", name, &pid) == 2)
        for (int i = 0; i <= d->n; i++)
            if (!strcmp(name, d->fns[i].container) ||
                (name[0] == '/' && !strcmp(name + 1, d->fns[i].container)))
                d->fns[i].pid = pid;
    pclose(p);
    for (int i = 0; i <= d->n; i++)
        if (d->fns[i].pid <= 0)
            return cli_fail("podman inspect: no pid for %s", d->fns[i].container);
    return 0;
}

static void deploy_stop(bench_t *b, deploy_t *d) {
    if (!d->live) return;
    d->live = 0;
    if (b->live == d) b->live = NULL;
    if (!d->podman) {
        launch_stop_all(d->procs, d->n + 1);
        return;
    }
    /* Clients still running (an error path): stop them first. */
    launch_stop_all(d->procs, d->n + 1);
    char cmd[8192];
    int n = snprintf(cmd, sizeof cmd, "podman rm -f -t 5");
    for (int i = 0; i <= d->n && n < (int)sizeof cmd - 80; i++)
        n += snprintf(cmd + n, sizeof cmd - (size_t)n, " %s", d->fns[i].container);
    shell(NULL, "%s", cmd);
}

/* ---- requests ---- */

/* One classify; fills *client_ms and, when sample is not NULL, the sample
 * (the gateway's timings per step). Returns the HTTP status, -1 for none. */
static int classify(si_httpc_t *c, const char *gw_url, const image_t *im, double *client_ms,
                    json_t **sample) {
    char url[128];
    snprintf(url, sizeof url, "%s/v1/classify?k=1", gw_url);
    si_httpc_resp_t r;
    double t0 = cli_now_ms();
    int st = si_httpc_post(c, url, "image/png", im->png, im->len, BP_CALL_TIMEOUT_MS, &r, NULL);
    *client_ms = ms_since(t0);
    if (sample) *sample = NULL;
    if (st == 200 && sample) {
        json_error_t je;
        json_t *o = json_loadb(r.body, r.len, 0, &je);
        json_t *steps = json_object_get(o, "steps");
        if (!o || !json_is_array(steps)) {
            st = -2; /* a 200 without the JSON we expect */
        } else {
            json_t *s = json_object();
            double bytes = 0, compute = 0;
            size_t i;
            json_t *v;
            json_array_foreach(steps, i, v) {
                bytes += json_number_value(json_object_get(v, "bytes_sent")) +
                         json_number_value(json_object_get(v, "bytes_received"));
                compute += json_number_value(json_object_get(v, "compute_ms"));
            }
            const char *slash = strrchr(im->name, '/');
            json_object_set_new(s, "image", json_string(slash ? slash + 1 : im->name));
            json_object_set_new(s, "client_ms", json_real(*client_ms));
            json_object_set_new(s, "gateway_ms",
                                json_real(json_number_value(json_object_get(o, "ms"))));
            json_object_set_new(s, "network_ms",
                                json_real(json_number_value(json_object_get(o, "network_ms"))));
            json_object_set_new(s, "compute_ms", json_real(compute));
            json_object_set_new(s, "bytes", json_integer((json_int_t)bytes));
            json_t *top = json_array_get(json_object_get(o, "top"), 0);
            json_object_set_new(s, "top1",
                                json_integer(json_integer_value(json_object_get(top, "index"))));
            json_object_set(s, "steps", steps);
            *sample = s;
        }
        json_decref(o);
    }
    si_httpc_resp_free(&r);
    return st;
}

/* ---- the phases ---- */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Cold start number `trial`; leaves the deployment running. Appends the sample. */
static int cold_start(bench_t *b, deploy_t *d, run_sum_t *r, int trial, const char *stepdir,
                      json_t *cold, double *total_ms) {
    if (deploy_start(b, d, r, trial, stepdir) || deploy_wait_ready(b, d)) return 1;
    double ready = 0;
    for (int i = 0; i <= d->n; i++) ready = fmax(ready, d->fns[i].ready_ms);
    double first_ms;
    json_t *s1 = NULL;
    int st = classify(b->c, d->gw_url, &b->images[0], &first_ms, &s1);
    *total_ms = ms_since(d->t0);
    if (st != 200) {
        json_decref(s1);
        char tail[400];
        log_tail(d->fns[d->n].log, tail, sizeof tail);
        return cli_fail("first classify on %s answered %d%s%s", r->plan, st,
                        tail[0] ? "; gateway: " : "", tail);
    }
    /* Each function's own load + warm-up: its gauge and its log line. */
    json_t *fns = json_array();
    int crit = 0; /* the stage function ready last: the cold start's critical path */
    for (int i = 0; i < d->n; i++) {
        fn_t *f = &d->fns[i];
        double v = fn_metric(b, f, "splitinfer_model_load_seconds");
        if (v >= 0) f->load_warm_ms = v * 1e3;
        if (f->ready_ms > d->fns[crit].ready_ms) crit = i;
    }
    /* Logs are flushed line by line; the line is there once /readyz answered. */
    for (int i = 0; i <= d->n; i++) parse_stage_log(&d->fns[i]);
    for (int i = 0; i <= d->n; i++) {
        fn_t *f = &d->fns[i];
        json_array_append_new(fns, json_pack("{s:s, s:f, s:f, s:f, s:f, s:f}", "name", f->name,
                                             "run_ms", f->run_ms, "ready_ms", f->ready_ms,
                                             "load_warm_ms", f->load_warm_ms, "load_ms", f->load_ms,
                                             "warmup_ms", f->warmup_ms));
    }
    const fn_t *cf = &d->fns[crit];
    double load_warm = cf->load_warm_ms > 0 ? cf->load_warm_ms : 0;
    double gw_ready = d->fns[d->n].ready_ms;
    json_t *o =
        json_pack("{s:i, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:s, s:f, s:o}", "trial", trial,
                  "total_ms", *total_ms, "ready_ms", ready, "start_ms", cf->ready_ms - load_warm,
                  "load_warm_ms", load_warm, "load_ms", cf->load_ms, "warmup_ms", cf->warmup_ms,
                  "first_inference_ms", *total_ms - ready, "first_client_ms", first_ms,
                  "critical_function", cf->name, "gateway_ready_ms", gw_ready, "functions", fns);
    json_object_set_new(o, "first_sample", s1);
    json_array_append_new(cold, o);
    return 0;
}

/* Marks the start of a CPU window: every function's CPU clock. */
static void read_all(deploy_t *d) {
    d->t_mark = cli_now_ms();
    for (int i = 0; i <= d->n; i++)
        if (si_procstat_read(d->fns[i].pid, &d->fns[i].ps0, NULL) < 0)
            memset(&d->fns[i].ps0, 0, sizeof d->fns[i].ps0);
}

/* CPU seconds of the stage functions (and the gateway) since read_all, each
 * in per_fn[] when not NULL; *wall_s: the window's wall time, from before the
 * first reading to after the last, so it encloses every CPU second counted. */
static double cpu_since(deploy_t *d, int with_gateway, double *per_fn, double *wall_s) {
    double sum = 0;
    for (int i = 0; i < d->n + (with_gateway ? 1 : 0); i++) {
        si_procstat_t now;
        double used = si_procstat_read(d->fns[i].pid, &now, NULL) == 0
                          ? now.cpu_seconds - d->fns[i].ps0.cpu_seconds
                          : 0;
        if (per_fn) per_fn[i] = used;
        sum += used;
    }
    *wall_s = ms_since(d->t_mark) / 1e3;
    return sum;
}

/* CPU seconds as a share of wall x quota, in %. CFS charges a quota per 100 ms
 * period, so a window that is not aligned with the periods can see up to one
 * period's quota more: within that, the share is 100%. */
static double util_pct(double cpu_s, double wall_s, double quota) {
    double u = 100.0 * cpu_s / (wall_s * quota);
    return u > 100 && u <= 100 * (1 + 0.1 / wall_s) ? 100 : u;
}

/* Waits (at most 30 s) until every function has moved its weights to huge
 * pages (splitinfer_stage_weights_hot not 0; stage.h): a function starts the
 * move after its first call, the cold start's, and the warm requests measure
 * the state a function serves in, not the move - which also runs on a second
 * thread, so a one-thread function would show more CPU than wall time. */
static void wait_moved(bench_t *b, deploy_t *d) {
    double t0 = cli_now_ms();
    for (int i = 0; i < d->n; i++)
        /* Until moved, failed (-1), or a stage without the gauge (-1). */
        while (cli_now_ms() - t0 < 30000 &&
               fn_metric(b, &d->fns[i], "splitinfer_stage_weights_hot") == 0)
            usleep(50000);
}

/* N warm requests, one at a time. */
static int warm(bench_t *b, deploy_t *d, run_sum_t *r, json_t *run, double quota) {
    json_t *samples = json_array();
    json_object_set_new(run, "warm", samples);
    double *cl = calloc((size_t)b->n, sizeof *cl), *gwms = calloc((size_t)b->n, sizeof *gwms);
    double *net = calloc((size_t)b->n, sizeof *net), *bytes = calloc((size_t)b->n, sizeof *bytes);
    double per_fn[BP_MAX_FNS + 1];
    int ok = 0, rc = 1;
    if (!cl || !gwms || !net || !bytes) {
        cli_fail("out of memory");
        goto out;
    }
    for (int i = 0; i <= d->n; i++) d->fns[i].busy_s = 0;
    read_all(d);
    /* The host's CPU time and our own, to tell how busy everybody else kept it. */
    si_hoststat_t h0 = {0}, h1 = {0};
    si_procstat_t self0 = {0}, self1 = {0};
    si_procstat_host(&h0, NULL);
    si_procstat_read(getpid(), &self0, NULL);
    double t0 = cli_now_ms();
    for (int i = 0; i < b->n && !g_stop; i++) {
        progress(b, r, "warm", i, b->n);
        const image_t *im = &b->images[i % b->n_images];
        double ms;
        json_t *s = NULL;
        int st = classify(b->c, d->gw_url, im, &ms, &s);
        if (st != 200) {
            r->errors++;
            json_array_append_new(samples, json_pack("{s:i, s:s, s:i, s:f}", "i", i, "image",
                                                     im->name, "status", st, "client_ms", ms));
            continue;
        }
        json_object_set_new(s, "i", json_integer(i));
        cl[ok] = ms;
        gwms[ok] = json_number_value(json_object_get(s, "gateway_ms"));
        net[ok] = json_number_value(json_object_get(s, "network_ms"));
        bytes[ok] = (double)json_integer_value(json_object_get(s, "bytes"));
        json_t *steps = json_object_get(s, "steps");
        for (int f = 0; f < d->n; f++) /* a resident function: every step of its run */
            for (int m = d->fns[f].step; m < d->fns[f].step_end; m++)
                d->fns[f].busy_s +=
                    json_number_value(json_object_get(json_array_get(steps, (size_t)m), "ms")) / 1e3;
        ok++;
        json_array_append_new(samples, s);
    }
    double wall = ms_since(t0) / 1e3;
    progress(b, r, "warm", b->n, b->n);
    if (g_stop) {
        cli_fail("interrupted");
        goto out;
    }
    if (ok == 0) {
        cli_fail("%s %s: every warm request failed", r->runtime, r->plan);
        goto out;
    }
    double cpu_wall, cpu = cpu_since(d, 1, per_fn, &cpu_wall), busy = 0;
    double stage_cpu = cpu - per_fn[d->n];
    si_procstat_host(&h1, NULL);
    si_procstat_read(getpid(), &self1, NULL);
    double other =
        h1.busy_seconds - h0.busy_seconds - cpu - (self1.cpu_seconds - self0.cpu_seconds);
    r->other_cpus = other > 0 ? other / cpu_wall : 0;
    for (int i = 0; i <= d->n; i++) {
        d->fns[i].cpu_s = per_fn[i];
        busy += i < d->n ? d->fns[i].busy_s : 0;
        si_procstat_t now;
        d->fns[i].hwm_warm_mb =
            si_procstat_read(d->fns[i].pid, &now, NULL) == 0 ? (double)now.hwm_bytes / BP_MB : 0;
    }
    r->cpu_util = util_pct(stage_cpu, cpu_wall, quota * d->n);
    /* Of one CPU, not of the quota: CFS lets a 0.35-CPU function run a short
     * call at full speed (up to 35 ms of every 100 ms period), so a ratio to
     * the quota would exceed 100% for exactly the short calls. */
    r->cpu_active = busy > 0 ? 100.0 * stage_cpu / busy : 0;
    r->quota = quota;
    si_stats_summarize(cl, ok, &r->inf, NULL);
    si_stats_summarize(gwms, ok, &r->gw, NULL);
    si_stats_summarize(net, ok, &r->net, NULL);
    si_stats_summarize(bytes, ok, &r->bytes, NULL);
    r->lat = cl, cl = NULL, r->n_lat = ok;
    qsort(r->lat, (size_t)ok, sizeof *r->lat, cmp_double);
    json_object_set_new(run, "warm_window",
                        json_pack("{s:f, s:f, s:f, s:f, s:f, s:f}", "wall_s", wall, "stage_cpu_s",
                                  stage_cpu, "gateway_cpu_s", per_fn[d->n], "stage_busy_s", busy,
                                  "bench_cpu_s", self1.cpu_seconds - self0.cpu_seconds,
                                  "other_cpus", r->other_cpus));
    rc = 0;
out:
    free(cl), free(gwms), free(net), free(bytes);
    return rc;
}

/* ---- throughput: C closed-loop clients ---- */

typedef struct tp_client {
    const bench_t *b;
    const char *url;
    int id;
    double deadline;
    double *lat; /* ms of each answered request */
    int n_lat, cap;
    int errors;
} tp_client_t;

static void *tp_main(void *arg) {
    tp_client_t *t = arg;
    si_httpc_t *c = si_httpc_new();
    for (int j = 0; c && cli_now_ms() < t->deadline && !g_stop; j++) {
        const image_t *im = &t->b->images[(t->id * 7919 + j) % t->b->n_images];
        double ms;
        int st = classify(c, t->url, im, &ms, NULL);
        if (st != 200) {
            t->errors++;
            continue;
        }
        if (t->n_lat == t->cap) {
            int cap = t->cap ? t->cap * 2 : 64;
            double *p = realloc(t->lat, (size_t)cap * sizeof *p);
            if (!p) break;
            t->lat = p, t->cap = cap;
        }
        t->lat[t->n_lat++] = ms;
    }
    if (!c) t->errors++;
    si_httpc_free(c);
    return NULL;
}

/* Requests/s = answered / (start .. the last answer): every client keeps the
 * bottleneck busy from the first request to the drain of the last, so this
 * is its capacity even when a level lasts only a few service times. */
static int throughput(bench_t *b, deploy_t *d, run_sum_t *r, json_t *run, double quota) {
    json_t *levels = json_array();
    json_object_set_new(run, "throughput", levels);
    r->n_conc = b->n_conc;
    for (int k = 0; k < b->n_conc && !g_stop; k++) {
        int cc = b->conc[k];
        progress(b, r, "throughput", k, b->n_conc);
        tp_client_t *ts = calloc((size_t)cc, sizeof *ts);
        pthread_t *th = calloc((size_t)cc, sizeof *th);
        if (!ts || !th) {
            free(ts), free(th);
            return cli_fail("out of memory");
        }
        read_all(d);
        double t0 = cli_now_ms();
        int started = 0;
        for (int i = 0; i < cc; i++) {
            ts[i] =
                (tp_client_t){.b = b, .url = d->gw_url, .id = i, .deadline = t0 + b->seconds * 1e3};
            if (pthread_create(&th[i], NULL, tp_main, &ts[i]) == 0)
                started++;
            else
                break;
        }
        for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
        double el = ms_since(t0) / 1e3, cpu_wall, cpu = cpu_since(d, 0, NULL, &cpu_wall);
        int n = 0, errors = 0;
        for (int i = 0; i < started; i++) n += ts[i].n_lat, errors += ts[i].errors;
        double *all = malloc((size_t)(n ? n : 1) * sizeof *all);
        json_t *lat = json_array();
        n = 0;
        for (int i = 0; i < started && all; i++)
            for (int j = 0; j < ts[i].n_lat; j++) {
                all[n++] = ts[i].lat[j];
                json_array_append_new(lat, json_real(ts[i].lat[j]));
            }
        si_stats_t st = {0};
        if (n) si_stats_summarize(all, n, &st, NULL);
        r->rps[k] = n / el;
        r->conc_p50[k] = st.p50;
        r->errors += errors;
        json_array_append_new(levels,
                              json_pack("{s:i, s:f, s:i, s:i, s:f, s:f, s:f, s:f, s:f, s:o}",
                                        "concurrency", cc, "seconds", el, "requests", n, "errors",
                                        errors + (cc - started), "rps", n / el, "p50_ms", st.p50,
                                        "p95_ms", st.p95, "mean_ms", st.mean, "cpu_util_pct",
                                        util_pct(cpu, cpu_wall, quota * d->n), "latency_ms", lat));
        for (int i = 0; i < cc; i++) free(ts[i].lat);
        free(all), free(ts), free(th);
        if (started < cc) return cli_fail("could not start %d client threads", cc);
    }
    progress(b, r, "throughput", b->n_conc, b->n_conc);
    return g_stop ? cli_fail("interrupted") : 0;
}

/* ---- one runtime x plan ---- */

static json_t *stats_json(const si_stats_t *s) {
    return json_pack("{s:i, s:f, s:f, s:f, s:i, s:f, s:f, s:f, s:f, s:f}", "n", s->n, "mean",
                     s->mean, "mean_excl_outliers", s->mean_trimmed, "sd", s->sd, "outliers",
                     s->n_outliers, "min", s->min, "p50", s->p50, "p95", s->p95, "p99", s->p99,
                     "max", s->max);
}

/* How CPU was capped, read back from the functions' cgroups. */
static void cap_text(const deploy_t *d, const bench_t *b, char *buf, size_t len) {
    const si_cgroupstat_t *cg = &d->fns[0].cg;
    if (d->podman)
        snprintf(buf, len,
                 "podman --cpus %g --memory %s per function (the gateway too); read back from the "
                 "first function's cgroup: CPU quota %.2f, memory limit %.0f MB",
                 b->cpus, b->memory, cg->cpu_quota,
                 cg->mem_limit_bytes > 0 ? (double)cg->mem_limit_bytes / BP_MB : 0);
    else
        snprintf(
            buf, len,
            "not capped: processes on this host's %ld CPUs (cgroup CPU quota %s); each function "
            "computes on one thread, so its quota is taken as 1 CPU",
            sysconf(_SC_NPROCESSORS_ONLN),
            cg->cpu_quota > 0    ? "set"
            : cg->cpu_quota == 0 ? "none"
                                 : "unreadable");
}

static int run_plan(bench_t *b, const char *runtime, const char *plan_arg, run_sum_t *r,
                    json_t *run) {
    char path[PATH_MAX], stepdir[PATH_MAX] = "";
    si_err_t err = {{0}};
    deploy_t *d = calloc(1, sizeof *d);
    si_segment_t *segs = calloc(SI_PLAN_MAX_STEPS, sizeof *segs);
    int rc = 1;
    if (!d || !segs || !(d->procs = calloc(BP_MAX_FNS + 1, sizeof *d->procs))) {
        cli_fail("out of memory");
        goto out;
    }
    d->podman = !strcmp(runtime, "podman");
    if (find_plan(plan_arg, path, sizeof path) < 0) {
        cli_fail("no plan '%s' (looked for plans/%s.json)", plan_arg, plan_arg);
        goto out;
    }
    if (si_plan_load(path, &d->plan, &err) < 0 || si_plan_check(&d->plan, b->g, segs, &err) < 0) {
        cli_fail("%s: %s", path, err.msg);
        goto out;
    }
    snprintf(r->runtime, sizeof r->runtime, "%s", runtime);
    snprintf(r->plan, sizeof r->plan, "%s", d->plan.name);
    r->paper = paper_col(d->plan.name);
    json_object_set_new(run, "runtime", json_string(runtime));
    json_object_set_new(run, "plan", json_string(d->plan.name));
    json_object_set_new(run, "plan_file", json_string(path));
    json_object_set_new(run, "paper_column",
                        r->paper >= 0 ? json_string(paper_cols[r->paper]) : json_null());

    /* Process runtime: each step's weights in its own prepacked file (what a
     * stage image carries), made before the clock starts, like an image build. */
    if (!d->podman) {
        double t = cli_now_ms();
        snprintf(stepdir, sizeof stepdir, "/tmp/splitinfer-bench-XXXXXX");
        if (!mkdtemp(stepdir)) {
            cli_fail("mkdtemp: %s", strerror(errno));
            stepdir[0] = 0;
            goto out;
        }
        progress(b, r, "prepare", 0, d->plan.n_steps);
        for (int i = 0, j; i < d->plan.n_steps; i = j) {
            char f[PATH_MAX + 32], seg[SI_MAX_NAME], steps[LAUNCH_ARG_LEN];
            j = si_plan_resident_end(&d->plan, i); /* a resident run's one file: all its steps */
            si_segment_t u;
            if (launch_run_segment(b->g, &d->plan, i, j, &u, seg, steps, &err) < 0) {
                cli_fail("step %d (%s): %s", i, d->plan.steps[i].segment, err.msg);
                goto out;
            }
            snprintf(f, sizeof f, "%s/step%d.sfm", stepdir, i);
            if (launch_write_step(b->g, &u, f, &err) < 0) {
                cli_fail("step %d (%s): %s", i, d->plan.steps[i].segment, err.msg);
                goto out;
            }
        }
        json_object_set_new(run, "prepare_ms", json_real(ms_since(t)));
    }

    /* 1. cold starts */
    json_t *cold = json_array();
    json_object_set_new(run, "cold", cold);
    double *totals = calloc((size_t)b->cold, sizeof *totals);
    if (!totals) goto out;
    double s_start = 0, s_load = 0, s_first = 0;
    for (int k = 0; k < b->cold; k++) {
        progress(b, r, "cold start", k, b->cold);
        if (k > 0) deploy_stop(b, d);
        if (cold_start(b, d, r, k, stepdir, cold, &totals[k])) {
            free(totals);
            goto out;
        }
        json_t *c = json_array_get(cold, (size_t)k);
        s_start += json_number_value(json_object_get(c, "start_ms"));
        s_load += json_number_value(json_object_get(c, "load_warm_ms"));
        s_first += json_number_value(json_object_get(c, "first_inference_ms"));
    }
    progress(b, r, "cold start", b->cold, b->cold);
    si_stats_summarize(totals, b->cold, &r->cold, NULL);
    free(totals);
    r->cold_start_ms = s_start / b->cold, r->cold_load_ms = s_load / b->cold;
    r->cold_first_ms = s_first / b->cold;
    if (deploy_pids(d)) goto out;
    r->n_fns = d->n;

    /* 2. warm requests, 3. throughput */
    double quota = d->podman ? b->cpus : 1.0;
    wait_moved(b, d);
    if (warm(b, d, r, run, quota) || throughput(b, d, r, run, quota)) goto out;

    /* Memory and cgroups at the end. */
    json_t *fns = json_array();
    r->mem_sum = r->mem_max = r->mem_sum_end = 0;
    for (int i = 0; i <= d->n; i++) {
        fn_t *f = &d->fns[i];
        si_procstat_t now;
        f->hwm_end_mb =
            si_procstat_read(f->pid, &now, NULL) == 0 ? (double)now.hwm_bytes / BP_MB : 0;
        /* A peak is the largest seen: the kernel's VmHWM can read lower later,
         * after pages went by MADV_DONTNEED (a stage moving its weights to
         * huge pages drops the mapping's), which does not record the peak. */
        if (f->hwm_end_mb < f->hwm_warm_mb) f->hwm_end_mb = f->hwm_warm_mb;
        si_cgroup_read(f->pid, "/sys/fs/cgroup", &f->cg, NULL);
        if (i < d->n) {
            r->mem_sum += f->hwm_warm_mb, r->mem_sum_end += f->hwm_end_mb;
            if (f->hwm_warm_mb > r->mem_max) {
                r->mem_max = f->hwm_warm_mb;
                snprintf(r->mem_max_fn, sizeof r->mem_max_fn, "%s (%s)", f->name, f->segment);
            }
        } else {
            r->mem_gw = f->hwm_warm_mb;
        }
        json_t *o =
            json_pack("{s:s, s:i, s:s, s:i, s:i, s:f, s:f, s:f, s:f, s:f}", "name", f->name, "pid",
                      (int)f->pid, "segment", f->step < 0 ? "" : f->segment, "step", f->step,
                      "band", f->band, "cpu_s", f->cpu_s, "busy_s", f->busy_s, "peak_rss_mb",
                      f->hwm_warm_mb, "peak_rss_end_mb", f->hwm_end_mb, "quota_cpus", quota);
        json_object_set_new(
            o, "cgroup",
            json_pack("{s:f, s:f, s:f, s:f}", "cpu_quota", f->cg.cpu_quota, "cpu_s",
                      f->cg.cpu_seconds, "mem_limit_mb",
                      f->cg.mem_limit_bytes > 0 ? (double)f->cg.mem_limit_bytes / BP_MB
                                                : (double)f->cg.mem_limit_bytes,
                      "mem_peak_mb",
                      f->cg.mem_peak_bytes > 0 ? (double)f->cg.mem_peak_bytes / BP_MB
                                               : (double)f->cg.mem_peak_bytes));
        if (d->podman) json_object_set_new(o, "image", json_string(f->image));
        json_array_append_new(fns, o);
    }
    json_object_set_new(run, "functions", fns);
    char cap[512];
    cap_text(d, b, cap, sizeof cap);
    json_object_set_new(run, "cpu_cap", json_string(cap));

    json_t *tp = json_object();
    for (int k = 0; k < r->n_conc; k++) {
        char key[16];
        snprintf(key, sizeof key, "%d", b->conc[k]);
        json_object_set_new(tp, key, json_real(r->rps[k]));
    }
    json_t *sum = json_object();
    json_object_set_new(sum, "functions", json_integer(d->n));
    json_object_set_new(sum, "inference_ms", stats_json(&r->inf));
    json_object_set_new(sum, "gateway_ms", stats_json(&r->gw));
    json_object_set_new(sum, "cold_start_ms", stats_json(&r->cold));
    json_object_set_new(sum, "cold_start_split_ms",
                        json_pack("{s:f, s:f, s:f}",
                                  d->podman ? "container_start" : "process_start", r->cold_start_ms,
                                  "load_warmup", r->cold_load_ms, "first_inference",
                                  r->cold_first_ms));
    json_object_set_new(sum, "cpu_util_pct", json_real(r->cpu_util));
    json_object_set_new(sum, "cpu_busy_while_invoked_pct", json_real(r->cpu_active));
    json_object_set_new(sum, "cpu_quota_per_function", json_real(quota));
    json_object_set_new(sum, "memory_mb",
                        json_pack("{s:f, s:f, s:s, s:f, s:f}", "sum", r->mem_sum, "max", r->mem_max,
                                  "max_function", r->mem_max_fn, "gateway", r->mem_gw, "sum_end",
                                  r->mem_sum_end));
    json_object_set_new(sum, "network_ms", stats_json(&r->net));
    json_object_set_new(sum, "bytes_per_image", json_real(r->bytes.mean));
    json_object_set_new(sum, "throughput_rps", tp);
    json_object_set_new(sum, "errors", json_integer(r->errors));
    json_object_set_new(run, "summary", sum);
    r->ok = 1;
    rc = 0;
out:
    if (d) deploy_stop(b, d);
    if (stepdir[0]) {
        for (int i = 0; i < SI_PLAN_MAX_STEPS; i++) {
            char f[PATH_MAX + 32];
            snprintf(f, sizeof f, "%s/step%d.sfm", stepdir, i);
            unlink(f);
        }
        rmdir(stepdir);
    }
    if (d) free(d->procs);
    free(d), free(segs);
    return rc;
}

/* ---- output: the table ---- */

/* "ours (paper)" for a metric the paper has, "ours" otherwise. */
static void cell(FILE *f, double ours, int ok, int paper, const double *paper_vals,
                 const char *fmt) {
    fputs(" | ", f);
    if (ok)
        fprintf(f, fmt, ours);
    else
        fputs("—", f);
    if (paper >= 0 && paper_vals) {
        fputs(" (", f);
        fprintf(f, paper_vals[paper] >= 100 ? "%.0f" : "%.1f", paper_vals[paper]);
        fputs(")", f);
    }
}

static void table_runtime(const bench_t *b, FILE *f, const char *runtime, const char *cap) {
    const run_sum_t *rs[BP_MAX_RUNS];
    int n = 0;
    for (int i = 0; i < b->n_sums; i++)
        if (!strcmp(b->sums[i].runtime, runtime)) rs[n++] = &b->sums[i];
    if (!n) return;
    fprintf(f, "### %s runtime\n\n", runtime);
    fprintf(f, "%s.\n\n", cap);
    fprintf(f, "Each cell: ours (the paper's Table 1, where it has the metric).\n\n| metric");
    for (int i = 0; i < n; i++) fprintf(f, " | %s", rs[i]->plan);
    fputs(" |\n|---", f);
    for (int i = 0; i < n; i++) fputs("|---:", f);
    fputs("|\n| paper's scheme", f);
    for (int i = 0; i < n; i++)
        fprintf(f, " | %s", rs[i]->paper >= 0 ? paper_cols[rs[i]->paper] : "—");
    fputs(" |\n| functions (+ gateway)", f);
    for (int i = 0; i < n; i++) fprintf(f, " | %d", rs[i]->n_fns);
#define ROW(title, expr, paper_vals, fmt)                                                          \
    do {                                                                                           \
        fputs(" |\n| " title, f);                                                                  \
        for (int i = 0; i < n; i++) {                                                              \
            const run_sum_t *r = rs[i];                                                            \
            cell(f, (expr), r->ok, r->paper, paper_vals, fmt);                                     \
        }                                                                                          \
    } while (0)
    ROW("**average inference time (ms)**, outliers excluded", r->inf.mean_trimmed,
        paper_inference_ms, "%.1f");
    fputs(" |\n| inference p50 / p95 / p99 (ms)", f);
    for (int i = 0; i < n; i++) {
        if (rs[i]->ok)
            fprintf(f, " | %.1f / %.1f / %.1f", rs[i]->inf.p50, rs[i]->inf.p95, rs[i]->inf.p99);
        else
            fputs(" | —", f);
    }
    ROW("· of which the plan at the gateway (ms)", r->gw.mean_trimmed, (const double *)NULL,
        "%.1f");
    ROW("**cold start (ms)**, start to first answer", r->cold.mean_trimmed, paper_cold_ms, "%.0f");
    ROW(" · process / container start (ms)", r->cold_start_ms, (const double *)NULL, "%.0f");
    ROW(" · weight load + warm-up (ms)", r->cold_load_ms, (const double *)NULL, "%.0f");
    ROW(" · first inference (ms)", r->cold_first_ms, (const double *)NULL, "%.0f");
    ROW("**CPU utilization (%)**: CPU s / (wall x quota of all functions)", r->cpu_util,
        paper_cpu_pct, "%.1f");
    ROW("CPU busy while invoked (% of one CPU)", r->cpu_active, (const double *)NULL, "%.1f");
    ROW("**memory (MB)**: sum of the functions' peak RSS", r->mem_sum, paper_mem_mb, "%.1f");
    ROW("· largest function (MB)", r->mem_max, (const double *)NULL, "%.1f");
    ROW("· gateway (MB)", r->mem_gw, (const double *)NULL, "%.1f");
    ROW("**network latency (ms)** per image, summed over hops", r->net.mean_trimmed, paper_net_ms,
        "%.2f");
    ROW("bytes moved per image (MB)", r->bytes.mean / BP_MB, (const double *)NULL, "%.2f");
    ROW("other jobs on this host during the warm requests (CPUs busy)", r->other_cpus,
        (const double *)NULL, "%.2f");
#undef ROW
    fputs(" |\n| throughput (requests/s) at concurrency", f);
    for (int k = 0; k < b->n_conc; k++) fprintf(f, "%s%d", k ? "/" : " ", b->conc[k]);
    for (int i = 0; i < n; i++) {
        fputs(" | ", f);
        for (int k = 0; k < b->n_conc; k++)
            if (rs[i]->ok) fprintf(f, "%s%.1f", k ? " / " : "", rs[i]->rps[k]);
        if (!rs[i]->ok) fputs("—", f);
    }
    fputs(" |\n| failed requests", f);
    for (int i = 0; i < n; i++) fprintf(f, " | %d", rs[i]->errors);
    fputs(" |\n\n", f);
}

static char *make_table(const bench_t *b, const char *caps[], const char *runtimes[], int n_rt,
                        const char *loadavg0, const char *loadavg1, double minutes) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return NULL;
    fprintf(f, "## splitinfer bench --plans: Table 1 of the paper, measured\n\n");
    fprintf(f,
            "Model `%s`; %d warm requests per plan, one at a time, over %d PNGs of `%s`; %d cold "
            "starts; throughput: closed loop, %d s per concurrency level. Host: %ld CPUs, load "
            "average %s at the start, %s at the end (other jobs share this machine: absolute "
            "times are noisy); %.1f minutes in all. Functions ready after %d warm-up run%s "
            "(stage --warmup-runs).\n\n",
            b->o.model, b->n, b->n_images, b->o.images, b->cold, b->seconds,
            sysconf(_SC_NPROCESSORS_ONLN), loadavg0, loadavg1, minutes,
            b->o.warmup_runs < 0 ? 0 : b->o.warmup_runs, b->o.warmup_runs == 1 ? "" : "s");
    for (int i = 0; i < n_rt; i++) table_runtime(b, f, runtimes[i], caps[i]);
    fprintf(f,
            "How each figure is measured (details and every sample in results.json):\n\n"
            "- inference time: client round trip of POST /v1/classify (PNG upload, decode and "
            "preprocessing at the gateway, the plan, the answer); the average leaves out Tukey "
            "outliers (outside 1.5 IQR), as the paper averages \"excluding all outliers\".\n"
            "- cold start: every function and the gateway started at once; until each stage "
            "answers /readyz and the gateway /healthz, then the first classify. Split along the "
            "function ready last: start = its ready time minus its own "
            "splitinfer_model_load_seconds (exec, dynamic loading, container setup, polling), "
            "load + warm-up = that gauge, first inference = the first classify. Step files "
            "(process) and images (podman) are made beforehand and sit in the page cache.\n"
            "- CPU utilization: CPU time of the stage functions (each process's CPU clock, "
            "utime + stime in ns) over the warm requests, divided by wall time x (functions x "
            "quota): the share of the CPU "
            "reserved for the plan that it used. \"Busy while invoked\" divides by the functions' "
            "busy time instead (each one's step round trips at the gateway), the time a "
            "serverless platform bills; it is a share of one CPU, not of the quota, because CFS "
            "lets a capped function run a short call at full speed.\n"
            "- memory: peak resident set (VmHWM) of each stage function after the warm requests, "
            "weights included; the gateway is listed apart (the paper's plans have none).\n"
            "- network latency: the gateway's network_ms, per hop its round trip minus the time "
            "the stage reports for itself, summed over the hops of one image.\n"
            "- 1 MB = 2^20 bytes.\n");
    fclose(f);
    return text;
}

/* ---- output: charts ---- */

static int write_file(const char *dir, const char *name, const char *text, size_t len) {
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    int ok = f && fwrite(text, 1, len, f) == len;
    if (f && fclose(f) != 0) ok = 0;
    return ok ? 0 : cli_fail("%s: cannot write", path);
}

static int write_svg(const char *dir, const char *name, si_svg_t *s) {
    size_t len;
    char *text = si_svg_finish(s, &len);
    if (!text) return cli_fail("%s: out of memory", name);
    int rc = write_file(dir, name, text, len);
    free(text);
    return rc;
}

/* Unique plan names in order of first appearance; runtimes likewise. */
static int uniq(const bench_t *b, int plans, const char **out) {
    int n = 0;
    for (int i = 0; i < b->n_sums; i++) {
        const char *v = plans ? b->sums[i].plan : b->sums[i].runtime;
        int seen = 0;
        for (int j = 0; j < n; j++) seen |= !strcmp(out[j], v);
        if (!seen) out[n++] = v;
    }
    return n;
}

static const run_sum_t *find_sum(const bench_t *b, const char *rt, const char *plan) {
    for (int i = 0; i < b->n_sums; i++)
        if (!strcmp(b->sums[i].runtime, rt) && !strcmp(b->sums[i].plan, plan) && b->sums[i].ok)
            return &b->sums[i];
    return NULL;
}

static int charts(const bench_t *b) {
    const char *plans[BP_MAX_RUNS], *rts[BP_MAX_RUNS];
    int np = uniq(b, 1, plans), nr = uniq(b, 0, rts);
    if (!np) return 0;
    /* metrics.svg: the five metrics of Table 1 and the throughput, ours beside the paper. */
    const char *series[BP_MAX_RUNS + 1], *colors[BP_MAX_RUNS + 1];
    for (int i = 0; i < nr; i++) series[i] = rts[i], colors[i] = si_svg_color(i);
    series[nr] = "paper", colors[nr] = "#9a9a9a";
    static const char *titles[6] = {
        "Average inference time",    "Cold start",
        "CPU utilization",           "Memory (sum of functions)",
        "Network latency per image", "Throughput at the highest concurrency"};
    static const char *units[6] = {"ms", "ms", "% of the quota", "MB", "ms", "requests/s"};
    const double *paper[6] = {paper_inference_ms, paper_cold_ms, paper_cpu_pct,
                              paper_mem_mb,       paper_net_ms,  NULL};
    si_svg_t *s = si_svg_new(1200, 640, "splitinfer plans against the paper's Table 1");
    if (!s) return cli_fail("out of memory");
    double *vals = malloc(sizeof *vals * (size_t)((nr + 1) * np));
    for (int m = 0; m < 6 && vals; m++) {
        for (int k = 0; k <= nr; k++)
            for (int g = 0; g < np; g++) {
                double v = NAN;
                if (k == nr) {
                    int pc = paper_col(plans[g]);
                    if (paper[m] && pc >= 0) v = paper[m][pc];
                } else {
                    const run_sum_t *r = find_sum(b, rts[k], plans[g]);
                    if (r) {
                        double mv[6] = {
                            r->inf.mean_trimmed, r->cold.mean_trimmed,
                            r->cpu_util,         r->mem_sum,
                            r->net.mean_trimmed, r->n_conc ? r->rps[r->n_conc - 1] : NAN};
                        v = mv[m];
                    }
                }
                vals[k * np + g] = v;
            }
        si_svg_bars_t c = {.title = titles[m],
                           .unit = units[m],
                           .n_groups = np,
                           .groups = plans,
                           .n_series = nr + 1,
                           .series = series,
                           .values = vals,
                           .colors = colors,
                           .value_labels = 1};
        si_svg_bar_chart(s, (si_svg_box_t){(m % 3) * 400.0, (m / 3) * 320.0, 400, 320}, &c);
    }
    free(vals);
    if (write_svg(b->out, "metrics.svg", s)) return 1;

    /* latency.svg: the CDF of the warm inference times, a panel per runtime. */
    s = si_svg_new(620.0 * nr, 380, "Inference time, warm requests: cumulative distribution");
    for (int k = 0; s && k < nr; k++) {
        const double *xs[BP_MAX_RUNS], *ys[BP_MAX_RUNS];
        double *own[BP_MAX_RUNS] = {0};
        int npts[BP_MAX_RUNS];
        for (int g = 0; g < np; g++) {
            const run_sum_t *r = find_sum(b, rts[k], plans[g]);
            npts[g] = r ? r->n_lat : 0;
            own[g] = calloc((size_t)(npts[g] ? npts[g] : 1), sizeof(double));
            for (int i = 0; i < npts[g] && own[g]; i++) own[g][i] = (i + 1.0) / npts[g];
            if (!own[g]) npts[g] = 0;
            xs[g] = r ? r->lat : NULL, ys[g] = own[g];
        }
        char title[96];
        snprintf(title, sizeof title, "%s runtime", rts[k]);
        si_svg_lines_t c = {.title = title,
                            .x_label = "inference time (ms), client round trip",
                            .y_label = "fraction of requests",
                            .steps = 1,
                            .y_min = 0,
                            .y_max = 1,
                            .n_series = np,
                            .series = plans,
                            .n_points = npts,
                            .xs = xs,
                            .ys = ys};
        si_svg_line_chart(s, (si_svg_box_t){620.0 * k, 0, 620, 380}, &c);
        for (int g = 0; g < np; g++) free(own[g]);
    }
    if (!s || write_svg(b->out, "latency.svg", s)) return 1;

    /* throughput.svg: requests/s against concurrency, a panel per runtime. */
    s = si_svg_new(620.0 * nr, 380, "Throughput against concurrency (closed loop)");
    double cx[BP_MAX_CONC];
    for (int k = 0; k < b->n_conc; k++) cx[k] = b->conc[k];
    for (int k = 0; s && k < nr; k++) {
        const double *xs[BP_MAX_RUNS], *ys[BP_MAX_RUNS];
        int npts[BP_MAX_RUNS];
        for (int g = 0; g < np; g++) {
            const run_sum_t *r = find_sum(b, rts[k], plans[g]);
            npts[g] = r ? r->n_conc : 0;
            xs[g] = cx, ys[g] = r ? r->rps : NULL;
        }
        char title[96];
        snprintf(title, sizeof title, "%s runtime", rts[k]);
        si_svg_lines_t c = {.title = title,
                            .x_label = "concurrent clients",
                            .y_label = "requests/s",
                            .log2_x = 1,
                            .markers = 1,
                            .n_series = np,
                            .series = plans,
                            .n_points = npts,
                            .xs = xs,
                            .ys = ys};
        si_svg_line_chart(s, (si_svg_box_t){620.0 * k, 0, 620, 380}, &c);
    }
    if (!s || write_svg(b->out, "throughput.svg", s)) return 1;
    return 0;
}

/* ---- setup ---- */

/* Creates the network b->net names, with or without its DNS; on failure
 * clears b->net (nothing to remove) and returns 1 after printing why. */
static int podman_net_create(bench_t *b, const char *log, int dns) {
    if (shell(log, "podman network create %s'%s'", dns ? "" : "--disable-dns ", b->net) == 0)
        return 0;
    b->net[0] = 0;
    return cli_fail("podman network create failed (see %s)", log);
}

/* podman: its configuration (runc, per ENVIRONMENT.md), the images of every
 * plan, our network. 1 after printing why not. */
static int podman_setup(bench_t *b, char **plans, int n_plans) {
    char log[PATH_MAX + 32];
    snprintf(log, sizeof log, "%s/logs/podman-setup.log", b->out);
    if (!getenv("CONTAINERS_CONF")) {
        /* crun fails on this cgroup v1 hybrid host; runc works. */
        char conf[PATH_MAX + 32];
        snprintf(conf, sizeof conf, "%s/work/containers.conf", b->out);
        FILE *f = fopen(conf, "w");
        if (!f) return cli_fail("%s: %s", conf, strerror(errno));
        fputs("[containers]\ndefault_ulimits = []\n[engine]\nruntime = \"runc\"\n", f);
        fclose(f);
        setenv("CONTAINERS_CONF", conf, 1);
    }
    if (shell(log, "podman --version") != 0)
        return cli_fail("--runtime podman: podman does not run here (apt-get install podman runc; "
                        "see %s)",
                        log);
    const char *pre = getenv("SPLITINFER_IMAGE_PREFIX"), *tag = getenv("SPLITINFER_IMAGE_TAG");
    snprintf(b->prefix, sizeof b->prefix, "%s", pre && *pre ? pre : "localhost/splitinfer");
    snprintf(b->tag, sizeof b->tag, "%s", tag && *tag ? tag : "latest");
    char missing[2048] = "", which[512] = "";
    size_t ml = 0, wl = 0;
    for (int i = 0; i < n_plans; i++) {
        char path[PATH_MAX], img[256], slug[SI_MAX_NAME];
        si_plan_t *p = malloc(sizeof *p);
        if (!p || find_plan(plans[i], path, sizeof path) < 0 || si_plan_load(path, p, NULL) < 0) {
            free(p);
            continue; /* reported by run_plan */
        }
        if (p->resident) { /* no image holds a resident run's steps (k8s/images.sh) */
            free(p);
            return cli_fail("--runtime podman: %s is a resident plan, whose functions hold several "
                            "steps, which make images does not lay out yet: run it with --runtime "
                            "process", plans[i]);
        }
        int miss = 0;
        for (int s = 0; s <= p->n_steps; s++) {
            if (s < p->n_steps) {
                segment_slug(p->steps[s].segment, slug, sizeof slug);
                if (snprintf(img, sizeof img, "%s-stage-%s:%s", b->prefix, slug, b->tag) >=
                    (int)sizeof img)
                    continue;
            } else {
                snprintf(img, sizeof img, "%s-gateway:%s", b->prefix, b->tag);
            }
            if (shell(log, "podman image exists '%s'", img) != 0 && !strstr(missing, img)) {
                ml += (size_t)snprintf(missing + ml, ml < sizeof missing ? sizeof missing - ml : 0,
                                       "\n  %s", img);
                miss = 1;
            }
        }
        if (miss && wl < sizeof which)
            wl += (size_t)snprintf(which + wl, sizeof which - wl, "%s%s", wl ? " " : "", p->name);
        free(p);
    }
    if (missing[0])
        return cli_fail("--runtime podman: these images are missing:%s\nbuild them with "
                        "`make images PLAN=NAME` (k8s/images.sh) for each of: %s",
                        missing, which);
    snprintf(b->net, sizeof b->net, "splitinfer-bench-%d", (int)getpid());
    /* Without DNS: functions find each other by address (see deploy_start), and
     * aardvark-dns would cost every container start a reload. */
    if (podman_net_create(b, log, 0)) return 1;
    char cmd[256];
    snprintf(cmd, sizeof cmd, "podman network inspect '%s' --format '{{range .Subnets}}{{.Subnet}} {{end}}'",
             b->net);
    FILE *p = popen(cmd, "r");
    unsigned a, c, d, e, bits;
    if (p && fscanf(p, "%u.%u.%u.%u/%u", &a, &c, &d, &e, &bits) == 5 && a < 256 && c < 256 &&
        d < 256 && bits >= 8 && bits <= 24)
        snprintf(b->net_base, sizeof b->net_base, "%u.%u.%u", a, c, d);
    if (p) pclose(p);
    if (!b->net_base[0]) { /* no address plan: by name, which needs the network's DNS */
        shell(log, "podman network rm -f '%s'", b->net);
        if (podman_net_create(b, log, 1)) return 1;
    }
    return 0;
}

static int mkdir_p(const char *dir) {
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", dir);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(tmp, 0755) < 0 && errno != EEXIST) return -1;
            *p = '/';
        }
    return mkdir(tmp, 0755) < 0 && errno != EEXIST ? -1 : 0;
}

static const char *usage =
    "usage: splitinfer bench --plans baseline,pipeline,blocks,parallel -m MODEL --images DIR\n"
    "       [-n 100] [--runtime process|podman|process,podman] [--cpus 0.35] [--memory 512m]\n"
    "       [--concurrency 1,4,16] [--cold 5] [--seconds 5] [--warmup-runs 0] [--out DIR]";

int si_cmd_bench_plans(int argc, char **argv) {
    bench_t *b = calloc(1, sizeof *b);
    if (!b) return cli_fail("out of memory");
    int rc = 1, n_plans = 0, n_rt = 0;
    char *plans[BP_MAX_RUNS] = {0};
    const char *runtimes[4] = {0}, *caps[4] = {0};
    char capbuf[4][512] = {{0}}, la0[64], la1[64];
    json_t *root = NULL;
    if (cli_parse(argc, argv, "mnlIRCMcDOSU", &b->o)) {
        free(b);
        return 1;
    }
    cli_opts_t *o = &b->o;
    b->n = 100;
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "-n")) b->n = o->n; /* cli's own default (20) is for plain bench */
    b->cold = o->cold > 0 ? o->cold : 5;
    b->seconds = o->seconds > 0 ? o->seconds : 5;
    b->n_conc =
        parse_ints(o->concurrency ? o->concurrency : "1,4,16", b->conc, BP_MAX_CONC, 1, 256);
    b->cpus = o->cpus ? atof(o->cpus) : 0.35;
    b->memory = o->memory ? o->memory : "512m";
    b->tty = isatty(2);
    b->t_start = cli_now_ms();
    if (o->n_args || !o->plans || !o->images) {
        cli_fail("%s", usage);
        goto out;
    }
    if (!o->model) {
        cli_fail("no model: pass -m MODEL or set SPLITINFER_MODEL");
        goto out;
    }
    if (b->n_conc < 1) {
        cli_fail("--concurrency wants a list of integers in 1..256, like 1,4,16");
        goto out;
    }
    if (!(b->cpus > 0 && b->cpus <= 64)) {
        cli_fail("--cpus wants a number of CPUs in (0, 64], like 0.35");
        goto out;
    }
    const char *sp = o->runtime ? o->runtime : "process";
    char item[PATH_MAX];
    while (next_item(&sp, item, sizeof item)) {
        if (n_rt == 2 || (strcmp(item, "process") && strcmp(item, "podman"))) {
            cli_fail("--runtime wants process, podman or process,podman; got '%s'", o->runtime);
            goto out;
        }
        runtimes[n_rt++] = !strcmp(item, "process") ? "process" : "podman";
    }
    sp = o->plans;
    while (n_plans < BP_MAX_RUNS && next_item(&sp, item, sizeof item))
        plans[n_plans++] = strdup(item);
    if (!n_plans || n_plans * n_rt > BP_MAX_RUNS) {
        cli_fail("--plans wants 1..%d plan names", BP_MAX_RUNS / n_rt);
        goto out;
    }
    const char *out = o->out ? o->out : "bench-plans-out";
    char sub[PATH_MAX + 16];
    snprintf(sub, sizeof sub, "%s/logs", out);
    int made = mkdir_p(sub);
    snprintf(sub, sizeof sub, "%s/work", out);
    if (made < 0 || mkdir_p(sub) < 0 || !realpath(out, b->out)) {
        cli_fail("--out %s: %s", out, strerror(errno));
        goto out;
    }
    if (load_images(b, o->images)) goto out;
    si_err_t err = {{0}};
    si_engine_set_threads(1);
    if (!(b->g = si_model_load(o->model, &err))) {
        cli_fail("%s", err.msg);
        goto out;
    }
    for (int i = 0; i < n_rt; i++)
        if (!strcmp(runtimes[i], "podman") && podman_setup(b, plans, n_plans)) goto out;
    if (!(b->c = si_httpc_new())) {
        cli_fail("out of memory");
        goto out;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL), sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    loadavg(la0, sizeof la0);

    root = json_object();
    b->runs = json_array();
    b->n_runs = n_plans * n_rt;
    for (int k = 0; k < n_rt; k++)
        for (int i = 0; i < n_plans && !g_stop; i++) {
            run_sum_t *r = &b->sums[b->n_sums++];
            snprintf(r->runtime, sizeof r->runtime, "%s", runtimes[k]);
            snprintf(r->plan, sizeof r->plan, "%s", plans[i]);
            json_t *run = json_object();
            json_array_append_new(b->runs, run);
            double t = cli_now_ms();
            char l0[64], l1[64];
            loadavg(l0, sizeof l0);
            int failed = run_plan(b, runtimes[k], plans[i], r, run);
            loadavg(l1, sizeof l1);
            json_object_set_new(run, "elapsed_s", json_real(ms_since(t) / 1e3));
            json_object_set_new(run, "loadavg_start", json_string(l0));
            json_object_set_new(run, "loadavg_end", json_string(l1));
            if (r->ok) {
                json_t *cc = json_object_get(run, "cpu_cap");
                if (!caps[k] && cc)
                    snprintf(capbuf[k], sizeof capbuf[k], "%s", json_string_value(cc)),
                        caps[k] = capbuf[k];
                note(b,
                     "%s %s: %.1f ms warm (p50 %.1f), cold %.0f ms, CPU %.1f%%, memory %.1f MB, "
                     "network %.2f ms, %.0f s",
                     r->runtime, r->plan, r->inf.mean_trimmed, r->inf.p50, r->cold.mean_trimmed,
                     r->cpu_util, r->mem_sum, r->net.mean_trimmed, ms_since(t) / 1e3);
            }
            b->run_idx++;
            if (failed) goto results; /* keep what was measured */
        }
    rc = g_stop ? 1 : 0;
results:
    loadavg(la1, sizeof la1);
    for (int k = 0; k < n_rt; k++)
        if (!caps[k]) caps[k] = "(no plan finished)";
    {
        json_t *conc = json_array();
        for (int k = 0; k < b->n_conc; k++) json_array_append_new(conc, json_integer(b->conc[k]));
        json_t *rts = json_array(), *pl = json_array();
        for (int k = 0; k < n_rt; k++) json_array_append_new(rts, json_string(runtimes[k]));
        for (int i = 0; i < n_plans; i++) json_array_append_new(pl, json_string(plans[i]));
        json_object_set_new(
            root, "settings",
            json_pack("{s:s, s:s, s:i, s:i, s:i, s:i, s:o, s:o, s:o, s:f, s:s, s:i, s:i}", "model",
                      o->model, "images", o->images, "n_images", b->n_images, "n", b->n, "cold",
                      b->cold, "seconds", b->seconds, "concurrency", conc, "runtimes", rts, "plans",
                      pl, "podman_cpus", b->cpus, "podman_memory", b->memory, "plan_timeout_ms",
                      BP_PLAN_TIMEOUT_MS, "warmup_runs", o->warmup_runs < 0 ? 0 : o->warmup_runs));
        json_object_set_new(root, "host",
                            json_pack("{s:i, s:s, s:s}", "cpus", (int)sysconf(_SC_NPROCESSORS_ONLN),
                                      "loadavg_start", la0, "loadavg_end", la1));
        json_t *paper = json_object();
        for (int c = 0; c < 3; c++)
            json_object_set_new(paper, paper_cols[c],
                                json_pack("{s:f, s:f, s:f, s:f, s:f}", "inference_ms",
                                          paper_inference_ms[c], "cold_start_ms", paper_cold_ms[c],
                                          "cpu_util_pct", paper_cpu_pct[c], "memory_mb",
                                          paper_mem_mb[c], "network_ms", paper_net_ms[c]));
        json_object_set_new(root, "paper_table1", paper);
        json_object_set_new(root, "elapsed_s", json_real(ms_since(b->t_start) / 1e3));
        json_object_set_new(root, "complete", json_boolean(rc == 0));
        json_object_set_new(root, "runs", b->runs);
        b->runs = NULL;
        char path[PATH_MAX + 32];
        snprintf(path, sizeof path, "%s/results.json", b->out);
        if (json_dump_file(root, path,
                           JSON_INDENT(1) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10)) < 0) {
            cli_fail("%s: cannot write", path);
            rc = 1;
        }
    }
    if (b->n_sums) {
        char *table = make_table(b, caps, runtimes, n_rt, la0, la1, ms_since(b->t_start) / 6e4);
        if (b->tty) fputs("\r\033[K", stderr);
        if (table) {
            fputs(table, stdout);
            fflush(stdout);
            if (write_file(b->out, "table.md", table, strlen(table))) rc = 1;
            free(table);
        }
        if (charts(b)) rc = 1;
        note(b,
             "results in %s (results.json, table.md, metrics.svg, latency.svg, throughput.svg), "
             "%.1f minutes",
             b->out, ms_since(b->t_start) / 6e4);
    }
out:
    if (b->live) deploy_stop(b, b->live);
    if (b->net[0]) {
        char log[PATH_MAX + 32];
        snprintf(log, sizeof log, "%s/logs/podman-setup.log", b->out);
        shell(log, "podman network rm -f '%s'", b->net);
    }
    json_decref(root), json_decref(b->runs);
    for (int i = 0; i < n_plans; i++) free(plans[i]);
    for (int i = 0; i < b->n_sums; i++) free(b->sums[i].lat);
    for (int i = 0; i < b->n_images; i++) free(b->images[i].png);
    free(b->images);
    si_httpc_free(b->c);
    si_graph_free(b->g);
    free(b->o.args);
    free(b);
    return rc;
}
