/* quant.awq: activation-aware weight quantization as AutoAWQ computes it.
 * Per decoder block, on the calibration inputs of the full-precision model:
 *   1. scale groups read from the graph: a norm and the linears it feeds
 *      (judged on the block's output: attention for q/k/v, the MLP for
 *      gate/up), v -> o when their shapes match (no GQA), up -> down when the
 *      activation is SwiGLU (linear in up);
 *   2. per group, a 20-point grid over r in [0, 0.95]: s = x_mean^r (llm-awq;
 *      AutoAWQ's duo_scaling divides by w_mean^(1-r) + 1e-4), s /= sqrt(max s * min s), judged by
 *      the MSE of the module output with W <- Q(W diag(s)) / s (judge=linear: of
 *      the scaled linears' own outputs, ModelOpt's awq_lite, from the inputs'
 *      Gram matrix; a group whose module is its one linear is judged that way
 *      whenever it is cheaper: the same loss);
 *   3. the best s is folded into the preceding norm or linear (exact in full
 *      precision) and the scaled linears' columns;
 *   4. clip search (not for q/k): per output row and group, the max |w| shrunk
 *      by 0..45% in 10 steps, judged on 512 sampled tokens;
 *   5. round-to-nearest packing with AWQ's asymmetric grid.
 * The next block's input is the full-precision output, as in AutoAWQ.
 * Onto GGUF blocks (gguf_type): the grid in steps 2 and 5 is the block type
 * export.gguf gives each linear, quantized as llama-quantize does with an
 * importance matrix (the mean x^2 of the cached inputs, divided by s^2 as the
 * scaled inputs are); ggml's own scale search replaces the clip search. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "calib.h"
#include "gram.h"
#include "passes.h"
#include "qcommon.h"

#define MAX_LAYER_LINEARS 32 /* linears of one decoder block */

#define AWQ_GRID 20
#define AWQ_MAX_LIN 4
#define CLIP_TOKENS 512
#define CLIP_STEPS 10
#define AWQ_TASK_ROWS 256 /* output rows per task of the trial weights and the clip search (rows are independent) */

typedef struct agroup {
    int32_t prev_node;               /* norm or linear whose output channels carry 1/s */
    int32_t lin[AWQ_MAX_LIN], n_lin; /* indices into the layer's qlinear array */
    int32_t first, last;             /* inspected node range [first, last] */
    int32_t in_value, out_value;     /* module input (= the linears' input) and output */
    int64_t width;                   /* channels scaled */
    int judge_linear;                /* judged at the linears' outputs, from the input's Gram matrix */
} agroup;

typedef struct cache {
    int32_t value;  /* graph value captured */
    int64_t width;
    float *data;    /* [S, L, width] */
} cache;

typedef struct capture {
    cache *c;
    int32_t nc, S, L;
    const mopt_host_api *h;
    mopt_graph *g;
} capture;

static void grab(void *user, int32_t sample, int32_t node, const float *const *in, const int32_t *in_w,
                 const float *out, int32_t out_w, int32_t T) {
    capture *cp = user;
    if (sample >= cp->S) return;
    const mopt_node *nd = cp->h->graph_node(cp->g, node);
    for (int32_t k = 0; k < cp->nc; k++) {
        cache *c = &cp->c[k];
        const float *src = NULL;
        if (nd->output == c->value) src = out;
        for (int32_t i = 0; i < nd->n_inputs && !src; i++)
            if (nd->inputs[i] == c->value) src = in[i];
        if (src) memcpy(c->data + (size_t)sample * cp->L * c->width, src, (size_t)T * c->width * sizeof(float));
    }
}

static cache *find_cache(cache *cs, int32_t n, int32_t value) {
    for (int32_t i = 0; i < n; i++)
        if (cs[i].value == value) return &cs[i];
    return NULL;
}

/* MSE of the module's output against the reference, over the S samples. */
static mopt_status module_loss(calib *c, const agroup *gr, cache *in, cache *ref, int32_t S, double *loss,
                               mopt_error *err) {
    const mopt_host_api *h = c->h;
    double sum = 0;
    const size_t per = (size_t)c->L * ref->width;
    for (int32_t i = 0; i < S; i++) {
        mopt_status st = h->session_set_value(c->s, in->value, in->data + (size_t)i * c->L * in->width, c->L, err);
        if (!st) st = h->session_run_range(c->s, gr->first, gr->last + 1, NULL, c->L, NULL, NULL, err);
        if (st) return st;
        const float *out = h->session_value(c->s, ref->value), *want = ref->data + (size_t)i * per;
        for (size_t k = 0; k < per; k++) {
            double d = (double)out[k] - want[k];
            sum += d * d;
        }
    }
    *loss = sum / ((double)S * (double)per);
    return MOPT_OK;
}

