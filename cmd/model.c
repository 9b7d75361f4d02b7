/* model.c - the subcommands that look at or rewrite a model: info, convert. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "modelfile.h"
#include "plan.h"

static void shape_str(const si_value_t *v, char *buf, size_t len) {
    if (v->ndim == 4)
        snprintf(buf, len, "[1,%d,%d,%d]", v->dims[1], v->dims[2], v->dims[3]);
    else
        snprintf(buf, len, "[1,%d]", v->dims[1]);
}

int si_cmd_info(int argc, char **argv) {
    cli_opts_t o;
    if (cli_parse(argc, argv, "m", &o)) return 1;
    si_graph_t *g;
    si_segment_t seg;
    int rc = cli_setup(&o, 1, &g, &seg, NULL);
    free(o.args);
    if (rc) {
        si_graph_free(g);
        return rc;
    }
    char in[64];
    shape_str(&g->values[0], in, sizeof in);
    uint64_t macs = 0, params = 0;
    for (int i = 0; i < g->n_nodes; i++)
        macs += si_node_macs(g, &g->nodes[i]), params += si_node_params(&g->nodes[i]);
    printf("model %s: input %s, %d nodes after folding, %d cut points, %.2f M params, "
           "%.3f GMACs\n", o.model, in, g->n_nodes, g->n_cuts, params / 1e6, macs / 1e9);
    printf("%-10s %-9s %6s %10s %10s  %-16s %12s  %s\n", "segment", "cuts", "nodes", "params",
           "MMACs", "output", "out bytes", "ops");
    /* One row per named unit (ResNet) or per pair of adjacent cut points. */
    int c = 0;
    while (c + 1 < g->n_cuts) {
        int next = c + 1;
        if (g->n_blocks) {
            if (c == 0) next = g->block_cut[0];
            else if (c == g->head_cut) next = g->n_cuts - 1;
            else
                for (int b = 0; b < g->n_blocks; b++)
                    if (g->block_cut[b] == c)
                        next = b + 1 < g->n_blocks ? g->block_cut[b + 1] : g->head_cut;
        }
        char name[SI_MAX_NAME], shape[64], range[32], ops[128] = "";
        si_graph_cut_name(g, c, name, sizeof name);
        int nb = g->cuts[c], ne = g->cuts[next];
        uint64_t m = 0, p = 0;
        int counts[SI_OP_FLATTEN + 1] = {0};
        for (int i = nb; i < ne; i++) {
            m += si_node_macs(g, &g->nodes[i]), p += si_node_params(&g->nodes[i]);
            counts[g->nodes[i].op]++;
        }
        for (int op = SI_OP_CONV; op <= SI_OP_FLATTEN; op++)
            if (counts[op]) {
                size_t l = strlen(ops);
                snprintf(ops + l, sizeof ops - l, "%s%s x%d", l ? ", " : "", si_op_name((si_op_t)op),
                         counts[op]);
            }
        const si_value_t *out = &g->values[g->nodes[ne - 1].out];
        shape_str(out, shape, sizeof shape);
        snprintf(range, sizeof range, "#%d..#%d", c, next);
        printf("%-10s %-9s %6d %10llu %10.1f  %-16s %12zu  %s\n", name, range, ne - nb,
               (unsigned long long)p, m / 1e6, shape, si_value_numel(out) * sizeof(float), ops);
        c = next;
    }
    si_graph_free(g);
    return 0;
}

int si_cmd_convert(int argc, char **argv) {
    cli_opts_t o;
    if (cli_parse(argc, argv, "msoPt", &o)) return 1;
    if (o.n_args == 1) o.model = o.args[0]; /* positional IN wins over $SPLITINFER_MODEL */
    if (o.n_args != 1 || !o.output) {
        free(o.args);
        return cli_fail("usage: splitinfer convert IN.onnx -o OUT.sfm [--segment A..B] [--plain] "
                        "[--threads N]");
    }
    /* Pack for the stage that will load the file: oneDNN blocks some 1x1
     * convolutions' weights by thread count (ResNet50's layer4.0 conv1: 64
     * rows at 2 threads, 48 at 1), and weights packed for another count cost
     * a reference reorder at every cold start (53 ms of CPU, 150 ms at 0.35
     * CPU). The stage computes on 1 thread unless told otherwise. */
    if (!o.threads) o.threads = 1;
    si_graph_t *g;
    si_segment_t seg;
    si_engine_t *e = NULL;
    si_layout_t *layouts = NULL;
    si_err_t err = {{0}};
    int rc = cli_setup(&o, 1, &g, &seg, o.plain ? NULL : &e);
    if (!rc && e) {
        if (!(layouts = calloc((size_t)g->n_nodes, sizeof *layouts))) rc = cli_fail("out of memory");
        else si_engine_pack_weights(e, g, layouts);
    }
    if (!rc && si_sfm_save(g, o.segment ? &seg : NULL, o.output, &err) < 0) rc = cli_fail("%s", err.msg);
    free(o.args), free(layouts);
    si_engine_free(e);
    si_graph_free(g);
    return rc;
}

