/* up.c - splitinfer up: the local runtime. Starts every function of a plan as
 * a process on a free loopback port (one per band of a banded step), waits
 * until all are ready, starts the gateway, prints its URL, restarts a
 * function that dies, and on SIGINT/SIGTERM stops them all and exits 0.
 *
 * Each step's weights are cut into their own prepacked .sfm first (what a
 * stage image carries), so a function maps only its segment's weights. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "httpc.h"
#include "modelfile.h"
#include "plan.h"
#include "serve.h"

#define UP_MAX_PROCS (SI_PLAN_MAX_STEPS * 4 + 1)
#define UP_READY_TIMEOUT_MS 120000 /* functions load and warm up in well under this */

typedef struct proc {
    char name[48];
    char *argv[20];
    char args[20][SI_PLAN_MAX_URL + 32];
    int argc;
    int port;
    pid_t pid;
    int restarts;
} proc_t;

/* A free loopback port: bind port 0, read it, close. Another process could
 * take it in between; the stage then fails to bind and is restarted on the
 * same port, which shows in the log. Good enough for one machine. */
static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0) close(fd);
    return port;
}

/* Appends an argument (cut to the slot's size: our own paths and numbers). */
static void proc_arg(proc_t *p, const char *v) {
    size_t n = strlen(v);
    if (n >= sizeof p->args[0]) n = sizeof p->args[0] - 1;
    memcpy(p->args[p->argc], v, n);
    p->args[p->argc][n] = 0;
    p->argv[p->argc] = p->args[p->argc];
    p->argv[++p->argc] = NULL;
}

static int spawn(proc_t *p) {
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL); /* children handle their own signals */
        execv("/proc/self/exe", p->argv);
        _exit(127);
    }
    p->pid = pid;
    return 0;
}

/* Polls url until it answers 200 or timeout_ms passes; gives up early when
 * the process died. */
