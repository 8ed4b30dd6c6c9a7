/* Forward/backward pairs for every graph op, the way llm.c writes them: the
 * forward mirrors the CPU backend's arithmetic (runtime/backend_cpu.c) at
 * positions 0..T-1 and saves norms' statistics and attention probabilities;
 * the backward reads them and accumulates into the input and weight
 * gradients. Everything runs on the trainer's thread pool: GEMMs (OpenBLAS)
 * split by output blocks, attention by heads, the row-wise ops by 16-row tasks
 * whose weight-gradient sums are added in task order (the same bits with any
 * number of threads). */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backprop.h"
#include "base.h"

size_t train_aux_floats(const mopt_node *n, int32_t max_T) {
    switch (n->op) {
    case MOPT_OP_RMSNORM: return (size_t)max_T;         /* 1/rms per row */
    case MOPT_OP_LAYERNORM: return 2 * (size_t)max_T;   /* mean and 1/std per row */
    case MOPT_OP_ATTENTION: /* softmax rows per query head, then a backward scratch [T, T] per KV head */
        return ((size_t)n->n_heads + (size_t)n->n_kv_heads) * (size_t)max_T * (size_t)max_T;
    default: return 0;
    }
}

/* --- linear: y[T, out] = x[T, in] W^T + b ------------------------------------------ */

enum { BLOCK = 64 }; /* output rows (forward, dW) or input columns (dx) per task */

static void linear_fwd_task(void *p, int64_t task, int32_t thread) {
    (void)thread;
    const train_op *o = p;
    const int32_t T = o->T, in = (int32_t)o->w_cols, o0 = (int32_t)task * BLOCK;
    const int32_t r = (int32_t)o->w_rows - o0 < BLOCK ? (int32_t)o->w_rows - o0 : BLOCK;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, r, in, 1.0f, o->in[0], o->in_w[0], o->w + (size_t)o0 * in, in, 0.0f,
                o->out + o0, o->out_w);
    if (o->b)
        for (int32_t t = 0; t < T; t++)
            for (int32_t j = o0; j < o0 + r; j++) o->out[(size_t)t * o->out_w + j] += o->b[j];
}

/* dW[o0:o0+r, :] += dy[:, o0:o0+r]^T x, and the bias rows */
static void linear_dw_task(void *p, int64_t task, int32_t thread) {
    (void)thread;
    const train_op *o = p;
    const int32_t T = o->T, in = (int32_t)o->w_cols, o0 = (int32_t)task * BLOCK;
    const int32_t r = (int32_t)o->w_rows - o0 < BLOCK ? (int32_t)o->w_rows - o0 : BLOCK;
    if (o->dw)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r, in, T, 1.0f, o->dout + o0, o->out_w, o->in[0], o->in_w[0], 1.0f,
                    o->dw + (size_t)o0 * in, in);
    if (o->db)
        for (int32_t t = 0; t < T; t++)
            for (int32_t j = o0; j < o0 + r; j++) o->db[j] += o->dout[(size_t)t * o->out_w + j];
}

/* dx[:, i0:i0+c] += dy W[:, i0:i0+c] */
static void linear_dx_task(void *p, int64_t task, int32_t thread) {
    (void)thread;
    const train_op *o = p;
    const int32_t T = o->T, in = (int32_t)o->w_cols, out = (int32_t)o->w_rows, i0 = (int32_t)task * BLOCK;
    const int32_t c = in - i0 < BLOCK ? in - i0 : BLOCK;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, c, out, 1.0f, o->dout, o->out_w, o->w + i0, in, 1.0f, o->din[0] + i0,
                o->in_w[0]);
}

static int64_t blocks(int64_t n) { return (n + BLOCK - 1) / BLOCK; }

static void linear_fwd(train_op *o) { mopt_pool_run(o->pool, blocks(o->w_rows), linear_fwd_task, o); }

static void linear_bwd(train_op *o) {
    if (o->dw || o->db) mopt_pool_run(o->pool, blocks(o->w_rows), linear_dw_task, o); /* none when frozen */
    mopt_pool_run(o->pool, blocks(o->w_cols), linear_dx_task, o);
}

/* --- norms ---------------------------------------------------------------------- */

/* Row-wise ops run as tasks of ROWS rows; a weight gradient (a sum over rows)
 * is summed per task into scratch and the tasks' sums added in task order, so
 * the result does not depend on which thread ran which task. */
