/*
 * cli.h - what the subcommands share: option parsing and model setup.
 * cmd/ stays thin: parse flags, call lib/, print.
 */
#ifndef SI_CLI_H
#define SI_CLI_H

#include <stddef.h>

#include "engine.h"
#include "graph.h"

/* Options every model-running subcommand understands. */
typedef struct cli_opts {
    const char *model;   /* -m, default $SPLITINFER_MODEL */
    const char *segment; /* --segment A..B (NULL: whole model) */
    const char *output;  /* -o / --output */
    const char *input;   /* --input */
    int threads;         /* -t / --threads, 0 = all cores */
    int topk;            /* -k */
    int json;            /* --json */
    int n;               /* -n */
    int batch;           /* --batch */
    int warmup;          /* --warmup */
    int evict_mb;        /* --evict-mb M (bench): write M MiB between timed runs */
    int band_k, band_n;  /* --band k/K: output band k of K (band_n 0 = whole) */
    int plain;           /* --plain: convert without prepacking weights */
    int port;            /* --port, -1 when not given */
    const char *host;    /* --host listen address */
    const char *name;    /* --name: the function's name in metrics and logs */
    const char *plan;    /* --plan PLAN.json */
    const char *workdir; /* --workdir DIR (up) */
    int bands;           /* --bands K (stage: warm every band of K) */
    const char *next;    /* --next URL (stage: the function chained requests go on to) */
    const char *steps;   /* --steps A,B,C (stage: the resident steps it serves, stage.h) */
    int warmup_runs;     /* --warmup-runs N (stage, bench --plans): runs before ready, -1 unset */
    int layout;          /* --layout nchw|nhwc: of 4-D input and output tensors (si_io_layout_t) */
    /* bench --plans (cmd/benchplans.c) */
    const char *plans;       /* --plans a,b,c: plan names (plans/NAME.json) or paths */
    const char *images;      /* --images DIR of PNG files */
    const char *runtime;     /* --runtime process|podman (or both, comma-separated) */
    const char *cpus;        /* --cpus 0.35: CPU quota per function (podman) */
    const char *memory;      /* --memory 512m: memory limit per function (podman) */
    const char *concurrency; /* --concurrency 1,4,16 */
    int cold;                /* --cold K: cold starts per plan, -1 when not given */
    const char *out;         /* --out DIR */
    int seconds;             /* --seconds S: per concurrency level, -1 when not given */
    char **args;         /* positional arguments */
    int n_args;
} cli_opts_t;

/* Parses argv (after the subcommand name). Returns 0, or 1 after printing
 * the error. `allowed` lists the flags this subcommand takes, e.g. "mtkj". */
int cli_parse(int argc, char **argv, const char *allowed, cli_opts_t *o);

/* Prints "splitinfer: <msg>" to stderr and returns 1 (the exit code). */
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The rows of output band o->band_k of o->band_n (--band k/K) of seg and the
 * input rows they need; *band zeroed when no band was asked for. On failure
 * prints and returns 1. Free with si_band_free. */
int cli_band(const cli_opts_t *o, const si_graph_t *g, const si_segment_t *seg, si_band_t *band);

/* Loads opts->model, resolves opts->segment, sets threads and compiles an
 * engine for batch (skipped when e is NULL), for the output band of --band
 * k/K when given. On failure prints and returns 1.
 * Load and compile times (ms) go to *load_ms / *compile_ms when not NULL. */
int cli_setup_timed(const cli_opts_t *o, int batch, si_graph_t **g, si_segment_t *seg,
                    si_engine_t **e, double *load_ms, double *compile_ms);
#define cli_setup(o, batch, g, seg, e) cli_setup_timed(o, batch, g, seg, e, NULL, NULL)

/* Reads a whole file into a malloc'd buffer. */
int cli_read_file(const char *path, void **buf, size_t *len);

double cli_now_ms(void);

#endif
