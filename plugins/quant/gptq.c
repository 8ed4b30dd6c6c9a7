/* quant.gptq: GPTQ (Frantar et al.) as the reference implementation computes
 * it: Hessian H = 2/N sum x x^T of each linear's calibration inputs, dead
 * columns zeroed, optional act-order (columns by decreasing diag H), 1%
 * damping, the upper Cholesky factor of H^-1, 128-column lazy blocks with the
 * error of each quantized column pushed onto the columns after it. Layers go
 * in true-sequential order inside a block: linears that share an input
 * (q/k/v, gate/up) form a group, and each group's H is collected after the
 * earlier groups are quantized. Onto GGUF blocks (gguf_type), descent on each
 * linear's layer loss follows the sweep (block_refine.c). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "calib.h"
#include "block_refine.h"
#include "hessian.h"
#include "passes.h"
#include "qcommon.h"

#define GPTQ_BLOCK 128
#define SWEEP_ROWS 128 /* rows per task of the sweep: a fixed split, so the bits do not depend on the threads */

/* --- the algorithm ---------------------------------------------------------------- */

typedef struct {
    int64_t in;
    float *U;       /* [in, in] */
    int32_t *perm;  /* [in] or NULL */
    uint8_t *dead;  /* [in] */
    float *hdiag;   /* [in]: diag(H), the block grids' importance weights */
    float *H;       /* [in, in] or NULL: H itself, for the descent after a block grid's sweep */
} gptq_prep;

static int cmp_diag_desc(const void *a, const void *b, void *d) {
    const double *diag = d;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (diag[x] != diag[y]) return diag[x] < diag[y] ? 1 : -1;
    return x - y;
}

/* Turns an accumulated H (float, token count n; freed here once widened, to
 * keep the peak low) into the factor every linear of the group uses. */
static mopt_status gptq_prepare(const mopt_host_api *h, float *Hf, int64_t count, int64_t in, int act_order, int keep_h,
                                double percdamp, gptq_prep *p, mopt_error *err) {
    p->in = in;
    p->U = malloc((size_t)(in * in) * sizeof *p->U);
    p->dead = calloc((size_t)in, 1);
    p->perm = act_order ? malloc((size_t)in * sizeof *p->perm) : NULL;
    p->hdiag = malloc((size_t)in * sizeof *p->hdiag);
    p->H = keep_h ? malloc((size_t)(in * in) * sizeof *p->H) : NULL;
    double *H = p->U && p->dead ? hess_scaled(Hf, count, in, p->dead) : NULL, *diag = malloc((size_t)in * sizeof *diag);
    free(Hf);
    if (!H || !diag || !p->hdiag || (act_order && !p->perm) || (keep_h && !p->H)) {
        free(H);
        free(diag);
        return h->error_set(err, MOPT_E_NOMEM, "quant.gptq", "out of memory for a %lld-column Hessian", (long long)in);
    }
    for (int64_t j = 0; j < in; j++) p->hdiag[j] = (float)H[j * in + j]; /* before damping: the inputs' mean x^2, doubled */
    if (keep_h) { /* the descent's loss, with 5% of the mean diagonal as a ridge: it fits H more closely than the sweep,
                   * and on lit-llama-7m Q4_K_M's KLD (four rounds) came out 0.002599 at 1%, 0.002589 at 5%, 0.002608 at 20% */
        double mean = 0;
        for (int64_t j = 0; j < in; j++) mean += H[j * in + j] / (double)in;
        for (int64_t j = 0; j < in * in; j++) p->H[j] = (float)(H[j] + (j % (in + 1) == 0 ? 0.05 * mean : 0));
    }
    if (act_order) {
        for (int64_t j = 0; j < in; j++) {
            p->perm[j] = (int32_t)j;
            diag[j] = H[j * in + j];
        }
        qsort_r(p->perm, (size_t)in, sizeof *p->perm, cmp_diag_desc, diag);
        double *Hp = malloc((size_t)(in * in) * sizeof *Hp);
        if (!Hp) {
            free(H);
            free(diag);
            return h->error_set(err, MOPT_E_NOMEM, "quant.gptq", "out of memory");
        }
        for (int64_t a = 0; a < in; a++)
            for (int64_t b = 0; b < in; b++) Hp[a * in + b] = H[p->perm[a] * in + p->perm[b]];
        free(H);
        H = Hp;
    }
    mopt_status st = hess_inverse_factor(h, H, in, percdamp, p->U, "quant.gptq", err);
    free(H);
    free(diag);
    return st;
}

