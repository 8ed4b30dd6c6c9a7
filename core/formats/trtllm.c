/* TensorRT-LLM checkpoints (config.json with "architecture" and "mapping", one
 * rank{r}.safetensors per tensor-parallel rank): the ranks are stitched back
 * together (column-parallel linears by output rows, qkv by heads, row-parallel
 * ones by input columns; everything else is replicated, as the family's table
 * says) into the graph's names.
 * Quantized linears become packed tensors with the stored values:
 *   W4A16_AWQ (int4 pairs in I8 [out/2, in], weights_scaling_factor [out, in/gs],
 *   prequant_scaling_factor all ones), W8A16, W8A8 per token, FP8 (per tensor
 *   with a static activation scale, or per channel per token), NVFP4 (E2M1
 *   pairs, E4M3 scales per 16, the global weight and activation scales),
 *   W4A8_AWQ (W4A16_AWQ's tensors and the two scalars
 *   weights_scaling_factor_2 and activation_scaling_factor). */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch_impl.h"
#include "base.h"
#include "json_util.h"
#include "model_impl.h"
#include "hf_quant.h"
#include "mopt/quant.h"
#include "safetensors.h"


typedef struct {
    mopt_tensor **t;
    int32_t n;
    uint8_t *used; /* [n]: read by some rule */
} rank_file;

typedef struct {
    const char *dir;
    rank_file *ranks;
    int tp;
    mopt_tq_algo algo;
    const char *algo_name; /* as config.json names it */
    int32_t group_size;
    mopt_arch a;
    mopt_graph *g;
    mopt_error *err;
    mopt_kv_format kv; /* kv_cache_quant_algo */
    float *kv_scale;   /* [n_layers]: attention.kv_cache_scaling_factor, 0 where a layer has none */
} trt;

static mopt_tensor *rt(const trt *c, int r, const char *name) {
    for (int32_t i = 0; i < c->ranks[r].n; i++)
        if (c->ranks[r].t[i] && !strcmp(c->ranks[r].t[i]->name, name)) {
            c->ranks[r].used[i] = 1;
            return c->ranks[r].t[i];
        }
    return NULL;
}

/* One rank's piece of a linear, unpacked: values [rows, cols] (levels for int
 * kinds, raw bytes for FP8, fp32 for float), scales [rows, ng]. */
typedef struct {
    int64_t rows, cols, ng;
    uint8_t *v;  /* quantized: one byte per value (NVFP4: an E2M1 code) */
    float *f;    /* float: values */
    float *s;
    uint8_t *bs; /* NVFP4: E4M3 block scales [rows, ng] */
    float act, g; /* static activation scale; NVFP4's and W4A8_AWQ's global weight scale */
    mopt_dtype dt; /* float pieces: the stored dtype */
    int vec;       /* a 1-D tensor (norm weight, bias) */
} piece;

static void piece_free(piece *p) {
    free(p->bs);
    free(p->v);
    free(p->f);
    free(p->s);
}

/* One float, finite and > 0, named BASE.PART on rank r */
static mopt_status read_scalar(const trt *c, int r, const char *base, const char *part, float *v) {
    char name[MOPT_MAX_NAME + 48];
    snprintf(name, sizeof name, "%s.%s", base, part);
    const mopt_tensor *t = rt(c, r, name);
    *v = 0;
    if (!t || t->dtype >= MOPT_DTYPE_PACKED_FIRST || mopt_tensor_nelements(t) != 1 || mopt_tensor_read_f32(t, 0, 1, v, NULL))
        return MOPT_FAIL(c->err, MOPT_E_FORMAT, "%s: rank%d.safetensors needs one float %s (quant_algo %s)", c->dir, r, name, c->algo_name);
    if (!(*v > 0) || !isfinite(*v)) return MOPT_FAIL(c->err, MOPT_E_FORMAT, "%s: %s is %g; a scale must be finite and > 0", c->dir, name, (double)*v);
    return MOPT_OK;
}

