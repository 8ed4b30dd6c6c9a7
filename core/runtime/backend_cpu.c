/* CPU backend: each op's forward over [T, width] fp32 activations, threaded
 * with the pool and vectorized through the dispatched kernels. Dense prefill
 * GEMMs go to OpenBLAS (single-threaded per call, one call per row block of
 * the weight, so our pool owns the threads); decode GEMVs read bf16/f16/f32
 * weights directly. */
#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_impl.h"
#include "base.h"
#include "kernels.h"
#include "mopt/executor.h"
#include "mopt/quant.h"
#include "tensor_impl.h"
#include "threadpool.h"

#define GEMM_ROWS 64 /* weight rows per integer prefill task */
/* weight rows per SGEMM prefill task (rows widened to fp32 where stored otherwise): OpenBLAS packs all of x again
 * for every call, which at 64 rows cost a fifth of a 512-token prefill of F16 weights */
#define SGEMM_ROWS 256
#define GEMV_ROWS_MIN 16   /* weight rows per decode task: at least, */
#define GEMV_ROWS_MAX 256  /* at most (each thread then streams long runs of rows), 2 tasks per thread between */
#define ATT_ROWS 32  /* query rows per prefill attention task */
/* values per task of the elementwise ops: smaller jobs cost more in the threads' hand-off than they save */
#define ACT_CHUNK 4096 /* SwiGLU, GELU */
#define NORM_CHUNK 16384 /* norms: whole rows, at least one a task */
#define GEMV_MAX_TOKENS 8 /* up to this many tokens per call, linears read weights in place */
/* Float weights read in place 8 tokens at a time up to this many tokens: below it OpenBLAS's SGEMM over widened
 * rows was slower, 2-4x between 24 and 48 tokens (mopt-bench-kernels --only bf16, rows of 256 and 2048) */
#define DENSE_ROWS_MAX_TOKENS 64

extern void openblas_set_num_threads(int);
extern char *openblas_get_corename(void);

const char *mopt_cpu_gemm_name(void) {
    static _Thread_local char name[96];
    const char *core = openblas_get_corename(), *forced = getenv("OPENBLAS_CORETYPE");
    snprintf(name, sizeof name, "OpenBLAS %.32s%s", core ? core : "?", forced && *forced ? " (set by OPENBLAS_CORETYPE)" : "");
    return name;
}

typedef struct cpu_ctx {
    mopt_pool *pool;
    const mopt_kernels *k;
    int32_t n_threads;
    float **wscratch;   /* per thread: SGEMM_ROWS x max_in widened weights */
    float **ascratch;   /* per thread: att_rows x max_ctx attention probabilities */
    float **kvscratch;  /* per thread: widened K rows, then V rows, each max_ctx x kv_hd (caches not in fp32), or NULL */
    int64_t kv_hd;      /* the widest attention head */
    /* per call: transformed activations (quantized kinds), two buffers for each linear of a group, since a group's
     * linears are all prepared before any of them runs */
    void *xbuf[MOPT_MAX_LINEAR_GROUP][2];
    size_t xbuf_cap[MOPT_MAX_LINEAR_GROUP][2];
    int32_t xslot;             /* the linear of a group being prepared: its pair of buffers */
    struct group_job *collect; /* while a group is prepared: where run_gemv leaves each linear's tasks */
    int64_t max_in;
    int32_t max_ctx;
    /* RoPE's cos and sin for positions [0, rope_n), [pos][half] each, for one
     * (theta, head_dim): every layer and sequence reads them rather than
     * calling powf, cosf and sinf per token */
    float *rope_cs, *rope_sn;
    int32_t rope_n, rope_cap, rope_hd;
    float rope_theta;
} cpu_ctx;

static void cpu_free(void *p) {
    cpu_ctx *c = p;
    if (!c) return;
    mopt_pool_free(c->pool);
    for (int32_t i = 0; i < c->n_threads; i++) {
        if (c->wscratch) free(c->wscratch[i]);
    }
    for (int32_t i = 0; c->ascratch && i < c->n_threads; i++) free(c->ascratch[i]);
    for (int32_t i = 0; c->kvscratch && i < c->n_threads; i++) free(c->kvscratch[i]);
    free(c->ascratch);
    free(c->kvscratch);
    free(c->wscratch);
    for (int32_t i = 0; i < MOPT_MAX_LINEAR_GROUP; i++) free(c->xbuf[i][0]), free(c->xbuf[i][1]);
    free(c->rope_cs);
    free(c->rope_sn);
    free(c);
}

/* The per-thread room prefill's attention widens a cache not in fp32 into: made with the context for a graph that
 * quantizes caches, on first use for a session's f16 cache. False when out of memory. */
static bool kv_scratch_ready(cpu_ctx *c) {
    if (c->kvscratch) return true;
    float **k = calloc((size_t)c->n_threads, sizeof *k);
    for (int32_t i = 0; k && i < c->n_threads; i++)
        if (!(k[i] = malloc(2 * (size_t)c->kv_hd * (size_t)c->max_ctx * sizeof(float)))) {
            while (i--) free(k[i]);
            free(k);
            k = NULL;
        }
    c->kvscratch = k;
    return k != NULL;
}

static mopt_status cpu_init(void **out, const mopt_graph *g, int32_t n_threads, int32_t max_ctx, int32_t device, mopt_error *err) {
    (void)device;
    cpu_ctx *c = calloc(1, sizeof *c);
    if (!c) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    c->pool = mopt_pool_new(n_threads);
    if (!c->pool) {
        free(c);
        return MOPT_FAIL(err, MOPT_E_NOMEM, "cannot start threads");
    }
    c->n_threads = mopt_pool_size(c->pool);
    c->k = mopt_kernels_get();
    c->max_ctx = max_ctx;
    int64_t att_rows = ATT_ROWS; /* prefill's query rows, or decode's query heads per KV head */
    bool kv_quant = false; /* a layer whose graph quantizes its cache */
    for (int32_t i = 0; i < mopt_graph_n_nodes(g); i++) {
        const mopt_node *n = mopt_graph_node(g, i);
        if (n->weight && (n->op == MOPT_OP_LINEAR || n->op == MOPT_OP_LM_HEAD) && n->weight->ne[0] > c->max_in)
            c->max_in = n->weight->ne[0];
        if (n->op == MOPT_OP_ATTENTION && n->n_kv_heads > 0 && n->n_heads / n->n_kv_heads > att_rows)
            att_rows = n->n_heads / n->n_kv_heads;
        if (n->op == MOPT_OP_ATTENTION && n->head_dim > c->kv_hd) c->kv_hd = n->head_dim;
        if (n->op == MOPT_OP_ATTENTION && mopt_graph_kv_quant(g, n->layer).format != MOPT_KV_FLOAT) kv_quant = true;
    }
    c->wscratch = calloc((size_t)c->n_threads, sizeof *c->wscratch);
    c->ascratch = calloc((size_t)c->n_threads, sizeof *c->ascratch);
    if (!c->wscratch || !c->ascratch) goto nomem;
    for (int32_t i = 0; i < c->n_threads; i++) {
        c->wscratch[i] = malloc((size_t)SGEMM_ROWS * (size_t)(c->max_in ? c->max_in : 1) * sizeof(float));
        c->ascratch[i] = malloc((size_t)att_rows * (size_t)max_ctx * sizeof(float));
        if (!c->wscratch[i] || !c->ascratch[i]) goto nomem;
    }
    if (kv_quant && !kv_scratch_ready(c)) goto nomem;
    openblas_set_num_threads(1);
    *out = c;
    return MOPT_OK;
nomem:
    cpu_free(c);
    return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory for scratch buffers");
}

static int32_t cpu_n_threads(const void *p) { return ((const cpu_ctx *)p)->n_threads; }

/* --- linear ----------------------------------------------------------------- */

typedef struct {
    cpu_ctx *c;
    const mopt_tensor *w, *b;
    const float *x; /* [T, in] */
    int32_t T, x_stride;
    float *y;       /* [T, out] */
    int32_t y_stride;
    int64_t in, out;
    const float *xsum;    /* QINT: [T, n_groups] sums of x over each group (of the int8 x where xq8 is set) */
    const int8_t *xq8;    /* x as int8 per 32 values (or per token): [T, in] for the GEMVs, in tiles of 8 tokens for the integer GEMM ... */
    const float *xd;      /* ... with their scales, [T, in / 32] or [tiles, in / 32, 8] */
    const int16_t *xs16;  /* KQUANT: [T, in / 16] sums of xq8 over every 16 values */
    const int32_t *xzt;   /* 4-bit integer GEMM: [tiles, in / 32, 8] each block's int32 start, -8 x its sum of levels */
    int64_t gemv_rows;    /* rows per decode task */
    int64_t ng;           /* integer GEMM: groups of x sums per token (1 for W8A8) */
    int64_t bs;           /* integer GEMM: values per block of x (32; 16 for the k-quants with sub-blocks of 16) */
    const int8_t *xq;     /* W8A8: [T, in] quantized activations */
    const float *xscale;  /* W8A8: [T] their scales */
} lin_job;

static float bias_at(const mopt_tensor *b, int64_t o) {
    if (!b) return 0.0f;
    switch (b->dtype) {
    case MOPT_DTYPE_F32: return ((const float *)b->data)[o];
    case MOPT_DTYPE_F16: return mopt_f16_to_f32(((const uint16_t *)b->data)[o]);
    default: return mopt_bf16_to_f32(((const uint16_t *)b->data)[o]);
    }
}

/* int4 kept values: QINT 4-bit blocks of 32, unpacked and scaled in vectors; a group of gs inputs holds gs/2 of them */
static void sp24_i4_values(const cpu_ctx *c, const mopt_tensor *w, const uint8_t *row, int64_t o, float *dst) {
    const int64_t n = w->ne[0] / 2, ng = w->quant->scale->ne[0], per = w->quant->group_size > 0 ? w->quant->group_size / 2 : n;
    const uint16_t *sc = (const uint16_t *)w->quant->scale->data + o * ng;
    uint8_t lv[32];
    for (int64_t k = 0; k < n; k += 32) {
        c->k->unpack_q4(row + k / 2, 1, lv);
        c->k->dequant_u8(lv, 32, 8.0f, mopt_f16_to_f32(sc[k / per]), dst + k);
    }
}

/* The kept values of 2:4 row o as fp32: in place for f32, else widened into dst[in/2]. */
static const float *sp24_values(const cpu_ctx *c, const mopt_tensor *w, int64_t o, float *dst) {
    const void *row = (const uint8_t *)w->data + (size_t)o * w->nb[1];
    const int64_t n = w->ne[0] / 2;
    if (w->quant->flags & MOPT_QUANT_VALUES_F32) return row;
    if (w->quant->flags & MOPT_QUANT_VALUES_I4) sp24_i4_values(c, w, row, o, dst);
    else if (w->quant->flags & MOPT_QUANT_VALUES_I8) mopt_sp24_values_f32(w, o, dst); /* level x the row's scale */
    else if (w->quant->flags & MOPT_QUANT_VALUES_BF16) c->k->cvt_bf16(row, dst, n);
    else c->k->cvt_f16(row, dst, n);
    return dst;
}