enum { ROWS = 16 };

static int64_t row_tasks(int32_t T) { return (T + ROWS - 1) / ROWS; }

typedef struct {
    const train_op *o;
    float *part; /* [tasks, 2 D]: dw then db per task */
} rows_ctx;

static void rmsnorm_fwd_task(void *p, int64_t task, int32_t thread) {
    (void)thread;
    const train_op *o = p;
    const int32_t D = o->out_w, t1 = (int32_t)(task + 1) * ROWS < o->T ? (int32_t)(task + 1) * ROWS : o->T;
    for (int32_t t = (int32_t)task * ROWS; t < t1; t++) {
        const float *x = o->in[0] + (size_t)t * o->in_w[0];
        float *y = o->out + (size_t)t * D;
        double ss = 0;
        for (int32_t i = 0; i < D; i++) ss += (double)x[i] * x[i];
        const float r = (float)(1.0 / sqrt(ss / D + o->node->eps));
        o->aux[t] = r;
        for (int32_t i = 0; i < D; i++) y[i] = o->w[i] * (x[i] * r);
    }
}

static void rmsnorm_bwd_task(void *p, int64_t task, int32_t thread) {
    (void)thread;
    const rows_ctx *c = p;
    const train_op *o = c->o;
    const int32_t D = o->out_w, t1 = (int32_t)(task + 1) * ROWS < o->T ? (int32_t)(task + 1) * ROWS : o->T;
    float *dw = c->part ? c->part + (size_t)task * 2 * D : NULL;
    for (int32_t t = (int32_t)task * ROWS; t < t1; t++) {
        const float *x = o->in[0] + (size_t)t * o->in_w[0], *dy = o->dout + (size_t)t * D;
        float *dx = o->din[0] + (size_t)t * o->in_w[0];
        const double r = o->aux[t];
        double dot = 0; /* sum_j w_j dy_j x_j */
        for (int32_t i = 0; i < D; i++) dot += (double)o->w[i] * dy[i] * x[i];
        const double cc = r * r * r * dot / D;
        for (int32_t i = 0; i < D; i++) {
            if (dw) dw[i] += (float)(dy[i] * x[i] * r);
            dx[i] += (float)(r * o->w[i] * dy[i] - cc * x[i]);
        }
    }
}

static void layernorm_fwd_task(void *p, int64_t task, int32_t thread) {
    (void)thread;
    const train_op *o = p;
    const int32_t D = o->out_w, t1 = (int32_t)(task + 1) * ROWS < o->T ? (int32_t)(task + 1) * ROWS : o->T;
    for (int32_t t = (int32_t)task * ROWS; t < t1; t++) {
        const float *x = o->in[0] + (size_t)t * o->in_w[0];
        float *y = o->out + (size_t)t * D;
        double mean = 0, var = 0;
        for (int32_t i = 0; i < D; i++) mean += x[i];
        mean /= D;
        for (int32_t i = 0; i < D; i++) var += ((double)x[i] - mean) * ((double)x[i] - mean);
        var /= D;
        const float r = (float)(1.0 / sqrt(var + o->node->eps)), m = (float)mean;
        o->aux[2 * t] = m;
        o->aux[2 * t + 1] = r;
        for (int32_t i = 0; i < D; i++) y[i] = o->w[i] * ((x[i] - m) * r) + (o->b ? o->b[i] : 0.0f);
    }
}

static void layernorm_bwd_task(void *p, int64_t task, int32_t thread) {
    (void)thread;
    const rows_ctx *c = p;
    const train_op *o = c->o;
    const int32_t D = o->out_w, t1 = (int32_t)(task + 1) * ROWS < o->T ? (int32_t)(task + 1) * ROWS : o->T;
    float *dw = c->part ? c->part + (size_t)task * 2 * D : NULL, *db = dw ? dw + D : NULL;
    for (int32_t t = (int32_t)task * ROWS; t < t1; t++) {
        const float *x = o->in[0] + (size_t)t * o->in_w[0], *dy = o->dout + (size_t)t * D;
        float *dx = o->din[0] + (size_t)t * o->in_w[0];
        const double m = o->aux[2 * t], r = o->aux[2 * t + 1];
        double mean_g = 0, mean_gx = 0; /* of dxhat and dxhat * xhat */
        for (int32_t i = 0; i < D; i++) {
            const double xh = (x[i] - m) * r, g = (double)dy[i] * o->w[i];
            mean_g += g;
            mean_gx += g * xh;
            if (dw) dw[i] += (float)(dy[i] * xh);
            if (db) db[i] += dy[i];
        }
        mean_g /= D;
        mean_gx /= D;
        for (int32_t i = 0; i < D; i++) {
            const double xh = (x[i] - m) * r, g = (double)dy[i] * o->w[i];
            dx[i] += (float)(r * (g - mean_g - xh * mean_gx));
        }
    }
}