/* NVFP4: weight U8 [rows, cols/2], weights_scaling_factor F8_E4M3 [rows, cols/16], the two global scales */
static mopt_status read_nvfp4(const trt *c, int r, const char *base, const mopt_tensor *w, piece *p) {
    char name[MOPT_MAX_NAME + 48];
    if (w->dtype != MOPT_DTYPE_U8 || w->ndim != 2)
        return MOPT_FAIL(c->err, MOPT_E_FORMAT, "%s: %s.weight is %s, NVFP4 stores U8 E2M1 pairs", c->dir, base, mopt_dtype_name(w->dtype));
    p->cols *= 2;
    p->ng = p->cols / 16;
    snprintf(name, sizeof name, "%s.weights_scaling_factor", base);
    const mopt_tensor *sc = rt(c, r, name);
    if (!sc || sc->dtype != MOPT_DTYPE_F8E4M3 || sc->ndim != 2 || sc->ne[1] != p->rows || sc->ne[0] != p->ng || p->cols % 32)
        return MOPT_FAIL(c->err, MOPT_E_FORMAT, "%s: %s must be F8_E4M3 [%lld, %lld] (a scale per 16 of %lld columns, whole blocks of 32)",
                         c->dir, name, (long long)p->rows, (long long)p->ng, (long long)p->cols);
    mopt_status st = read_scalar(c, r, base, "weights_scaling_factor_2", &p->g);
    if (!st) st = read_scalar(c, r, base, "activation_scaling_factor", &p->act);
    if (st) return st;
    p->v = malloc((size_t)(p->rows * p->cols));
    p->bs = malloc((size_t)(p->rows * p->ng));
    if (!p->v || !p->bs) return MOPT_FAIL(c->err, MOPT_E_NOMEM, "out of memory");
    const uint8_t *b = w->data;
    for (int64_t i = 0; i < p->rows * p->cols; i++) p->v[i] = b[i / 2] >> (4 * (i & 1)) & 15;
    memcpy(p->bs, sc->data, (size_t)(p->rows * p->ng));
    return MOPT_OK;
}

static mopt_status read_piece(const trt *c, int r, const char *base, int is_vec, piece *p) {
    memset(p, 0, sizeof *p);
    char name[MOPT_MAX_NAME + 48];
    snprintf(name, sizeof name, "%s.%s", base, is_vec ? "bias" : "weight");
    const mopt_tensor *w = rt(c, r, name);
    if (!w) return MOPT_FAIL(c->err, MOPT_E_FORMAT, "%s: rank%d.safetensors lacks %s", c->dir, r, name);
    p->vec = w->ndim == 1;
    p->cols = w->ndim == 1 ? 1 : w->ne[0];
    p->rows = w->ndim == 1 ? w->ne[0] : w->ne[1];
    if (w->dtype == MOPT_DTYPE_F32 || w->dtype == MOPT_DTYPE_F16 || w->dtype == MOPT_DTYPE_BF16) {
        p->dt = w->dtype;
        p->f = malloc((size_t)(p->rows * p->cols) * sizeof *p->f);
        if (!p->f) return MOPT_FAIL(c->err, MOPT_E_NOMEM, "out of memory");
        return mopt_tensor_read_f32(w, 0, p->rows * p->cols, p->f, c->err);
    }
    if (c->algo == MOPT_TQ_NVFP4) return read_nvfp4(c, r, base, w, p);
    const int int4 = c->algo == MOPT_TQ_W4A16_AWQ || c->algo == MOPT_TQ_W4A8_AWQ;
    if (int4) p->rows *= 2;
    snprintf(name, sizeof name, "%s.weights_scaling_factor", base);
    const mopt_tensor *sc = rt(c, r, name);
    if (!sc || (sc->dtype != MOPT_DTYPE_F32 && sc->dtype != MOPT_DTYPE_F16 && sc->dtype != MOPT_DTYPE_BF16))
        return MOPT_FAIL(c->err, MOPT_E_FORMAT, "%s: rank%d.safetensors lacks a float %s", c->dir, r, name);
    const int64_t ns = mopt_tensor_nelements(sc);
    p->ng = int4 ? sc->ne[0] : 1;
    if ((int4 && (sc->ndim != 2 || sc->ne[1] != p->rows)) || (!int4 && ns != p->rows && ns != 1))
        return MOPT_FAIL(c->err, MOPT_E_FORMAT, "%s: %s does not match %lld rows", c->dir, name, (long long)p->rows);
    const mopt_dtype want = c->algo == MOPT_TQ_FP8 || c->algo == MOPT_TQ_FP8_PC ? MOPT_DTYPE_F8E4M3 : MOPT_DTYPE_I8;
    if (w->dtype != want)
        return MOPT_FAIL(c->err, MOPT_E_FORMAT, "%s: %s.weight is %s, the quant_algo stores %s", c->dir, base,
                         mopt_dtype_name(w->dtype), mopt_dtype_name(want));
    p->v = malloc((size_t)(p->rows * p->cols));
    p->s = malloc((size_t)(p->rows * p->ng) * sizeof *p->s);
    if (!p->v || !p->s) return MOPT_FAIL(c->err, MOPT_E_NOMEM, "out of memory");
    const uint8_t *b = w->data;
    for (int64_t i = 0; i < p->rows; i++)
        for (int64_t k = 0; k < p->cols; k++) {
            if (int4) p->v[i * p->cols + k] = mopt_int4_pair_get(b, p->cols, i, k);
            else if (c->algo == MOPT_TQ_W8A16) p->v[i * p->cols + k] = (uint8_t)((int8_t)b[i * p->cols + k] + 128);
            else p->v[i * p->cols + k] = b[i * p->cols + k];
        }
    if (ns == 1 && p->rows > 1) { /* per tensor */
        p->s[0] = 0;
        if (mopt_tensor_read_f32(sc, 0, 1, p->s, c->err)) return MOPT_E_FORMAT;
        for (int64_t i = 1; i < p->rows; i++) p->s[i] = p->s[0];
        p->ng = 0; /* marks per tensor */
    } else if (mopt_tensor_read_f32(sc, 0, p->rows * (p->ng ? p->ng : 1), p->s, c->err)) {
        return MOPT_E_FORMAT;
    }
    if (c->algo == MOPT_TQ_FP8) {
        snprintf(name, sizeof name, "%s.activation_scaling_factor", base);
        const mopt_tensor *as = rt(c, r, name);
        if (!as || mopt_tensor_nelements(as) != 1 || mopt_tensor_read_f32(as, 0, 1, &p->act, c->err))
            return MOPT_FAIL(c->err, MOPT_E_FORMAT, "%s: FP8 needs a scalar %s", c->dir, name);
    }
    if (c->algo == MOPT_TQ_W4A8_AWQ) { /* the FP8 scale the int4 values widen with, and the inputs' */
        mopt_status st = read_scalar(c, r, base, "weights_scaling_factor_2", &p->g);
        if (!st) st = read_scalar(c, r, base, "activation_scaling_factor", &p->act);
        if (st) return st;
    }
    if (int4) {
        snprintf(name, sizeof name, "%s.prequant_scaling_factor", base);
        const mopt_tensor *pq = rt(c, r, name);
        mopt_status st = pq ? mopt_check_ones(pq, -1, base, "prequant_scaling_factor", c->err) : MOPT_OK;
        if (st) mopt_error_name_file(c->err, c->dir);
        return st;
    }
    return MOPT_OK;
}