#define MXFP_CHUNK 64 /* MXFP blocks whose scales are widened at a time */

/* Row o of a block-scaled float weight (MXFP), MXFP_CHUNK blocks at a time:
 * its dot product with x, or (x NULL) the row widened into dst */
static float mxfp_row(const mopt_kernels *k, const mopt_tensor *w, int64_t o, const float *x, float *dst) {
    const int64_t gs = w->quant->group_size, nb = w->ne[0] / gs;
    const int fp4 = w->quant->bits == 4;
    const uint8_t *row = (const uint8_t *)w->data + (size_t)o * w->nb[1];
    float bs[MXFP_CHUNK], s = 0;
    for (int64_t b0 = 0; b0 < nb; b0 += MXFP_CHUNK) {
        const int64_t n = nb - b0 < MXFP_CHUNK ? nb - b0 : MXFP_CHUNK, c0 = b0 * gs;
        const uint8_t *q = row + (fp4 ? c0 / 2 : c0);
        mopt_mxfp_block_scales(w, o, b0, n, bs);
        if (x) s += fp4 ? k->dot_fp4(q, bs, gs, x + c0, n * gs) : k->dot_e4m3_blocks(q, bs, gs, x + c0, n * gs);
        else if (fp4) k->dequant_fp4(q, bs, gs, n * gs, dst + c0);
        else
            for (int64_t b = 0; b < n; b++) k->dequant_e4m3(q + b * gs, gs, bs[b], dst + c0 + b * gs);
    }
    return s;
}

/* Widens `rows` weight rows starting at o0 into fp32 dst [rows, in]. */
static void widen_rows(const cpu_ctx *c, const mopt_tensor *w, int64_t o0, int64_t rows, float *dst) {
    const int64_t in = w->ne[0];
    if (w->dtype == MOPT_DTYPE_KQUANT) { /* Q2_K ... Q6_K in vectors */
        for (int64_t r = 0; r < rows; r++)
            c->k->dequant_kquant((const uint8_t *)w->data + (size_t)(o0 + r) * w->nb[1], w->quant->bits, in / MOPT_KQ_BLOCK, dst + r * in);
        return;
    }
    switch (w->dtype) {
    case MOPT_DTYPE_F16: c->k->cvt_f16((const uint16_t *)w->data + o0 * in, dst, rows * in); return;
    case MOPT_DTYPE_BF16: c->k->cvt_bf16((const uint16_t *)w->data + o0 * in, dst, rows * in); return;
    case MOPT_DTYPE_SP24:
        for (int64_t r = 0; r < rows; r++) { /* the values land in the row's upper half, then spread over it */
            float *d = dst + r * in;
            const float *v = sp24_values(c, w, o0 + r, d + in / 2);
            if (v != d + in / 2) memcpy(d + in / 2, v, (size_t)(in / 2) * sizeof *d);
            mopt_sp24_spread(d, mopt_sp24_positions(w, o0 + r), in);
        }
        return;
    case MOPT_DTYPE_MXFP:
        for (int64_t r = 0; r < rows; r++) mxfp_row(c->k, w, o0 + r, NULL, dst + r * in);
        return;
    case MOPT_DTYPE_FP8: {
        const mopt_quant_info *q = w->quant;
        for (int64_t r = 0; r < rows; r++) {
            const uint8_t *src = (const uint8_t *)w->data + (size_t)(o0 + r) * w->nb[1];
            float s = ((const float *)q->scale->data)[(q->flags & MOPT_QUANT_PER_TENSOR) ? 0 : o0 + r];
            c->k->dequant_e4m3(src, in, s, dst + r * in);
        }
        return;
    }
    case MOPT_DTYPE_QINT:
        if (!w->quant->g_idx) {
            const mopt_quant_info *q = w->quant;
            const int32_t bits = q->bits, bb = mopt_qint_block_bytes(bits);
            const int64_t gs = q->group_size > 0 ? q->group_size : in, ng = q->scale->ne[0];
            const float zsym = (float)(1 << (bits - 1));
            for (int64_t r = 0; r < rows; r++) {
                const uint8_t *row = (const uint8_t *)w->data + (size_t)(o0 + r) * w->nb[1];
                const uint16_t *sc = (const uint16_t *)q->scale->data + (o0 + r) * ng;
                const uint8_t *zp = q->zero ? (const uint8_t *)q->zero->data + (o0 + r) * ng : NULL;
                float *d = dst + r * in, v[32];
                uint8_t lv[32];
                for (int64_t b = 0; b * 32 < in; b++) {
                    int64_t c0 = b * 32, g = c0 / gs, n = in - c0 < 32 ? in - c0 : 32; /* groups are whole blocks */
                    float s = mopt_f16_to_f32(sc[g]), z = zp ? (float)zp[g] : zsym;
                    if (bits == 8 || bits == 4) { /* levels as bytes, widened in vectors */
                        const uint8_t *l = row + b * bb;
                        if (bits == 4) c->k->unpack_q4(l, 1, lv), l = lv;
                        c->k->dequant_u8(l, n, z, s, d + c0);
                        continue;
                    }
                    mopt_qblock_levels(row + b * bb, bits, v);
                    for (int j = 0; j < n; j++) d[c0 + j] = (v[j] - z) * s;
                }
                if (q->flags & MOPT_QUANT_W_FP8) c->k->round_e4m3(d, in, q->global_scale, d); /* W4A8_AWQ: int4 widened to FP8 */
            }
            return;
        }
        __attribute__((fallthrough)); /* act-order rows go element by element */
    default: /* W8A8, act-order QINT, Q2_K, Q3_K and Q5_K */
        for (int64_t r = 0; r < rows; r++) mopt_weight_row_f32(w, o0 + r, dst + r * in, NULL);
    }
}

/* QINT rows whose weights are rounded to E4M3 (W4A8_AWQ) with 4-bit levels in whole blocks and whole groups: decode
 * reads them through per-group tables of their 16 values (qint_fp8_tables); others widen a row at a time. */
static bool qint_lut_rows(const mopt_tensor *w) {
    if (w->dtype != MOPT_DTYPE_QINT || !(w->quant->flags & MOPT_QUANT_W_FP8) || w->quant->bits != 4 || w->quant->g_idx) return false;
    const int64_t in = w->ne[0], gs = w->quant->group_size > 0 ? w->quant->group_size : in;
    return in % 32 == 0 && gs % 32 == 0 && in % gs == 0;
}

