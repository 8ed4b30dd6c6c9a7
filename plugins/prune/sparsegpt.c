/* prune.sparsegpt: SparseGPT (Frantar & Alistarh, 2023) as its reference code
 * computes it: H = 2/N X^T X with dead columns zeroed and 1% damping, U the
 * upper Cholesky factor of H^-1 (GPTQ's, plugins/quant/hessian.c), then
 * 128-column blocks: the unstructured mask of a block is every
 * w^2 / U_jj^2 at or below the block's k-th smallest (k = sparsity x its
 * size), an N:M mask is chosen per group of M columns as the sweep reaches
 * it; each column's pruning error goes onto the columns after it (OBS) and
 * the block's onto the rest of the matrix. Layer by layer on inputs that went
 * through the pruned layers (prune_by_layer); linears that read the same
 * input share one Hessian. With bits=, the kept weights are quantized in the
 * same sweep (the paper's joint sparsification and quantization), packed as
 * QINT with the pruned ones at the zero-point; with pack=true values=int8 (int4)
 * the sweep rounds to int8 per row (symmetric int4 per 128 inputs) and the
 * result is 2:4 storage of int8 (int4) values. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "hessian.h"
#include "prune_plugin.h"

#define SGPT_BLOCK 128

typedef struct {
    const mopt_host_api *h;
    mopt_graph *g;
    prune_spec sp;
    double damp;
    const qlinear *const *mine;
    int32_t k;
    int32_t leader[32]; /* per linear of the layer: the first linear reading the same input */
    hess_acc acc[32];   /* per leader */
    float *U[32];       /* per leader: its factor, once computed */
    uint8_t *dead[32];
    qspec q;            /* bits = 0: no quantization; else the grid of the same sweep */
} sgpt;

static mopt_status begin(void *user, const qlinear *const *mine, int32_t k, mopt_session *se, mopt_error *err) {
    sgpt *s = user;
    if (s->sp.vbits == 8) s->q = (qspec){.bits = 8, .group = -1, .sym = 1}; /* values=int8: the sweep's grid is int8 per row, symmetric */
    if (s->sp.vbits == 4) s->q = (qspec){.bits = 4, .group = PRUNE_I4_GROUP, .sym = 1}; /* values=int4: symmetric int4 per 128 inputs */
    s->mine = mine;
    s->k = k;
    for (int32_t i = 0; i < k; i++) {
        const int32_t in = s->h->graph_node(s->g, mine[i]->node)->inputs[0];
        s->leader[i] = i;
        for (int32_t j = 0; j < i; j++)
            if (s->h->graph_node(s->g, mine[j]->node)->inputs[0] == in) {
                s->leader[i] = s->leader[j];
                break;
            }
        if (s->leader[i] != i) continue;
        s->acc[i] = (hess_acc){s->h, mine[i]->node, mine[i]->in, calloc((size_t)(mine[i]->in * mine[i]->in), sizeof(float)), 0, se};
        if (!s->acc[i].H) return s->h->error_set(err, MOPT_E_NOMEM, "prune.sparsegpt", "out of memory for a Hessian");
    }
    return MOPT_OK;
}

static void observe(void *user, int32_t sample, int32_t node, const float *const *in, const int32_t *in_w, const float *out,
                    int32_t out_w, int32_t T) {
    sgpt *s = user;
    for (int32_t i = 0; i < s->k; i++)
        if (s->leader[i] == i && s->mine[i]->node == node) hess_accumulate(&s->acc[i], sample, node, in, in_w, out, out_w, T);
}

/* The sweep over W [out, in] with the factor U [in, in]; with s->q.bits, each
 * kept weight is also quantized on its group's grid (found from the weights as
 * the sweep reaches the group, as GPTQ), levels/scales/zeros filled, and a
 * pruned one takes the zero-point's level (exactly 0). */