/* The backward of a norm: dx per task, dw (and db) summed per task, then in task order. */
static mopt_status norm_bwd(const train_op *o, mopt_task_fn fn, mopt_error *err) {
    const int32_t D = o->out_w;
    const int64_t nt = row_tasks(o->T);
    rows_ctx c = {o, NULL};
    if ((o->dw || o->db) && !(c.part = calloc((size_t)nt * 2 * (size_t)D, sizeof(float))))
        return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    mopt_pool_run(o->pool, nt, fn, &c);
    for (int64_t k = 0; c.part && k < nt; k++)
        for (int32_t i = 0; i < D; i++) {
            if (o->dw) o->dw[i] += c.part[(size_t)k * 2 * D + i];
            if (o->db) o->db[i] += c.part[(size_t)k * 2 * D + D + i];
        }
    free(c.part);
    return MOPT_OK;
}

/* --- rotary position embedding ----------------------------------------------------- */

/* rotates (or with inverse, rotates back) pairs of x into y at position pos */
static void rope_rows(const mopt_node *n, const float *x, float *y, int32_t pos, int inverse) {
    const int32_t hd = n->head_dim, half = hd / 2;
    for (int32_t i = 0; i < half; i++) {
        const float inv = 1.0f / powf(n->rope_theta, (float)(2 * i) / (float)hd); /* as the backend */
        const float ang = (float)pos * inv, cs = cosf(ang), sn = inverse ? -sinf(ang) : sinf(ang);
        const int32_t i0 = n->rope_style == MOPT_ROPE_HALF ? i : 2 * i, i1 = n->rope_style == MOPT_ROPE_HALF ? i + half : 2 * i + 1;
        for (int32_t h = 0; h < n->n_heads; h++) {
            const float x0 = x[h * hd + i0], x1 = x[h * hd + i1];
            y[h * hd + i0] = x0 * cs - x1 * sn;
            y[h * hd + i1] = x1 * cs + x0 * sn;
        }
    }
}

static void rope_fwd_task(void *p, int64_t task, int32_t thread) {
    (void)thread;
    const train_op *o = p;
    const int32_t t1 = (int32_t)(task + 1) * ROWS < o->T ? (int32_t)(task + 1) * ROWS : o->T;
    for (int32_t t = (int32_t)task * ROWS; t < t1; t++)
        rope_rows(o->node, o->in[0] + (size_t)t * o->in_w[0], o->out + (size_t)t * o->out_w, t, 0);
}

/* The rotation is orthogonal: dx = R^T dy, through per-task scratch rows. */
static void rope_bwd_task(void *p, int64_t task, int32_t thread) {
    (void)thread;
    const rows_ctx *c = p;
    const train_op *o = c->o;
    const int32_t W = o->out_w, t1 = (int32_t)(task + 1) * ROWS < o->T ? (int32_t)(task + 1) * ROWS : o->T;
    float *tmp = c->part + (size_t)task * W;
    for (int32_t t = (int32_t)task * ROWS; t < t1; t++) {
        rope_rows(o->node, o->dout + (size_t)t * W, tmp, t, 1);
        float *dx = o->din[0] + (size_t)t * o->in_w[0];
        for (int32_t i = 0; i < W; i++) dx[i] += tmp[i];
    }
}

static mopt_status rope_bwd(const train_op *o, mopt_error *err) {
    rows_ctx c = {o, malloc((size_t)row_tasks(o->T) * (size_t)o->out_w * sizeof(float))};
    if (!c.part) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    mopt_pool_run(o->pool, row_tasks(o->T), rope_bwd_task, &c);
    free(c.part);
    return MOPT_OK;
}