/* Row o's tables: for each group, the 16 values its levels stand for, e4m3((l - z) s / g) g, as widen_rows forms them. */
static void qint_fp8_tables(const cpu_ctx *c, const mopt_tensor *w, int64_t o, float *lut) {
    const mopt_quant_info *q = w->quant;
    const int64_t ng = q->scale->ne[0];
    const uint16_t *sc = (const uint16_t *)q->scale->data + o * ng;
    const uint8_t *zp = q->zero ? (const uint8_t *)q->zero->data + o * ng : NULL;
    static const uint8_t levels[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    for (int64_t g = 0; g < ng; g++)
        c->k->dequant_u8(levels, 16, zp ? (float)zp[g] : 8.0f, mopt_f16_to_f32(sc[g]), lut + 16 * g);
    c->k->round_e4m3(lut, 16 * ng, q->global_scale, lut);
}

/* sum over one group's columns [c0, c1) of level * x, blocks read in place */
static float qint_group_dot(const cpu_ctx *c, const uint8_t *row, int32_t bits, int32_t bb, const float *x, int64_t c0,
                            int64_t c1) {
    int64_t b0 = c0 / 32, full = (c1 - c0) / 32;
    float s;
    if (bits == 4) s = c->k->dot_q4(row + b0 * bb, x + c0, full);
    else if (bits == 8) s = c->k->dot_q8(row + b0 * bb, x + c0, full);
    else {
        s = 0;
        for (int64_t k = 0; k < full; k++) s += mopt_qblock_dot(row + (b0 + k) * bb, bits, x + c0 + 32 * k, 32);
    }
    if (c0 + full * 32 < c1) /* a partial last block */
        s += mopt_qblock_dot(row + (b0 + full) * bb, bits, x + c0 + full * 32, (int32_t)(c1 - c0 - full * 32));
    return s;
}

static void gemv_task(void *p, int64_t task, int32_t thread) {
    lin_job *j = p;
    const mopt_kernels *k = j->c->k;
    const mopt_tensor *w = j->w;
    int64_t o0 = task * j->gemv_rows, o1 = o0 + j->gemv_rows < j->out ? o0 + j->gemv_rows : j->out;
    if (w->dtype == MOPT_DTYPE_QINT && !w->quant->g_idx && !(w->quant->flags & MOPT_QUANT_W_FP8)) {
        const mopt_quant_info *q = w->quant;
        const int32_t bits = q->bits, bb = mopt_qint_block_bytes(bits);
        const int64_t gs = q->group_size > 0 ? q->group_size : j->in, ng = q->scale->ne[0];
        const float zsym = (float)(1 << (bits - 1));
        if (j->xq8) { /* 4 or 8 bits, whole groups of whole blocks, against int8 x: the kernel takes the row range */
            const uint16_t *sc = (const uint16_t *)q->scale->data + o0 * ng;
            const uint8_t *zp = q->zero ? (const uint8_t *)q->zero->data + o0 * ng : NULL;
            const uint8_t *rows = (const uint8_t *)w->data + (size_t)o0 * w->nb[1];
            const int32_t T = j->T;
            if (T > 1 && T <= 8 && (bits == 4 ? k->gemvs_q4_q8 : k->gemvs_q8_q8)) /* the tokens together: each row read once */
                (bits == 4 ? k->gemvs_q4_q8 : k->gemvs_q8_q8)(rows, w->nb[1], o1 - o0, sc, zp, zsym, j->xq8, j->xd, j->xsum, ng, gs / 32,
                                                              T, j->y + o0, j->y_stride);
            else
                for (int32_t t = 0; t < T; t++)
                    (bits == 4 ? k->gemv_q4_q8 : k->gemv_q8_q8)(rows, w->nb[1], o1 - o0, sc, zp, zsym, j->xq8 + (size_t)t * j->in,
                                                                j->xd + (size_t)t * (j->in / 32), j->xsum + (size_t)t * ng, ng, gs / 32,
                                                                j->y + (size_t)t * j->y_stride + o0);
            for (int32_t t = 0; j->b && t < T; t++)
                for (int64_t o = o0; o < o1; o++) j->y[(size_t)t * j->y_stride + o] += bias_at(j->b, o);
            return;
        }
        for (int64_t o = o0; o < o1; o++) {
            const uint8_t *row = (const uint8_t *)w->data + (size_t)o * w->nb[1];
            const uint16_t *sc = (const uint16_t *)q->scale->data + o * ng;
            const uint8_t *zp = q->zero ? (const uint8_t *)q->zero->data + o * ng : NULL;
            for (int32_t t = 0; t < j->T; t++) {
                const float *x = j->x + (size_t)t * j->x_stride, *xs = j->xsum + (size_t)t * ng;
                float acc = 0;
                for (int64_t g = 0; g < ng; g++) {
                    int64_t c0 = g * gs, c1 = c0 + gs < j->in ? c0 + gs : j->in;
                    float raw = qint_group_dot(j->c, row, bits, bb, x, c0, c1);
                    acc += mopt_f16_to_f32(sc[g]) * (raw - (zp ? (float)zp[g] : zsym) * xs[g]);
                }
                j->y[(size_t)t * j->y_stride + o] = acc + bias_at(j->b, o);
            }
        }
        return;
    }
    if (w->dtype == MOPT_DTYPE_KQUANT && j->xs16) { /* every k-quant against int8 x: the kernel takes the row range */
        const uint8_t *rows = (const uint8_t *)w->data + (size_t)o0 * w->nb[1];
        const int32_t bits = w->quant->bits;
        void (*together)(const uint8_t *, size_t, int64_t, const int8_t *, const float *, const int16_t *, int64_t, int32_t, float *,
                         int64_t) = bits == 2   ? k->gemvs_q2k_q8
                                    : bits == 3 ? k->gemvs_q3k_q8
                                    : bits == 4 ? k->gemvs_q4k_q8
                                    : bits == 5 ? k->gemvs_q5k_q8
                                                : k->gemvs_q6k_q8;
        if (j->T > 1 && together) { /* the tokens together: each row read and unpacked once */
            together(rows, w->nb[1], o1 - o0, j->xq8, j->xd, j->xs16, j->in / MOPT_KQ_BLOCK, j->T, j->y + o0, j->y_stride);
            for (int32_t t = 0; j->b && t < j->T; t++)
                for (int64_t o = o0; o < o1; o++) j->y[(size_t)t * j->y_stride + o] += bias_at(j->b, o);
            return;
        }
        for (int32_t t = 0; t < j->T; t++) {
            float *y = j->y + (size_t)t * j->y_stride + o0;
            (bits == 2 ? k->gemv_q2k_q8 : bits == 3 ? k->gemv_q3k_q8 : bits == 4 ? k->gemv_q4k_q8 : bits == 5 ? k->gemv_q5k_q8 : k->gemv_q6k_q8)(
                rows, w->nb[1], o1 - o0, j->xq8 + (size_t)t * j->in, j->xd + (size_t)t * (j->in / MOPT_KQ_BLOCK),
                j->xs16 + (size_t)t * (j->in / 16), j->in / MOPT_KQ_BLOCK, y);
            if (j->b)
                for (int64_t o = o0; o < o1; o++) y[o - o0] += bias_at(j->b, o);
        }
        return;
    }
    if (w->dtype == MOPT_DTYPE_SP24 && (w->quant->flags & MOPT_QUANT_VALUES_I4)) { /* int4 2:4: the kernel reads the row in place */
        const int64_t ng = w->quant->scale->ne[0], gs = w->quant->group_size > 0 ? w->quant->group_size : j->in;
        for (int64_t o = o0; o < o1; o++) {
            const uint8_t *row = (const uint8_t *)w->data + (size_t)o * w->nb[1], *pos = mopt_sp24_positions(w, o);
            const uint16_t *sc = (const uint16_t *)w->quant->scale->data + o * ng;
            for (int32_t t = 0; t < j->T; t++)
                j->y[(size_t)t * j->y_stride + o] = k->dot_sp24_i4(row, sc, gs, pos, j->x + (size_t)t * j->x_stride, j->in) + bias_at(j->b, o);
        }
        return;
    }
    if (w->dtype == MOPT_DTYPE_SP24) { /* 2:4: widen the kept values only, the kernel reads the positions */
        const int bf16 = (w->quant->flags & MOPT_QUANT_VALUES_BF16) != 0;
        for (int64_t o = o0; o < o1; o++) {
            const uint8_t *pos = mopt_sp24_positions(w, o);
            __builtin_prefetch(pos + w->nb[1]); /* the next row's first positions, a row's length ahead of its values */
            const uint16_t *raw = (const uint16_t *)((const uint8_t *)w->data + (size_t)o * w->nb[1]);
            const float *vals = bf16 ? NULL : sp24_values(j->c, w, o, j->c->wscratch[thread]);
            for (int32_t t = 0; t < j->T; t++) {
                const float *x = j->x + (size_t)t * j->x_stride;
                const float s = bf16 ? k->dot_sp24_bf16(raw, pos, x, j->in) : k->dot_sp24(vals, pos, x, j->in);
                j->y[(size_t)t * j->y_stride + o] = s + bias_at(j->b, o);
            }
        }
        return;
    }
    if (w->dtype == MOPT_DTYPE_FP8) { /* E4M3 rows read in place, scaled per row or tensor */
        const float *ws = (const float *)w->quant->scale->data;
        const int per_tensor = (w->quant->flags & MOPT_QUANT_PER_TENSOR) != 0;
        for (int64_t o = o0; o < o1; o++) {
            const uint8_t *row = (const uint8_t *)w->data + (size_t)o * w->nb[1];
            for (int32_t t = 0; t < j->T; t++)
                j->y[(size_t)t * j->y_stride + o] = k->dot_e4m3(row, j->x + (size_t)t * j->x_stride, j->in) * ws[per_tensor ? 0 : o] +
                                                    bias_at(j->b, o);
        }
        return;
    }
    if (w->dtype == MOPT_DTYPE_MXFP) { /* NVFP4, MXFP4, MXFP8 rows read in place */
        for (int64_t o = o0; o < o1; o++)
            for (int32_t t = 0; t < j->T; t++)
                j->y[(size_t)t * j->y_stride + o] = mxfp_row(k, w, o, j->x + (size_t)t * j->x_stride, NULL) + bias_at(j->b, o);
        return;
    }
    if (qint_lut_rows(w)) { /* W4A8_AWQ: each group's 16 values widened to E4M3 once, a table the kernel reads from */
        const mopt_quant_info *q = w->quant;
        const int64_t gs = q->group_size > 0 ? q->group_size : j->in, ng = q->scale->ne[0];
        float *lut = j->c->wscratch[thread]; /* ng * 16 floats: a row of `in` fits, since groups are 32 or more */
        for (int64_t o = o0; o < o1; o++) {
            const uint8_t *row = (const uint8_t *)w->data + (size_t)o * w->nb[1];
            qint_fp8_tables(j->c, w, o, lut);
            for (int32_t t = 0; t < j->T; t++) {
                const float *x = j->x + (size_t)t * j->x_stride;
                float acc = 0;
                for (int64_t g = 0; g < ng; g++) acc += k->dot_q4_lut(row + g * (gs / 32) * 16, lut + 16 * g, x + g * gs, gs / 32);
                j->y[(size_t)t * j->y_stride + o] = acc + bias_at(j->b, o);
            }
        }
        return;
    }
    if (w->dtype >= MOPT_DTYPE_PACKED_FIRST) { /* act-order QINT and the rest: widen one row, then dot */
        float *row = j->c->wscratch[thread];
        for (int64_t o = o0; o < o1; o++) {
            widen_rows(j->c, w, o, 1, row);
            for (int32_t t = 0; t < j->T; t++)
                j->y[(size_t)t * j->y_stride + o] = k->dot_f32(row, j->x + (size_t)t * j->x_stride, j->in) + bias_at(j->b, o);
        }
        return;
    }
    if (j->T > 1) { /* several tokens (batched decode, verification, short prompts): the task's rows for 8 tokens at a time */
        for (int32_t t0 = 0; t0 < j->T; t0 += GEMV_MAX_TOKENS) {
            const int32_t nt = j->T - t0 < GEMV_MAX_TOKENS ? j->T - t0 : GEMV_MAX_TOKENS;
            const float *x = j->x + (size_t)t0 * j->x_stride;
            float *y = j->y + (size_t)t0 * j->y_stride + o0;
            switch (w->dtype) {
            case MOPT_DTYPE_F32: k->dots_rows_f32((const float *)w->data + o0 * j->in, o1 - o0, x, j->x_stride, nt, j->in, y, j->y_stride); break;
            case MOPT_DTYPE_F16: k->dots_rows_f16((const uint16_t *)w->data + o0 * j->in, o1 - o0, x, j->x_stride, nt, j->in, y, j->y_stride); break;
            default: k->dots_rows_bf16((const uint16_t *)w->data + o0 * j->in, o1 - o0, x, j->x_stride, nt, j->in, y, j->y_stride); break;
            }
        }
        if (j->b)
            for (int32_t t = 0; t < j->T; t++)
                for (int64_t o = o0; o < o1; o++) j->y[(size_t)t * j->y_stride + o] += bias_at(j->b, o);
        return;
    }
    for (int32_t t = 0; t < j->T; t++) {
        const float *x = j->x + (size_t)t * j->x_stride;
        float *y = j->y + (size_t)t * j->y_stride;
        for (int64_t o = o0; o < o1; o++) {
            float s;
            switch (w->dtype) {
            case MOPT_DTYPE_F32: s = k->dot_f32((const float *)w->data + o * j->in, x, j->in); break;
            case MOPT_DTYPE_F16: s = k->dot_f16((const uint16_t *)w->data + o * j->in, x, j->in); break;
            default: s = k->dot_bf16((const uint16_t *)w->data + o * j->in, x, j->in); break;
            }
            y[o] = s + bias_at(j->b, o);
        }
    }
}

static void w8a8_task(void *p, int64_t task, int32_t thread) {
    lin_job *j = p;
    int64_t o0 = task * j->gemv_rows, o1 = o0 + j->gemv_rows < j->out ? o0 + j->gemv_rows : j->out;
    const float *ws = (const float *)j->w->quant->scale->data;
    for (int64_t o = o0; o < o1; o++) {
        const int8_t *row = (const int8_t *)j->w->data + (size_t)o * j->w->nb[1];
        for (int32_t t = 0; t < j->T; t++) {
            int32_t d = j->c->k->dot_i8(row, j->xq + (size_t)t * j->in, j->in);
            j->y[(size_t)t * j->y_stride + o] = (float)d * ws[o] * j->xscale[t] + bias_at(j->b, o);
        }
    }
}

/* 2:4 with int8 values: x holds each token's int8 levels as floats */
static void sp24_i8_task(void *p, int64_t task, int32_t thread) {
    lin_job *j = p;
    const mopt_tensor *w = j->w;
    int64_t o0 = task * j->gemv_rows, o1 = o0 + j->gemv_rows < j->out ? o0 + j->gemv_rows : j->out;
    const float *ws = (const float *)w->quant->scale->data;
    for (int64_t o = o0; o < o1; o++) {
        const int8_t *vals = (const int8_t *)((const uint8_t *)w->data + (size_t)o * w->nb[1]);
        const uint8_t *pos = mopt_sp24_positions(w, o);
        __builtin_prefetch(pos + w->nb[1]);
        for (int32_t t = 0; t < j->T; t++) {
            const float d = j->c->k->dot_sp24_i8(vals, pos, j->x + (size_t)t * j->x_stride, j->in);
            j->y[(size_t)t * j->y_stride + o] = d * ws[o] * j->xscale[t] + bias_at(j->b, o);
        }
    }
}

static void gemm_task(void *p, int64_t task, int32_t thread) {
    lin_job *j = p;
    cpu_ctx *c = j->c;
    int64_t o0 = task * SGEMM_ROWS, rows = j->out - o0 < SGEMM_ROWS ? j->out - o0 : SGEMM_ROWS;
    const float *w;
    const bool sp24_levels = j->xscale && j->w->dtype == MOPT_DTYPE_SP24;
    if (j->w->dtype == MOPT_DTYPE_F32) {
        w = (const float *)j->w->data + o0 * j->in;
    } else if (sp24_levels) {
        /* 2:4 int8: the levels alone, so that OpenBLAS sums integer products (exact while below 2^24, as the decode
         * kernel's) and each sum is scaled as W8A8's, sum * s * xs */
        float *d = c->wscratch[thread];
        for (int64_t r = 0; r < rows; r++, d += j->in) {
            const int8_t *v = (const int8_t *)((const uint8_t *)j->w->data + (size_t)(o0 + r) * j->w->nb[1]);
            for (int64_t k = 0; k < j->in / 2; k++) d[j->in / 2 + k] = (float)v[k];
            mopt_sp24_spread(d, mopt_sp24_positions(j->w, o0 + r), j->in);
        }
        w = c->wscratch[thread];
    } else {
        widen_rows(c, j->w, o0, rows, c->wscratch[thread]);
        w = c->wscratch[thread];
    }
    /* y[:, o0:o0+rows] = x @ w^T */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, j->T, (int)rows, (int)j->in, 1.0f, j->x, j->x_stride, w,
                (int)j->in, 0.0f, j->y + o0, j->y_stride);
    if (sp24_levels) { /* x held int8 levels (2:4 W8A8): the row's scale, then each token's */
        const float *ws = (const float *)j->w->quant->scale->data;
        for (int32_t t = 0; t < j->T; t++)
            for (int64_t o = o0; o < o0 + rows; o++) j->y[(size_t)t * j->y_stride + o] = j->y[(size_t)t * j->y_stride + o] * ws[o] * j->xscale[t];
    }
    if (j->b)
        for (int32_t t = 0; t < j->T; t++)
            for (int64_t o = o0; o < o0 + rows; o++) j->y[(size_t)t * j->y_stride + o] += bias_at(j->b, o);
}