typedef struct {
    const mopt_host_api *h;
    const qlinear *l;
    const float *W, *s, *imp;
    float *d;
    qspec sp;
    int32_t ty;
    int64_t rows; /* per task */
    mopt_error *err;
    mopt_status st; /* GGUF's quantization failed (one task then: no race) */
} trial_job;

/* A task's rows of the trial weight: scaled, fake-quantized (or onto the GGUF blocks), scaled back. */
static void trial_rows(void *user, int64_t task, int32_t thread) {
    (void)thread;
    trial_job *j = user;
    const int64_t in = j->l->in, r0 = task * j->rows, r1 = r0 + j->rows < j->l->out ? r0 + j->rows : j->l->out;
    for (int64_t r = r0; r < r1; r++)
        for (int64_t c = 0; c < in; c++) j->d[r * in + c] = j->W[r * in + c] * j->s[c];
    if (j->ty < 0) q_fake_quant(j->h, j->d + r0 * in, r1 - r0, in, j->sp);
    else if (q_gguf_grid(j->ty)) j->st = q_gguf_quantize(j->h, j->ty, j->d + r0 * in, r1 - r0, in, j->imp, NULL, 1, j->err);
    for (int64_t r = r0; r < r1; r++)
        for (int64_t c = 0; c < in; c++) j->d[r * in + c] /= j->s[c];
}

/* Fake-quantized W diag(s) / s into d [out, in]. ty >= 0: onto that GGUF block type,
 * weighted by imp (the scaled inputs' mean x^2), when it is a grid; a linear the export alone quantizes keeps W.
 * The integer grid's rows go over the session's threads in blocks; NVFP4 (one scale from every row's max |w|) and
 * GGUF in one task. */
static mopt_status trial_into(const mopt_host_api *h, mopt_session *se, const qlinear *l, const float *W, const float *s, qspec sp,
                              int32_t ty, const float *imp, float *d, mopt_error *err) {
    trial_job j = {h, l, W, s, imp, d, sp, ty, ty < 0 && !sp.nvfp4 ? AWQ_TASK_ROWS : l->out, err, MOPT_OK};
    h->session_parallel_for(se, (l->out + j.rows - 1) / j.rows, trial_rows, &j);
    return j.st;
}

/* The same as a tensor named like the weight, to swap into the graph. */
static mopt_tensor *trial_weight(const mopt_host_api *h, mopt_session *se, const qlinear *l, const float *W, const float *s, qspec sp,
                                 int32_t ty, const float *imp, mopt_error *err) {
    int64_t dims[2] = {l->out, l->in};
    mopt_tensor *t = h->tensor_new(l->wname, MOPT_DTYPE_F32, 2, dims, err);
    if (t && trial_into(h, se, l, W, s, sp, ty, imp, t->data, err)) {
        h->tensor_free(t);
        return NULL;
    }
    return t;
}

/* Searches the group's scales; returns them in best_s[width]. A group judged at its linears: each candidate by their own
 * output error (from G, the input's Gram matrix) instead of by running the inspected module. */