static void gptq_prep_free(gptq_prep *p) {
    free(p->H);
    free(p->hdiag);
    free(p->U);
    free(p->perm);
    free(p->dead);
}

/* The grid GPTQ rounds onto. Before column i, start() may pick the scales of rows [r0, r1) from the weights updated
 * so far (a new group or block begins there); round() gives the value row r's column i takes. Rows are independent:
 * both may run for different rows on different threads at once. */
typedef struct gptq_grid {
    void (*start)(struct gptq_grid *g, const float *Wp, int64_t r0, int64_t r1, int64_t i);
    float (*round)(struct gptq_grid *g, int64_t r, int64_t i, float w);
} gptq_grid;

typedef struct {
    const mopt_host_api *h;
    const gptq_prep *p;
    float *Wp;
    int64_t out;
    gptq_grid *g;
    int failed; /* a task found no memory */
} sweep_job;

/* GPTQ's sweep over rows [r0, r1) of Wp [out, in] (columns in quantization order): 128-column lazy blocks, each
 * column's rounding error divided by U's diagonal and pushed onto the columns after it. */
static void sweep_task(void *user, int64_t task, int32_t thread) {
    (void)thread;
    sweep_job *j = user;
    const gptq_prep *p = j->p;
    const int64_t in = p->in, r0 = task * SWEEP_ROWS, r1 = r0 + SWEEP_ROWS < j->out ? r0 + SWEEP_ROWS : j->out;
    float *E = malloc((size_t)((r1 - r0) * GPTQ_BLOCK) * sizeof *E);
    if (!E) {
        __atomic_store_n(&j->failed, 1, __ATOMIC_RELAXED);
        return;
    }
    for (int64_t i1 = 0; i1 < in; i1 += GPTQ_BLOCK) {
        const int64_t i2 = i1 + GPTQ_BLOCK < in ? i1 + GPTQ_BLOCK : in, B = i2 - i1;
        for (int64_t i = i1; i < i2; i++) {
            j->g->start(j->g, j->Wp, r0, r1, i);
            const float d = p->U[i * in + i];
            const float *Ui = p->U + i * in;
            for (int64_t r = r0; r < r1; r++) {
                float *wr = j->Wp + r * in;
                const float e = (wr[i] - j->g->round(j->g, r, i, wr[i])) / d;
                E[(r - r0) * B + (i - i1)] = e;
                for (int64_t c = i + 1; c < i2; c++) wr[c] -= e * Ui[c];
            }
        }
        /* lazy update of the columns after the block: W[:, i2:] -= E @ U[i1:i2, i2:] */
        if (i2 < in)
            j->h->sgemm(0, 0, (int32_t)(r1 - r0), (int32_t)(in - i2), (int32_t)B, -1.0f, E, (int32_t)B, p->U + i1 * in + i2,
                        (int32_t)in, 1.0f, j->Wp + r0 * in + i2, (int32_t)in);
    }
    free(E);
}

/* The sweep over all rows, SWEEP_ROWS at a time on the session's threads. */
static mopt_status gptq_sweep(const mopt_host_api *h, mopt_session *s, const gptq_prep *p, float *Wp, int64_t out, gptq_grid *g,
                              mopt_error *err) {
    sweep_job j = {h, p, Wp, out, g, 0};
    h->session_parallel_for(s, (out + SWEEP_ROWS - 1) / SWEEP_ROWS, sweep_task, &j);
    return j.failed ? h->error_set(err, MOPT_E_NOMEM, "quant.gptq", "out of memory for the sweep's errors") : MOPT_OK;
}