/* A Q4_K or Q5_K row as the integer GEMM takes it, s (q - off) - zs per 32 values with off the middle level (8, 16):
 * s = d sc, zs = dmin m - off s. A sub-block whose scale is 0 holds -dmin m alone: its levels become 0, with s = 1
 * and zs = dmin m - off. */
static void q45k_scales(const uint8_t *row, int32_t bits, int64_t nsb, uint8_t *levels, float *s, float *zs) {
    const int32_t off = 1 << (bits - 1);
    for (int64_t k = 0; k < nsb; k++) {
        const uint8_t *b = row + (size_t)mopt_kquant_block_bytes(bits) * (size_t)k;
        uint16_t hd, hm;
        memcpy(&hd, b, 2);
        memcpy(&hm, b + 2, 2);
        const float d = mopt_f16_to_f32(hd), dmin = mopt_f16_to_f32(hm);
        uint8_t sc[8], m[8];
        mopt_kquant_scales_mins(b + 4, sc, m);
        for (int j = 0; j < 8; j++) {
            const float ds = d * sc[j], dm = dmin * m[j];
            if (ds == 0) memset(levels + 256 * k + 32 * j, 0, 32);
            s[8 * k + j] = ds == 0 ? 1.0f : ds;
            zs[8 * k + j] = dm - (float)off * s[8 * k + j];
        }
    }
}

/* A row of sub-blocks of 16 as the integer GEMM over blocks of 16 takes it, s (q - off) - zs per 16 values: Q6_K
 * s = d sc (off 32); Q3_K s = d (sc - 32) (off 4); Q2_K s = d sc, zs = dmin m - 2 s (off 2). */
static void kq16_scales(const uint8_t *row, int32_t bits, int64_t nsb, float *s, float *zs) {
    for (int64_t k = 0; k < nsb; k++) {
        const uint8_t *b = row + (size_t)mopt_kquant_block_bytes(bits) * (size_t)k;
        for (int j = 0; j < 16; j++) {
            float *sj = s + 16 * k + j;
            if (bits == 6) *sj = mopt_f16_at(b + 208) * (float)(int8_t)b[192 + j];
            else if (bits == 3) *sj = mopt_f16_at(b + 108) * (float)(mopt_q3k_scale(b + 96, j) - 32);
            else {
                *sj = mopt_f16_at(b + 80) * (float)(b[j] & 15);
                zs[16 * k + j] = mopt_f16_at(b + 82) * (float)(b[j] >> 4) - 2.0f * *sj;
            }
        }
    }
}

/* The offset o of the levels the integer GEMM runs through gemm_q4_q8 (which sums (level - o) x): 8 for 4-bit QINT,
 * the middle level of Q2_K ... Q6_K (2, 4, 8, 16, 32), 128 for 8-bit QINT where the kernel set takes 8-bit levels; 0
 * for the others (gemm_s8_*). */
static int32_t u8_level_offset(const mopt_kernels *k, const mopt_tensor *w) {
    if (w->dtype == MOPT_DTYPE_KQUANT) return 1 << (w->quant->bits - 1);
    if (w->dtype == MOPT_DTYPE_QINT && w->quant->bits == 4) return 8;
    return w->dtype == MOPT_DTYPE_QINT && w->quant->bits == 8 && k->u8_levels ? 128 : 0;
}

/* Integer GEMM over tiles of 8 tokens (layouts in kernels.h): a block of rows
 * unpacked to a byte per weight once, then every tile. 4-bit QINT and Q4_K
 * levels stay unsigned (gemm_q4_q8 sums level - 8), and so do 8-bit QINT
 * levels where the kernel set takes them (summed as level - 128); elsewhere
 * they become signed level - 128 (the zero-points follow). W8A8 weights are
 * signed already. */
static void int_gemm_task(void *p, int64_t task, int32_t thread) {
    lin_job *j = p;
    const mopt_kernels *k = j->c->k;
    const mopt_tensor *w = j->w;
    const mopt_quant_info *q = w->quant;
    const int64_t in = j->in, nb = in / j->bs, bpg = nb / j->ng, ng = j->ng;
    const int64_t o0 = task * GEMM_ROWS, rows = j->out - o0 < GEMM_ROWS ? j->out - o0 : GEMM_ROWS;
    const uint8_t *src = (const uint8_t *)w->data + (size_t)o0 * w->nb[1];
    int8_t *ws = (int8_t *)j->c->wscratch[thread]; /* [rows, in] weights, then [rows, in] |w|, then scales and zeros */
    uint8_t *wa = (uint8_t *)ws + rows * in;
    float *sf = (float *)(void *)(wa + rows * in), *zf = sf + rows * ng;
    const int32_t off = u8_level_offset(k, w); /* > 0: gemm_q4_q8 */
    const float *scale = NULL, *zero = NULL;
    if (w->dtype == MOPT_DTYPE_W8A8) scale = (const float *)q->scale->data + o0; /* a float scale per row */
    if (w->dtype == MOPT_DTYPE_KQUANT) { /* levels as they are, a scale (and zero-point) per sub-block */
        for (int64_t r = 0; r < rows; r++) {
            const uint8_t *row = src + (size_t)r * w->nb[1];
            k->unpack_kquant(row, q->bits, in / MOPT_KQ_BLOCK, (uint8_t *)ws + r * in);
            if (q->bits == 4 || q->bits == 5) q45k_scales(row, q->bits, in / MOPT_KQ_BLOCK, (uint8_t *)ws + r * in, sf + r * ng, zf + r * ng);
            else kq16_scales(row, q->bits, in / MOPT_KQ_BLOCK, sf + r * ng, zf + r * ng);
        }
    } else if (off) { /* levels summed as level - off (xzt); the scales as floats and an asymmetric zero-point's rest s (z - off) */
        const uint16_t *sc = (const uint16_t *)q->scale->data + o0 * ng;
        const uint8_t *zp = q->zero ? (const uint8_t *)q->zero->data + o0 * ng : NULL;
        for (int64_t r = 0; r < rows; r++) {
            if (off == 8) k->unpack_q4(src + (size_t)r * w->nb[1], nb, (uint8_t *)ws + r * in);
            else memcpy(ws + r * in, src + (size_t)r * w->nb[1], (size_t)in); /* 8-bit levels as stored */
        }
        for (int64_t i = 0; i < rows * ng; i++) sf[i] = mopt_f16_to_f32(sc[i]);
        for (int64_t i = 0; zp && i < rows * ng; i++) zf[i] = sf[i] * ((float)zp[i] - (float)off);
    } else {
        for (int64_t r = 0; r < rows; r++)
            k->unpack_s8(src + (size_t)r * w->nb[1], in, w->dtype == MOPT_DTYPE_QINT ? 0x80 : 0, ws + r * in, wa + r * in);
        if (w->dtype == MOPT_DTYPE_QINT) {
            const uint16_t *sc = (const uint16_t *)q->scale->data + o0 * ng;
            for (int64_t i = 0; i < rows * ng; i++) sf[i] = mopt_f16_to_f32(sc[i]);
            for (int64_t i = 0; q->zero && i < rows * ng; i++) zf[i] = sf[i] * ((float)((const uint8_t *)q->zero->data)[o0 * ng + i] - 128.0f);
            scale = sf, zero = q->zero ? zf : NULL; /* symmetric levels sit around 128: no zero-point left */
        }
    }
    for (int32_t t0 = 0; t0 < j->T; t0 += 8) {
        const int64_t tile = t0 / 8;
        const int8_t *xi = j->xq8 + tile * 8 * in;
        const float *xdt = j->xd + tile * 8 * nb, *xst = j->xsum + tile * 8 * ng;
        float *y = j->y + (size_t)t0 * j->y_stride + o0;
        const int32_t ntok = j->T - t0 < 8 ? j->T - t0 : 8;
        if (off) {
            const float *zs = q->zero || (w->dtype == MOPT_DTYPE_KQUANT && q->bits != 3 && q->bits != 6) ? zf : NULL; /* those have no mins */
            (j->bs == 16 ? k->gemm_q4_q8_b16 : k->gemm_q4_q8)((const uint8_t *)ws, in, rows, sf, zs, xi, j->xzt + tile * 8 * nb, xdt, xst,
                                                             ng, bpg, y, j->y_stride, ntok);
        } else if (w->dtype == MOPT_DTYPE_W8A8) /* every block of a token has the token's scale: take block 0's */
            k->gemm_s8_rows(ws, wa, in, rows, scale, xi, xdt, y, j->y_stride, ntok);
        else
            k->gemm_s8_q8(ws, wa, in, rows, scale, zero, xi, xdt, xst, ng, bpg, y, j->y_stride, ntok);
    }
    if (j->b)
        for (int32_t t = 0; t < j->T; t++)
            for (int64_t o = o0; o < o0 + rows; o++) j->y[(size_t)t * j->y_stride + o] += bias_at(j->b, o);
}

