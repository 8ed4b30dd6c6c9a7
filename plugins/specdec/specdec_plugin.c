/* plugins/specdec: draft-model and prompt-lookup speculative decoding as
 * passes: specdec.generate (one prompt, the text and statistics into the
 * report) and eval.specdec (a prompt set with and without speculation:
 * identical output check for greedy, statistics, wall-clock speedup). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spec.h"

static mopt_status read_cfg(const mopt_host_api *h, const mopt_options *o, spec_cfg *c, mopt_error *err) {
    const char *k = h->opt_string(o, "k");
    memset(c, 0, sizeof *c);
    c->adaptive = !strcmp(k, "auto");
    char *end = NULL;
    long v = c->adaptive ? 8 : strtol(k, &end, 10);
    if (!c->adaptive && (!*k || *end || v < 0 || v > 64))
        return h->error_set(err, MOPT_E_INVALID, "specdec", "k must be 0..64 or auto, got '%s'", k);
    c->k = (int32_t)v;
    c->lookup_n = (int32_t)h->opt_int(o, "lookup");
    c->temperature = (float)h->opt_float(o, "temp");
    c->top_p = (float)h->opt_float(o, "top_p");
    c->seed = (uint64_t)h->opt_int(o, "seed");
    c->uniform = h->opt_bool(o, "uniform_draft");
    if (c->lookup_n > 0 && h->opt_is_set(o, "draft"))
        return h->error_set(err, MOPT_E_INVALID, "specdec", "give either draft=MODEL or lookup=N, not both");
    if (c->lookup_n == 0 && !c->uniform && !h->opt_is_set(o, "draft")) c->k = 0; /* nothing proposes: plain decoding */
    return MOPT_OK;
}

static mopt_session *session(const mopt_host_api *h, mopt_pass_ctx *ctx, const mopt_graph *g, mopt_error *err) {
    mopt_session_opts so = {0};
    so.struct_size = sizeof so;
    so.n_threads = h->ctx_n_threads(ctx);
    return h->session_new(g, &so, err);
}

static void report_stats(const mopt_host_api *h, mopt_report *r, const spec_stats *s, const char *prefix) {
    char key[64];
#define M(name, v) (snprintf(key, sizeof key, "%s%s", prefix, name), h->report_metric(r, key, v))
    M("rounds", (double)s->rounds);
    M("proposed", (double)s->proposed);
    M("accepted", (double)s->accepted);
    M("acceptance_rate", s->proposed ? (double)s->accepted / (double)s->proposed : 0);
    M("tokens_per_target_call", s->rounds ? (double)s->generated / (double)s->rounds : 0);
    M("draft_seconds", s->draft_s);
    M("target_seconds", s->target_s);
    M("wall_seconds", s->wall_s);
    M("generated", (double)s->generated);
#undef M
}

typedef struct {
    mopt_model *draft;
    mopt_session *ts, *ds;
    int32_t V, eos;
} rig;

static mopt_status rig_open(const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *g, const mopt_options *o, rig *r,
                            mopt_error *err) {
    memset(r, 0, sizeof *r);
    mopt_model *m = h->ctx_model(ctx);
    if (!m || !g) return h->error_set(err, MOPT_E_INVALID, "specdec", "needs a model");
    r->V = h->graph_arch(g)->vocab_size;
    r->eos = h->graph_arch(g)->eos_id;
    if (!(r->ts = session(h, ctx, g, err))) return MOPT_E_NOMEM;
    if (h->opt_is_set(o, "draft")) {
        if (!(r->draft = h->model_load(h->opt_string(o, "draft"), NULL, err))) return err->code;
        mopt_status st = spec_same_tokenizer(h, m, r->draft, err);
        if (!st && h->graph_arch(h->model_graph(r->draft))->vocab_size != r->V)
            st = h->error_set(err, MOPT_E_INVALID, "specdec", "the draft's vocabulary size differs from the target's");
        if (st) return st;
        if (!(r->ds = session(h, ctx, h->model_graph(r->draft), err))) return MOPT_E_NOMEM;
    }
    return MOPT_OK;
}

static void rig_close(const mopt_host_api *h, rig *r) {
    if (r->ts) h->session_free(r->ts);
    if (r->ds) h->session_free(r->ds);
    if (r->draft) h->model_free(r->draft);
}