/* Whole-model values of a linear from its rank pieces. */
static mopt_status gather(const trt *c, const char *base, int is_vec, mopt_tp_split split, piece *all) {
    piece *ps = calloc((size_t)c->tp, sizeof *ps);
    if (!ps) return MOPT_FAIL(c->err, MOPT_E_NOMEM, "out of memory");
    mopt_status st = MOPT_OK;
    const int n = split == MOPT_SPLIT_NONE ? 1 : c->tp;
    for (int r = 0; r < n && !st; r++) st = read_piece(c, r, base, is_vec, &ps[r]);
    for (int r = n; r < c->tp; r++) { /* replicated: every rank holds the same copy; rank 0's is read */
        char name[MOPT_MAX_NAME + 48];
        snprintf(name, sizeof name, "%s.%s", base, is_vec ? "bias" : "weight");
        rt(c, r, name);
    }
    for (int r = 1; r < n && !st; r++)
        if (ps[r].rows != ps[0].rows || ps[r].cols != ps[0].cols || ps[r].ng != ps[0].ng || !ps[r].f != !ps[0].f)
            st = MOPT_FAIL(c->err, MOPT_E_FORMAT, "%s: %s differs in shape between rank0 and rank%d", c->dir, base, r);
        else if (ps[r].g != ps[0].g || ps[r].act != ps[0].act) /* one tensor's global scales, on every rank */
            st = MOPT_FAIL(c->err, MOPT_E_FORMAT, "%s: %s's global scales differ between rank0 and rank%d", c->dir, base, r);
    /* by heads: each rank holds its q, k and v heads; check before any row is placed */
    const int64_t hd = c->a.head_dim, qr = (int64_t)c->a.n_heads * hd / c->tp, kr = (int64_t)c->a.n_kv_heads * hd / c->tp;
    if (!st && split == MOPT_SPLIT_HEADS && ps[0].rows != qr + 2 * kr)
        st = MOPT_FAIL(c->err, MOPT_E_FORMAT,
                       "%s: %s.%s has %lld rows per rank, but %d heads and %d kv heads of head_size %lld over tp_size %d need %lld",
                       c->dir, base, is_vec ? "bias" : "weight", (long long)ps[0].rows, c->a.n_heads, c->a.n_kv_heads,
                       (long long)hd, c->tp, (long long)(qr + 2 * kr));
    if (st) goto done;
    const int by_cols = split == MOPT_SPLIT_COLS && !is_vec;
    memset(all, 0, sizeof *all);
    all->rows = ps[0].rows * (split == MOPT_SPLIT_ROWS || split == MOPT_SPLIT_HEADS ? n : 1);
    all->cols = ps[0].cols * (by_cols ? n : 1);
    const int int4 = c->algo == MOPT_TQ_W4A16_AWQ || c->algo == MOPT_TQ_W4A8_AWQ;
    const int groups_by_cols = by_cols && (int4 || c->algo == MOPT_TQ_NVFP4);
    all->ng = ps[0].ng * (groups_by_cols ? n : 1);
    all->act = ps[0].act;
    all->g = ps[0].g;
    all->dt = ps[0].dt;
    all->vec = ps[0].vec;
    const int64_t ngs = ps[0].ng ? ps[0].ng : 1, ngall = all->ng ? all->ng : 1;
    if (ps[0].f) all->f = malloc((size_t)(all->rows * all->cols) * sizeof *all->f);
    else {
        all->v = malloc((size_t)(all->rows * all->cols));
        if (ps[0].bs) all->bs = malloc((size_t)(all->rows * ngall));
        else all->s = malloc((size_t)(all->rows * ngall) * sizeof *all->s);
    }
    if (!(all->f || (all->v && (all->s || all->bs)))) {
        st = MOPT_FAIL(c->err, MOPT_E_NOMEM, "out of memory");
        goto done;
    }
    /* by heads: rank r holds [q_r; k_r; v_r]; the whole is [q_0..q_n; k_0..; v_0..] */
    for (int r = 0; r < n; r++)
        for (int64_t i = 0; i < ps[r].rows; i++) {
            int64_t row = i, col0 = 0;
            if (split == MOPT_SPLIT_ROWS) row = r * ps[r].rows + i;
            if (split == MOPT_SPLIT_HEADS)
                row = i < qr ? r * qr + i : i < qr + kr ? c->tp * qr + r * kr + (i - qr) : c->tp * (qr + kr) + r * kr + (i - qr - kr);
            if (by_cols) col0 = r * ps[r].cols;
            if (ps[r].f) {
                memcpy(all->f + row * all->cols + col0, ps[r].f + i * ps[r].cols, (size_t)ps[r].cols * sizeof *all->f);
                continue;
            }
            memcpy(all->v + row * all->cols + col0, ps[r].v + i * ps[r].cols, (size_t)ps[r].cols);
            if (ps[r].bs)
                memcpy(all->bs + row * ngall + (by_cols ? r * ngs : 0), ps[r].bs + i * ngs, (size_t)ngs);
            else if (by_cols && int4)
                memcpy(all->s + row * ngall + r * ngs, ps[r].s + i * ngs, (size_t)ngs * sizeof *all->s);
            else if (!by_cols || r == 0)
                memcpy(all->s + row * ngall, ps[r].s + i * ngs, (size_t)ngs * sizeof *all->s);
        }
done:
    for (int r = 0; r < c->tp; r++) piece_free(&ps[r]);
    free(ps);
    return st;
}

