/* plan.c - plan JSON <-> structs and validation against a graph. See plan.h. */
#include "plan.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Copies a JSON string member into dst (size len); absent -> dflt. */
static int str_member(json_t *o, const char *key, char *dst, size_t len, const char *dflt,
                      si_err_t *err) {
    json_t *v = json_object_get(o, key);
    if (!v) {
        if (!dflt) return si_err_set(err, "plan: missing \"%s\"", key);
        snprintf(dst, len, "%s", dflt);
        return 0;
    }
    if (!json_is_string(v) || json_string_length(v) >= len || json_string_length(v) == 0)
        return si_err_set(err, "plan: \"%s\" must be a non-empty string shorter than %zu bytes", key,
                          len);
    memcpy(dst, json_string_value(v), json_string_length(v) + 1);
    return 0;
}

static int int_member(json_t *o, const char *key, int *dst, int dflt, int lo, int hi,
                      si_err_t *err) {
    json_t *v = json_object_get(o, key);
    if (!v) {
        *dst = dflt;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return si_err_set(err, "plan: \"%s\" must be an integer in %d..%d", key, lo, hi);
    *dst = (int)json_integer_value(v);
    return 0;
}

static int parse_step(json_t *o, int i, si_plan_step_t *s, si_err_t *err) {
    if (!json_is_object(o)) return si_err_set(err, "plan: step %d is not an object", i);
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v) {
        if (strcmp(key, "segment") && strcmp(key, "bands") && strcmp(key, "functions"))
            return si_err_set(err, "plan: step %d: unknown key \"%s\"", i, key);
    }
    if (str_member(o, "segment", s->segment, sizeof s->segment, NULL, err) < 0 ||
        int_member(o, "bands", &s->bands, 1, 1, SI_PLAN_MAX_BANDS, err) < 0)
        return si_err_prefix(err, "step %d", i);
    json_t *f = json_object_get(o, "functions");
    s->n_functions = 0;
    if (!f) return 0;
    if (!json_is_array(f)) return si_err_set(err, "plan: step %d: \"functions\" is not a list", i);
    size_t n = json_array_size(f);
    if (n != 0 && n != 1 && n != (size_t)s->bands)
        return si_err_set(err, "plan: step %d: %zu functions for %d bands (give 1 or %d)", i, n,
                          s->bands, s->bands);
    for (size_t k = 0; k < n; k++) {
        json_t *u = json_array_get(f, k);
        const char *url = json_string_value(u);
        size_t len = url ? strlen(url) : 0;
        if (!url || len == 0 || len >= SI_PLAN_MAX_URL ||
            (strncmp(url, "http://", 7) && strncmp(url, "https://", 8)))
            return si_err_set(err, "plan: step %d: function %zu is not an http(s) URL", i, k);
        while (len > 0 && url[len - 1] == '/') len--;
        memcpy(s->functions[k], url, len);
        s->functions[k][len] = 0;
    }
    s->n_functions = (int)n;
    return 0;
}

int si_plan_parse(const char *text, size_t len, si_plan_t *p, si_err_t *err) {
    memset(p, 0, sizeof *p);
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) return si_err_set(err, "plan: line %d: %s", je.line, je.text);
    int rc = -1;
    if (!json_is_object(root)) {
        si_err_set(err, "plan: not a JSON object");
        goto out;
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (strcmp(key, "name") && strcmp(key, "model") && strcmp(key, "dtype") &&
            strcmp(key, "timeout_ms") && strcmp(key, "steps") && strcmp(key, "comment") &&
            strcmp(key, "chain") && strcmp(key, "layout") && strcmp(key, "resident") &&
            strcmp(key, "encoding")) {
            si_err_set(err, "plan: unknown key \"%s\"", key);
            goto out;
        }
    }
    if (str_member(root, "name", p->name, sizeof p->name, "plan", err) < 0 ||
        str_member(root, "model", p->model, sizeof p->model, "resnet50", err) < 0 ||
        str_member(root, "dtype", p->dtype, sizeof p->dtype, "fp32", err) < 0 ||
        str_member(root, "layout", p->layout, sizeof p->layout, "nhwc", err) < 0 ||
        str_member(root, "encoding", p->encoding, sizeof p->encoding, "zeros", err) < 0 ||
        int_member(root, "timeout_ms", &p->timeout_ms, 10000, 1, 3600 * 1000, err) < 0)
        goto out;
    if (strcmp(p->dtype, "fp32") && strcmp(p->dtype, "bf16") && strcmp(p->dtype, "fp16")) {
        si_err_set(err, "plan: dtype \"%s\" is not fp32, bf16 or fp16", p->dtype);
        goto out;
    }
    if (strcmp(p->layout, "nhwc") && strcmp(p->layout, "nchw")) {
        si_err_set(err, "plan: layout \"%s\" is not nhwc or nchw", p->layout);
        goto out;
    }
    if (strcmp(p->encoding, "zeros") && strcmp(p->encoding, "dense")) {
        si_err_set(err, "plan: encoding \"%s\" is not zeros or dense", p->encoding);
        goto out;
    }
    json_t *chain = json_object_get(root, "chain");
    if (chain && !json_is_boolean(chain)) {
        si_err_set(err, "plan: \"chain\" must be true or false");
        goto out;
    }
    p->chain = chain && json_is_true(chain);
    json_t *resident = json_object_get(root, "resident");
    if (resident && !json_is_boolean(resident)) {
        si_err_set(err, "plan: \"resident\" must be true or false");
        goto out;
    }
    p->resident = resident && json_is_true(resident);
    json_t *steps = json_object_get(root, "steps");
    if (!json_is_array(steps) || json_array_size(steps) == 0 ||
        json_array_size(steps) > SI_PLAN_MAX_STEPS) {
        si_err_set(err, "plan: \"steps\" must be a list of 1..%d steps", SI_PLAN_MAX_STEPS);
        goto out;
    }
    p->n_steps = (int)json_array_size(steps);
    for (int i = 0; i < p->n_steps; i++)
        if (parse_step(json_array_get(steps, (size_t)i), i, &p->steps[i], err) < 0) goto out;
    rc = 0;
