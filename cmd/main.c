/* main.c - splitinfer <subcommand>: dispatch and usage. */
#include <stdio.h>
#include <string.h>

int si_cmd_classify(int argc, char **argv);
int si_cmd_infer(int argc, char **argv);
int si_cmd_bench(int argc, char **argv);
int si_cmd_info(int argc, char **argv);
int si_cmd_convert(int argc, char **argv);
int si_cmd_preprocess(int argc, char **argv);
int si_cmd_plan(int argc, char **argv);
int si_cmd_stage(int argc, char **argv);
int si_cmd_gateway(int argc, char **argv);
int si_cmd_up(int argc, char **argv);

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} cmds[] = {
    {"classify", si_cmd_classify, "-m MODEL [-t THREADS] [-k 5] [--json] IMAGE...   top-k classes"},
    {"infer", si_cmd_infer, "-m MODEL [--segment A..B] [--band k/K] --input X.bin --output Y.bin   raw tensors"},
    {"bench", si_cmd_bench, "-m MODEL [--segment A..B] [--band k/K] [-t THREADS] [-n N] [--batch B] [--warmup W] [--evict-mb M] [--layout nchw|nhwc]   latency;\n"
     "             --plans P1,P2 -m MODEL --images DIR [--runtime process|podman]   Table 1"},
    {"info", si_cmd_info, "-m MODEL   segments, parameters, MACs, cut points"},
    {"convert", si_cmd_convert, "IN.onnx -o OUT.sfm [--segment A..B] [--plain] [--threads N]   packed model file"},
    {"up", si_cmd_up, "--plan PLAN.json -m MODEL [--port P] [--threads-per-function N]   run a plan locally"},
    {"stage", si_cmd_stage, "-m MODEL [--segment A..B] [--port P] [--threads N]   a stage function"},
    {"gateway", si_cmd_gateway, "--plan PLAN.json -m MODEL [--port P] [--threads N]   the gateway"},
    {"plan", si_cmd_plan, "check PLAN.json -m MODEL   validate a plan against a model"},
    {"preprocess", si_cmd_preprocess, "IMAGE -o OUT.bin   PNG to the network's input tensor"},
};

static int usage(FILE *f) {
    fprintf(f, "usage: splitinfer <command> [options]\n\n");
    for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++)
        fprintf(f, "  %-10s %s\n", cmds[i].name, cmds[i].help);
    fprintf(f, "\nMODEL is .onnx or .sfm; -m defaults to $SPLITINFER_MODEL. THREADS 0 = all cores.\n");
    return f == stderr ? 2 : 0;
}

int main(int argc, char **argv) {
    if (argc < 2) return usage(stderr);
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help"))
        return usage(stdout);
    for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++)
        if (!strcmp(argv[1], cmds[i].name)) return cmds[i].fn(argc - 2, argv + 2);
    fprintf(stderr, "splitinfer: unknown command '%s'\n", argv[1]);
    return usage(stderr);
}