static void zero_dead_columns(const gptq_prep *p, float *W, int64_t out) {
    for (int64_t j = 0; j < p->in; j++)
        if (p->dead[j])
            for (int64_t r = 0; r < out; r++) W[r * p->in + j] = 0;
}

/* mopt's integer grid: a scale and zero-point per group (or row), from the updated weights where it begins */
typedef struct {
    gptq_grid g;
    const mopt_host_api *h;
    qspec sp;
    int64_t in, gs, ng;
    float *rs, *scales;
    uint8_t *rz, *zeros, *Q;
} int_grid;

static void int_start(gptq_grid *g, const float *Wp, int64_t r0, int64_t r1, int64_t i) {
    int_grid *t = (int_grid *)g;
    if (t->sp.group <= 0 || i % t->gs) return;
    const int64_t gi = i / t->gs, c1 = i + t->gs < t->in ? i + t->gs : t->in;
    for (int64_t r = r0; r < r1; r++) {
        q_grid(t->h, Wp + r * t->in + i, c1 - i, 1, t->sp, &t->rs[r], &t->rz[r]);
        t->scales[r * t->ng + gi] = t->rs[r];
        t->zeros[r * t->ng + gi] = t->rz[r];
    }
}

static float int_round(gptq_grid *g, int64_t r, int64_t i, float w) {
    int_grid *t = (int_grid *)g;
    const uint8_t q = q_level(w, t->rs[r], t->rz[r], t->sp.bits);
    t->Q[r * t->in + i] = q;
    return q_deq(q, t->rs[r], t->rz[r]);
}

/* Quantizes W [out, in] (overwritten) into levels/scales/zeros (original column order) and g_idx. */
static mopt_status gptq_quantize(const mopt_host_api *h, mopt_session *s, const gptq_prep *p, float *W, int64_t out, qspec sp,
                                 uint8_t *qout, float *scales, uint8_t *zeros, int32_t *g_idx, mopt_error *err) {
    const int64_t in = p->in, gs = sp.group > 0 ? sp.group : in;
    zero_dead_columns(p, W, out);
    float *Wp = p->perm ? malloc((size_t)(out * in) * sizeof *Wp) : W;
    int_grid t = {{int_start, int_round}, h, sp, in, gs, (in + gs - 1) / gs, malloc((size_t)out * sizeof(float)), scales,
                  malloc((size_t)out), zeros, malloc((size_t)(out * in))};
    mopt_status st = !Wp || !t.rs || !t.rz || !t.Q ? h->error_set(err, MOPT_E_NOMEM, "quant.gptq", "out of memory") : MOPT_OK;
    if (!st && p->perm)
        for (int64_t r = 0; r < out; r++)
            for (int64_t k = 0; k < in; k++) Wp[r * in + k] = W[r * in + p->perm[k]];
    if (!st && sp.group <= 0)
        for (int64_t r = 0; r < out; r++) q_grid(h, Wp + r * in, in, 1, sp, &t.rs[r], &t.rz[r]);
    if (!st) st = gptq_sweep(h, s, p, Wp, out, &t.g, err);
    if (!st && sp.group <= 0)
        for (int64_t r = 0; r < out; r++) scales[r] = t.rs[r], zeros[r] = t.rz[r];
    for (int64_t r = 0; !st && r < out; r++)
        for (int64_t k = 0; k < in; k++) qout[r * in + (p->perm ? p->perm[k] : k)] = t.Q[r * in + k];
    if (!st && g_idx && p->perm)
        for (int64_t k = 0; k < in; k++) g_idx[p->perm[k]] = (int32_t)(k / gs);
    if (Wp != W) free(Wp);
    free(t.Q);
    free(t.rs);
    free(t.rz);
    return st;
}

