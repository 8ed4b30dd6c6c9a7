/* A float64 transcription of HF's LlamaForCausalLM decoder block (RMSNorm,
 * rotate-half RoPE, GQA attention, SwiGLU), written from the model's
 * definition and not from mopt's kernels, for references the pruning tests
 * compare with: it runs one block over a window in place and reports what
 * enters each linear. */
#ifndef MOPT_TEST_LLAMA_REF64_H
#define MOPT_TEST_LLAMA_REF64_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mopt/mopt.h"

/* The weights of a tensor named fmt % l, as doubles (malloc'd). */
static double *ref64_tensor(const mopt_graph *g, const char *fmt, int l) {
    char name[256];
    snprintf(name, sizeof name, fmt, l);
    const mopt_tensor *t = mopt_graph_find_tensor(g, name);
    if (!t) return NULL;
    const int64_t n = mopt_tensor_nelements(t);
    float *f = malloc((size_t)n * sizeof *f);
    double *d = malloc((size_t)n * sizeof *d);
    mopt_error err = {0};
    for (int64_t r = 0; r < (t->ndim == 2 ? t->ne[1] : 1); r++) /* packed or float: row by row */
        mopt_weight_row_f32(t, r, f + r * t->ne[0], &err);
    for (int64_t i = 0; i < n; i++) d[i] = f[i];
    free(f);
    return d;
}

/* One block's weights; index ref64_q..ref64_d name the linears. */
enum { REF64_Q, REF64_K, REF64_V, REF64_O, REF64_GATE, REF64_UP, REF64_DOWN, REF64_LINEARS };
static const char *const ref64_linear_names[REF64_LINEARS] = {
    "model.layers.%d.self_attn.q_proj.weight", "model.layers.%d.self_attn.k_proj.weight", "model.layers.%d.self_attn.v_proj.weight",
    "model.layers.%d.self_attn.o_proj.weight", "model.layers.%d.mlp.gate_proj.weight",    "model.layers.%d.mlp.up_proj.weight",
    "model.layers.%d.mlp.down_proj.weight"};

typedef struct ref64_block {
    const mopt_arch *a;
    double *w[REF64_LINEARS]; /* [out, in] */
    double *n1, *n2;          /* the two norms' weights */
} ref64_block;

static void ref64_block_load(ref64_block *b, const mopt_graph *g, int l) {
    b->a = mopt_graph_arch(g);
    for (int i = 0; i < REF64_LINEARS; i++) b->w[i] = ref64_tensor(g, ref64_linear_names[i], l);
    b->n1 = ref64_tensor(g, "model.layers.%d.input_layernorm.weight", l);
    b->n2 = ref64_tensor(g, "model.layers.%d.post_attention_layernorm.weight", l);
}

static void ref64_block_free(ref64_block *b) {
    for (int i = 0; i < REF64_LINEARS; i++) free(b->w[i]);
    free(b->n1), free(b->n2);
}

static void ref64_rmsnorm(double *y, const double *x, const double *w, int D, double eps) {
    double ss = 0;
    for (int i = 0; i < D; i++) ss += x[i] * x[i];
    const double inv = 1.0 / sqrt(ss / D + eps);
    for (int i = 0; i < D; i++) y[i] = x[i] * inv * w[i];
}

static void ref64_matvec(double *y, const double *W, const double *x, int out, int in) {
    for (int o = 0; o < out; o++) {
        double s = 0;
        for (int i = 0; i < in; i++) s += W[(size_t)o * in + i] * x[i];
        y[o] = s;
    }
}

/* What enters the linears of a block over a window, added up: sq[k][j] +=
 * input_j^2 for linear k over every token (q, k, v share one input, so do gate
 * and up); act_mean[j] = mean over the window of |input of down_proj|_j;
 * xx[k][i * in + j] += input_i input_j (the lower triangle, i >= j). Any may be NULL. */
typedef struct ref64_stats {
    double *sq[REF64_LINEARS];
    double *act_mean;
    double *xx[REF64_LINEARS];
} ref64_stats;