static mopt_status run_generate(const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *g, const mopt_options *o,
                                mopt_report *report, mopt_error *err) {
    spec_cfg cfg;
    rig r = {0}; /* closed even when the options are refused before it opens */
    mopt_status st = read_cfg(h, o, &cfg, err);
    if (!st) st = rig_open(h, ctx, g, o, &r, err);
    const mopt_tokenizer *tok = st ? NULL : h->model_tokenizer(h->ctx_model(ctx));
    if (!st && !tok) st = h->error_set(err, MOPT_E_INVALID, "specdec.generate", "the model has no tokenizer");
    int32_t *ids = NULL, *out = NULL, n_out = 0;
    size_t n = 0;
    const int32_t N = (int32_t)h->opt_int(o, "n");
    const char *prompt = h->opt_string(o, "prompt");
    if (!st) st = h->tokenizer_encode(tok, prompt ? prompt : "", prompt ? strlen(prompt) : 0, MOPT_TOK_ADD_SPECIAL, &ids, &n, err);
    if (!st && n == 0) st = h->error_set(err, MOPT_E_INVALID, "specdec.generate", "empty prompt and no BOS token");
    if (!st && (int64_t)n + N + cfg.k + 1 > h->graph_arch(g)->max_ctx)
        st = h->error_set(err, MOPT_E_INVALID, "specdec.generate", "prompt %zu + n %d + k exceed the context of %d", n, N, h->graph_arch(g)->max_ctx);
    spec_stats s;
    if (!st && !(out = malloc((size_t)N * sizeof *out))) st = h->error_set(err, MOPT_E_NOMEM, "specdec", "out of memory");
    if (!st) st = spec_generate(h, r.ts, r.ds, r.V, ids, (int32_t)n, N, r.eos, &cfg, out, &n_out, &s, err);
    if (!st) {
        size_t cap = (size_t)n_out * 64 + 1, len = 0;
        char *text = malloc(cap);
        int32_t *all = malloc(((size_t)n + (size_t)n_out) * sizeof *all);
        if (text && all) {
            memcpy(all, ids, n * sizeof *all);
            for (int32_t i = 0; i < n_out; i++) {
                int64_t k = h->tokenizer_decode_next(tok, all, n + (size_t)i, out[i], text + len, cap - len - 1);
                if (k > 0) len += (size_t)k;
                all[n + (size_t)i] = out[i];
            }
            text[len] = '\0';
            h->report_string(report, "text", text);
        }
        free(text);
        free(all);
        report_stats(h, report, &s, "");
        double *ids_d = malloc((size_t)(n_out ? n_out : 1) * sizeof *ids_d);
        for (int32_t i = 0; ids_d && i < n_out; i++) ids_d[i] = out[i];
        if (ids_d) h->report_series(report, "tokens", ids_d, n_out);
        free(ids_d);
    }
    free(ids);
    free(out);
    rig_close(h, &r);
    return st;
}

static mopt_status run_eval(const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *g, const mopt_options *o,
                            mopt_report *report, mopt_error *err) {
    spec_cfg cfg, plain;
    rig r = {0}; /* closed even when the options are refused before it opens */
    mopt_status st = read_cfg(h, o, &cfg, err);
    if (!st) st = rig_open(h, ctx, g, o, &r, err);
    if (!st && cfg.k == 0) st = h->error_set(err, MOPT_E_INVALID, "eval.specdec", "needs draft=MODEL or lookup=N");
    plain = cfg;
    plain.k = 0;
    plain.adaptive = 0;
    const int32_t N = (int32_t)h->opt_int(o, "n"), runs = (int32_t)h->opt_int(o, "runs");
    char *text = NULL;
    size_t tl = 0;
    if (!st) st = h->read_file(h->opt_string(o, "prompts"), &text, &tl, err);
    spec_stats tot = {0};
    double plain_wall = 0, spec_wall = 0;
    int64_t prompts = 0, identical = 0;
    int32_t *a = malloc((size_t)N * sizeof *a), *b = malloc((size_t)N * sizeof *b);
    if (!st && (!a || !b)) st = h->error_set(err, MOPT_E_NOMEM, "eval.specdec", "out of memory");
    for (char *line = text, *next; !st && line && *line; line = next) {
        next = strchr(line, '\n');
        size_t ll = next ? (size_t)(next - line) : strlen(line);
        if (next) next++;
        if (!ll) continue;
        int32_t *ids;
        size_t n;
        if ((st = h->tokenizer_encode(h->model_tokenizer(h->ctx_model(ctx)), line, ll, MOPT_TOK_ADD_SPECIAL, &ids, &n, err))) break;
        double best_plain = 1e30, best_spec = 1e30; /* medians would need more runs; the best of `runs` is stable */
        int32_t na = 0, nb = 0;
        for (int32_t k = 0; k < runs && !st; k++) {
            spec_stats sp, ss;
            st = spec_generate(h, r.ts, NULL, r.V, ids, (int32_t)n, N, r.eos, &plain, a, &na, &sp, err);
            if (!st) st = spec_generate(h, r.ts, r.ds, r.V, ids, (int32_t)n, N, r.eos, &cfg, b, &nb, &ss, err);
            if (st) break;
            if (sp.wall_s < best_plain) best_plain = sp.wall_s;
            if (ss.wall_s < best_spec) best_spec = ss.wall_s;
            if (k == 0) {
                tot.rounds += ss.rounds, tot.proposed += ss.proposed, tot.accepted += ss.accepted;
                tot.generated += ss.generated, tot.draft_s += ss.draft_s, tot.target_s += ss.target_s;
            }
        }
        free(ids);
        if (st) break;
        plain_wall += best_plain;
        spec_wall += best_spec;
        tot.wall_s += best_spec;
        identical += na == nb && !memcmp(a, b, (size_t)na * sizeof *a);
        prompts++;
        h->progress(ctx, prompts, prompts);
    }
    if (!st && prompts == 0) st = h->error_set(err, MOPT_E_INVALID, "eval.specdec", "no prompt in %s (one per line)", h->opt_string(o, "prompts"));
    if (!st) {
        report_stats(h, report, &tot, "");
        h->report_metric(report, "prompts", (double)prompts);
        h->report_metric(report, "plain_wall_seconds", plain_wall);
        h->report_metric(report, "speedup", plain_wall / spec_wall);
        if (cfg.temperature <= 0) h->report_metric(report, "identical_to_plain", (double)identical / (double)prompts);
    }
    free(a);
    free(b);
    h->free(text);
    rig_close(h, &r);
    return st;
}