/* A GGUF block type: at each block's first column, every row's block scales from ggml's search (weighted by
 * diag H) over the updated weights, as llama-quantize would pick them; at each later sub-block of a k-quant, its
 * own scale (and min) picked again under the block's d and dmin from the values GPTQ's updates left it (on
 * lit-llama-7m this takes 3-7% off the KLD of Q2_K ... Q6_K); each column then the level nearest its updated value
 * under those scales. blocks [out, in / block] receive the bytes. */
typedef struct {
    gptq_grid g;
    const mopt_host_api *h;
    int32_t type;
    int64_t in, bs, bb, nb;
    const float *hdiag;
    uint8_t *blocks;
} block_grid;

static void block_start(gptq_grid *g, const float *Wp, int64_t r0, int64_t r1, int64_t i) {
    block_grid *t = (block_grid *)g;
    if (i % t->bs == 0) { /* a block starts a lazy block too, so every earlier error is in by now */
        /* Q4_K takes diag(H) as the error weights themselves (GPTQ's own measure of a value's error: on lit-llama-7m
         * Q4_K_M's KLD falls 1.5% against llama.cpp's weighting, Q4_K_S's 3%); the other types keep llama.cpp's
         * qw * sqrt(sigma^2 + x^2), under which Q4_0, Q2_K, Q3_K and Q5_K came out 1-4% better */
        for (int64_t r = r0; r < r1; r++)
            (t->type == 12 ? t->h->ggml_quantize_block_direct : t->h->ggml_quantize_block)(
                t->type, Wp + r * t->in + i, t->hdiag + i, t->blocks + (r * t->nb + i / t->bs) * t->bb, NULL);
        return;
    }
    /* a later sub-block: the errors of the columns before it (in this lazy block too) are in, so a k-quant sub-block
     * picks its own scale (and min) again from the values it now has, under the block's d and dmin */
    const int sb = t->h->ggml_type_sub_block(t->type);
    if (!sb || i % sb) return;
    for (int64_t r = r0; r < r1; r++)
        t->h->ggml_block_refit_sub(t->type, t->blocks + (r * t->nb + i / t->bs) * t->bb, (int32_t)(i % t->bs / sb), Wp + r * t->in + i, t->hdiag + i);
}

static float block_round(gptq_grid *g, int64_t r, int64_t i, float w) {
    block_grid *t = (block_grid *)g;
    return t->h->ggml_block_requantize(t->type, t->blocks + (r * t->nb + i / t->bs) * t->bb, (int32_t)(i % t->bs), w);
}

/* W (overwritten) onto blocks; with W0 (room for W as it comes, dead columns zeroed) and p->H, `refine` rounds of
 * descent on the layer loss follow the sweep. */
static mopt_status gptq_quantize_blocks(const mopt_host_api *h, mopt_session *s, const gptq_prep *p, float *W, float *W0, int64_t out,
                                        int32_t ggml_type, int refine, uint8_t *blocks, mopt_error *err) {
    const int64_t bs = h->ggml_type_block(ggml_type);
    zero_dead_columns(p, W, out);
    if (W0) memcpy(W0, W, (size_t)(out * p->in) * sizeof *W0);
    block_grid t = {{block_start, block_round}, h, ggml_type, p->in, bs, h->ggml_type_block_bytes(ggml_type), p->in / bs, p->hdiag, blocks};
    mopt_status st = gptq_sweep(h, s, p, W, out, &t.g, err);
    if (st) return st;
    return W0 && p->H ? block_refine(h, p->H, p->in, W0, out, ggml_type, blocks, refine, err) : MOPT_OK;
}

/* --- driver ------------------------------------------------------------------------ */

