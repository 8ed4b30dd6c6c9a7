/* TensorRT-LLM checkpoints (config.json with "architecture" and "mapping", one
 * rank{r}.safetensors per tensor-parallel rank): the ranks are stitched back
 * together (column-parallel linears by output rows, qkv by heads, row-parallel
 * ones by input columns; everything else is replicated) into mopt's names.
 * Quantized linears become packed tensors with the stored values:
 *   W4A16_AWQ (int4 pairs in I8 [out/2, in], weights_scaling_factor [out, in/gs],
 *   prequant_scaling_factor all ones), W8A16, W8A8 per token, FP8 (per tensor
 *   with a static activation scale, or per channel per token). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch_impl.h"
#include "base.h"
#include "json_util.h"
#include "model_impl.h"
#include "mopt/quant.h"
#include "safetensors.h"

typedef enum { TQ_NONE, TQ_W4A16_AWQ, TQ_W8A16, TQ_W8A8, TQ_FP8, TQ_FP8_PC } tq_algo;
typedef enum { REPLICATED, BY_ROWS, BY_COLS, BY_HEADS } split_kind;

typedef struct {
    mopt_tensor **t;
    int32_t n;
    uint8_t *used; /* [n]: read by some rule */
} rank_file;

typedef struct {
    const char *dir;
    rank_file *ranks;
    int tp;
    tq_algo algo;
    const char *algo_name; /* as config.json names it */
    int32_t group_size;
    mopt_arch a;
    mopt_graph *g;
    mopt_error *err;
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
    uint8_t *v;  /* quantized: one byte per value */
    float *f;    /* float: values */
    float *s;
    float act;
    mopt_dtype dt; /* float pieces: the stored dtype */
    int vec;       /* a 1-D tensor (norm weight, bias) */
} piece;