static mopt_status search_scales(calib *c, const agroup *gr, const qlinear *ls, float **Wf, cache *in, cache *ref,
                                 int32_t S, qspec sp, const int32_t *tys, int duo, float *best_s, mopt_error *err) {
    const mopt_host_api *h = c->h;
    const int judge_linear = gr->judge_linear;
    const int64_t width = gr->width, ntok = (int64_t)S * c->L;
    double *x_mean = calloc((size_t)width, sizeof *x_mean), *w_mean = calloc((size_t)width, sizeof *w_mean), *x_sq = calloc((size_t)width, sizeof *x_sq);
    float *s = malloc((size_t)width * sizeof *s), *imp = malloc((size_t)width * sizeof *imp);
    mopt_status st = MOPT_OK;
    if (!x_mean || !w_mean || !s || !x_sq || !imp) st = h->error_set(err, MOPT_E_NOMEM, "quant.awq", "out of memory");
    float *G = !st && judge_linear ? gram_factor_of_inputs(h, c->s, in->data, ntok, width, err) : NULL; /* err says why not */
    if (!st && judge_linear && !G) st = err && err->code ? (mopt_status)err->code : MOPT_E_NOMEM;
    int64_t most_rows = 0; /* judged at the linears: one buffer for every trial weight, not a fresh tensor each */
    for (int32_t k = 0; k < gr->n_lin; k++) most_rows = ls[gr->lin[k]].out > most_rows ? ls[gr->lin[k]].out : most_rows;
    float *trial = !st && judge_linear ? malloc((size_t)(most_rows * width) * sizeof *trial) : NULL;
    if (!st && judge_linear && !trial) st = h->error_set(err, MOPT_E_NOMEM, "quant.awq", "out of memory");
    /* x_mean[j]: mean |x_j| over tokens; x_sq[j]: sum of x_j^2 (its mean weighs the GGUF blocks) */
    for (int64_t t = 0; !st && t < ntok; t++)
        for (int64_t j = 0; j < width; j++) {
            const float x = in->data[t * width + j];
            x_mean[j] += fabsf(x);
            x_sq[j] += (double)x * x;
        }
    for (int64_t j = 0; !st && j < width; j++) x_mean[j] /= (double)ntok;
    /* w_mean[j]: mean over the concatenated rows of |w| / (group max |w| + 1e-6) */
    int64_t rows = 0;
    const int64_t gs = sp.group > 0 ? sp.group : width;
    for (int32_t k = 0; !st && k < gr->n_lin; k++) {
        const qlinear *l = &ls[gr->lin[k]];
        for (int64_t r = 0; r < l->out; r++)
            for (int64_t c0 = 0; c0 < width; c0 += gs) {
                int64_t c1 = c0 + gs < width ? c0 + gs : width;
                float mx = 0;
                for (int64_t j = c0; j < c1; j++) mx = q_max(mx, fabsf(Wf[k][r * width + j]));
                for (int64_t j = c0; j < c1; j++) w_mean[j] += fabsf(Wf[k][r * width + j]) / (mx + 1e-6);
            }
        rows += l->out;
    }
    for (int64_t j = 0; !st && j < width; j++) w_mean[j] /= (double)rows;
    double best = INFINITY;
    for (int32_t i = 0; !st && i < AWQ_GRID; i++) {
        const double ratio = (double)i / AWQ_GRID;
        double mx = 0, mn = INFINITY;
        for (int64_t j = 0; j < width; j++) {
            double v = duo ? pow(x_mean[j], ratio) / (pow(w_mean[j], 1 - ratio) + 1e-4) : pow(x_mean[j], ratio);
            if (v < 1e-4) v = 1e-4;
            s[j] = (float)v;
            mx = fmax(mx, v);
            mn = fmin(mn, v);
        }
        const float norm = (float)sqrt(mx * mn);
        for (int64_t j = 0; j < width; j++) s[j] /= norm;
        for (int64_t j = 0; j < width; j++) imp[j] = (float)(x_sq[j] / (double)ntok / ((double)s[j] * s[j]));
        /* swap the trial weights in, measure, swap the originals back; or judged at the linears, from G */
        mopt_tensor *orig[AWQ_MAX_LIN] = {0};
        double loss = judge_linear ? 0 : INFINITY;
        for (int32_t k = 0; k < gr->n_lin && !st; k++) {
            const qlinear *l = &ls[gr->lin[k]];
            if (judge_linear) {
                double e = 0;
                st = trial_into(h, c->s, l, Wf[k], s, sp, tys[gr->lin[k]], imp, trial, err);
                if (!st) st = gram_output_error(h, c->s, Wf[k], trial, l->out, l->in, G, &e, err);
                loss += e;
                continue;
            }
            mopt_tensor *t = trial_weight(h, c->s, l, Wf[k], s, sp, tys[gr->lin[k]], imp, err);
            if (!t) st = err && err->code ? (mopt_status)err->code : MOPT_E_NOMEM; /* err says which */
            else orig[k] = h->graph_swap_tensor(c->g, t, err);
        }
        if (!st && !judge_linear) st = module_loss(c, gr, in, ref, S, &loss, err);
        for (int32_t k = 0; k < gr->n_lin; k++)
            if (orig[k]) h->tensor_free(h->graph_swap_tensor(c->g, orig[k], NULL));
        if (!st && loss < best) {
            best = loss;
            memcpy(best_s, s, (size_t)width * sizeof *s);
        }
    }
    free(x_mean);
    free(w_mean);
    free(s);
    free(x_sq);
    free(imp);
    free(G);
    free(trial);
    return st;
}

typedef struct {
    const mopt_host_api *h;
    float *W;
    int64_t out, in, ntok, rows; /* rows per task */
    const float *x;
    qspec sp;
    uint8_t *no_memory; /* per task: its buffers could not be had (then its rows are left unclipped) */
} clip_job;

/* Clip search on a task's rows of W (already scaled) with inputs x [ntok, in] (already divided by s); each row's
 * search is its own, so a task takes a block of rows (NVFP4's all of them: its fake quantization takes one global
 * scale from the max |w| of every row). */