static mopt_status run(const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *g, const mopt_options *o,
                       mopt_report *report, mopt_error *err) {
    qspec sp = q_spec_from(h, o);
    mopt_status st = q_check_spec(h, "quant.gptq", sp, err);
    if (st) return st;
    if (!g) return h->error_set(err, MOPT_E_INVALID, "quant.gptq", "needs a model");
    const int act_order = h->opt_bool(o, "act_order");
    const double damp = h->opt_float(o, "damp");
    const char *gguf = h->opt_string(o, "gguf_type");
    const int refine = (int)h->opt_int(o, "refine");
    if (*gguf && (sp.act || sp.w4a8_static))
        return h->error_set(err, MOPT_E_INVALID, "quant.gptq", "gguf_type quantizes onto GGUF blocks: drop activations");
    if (*gguf && act_order)
        return h->error_set(err, MOPT_E_INVALID, "quant.gptq", "gguf_type takes the columns in order (GGUF blocks are contiguous): drop act_order");
    qlinear *ls;
    int32_t n;
    if ((st = q_collect(h, g, o, &ls, &n, err))) return st;
    int64_t before, after, weights;
    q_measure(h, g, ls, n, &before, &weights);
    const mopt_arch *a = h->graph_arch(g);
    calib c;
    if ((st = calib_init(&c, h, ctx, g, o, (int64_t)n + a->n_layers, err))) {
        free(ls);
        return st;
    }
    calib_keep_live(&c, h->opt_int(o, "keep_mb") << 20);
    for (int32_t l = 0; l < a->n_layers && !st; l++) {
        const qlinear *mine[32];
        int32_t k = q_layer_linears(ls, n, l, mine, 32);
        for (int32_t i = 0; i < k && !st;) {
            /* a group: consecutive linears reading the same input */
            const mopt_node *first = h->graph_node(g, mine[i]->node);
            int32_t j = i;
            while (j < k && h->graph_node(g, mine[j]->node)->inputs[0] == first->inputs[0]) j++;
            hess_acc acc = {h, mine[i]->node, mine[i]->in, calloc((size_t)(mine[i]->in * mine[i]->in), sizeof(float)), 0, c.s};
            gptq_prep prep = {0};
            if (!acc.H) st = h->error_set(err, MOPT_E_NOMEM, "quant.gptq", "out of memory");
            if (!st) st = calib_observe_input(&c, l, mine[i]->node, hess_accumulate, &acc, err);
            if (!st) {
                st = gptq_prepare(h, acc.H, acc.count, acc.in, act_order, *gguf && refine > 0, damp, &prep, err);
                acc.H = NULL; /* gptq_prepare freed it */
            }
            for (int32_t m = i; m < j && !st; m++) {
                const qlinear *lin = mine[m];
                const int32_t ty = *gguf ? h->gguf_weight_type(g, gguf, lin->wname, 0) : -1;
                if (*gguf) { /* the block type export.gguf<type=gguf_type> gives it without an importance matrix (GPTQ's own Q4_0
                             * first ffn_down beat the Q4_1 that layout takes with one: Q4_0 KLD 0.003979 against 0.004191);
                             * the types that are no grid are left to the export */
                    const int grid = q_gguf_grid(ty);
                    float *W = grid ? q_weight_f32(h, g, lin, err) : NULL;
                    uint8_t *blocks = grid ? malloc((size_t)(lin->out * (lin->in / h->ggml_type_block(ty)) * h->ggml_type_block_bytes(ty))) : NULL;
                    float *W0 = grid && refine ? malloc((size_t)(lin->out * lin->in) * sizeof *W0) : NULL;
                    if (grid && (!W || !blocks || (refine && !W0))) st = h->error_set(err, MOPT_E_NOMEM, "quant.gptq", "out of memory");
                    if (grid && !st) {
                        st = gptq_quantize_blocks(h, c.s, &prep, W, W0, lin->out, ty, refine, blocks, err);
                        if (!st) st = q_replace(h, g, h->ggml_blocks_tensor(lin->wname, ty, lin->out, lin->in, blocks, err), err);
                    }
                    free(W0);
                    free(W);
                    free(blocks);
                    calib_tick(&c);
                    continue;
                }
                const int64_t ng = (lin->in + (sp.group > 0 ? sp.group : lin->in) - 1) / (sp.group > 0 ? sp.group : lin->in);
                float *W = q_weight_f32(h, g, lin, err);
                uint8_t *q = malloc((size_t)(lin->out * lin->in)), *z = malloc((size_t)(lin->out * ng));
                float *s = malloc((size_t)(lin->out * ng) * sizeof *s);
                int32_t *gi = act_order && sp.group > 0 ? malloc((size_t)lin->in * sizeof *gi) : NULL;
                if (!W || !q || !z || !s || (act_order && sp.group > 0 && !gi)) {
                    st = h->error_set(err, MOPT_E_NOMEM, "quant.gptq", "out of memory");
                } else {
                    st = gptq_quantize(h, c.s, &prep, W, lin->out, sp, q, s, z, gi, err);
                    if (!st) st = q_install(h, g, lin, sp, q, s, z, gi, err);
                }
                free(W);
                free(q);
                free(z);
                free(s);
                free(gi);
                calib_tick(&c);
            }
            gptq_prep_free(&prep);
            free(acc.H);
            i = j;
        }
        /* the next block sees this block's quantized output */
        if (!st && l + 1 < a->n_layers) {
            st = calib_run_layer(&c, l, -1, NULL, NULL, 1, err);
            calib_advance(&c);
        }
        calib_tick(&c);
    }
    calib_free(&c);
    if (!st && sp.w4a8_static) st = calib_w4a8_static(h, ctx, g, o, ls, n, err);
    if (!st) {
        q_measure(h, g, ls, n, &after, &weights);
        st = q_report(h, report, g, o, *gguf ? "gptq-gguf" : act_order ? "gptq-act-order" : "gptq", sp, before, after, weights, n, err);
        h->report_metric(report, "act_order", act_order);
        if (*gguf) h->report_string(report, "gguf_type", gguf), h->report_metric(report, "refine", refine);
    }
    free(ls);
    return st;
}