static mopt_status sweep(const sgpt *s, const float *U, const uint8_t *dead, float *W, int64_t out, int64_t in, uint8_t *levels,
                         float *scales, uint8_t *zeros, mopt_error *err) {
    const int64_t gs = s->q.group > 0 ? s->q.group : in, ng = (in + gs - 1) / gs;
    float *E = malloc((size_t)(out * SGPT_BLOCK) * sizeof *E), *score = malloc((size_t)(out * SGPT_BLOCK) * sizeof *score);
    uint8_t *mask = malloc((size_t)(out * SGPT_BLOCK)), *gm = malloc((size_t)(out * (s->sp.m ? s->sp.m : 1)));
    mopt_status st = E && score && mask && gm ? MOPT_OK : s->h->error_set(err, MOPT_E_NOMEM, "prune.sparsegpt", "out of memory");
    for (int64_t j = 0; !st && j < in; j++)
        if (dead[j])
            for (int64_t r = 0; r < out; r++) W[r * in + j] = 0;
    for (int64_t i1 = 0; !st && i1 < in; i1 += SGPT_BLOCK) {
        const int64_t i2 = i1 + SGPT_BLOCK < in ? i1 + SGPT_BLOCK : in, B = i2 - i1;
        if (!s->sp.m) { /* the block's mask at once, over all its rows */
            for (int64_t r = 0; r < out; r++)
                for (int64_t c = 0; c < B; c++) {
                    const double d = U[(i1 + c) * in + i1 + c], w = W[r * in + i1 + c];
                    score[r * B + c] = (float)(w * w / (d * d));
                }
            if ((st = prune_mask(s->h, score, out, B, s->sp, 0, mask, err))) break;
        }
        for (int64_t i = i1; i < i2; i++) {
            const int64_t c = i - i1;
            if (s->sp.m && c % s->sp.m == 0) { /* the group's N:M mask from the weights as they are now */
                for (int64_t r = 0; r < out; r++)
                    for (int32_t q = 0; q < s->sp.m; q++) {
                        const double d = U[(i + q) * in + i + q], w = W[r * in + i + q];
                        score[r * s->sp.m + q] = (float)(w * w / (d * d));
                    }
                if ((st = prune_mask(s->h, score, out, s->sp.m, s->sp, 0, gm, err))) break;
                for (int64_t r = 0; r < out; r++)
                    for (int32_t q = 0; q < s->sp.m; q++) mask[r * B + c + q] = gm[r * s->sp.m + q];
            }
            if (s->q.bits && i % gs == 0) /* the grid of the next group, from the weights as they are now */
                for (int64_t r = 0; r < out; r++) {
                    const int64_t c1 = i + gs < in ? i + gs : in;
                    q_grid(s->h, W + r * in + i, c1 - i, 1, s->q, &scales[r * ng + i / gs], &zeros[r * ng + i / gs]);
                }
            const float d = U[i * in + i];
            const float *Ui = U + i * in;
            for (int64_t r = 0; r < out; r++) {
                float *wr = W + r * in;
                float q = mask[r * B + c] ? 0.0f : wr[i];
                if (s->q.bits) {
                    const float sc = scales[r * ng + i / gs];
                    const uint8_t z = zeros[r * ng + i / gs], lv = mask[r * B + c] ? z : q_level(q, sc, z, s->q.bits);
                    levels[r * in + i] = lv;
                    q = q_deq(lv, sc, z);
                }
                const float e = (wr[i] - q) / d;
                wr[i] = q;
                E[r * B + c] = e;
                for (int64_t j = i + 1; j < i2; j++) wr[j] -= e * Ui[j];
            }
        }
        if (!st && i2 < in) /* W[:, i2:] -= E U[i1:i2, i2:] */
            s->h->sgemm(0, 0, (int32_t)out, (int32_t)(in - i2), (int32_t)B, -1.0f, E, (int32_t)B, U + i1 * in + i2, (int32_t)in, 1.0f,
                        W + i2, (int32_t)in);
    }
    free(E);
    free(score);
    free(mask);
    free(gm);
    return st;
}