static void clip_rows(void *user, int64_t task, int32_t thread) {
    (void)thread;
    const clip_job *j = user;
    const mopt_host_api *h = j->h;
    const int64_t r0 = task * j->rows, out = (r0 + j->rows < j->out ? j->rows : j->out - r0), in = j->in;
    float *W = j->W + r0 * in;
    const float *x = j->x;
    const qspec sp = j->sp;
    const int64_t ntok = j->ntok, step = ntok / CLIP_TOKENS > 0 ? ntok / CLIP_TOKENS : 1, T = (ntok + step - 1) / step;
    const int64_t gs = sp.group > 0 ? sp.group : in;
    float *Xg = malloc((size_t)(T * gs) * sizeof *Xg), *Wg = malloc((size_t)(out * gs) * sizeof *Wg);
    float *Wq = malloc((size_t)(out * gs) * sizeof *Wq), *org = malloc((size_t)(T * out) * sizeof *org);
    float *cur = malloc((size_t)(T * out) * sizeof *cur), *amax = malloc((size_t)out * sizeof *amax);
    float *best = malloc((size_t)out * sizeof *best);
    double *min_err = malloc((size_t)out * sizeof *min_err), *err_r = malloc((size_t)out * sizeof *err_r);
    if (!Xg || !Wg || !Wq || !org || !cur || !amax || !best || !min_err || !err_r) {
        j->no_memory[task] = 1;
        goto done;
    }
    for (int64_t c0 = 0; c0 < in; c0 += gs) {
        const int64_t n = c0 + gs < in ? gs : in - c0;
        for (int64_t t = 0; t < T; t++) memcpy(Xg + t * n, x + (t * step) * in + c0, (size_t)n * sizeof *Xg);
        for (int64_t r = 0; r < out; r++) {
            memcpy(Wg + r * n, W + r * in + c0, (size_t)n * sizeof *Wg);
            float m = 0;
            for (int64_t j = 0; j < n; j++) m = q_max(m, fabsf(Wg[r * n + j]));
            amax[r] = best[r] = m;
            min_err[r] = INFINITY;
        }
        h->sgemm(0, 1, (int32_t)T, (int32_t)out, (int32_t)n, 1.0f, Xg, (int32_t)n, Wg, (int32_t)n, 0.0f, org, (int32_t)out);
        for (int32_t k = 0; k < CLIP_STEPS; k++) {
            for (int64_t r = 0; r < out; r++) {
                const float mv = amax[r] * (1.0f - (float)k / AWQ_GRID);
                for (int64_t j = 0; j < n; j++) Wq[r * n + j] = q_min(mv, q_max(-mv, Wg[r * n + j]));
            }
            qspec g1 = sp;
            g1.group = -1; /* each row of Wq is exactly one group here */
            q_fake_quant(h, Wq, out, n, g1);
            h->sgemm(0, 1, (int32_t)T, (int32_t)out, (int32_t)n, 1.0f, Xg, (int32_t)n, Wq, (int32_t)n, 0.0f, cur, (int32_t)out);
            for (int64_t r = 0; r < out; r++) err_r[r] = 0;
            for (int64_t t = 0; t < T; t++) /* token by token, rows along: each row's sum in token order, read in place */
                for (int64_t r = 0; r < out; r++) {
                    const double d = (double)cur[t * out + r] - org[t * out + r];
                    err_r[r] += d * d;
                }
            for (int64_t r = 0; r < out; r++) {
                const double e = err_r[r] / (double)T;
                if (e < min_err[r]) {
                    min_err[r] = e;
                    best[r] = amax[r] * (1.0f - (float)k / AWQ_GRID);
                }
            }
        }
        for (int64_t r = 0; r < out; r++)
            for (int64_t j = 0; j < n; j++) W[r * in + c0 + j] = q_min(best[r], q_max(-best[r], W[r * in + c0 + j]));
    }
done:
    free(Xg);
    free(Wg);
    free(Wq);
    free(org);
    free(cur);
    free(amax);
    free(best);
    free(min_err);
    free(err_r);
}

/* Fails (out of memory) rather than leave rows unclipped without a word. */
static mopt_status search_clip(const mopt_host_api *h, mopt_session *s, float *W, int64_t out, int64_t in, const float *x, int64_t ntok,
                               qspec sp, mopt_error *err) {
    const int64_t rows = sp.nvfp4 ? out : AWQ_TASK_ROWS, tasks = (out + rows - 1) / rows;
    uint8_t *no_memory = calloc((size_t)tasks, 1);
    if (!no_memory) return h->error_set(err, MOPT_E_NOMEM, "quant.awq", "out of memory for the clip search");
    clip_job j = {h, W, out, in, ntok, rows, x, sp, no_memory};
    h->session_parallel_for(s, tasks, clip_rows, &j);
    int failed = 0;
    for (int64_t t = 0; t < tasks; t++) failed |= no_memory[t];
    free(no_memory);
    return failed ? h->error_set(err, MOPT_E_NOMEM, "quant.awq", "out of memory for the clip search of a %lld x %lld linear",
                                 (long long)out, (long long)in)
                  : MOPT_OK;
}

/* Divides the output channels of the group's predecessor by s: a norm's
 * weight (and bias), or a linear's rows (and bias). */