/* Grows a per-call scratch buffer in the context. */
static void *scratch(void **buf, size_t *cap, size_t need) {
    if (need > *cap) {
        void *p = realloc(*buf, need);
        if (!p) return NULL;
        *buf = p;
        *cap = need;
    }
    return *buf;
}

/* Buffer `which` (0 or 1) of the linear being prepared. */
static void *xscratch(cpu_ctx *c, int which, size_t need) {
    return scratch(&c->xbuf[c->xslot][which], &c->xbuf_cap[c->xslot][which], need);
}

/* One token's int8 levels (mopt_i8_level) with s = max|x| / 127, into q8 or (as floats) qf; returns s. For the
 * rows the kernel set's quantize_i8_blocks cannot take (in not a multiple of its vector) and 2:4's float levels. */
static float quantize_token_i8(const float *x, int64_t in, int8_t *q8, float *qf) {
    float mx = 0;
    for (int64_t i = 0; i < in; i++) {
        const float a = fabsf(x[i]);
        mx = a > mx ? a : mx;
    }
    const float s = mx > 0 ? mx / 127.0f : 1.0f;
    for (int64_t i = 0; i < in; i++) {
        const float v = mopt_i8_level(x[i], s);
        if (qf) qf[i] = v;
        else q8[i] = (int8_t)v;
    }
    return s;
}

/* Decode tasks of whole runs of rows, so each thread streams its weights with
 * few breaks: two tasks per thread on a small matrix (on lit-llama-7m finer
 * tasks measured slower, 4 per thread by 10-15%: each claim and each task's
 * start cost more than the imbalance they save), at most GEMV_ROWS_MAX rows on
 * a large one so that a slow thread does not hold up the rest. */
static int64_t gemv_rows_for(const cpu_ctx *c, int64_t out) {
    const int64_t rows = out / (2 * (int64_t)c->n_threads) / GEMV_ROWS_MIN * GEMV_ROWS_MIN;
    return rows < GEMV_ROWS_MIN ? GEMV_ROWS_MIN : rows > GEMV_ROWS_MAX ? GEMV_ROWS_MAX : rows;
}

/* Linears that read the same input (q, k, v; gate, up) with a few tokens: each prepared in turn (its x transformed
 * into buffers of its own), then one task list over all their rows, so the threads meet once instead of once per
 * linear. */
typedef struct group_job {
    lin_job jobs[MOPT_MAX_LINEAR_GROUP];
    mopt_task_fn fn[MOPT_MAX_LINEAR_GROUP];
    int64_t first[MOPT_MAX_LINEAR_GROUP + 1]; /* each linear's first task */
    int32_t n;
} group_job;

/* Runs a decode job's tasks, or while a group is being prepared, adds them to it. */
static void run_gemv(cpu_ctx *c, lin_job *j, mopt_task_fn fn) {
    j->gemv_rows = gemv_rows_for(c, j->out);
    if (c->collect) {
        c->collect->jobs[c->collect->n] = *j;
        c->collect->fn[c->collect->n++] = fn;
        return;
    }
    mopt_pool_run(c->pool, (j->out + j->gemv_rows - 1) / j->gemv_rows, fn, j);
}

static bool float_weights(const mopt_tensor *w) {
    return w->dtype == MOPT_DTYPE_F32 || w->dtype == MOPT_DTYPE_F16 || w->dtype == MOPT_DTYPE_BF16;
}

/* Every token's x as int8 per `bs` values (scale max|x| / 127 per block): xq [T, in], xd [T, in / bs]. */
static void quantize_blocks_i8(const lin_job *j, int64_t bs, int8_t *xq, float *xd) {
    for (int32_t t = 0; t < j->T; t++)
        j->c->k->quantize_i8_blocks(j->x + (size_t)t * j->x_stride, j->in, bs, xq + (size_t)t * j->in, xd + (size_t)t * (j->in / bs));
}

/* k-quant decode: x as int8 per 256 values (llama.cpp's Q8_K, which lets a super-block's dot stay in
 * integers), with the sums of every 16 levels for the mins and the offset of 32 */
static mopt_status kquant_decode(cpu_ctx *c, lin_job *j, mopt_error *err) {
    const size_t n = (size_t)j->T * (size_t)j->in;
    int8_t *xq = xscratch(c, 0, n + n / 16 * sizeof(int16_t) + (c->k->kquant_x_order ? n : 0));
    float *xd = xscratch(c, 1, n / MOPT_KQ_BLOCK * sizeof(float));
    if (!xq || !xd) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    int16_t *s16 = (int16_t *)(void *)(xq + n); /* n is a multiple of 256: aligned */
    int8_t *ordered = xq + n + n / 16 * sizeof(int16_t);
    quantize_blocks_i8(j, MOPT_KQ_BLOCK, xq, xd);
    for (size_t i = 0; i < n / 16; i++) {
        int16_t s = 0;
        for (int l = 0; l < 16; l++) s = (int16_t)(s + xq[16 * i + (size_t)l]);
        s16[i] = s;
    }
    if (c->k->kquant_x_order) c->k->kquant_x_order(j->w->quant->bits, xq, (int64_t)n, ordered);
    j->xq8 = c->k->kquant_x_order ? ordered : xq, j->xd = xd, j->xs16 = s16;
    run_gemv(c, j, gemv_task);
    return MOPT_OK;
}

/* 4- and 8-bit QINT decode: each token's x quantized to int8 per 32 values (scale
 * max|x| / 127 per block), every block's dot with the levels done in int32, and
 * the groups' zero-points folded with the sums of the quantized x. */
static mopt_status qint_decode(cpu_ctx *c, lin_job *j, int64_t ng, int64_t gs, mopt_error *err) {
    const int64_t in = j->in, nb = in / 32, bpg = gs / 32;
    int8_t *xq = xscratch(c, 0, (size_t)j->T * (size_t)in);
    float *xd = xscratch(c, 1, (size_t)j->T * (size_t)(nb + ng) * sizeof(float));
    if (!xq || !xd) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    float *sums = xd + (size_t)j->T * nb;
    quantize_blocks_i8(j, 32, xq, xd);
    for (int32_t t = 0; t < j->T; t++) {
        const int8_t *q = xq + (size_t)t * in;
        for (int64_t g = 0; g < ng; g++) {
            float s = 0;
            for (int64_t b = g * bpg; b < (g + 1) * bpg; b++) {
                int32_t qs = 0;
                for (int i = 0; i < 32; i++) qs += q[32 * b + i];
                s += xd[t * nb + b] * (float)qs;
            }
            sums[(size_t)t * ng + g] = s;
        }
    }
    j->xq8 = xq, j->xd = xd, j->xsum = sums;
    run_gemv(c, j, gemv_task);
    return MOPT_OK;
}

/* The integer GEMM's x, one tile of 8 tokens per task: each token's values as int8 with a scale per block of bs (32:
 * QINT, as the decode kernels, and Q4_K / Q5_K; 16: the k-quants with sub-blocks of 16) or one per token (W8A8), laid
 * out for the token lanes: for every 4 inputs 4 bytes per token. Beside them each block's scale, each group's sum of x
 * (scale times levels), and for unsigned levels each block's int32 start, -o times its sum of levels, so the kernel
 * sums (level - o) x in integers. The last tile's padding tokens are zeros. */
typedef struct {
    const lin_job *j;
    int8_t *xi;
    float *xdt, *xst;
    int32_t *xzt;
    int32_t off; /* the levels' offset (u8_level_offset): xzt = -off x each block's sum */
    int64_t ng, bs;
    int8_t *tok; /* W8A8 (one scale a token): room for a token's levels for each tile; NULL for a scale per block */
} xtile_job;

static void int_gemm_x_task(void *p, int64_t tile, int32_t thread) {
    (void)thread;
    const xtile_job *q = p;
    const lin_job *j = q->j;
    const int64_t in = j->in, bs = q->bs, nb = in / bs, ng = q->ng, bpg = nb / ng;
    int8_t *xt = q->xi + tile * 8 * in;
    float *xd = q->xdt + tile * 8 * nb, *xs = q->xst + tile * 8 * ng;
    int32_t *xz = q->xzt ? q->xzt + tile * 8 * nb : NULL;
    const int32_t t0 = (int32_t)(tile * 8), nt = j->T - t0 < 8 ? j->T - t0 : 8;
    if (nt < 8) memset(xt, 0, (size_t)(8 * in));
    memset(xd, 0, (size_t)(8 * nb) * sizeof(float));
    memset(xs, 0, (size_t)(8 * ng) * sizeof(float));
    if (xz) memset(xz, 0, (size_t)(8 * nb) * sizeof(int32_t));
    for (int32_t l = 0; l < nt; l++) {
        const float *x = j->x + (size_t)(t0 + l) * j->x_stride;
        int8_t *tok = q->tok ? q->tok + tile * in : NULL;
        float dt = 0;
        if (tok) j->c->k->quantize_i8_blocks(x, in, in, tok, &dt); /* one block a token: quantize_token_i8's bits */
        for (int64_t b = 0; b < nb; b++) {
            int8_t buf[32];
            const int8_t *qb = tok ? tok + bs * b : buf;
            float d = dt;
            if (!tok) j->c->k->quantize_i8_blocks(x + bs * b, bs, bs, buf, &d);
            int32_t qs = 0;
            for (int i = 0; i < bs; i++) qs += qb[i];
            for (int cidx = 0; cidx < bs / 4; cidx++) memcpy(xt + ((b * (bs / 4) + cidx) * 8 + l) * 4, qb + 4 * cidx, 4);
            xd[b * 8 + l] = d;
            xs[b / bpg * 8 + l] += d * (float)qs;
            if (xz) xz[b * 8 + l] = -q->off * qs;
        }
    }
}