/* splitinfer plan check PLAN.json -m MODEL */
int si_cmd_plan(int argc, char **argv) {
    cli_opts_t o;
    if (cli_parse(argc, argv, "m", &o)) return 1;
    if (o.n_args != 2 || strcmp(o.args[0], "check")) {
        free(o.args);
        return cli_fail("usage: splitinfer plan check PLAN.json -m MODEL");
    }
    si_plan_t *p = malloc(sizeof *p);
    si_segment_t *segs = malloc(SI_PLAN_MAX_STEPS * sizeof *segs);
    si_graph_t *g = NULL;
    si_segment_t seg;
    si_err_t err = {{0}};
    int rc = !p || !segs ? cli_fail("out of memory") : 0;
    if (!rc && si_plan_load(o.args[1], p, &err) < 0) rc = cli_fail("%s", err.msg);
    if (!rc) rc = cli_setup(&o, 1, &g, &seg, NULL);
    if (!rc && si_plan_check(p, g, segs, &err) < 0) rc = cli_fail("%s: %s", o.args[1], err.msg);
    if (!rc) {
        printf("plan %s: %d steps, valid for %s\n", p->name, p->n_steps, o.model);
        /* Work in MACs, halo rows included: the plan's cost with no runtime
         * in it. A step's bands run at once, so its slowest band is on the
         * request's critical path; that path over the whole model's MACs is
         * the best ratio to the one-function baseline the plan can reach
         * with one core per band and free networking. */
        uint64_t whole = 0, total = 0, path = 0;
        for (int i = 0; i < g->n_nodes; i++) whole += si_node_macs(g, &g->nodes[i]);
        for (int i = 0; rc == 0 && i < p->n_steps; i++) {
            const si_value_t *y = &g->values[segs[i].out];
            char shape[64];
            if (y->ndim == 4) snprintf(shape, sizeof shape, "[1,%d,%d,%d]", y->dims[1], y->dims[2], y->dims[3]);
            else snprintf(shape, sizeof shape, "[1,%d]", y->dims[1]);
            uint64_t seg = si_segment_macs(g, &segs[i], NULL), sum = 0, max = 0;
            int K = p->steps[i].bands, h = y->ndim == 4 ? y->dims[2] : 1;
            for (int k = 0; rc == 0 && k < K; k++) {
                int a, b;
                si_band_t band;
                si_rows_split(h, K, k, &a, &b);
                if (si_graph_band(g, &segs[i], a, b, &band, &err) < 0) {
                    rc = cli_fail("step %d: %s", i, err.msg);
                    break;
                }
                uint64_t m = K == 1 ? seg : si_segment_macs(g, &segs[i], &band);
                si_band_free(&band);
                sum += m, max = m > max ? m : max;
            }
            total += sum, path += max;
            printf("  step %d: %-14s #%d..#%d  bands %d  out %-16s %8.1f MMACs", i, p->steps[i].segment,
                   segs[i].cut_begin, segs[i].cut_end, K, shape, seg / 1e6);
            if (K > 1)
                printf("  bands %.1f MMACs in all (%.2fx), slowest %.1f (%.2f of the step)", sum / 1e6,
                       (double)sum / (double)seg, max / 1e6, (double)max / (double)seg);
            printf("\n");
        }
        if (rc == 0)
            printf("work: %.3f GMACs in all functions (%.2fx the model's %.3f); critical path %.3f "
                   "GMACs = %.3f of the model\n",
                   total / 1e9, (double)total / (double)whole, whole / 1e9, path / 1e9,
                   (double)path / (double)whole);
    }
    free(p), free(segs), free(o.args);
    si_graph_free(g);
    return rc;
}
