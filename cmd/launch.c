/* launch.c - see launch.h. */
#include "launch.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "engine.h"
#include "modelfile.h"

#define PORT_LO 20000 /* [PORT_LO, PORT_HI): under the ephemeral range */
#define PORT_HI 32768

int launch_free_port(void) {
    static int next = 0; /* offset of the next port to try; 0: not started */
    if (!next) next = 1 + (int)((unsigned)getpid() * 7919u % (PORT_HI - PORT_LO - 1));
    for (int tries = 0; tries < PORT_HI - PORT_LO; tries++) {
        int port = PORT_LO + next;
        next = next + 1 < PORT_HI - PORT_LO ? next + 1 : 1;
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) return -1;
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
        close(fd);
        if (ok) return port;
    }
    return -1;
}

int launch_arg(launch_proc_t *p, const char *v) {
    if (p->argc >= LAUNCH_MAX_ARGS) return -1;
    size_t n = strlen(v);
    if (n >= sizeof p->args[0]) n = sizeof p->args[0] - 1;
    memcpy(p->args[p->argc], v, n);
    p->args[p->argc][n] = 0;
    p->argv[p->argc] = p->args[p->argc];
    p->argv[++p->argc] = NULL;
    return 0;
}

int launch_spawn(launch_proc_t *p) {
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) { /* only async-signal-safe calls from here */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL); /* children handle their own signals */
        if (p->log[0]) {
            int fd = open(p->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
            if (fd >= 0) dup2(fd, 1), dup2(fd, 2);
        }
        if (p->exe)
            execvp(p->exe, p->argv);
        else
            execv("/proc/self/exe", p->argv);
        _exit(127);
    }
    p->pid = pid;
    return 0;
}

int launch_wait_ok(si_httpc_t *c, const char *url, const launch_proc_t *p, int timeout_ms) {
    double t0 = cli_now_ms();
    while (cli_now_ms() - t0 < timeout_ms) {
        si_httpc_resp_t r;
        int st = si_httpc_get(c, url, 1000, &r, NULL);
        si_httpc_resp_free(&r);
        if (st == 200) return 0;
        int status;
        if (p && waitpid(p->pid, &status, WNOHANG) == p->pid) return -1;
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return -1;
}

void launch_stop_all(launch_proc_t *procs, int n) {
    for (int i = 0; i < n; i++)
        if (procs[i].pid > 0) kill(procs[i].pid, SIGTERM);
    double t0 = cli_now_ms();
    for (int left = n; left > 0 && cli_now_ms() - t0 < 10000;) {
        left = 0;
        for (int i = 0; i < n; i++) {
            if (procs[i].pid <= 0) continue;
            if (waitpid(procs[i].pid, NULL, WNOHANG) == procs[i].pid)
                procs[i].pid = 0;
            else
                left++;
        }
        if (left) {
            struct timespec ts = {0, 20 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    for (int i = 0; i < n; i++)
        if (procs[i].pid > 0) kill(procs[i].pid, SIGKILL), waitpid(procs[i].pid, NULL, 0);
    for (int i = 0; i < n; i++) procs[i].pid = 0;
}

int launch_write_step(si_graph_t *g, const si_segment_t *seg, const char *path, si_err_t *err) {
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

int launch_run_segment(const si_graph_t *g, const si_plan_t *plan, int i, int j, si_segment_t *seg,
                       char segment[SI_MAX_NAME], char steps[LAUNCH_ARG_LEN], si_err_t *err) {
    si_segment_t first, last;
    steps[0] = 0;
    snprintf(segment, SI_MAX_NAME, "%s", plan->steps[i].segment);
    if (si_graph_segment(g, segment, seg, err) < 0) return -1;
    if (j == i + 1) return 0;
    if (si_graph_segment(g, plan->steps[j - 1].segment, &last, err) < 0) return -1;
    first = *seg;
    snprintf(segment, SI_MAX_NAME, "#%d..#%d", first.cut_begin, last.cut_end);
    if (si_graph_segment(g, segment, seg, err) < 0) return -1;
    size_t n = 0;
    for (int m = i; m < j; m++) {
        int w = snprintf(steps + n, LAUNCH_ARG_LEN - n, "%s%s", m > i ? "," : "", plan->steps[m].segment);
        if (w < 0 || (size_t)w >= LAUNCH_ARG_LEN - n)
            return si_err_set(err, "steps %d..%d: their names are longer than --steps takes (%d bytes)",
                              i, j - 1, LAUNCH_ARG_LEN - 1);
        n += (size_t)w;
    }
    return 0;
}