/* --- causal attention with grouped KV heads ---------------------------------------- */

/* One query head: S = Q K^T / sqrt(hd) as a GEMM, the causal softmax row by row
 * (kept in aux, zero above the diagonal), Y = P V as a GEMM. */
static void attention_fwd_task(void *p, int64_t h, int32_t thread) {
    (void)thread;
    const train_op *o = p;
    const mopt_node *n = o->node;
    const int32_t T = o->T, hd = n->head_dim, group = n->n_heads / n->n_kv_heads, kvo = ((int32_t)h / group) * hd;
    float *P = o->aux + (size_t)h * T * T;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, 1.0f / sqrtf((float)hd), o->in[0] + h * hd, o->in_w[0],
                o->in[1] + kvo, o->in_w[1], 0.0f, P, T);
    for (int32_t t = 0; t < T; t++) {
        float *row = P + (size_t)t * T, mx = -INFINITY, sum = 0;
        for (int32_t s = 0; s <= t; s++) mx = fmaxf(mx, row[s]);
        for (int32_t s = 0; s <= t; s++) sum += (row[s] = expf(row[s] - mx));
        const float inv = 1.0f / sum;
        for (int32_t s = 0; s <= t; s++) row[s] *= inv;
        for (int32_t s = t + 1; s < T; s++) row[s] = 0.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, 1.0f, P, T, o->in[2] + kvo, o->in_w[2], 0.0f,
                o->out + h * hd, o->out_w);
}

static void attention_fwd(train_op *o) { mopt_pool_run(o->pool, o->node->n_heads, attention_fwd_task, o); }

/* One KV head with the query heads that share it (their dK, dV add up):
 * dP = dY V^T, dV += P^T dY, dS = P (dP - rowsum(P dP)) / sqrt(hd),
 * dQ += dS K, dK += dS^T Q; every product a GEMM. */
static void attention_bwd_task(void *p, int64_t kvh, int32_t thread) {
    (void)thread;
    const train_op *o = p;
    const mopt_node *n = o->node;
    const int32_t T = o->T, hd = n->head_dim, group = n->n_heads / n->n_kv_heads, kvo = (int32_t)kvh * hd;
    const float scale = 1.0f / sqrtf((float)hd);
    float *dS = o->aux + (size_t)n->n_heads * T * T + (size_t)kvh * T * T; /* scratch per KV head */
    for (int32_t h = (int32_t)kvh * group; h < ((int32_t)kvh + 1) * group; h++) {
        const float *P = o->aux + (size_t)h * T * T, *dY = o->dout + h * hd, *Q = o->in[0] + h * hd;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, 1.0f, dY, o->out_w, o->in[2] + kvo, o->in_w[2], 0.0f, dS, T);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T, 1.0f, P, T, dY, o->out_w, 1.0f, o->din[2] + kvo, o->in_w[2]);
        for (int32_t t = 0; t < T; t++) {
            const float *pr = P + (size_t)t * T;
            float *d = dS + (size_t)t * T;
            double pdp = 0; /* the softmax's correction */
            for (int32_t s = 0; s <= t; s++) pdp += (double)pr[s] * d[s];
            for (int32_t s = 0; s <= t; s++) d[s] = pr[s] * (d[s] - (float)pdp) * scale;
            for (int32_t s = t + 1; s < T; s++) d[s] = 0.0f;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, 1.0f, dS, T, o->in[1] + kvo, o->in_w[1], 1.0f, o->din[0] + h * hd,
                    o->in_w[0]);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T, 1.0f, dS, T, Q, o->in_w[0], 1.0f, o->din[1] + kvo, o->in_w[1]);
    }
}

static void attention_bwd(train_op *o) { mopt_pool_run(o->pool, o->node->n_kv_heads, attention_bwd_task, o); }

/* --- elementwise ----------------------------------------------------------------- */

static float gelu_inner(float v) { return 0.7978845608028654f * (v + 0.044715f * v * v * v); }