/* Runs the block over x[T][D] (the residual stream) in place. */
static void ref64_block_run(const ref64_block *b, double *x, int T, ref64_stats *st) {
    const mopt_arch *a = b->a;
    const int D = a->dim, F = a->ffn_dim, H = a->n_heads, KV = a->n_kv_heads, hd = a->head_dim;
    double *h = malloc((size_t)D * sizeof *h), *q = malloc((size_t)T * H * hd * sizeof *q);
    double *k = malloc((size_t)T * KV * hd * sizeof *k), *v = malloc((size_t)T * KV * hd * sizeof *v);
    double *att = malloc((size_t)H * hd * sizeof *att), *o = malloc((size_t)D * sizeof *o), *sc = malloc((size_t)T * sizeof *sc);
    double *gt = malloc((size_t)F * sizeof *gt), *up = malloc((size_t)F * sizeof *up);
#define REF64_ADD_STATS(lin, vec, n)                                                                                    \
    do {                                                                                                            \
        if (st && st->sq[lin])                                                                                      \
            for (int j_ = 0; j_ < (n); j_++) st->sq[lin][j_] += (vec)[j_] * (vec)[j_];                              \
        if (st && st->xx[lin])                                                                                      \
            for (int i_ = 0; i_ < (n); i_++)                                                                        \
                for (int j_ = 0; j_ <= i_; j_++) st->xx[lin][(size_t)i_ * (n) + j_] += (vec)[i_] * (vec)[j_];       \
    } while (0)
    for (int t = 0; t < T; t++) {
        ref64_rmsnorm(h, x + (size_t)t * D, b->n1, D, a->norm_eps);
        REF64_ADD_STATS(REF64_Q, h, D);
        ref64_matvec(q + (size_t)t * H * hd, b->w[REF64_Q], h, H * hd, D);
        ref64_matvec(k + (size_t)t * KV * hd, b->w[REF64_K], h, KV * hd, D);
        ref64_matvec(v + (size_t)t * KV * hd, b->w[REF64_V], h, KV * hd, D);
        for (int hh = 0; hh < H + KV; hh++) { /* rotate half: pairs (i, i + hd/2) */
            double *p = hh < H ? q + ((size_t)t * H + hh) * hd : k + ((size_t)t * KV + hh - H) * hd;
            for (int i = 0; i < hd / 2; i++) {
                const double ang = t * pow(a->rope_theta, -2.0 * i / hd), c = cos(ang), s = sin(ang);
                const double x0 = p[i], x1 = p[i + hd / 2];
                p[i] = x0 * c - x1 * s;
                p[i + hd / 2] = x1 * c + x0 * s;
            }
        }
    }
    if (st && st->act_mean) memset(st->act_mean, 0, (size_t)F * sizeof *st->act_mean);
    for (int t = 0; t < T; t++) {
        for (int hh = 0; hh < H; hh++) {
            const int kvh = hh / (H / KV);
            double mx = -1e300, z = 0;
            for (int s = 0; s <= t; s++) {
                double d = 0;
                for (int i = 0; i < hd; i++) d += q[((size_t)t * H + hh) * hd + i] * k[((size_t)s * KV + kvh) * hd + i];
                sc[s] = d / sqrt((double)hd);
                mx = fmax(mx, sc[s]);
            }
            for (int s = 0; s <= t; s++) z += (sc[s] = exp(sc[s] - mx));
            for (int i = 0; i < hd; i++) {
                double acc = 0;
                for (int s = 0; s <= t; s++) acc += sc[s] / z * v[((size_t)s * KV + kvh) * hd + i];
                att[hh * hd + i] = acc;
            }
        }
        REF64_ADD_STATS(REF64_O, att, H * hd);
        ref64_matvec(o, b->w[REF64_O], att, D, H * hd);
        double *xt = x + (size_t)t * D;
        for (int i = 0; i < D; i++) xt[i] += o[i];
        ref64_rmsnorm(h, xt, b->n2, D, a->norm_eps);
        REF64_ADD_STATS(REF64_GATE, h, D);
        ref64_matvec(gt, b->w[REF64_GATE], h, F, D);
        ref64_matvec(up, b->w[REF64_UP], h, F, D);
        for (int j = 0; j < F; j++) gt[j] = gt[j] / (1 + exp(-gt[j])) * up[j]; /* the input of down_proj */
        REF64_ADD_STATS(REF64_DOWN, gt, F);
        if (st && st->act_mean)
            for (int j = 0; j < F; j++) st->act_mean[j] += fabs(gt[j]) / T;
        ref64_matvec(o, b->w[REF64_DOWN], gt, D, F);
        for (int i = 0; i < D; i++) xt[i] += o[i];
    }
#undef REF64_ADD_STATS
    free(h), free(q), free(k), free(v), free(att), free(o), free(sc), free(gt), free(up);
}

/* The residual stream entering block 0: the token embeddings, as doubles. */
static double *ref64_embed(const mopt_graph *g, const int32_t *ids, int T) {
    const int D = mopt_graph_arch(g)->dim;
    double *emb = ref64_tensor(g, "model.embed_tokens.weight", 0), *x = malloc((size_t)T * D * sizeof *x);
    for (int t = 0; t < T; t++) memcpy(x + (size_t)t * D, emb + (size_t)ids[t] * D, (size_t)D * sizeof *x);
    free(emb);
    return x;
}

/* The calibration windows plugins/quant/calib.c draws (seeded starts, as it documents). */
static int32_t *ref64_calib_windows(const int32_t *ids, size_t n, int windows, int len, int64_t seed) {
    uint64_t rs = 0x9E3779B97F4A7C15ull ^ ((uint64_t)seed * 0xBF58476D1CE4E5B9ull + 1);
    int32_t *w = malloc((size_t)windows * len * sizeof *w);
    for (int i = 0; i < windows; i++) {
        uint64_t x = rs; /* mopt_rand: xorshift64* */
        x ^= x >> 12, x ^= x << 25, x ^= x >> 27;
        rs = x;
        memcpy(w + (size_t)i * len, ids + (x * 0x2545F4914F6CDD1Dull) % (n - (size_t)len + 1), (size_t)len * sizeof *w);
    }
    return w;
}

#endif