/* rows [r0, r0 + n) of a gathered linear (`src` in the checkpoint) as the mopt tensor `name` */
static mopt_status install(trt *c, const piece *p, int64_t r0, int64_t n, const char *src, const char *name) {
    mopt_tensor *t = NULL;
    const int64_t cols = p->cols, ng = p->ng ? p->ng : 1;
    if (p->f) {
        int64_t dims[2] = {n, cols};
        t = mopt_tensor_new(name, p->dt, p->vec ? 1 : 2, dims, c->err);
        if (t) {
            const float *src = p->f + r0 * cols;
            for (int64_t i = 0; i < n * cols; i++) {
                if (p->dt == MOPT_DTYPE_F32) ((float *)t->data)[i] = src[i];
                else if (p->dt == MOPT_DTYPE_F16) ((uint16_t *)t->data)[i] = mopt_f32_to_f16(src[i]);
                else ((uint16_t *)t->data)[i] = mopt_f32_to_bf16(src[i]);
            }
        }
    } else if (c->algo == MOPT_TQ_W4A16_AWQ || c->algo == MOPT_TQ_W4A8_AWQ || c->algo == MOPT_TQ_W8A16) {
        const int32_t gs = c->algo == MOPT_TQ_W8A16 ? -1 : c->group_size > 0 ? c->group_size : (int32_t)((cols + ng - 1) / ng);
        if (mopt_qint_n_groups(cols, gs) != ng)
            return MOPT_FAIL(c->err, MOPT_E_FORMAT,
                             "%s: %s.weights_scaling_factor has %lld groups per row, but quantization.group_size %d over %lld columns needs %lld",
                             c->dir, src, (long long)ng, gs, (long long)cols, (long long)mopt_qint_n_groups(cols, gs));
        t = mopt_qint_pack(name, n, cols, c->algo == MOPT_TQ_W8A16 ? 8 : 4, gs, p->v + r0 * cols, p->s + r0 * ng, NULL, NULL, c->err);
        if (t && c->algo == MOPT_TQ_W4A8_AWQ) { /* int4 widened to FP8 with g, inputs rounded to FP8 with act */
            t->quant->flags |= MOPT_QUANT_W_FP8 | MOPT_QUANT_ACT_STATIC;
            t->quant->global_scale = p->g;
            t->quant->act_scale = p->act;
        }
    } else if (c->algo == MOPT_TQ_NVFP4) {
        uint8_t *pairs = calloc((size_t)(n * cols / 2) + 1, 1);
        if (!pairs) return MOPT_FAIL(c->err, MOPT_E_NOMEM, "out of memory");
        for (int64_t i = 0; i < n * cols; i++) pairs[i / 2] |= (uint8_t)(p->v[r0 * cols + i] << (4 * (i & 1)));
        t = mopt_mxfp_pack(name, MOPT_MXFP_NVFP4, n, cols, pairs, p->bs + r0 * ng, p->g, MOPT_QUANT_ACT_STATIC, p->act, c->err);
        free(pairs);
    } else if (c->algo == MOPT_TQ_W8A8) {
        t = mopt_w8a8_pack(name, n, cols, (const int8_t *)(p->v + r0 * cols), p->s + r0, c->err);
    } else {
        const int per_tensor = p->ng == 0;
        t = mopt_fp8_pack(name, n, cols, p->v + r0 * cols, p->s + r0, per_tensor ? 1 : n,
                          c->algo == MOPT_TQ_FP8 ? MOPT_QUANT_ACT_STATIC : MOPT_QUANT_ACT_PER_TOKEN, p->act, c->err);
    }
    if (!t) return c->err && c->err->code ? (mopt_status)c->err->code : MOPT_E_NOMEM;
    mopt_status st = mopt_graph_add_tensor(c->g, t, c->err);
    if (st) mopt_tensor_free(t);
    return st;
}