static void piece_free(piece *p) {
    free(p->v);
    free(p->f);
    free(p->s);
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
    const int int4 = c->algo == TQ_W4A16_AWQ;
    if (int4) p->rows *= 2;
    snprintf(name, sizeof name, "%s.weights_scaling_factor", base);
    const mopt_tensor *sc = rt(c, r, name);
    if (!sc || (sc->dtype != MOPT_DTYPE_F32 && sc->dtype != MOPT_DTYPE_F16 && sc->dtype != MOPT_DTYPE_BF16))
        return MOPT_FAIL(c->err, MOPT_E_FORMAT, "%s: rank%d.safetensors lacks a float %s", c->dir, r, name);
    const int64_t ns = mopt_tensor_nelements(sc);
    p->ng = int4 ? sc->ne[0] : 1;
    if ((int4 && (sc->ndim != 2 || sc->ne[1] != p->rows)) || (!int4 && ns != p->rows && ns != 1))
        return MOPT_FAIL(c->err, MOPT_E_FORMAT, "%s: %s does not match %lld rows", c->dir, name, (long long)p->rows);
    const mopt_dtype want = c->algo == TQ_FP8 || c->algo == TQ_FP8_PC ? MOPT_DTYPE_F8E4M3 : MOPT_DTYPE_I8;
    if (w->dtype != want)
        return MOPT_FAIL(c->err, MOPT_E_FORMAT, "%s: %s.weight is %s, the quant_algo stores %s", c->dir, base,
                         mopt_dtype_name(w->dtype), mopt_dtype_name(want));
    p->v = malloc((size_t)(p->rows * p->cols));
    p->s = malloc((size_t)(p->rows * p->ng) * sizeof *p->s);
    if (!p->v || !p->s) return MOPT_FAIL(c->err, MOPT_E_NOMEM, "out of memory");
    const uint8_t *b = w->data;
    for (int64_t i = 0; i < p->rows; i++)
        for (int64_t k = 0; k < p->cols; k++) {
            if (int4) p->v[i * p->cols + k] = (uint8_t)(((b[(i / 2) * p->cols + k] >> (4 * (i % 2))) & 15) ^ 8);
            else if (c->algo == TQ_W8A16) p->v[i * p->cols + k] = (uint8_t)((int8_t)b[i * p->cols + k] + 128);
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
    if (c->algo == TQ_FP8) {
        snprintf(name, sizeof name, "%s.activation_scaling_factor", base);
        const mopt_tensor *as = rt(c, r, name);
        if (!as || mopt_tensor_nelements(as) != 1 || mopt_tensor_read_f32(as, 0, 1, &p->act, c->err))
            return MOPT_FAIL(c->err, MOPT_E_FORMAT, "%s: FP8 needs a scalar %s", c->dir, name);
    }
    if (c->algo == TQ_W4A16_AWQ) {
        snprintf(name, sizeof name, "%s.prequant_scaling_factor", base);
        const mopt_tensor *pq = rt(c, r, name);
        float v = 1;
        for (int64_t i = 0; pq && i < mopt_tensor_nelements(pq) && v == 1; i++)
            if (mopt_tensor_read_f32(pq, i, 1, &v, c->err)) return MOPT_E_FORMAT;
        if (v != 1)
            return MOPT_FAIL(c->err, MOPT_E_UNSUPPORTED, "%s: %s is not all ones (an explicit activation multiply mopt does not run)",
                             c->dir, name);
    }
    return MOPT_OK;
}

/* Whole-model values of a linear from its rank pieces. */
static mopt_status gather(const trt *c, const char *base, int is_vec, split_kind split, piece *all) {
    piece *ps = calloc((size_t)c->tp, sizeof *ps);
    if (!ps) return MOPT_FAIL(c->err, MOPT_E_NOMEM, "out of memory");
    mopt_status st = MOPT_OK;
    const int n = split == REPLICATED ? 1 : c->tp;
    for (int r = 0; r < n && !st; r++) st = read_piece(c, r, base, is_vec, &ps[r]);
    for (int r = n; r < c->tp; r++) { /* replicated: every rank holds the same copy; rank 0's is read */
        char name[MOPT_MAX_NAME + 48];
        snprintf(name, sizeof name, "%s.%s", base, is_vec ? "bias" : "weight");
        rt(c, r, name);
    }
    for (int r = 1; r < n && !st; r++)
        if (ps[r].rows != ps[0].rows || ps[r].cols != ps[0].cols || ps[r].ng != ps[0].ng || !ps[r].f != !ps[0].f)
            st = MOPT_FAIL(c->err, MOPT_E_FORMAT, "%s: %s differs in shape between rank0 and rank%d", c->dir, base, r);
    /* by heads: each rank holds its q, k and v heads; check before any row is placed */
    const int64_t hd = c->a.head_dim, qr = (int64_t)c->a.n_heads * hd / c->tp, kr = (int64_t)c->a.n_kv_heads * hd / c->tp;
    if (!st && split == BY_HEADS && ps[0].rows != qr + 2 * kr)
        st = MOPT_FAIL(c->err, MOPT_E_FORMAT,
                       "%s: %s.%s has %lld rows per rank, but %d heads and %d kv heads of head_size %lld over tp_size %d need %lld",
                       c->dir, base, is_vec ? "bias" : "weight", (long long)ps[0].rows, c->a.n_heads, c->a.n_kv_heads,
                       (long long)hd, c->tp, (long long)(qr + 2 * kr));
    if (st) goto done;
    const int by_cols = split == BY_COLS && !is_vec;
    memset(all, 0, sizeof *all);
    all->rows = ps[0].rows * (split == BY_ROWS || split == BY_HEADS ? n : 1);
    all->cols = ps[0].cols * (by_cols ? n : 1);
    all->ng = ps[0].ng * (by_cols && c->algo == TQ_W4A16_AWQ ? n : 1);
    all->act = ps[0].act;
    all->dt = ps[0].dt;
    all->vec = ps[0].vec;
    const int64_t ngs = ps[0].ng ? ps[0].ng : 1, ngall = all->ng ? all->ng : 1;
    if (ps[0].f) all->f = malloc((size_t)(all->rows * all->cols) * sizeof *all->f);
    else {
        all->v = malloc((size_t)(all->rows * all->cols));
        all->s = malloc((size_t)(all->rows * ngall) * sizeof *all->s);
    }
    if (!(all->f || (all->v && all->s))) {
        st = MOPT_FAIL(c->err, MOPT_E_NOMEM, "out of memory");
        goto done;
    }
    /* by heads: rank r holds [q_r; k_r; v_r]; the whole is [q_0..q_n; k_0..; v_0..] */
    for (int r = 0; r < n; r++)
        for (int64_t i = 0; i < ps[r].rows; i++) {
            int64_t row = i, col0 = 0;
            if (split == BY_ROWS) row = r * ps[r].rows + i;
            if (split == BY_HEADS)
                row = i < qr ? r * qr + i : i < qr + kr ? c->tp * qr + r * kr + (i - qr) : c->tp * (qr + kr) + r * kr + (i - qr - kr);
            if (by_cols) col0 = r * ps[r].cols;
            if (ps[r].f) {
                memcpy(all->f + row * all->cols + col0, ps[r].f + i * ps[r].cols, (size_t)ps[r].cols * sizeof *all->f);
                continue;
            }
            memcpy(all->v + row * all->cols + col0, ps[r].v + i * ps[r].cols, (size_t)ps[r].cols);
            if (by_cols && c->algo == TQ_W4A16_AWQ)
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
    } else if (c->algo == TQ_W4A16_AWQ || c->algo == TQ_W8A16) {
        const int32_t gs = c->algo == TQ_W8A16 ? -1 : c->group_size > 0 ? c->group_size : (int32_t)((cols + ng - 1) / ng);
        if (mopt_qint_n_groups(cols, gs) != ng)
            return MOPT_FAIL(c->err, MOPT_E_FORMAT,
                             "%s: %s.weights_scaling_factor has %lld groups per row, but quantization.group_size %d over %lld columns needs %lld",
                             c->dir, src, (long long)ng, gs, (long long)cols, (long long)mopt_qint_n_groups(cols, gs));
        t = mopt_qint_pack(name, n, cols, c->algo == TQ_W8A16 ? 8 : 4, gs, p->v + r0 * cols, p->s + r0 * ng, NULL, NULL, c->err);
    } else if (c->algo == TQ_W8A8) {
        t = mopt_w8a8_pack(name, n, cols, (const int8_t *)(p->v + r0 * cols), p->s + r0, c->err);
    } else {
        const int per_tensor = p->ng == 0;
        t = mopt_fp8_pack(name, n, cols, p->v + r0 * cols, p->s + r0, per_tensor ? 1 : n,
                          c->algo == TQ_FP8 ? MOPT_QUANT_ACT_STATIC : MOPT_QUANT_ACT_PER_TOKEN, p->act, c->err);
    }
    if (!t) return c->err && c->err->code ? (mopt_status)c->err->code : MOPT_E_NOMEM;
    mopt_status st = mopt_graph_add_tensor(c->g, t, c->err);
    if (st) mopt_tensor_free(t);
    return st;
}

/* TRT-LLM name (without .weight/.bias) -> mopt names; qkv splits into three */
static mopt_status linear(trt *c, const char *base, int is_vec, split_kind split, const char *const *names, int n_names) {
    char b[MOPT_MAX_NAME + 160];
    snprintf(b, sizeof b, "%s.%s", base, is_vec ? "bias" : "weight");
    if (!rt(c, 0, b)) return MOPT_OK; /* optional (biases, lm_head when tied) */
    piece all;
    mopt_status st = gather(c, base, is_vec, split, &all);
    if (st) return st;
    const int64_t q = (int64_t)c->a.n_heads * c->a.head_dim, kv = (int64_t)c->a.n_kv_heads * c->a.head_dim;
    if (n_names == 3 && all.rows != q + 2 * kv)
        st = MOPT_FAIL(c->err, MOPT_E_FORMAT, "%s: %s has %lld rows, the heads need %lld", c->dir, b, (long long)all.rows,
                       (long long)(q + 2 * kv));
    const int64_t r0[3] = {0, q, q + kv}, nr[3] = {q, kv, kv};
    for (int k = 0; k < n_names && !st; k++) {
        char name[MOPT_MAX_NAME];
        snprintf(name, sizeof name, "%s.%s", names[k], is_vec ? "bias" : "weight");
        st = install(c, &all, n_names == 3 ? r0[k] : 0, n_names == 3 ? nr[k] : all.rows, base, name);
    }
    piece_free(&all);
    return st;
}

/* TensorRT-LLM's per-layer names and mopt's, with how tensor parallelism splits them */
static const struct {
    const char *trt, *llama, *gpt2;
    split_kind split;
} layer_map[] = {{"input_layernorm", "input_layernorm", "ln_1", REPLICATED},
                 {"attention.dense", "self_attn.o_proj", "attn.c_proj", BY_COLS},
                 {"post_layernorm", "post_attention_layernorm", "ln_2", REPLICATED},
                 {"mlp.fc", "mlp.gate_proj", "mlp.c_fc", BY_ROWS},
                 {"mlp.gate", "mlp.up_proj", NULL, BY_ROWS},
                 {"mlp.proj", "mlp.down_proj", "mlp.c_proj", BY_COLS}};

static mopt_status tensors(trt *c) {
    const int gpt2 = !strcmp(c->a.family, "gpt2");
    mopt_status st = MOPT_OK;
    const char *emb[1] = {gpt2 ? "transformer.wte" : "model.embed_tokens"};
    st = linear(c, "transformer.vocab_embedding", 0, REPLICATED, emb, 1);
    const char *pos[1] = {"transformer.wpe"};
    if (!st && gpt2) st = linear(c, "transformer.position_embedding", 0, REPLICATED, pos, 1);
    for (int l = 0; l < c->a.n_layers && !st; l++)
        for (int vec = 0; vec < 2 && !st; vec++) {
            char base[128], n0[128], n1[128], n2[128];
            for (size_t k = 0; k < sizeof layer_map / sizeof *layer_map && !st; k++) {
                const char *m = gpt2 ? layer_map[k].gpt2 : layer_map[k].llama;
                if (!m) continue;
                snprintf(base, sizeof base, "transformer.layers.%d.%s", l, layer_map[k].trt);
                snprintf(n0, sizeof n0, gpt2 ? "transformer.h.%d.%s" : "model.layers.%d.%s", l, m);
                const char *names[1] = {n0};
                /* a row-parallel bias is whole on every rank */
                st = linear(c, base, vec, vec && layer_map[k].split == BY_COLS ? REPLICATED : layer_map[k].split, names, 1);
            }
            snprintf(base, sizeof base, "transformer.layers.%d.attention.qkv", l);
            const char *pre = gpt2 ? "transformer.h.%d.attn.%s" : "model.layers.%d.self_attn.%s";
            snprintf(n0, sizeof n0, pre, l, "q_proj");
            snprintf(n1, sizeof n1, pre, l, "k_proj");
            snprintf(n2, sizeof n2, pre, l, "v_proj");
            const char *qkv[3] = {n0, n1, n2};
            if (!st) st = linear(c, base, vec, BY_HEADS, qkv, 3);
        }
    const char *lnf[1] = {gpt2 ? "transformer.ln_f" : "model.norm"};
    if (!st) st = linear(c, "transformer.ln_f", 0, REPLICATED, lnf, 1);
    if (!st && gpt2) st = linear(c, "transformer.ln_f", 1, REPLICATED, lnf, 1);
    const char *lm[1] = {"lm_head"};
    if (!st && !c->a.tied_embeddings) st = linear(c, "lm_head", 0, BY_ROWS, lm, 1);
    for (int r = 0; r < c->tp && c->a.tied_embeddings; r++) rt(c, r, "lm_head.weight"); /* TensorRT-LLM writes the tied copy too */
    /* what no rule above read: a layer beyond the count, or a tensor of another scheme */
    for (int r = 0; r < c->tp && !st; r++)
        for (int32_t i = 0; i < c->ranks[r].n && !st; i++)
            if (!c->ranks[r].used[i])
                st = MOPT_FAIL(c->err, MOPT_E_FORMAT, "%s: rank%d.safetensors: tensor %s is not part of a %s model of %d layers with quant_algo %s",
                               c->dir, r, c->ranks[r].t[i]->name, c->a.family, c->a.n_layers, c->algo_name);
    return st;
}

/* mopt name -> TensorRT-LLM name, for messages */
static const char *trt_name(const char *family, const char *hf, char *buf, size_t cap) {
    const int gpt2 = !strcmp(family, "gpt2");
    int l, pos = 0;
    char part[96];
    static const char *const top[][3] = {{"model.embed_tokens.weight", "transformer.wte.weight", "transformer.vocab_embedding.weight"},
                                         {"model.norm.weight", "transformer.ln_f.weight", "transformer.ln_f.weight"},
                                         {"", "transformer.ln_f.bias", "transformer.ln_f.bias"},
                                         {"", "transformer.wpe.weight", "transformer.position_embedding.weight"},
                                         {"lm_head.weight", "lm_head.weight", "lm_head.weight"}};
    for (size_t i = 0; i < sizeof top / sizeof *top; i++)
        if (!strcmp(hf, top[i][gpt2])) return snprintf(buf, cap, "%s", top[i][2]), buf;
    if (sscanf(hf, gpt2 ? "transformer.h.%d.%95[a-z_.]%n" : "model.layers.%d.%95[a-z_.]%n", &l, part, &pos) != 2 || hf[pos]) return NULL;
    char *kind = strrchr(part, '.');
    if (!kind) return NULL;
    *kind++ = 0;
    if (strstr(part, gpt2 ? "attn." : "self_attn.") == part && strstr(part, "_proj") && strcmp(part, "self_attn.o_proj"))
        return snprintf(buf, cap, "transformer.layers.%d.attention.qkv.%s", l, kind), buf;
    for (size_t k = 0; k < sizeof layer_map / sizeof *layer_map; k++) {
        const char *m = gpt2 ? layer_map[k].gpt2 : layer_map[k].llama;
        if (m && !strcmp(part, m)) return snprintf(buf, cap, "transformer.layers.%d.%s.%s", l, layer_map[k].trt, kind), buf;
    }
    return NULL;
}

static const char *llama_trt_name(const char *hf, char *buf, size_t cap) { return trt_name("llama", hf, buf, cap); }
static const char *gpt2_trt_name(const char *hf, char *buf, size_t cap) { return trt_name("gpt2", hf, buf, cap); }

/* --- config ------------------------------------------------------------------- */

static mopt_status config(trt *c, const char *file, json_t *cfg) {
    mopt_error *err = c->err;
    const char *arch = NULL, *act = NULL, *pe = NULL;
    if (!mopt_json_get_str_opt(cfg, "architecture", &arch, file, err)) return MOPT_E_FORMAT;
    mopt_arch *a = &c->a;
    memset(a, 0, sizeof *a);
    const int gpt2 = arch && !strcmp(arch, "GPTForCausalLM");
    if (!arch || (!gpt2 && strcmp(arch, "LlamaForCausalLM") && strcmp(arch, "MistralForCausalLM")))
        return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: TensorRT-LLM architecture \"%s\" is not supported (LlamaForCausalLM, GPTForCausalLM)",
                         file, arch ? arch : "(missing)");
    snprintf(a->family, sizeof a->family, "%s", gpt2 ? "gpt2" : "llama");
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
    if (gpt2) {
        a->norm = MOPT_NORM_LAYER, a->mlp = MOPT_MLP_GELU, a->qkv_bias = a->o_bias = a->mlp_bias = 1;
    } else {
        if (pe && strcmp(pe, "rope_gpt_neox"))
            return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: position_embedding_type \"%s\" (LLaMA needs rope_gpt_neox)", file, pe);
        a->norm = MOPT_NORM_RMS, a->mlp = MOPT_MLP_SWIGLU, a->rope_style = MOPT_ROPE_HALF;
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
    static const struct {
        const char *n;
        tq_algo a;
    } algos[] = {{"W4A16_AWQ", TQ_W4A16_AWQ}, {"W8A16", TQ_W8A16}, {"W8A8_SQ_PER_CHANNEL_PER_TOKEN_PLUGIN", TQ_W8A8}, {"FP8", TQ_FP8},
                 {"FP8_PER_CHANNEL_PER_TOKEN", TQ_FP8_PC}};
    c->algo = TQ_NONE;
    c->algo_name = "null";
    for (size_t i = 0; algo && i < sizeof algos / sizeof *algos; i++)
        if (!strcmp(algo, algos[i].n)) c->algo = algos[i].a, c->algo_name = algos[i].n;
    if (algo && !c->algo)
        return MOPT_FAIL(err, MOPT_E_UNSUPPORTED,
                         "%s: quant_algo \"%s\" is not supported (W4A16_AWQ, W8A16, W8A8_SQ_PER_CHANNEL_PER_TOKEN_PLUGIN, FP8, FP8_PER_CHANNEL_PER_TOKEN)",
                         file, algo);
    if (c->algo == TQ_W4A16_AWQ && (c->group_size == 0 || c->group_size % 32))
        return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: quantization.group_size %lld is not a positive multiple of 32", file, (long long)gs);
    return MOPT_OK;
}

bool mopt_is_trtllm_config(const char *config_path) {
    json_error_t je;
    json_t *j = json_load_file(config_path, 0, &je);
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
    mopt_status st = config(&c, path, cfg);
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
    if (!st) st = tensors(&c);
    const mopt_build_src src = {"config.json", !strcmp(c.a.family, "gpt2") ? gpt2_trt_name : llama_trt_name};
    if (!st) st = mopt_arch_build(c.g, &src, err);
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