static const mopt_opt_spec opts[] = {
    Q_INT_OPTS("4", "128"),
    Q_ACT_OPT,
    {"act_order", MOPT_OPT_BOOL, 0, "quantize columns by decreasing Hessian diagonal (desc_act, stores g_idx)", "false", 0, -1, NULL},
    {"damp", MOPT_OPT_FLOAT, 0, "damping added to diag(H), as a fraction of its mean", "0.01", 0, 1, NULL},
    {"gguf_type", MOPT_OPT_ENUM, 0,
     "quantize each linear onto the GGUF block type export.gguf<type=T> gives it (q4_0, q8_0, k-quants and their mixes): "
     "llama-quantize's block scales (a k-quant's sub-block scales picked again as GPTQ's updates reach them), GPTQ's "
     "levels; export with the same type (bits and group_size are ignored)",
     "", 0, -1, q_gguf_types},
    {"refine", MOPT_OPT_INT, 0,
     "with gguf_type: rounds of descent on each linear's layer loss after the sweep (levels, sub-block scales, then "
     "each block's d and dmin by least squares); 0 keeps the sweep's blocks",
     "4", 0, 64, NULL},
    {"keep_mb", MOPT_OPT_INT, 0,
     "MB (all windows together) for the calibration activations kept where the last group's input was, so the next "
     "group's input comes from the rest of the block alone (the same bits as running the block from its start, which "
     "0 always does; a cut that does not fit is run from the start)",
     "4096", 0, 1 << 20, NULL},
    Q_CALIB_OPTS(1),
};

const mopt_pass_desc quant_gptq_pass = {
    .struct_size = sizeof(mopt_pass_desc),
    .kind = MOPT_PASS_TRANSFORM,
    .name = "quant.gptq",
    .summary = "GPTQ: Hessian-aware rounding with lazy block updates, true-sequential, optional act-order",
    .opts = opts,
    .n_opts = sizeof opts / sizeof *opts,
    .run = run,
    .check = q_check_int_options,
};