/* One TensorRT-LLM tensor (base without .weight/.bias) as the graph tensors of
 * the rules it holds; a fused qkv splits into q, k and v. */
static mopt_status linear(trt *c, const char *base, int is_vec, mopt_tp_split split, const mopt_name_rule *const *rules, int32_t n,
                          int32_t layer) {
    const char *kind = is_vec ? "bias" : "weight";
    char b[MOPT_MAX_NAME + 160];
    snprintf(b, sizeof b, "%s.%s", base, kind);
    if (!rt(c, 0, b)) return MOPT_OK; /* optional (biases); the builder names what is missing */
    piece all;
    mopt_status st = gather(c, base, is_vec, split, &all);
    if (st) return st;
    int64_t total = 0;
    for (int32_t k = 0; k < n; k++) total += n > 1 ? mopt_rule_rows(&c->a, rules[k]) : all.rows;
    if (all.rows != total)
        st = MOPT_FAIL(c->err, MOPT_E_FORMAT, "%s: %s has %lld rows, the heads need %lld", c->dir, b, (long long)all.rows,
                       (long long)total);
    for (int32_t k = 0, r0 = 0; k < n && !st; k++) {
        char name[MOPT_MAX_NAME];
        const int64_t rows = n > 1 ? mopt_rule_rows(&c->a, rules[k]) : all.rows;
        if (!mopt_rule_graph_name(rules[k], layer, kind, name, sizeof name))
            st = MOPT_FAIL(c->err, MOPT_E_FORMAT, "%s: %s: block number too large", c->dir, b);
        else
            st = install(c, &all, r0, rows, base, name);
        r0 += (int32_t)rows;
    }
    piece_free(&all);
    return st;
}