static mopt_status prune(void *user, int32_t i, float *W, int *installed, mopt_error *err) {
    sgpt *s = user;
    const int32_t ld = s->leader[i];
    const int64_t in = s->mine[i]->in;
    if (!s->U[ld]) { /* the group's factor, on first use */
        s->U[ld] = malloc((size_t)(in * in) * sizeof(float));
        s->dead[ld] = calloc((size_t)in, 1);
        double *H = s->U[ld] && s->dead[ld] ? hess_scaled(s->acc[ld].H, s->acc[ld].count, in, s->dead[ld]) : NULL;
        if (!H) return s->h->error_set(err, MOPT_E_NOMEM, "prune.sparsegpt", "out of memory for a %lld-column Hessian", (long long)in);
        mopt_status st = hess_inverse_factor(s->h, H, in, s->damp, s->U[ld], "prune.sparsegpt", err);
        free(H);
        if (st) return st;
    }
    const qlinear *l = s->mine[i];
    if (!s->q.bits) return sweep(s, s->U[ld], s->dead[ld], W, l->out, in, NULL, NULL, NULL, err);
    const int64_t gs = s->q.group > 0 ? s->q.group : in, ng = (in + gs - 1) / gs;
    uint8_t *levels = malloc((size_t)(l->out * in)), *zeros = malloc((size_t)(l->out * ng));
    float *scales = malloc((size_t)(l->out * ng) * sizeof *scales);
    mopt_status st = levels && zeros && scales ? MOPT_OK : s->h->error_set(err, MOPT_E_NOMEM, "prune.sparsegpt", "out of memory");
    if (!st) st = sweep(s, s->U[ld], s->dead[ld], W, l->out, in, levels, scales, zeros, err);
    if (!st && s->sp.vbits == 4) /* 2:4 with int4 values: levels around 8, as stored */
        st = q_replace(s->h, s->g, s->h->sp24_pack_i4(l->wname, l->out, in, PRUNE_I4_GROUP, levels, scales, err), err);
    else if (!st && s->sp.vbits == 8) { /* 2:4 with int8 values: the levels around their zero-point (128) */
        int8_t *q = (int8_t *)levels;
        for (int64_t i = 0; i < l->out * in; i++) q[i] = (int8_t)((int32_t)levels[i] - 128);
        st = q_replace(s->h, s->g, s->h->sp24_pack_i8(l->wname, l->out, in, q, scales, err), err);
    } else if (!st)
        st = q_install(s->h, s->g, l, s->q, levels, scales, zeros, NULL, err); /* sparse and packed */
    if (!st) *installed = 1;
    free(levels);
    free(zeros);
    free(scales);
    return st;
}

static void end(void *user) {
    sgpt *s = user;
    for (int32_t i = 0; i < s->k; i++) {
        if (s->leader[i] != i) continue;
        free(s->acc[i].H), free(s->U[i]), free(s->dead[i]);
        s->acc[i].H = NULL, s->U[i] = NULL, s->dead[i] = NULL;
    }
    s->k = 0;
}

static mopt_status run(const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *g, const mopt_options *o, mopt_report *report,
                       mopt_error *err) {
    sgpt s = {.h = h, .g = g, .damp = h->opt_float(o, "damp"), .q = {.bits = (int32_t)h->opt_int(o, "bits"),
                                                                      .group = (int32_t)h->opt_int(o, "group_size"),
                                                                      .sym = h->opt_bool(o, "sym")}};
    if (s.q.bits) {
        mopt_status st = q_check_spec(h, "prune.sparsegpt", s.q, err);
        if (st) return st;
    }
    const prune_layer_ops ops = {begin, observe, prune, end, &s};
    return prune_run_calibrated(h, ctx, g, o, report, "sparsegpt", &s.sp, &ops, err);
}

static const mopt_opt_spec opts[] = {
    PRUNE_OPTS,
    {"damp", MOPT_OPT_FLOAT, 0, "damping added to diag(H), as a fraction of its mean", "0.01", 0, 1, NULL},
    {"bits", MOPT_OPT_INT, 0, "also quantize in the same sweep to this many bits (2, 3, 4, 8; 0: no), packed as quant.gptq", "0", 0, 8, NULL},
    {"group_size", MOPT_OPT_INT, 0, "with bits: columns sharing a scale (multiple of 32, or -1 for a whole row)", "128", -1, 1 << 20, NULL},
    {"sym", MOPT_OPT_BOOL, 0, "with bits: symmetric grid", "false", 0, -1, NULL},
    Q_CALIB_OPTS(1),
};

const mopt_pass_desc prune_sparsegpt_pass = {
    .struct_size = sizeof(mopt_pass_desc),
    .kind = MOPT_PASS_TRANSFORM,
    .name = "prune.sparsegpt",
    .summary = "SparseGPT: OBS pruning with the inverse Hessian, blockwise masks (unstructured or N:M), calibrated",
    .opts = opts,
    .n_opts = sizeof opts / sizeof *opts,
    .run = run,
    .check = prune_check,
};