/* x for the integer GEMM in tiles (int_gemm_x_task) in blocks of bs values, then the GEMM over all rows. */
static mopt_status int_gemm(cpu_ctx *c, lin_job *j, int64_t ng, int64_t bs, mopt_error *err) {
    const int64_t in = j->in, nb = in / bs, tiles = (j->T + 7) / 8;
    const int32_t off = u8_level_offset(c->k, j->w);
    const int per_token = j->w->dtype == MOPT_DTYPE_W8A8; /* one scale a token */
    const size_t zbytes = off ? (size_t)(tiles * 8 * nb) * sizeof(int32_t) : 0;
    int8_t *xi = xscratch(c, 0, (size_t)(tiles * 8 * in) + zbytes + (per_token ? (size_t)(tiles * in) : 0));
    float *xdt = xscratch(c, 1, (size_t)(tiles * 8 * (nb + ng)) * sizeof(float));
    if (!xi || !xdt) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    xtile_job q = {.j = j, .xi = xi, .xdt = xdt, .xst = xdt + tiles * 8 * nb, .ng = ng, .bs = bs,
                   .off = off, .xzt = off ? (int32_t *)(void *)(xi + tiles * 8 * in) : NULL, /* in is a multiple of 32: aligned */
                   .tok = per_token ? xi + tiles * 8 * in + zbytes : NULL};
    mopt_pool_run(c->pool, tiles, int_gemm_x_task, &q);
    j->xq8 = xi, j->xd = xdt, j->xsum = q.xst, j->xzt = q.xzt, j->ng = ng, j->bs = bs;
    mopt_pool_run(c->pool, (j->out + GEMM_ROWS - 1) / GEMM_ROWS, int_gemm_task, j);
    return MOPT_OK;
}

static mopt_status linear(cpu_ctx *c, const mopt_tensor *w, const mopt_tensor *b, const float *x, int32_t T,
                          int32_t xs, float *y, int32_t ys, mopt_error *err) {
    lin_job j = {.c = c, .w = w, .b = b, .x = x, .T = T, .x_stride = xs, .y = y, .y_stride = ys, .in = w->ne[0], .out = w->ne[1]};
    const int64_t in = j.in;
    const int sp24_i8 = w->dtype == MOPT_DTYPE_SP24 && (w->quant->flags & MOPT_QUANT_VALUES_I8);
    if (w->dtype == MOPT_DTYPE_W8A8 && T > GEMV_MAX_TOKENS && in % 32 == 0) return int_gemm(c, &j, 1, 32, err);
    if (w->dtype == MOPT_DTYPE_W8A8 || sp24_i8) {
        /* per-token dynamic int8 activations: x = qx * max|x| / 127; the 2:4
         * kernel takes the levels as floats, which it multiplies exactly */
        const size_t nx = (size_t)T * (size_t)in, fbytes = sp24_i8 ? nx * sizeof(float) : 0;
        int8_t *xq = xscratch(c, 0, fbytes + nx); /* 2:4: the levels as floats, then as int8 */
        float *sx = xscratch(c, 1, (size_t)T * sizeof(float));
        if (!xq || !sx) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
        float *xf = (float *)(void *)xq;
        int8_t *q8 = xq + fbytes;
        for (int32_t t = 0; t < T; t++) {
            int8_t *qt = q8 + (size_t)t * in;
            if (in % 16 == 0) { /* the kernel set's, one block a token: the same bits */
                c->k->quantize_i8_blocks(x + (size_t)t * xs, in, in, qt, &sx[t]);
                if (sp24_i8)
                    for (int64_t i = 0; i < in; i++) xf[(size_t)t * in + i] = qt[i];
            } else
                sx[t] = quantize_token_i8(x + (size_t)t * xs, in, sp24_i8 ? NULL : qt, sp24_i8 ? xf + (size_t)t * in : NULL);
        }
        j.xscale = sx;
        if (sp24_i8) j.x = xf, j.x_stride = (int32_t)in;
        else j.xq = xq;
        if (sp24_i8 && T > GEMV_MAX_TOKENS) /* prefill: rows widened to their levels, OpenBLAS, then s and sx */
            mopt_pool_run(c->pool, (j.out + SGEMM_ROWS - 1) / SGEMM_ROWS, gemm_task, &j);
        else
            run_gemv(c, &j, sp24_i8 ? sp24_i8_task : w8a8_task);
        return MOPT_OK;
    }
    const int fp8_act = (w->dtype == MOPT_DTYPE_FP8 || w->dtype == MOPT_DTYPE_QINT) &&
                        (w->quant->flags & (MOPT_QUANT_ACT_PER_TOKEN | MOPT_QUANT_ACT_STATIC));
    if (fp8_act) {
        /* activations rounded to the E4M3 grid, per token or with the calibrated scale (FP8, and W4A8's int4 rows, which
         * then take the float path below rather than int8 activations) */
        float *xr = xscratch(c, 0, (size_t)T * (size_t)in * sizeof(float));
        if (!xr) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
        for (int32_t t = 0; t < T; t++) {
            const float *xt = x + (size_t)t * xs;
            float s = w->quant->act_scale;
            if (w->quant->flags & MOPT_QUANT_ACT_PER_TOKEN) {
                float mx = 0;
                for (int64_t i = 0; i < in; i++) mx = fmaxf(mx, fabsf(xt[i]));
                s = mx > 0 ? mx / 448.0f : 1.0f;
            }
            c->k->round_e4m3(xt, in, s, xr + (size_t)t * in);
        }
        j.x = xr;
        j.x_stride = (int32_t)in;
    }
    if (w->dtype == MOPT_DTYPE_MXFP && (w->quant->flags & (MOPT_QUANT_ACT_PER_TOKEN | MOPT_QUANT_ACT_STATIC))) {
        /* activations rounded onto the weights' format block by block; NVFP4's global scale calibrated (act_scale), or
         * per token (0) */
        const mopt_mxfp_kind kind = mopt_mxfp_kind_of(w);
        float *xr = xscratch(c, 0, (size_t)T * (size_t)in * sizeof(float));
        if (!xr) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
        for (int32_t t = 0; t < T; t++) {
            memcpy(xr + (size_t)t * in, x + (size_t)t * xs, (size_t)in * sizeof(float));
            mopt_mxfp_round(kind, xr + (size_t)t * in, in, w->quant->act_scale);
        }
        j.x = xr;
        j.x_stride = (int32_t)in;
    }
    const int qint_fp8 = w->dtype == MOPT_DTYPE_QINT && (w->quant->flags & MOPT_QUANT_W_FP8); /* widened rows, below */
    if (w->dtype == MOPT_DTYPE_QINT && !fp8_act && !qint_fp8 && !w->quant->g_idx && (w->quant->bits == 4 || w->quant->bits == 8) && in % 32 == 0 &&
        in % (w->quant->group_size > 0 ? w->quant->group_size : in) == 0) {
        /* whole groups of whole blocks: x as int8 per block, as llama.cpp's Q8_0 */
        const int64_t ng = w->quant->scale->ne[0];
        return T <= GEMV_MAX_TOKENS ? qint_decode(c, &j, ng, in / ng, err) : int_gemm(c, &j, ng, 32, err);
    }
    if (w->dtype == MOPT_DTYPE_KQUANT && T <= GEMV_MAX_TOKENS) return kquant_decode(c, &j, err);
    if (w->dtype == MOPT_DTYPE_KQUANT) { /* prefill: the integer GEMM where the set's sums hold the levels */
        const int32_t bits = w->quant->bits;
        if (bits == 4 || (bits == 5 && c->k->u8_levels)) return int_gemm(c, &j, in / 32, 32, err); /* sub-blocks of 32 */
        if (bits != 5 && c->k->gemm_q4_q8_b16) return int_gemm(c, &j, in / 16, 16, err);           /* of 16 */
    }
    if (w->dtype == MOPT_DTYPE_QINT && T <= GEMV_MAX_TOKENS && !w->quant->g_idx && !qint_fp8) {
        const int64_t ng = w->quant->scale->ne[0], gs = w->quant->group_size > 0 ? w->quant->group_size : in;
        float *sums = xscratch(c, 1, (size_t)T * (size_t)ng * sizeof(float));
        if (!sums) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
        for (int32_t t = 0; t < T; t++)
            for (int64_t g = 0; g < ng; g++) {
                float s = 0;
                for (int64_t i = g * gs; i < (g + 1) * gs && i < in; i++) s += j.x[(size_t)t * j.x_stride + i];
                sums[(size_t)t * ng + g] = s;
            }
        j.xsum = sums;
    }
    /* A few tokens (decode, speculative verification; for float weights also
     * short prompts and the steps where a server batches one with decodes):
     * read the stored weights directly per token. More: widen a block of rows
     * once and let OpenBLAS reuse it across tokens. */
    if (T <= GEMV_MAX_TOKENS || (float_weights(w) && T <= DENSE_ROWS_MAX_TOKENS))
        run_gemv(c, &j, gemv_task);
    else
        mopt_pool_run(c->pool, (j.out + SGEMM_ROWS - 1) / SGEMM_ROWS, gemm_task, &j);
    return MOPT_OK;
}

static void group_task(void *p, int64_t task, int32_t thread) {
    group_job *g = p;
    int32_t k = 0;
    while (task >= g->first[k + 1]) k++;
    g->fn[k](&g->jobs[k], task - g->first[k], thread);
}

/* A group's linears: those that take the decode kernels run as one task list, the rest (prefill) each at once. */
static mopt_status linear_group(cpu_ctx *c, const mopt_op_args *a, mopt_error *err) {
    group_job g = {.n = 0};
    mopt_status st = MOPT_OK;
    c->collect = a->n_group <= MOPT_MAX_LINEAR_GROUP ? &g : NULL;
    for (int32_t k = 0; !st && k < a->n_group; k++) {
        const mopt_op_args *b = &a->group[k];
        c->xslot = c->collect ? k : 0;
        st = linear(c, b->node->weight, b->node->bias, b->in[0], b->T, b->in_width[0], b->out, b->out_width, err);
    }
    c->collect = NULL;
    c->xslot = 0;
    if (st || g.n == 0) return st;
    int64_t total = 0;
    for (int32_t k = 0; k < g.n; k++) total += g.jobs[k].out;
    const int64_t rows = gemv_rows_for(c, total); /* as for one matrix of all the rows */
    for (int32_t k = 0; k < g.n; k++) {
        g.jobs[k].gemv_rows = rows;
        g.first[k + 1] = g.first[k] + (g.jobs[k].out + rows - 1) / rows;
    }
    mopt_pool_run(c->pool, g.first[g.n], group_task, &g);
    return MOPT_OK;
}

/* --- elementwise and norms -------------------------------------------------- */

static void read_row(const cpu_ctx *c, const mopt_tensor *t, int64_t row, float *out) {
    int64_t n = t->ne[0];
    if (t->dtype >= MOPT_DTYPE_PACKED_FIRST) { /* a quantized embedding table (quant.rtn embeddings=true): one row dequantized */
        if (mopt_weight_row_f32(t, row, out, NULL)) memset(out, 0, (size_t)n * sizeof *out);
        return;
    }
    switch (t->dtype) {
    case MOPT_DTYPE_F32: memcpy(out, (const float *)t->data + row * n, (size_t)n * sizeof(float)); break;
    case MOPT_DTYPE_F16: c->k->cvt_f16((const uint16_t *)t->data + row * n, out, n); break;
    default: c->k->cvt_bf16((const uint16_t *)t->data + row * n, out, n); break;
    }
}

typedef struct {
    cpu_ctx *c;
    const mopt_op_args *a;
} op_job;

/* SwiGLU or GELU over values [task, task + 1) * ACT_CHUNK of the [T, W]
 * output, row by row */