#define SPEC_OPTS                                                                                                  \
    {"draft", MOPT_OPT_MODEL, 0, "draft model with the same tokenizer", NULL, 0, -1, NULL},                     \
    {"k", MOPT_OPT_STRING, 0, "tokens proposed per round, or auto (adaptive up to 8)", "4", 0, -1, NULL},       \
    {"lookup", MOPT_OPT_INT, 0, "prompt-lookup n-gram size instead of a draft model (0: off)", "0", 0, 64, NULL}, \
    {"temp", MOPT_OPT_FLOAT, 0, "temperature (0: greedy)", "0", 0, 100, NULL},                                  \
    {"top_p", MOPT_OPT_FLOAT, 0, "nucleus mass", "1", 0, 1, NULL},                                               \
    {"seed", MOPT_OPT_INT, 0, "sampling seed", "0", 0, 9007199254740991.0, NULL},                                \
    {"n", MOPT_OPT_INT, 0, "new tokens", "128", 1, 1 << 20, NULL},                                              \
    {"uniform_draft", MOPT_OPT_BOOL, 0, "diagnostic: propose uniformly random tokens (checks exactness)", "false", 0, -1, NULL}

static const mopt_opt_spec gen_opts[] = {SPEC_OPTS, {"prompt", MOPT_OPT_STRING, 0, "prompt text", "", 0, -1, NULL}};
static const mopt_opt_spec eval_opts[] = {
    SPEC_OPTS,
    {"prompts", MOPT_OPT_DATASET, MOPT_OPT_REQUIRED, "prompts, one per line", NULL, 0, -1, NULL},
    {"runs", MOPT_OPT_INT, 0, "timed runs per prompt (the fastest counts)", "3", 1, 100, NULL},
};

static const mopt_pass_desc generate_pass = {
    .struct_size = sizeof(mopt_pass_desc), .kind = MOPT_PASS_ANALYSIS, .name = "specdec.generate",
    .summary = "generate with draft-model or prompt-lookup speculation (exact for greedy and sampling)",
    .opts = gen_opts, .n_opts = sizeof gen_opts / sizeof *gen_opts, .run = run_generate};
static const mopt_pass_desc eval_pass = {
    .struct_size = sizeof(mopt_pass_desc), .kind = MOPT_PASS_ANALYSIS, .name = "eval.specdec",
    .summary = "a prompt set with and without speculation: acceptance, tokens per target call, speedup",
    .opts = eval_opts, .n_opts = sizeof eval_opts / sizeof *eval_opts, .run = run_eval};

MOPT_PLUGIN_DEFINE("specdec", "0.1.0", "MIT",
                   "speculative decoding: draft model and prompt lookup",
                   &generate_pass, &eval_pass)