/* The attention's kv_cache_scaling_factor beside its qkv (base): one float, the same on every rank. */
static mopt_status kv_scale(trt *c, const char *qkv_base, int32_t layer) {
    char name[MOPT_MAX_NAME + 48];
    snprintf(name, sizeof name, "%s", qkv_base);
    char *mod = strrchr(name, '.');
    if (!mod || layer < 0 || layer >= c->a.n_layers) return MOPT_OK;
    snprintf(mod, sizeof name - (size_t)(mod - name), ".kv_cache_scaling_factor");
    for (int r = 0; r < c->tp; r++) {
        const mopt_tensor *t = rt(c, r, name);
        float v = 0;
        if (!t) return MOPT_FAIL(c->err, MOPT_E_FORMAT, "%s: rank%d.safetensors lacks %s (kv_cache_quant_algo is set)", c->dir, r, name);
        if (t->dtype >= MOPT_DTYPE_PACKED_FIRST || mopt_tensor_nelements(t) != 1 || mopt_tensor_read_f32(t, 0, 1, &v, NULL))
            return MOPT_FAIL(c->err, MOPT_E_FORMAT, "%s: %s must be one float", c->dir, name);
        if (!(v > 0 && v < INFINITY))
            return MOPT_FAIL(c->err, MOPT_E_FORMAT, "%s: %s is %g; a KV-cache scale must be finite and positive", c->dir, name, (double)v);
        if (r && v != c->kv_scale[layer])
            return MOPT_FAIL(c->err, MOPT_E_FORMAT, "%s: %s differs between rank 0 and rank %d", c->dir, name, r);
        c->kv_scale[layer] = v;
    }
    return MOPT_OK;
}

/* Every tensor of the family's table, in the table's order, block by block. */
static mopt_status tensors(trt *c, const mopt_family *f) {
    mopt_status st = MOPT_OK;
    for (int at = MOPT_AT_TOP; at <= MOPT_AT_END && !st; at++)
        for (int32_t l = at == MOPT_AT_LAYER ? 0 : -1; l < (at == MOPT_AT_LAYER ? c->a.n_layers : 0) && !st; l++)
            for (int vec = 0; vec < 2 && !st; vec++)
                for (int32_t i = 0; i < f->n_rules && !st; i += mopt_family_fused_run(f, MOPT_NAMING_TRTLLM, i)) {
                    const mopt_name_rule *r = &f->rules[i];
                    const int32_t n = mopt_family_fused_run(f, MOPT_NAMING_TRTLLM, i);
                    char base[MOPT_MAX_NAME];
                    if (r->at != at || !mopt_rule_file_name(r, MOPT_NAMING_TRTLLM, l, "x", base, sizeof base)) continue;
                    base[strlen(base) - 2] = 0; /* without ".x" */
                    if (r->role == MOPT_ROLE_LM_HEAD && c->a.tied_embeddings) { /* TensorRT-LLM writes the tied copy too */
                        for (int k = 0; k < c->tp; k++) rt(c, k, vec ? "lm_head.bias" : "lm_head.weight");
                        continue;
                    }
                    if (!vec && r->role == MOPT_ROLE_ATTN_Q && c->kv != MOPT_KV_FLOAT) st = kv_scale(c, base, l);
                    const mopt_name_rule *rules[3] = {r, n > 1 ? r + 1 : NULL, n > 2 ? r + 2 : NULL};
                    /* a row-parallel bias is whole on every rank */
                    const mopt_tp_split split = vec && r->split == MOPT_SPLIT_COLS ? MOPT_SPLIT_NONE : (mopt_tp_split)r->split;
                    st = linear(c, base, vec, split, rules, n > 3 ? 3 : n, l);
                }
    /* what no rule above read: a layer beyond the count, or a tensor of another scheme */
    for (int r = 0; r < c->tp && !st; r++)
        for (int32_t i = 0; i < c->ranks[r].n && !st; i++)
            if (!c->ranks[r].used[i])
                st = MOPT_FAIL(c->err, MOPT_E_FORMAT, "%s: rank%d.safetensors: tensor %s is not part of a %s model of %d layers with quant_algo %s",
                               c->dir, r, c->ranks[r].t[i]->name, c->a.family, c->a.n_layers, c->algo_name);
    return st;
}

/* --- config ------------------------------------------------------------------- */