out:
    json_decref(root);
    return rc;
}

int si_plan_load(const char *path, si_plan_t *p, si_err_t *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return si_err_set(err, "%s: cannot open", path);
    /* One byte over the limit tells a file at the limit from a larger one. */
    char *buf = malloc(SI_PLAN_MAX_FILE + 1);
    if (!buf) {
        fclose(f);
        return si_err_set(err, "%s: out of memory", path);
    }
    size_t n = fread(buf, 1, SI_PLAN_MAX_FILE + 1, f);
    int bad = ferror(f);
    fclose(f);
    int rc = 0;
    if (bad)
        rc = si_err_set(err, "%s: read error", path);
    else if (n > SI_PLAN_MAX_FILE)
        rc = si_err_set(err, "%s: larger than %d bytes", path, SI_PLAN_MAX_FILE);
    else if (si_plan_parse(buf, n, p, err) < 0)
        rc = si_err_prefix(err, "%s", path);
    free(buf);
    return rc;
}

char *si_plan_dump(const si_plan_t *p) {
    json_t *steps = json_array();
    for (int i = 0; i < p->n_steps; i++) {
        const si_plan_step_t *s = &p->steps[i];
        json_t *f = json_array();
        for (int k = 0; k < s->n_functions; k++) json_array_append_new(f, json_string(s->functions[k]));
        json_array_append_new(steps, json_pack("{s:s, s:i, s:o}", "segment", s->segment, "bands",
                                               s->bands, "functions", f));
    }
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:i, s:b, s:b, s:o}", "name", p->name, "model",
                          p->model, "dtype", p->dtype, "layout", p->layout, "encoding", p->encoding,
                          "timeout_ms",
                          p->timeout_ms, "chain", p->chain, "resident", p->resident,
                          "steps", steps);
    char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(o);
    return s;
}

int si_plan_check(const si_plan_t *p, const si_graph_t *g, si_segment_t *segs, si_err_t *err) {
    int cut = 0;
    for (int i = 0; i < p->n_steps; i++) {
        const si_plan_step_t *s = &p->steps[i];
        si_segment_t seg;
        if (si_graph_segment(g, s->segment, &seg, err) < 0) return si_err_prefix(err, "step %d", i);
        if (seg.cut_begin != cut) {
            char want[SI_MAX_NAME];
            si_graph_cut_name(g, cut, want, sizeof want);
            return si_err_set(err, "step %d (%s) does not start where the previous step ends "
                              "(cut #%d, %s)", i, s->segment, cut, want);
        }
        const si_value_t *y = &g->values[seg.out];
        int rows = y->ndim == 4 ? y->dims[2] : 1;
        if (s->bands > rows)
            return si_err_set(err, "step %d (%s): %d bands but the output has %d row%s%s", i,
                              s->segment, s->bands, rows, rows == 1 ? "" : "s",
                              y->ndim == 4 ? "" : " (flat)");
        cut = seg.cut_end;
        if (segs) segs[i] = seg;
    }
    if (cut != g->n_cuts - 1)
        return si_err_set(err, "the plan stops at cut #%d; the model ends at #%d", cut,
                          g->n_cuts - 1);
    for (int i = 0, j; i < p->n_steps; i = j) {
        j = si_plan_resident_end(p, i);
        if (j == i + 1) continue;
        if (strcmp(p->layout, "nhwc"))
            return si_err_set(err, "steps %d..%d: a resident run sends its rows as NHWC, not %s",
                              i, j - 1, p->layout);
        for (int m = i; m < j; m++) {
            const si_plan_step_t *s = &p->steps[m];
            if (s->n_functions == 1)
                return si_err_set(err, "step %d (%s): a resident step needs one function per band, "
                                  "not one for all %d", m, s->segment, s->bands);
            for (int k = 0; k < s->n_functions; k++)
                if (strcmp(s->functions[k], si_plan_function(&p->steps[i], k)))
                    return si_err_set(err, "step %d (%s) band %d: in a resident run band %d is "
                                      "one function in every step (%s, as in step %d)", m,
                                      s->segment, k, k, si_plan_function(&p->steps[i], k), i);
        }
    }
    return 0;
}

const char *si_plan_function(const si_plan_step_t *s, int k) {
    if (s->n_functions == 0) return "";
    return s->functions[s->n_functions == 1 ? 0 : k];
}

int si_plan_call_end(const si_plan_t *p, int i) {
    int j = i + 1;
    if (p->chain && p->steps[i].bands == 1)
        while (j < p->n_steps && p->steps[j].bands == 1) j++;
    return j;
}

int si_plan_resident_end(const si_plan_t *p, int i) {
    int j = i + 1;
    if (p->resident && p->steps[i].bands > 1)
        while (j < p->n_steps && p->steps[j].bands == p->steps[i].bands) j++;
    return j;
}

const char *si_plan_next_function(const si_plan_t *p, int i) {
    if (!p->chain || i + 1 >= p->n_steps || p->steps[i].bands != 1 || p->steps[i + 1].bands != 1)
        return "";
    return si_plan_function(&p->steps[i + 1], 0);
}