static void activation_task(void *p, int64_t task, int32_t thread) {
    (void)thread;
    op_job *j = p;
    const mopt_op_args *a = j->a;
    const int64_t W = a->out_width, end = (task + 1) * ACT_CHUNK < a->T * W ? (task + 1) * ACT_CHUNK : a->T * W;
    for (int64_t e = task * ACT_CHUNK; e < end;) {
        const int64_t t = e / W, i0 = e % W, i1 = W - i0 < end - e ? W : i0 + (end - e);
        const float *x = a->in[0] + (size_t)t * a->in_width[0];
        float *y = a->out + (size_t)t * W;
        if (a->node->op == MOPT_OP_SWIGLU) j->c->k->silu_mul(x + i0, a->in[1] + (size_t)t * a->in_width[1] + i0, y + i0, i1 - i0);
        else
            for (int64_t i = i0; i < i1; i++) {
                const float v = x[i];
                y[i] = 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
            }
        e += i1 - i0;
    }
}

/* sum of (x[i] - c)^2 (squares) or of x[i] - c in double, eight running sums
 * so that the adds do not wait on each other (and vectorize) */
static double sum_double(const float *x, int32_t n, double c, bool squares) {
    double acc[8] = {0};
    int32_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) {
            const double d = (double)x[i + k] - c;
            acc[k] += squares ? d * d : d;
        }
    double s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; i < n; i++) s += squares ? ((double)x[i] - c) * ((double)x[i] - c) : (double)x[i] - c;
    return s;
}

static int64_t norm_rows_per_task(int64_t D) { return D < NORM_CHUNK ? NORM_CHUNK / D : 1; }

/* Rows [task, task + 1) * norm_rows_per_task of a norm */
static void norm_task(void *p, int64_t task, int32_t thread) {
    (void)thread;
    op_job *j = p;
    const mopt_op_args *a = j->a;
    const mopt_node *n = a->node;
    const int32_t D = a->out_width;
    const int64_t per = norm_rows_per_task(D);
    for (int64_t t = task * per; t < (task + 1) * per && t < a->T; t++) {
        const float *x = a->in[0] + (size_t)t * a->in_width[0];
        float *y = a->out + (size_t)t * D;
        read_row(j->c, n->weight, 0, y);
        if (n->op == MOPT_OP_RMSNORM) {
            const float r = (float)(1.0 / sqrt(sum_double(x, D, 0, true) / D + n->eps));
            for (int32_t i = 0; i < D; i++) y[i] *= x[i] * r;
        } else {
            const double mean = sum_double(x, D, 0, false) / D, var = sum_double(x, D, mean, true) / D;
            const float r = (float)(1.0 / sqrt(var + n->eps)), m = (float)mean;
            for (int32_t i = 0; i < D; i++) y[i] *= (x[i] - m) * r;
            for (int32_t i = 0; i < D; i++) y[i] += bias_at(n->bias, i);
        }
    }
}

/* RoPE's angle for position pos and pair i: float math as in run.c and transformers' inv_freq */
static void rope_angle(float theta, int32_t hd, int32_t pos, int32_t i, float *cs, float *sn) {
    const float inv = 1.0f / powf(theta, (float)(2 * i) / (float)hd), ang = (float)pos * inv;
    *cs = cosf(ang);
    *sn = sinf(ang);
}

/* Extends the table to positions [0, n) for node n's theta and head size;
 * false when it is for another (theta, head_dim) or memory runs out, and
 * the caller computes the angles itself. */
static bool rope_table(cpu_ctx *c, const mopt_node *nd, int32_t n) {
    const int32_t half = nd->head_dim / 2;
    if (c->rope_n && (c->rope_hd != nd->head_dim || c->rope_theta != nd->rope_theta)) return false;
    if (n <= c->rope_n) return true;
    if (n > c->rope_cap) {
        int32_t cap = c->rope_cap ? c->rope_cap : 64;
        while (cap < n) cap = cap > INT32_MAX / 2 ? n : 2 * cap;
        float *cs = realloc(c->rope_cs, (size_t)cap * (size_t)half * sizeof *cs);
        if (cs) c->rope_cs = cs;
        float *sn = cs ? realloc(c->rope_sn, (size_t)cap * (size_t)half * sizeof *sn) : NULL;
        if (!sn) return false;
        c->rope_sn = sn;
        c->rope_cap = cap;
    }
    for (int32_t p = c->rope_n; p < n; p++)
        for (int32_t i = 0; i < half; i++)
            rope_angle(nd->rope_theta, nd->head_dim, p, i, &c->rope_cs[(size_t)p * half + i], &c->rope_sn[(size_t)p * half + i]);
    c->rope_n = n, c->rope_hd = nd->head_dim, c->rope_theta = nd->rope_theta;
    return true;
}

static void rope(cpu_ctx *c, const mopt_op_args *a) {
    const mopt_node *n = a->node;
    const int32_t hd = n->head_dim, half = hd / 2, W = a->out_width;
    const bool table = rope_table(c, n, a->pos + a->T);
    for (int32_t t = 0; t < a->T; t++) {
        const int32_t pos = a->pos + t;
        const float *x = a->in[0] + (size_t)t * a->in_width[0];
        float *y = a->out + (size_t)t * W;
        if (table && n->rope_style == MOPT_ROPE_HALF) { /* a head at a time, so the compiler can use vectors */
            const float *cs = c->rope_cs + (size_t)pos * half, *sn = c->rope_sn + (size_t)pos * half;
            for (int32_t h = 0; h < n->n_heads; h++) {
                const float *xh = x + h * hd;
                float *yh = y + h * hd;
                for (int32_t i = 0; i < half; i++) {
                    const float x0 = xh[i], x1 = xh[i + half];
                    yh[i] = x0 * cs[i] - x1 * sn[i];
                    yh[i + half] = x1 * cs[i] + x0 * sn[i];
                }
            }
            continue;
        }
        for (int32_t i = 0; i < half; i++) {
            float cs, sn;
            if (table) cs = c->rope_cs[(size_t)pos * half + i], sn = c->rope_sn[(size_t)pos * half + i];
            else rope_angle(n->rope_theta, hd, pos, i, &cs, &sn);
            for (int32_t h = 0; h < n->n_heads; h++) {
                const float *xh = x + h * hd;
                float *yh = y + h * hd;
                int32_t i0 = n->rope_style == MOPT_ROPE_HALF ? i : 2 * i;
                int32_t i1 = n->rope_style == MOPT_ROPE_HALF ? i + half : 2 * i + 1;
                float x0 = xh[i0], x1 = xh[i1];
                yh[i0] = x0 * cs - x1 * sn;
                yh[i1] = x1 * cs + x0 * sn;
            }
        }
    }
}

/* K (v = 0) or V (v = 1) of KV head kvh at positions [0, n) as fp32 rows,
 * their stride in *ld: the cache itself when it holds floats; else its
 * values widened into buf [n, head_dim] (halves, or q * scale, exactly). */
static const float *kv_rows(const cpu_ctx *c, const mopt_op_args *a, int v, int32_t kvh, int32_t n, float *buf, int32_t *ld) {
    const int32_t hd = a->node->head_dim, kvd = a->node->n_kv_heads * hd;
    const void *cache = v ? a->v_cache : a->k_cache;
    if (a->kv.format == MOPT_KV_FLOAT) {
        *ld = kvd;
        return (const float *)cache + kvh * hd;
    }
    *ld = hd;
    if (a->kv.format == MOPT_KV_F16) {
        const uint16_t *h = (const uint16_t *)cache + kvh * hd;
        for (int32_t p = 0; p < n; p++, h += kvd) c->k->cvt_f16(h, buf + (size_t)p * hd, hd);
        return buf;
    }
    const float s = (v ? a->kv.v_scale : a->kv.k_scale)[a->kv.n_scales > 1 ? kvh : 0];
    const uint8_t *q = (const uint8_t *)cache + kvh * hd;
    for (int32_t p = 0; p < n; p++, q += kvd) {
        float *o = buf + (size_t)p * hd;
        if (a->kv.format == MOPT_KV_FP8) c->k->dequant_e4m3(q, hd, s, o);
        else
            for (int32_t i = 0; i < hd; i++) o[i] = (float)(int8_t)q[i] * s;
    }
    return buf;
}

/* Writes token t's K (v = 0) or V row at position pos + t, rounded onto the
 * cache's format: a half to nearest even, or the quotient x / scale formed in
 * double and rounded once. */
static void kv_store(const mopt_op_args *a, int v, int32_t t) {
    const int32_t hd = a->node->head_dim, kvd = a->node->n_kv_heads * hd;
    const float *x = a->in[1 + v] + (size_t)t * a->in_width[1 + v];
    const size_t at = (size_t)(a->pos + t) * kvd;
    if (a->kv.format == MOPT_KV_FLOAT) {
        memcpy((float *)(v ? a->v_cache : a->k_cache) + at, x, (size_t)kvd * sizeof(float));
        return;
    }
    if (a->kv.format == MOPT_KV_F16) {
        uint16_t *h = (uint16_t *)(v ? a->v_cache : a->k_cache) + at;
        for (int32_t i = 0; i < kvd; i++) h[i] = mopt_f32_to_f16(x[i]);
        return;
    }
    uint8_t *q = (uint8_t *)(v ? a->v_cache : a->k_cache) + at;
    const float *scale = v ? a->kv.v_scale : a->kv.k_scale;
    for (int32_t i = 0; i < kvd; i++) {
        const double r = (double)x[i] / scale[a->kv.n_scales > 1 ? i / hd : 0];
        if (a->kv.format == MOPT_KV_FP8) {
            q[i] = mopt_e4m3_from_double(r);
        } else {
            const double c = isnan(r) ? 0.0 : r > 127.0 ? 127.0 : r < -127.0 ? -127.0 : nearbyint(r);
            q[i] = (uint8_t)(int8_t)c;
        }
    }
}

/* Every token's K and V into the cache. */
static void kv_store_all(const mopt_op_args *a) {
    for (int32_t t = 0; t < a->T; t++) {
        kv_store(a, 0, t);
        kv_store(a, 1, t);
    }
}

/* Decode: per (token, KV head), the query heads sharing that KV head against
 * the cache, scores = Q K^T and out = P V, in the kernel set's own loops (four
 * positions' dot products summed across lanes at once): at a few hundred
 * positions a call into OpenBLAS's small-matrix GEMM cost more than the
 * arithmetic. */
