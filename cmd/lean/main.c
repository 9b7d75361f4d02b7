/* lean/main.c - splitinfer for a stage image: the subcommands a stage
 * function needs and nothing that pulls in the HTTP client (libcurl and its
 * dependencies, ~11 MiB of an image). Same subcommand code as the full
 * binary; only the dispatch table is shorter. */
#include <stdio.h>
#include <string.h>

int si_cmd_stage(int argc, char **argv);
int si_cmd_info(int argc, char **argv);
int si_cmd_convert(int argc, char **argv);
int si_cmd_plan(int argc, char **argv);
int si_cmd_preprocess(int argc, char **argv);

static const struct {
    const char *name;
    int (*fn)(int, char **);
} cmds[] = {
    {"stage", si_cmd_stage},     {"info", si_cmd_info}, {"convert", si_cmd_convert},
    {"plan", si_cmd_plan},       {"preprocess", si_cmd_preprocess},
};

int main(int argc, char **argv) {
    if (argc >= 2)
        for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++)
            if (!strcmp(argv[1], cmds[i].name)) return cmds[i].fn(argc - 2, argv + 2);
    fprintf(stderr, "usage: splitinfer stage|info|convert|plan|preprocess ... (a stage image's "
                    "build: the gateway, up and bench are in the full binary)\n");
    return 2;
}