static mopt_status fold_into_prev(const mopt_host_api *h, mopt_graph *g, const mopt_node *prev, const float *s,
                                  int64_t width, mopt_error *err) {
    const mopt_tensor *parts[2] = {prev->weight, prev->bias};
    for (int p = 0; p < 2; p++) {
        const mopt_tensor *t = parts[p];
        if (!t) continue;
        const int64_t n = h->tensor_nelements(t), cols = t->ndim == 2 ? t->ne[0] : 1, rows = n / cols;
        float *d = malloc((size_t)n * sizeof *d);
        if (!d) return h->error_set(err, MOPT_E_NOMEM, "quant.awq", "out of memory");
        mopt_status st = t->ndim == 2 ? MOPT_OK : h->tensor_read_f32(t, 0, n, d, err);
        for (int64_t r = 0; !st && t->ndim == 2 && r < rows; r++) st = h->weight_row_f32(t, r, d + r * cols, err);
        /* the last `width` rows (v of a fused qkv would be the tail) or elements */
        for (int64_t r = rows - width; !st && r < rows; r++)
            for (int64_t j = 0; j < cols; j++) d[r * cols + j] /= s[r - (rows - width)];
        int64_t dims[2] = {rows, cols};
        if (!st) st = q_install_f32(h, g, t->name, t->ndim, t->ndim == 2 ? dims : &dims[0], d, err);
        free(d);
        if (st) return st;
    }
    return MOPT_OK;
}

/* A scaled linear onto its GGUF blocks, weighted by the mean x^2 of its (scaled) cached inputs in [ntok, in]; a type
 * that is no grid keeps the scaled float weight for the export to quantize. */
static mopt_status pack_gguf(const mopt_host_api *h, mopt_graph *g, const qlinear *lin, int32_t ty, float *W, const cache *in,
                             int64_t ntok, mopt_error *err) {
    if (!q_gguf_grid(ty)) return MOPT_OK;
    const int64_t B = h->ggml_type_block(ty);
    uint8_t *blocks = malloc((size_t)(lin->out * (lin->in / B) * h->ggml_type_block_bytes(ty)));
    float *imp = in ? malloc((size_t)lin->in * sizeof *imp) : NULL;
    double *sum = in ? calloc((size_t)lin->in, sizeof *sum) : NULL;
    mopt_status st = !blocks || (in && (!imp || !sum)) ? h->error_set(err, MOPT_E_NOMEM, "quant.awq", "out of memory") : MOPT_OK;
    for (int64_t t = 0; !st && sum && t < ntok; t++)
        for (int64_t j = 0; j < lin->in; j++) sum[j] += (double)in->data[t * lin->in + j] * in->data[t * lin->in + j];
    for (int64_t j = 0; !st && imp && j < lin->in; j++) imp[j] = (float)(sum[j] / (double)ntok);
    if (!st) st = q_gguf_quantize(h, ty, W, lin->out, lin->in, imp, blocks, 0, err);
    if (!st) st = q_replace(h, g, h->ggml_blocks_tensor(lin->wname, ty, lin->out, lin->in, blocks, err), err);
    free(blocks);
    free(imp);
    free(sum);
    return st;
}

static int find_lin(const qlinear **mine, int32_t k, int32_t role) {
    for (int32_t i = 0; i < k; i++)
        if (mine[i]->role == role) return i;
    return -1;
}