static int wait_ok(si_httpc_t *c, const char *url, const proc_t *p, int timeout_ms) {
    double t0 = cli_now_ms();
    while (cli_now_ms() - t0 < timeout_ms) {
        si_httpc_resp_t r;
        int st = si_httpc_get(c, url, 1000, &r, NULL);
        si_httpc_resp_free(&r);
        if (st == 200) return 0;
        int status;
        if (waitpid(p->pid, &status, WNOHANG) == p->pid) return -1;
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return -1;
}

/* Cuts step i's segment out of g into dir/stepI.sfm, weights prepacked. */
static int write_step(si_graph_t *g, const si_segment_t *seg, const char *path, si_err_t *err) {
    si_engine_t *e = si_engine_create(g, seg, 1, err);
    if (!e) return -1;
    si_layout_t *layouts = calloc((size_t)g->n_nodes, sizeof *layouts);
    si_node_t *saved = malloc((size_t)g->n_nodes * sizeof *saved);
    int rc = -1;
    if (!layouts || !saved) {
        si_err_set(err, "out of memory");
        goto out;
    }
    memcpy(saved, g->nodes, (size_t)g->n_nodes * sizeof *saved);
    si_engine_pack_weights(e, g, layouts);
    rc = si_sfm_save(g, seg, path, err);
    memcpy(g->nodes, saved, (size_t)g->n_nodes * sizeof *saved); /* the graph is shared */
out:
    free(layouts), free(saved);
    si_engine_free(e);
    return rc;
}

static void stop_all(proc_t *procs, int n) {
    for (int i = 0; i < n; i++)
        if (procs[i].pid > 0) kill(procs[i].pid, SIGTERM);
    double t0 = cli_now_ms();
    for (int left = n; left > 0 && cli_now_ms() - t0 < 10000;) {
        left = 0;
        for (int i = 0; i < n; i++) {
            if (procs[i].pid <= 0) continue;
            if (waitpid(procs[i].pid, NULL, WNOHANG) == procs[i].pid) procs[i].pid = 0;
            else left++;
        }
        if (left) {
            struct timespec ts = {0, 20 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    for (int i = 0; i < n; i++)
        if (procs[i].pid > 0) kill(procs[i].pid, SIGKILL), waitpid(procs[i].pid, NULL, 0);
}

int si_cmd_up(int argc, char **argv) {
    cli_opts_t o;
    if (cli_parse(argc, argv, "mLptHW", &o)) return 1;
    if (o.n_args || !o.plan) {
        free(o.args);
        return cli_fail("usage: splitinfer up --plan PLAN.json -m MODEL [--port P] "
                        "[--threads-per-function N] [--workdir DIR]");
    }
    serve_block_signals();
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, NULL);

    si_err_t err = {{0}};
    si_plan_t *plan = malloc(sizeof *plan);
    si_segment_t *segs = malloc(SI_PLAN_MAX_STEPS * sizeof *segs);
    proc_t *procs = calloc(UP_MAX_PROCS, sizeof *procs);
    si_graph_t *g = NULL;
    si_httpc_t *c = si_httpc_new();
    int n = 0, rc = 1;
    char dir[256], path[320], threads[16];
    if (!plan || !segs || !procs || !c) {
        cli_fail("out of memory");
        goto out;
    }
    if (si_plan_load(o.plan, plan, &err) < 0) {
        cli_fail("%s", err.msg);
        goto out;
    }
    if (o.workdir) snprintf(dir, sizeof dir, "%s", o.workdir);
    else snprintf(dir, sizeof dir, "/tmp/splitinfer-up-XXXXXX");
    if ((o.workdir && mkdir(dir, 0755) < 0 && errno != EEXIST) || (!o.workdir && !mkdtemp(dir))) {
        cli_fail("%s: %s", dir, strerror(errno));
        goto out;
    }
    si_engine_set_threads(1);
    if (!o.model) {
        cli_fail("no model: pass -m MODEL or set SPLITINFER_MODEL");
        goto out;
    }
    if (!(g = si_model_load(o.model, &err)) || si_plan_check(plan, g, segs, &err) < 0) {
        cli_fail("%s", err.msg);
        goto out;
    }
    snprintf(threads, sizeof threads, "%d", o.threads ? o.threads : 1);
    for (int i = 0; i < plan->n_steps; i++) {
        si_plan_step_t *ps = &plan->steps[i];
        snprintf(path, sizeof path, "%s/step%d.sfm", dir, i);
        if (write_step(g, &segs[i], path, &err) < 0) {
            cli_fail("step %d (%s): %s", i, ps->segment, err.msg);
            goto out;
        }
        ps->n_functions = ps->bands;
        for (int k = 0; k < ps->bands; k++) {
            proc_t *p = &procs[n++];
            p->port = free_port();
            char port[16];
            snprintf(port, sizeof port, "%d", p->port);
            snprintf(p->name, sizeof p->name, "step%d-band%d", i, k);
            proc_arg(p, "splitinfer");
            proc_arg(p, "stage");
            proc_arg(p, "-m"), proc_arg(p, path);
            proc_arg(p, "--segment"), proc_arg(p, ps->segment);
            proc_arg(p, "--host"), proc_arg(p, "127.0.0.1");
            proc_arg(p, "--port"), proc_arg(p, port);
            proc_arg(p, "--threads"), proc_arg(p, threads);
            proc_arg(p, "--name"), proc_arg(p, p->name);
            if (ps->bands > 1) {
                char band[24];
                snprintf(band, sizeof band, "%d/%d", k, ps->bands);
                proc_arg(p, "--band"), proc_arg(p, band);
            }
            snprintf(ps->functions[k], SI_PLAN_MAX_URL, "http://127.0.0.1:%d", p->port);
            if (p->port < 0 || spawn(p) < 0) {
                cli_fail("cannot start %s: %s", p->name, strerror(errno));
                goto out;
            }
        }
    }
    for (int i = 0; i < n; i++) {
        char url[64];
        snprintf(url, sizeof url, "http://127.0.0.1:%d/readyz", procs[i].port);
        if (wait_ok(c, url, &procs[i], UP_READY_TIMEOUT_MS) < 0) {
            cli_fail("%s (%s) did not become ready", procs[i].name, url);
            goto out;
        }
    }
    /* The gateway: the plan with every function's URL, and the structure of
     * the model from the first step's file (every .sfm holds all nodes). */
    char *json = si_plan_dump(plan);
    snprintf(path, sizeof path, "%s/plan.json", dir);
    FILE *f = fopen(path, "w");
    int wrote = f && json && fputs(json, f) >= 0;
    if (f && fclose(f) != 0) wrote = 0;
    free(json);
    if (!wrote) {
        cli_fail("%s: cannot write", path);
        goto out;
    }
    proc_t *gp = &procs[n++];
    gp->port = o.port >= 0 ? o.port : free_port();
    char port[16], model0[320];
    snprintf(port, sizeof port, "%d", gp->port);
    snprintf(model0, sizeof model0, "%s/step0.sfm", dir);
    snprintf(gp->name, sizeof gp->name, "gateway");
    proc_arg(gp, "splitinfer"), proc_arg(gp, "gateway");
    proc_arg(gp, "--plan"), proc_arg(gp, path);
    proc_arg(gp, "-m"), proc_arg(gp, model0);
    proc_arg(gp, "--host"), proc_arg(gp, "127.0.0.1");
    proc_arg(gp, "--port"), proc_arg(gp, port);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v2/health/ready", gp->port);
    if (spawn(gp) < 0 || wait_ok(c, url, gp, 30000) < 0) {
        cli_fail("the gateway did not become ready on port %d", gp->port);
        goto out;
    }
    printf("gateway: http://127.0.0.1:%d (plan %s, %d functions, files in %s)\n", gp->port,
           plan->name, n - 1, dir);
    fflush(stdout);

    /* Supervise until told to stop. */
    sigset_t waitset;
    sigemptyset(&waitset);
    sigaddset(&waitset, SIGCHLD), sigaddset(&waitset, SIGTERM), sigaddset(&waitset, SIGINT);
    for (;;) {
        int sig = 0;
        if (sigwait(&waitset, &sig) != 0) continue;
        if (sig != SIGCHLD) break;
        for (int i = 0; i < n; i++) {
            int status;
            if (procs[i].pid <= 0 || waitpid(procs[i].pid, &status, WNOHANG) != procs[i].pid) continue;
            procs[i].restarts++;
            fprintf(stderr, "splitinfer up: %s (pid %d) %s %d; restarting it (restart %d)\n",
                    procs[i].name, procs[i].pid, WIFSIGNALED(status) ? "killed by signal" : "exited",
                    WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status), procs[i].restarts);
            if (procs[i].restarts > 3) { /* a crash loop: back off a little */
                struct timespec ts = {1, 0};
                nanosleep(&ts, NULL);
            }
            if (spawn(&procs[i]) < 0) procs[i].pid = 0;
        }
    }
    fprintf(stderr, "splitinfer up: stopping %d processes\n", n);
    rc = 0;
out:
    stop_all(procs, n);
    if (!o.workdir && dir[0] == '/') { /* our temporary files */
        for (int i = 0; i < SI_PLAN_MAX_STEPS; i++) {
            snprintf(path, sizeof path, "%s/step%d.sfm", dir, i);
            unlink(path);
        }
        snprintf(path, sizeof path, "%s/plan.json", dir);
        unlink(path);
        rmdir(dir);
    }
    si_httpc_free(c);
    si_graph_free(g);
    free(plan), free(segs), free(procs), free(o.args);
    return rc;
}
