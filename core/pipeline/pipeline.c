/* Pipelines: an ordered list of (pass, validated options), run in order with
 * before/after hooks and a progress line per pass. No dependency resolution:
 * what you list is what runs. */
#include <ctype.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "pass_ctx.h"
#include "report_impl.h"
#include "mopt/pipeline.h"

typedef struct step {
    const mopt_pass_desc *desc;
    mopt_options *opts; /* validated */
} step;

struct mopt_pipeline {
    const mopt_registry *reg;
    step *steps;
    int32_t n;
    size_t cap;
};

void mopt_run_opts_default(mopt_run_opts *o) {
    memset(o, 0, sizeof *o);
    o->struct_size = sizeof *o;
}

mopt_pipeline *mopt_pipeline_new(const mopt_registry *reg) {
    mopt_pipeline *p = calloc(1, sizeof *p);
    if (p) p->reg = reg;
    return p;
}

void mopt_pipeline_free(mopt_pipeline *p) {
    if (!p) return;
    for (int32_t i = 0; i < p->n; i++) mopt_options_free(p->steps[i].opts);
    free(p->steps);
    free(p);
}

int32_t mopt_pipeline_length(const mopt_pipeline *p) { return p->n; }

mopt_status mopt_pipeline_add(mopt_pipeline *p, const char *pass_name, const mopt_options *raw, mopt_error *err) {
    const mopt_pass_desc *d = mopt_registry_find(p->reg, pass_name);
    if (!d) {
        char list[400] = "";
        for (int32_t i = 0; i < mopt_registry_n_passes(p->reg) && strlen(list) < sizeof list - 64; i++)
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "",
                     mopt_registry_pass(p->reg, i)->name);
        return MOPT_FAIL(err, MOPT_E_INVALID, "no pass named '%s' (available: %s)", pass_name, list[0] ? list : "none; is MOPT_PLUGIN_PATH set?");
    }
    mopt_options *v = mopt_options_validate(d, raw, err);
    if (!v) return err ? (mopt_status)err->code : MOPT_E_INVALID;
    if (d->struct_size >= offsetof(mopt_pass_desc, reserved) && d->check) {
        mopt_error cerr = {0};
        mopt_status st = d->check(&mopt_host, v, &cerr);
        if (st) {
            mopt_options_free(v);
            return MOPT_FAIL(err, st, "pass %s: %s", d->name, cerr.msg);
        }
    }
    if (!mopt_grow((void **)&p->steps, &p->cap, (size_t)p->n + 1, sizeof *p->steps)) {
        mopt_options_free(v);
        return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    }
    p->steps[p->n++] = (step){d, v};
    return MOPT_OK;
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = '\0';
    return s;
}

/* "name<k=v;k=v>" or "name" */
static mopt_status parse_item(mopt_pipeline *p, char *item, mopt_error *err) {
    item = trim(item);
    char *lt = strchr(item, '<');
    mopt_options *raw = mopt_options_new();
    if (!raw) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    mopt_status st = MOPT_OK;
    if (lt) {
        char *gt = item + strlen(item) - 1;
        if (*gt != '>') {
            mopt_options_free(raw);
            return MOPT_FAIL(err, MOPT_E_INVALID, "pipeline: '%s' has '<' without a closing '>'", item);
        }
        *lt = '\0';
        *gt = '\0';
        char *save = NULL;
        for (char *kv = strtok_r(lt + 1, ";", &save); kv && st == MOPT_OK; kv = strtok_r(NULL, ";", &save)) {
            kv = trim(kv);
            if (!*kv) continue;
            char *eq = strchr(kv, '=');
            if (!eq) {
                st = MOPT_FAIL(err, MOPT_E_INVALID, "pipeline: option '%s' of %s needs a value (key=value)", kv, trim(item));
                break;
            }
            *eq = '\0';
            st = mopt_options_set(raw, trim(kv), trim(eq + 1), err);
        }
    }
    char *name = trim(item);
    if (st == MOPT_OK && !*name) st = MOPT_FAIL(err, MOPT_E_INVALID, "pipeline: empty pass name");
    if (st == MOPT_OK) st = mopt_pipeline_add(p, name, raw, err);
    mopt_options_free(raw);
    return st;
}

mopt_status mopt_pipeline_parse(mopt_pipeline *p, const char *text, mopt_error *err) {
    char *copy = strdup(text);
    if (!copy) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    mopt_status st = MOPT_OK;
    int depth = 0;
    char *start = copy;
    for (char *c = copy;; c++) {
        if (*c == '<') depth++;
        if (*c == '>') depth--;
        if (depth < 0) {
            st = MOPT_FAIL(err, MOPT_E_INVALID, "pipeline: unbalanced '>' in '%s'", text);
            break;
        }
        if ((*c == ',' && depth == 0) || *c == '\0') {
            int end = *c == '\0';
            *c = '\0';
            if (*trim(start)) st = parse_item(p, start, err);
            else if (!end || start != copy) st = MOPT_FAIL(err, MOPT_E_INVALID, "pipeline: empty item in '%s'", text);
            if (st || end) break;
            start = c + 1;
        }
    }
    if (st == MOPT_OK && depth != 0) st = MOPT_FAIL(err, MOPT_E_INVALID, "pipeline: unbalanced '<' in '%s'", text);
    if (st == MOPT_OK && p->n == 0) st = MOPT_FAIL(err, MOPT_E_INVALID, "pipeline: no passes in '%s'", text);
    free(copy);
    return st;
}

mopt_status mopt_pipeline_run(const mopt_pipeline *p, mopt_model *model, const mopt_run_opts *opts_in,
                              mopt_report *report, mopt_error *err) {
    mopt_run_opts o;
    mopt_run_opts_default(&o);
    mopt_opts_over(&o, sizeof o, opts_in);
    for (int32_t i = 0; i < p->n; i++) {
        const step *s = &p->steps[i];
        if (mopt_interrupted()) return MOPT_FAIL(err, MOPT_E_INTERRUPTED, "interrupted before %s", s->desc->name);
        char opts[1024];
        mopt_options_str(s->opts, opts, sizeof opts);
        if (o.before) o.before(o.user, i, s->desc->name, opts);
        if (mopt_report_begin(report, s->desc->name, mopt_pass_kind_name((mopt_pass_kind)s->desc->kind), opts))
            return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
        mopt_pass_ctx ctx = {model, o.n_threads, o.quiet, s->desc->name, mopt_now(), 0, o.write_root,
                             o.log ? o.log : mopt_log_stderr, o.log_user};
        mopt_error perr = {0};
        mopt_status st = s->desc->run(&mopt_host, &ctx, model ? mopt_model_graph(model) : NULL, s->opts, report, &perr);
        double secs = mopt_now() - ctx.start;
        if (st != MOPT_OK && !perr.msg[0]) snprintf(perr.msg, sizeof perr.msg, "%s", mopt_status_str(st));
        mopt_report_end(report, st, secs, st ? perr.msg : NULL);
        if (o.after) o.after(o.user, i, s->desc->name, st, secs);
        /* One line per finished pass; a failure is reported once, by the caller, through err. */
        if (!o.quiet && st == MOPT_OK) {
            char line[1200];
            snprintf(line, sizeof line, "[%d/%d] %s<%s> done in %.2f s", i + 1, p->n, s->desc->name, opts, secs);
            ctx.log(ctx.log_user, MOPT_LOG_INFO, line);
        }
        if (st) return MOPT_FAIL(err, st, "%s: %s", s->desc->name, perr.msg);
    }
    return MOPT_OK;
}