static mopt_status run(const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *g, const mopt_options *o,
                       mopt_report *report, mopt_error *err) {
    qspec sp = q_spec_from(h, o);
    mopt_status st = q_check_spec(h, "quant.awq", sp, err);
    if (st) return st;
    if (!g) return h->error_set(err, MOPT_E_INVALID, "quant.awq", "needs a model");
    if (!strcmp(h->opt_string(o, "format"), "nvfp4")) { /* ModelOpt's NVFP4_AWQ: the scale search judged on NVFP4 weights */
        if (sp.bits != 4 || sp.group != 128 || sp.sym || sp.act || sp.w4a8_static) /* anything but the integer defaults */
            return h->error_set(err, MOPT_E_INVALID, "quant.awq",
                                "format=nvfp4 has a fixed grid (E2M1 in blocks of 16, weight-only here); drop bits, group_size, sym "
                                "and activations");
        sp = (qspec){.bits = 4, .group = 16, .sym = 1, .nvfp4 = 1};
    }
    const char *gguf = h->opt_string(o, "gguf_type");
    if (*gguf && (sp.nvfp4 || sp.act || sp.w4a8_static))
        return h->error_set(err, MOPT_E_INVALID, "quant.awq", "gguf_type quantizes onto GGUF blocks: drop format=nvfp4 and activations");
    /* with nvfp4, clipping is searched per block of 16 (its scale's span), judged on NVFP4 fake quantization; GGUF
     * blocks search their own scales */
    const int do_clip = h->opt_bool(o, "clip") && !*gguf, duo = h->opt_bool(o, "duo_scaling");
    qlinear *ls;
    int32_t n;
    if ((st = q_collect(h, g, o, &ls, &n, err))) return st;
    int32_t *tys = malloc((size_t)n * sizeof *tys); /* each linear's GGUF block type, or -1 (integer grid) */
    if (!tys) {
        free(ls);
        return h->error_set(err, MOPT_E_NOMEM, "quant.awq", "out of memory");
    }
    /* llama-quantize's layout with an importance matrix (a calibrated file is compared with that one): Q4_0 and Q5_0
     * give the first eighth of ffn_down Q4_1 / Q5_1, which are no grid here and are left to the export */
    for (int32_t i = 0; i < n; i++) tys[i] = *gguf ? h->gguf_weight_type(g, gguf, ls[i].wname, 1) : -1;
    if (sp.nvfp4 && (st = q_check_whole_blocks(h, "quant.awq", ls, n, err))) {
        free(ls);
        free(tys);
        return st;
    }
    int64_t before, after, weights;
    q_measure(h, g, ls, n, &before, &weights);
    const mopt_arch *a = h->graph_arch(g);
    calib c;
    /* only the windows the search reads go through the model */
    if ((st = calib_init_first(&c, h, ctx, g, o, (int64_t)a->n_layers * 3, (int32_t)h->opt_int(o, "search_samples"), err))) {
        free(ls);
        free(tys);
        return st;
    }
    const int32_t S = c.N;
    const int judge_all_linear = !strcmp(h->opt_string(o, "judge"), "linear");
    int32_t n_groups_applied = 0;
    for (int32_t l = 0; l < a->n_layers && !st; l++) {
        const qlinear *mine[MAX_LAYER_LINEARS];
        int32_t k = q_layer_linears(ls, n, l, mine, MAX_LAYER_LINEARS);
        /* 1. scale groups, from the graph */
        agroup grs[8];
        int32_t ng = 0;
        for (int32_t i = c.first[l]; i < c.last[l]; i++) {
            const mopt_node *nd = h->graph_node(g, i);
            if (nd->op != MOPT_OP_RMSNORM && nd->op != MOPT_OP_LAYERNORM) continue;
            int32_t end = h->graph_find_node(g, nd->role == MOPT_ROLE_ATTN_NORM ? MOPT_ROLE_ATTN_O : MOPT_ROLE_MLP_DOWN, l);
            agroup gr = {i, {0}, 0, 1 << 30, end, -1, -1, nd->weight->ne[0], 0};
            int32_t cons[8], nc = h->graph_consumers(g, nd->output, cons, 8);
            int all_targets = nc > 0 && end >= 0;
            for (int32_t m = 0; m < nc && m < 8; m++) {
                int idx = -1;
                for (int32_t q = 0; q < k; q++)
                    if (mine[q]->node == cons[m]) idx = q;
                if (idx < 0 || gr.n_lin == AWQ_MAX_LIN) all_targets = 0;
                else {
                    gr.lin[gr.n_lin++] = (int32_t)(mine[idx] - ls);
                    if (cons[m] < gr.first) gr.first = cons[m];
                }
            }
            if (!all_targets) continue;
            gr.in_value = nd->output;
            gr.out_value = h->graph_node(g, end)->output;
            grs[ng++] = gr;
        }
        int vi = find_lin(mine, k, MOPT_ROLE_ATTN_V), oi = find_lin(mine, k, MOPT_ROLE_ATTN_O);
        if (vi >= 0 && oi >= 0 && mine[vi]->out == mine[oi]->in) { /* v -> o, only without GQA */
            const mopt_node *on = h->graph_node(g, mine[oi]->node);
            grs[ng++] = (agroup){mine[vi]->node, {(int32_t)(mine[oi] - ls)}, 1, mine[oi]->node, mine[oi]->node,
                                 on->inputs[0], on->output, mine[oi]->in, 0};
        }
        int ui = find_lin(mine, k, MOPT_ROLE_MLP_UP), di = find_lin(mine, k, MOPT_ROLE_MLP_DOWN);
        int32_t act = h->graph_find_node(g, MOPT_ROLE_MLP_ACT, l);
        if (ui >= 0 && di >= 0 && act >= 0 && h->graph_node(g, act)->op == MOPT_OP_SWIGLU) { /* up -> down */
            const mopt_node *dn = h->graph_node(g, mine[di]->node);
            grs[ng++] = (agroup){mine[ui]->node, {(int32_t)(mine[di] - ls)}, 1, mine[di]->node, mine[di]->node,
                                 dn->inputs[0], dn->output, mine[di]->in, 0};
        }
        /* a group whose inspected module is its one linear has the same loss from the Gram matrix, which is cheaper
         * once the tokens outnumber the input's channels; judge=linear judges every group that way */
        for (int32_t i = 0; i < ng; i++) {
            const int own = grs[i].n_lin == 1 && grs[i].first == grs[i].last && grs[i].first == ls[grs[i].lin[0]].node;
            grs[i].judge_linear = judge_all_linear || (own && (int64_t)S * c.L > grs[i].width);
        }
        /* 2. capture the groups' inputs and outputs (full precision) and the next block's input */
        cache cs[16];
        int32_t nc = 0;
        for (int32_t i = 0; i < ng && !st; i++) {
            int32_t vals[2] = {grs[i].in_value, grs[i].out_value};
            for (int v = 0; v < 2 - grs[i].judge_linear; v++) { /* the output only where a module run is judged */
                if (find_cache(cs, nc, vals[v])) continue;
                cs[nc].value = vals[v];
                cs[nc].width = v == 0 ? grs[i].width : a->dim;
                cs[nc].data = malloc((size_t)S * c.L * (size_t)cs[nc].width * sizeof(float));
                if (!cs[nc].data) st = h->error_set(err, MOPT_E_NOMEM, "quant.awq", "out of memory for cached activations");
                nc++;
            }
        }
        for (int32_t m = 0; m < k && !st && nc < 16; m++) { /* every linear's input, for clipping */
            int32_t v = h->graph_node(g, mine[m]->node)->inputs[0];
            if (find_cache(cs, nc, v)) continue;
            cs[nc].value = v;
            cs[nc].width = mine[m]->in;
            cs[nc].data = malloc((size_t)S * c.L * (size_t)cs[nc].width * sizeof(float));
            if (!cs[nc].data) st = h->error_set(err, MOPT_E_NOMEM, "quant.awq", "out of memory for cached activations");
            nc++;
        }
        capture cp = {cs, nc, S, c.L, h, g};
        if (!st) st = calib_run_layer(&c, l, -1, grab, &cp, 1, err);
        calib_tick(&c);
        /* 3. search every group on the original weights */
        float *scales[8] = {0};
        for (int32_t i = 0; i < ng && !st; i++) {
            float *Wf[AWQ_MAX_LIN] = {0};
            for (int32_t m = 0; m < grs[i].n_lin && !st; m++)
                if (!(Wf[m] = q_weight_f32(h, g, &ls[grs[i].lin[m]], err))) st = MOPT_E_NOMEM;
            scales[i] = malloc((size_t)grs[i].width * sizeof(float));
            if (!st && !scales[i]) st = h->error_set(err, MOPT_E_NOMEM, "quant.awq", "out of memory");
            if (!st)
                st = search_scales(&c, &grs[i], ls, Wf, find_cache(cs, nc, grs[i].in_value),
                                   find_cache(cs, nc, grs[i].out_value), S, sp, tys, duo, scales[i], err);
            for (int32_t m = 0; m < grs[i].n_lin; m++) free(Wf[m]);
        }
        calib_tick(&c);
        /* 4. apply: predecessor / s, linear columns * s, cached inputs / s */
        for (int32_t i = 0; i < ng && !st; i++) {
            st = fold_into_prev(h, g, h->graph_node(g, grs[i].prev_node), scales[i], grs[i].width, err);
            for (int32_t m = 0; m < grs[i].n_lin && !st; m++) {
                const qlinear *lin = &ls[grs[i].lin[m]];
                float *W = q_weight_f32(h, g, lin, err);
                if (!W) {
                    st = MOPT_E_NOMEM;
                    break;
                }
                for (int64_t r = 0; r < lin->out; r++)
                    for (int64_t j = 0; j < lin->in; j++) W[r * lin->in + j] *= scales[i][j];
                int64_t dims[2] = {lin->out, lin->in};
                st = q_install_f32(h, g, lin->wname, 2, dims, W, err);
                free(W);
            }
            cache *in = find_cache(cs, nc, grs[i].in_value);
            for (int64_t t = 0; !st && t < (int64_t)S * c.L; t++)
                for (int64_t j = 0; j < grs[i].width; j++) in->data[t * grs[i].width + j] /= scales[i][j];
            n_groups_applied++;
        }
        /* 5. clip (not q/k: their errors are judged through attention scores), then pack; NVFP4's global scale
         * is shared by the linears that read one input, so every clipped weight is held until all are */
        float *Ws[MAX_LAYER_LINEARS] = {0}, own[MAX_LAYER_LINEARS] = {0}, shared[MAX_LAYER_LINEARS] = {0};
        qlinear held[MAX_LAYER_LINEARS];
        for (int32_t m = 0; m < k && !st; m++) {
            const qlinear *lin = mine[m];
            float *W = Ws[m] = q_weight_f32(h, g, lin, err);
            if (!W) {
                st = MOPT_E_NOMEM;
                break;
            }
            cache *in = find_cache(cs, nc, h->graph_node(g, lin->node)->inputs[0]);
            if (do_clip && in && lin->role != MOPT_ROLE_ATTN_Q && lin->role != MOPT_ROLE_ATTN_K)
                st = search_clip(h, c.s, W, lin->out, lin->in, in->data, (int64_t)S * c.L, sp, err);
            held[m] = *lin;
            for (int64_t e = 0; e < lin->out * lin->in; e++) own[m] = q_max(own[m], fabsf(W[e]));
        }
        if (!st && sp.nvfp4) q_shared_input_amax(h, g, held, k, own, shared);
        for (int32_t m = 0; m < k && !st; m++) {
            const qlinear *lin = mine[m];
            if (*gguf) {
                st = pack_gguf(h, g, lin, tys[lin - ls], Ws[m], find_cache(cs, nc, h->graph_node(g, lin->node)->inputs[0]), (int64_t)S * c.L, err);
                continue;
            }
            st = sp.nvfp4 ? q_replace(h, g, h->mxfp_quantize_shared(lin->wname, MOPT_MXFP_NVFP4, lin->out, lin->in, Ws[m], shared[m], 0, 0.0f, err), err)
                          : q_rtn_install(h, g, lin, sp, Ws[m], "quant.awq", err);
        }
        for (int32_t m = 0; m < k; m++) free(Ws[m]);
        calib_tick(&c);
        for (int32_t i = 0; i < ng; i++) free(scales[i]);
        for (int32_t i = 0; i < nc; i++) free(cs[i].data);
        if (!st) calib_advance(&c); /* full-precision output of this block */
    }
    calib_free(&c);
    if (!st && sp.w4a8_static) st = calib_w4a8_static(h, ctx, g, o, ls, n, err);
    if (!st) {
        q_measure(h, g, ls, n, &after, &weights);
        st = q_report(h, report, g, o, *gguf ? "awq-gguf" : sp.nvfp4 ? "awq-nvfp4" : "awq", sp, before, after, weights, n, err);
        h->report_metric(report, "scale_groups", n_groups_applied);
        h->report_metric(report, "search_samples", S);
        if (*gguf) h->report_string(report, "gguf_type", gguf);
    }
    free(ls);
    free(tys);
    return st;
}