static void attention_task(void *p, int64_t task, int32_t thread) {
    op_job *j = p;
    const mopt_op_args *a = j->a;
    const mopt_node *n = a->node;
    const int32_t hd = n->head_dim, KV = n->n_kv_heads, group = n->n_heads / KV;
    const int32_t t = (int32_t)(task / KV), kvh = (int32_t)(task % KV);
    const int32_t ctx = a->pos + t + 1; /* attends to positions 0..pos + t */
    const float *q = a->in[0] + (size_t)t * a->in_width[0] + (size_t)kvh * group * hd;
    float *out = a->out + (size_t)t * a->out_width + (size_t)kvh * group * hd;
    float *S = j->c->ascratch[thread]; /* [group, ctx] */
    const mopt_kernels *k = j->c->k;
    const float scale = 1.0f / sqrtf((float)hd);
    if (a->kv.format == MOPT_KV_F16) { /* the kernels read the halves in place */
        const int64_t kvd = (int64_t)KV * hd;
        k->att_scores_f16(q, group, (const uint16_t *)a->k_cache + kvh * hd, kvd, ctx, hd, scale, S);
        for (int32_t r = 0; r < group; r++) k->softmax(S + (size_t)r * ctx, ctx);
        k->att_values_f16(S, group, (const uint16_t *)a->v_cache + kvh * hd, kvd, ctx, hd, out);
        return;
    }
    float *buf = j->c->kvscratch ? j->c->kvscratch[thread] : NULL;
    int32_t ld;
    const float *K = kv_rows(j->c, a, 0, kvh, ctx, buf, &ld);
    k->att_scores(q, group, K, ld, ctx, hd, scale, S);
    for (int32_t r = 0; r < group; r++) k->softmax(S + (size_t)r * ctx, ctx);
    const float *V = kv_rows(j->c, a, 1, kvh, ctx, buf, &ld);
    k->att_values(S, group, V, ld, ctx, hd, out);
}

/* Prefill: per (KV head, block of query rows), for each query head sharing
 * that KV head, scores = Q K^T and out = P V as GEMMs, with the causal mask
 * and softmax in between; a quantized cache's K and V rows are widened once
 * for the group. */
static void attention_block_task(void *p, int64_t task, int32_t thread) {
    op_job *j = p;
    const mopt_op_args *a = j->a;
    const mopt_node *n = a->node;
    const int32_t hd = n->head_dim, group = n->n_heads / n->n_kv_heads;
    const int32_t nblk = (a->T + ATT_ROWS - 1) / ATT_ROWS;
    const int32_t kvh = (int32_t)(task / nblk), t0 = (int32_t)(task % nblk) * ATT_ROWS;
    const int32_t rows = a->T - t0 < ATT_ROWS ? a->T - t0 : ATT_ROWS;
    const int32_t ctx = a->pos + t0 + rows; /* keys the last row can see */
    float *S = j->c->ascratch[thread];    /* [rows, ctx] */
    float *buf = j->c->kvscratch ? j->c->kvscratch[thread] : NULL;
    const float scale = 1.0f / sqrtf((float)hd);
    int32_t ldk, ldv;
    const float *K = kv_rows(j->c, a, 0, kvh, ctx, buf, &ldk);
    const float *V = kv_rows(j->c, a, 1, kvh, ctx, buf ? buf + (size_t)j->c->max_ctx * hd : NULL, &ldv);
    for (int32_t h = kvh * group; h < (kvh + 1) * group; h++) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, ctx, hd, scale, a->in[0] + (size_t)t0 * a->in_width[0] + h * hd,
                    a->in_width[0], K, ldk, 0.0f, S, ctx);
        for (int32_t r = 0; r < rows; r++) {
            float *row = S + (size_t)r * ctx;
            const int32_t visible = a->pos + t0 + r + 1;
            j->c->k->softmax(row, visible);
            for (int32_t s2 = visible; s2 < ctx; s2++) row[s2] = 0.0f;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, hd, ctx, 1.0f, S, ctx, V, ldv, 0.0f,
                    a->out + (size_t)t0 * a->out_width + h * hd, a->out_width);
    }
}

/* Several sequences' decode attention as one task list: task ids run through
 * each sequence's (token, KV head) tasks in turn. */
typedef struct seqs_job {
    cpu_ctx *c;
    const mopt_op_args *seqs;
    const int64_t *first; /* [n + 1]: each sequence's first task */
    int32_t n;
    int32_t heads_per_task; /* 1, or all KV heads of a token */
} seqs_job;

static void attention_seqs_task(void *p, int64_t task, int32_t thread) {
    const seqs_job *j = p;
    int32_t lo = 0, hi = j->n - 1;
    while (lo < hi) { /* the last sequence whose first task is <= task */
        const int32_t mid = (lo + hi + 1) / 2;
        if (j->first[mid] <= task) lo = mid;
        else hi = mid - 1;
    }
    op_job one = {j->c, &j->seqs[lo]};
    for (int32_t h = 0; h < j->heads_per_task; h++) attention_task(&one, (task - j->first[lo]) * j->heads_per_task + h, thread);
}

static mopt_status attention(cpu_ctx *c, const mopt_op_args *a, mopt_error *err);

/* Prefill-sized sequences take the blocked path one by one; the decoding
 * ones share a single task list. */
static mopt_status attention_seqs(cpu_ctx *c, const mopt_op_args *a, mopt_error *err) {
    int64_t *first = xscratch(c, 1, ((size_t)a->n_seqs + 1) * sizeof *first);
    mopt_op_args *dec = xscratch(c, 0, (size_t)a->n_seqs * sizeof *dec);
    if (!first || !dec) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    /* a token's heads in one task when there are tokens enough to go round: each task then reads its
     * positions' K and V rows whole, which measured 18% faster than a task per head with 8 sequences */
    int32_t nd = 0, n_dec = 0;
    for (int32_t k = 0; k < a->n_seqs; k++) n_dec += a->seqs[k].T < 8 ? a->seqs[k].T : 0;
    const int32_t per = n_dec >= 2 * c->n_threads ? a->node->n_kv_heads : 1;
    first[0] = 0;
    for (int32_t k = 0; k < a->n_seqs; k++) {
        const mopt_op_args *b = &a->seqs[k];
        if (b->T >= 8) {
            mopt_status st = attention(c, b, err);
            if (st) return st;
            continue;
        }
        kv_store_all(b);
        dec[nd] = *b;
        first[nd + 1] = first[nd] + (int64_t)b->T * b->node->n_kv_heads / per;
        nd++;
    }
    seqs_job j = {c, dec, first, nd, per};
    if (nd) mopt_pool_run(c->pool, first[nd], attention_seqs_task, &j);
    return MOPT_OK;
}

static mopt_status attention(cpu_ctx *c, const mopt_op_args *a, mopt_error *err) {
    const mopt_node *n = a->node;
    if (a->T >= 8 && a->kv.format != MOPT_KV_FLOAT && !kv_scratch_ready(c)) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    kv_store_all(a);
    op_job j = {c, a};
    if (a->T >= 8)
        mopt_pool_run(c->pool, (int64_t)n->n_kv_heads * ((a->T + ATT_ROWS - 1) / ATT_ROWS), attention_block_task, &j);
    else
        mopt_pool_run(c->pool, (int64_t)a->T * n->n_kv_heads, attention_task, &j);
    return MOPT_OK;
}

static mopt_status cpu_forward(void *ctx, const mopt_op_args *a, mopt_error *err) {
    cpu_ctx *c = ctx;
    const mopt_node *n = a->node;
    const int32_t T = a->T, W = a->out_width;
    switch (n->op) {
    case MOPT_OP_EMBEDDING:
        for (int32_t t = 0; t < T; t++) read_row(c, n->weight, a->tokens[t], a->out + (size_t)t * W);
        return MOPT_OK;
    case MOPT_OP_POS_EMBEDDING:
        for (int32_t t = 0; t < T; t++) {
            float *y = a->out + (size_t)t * W;
            const float *x = a->in[0] + (size_t)t * a->in_width[0];
            read_row(c, n->weight, a->pos + t, y);
            for (int32_t i = 0; i < W; i++) y[i] += x[i];
        }
        return MOPT_OK;
    case MOPT_OP_RMSNORM:
    case MOPT_OP_LAYERNORM: {
        op_job j = {c, a};
        const int64_t per = norm_rows_per_task(W);
        mopt_pool_run(c->pool, (T + per - 1) / per, norm_task, &j);
        return MOPT_OK;
    }
    case MOPT_OP_LINEAR:
        if (a->n_group > 0) return linear_group(c, a, err);
        return linear(c, n->weight, n->bias, a->in[0], T, a->in_width[0], a->out, W, err);
    case MOPT_OP_LM_HEAD:
        return linear(c, n->weight, n->bias, a->in[0] + (size_t)a->row0 * a->in_width[0], a->rows, a->in_width[0],
                      a->out, W, err);
    case MOPT_OP_ROPE: rope(c, a); return MOPT_OK;
    case MOPT_OP_ATTENTION:
        if (a->n_seqs > 0) return attention_seqs(c, a, err);
        return attention(c, a, err);
    case MOPT_OP_SWIGLU:
    case MOPT_OP_GELU: {
        op_job j = {c, a};
        mopt_pool_run(c->pool, ((int64_t)T * W + ACT_CHUNK - 1) / ACT_CHUNK, activation_task, &j);
        return MOPT_OK;
    }
    case MOPT_OP_ADD:
        for (int32_t t = 0; t < T; t++) {
            const float *x = a->in[0] + (size_t)t * a->in_width[0], *z = a->in[1] + (size_t)t * a->in_width[1];
            float *y = a->out + (size_t)t * W;
            for (int32_t i = 0; i < W; i++) y[i] = x[i] + z[i];
        }
        return MOPT_OK;
    default: return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "cpu backend: op %s not implemented", mopt_op_name(n->op));
    }
}

mopt_status mopt_cpu_linear_once(int32_t n_threads, const mopt_kernels *k, const mopt_tensor *w, const mopt_tensor *b,
                                 const float *x, int32_t T, float *y, mopt_error *err) {
    cpu_ctx *c = calloc(1, sizeof *c);
    if (!c) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    c->pool = mopt_pool_new(n_threads);
    c->n_threads = c->pool ? mopt_pool_size(c->pool) : 0;
    c->k = k ? k : mopt_kernels_get();
    c->max_in = w->ne[0];
    c->wscratch = calloc((size_t)(c->n_threads ? c->n_threads : 1), sizeof *c->wscratch);
    mopt_status st = c->pool && c->wscratch ? MOPT_OK : MOPT_E_NOMEM;
    for (int32_t i = 0; st == MOPT_OK && i < c->n_threads; i++)
        if (!(c->wscratch[i] = malloc((size_t)SGEMM_ROWS * (size_t)c->max_in * sizeof(float)))) st = MOPT_E_NOMEM;
    if (st == MOPT_OK) st = linear(c, w, b, x, T, (int32_t)w->ne[0], y, (int32_t)w->ne[1], err);
    else MOPT_FAIL(err, st, "out of memory");
    cpu_free(c);
    return st;
}

static void cpu_parallel_for(void *p, int64_t n_tasks, void (*fn)(void *user, int64_t task, int32_t thread), void *user) {
    mopt_pool_run(((cpu_ctx *)p)->pool, n_tasks, fn, user);
}

const mopt_backend_i mopt_backend_cpu = {"cpu", cpu_init, cpu_free, cpu_forward, cpu_n_threads, cpu_parallel_for};
