/*
 * launch.h - starting functions as child processes, shared by `splitinfer up`
 * and `splitinfer bench --plans`: free loopback ports, argument lists, spawn
 * (of this binary, or of another program such as podman, with its output
 * optionally going to a log file), readiness polling, an orderly stop, and
 * cutting a plan step's weights into its own prepacked .sfm.
 */
#ifndef SI_LAUNCH_H
#define SI_LAUNCH_H

#include <sys/types.h>

#include "err.h"
#include "graph.h"
#include "httpc.h"
#include "plan.h"

#define LAUNCH_MAX_ARGS 40
#define LAUNCH_ARG_LEN (SI_PLAN_MAX_URL + 160) /* bytes per argument, NUL included */

/* One child: what to run and, once spawned, its pid. Zero it, add arguments,
 * spawn. */
typedef struct launch_proc {
    char name[48];   /* for messages: "step2-band0", "gateway" */
    const char *exe; /* program to run, looked up in PATH; NULL = this binary
                        (/proc/self/exe), with argv[0] as its name */
    char *argv[LAUNCH_MAX_ARGS + 1];
    char args[LAUNCH_MAX_ARGS][LAUNCH_ARG_LEN];
    int argc;
    int port;      /* the port it serves on, when it is a server */
    pid_t pid;     /* > 0 while running */
    int restarts;  /* `up` restarts a function that dies */
    char log[320]; /* stdout and stderr are appended here when not ""; else inherited */
} launch_proc_t;

/* A free loopback port, below the kernel's ephemeral range (32768 and up on
 * Linux): a port the kernel hands out (bind to 0) can be taken by any
 * outgoing connection before the function listens on it, which the bench's
 * cold starts of 19 functions met ("Address already in use"). Ports are
 * probed by binding them, in turn from a random start, and never handed out
 * twice by one process. Another process could still take one in between;
 * the stage then fails to bind and is restarted (up) or reported (bench).
 * Not thread-safe. -1 on failure. */
int launch_free_port(void);

/* Appends an argument (cut to LAUNCH_ARG_LEN - 1 bytes: our own paths and
 * numbers). Arguments beyond LAUNCH_MAX_ARGS are dropped; returns -1 then. */
int launch_arg(launch_proc_t *p, const char *v);

/* Forks and execs p (signals unblocked in the child). 0 with p->pid set, or
 * -1 (errno) when fork failed; an exec failure shows as exit status 127. */
int launch_spawn(launch_proc_t *p);

/* Polls url until it answers 200 or timeout_ms passes; gives up early when
 * p (may be NULL) has died. 0 when it answered. */
int launch_wait_ok(si_httpc_t *c, const char *url, const launch_proc_t *p, int timeout_ms);

/* SIGTERM to every running proc, waits up to 10 s, then SIGKILL; reaps all
 * and sets their pid to 0. */
void launch_stop_all(launch_proc_t *procs, int n);

/* Cuts seg out of g into path as an .sfm with its weights prepacked for this
 * CPU (what a stage image carries), so a function maps only its weights. */
int launch_write_step(si_graph_t *g, const si_segment_t *seg, const char *path, si_err_t *err);

/* What the functions of steps [i, j) of plan serve (j = si_plan_resident_end
 * or i + 1): step i's segment, or for a resident run (j > i + 1) the cut
 * range of all its steps, "#first..#last", in *seg and segment, and their
 * names for `stage --steps` in steps ("" for none). -1 with err set when a
 * segment does not resolve or the names do not fit one argument. */
int launch_run_segment(const si_graph_t *g, const si_plan_t *plan, int i, int j, si_segment_t *seg,
                       char segment[SI_MAX_NAME], char steps[LAUNCH_ARG_LEN], si_err_t *err);

#endif