static void elementwise_fwd_task(void *p, int64_t task, int32_t thread) {
    (void)thread;
    const train_op *o = p;
    const int32_t W = o->out_w, t1 = (int32_t)(task + 1) * ROWS < o->T ? (int32_t)(task + 1) * ROWS : o->T;
    for (int32_t t = (int32_t)task * ROWS; t < t1; t++) {
        const float *x = o->in[0] + (size_t)t * o->in_w[0], *z = o->node->n_inputs > 1 ? o->in[1] + (size_t)t * o->in_w[1] : NULL;
        float *y = o->out + (size_t)t * W;
        for (int32_t i = 0; i < W; i++) switch (o->node->op) {
            case MOPT_OP_SWIGLU: y[i] = x[i] / (1.0f + expf(-x[i])) * z[i]; break;
            case MOPT_OP_GELU: y[i] = 0.5f * x[i] * (1.0f + tanhf(gelu_inner(x[i]))); break;
            default: y[i] = x[i] + z[i]; break; /* ADD */
            }
    }
}

static void elementwise_bwd_task(void *p, int64_t task, int32_t thread) {
    (void)thread;
    const train_op *o = p;
    const int32_t W = o->out_w, t1 = (int32_t)(task + 1) * ROWS < o->T ? (int32_t)(task + 1) * ROWS : o->T;
    for (int32_t t = (int32_t)task * ROWS; t < t1; t++) {
        const float *x = o->in[0] + (size_t)t * o->in_w[0], *dy = o->dout + (size_t)t * W;
        const float *z = o->node->n_inputs > 1 ? o->in[1] + (size_t)t * o->in_w[1] : NULL;
        float *dx = o->din[0] + (size_t)t * o->in_w[0], *dz = z ? o->din[1] + (size_t)t * o->in_w[1] : NULL;
        for (int32_t i = 0; i < W; i++) switch (o->node->op) {
            case MOPT_OP_SWIGLU: { /* y = silu(g) u */
                const float sg = 1.0f / (1.0f + expf(-x[i]));
                dz[i] += dy[i] * x[i] * sg;
                dx[i] += dy[i] * z[i] * sg * (1.0f + x[i] * (1.0f - sg));
                break;
            }
            case MOPT_OP_GELU: {
                const float v = x[i], th = tanhf(gelu_inner(v));
                const float dinner = 0.7978845608028654f * (1.0f + 3.0f * 0.044715f * v * v);
                dx[i] += dy[i] * (0.5f * (1.0f + th) + 0.5f * v * (1.0f - th * th) * dinner);
                break;
            }
            default: /* ADD */
                dx[i] += dy[i];
                dz[i] += dy[i];
                break;
            }
    }
}

/* --- embeddings ------------------------------------------------------------------ */

static mopt_status embedding_fwd(const train_op *o, mopt_error *err) {
    const int32_t W = o->out_w;
    for (int32_t t = 0; t < o->T; t++) {
        const int64_t row = o->node->op == MOPT_OP_EMBEDDING ? o->tokens[t] : t;
        if (row < 0 || row >= o->w_rows)
            return MOPT_FAIL(err, MOPT_E_INVALID, "%s: row %lld is outside its %lld rows", o->node->name, (long long)row,
                             (long long)o->w_rows);
        float *y = o->out + (size_t)t * W;
        const float *e = o->w + row * o->w_cols;
        const float *x = o->node->op == MOPT_OP_POS_EMBEDDING ? o->in[0] + (size_t)t * o->in_w[0] : NULL;
        for (int32_t i = 0; i < W; i++) y[i] = e[i] + (x ? x[i] : 0.0f);
    }
    return MOPT_OK;
}

static void embedding_bwd(const train_op *o) {
    const int32_t W = o->out_w;
    for (int32_t t = 0; t < o->T; t++) {
        const int64_t row = o->node->op == MOPT_OP_EMBEDDING ? o->tokens[t] : t;
        const float *dy = o->dout + (size_t)t * W;
        float *de = o->dw ? o->dw + row * o->w_cols : NULL, *dx = o->node->op == MOPT_OP_POS_EMBEDDING ? o->din[0] + (size_t)t * o->in_w[0] : NULL;
        for (int32_t i = 0; i < W; i++) {
            if (de) de[i] += dy[i];
            if (dx) dx[i] += dy[i];
        }
    }
}

/* --- dispatch -------------------------------------------------------------------- */

