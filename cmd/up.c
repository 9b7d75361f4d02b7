/* up.c - splitinfer up: the local runtime. Starts every function of a plan as
 * a process on a free loopback port (one per band of a banded step), waits
 * until all are ready, starts the gateway, prints its URL, restarts a
 * function that dies, and on SIGINT/SIGTERM stops them all and exits 0.
 *
 * Each step's weights are cut into their own prepacked .sfm first (what a
 * stage image carries), so a function maps only its segment's weights.
 * The process plumbing is cmd/launch.c, shared with `bench --plans`. */
#include <errno.h>
#include <signal.h>
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
#include "serve.h"

#define UP_MAX_PROCS (SI_PLAN_MAX_STEPS * 4 + 1)
#define UP_READY_TIMEOUT_MS 120000 /* functions load and warm up in well under this */

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
    launch_proc_t *procs = calloc(UP_MAX_PROCS, sizeof *procs);
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
    /* The step files are packed for the functions' thread count (see convert). */
    si_engine_set_threads(o.threads ? o.threads : 1);
    if (!o.model) {
        cli_fail("no model: pass -m MODEL or set SPLITINFER_MODEL");
        goto out;
    }
    if (!(g = si_model_load(o.model, &err)) || si_plan_check(plan, g, segs, &err) < 0) {
        cli_fail("%s", err.msg);
        goto out;
    }
    snprintf(threads, sizeof threads, "%d", o.threads ? o.threads : 1);
    int total = 0;
    for (int i = 0, j; i < plan->n_steps; i = j) {
        j = si_plan_resident_end(plan, i); /* a resident run's functions serve all its steps */
        total += plan->steps[i].bands;
    }
    if (total > UP_MAX_PROCS - 1) {
        cli_fail("the plan has %d functions; up runs at most %d", total, UP_MAX_PROCS - 1);
        goto out;
    }
    /* Every function's port first: a chained function is started with the
     * next one's URL. */
    for (int i = 0, j, m = 0; i < plan->n_steps; i = j) {
        j = si_plan_resident_end(plan, i);
        si_plan_step_t *ps = &plan->steps[i];
        ps->n_functions = ps->bands;
        for (int k = 0; k < ps->bands; k++, m++) {
            procs[m].port = launch_free_port();
            snprintf(ps->functions[k], SI_PLAN_MAX_URL, "http://127.0.0.1:%d", procs[m].port);
        }
        for (int r = i + 1; r < j; r++) { /* the rest of a resident run: the same functions */
            plan->steps[r].n_functions = ps->bands;
            memcpy(plan->steps[r].functions, ps->functions, sizeof ps->functions);
        }
    }
    for (int i = 0, j; i < plan->n_steps; i = j) {
        j = si_plan_resident_end(plan, i);
        si_plan_step_t *ps = &plan->steps[i];
        /* A resident run's functions hold every step of it: segment
         * "#first..#last" cut, and the steps named by --steps. */
        si_segment_t seg;
        char segment[SI_MAX_NAME], steps[LAUNCH_ARG_LEN];
        if (launch_run_segment(g, plan, i, j, &seg, segment, steps, &err) < 0) {
            cli_fail("step %d (%s): %s", i, ps->segment, err.msg);
            goto out;
        }
        snprintf(path, sizeof path, "%s/step%d.sfm", dir, i);
        if (launch_write_step(g, &seg, path, &err) < 0) {
            cli_fail("step %d (%s): %s", i, ps->segment, err.msg);
            goto out;
        }
        for (int k = 0; k < ps->bands; k++) {
            launch_proc_t *p = &procs[n++];
            char port[16];
            snprintf(port, sizeof port, "%d", p->port);
            snprintf(p->name, sizeof p->name, "step%d-band%d", i, k);
            launch_arg(p, "splitinfer");
            launch_arg(p, "stage");
            launch_arg(p, "-m"), launch_arg(p, path);
            launch_arg(p, "--segment"), launch_arg(p, segment);
            if (steps[0]) launch_arg(p, "--steps"), launch_arg(p, steps);
            launch_arg(p, "--host"), launch_arg(p, "127.0.0.1");
            launch_arg(p, "--port"), launch_arg(p, port);
            launch_arg(p, "--threads"), launch_arg(p, threads);
            launch_arg(p, "--name"), launch_arg(p, p->name);
            if (ps->bands > 1) {
                char band[24];
                snprintf(band, sizeof band, "%d/%d", k, ps->bands);
                launch_arg(p, "--band"), launch_arg(p, band);
            }
            const char *next = si_plan_next_function(plan, i);
            if (next[0]) launch_arg(p, "--next"), launch_arg(p, next);
            if (p->port < 0 || launch_spawn(p) < 0) {
                cli_fail("cannot start %s: %s", p->name, strerror(errno));
                goto out;
            }
        }
    }
    for (int i = 0; i < n; i++) {
        char url[64];
        snprintf(url, sizeof url, "http://127.0.0.1:%d/readyz", procs[i].port);
        if (launch_wait_ok(c, url, &procs[i], UP_READY_TIMEOUT_MS) < 0) {
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
    launch_proc_t *gp = &procs[n++];
    /* 0 as for stage and gateway: any free port. Not passed on as 0: up
     * probes the gateway at the port it gave, and would probe port 0. */
    gp->port = o.port > 0 ? o.port : launch_free_port();
    char port[16], model0[320];
    snprintf(port, sizeof port, "%d", gp->port);
    snprintf(model0, sizeof model0, "%s/step0.sfm", dir);
    snprintf(gp->name, sizeof gp->name, "gateway");
    launch_arg(gp, "splitinfer"), launch_arg(gp, "gateway");
    launch_arg(gp, "--plan"), launch_arg(gp, path);
    launch_arg(gp, "-m"), launch_arg(gp, model0);
    launch_arg(gp, "--host"), launch_arg(gp, "127.0.0.1");
    launch_arg(gp, "--port"), launch_arg(gp, port);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v2/health/ready", gp->port);
    if (launch_spawn(gp) < 0 || launch_wait_ok(c, url, gp, 30000) < 0) {
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
            if (launch_spawn(&procs[i]) < 0) procs[i].pid = 0;
        }
    }
    fprintf(stderr, "splitinfer up: stopping %d processes\n", n);
    rc = 0;
out:
    launch_stop_all(procs, n);
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