static mopt_status config(trt *c, const char *file, json_t *cfg, const mopt_family **family) {
    mopt_error *err = c->err;
    const char *arch = NULL, *act = NULL, *pe = NULL;
    if (!mopt_json_get_str_opt(cfg, "architecture", &arch, file, err)) return MOPT_E_FORMAT;
    mopt_arch *a = &c->a;
    const mopt_family *f = mopt_family_of_trt(arch);
    if (!f) {
        char known[256];
        return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: TensorRT-LLM architecture \"%s\" is not supported (%s)", file,
                         arch ? arch : "(missing)", mopt_family_list(MOPT_NAMING_TRTLLM, known, sizeof known));
    }
    *family = f;
    *a = f->shape;
    snprintf(a->family, sizeof a->family, "%s", f->name);
    int64_t v[8];
    static const char *const keys[] = {"hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                                       "vocab_size", "max_position_embeddings"};
    for (int i = 0; i < 6; i++) {
        if (!mopt_json_get_int(cfg, keys[i], &v[i], file, err)) return MOPT_E_FORMAT;
        if (v[i] <= 0 || v[i] > (1 << 24)) return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: %s = %lld is not a usable size", file, keys[i], (long long)v[i]);
    }
    a->dim = (int32_t)v[0], a->n_layers = (int32_t)v[1], a->n_heads = (int32_t)v[2], a->ffn_dim = (int32_t)v[3];
    a->vocab_size = (int32_t)v[4], a->max_ctx = (int32_t)v[5];
    v[6] = a->n_heads;
    v[7] = a->dim / a->n_heads;
    if (!mopt_json_get_int_opt(cfg, "num_key_value_heads", &v[6], file, err) || !mopt_json_get_int_opt(cfg, "head_size", &v[7], file, err))
        return MOPT_E_FORMAT;
    if (v[6] <= 0 || a->n_heads % v[6] || v[7] <= 0 || v[7] > 4096)
        return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: %lld kv heads / head size %lld do not fit %d heads", file, (long long)v[6],
                         (long long)v[7], a->n_heads);
    a->n_kv_heads = (int32_t)v[6], a->head_dim = (int32_t)v[7];
    double eps = 1e-5, theta = 10000;
    bool tie = false;
    if (!mopt_json_get_num_opt(cfg, "norm_epsilon", &eps, file, err) || !mopt_json_get_num_opt(cfg, "rotary_base", &theta, file, err) ||
        !mopt_json_get_bool_opt(cfg, "tie_word_embeddings", &tie, file, err) || !mopt_json_get_str_opt(cfg, "hidden_act", &act, file, err) ||
        !mopt_json_get_str_opt(cfg, "position_embedding_type", &pe, file, err))
        return MOPT_E_FORMAT;
    a->norm_eps = (float)eps;
    a->rope_theta = (float)theta;
    a->tied_embeddings = tie;
    a->bos_id = a->eos_id = -1;
    int64_t id;
    if (json_is_integer(json_object_get(cfg, "bos_token_id")) && mopt_json_get_int(cfg, "bos_token_id", &id, file, err)) a->bos_id = (int32_t)id;
    if (json_is_integer(json_object_get(cfg, "eos_token_id")) && mopt_json_get_int(cfg, "eos_token_id", &id, file, err)) a->eos_id = (int32_t)id;
    if (mopt_family_has_rope(f)) {
        if (pe && strcmp(pe, "rope_gpt_neox"))
            return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: position_embedding_type \"%s\" (a rotary %s model needs rope_gpt_neox)", file,
                             pe, f->name);
        bool b = false;
        if (!mopt_json_get_bool_opt(cfg, "attn_bias", &b, file, err)) return MOPT_E_FORMAT;
        a->qkv_bias = a->o_bias = b;
        b = false;
        if (!mopt_json_get_bool_opt(cfg, "mlp_bias", &b, file, err)) return MOPT_E_FORMAT;
        a->mlp_bias = b;
    }
    json_t *map = json_object_get(cfg, "mapping");
    int64_t tp = 1, pp = 1;
    if (!json_is_object(map) || !mopt_json_get_int_opt(map, "tp_size", &tp, file, err) || !mopt_json_get_int_opt(map, "pp_size", &pp, file, err))
        return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: \"mapping\" must be an object with tp_size / pp_size", file);
    if (pp != 1) return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: pipeline-parallel checkpoints (pp_size %lld) are not supported", file, (long long)pp);
    if (tp < 1 || tp > 64 || a->n_heads % tp || a->n_kv_heads % tp)
        return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: tp_size %lld does not divide %d heads / %d kv heads", file, (long long)tp, a->n_heads, a->n_kv_heads);
    c->tp = (int)tp;
    json_t *q = json_object_get(cfg, "quantization");
    const char *algo = NULL;
    int64_t gs = 128;
    if (json_is_object(q) && (!mopt_json_get_str_opt(q, "quant_algo", &algo, file, err) || !mopt_json_get_int_opt(q, "group_size", &gs, file, err)))
        return MOPT_E_FORMAT;
    c->group_size = gs > 0 && gs <= (1 << 20) ? (int32_t)gs : 0; /* checked below where the algorithm groups */
    const char *kv = NULL;
    if (json_is_object(q) && !mopt_json_get_str_opt(q, "kv_cache_quant_algo", &kv, file, err)) return MOPT_E_FORMAT;
    if (kv && strcmp(kv, "FP8") && strcmp(kv, "INT8"))
        return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: kv_cache_quant_algo \"%s\" is not supported (FP8, INT8)", file, kv);
    c->kv = !kv ? MOPT_KV_FLOAT : !strcmp(kv, "FP8") ? MOPT_KV_FP8 : MOPT_KV_INT8;
    c->algo = mopt_tq_parse(algo);
    c->algo_name = c->algo ? mopt_tq_names[c->algo] : "null";
    if (algo && !c->algo)
        return MOPT_FAIL(err, MOPT_E_UNSUPPORTED,
                         "%s: quant_algo \"%s\" is not supported (W4A16_AWQ, W4A8_AWQ, W8A16, W8A8_SQ_PER_CHANNEL_PER_TOKEN_PLUGIN, FP8, FP8_PER_CHANNEL_PER_TOKEN, NVFP4)",
                         file, algo);
    if ((c->algo == MOPT_TQ_W4A16_AWQ || c->algo == MOPT_TQ_W4A8_AWQ) && (c->group_size == 0 || c->group_size % 32))
        return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: quantization.group_size %lld is not a positive multiple of 32", file, (long long)gs);
    return MOPT_OK;
}