static const char *const awq_formats[] = {"int", "nvfp4", NULL};
static const char *const awq_judges[] = {"module", "linear", NULL};
static const mopt_opt_spec opts[] = {
    {"format", MOPT_OPT_ENUM, 0,
     "int: packed integers (bits, group_size, sym); nvfp4: NVFP4 weights whose AWQ scales and per-16 clipping were searched on "
     "NVFP4 (ModelOpt's NVFP4_AWQ, weight-only; the scales fold into the graph, so it exports as NVFP4)",
     "int", 0, -1, awq_formats},
    Q_INT_OPTS("4", "128"),
    Q_ACT_OPT,
    {"clip", MOPT_OPT_BOOL, 0, "search per-group clipping after scaling (AutoAWQ's apply_clip)", "true", 0, -1, NULL},
    {"search_samples", MOPT_OPT_INT, 0,
     "calibration windows used to judge scales and clipping (only these go through the model)", "64", 1, 4096, NULL},
    {"judge", MOPT_OPT_ENUM, 0,
     "module: each scale candidate judged by the output of the module it feeds (attention for q/k/v, the MLP for gate/up; "
     "AutoAWQ); linear: by the scaled linears' own outputs (ModelOpt's awq_lite), from the inputs' Gram matrix: "
     "several times faster at 1B scale",
     "module", 0, -1, awq_judges},
    {"duo_scaling", MOPT_OPT_BOOL, 0, "AutoAWQ's x_mean^r / w_mean^(1-r) instead of llm-awq's x_mean^r", "false", 0, -1, NULL},
    {"gguf_type", MOPT_OPT_ENUM, 0,
     "search the scales on the GGUF block type export.gguf<type=T;imatrix=...> gives each linear (q4_0, q8_0, k-quants and their mixes), "
     "quantized as llama-quantize does with an importance matrix, and store those blocks; export with the same type "
     "(bits, group_size and clip are ignored)",
     "", 0, -1, q_gguf_types},
    Q_CALIB_OPTS(1),
};

const mopt_pass_desc quant_awq_pass = {
    .struct_size = sizeof(mopt_pass_desc),
    .kind = MOPT_PASS_TRANSFORM,
    .name = "quant.awq",
    .summary = "AWQ: activation-aware per-channel scales folded into the graph, clip search, packed int",
    .opts = opts,
    .n_opts = sizeof opts / sizeof *opts,
    .run = run,
    .check = q_check_int_options,
};