static mopt_status check_shapes(const train_op *o, mopt_error *err) {
    const mopt_node *n = o->node;
    const int needs_w = n->op == MOPT_OP_EMBEDDING || n->op == MOPT_OP_POS_EMBEDDING || n->op == MOPT_OP_RMSNORM ||
                        n->op == MOPT_OP_LAYERNORM || n->op == MOPT_OP_LINEAR || n->op == MOPT_OP_LM_HEAD;
    if (needs_w && !o->w) return MOPT_FAIL(err, MOPT_E_INVALID, "%s: %s needs a weight", n->name, mopt_op_name(n->op));
    if (o->b && o->b_n != (n->op == MOPT_OP_LAYERNORM ? o->out_w : o->w_rows))
        return MOPT_FAIL(err, MOPT_E_INVALID, "%s: a bias of %lld values does not fit its output", n->name, (long long)o->b_n);
    int ok = 1;
    switch (n->op) {
    case MOPT_OP_EMBEDDING:
    case MOPT_OP_POS_EMBEDDING: ok = o->w_cols == o->out_w; break;
    case MOPT_OP_RMSNORM:
    case MOPT_OP_LAYERNORM: ok = o->w_rows * o->w_cols == o->out_w && o->in_w[0] >= o->out_w; break;
    case MOPT_OP_LINEAR:
    case MOPT_OP_LM_HEAD: ok = o->w_cols == o->in_w[0] && o->w_rows == o->out_w; break;
    case MOPT_OP_ROPE: ok = n->head_dim > 0 && n->head_dim % 2 == 0 && n->n_heads * n->head_dim == o->out_w && o->in_w[0] >= o->out_w; break;
    case MOPT_OP_ATTENTION:
        ok = n->head_dim > 0 && n->n_kv_heads > 0 && n->n_heads % n->n_kv_heads == 0 && o->in_w[0] >= n->n_heads * n->head_dim &&
             o->in_w[1] >= n->n_kv_heads * n->head_dim && o->in_w[2] >= n->n_kv_heads * n->head_dim &&
             o->out_w >= n->n_heads * n->head_dim;
        break;
    case MOPT_OP_SWIGLU:
    case MOPT_OP_ADD: ok = n->n_inputs == 2 && o->in_w[0] >= o->out_w && o->in_w[1] >= o->out_w; break;
    case MOPT_OP_GELU: ok = o->in_w[0] >= o->out_w; break;
    default: return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: no backward for op %s", n->name, mopt_op_name(n->op));
    }
    return ok ? MOPT_OK : MOPT_FAIL(err, MOPT_E_INVALID, "%s: %s shapes do not fit its values", n->name, mopt_op_name(n->op));
}

mopt_status train_forward(train_op *o, mopt_error *err) {
    mopt_status st = check_shapes(o, err);
    if (st) return st;
    switch (o->node->op) {
    case MOPT_OP_EMBEDDING:
    case MOPT_OP_POS_EMBEDDING: return embedding_fwd(o, err);
    case MOPT_OP_RMSNORM: mopt_pool_run(o->pool, row_tasks(o->T), rmsnorm_fwd_task, o); break;
    case MOPT_OP_LAYERNORM: mopt_pool_run(o->pool, row_tasks(o->T), layernorm_fwd_task, o); break;
    case MOPT_OP_LINEAR:
    case MOPT_OP_LM_HEAD: linear_fwd(o); break;
    case MOPT_OP_ROPE: mopt_pool_run(o->pool, row_tasks(o->T), rope_fwd_task, o); break;
    case MOPT_OP_ATTENTION: attention_fwd(o); break;
    default: mopt_pool_run(o->pool, row_tasks(o->T), elementwise_fwd_task, o); break;
    }
    return MOPT_OK;
}

mopt_status train_backward(train_op *o, mopt_error *err) {
    switch (o->node->op) {
    case MOPT_OP_EMBEDDING:
    case MOPT_OP_POS_EMBEDDING: embedding_bwd(o); break;
    case MOPT_OP_RMSNORM: return norm_bwd(o, rmsnorm_bwd_task, err);
    case MOPT_OP_LAYERNORM: return norm_bwd(o, layernorm_bwd_task, err);
    case MOPT_OP_LINEAR:
    case MOPT_OP_LM_HEAD: linear_bwd(o); break;
    case MOPT_OP_ROPE: return rope_bwd(o, err);
    case MOPT_OP_ATTENTION: attention_bwd(o); break;
    default: mopt_pool_run(o->pool, row_tasks(o->T), elementwise_bwd_task, o); break;
    }
    return MOPT_OK;
}