bool mopt_is_trtllm_config(const char *config_path) {
    json_t *j = mopt_json_load_file(config_path, NULL); /* a bad file is reported by whichever reader reads it */
    bool yes = j && json_is_string(json_object_get(j, "architecture")) && json_is_object(json_object_get(j, "mapping"));
    json_decref(j);
    return yes;
}

mopt_status mopt_import_trtllm(const char *dir, mopt_graph **out, mopt_error *err) {
    *out = NULL;
    char path[4096];
    mopt_path_join(path, sizeof path, dir, "config.json");
    json_t *cfg = mopt_json_load_file(path, err);
    if (!cfg) return MOPT_E_FORMAT;
    trt c = {.dir = dir, .err = err};
    const mopt_family *family = NULL;
    mopt_status st = config(&c, path, cfg, &family);
    json_decref(cfg);
    if (st) return st;
    c.ranks = calloc((size_t)c.tp, sizeof *c.ranks);
    if (!c.ranks) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    for (int r = 0; r < c.tp && !st; r++) {
        char name[64];
        snprintf(name, sizeof name, "rank%d.safetensors", r);
        if (!mopt_path_join(path, sizeof path, dir, name) || !mopt_file_exists(path))
            st = MOPT_FAIL(err, MOPT_E_FORMAT, "%s: tp_size is %d but %s is missing", dir, c.tp, name);
        else if (!(st = mopt_safetensors_read(path, &c.ranks[r].t, &c.ranks[r].n, err)) &&
                 !(c.ranks[r].used = calloc((size_t)(c.ranks[r].n ? c.ranks[r].n : 1), 1)))
            st = MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    }
    if (!st && !(c.g = mopt_graph_new(&c.a, err))) st = MOPT_E_NOMEM;
    if (!st && !(c.kv_scale = calloc((size_t)c.a.n_layers, sizeof *c.kv_scale))) st = MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    if (!st) st = tensors(&c, family);
    const mopt_build_src src = {"config.json", MOPT_NAMING_TRTLLM};
    if (!st) st = mopt_arch_build(c.g, &src, err);
    for (int32_t l = 0; l < c.a.n_layers && !st && c.kv != MOPT_KV_FLOAT; l++) /* K and V share the layer's one scale */
        if (c.kv_scale[l] != 0) {
            mopt_error e = {0};
            if ((st = mopt_graph_set_kv_quant(c.g, l, c.kv, 1, &c.kv_scale[l], &c.kv_scale[l], &e))) MOPT_FAIL(err, st, "%s: %s", dir, e.msg);
        }
    free(c.kv_scale);
    for (int r = 0; r < c.tp; r++) {
        for (int32_t i = 0; i < c.ranks[r].n; i++) mopt_tensor_free(c.ranks[r].t[i]);
        free(c.ranks[r].t);
        free(c.ranks[r].used);
    }
    free(c.ranks);
    if (st) {
        mopt_graph_free(c.g);
        return st;
    }
    *out = c.g;
    return MOPT_OK;
}
