/* export.gguf: a GGUF v3 file as llama.cpp loads it (ggml docs/gguf.md;
 * convert_hf_to_gguf.py and convert-llama2c-to-ggml for names and keys):
 * llama.* or gpt2.* hyper-parameters, the tokenizer as tokenizer.ggml.*, ggml
 * tensor names, 32-byte alignment. Weights go out as f32/f16/bf16 or a block
 * type (q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k): 2-D tensors take the
 * type, 1-D ones stay f32, output.weight takes q6_k under a block type other
 * than q8_0 (as llama-quantize does), and a row length the block does not divide falls back
 * as llama.cpp does (q4_k -> q5_0, q5_k -> q5_1, q6_k -> q8_0, then f16). A QINT linear that already is
 * Q4_0 or Q8_0 (symmetric, groups of 32) is written bit for bit; type=auto
 * writes such linears so and keeps every float tensor's dtype. HF LLaMA q/k
 * rows are permuted to GGUF's interleaved RoPE order; GPT-2's q/k/v are fused
 * into attn_qkv. The file is written beside the target and renamed into place. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "atomic_dir.h"
#include "export_plugin.h"
#include "mopt/ggml.h"
#include "mopt/quant.h"
#include "rope_order.h"

enum { KV_U32 = 4, KV_I32 = 5, KV_F32 = 6, KV_BOOL = 7, KV_STRING = 8, KV_ARRAY = 9 };

/* --- a growable byte buffer for the header ------------------------------------- */

typedef struct {
    uint8_t *p;
    size_t n, cap;
    int oom;
} buf;

static void put(buf *b, const void *d, size_t n) {
    if (b->oom) return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 1 << 16;
        while (cap < b->n + n) cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p, b->cap = cap;
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void put_u32(buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(buf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(buf *b, const char *s, size_t n) {
    put_u64(b, n);
    put(b, s, n);
}
static void kv_key(buf *b, const char *key, uint32_t type) {
    put_str(b, key, strlen(key));
    put_u32(b, type);
}
static void kv_str(buf *b, const char *key, const char *v) {
    kv_key(b, key, KV_STRING);
    put_str(b, v, strlen(v));
}
static void kv_u32(buf *b, const char *key, uint32_t v) {
    kv_key(b, key, KV_U32);
    put_u32(b, v);
}
static void kv_f32(buf *b, const char *key, float v) {
    kv_key(b, key, KV_F32);
    put(b, &v, 4);
}
static void kv_bool(buf *b, const char *key, int v) {
    kv_key(b, key, KV_BOOL);
    uint8_t c = (uint8_t)(v != 0);
    put(b, &c, 1);
}
static void kv_arr(buf *b, const char *key, uint32_t elem, uint64_t n) {
    kv_key(b, key, KV_ARRAY);
    put_u32(b, elem);
    put_u64(b, n);
}

/* --- the tensors to write ------------------------------------------------------------ */

typedef struct {
    char name[64];
    const mopt_tensor *src[3]; /* rows are the concatenation of these (GPT-2 qkv) */
    int n_src;
    int64_t rows, cols;
    int32_t ndim;
    int32_t head_dim; /* > 0: permute rows from rotate-half to interleaved RoPE order */
    int32_t type;     /* ggml type */
    uint64_t offset, nbytes;
} gten;

typedef struct {
    gten *t;
    int32_t n, cap;
} gtens;

static int add_t(gtens *l, const char *name, const mopt_tensor *a, const mopt_tensor *b, const mopt_tensor *c, int32_t hd) {
    if (!a) return 1; /* optional tensors */
    if (l->n == l->cap) {
        int32_t cap = l->cap ? l->cap * 2 : 64;
        gten *p = realloc(l->t, (size_t)cap * sizeof *p);
        if (!p) return 0;
        l->t = p, l->cap = cap;
    }
    gten *t = &l->t[l->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->src[0] = a, t->src[1] = b, t->src[2] = c;
    t->n_src = c ? 3 : 1;
    t->ndim = a->ndim == 1 ? 1 : 2;
    t->cols = a->ne[0];
    t->rows = (a->ndim == 1 ? 1 : a->ne[1]) * t->n_src;
    t->head_dim = hd;
    return 1;
}

static const mopt_tensor *T(const mopt_host_api *h, mopt_graph *g, const char *fmt, int l) {
    char name[MOPT_MAX_NAME];
    snprintf(name, sizeof name, fmt, l);
    return h->graph_find_tensor(g, name);
}

static int collect(const mopt_host_api *h, mopt_graph *g, gtens *l) {
    const mopt_arch *a = h->graph_arch(g);
    char n[64];
    if (!strcmp(a->family, "gpt2")) {
        int ok = add_t(l, "token_embd.weight", T(h, g, "transformer.wte.weight", 0), 0, 0, 0) &&
                 add_t(l, "position_embd.weight", T(h, g, "transformer.wpe.weight", 0), 0, 0, 0);
        static const char *const map[][2] = {{"attn_norm.weight", "ln_1.weight"}, {"attn_norm.bias", "ln_1.bias"},
                                             {"attn_output.weight", "attn.c_proj.weight"}, {"attn_output.bias", "attn.c_proj.bias"},
                                             {"ffn_norm.weight", "ln_2.weight"}, {"ffn_norm.bias", "ln_2.bias"},
                                             {"ffn_up.weight", "mlp.c_fc.weight"}, {"ffn_up.bias", "mlp.c_fc.bias"},
                                             {"ffn_down.weight", "mlp.c_proj.weight"}, {"ffn_down.bias", "mlp.c_proj.bias"}};
        for (int L = 0; ok && L < a->n_layers; L++) {
            char f[96];
            snprintf(n, sizeof n, "blk.%d.attn_qkv.weight", L);
            ok = add_t(l, n, T(h, g, "transformer.h.%d.attn.q_proj.weight", L), T(h, g, "transformer.h.%d.attn.k_proj.weight", L),
                       T(h, g, "transformer.h.%d.attn.v_proj.weight", L), 0);
            snprintf(n, sizeof n, "blk.%d.attn_qkv.bias", L);
            ok = ok && add_t(l, n, T(h, g, "transformer.h.%d.attn.q_proj.bias", L), T(h, g, "transformer.h.%d.attn.k_proj.bias", L),
                             T(h, g, "transformer.h.%d.attn.v_proj.bias", L), 0);
            for (size_t k = 0; ok && k < sizeof map / sizeof *map; k++) {
                snprintf(n, sizeof n, "blk.%d.%s", L, map[k][0]);
                snprintf(f, sizeof f, "transformer.h.%%d.%s", map[k][1]);
                ok = add_t(l, n, T(h, g, f, L), 0, 0, 0);
            }
        }
        return ok && add_t(l, "output_norm.weight", T(h, g, "transformer.ln_f.weight", 0), 0, 0, 0) &&
               add_t(l, "output_norm.bias", T(h, g, "transformer.ln_f.bias", 0), 0, 0, 0) &&
               add_t(l, "output.weight", a->tied_embeddings ? NULL : T(h, g, "lm_head.weight", 0), 0, 0, 0);
    }
    /* HF LLaMA rotates halves; GGUF stores Meta's interleaved order (llama2.c already is) */
    const int32_t hd = a->rope_style == MOPT_ROPE_INTERLEAVED ? 0 : a->head_dim;
    static const char *const map[][2] = {{"attn_norm", "input_layernorm"},  {"attn_q", "self_attn.q_proj"},
                                         {"attn_k", "self_attn.k_proj"},    {"attn_v", "self_attn.v_proj"},
                                         {"attn_output", "self_attn.o_proj"}, {"ffn_norm", "post_attention_layernorm"},
                                         {"ffn_gate", "mlp.gate_proj"},     {"ffn_up", "mlp.up_proj"},
                                         {"ffn_down", "mlp.down_proj"}};
    int ok = add_t(l, "token_embd.weight", T(h, g, "model.embed_tokens.weight", 0), 0, 0, 0);
    for (int L = 0; ok && L < a->n_layers; L++)
        for (size_t k = 0; ok && k < sizeof map / sizeof *map; k++)
            for (int bias = 0; ok && bias < 2; bias++) {
                char f[96];
                snprintf(n, sizeof n, "blk.%d.%s.%s", L, map[k][0], bias ? "bias" : "weight");
                snprintf(f, sizeof f, "model.layers.%%d.%s.%s", map[k][1], bias ? "bias" : "weight");
                const int qk = k == 1 || k == 2;
                ok = add_t(l, n, T(h, g, f, L), 0, 0, qk ? hd : 0);
            }
    return ok && add_t(l, "output_norm.weight", T(h, g, "model.norm.weight", 0), 0, 0, 0) &&
           add_t(l, "output.weight", a->tied_embeddings ? NULL : T(h, g, "lm_head.weight", 0), 0, 0, 0);
}

static int exact_blocks(const mopt_tensor *s, int32_t type);
static int is_block(int32_t t) { return t != MOPT_GGML_F32 && t != MOPT_GGML_F16 && t != MOPT_GGML_BF16; }

/* the ggml type of one tensor for the requested type (see the top comment);
 * auto (-1): float tensors keep their dtype, QINT ones that are Q4_0/Q8_0 keep
 * their blocks, other packed ones are dequantized to f16 */
static int32_t pick_type(const mopt_host_api *h, const gten *t, int32_t want) {
    if (t->ndim == 1) return MOPT_GGML_F32;
    int32_t ty = want;
    if (want < 0) {
        const mopt_tensor *s = t->src[0];
        if (s->dtype == MOPT_DTYPE_F32 || s->dtype == MOPT_DTYPE_F16 || s->dtype == MOPT_DTYPE_BF16)
            return s->dtype == MOPT_DTYPE_F32 ? MOPT_GGML_F32 : s->dtype == MOPT_DTYPE_F16 ? MOPT_GGML_F16 : MOPT_GGML_BF16;
        ty = exact_blocks(s, MOPT_GGML_Q4_0) ? MOPT_GGML_Q4_0 : exact_blocks(s, MOPT_GGML_Q8_0) ? MOPT_GGML_Q8_0 : MOPT_GGML_F16;
        return h->ggml_row_bytes(ty, t->cols) < 0 ? MOPT_GGML_F16 : ty;
    }
    if (!strcmp(t->name, "output.weight") && is_block(ty) && ty != MOPT_GGML_Q8_0) ty = MOPT_GGML_Q6_K; /* as llama-quantize */
    if (h->ggml_row_bytes(ty, t->cols) < 0 && ty == MOPT_GGML_Q4_K) ty = MOPT_GGML_Q5_0;
    if (h->ggml_row_bytes(ty, t->cols) < 0 && ty == MOPT_GGML_Q5_K) ty = MOPT_GGML_Q5_1;
    if (h->ggml_row_bytes(ty, t->cols) < 0 && ty == MOPT_GGML_Q6_K) ty = MOPT_GGML_Q8_0;
    if (h->ggml_row_bytes(ty, t->cols) < 0) ty = MOPT_GGML_F16;
    return ty;
}

/* source row of output row r: the tensor and its row, after the RoPE permutation */
static const mopt_tensor *src_row(const gten *t, int64_t r, int64_t *row) {
    const int64_t per = t->rows / t->n_src;
    const mopt_tensor *s = t->src[r / per];
    r %= per;
    if (t->head_dim > 0) r = rope_interleaved_to_half(r, t->head_dim);
    *row = r;
    return s;
}

/* A QINT row that is already the block format: symmetric, groups of 32, 4 or 8 bits. */
static int exact_blocks(const mopt_tensor *s, int32_t type) {
    if (s->dtype != MOPT_DTYPE_QINT || !(s->quant->flags & MOPT_QUANT_SYM) || s->quant->group_size != 32 || s->quant->g_idx)
        return 0;
    return (type == MOPT_GGML_Q4_0 && s->quant->bits == 4) || (type == MOPT_GGML_Q8_0 && s->quant->bits == 8);
}

static mopt_status write_row(const mopt_host_api *h, const gten *t, int64_t r, float *tmp, uint8_t *out, mopt_error *err) {
    int64_t row;
    const mopt_tensor *s = src_row(t, r, &row);
    if (exact_blocks(s, t->type)) {
        const int64_t nb = t->cols / 32, ng = s->quant->scale->ne[0];
        const int q4 = t->type == MOPT_GGML_Q4_0;
        for (int64_t b = 0; b < nb; b++) {
            uint8_t *blk = out + b * (q4 ? 18 : 34);
            memcpy(blk, (const uint16_t *)s->quant->scale->data + row * ng + b, 2);
            for (int j = 0; j < (q4 ? 16 : 32); j++) {
                if (q4) blk[2 + j] = (uint8_t)(h->qint_get(s, row, b * 32 + j) | h->qint_get(s, row, b * 32 + j + 16) << 4);
                else blk[2 + j] = (uint8_t)(int8_t)(h->qint_get(s, row, b * 32 + j) - 128);
            }
        }
        return MOPT_OK;
    }
    mopt_status st = h->weight_row_f32(s, row, tmp, err);
    return st ? st : h->ggml_quantize_row(t->type, tmp, t->cols, out, err);
}

/* --- metadata ------------------------------------------------------------------------ */

static int32_t file_type(int32_t want) {
    switch (want) {
    case MOPT_GGML_F32: return 0;
    case MOPT_GGML_F16: return 1;
    case MOPT_GGML_Q4_0: return 2;
    case MOPT_GGML_Q4_1: return 3;
    case MOPT_GGML_Q8_0: return 7;
    case MOPT_GGML_Q5_0: return 8;
    case MOPT_GGML_Q5_1: return 9;
    case MOPT_GGML_Q4_K: return 14; /* MOSTLY_Q4_K_S: no per-layer q6_k bumps */
    case MOPT_GGML_Q5_K: return 16; /* MOSTLY_Q5_K_S */
    case MOPT_GGML_Q6_K: return 18;
    case MOPT_GGML_BF16: return 32;
    default: return 0;
    }
}

static mopt_status tokenizer_kv(const mopt_host_api *h, const mopt_tokenizer *tok, const mopt_arch *a, buf *b, uint64_t *n_kv,
                                mopt_error *err) {
    const char *model = h->tokenizer_ggml_model(tok);
    if (!model)
        return h->error_set(err, MOPT_E_UNSUPPORTED, "export.gguf",
                            "this tokenizer (SentencePiece-style BPE from tokenizer.json) has no GGUF form mopt writes; export without it (tokenizer=false)");
    const int llama = !strcmp(model, "llama");
    const int32_t n = h->tokenizer_vocab_size(tok);
    kv_str(b, "tokenizer.ggml.model", model);
    ++*n_kv;
    if (!llama) {
        kv_str(b, "tokenizer.ggml.pre", "gpt-2");
        ++*n_kv;
    }
    kv_arr(b, "tokenizer.ggml.tokens", KV_STRING, (uint64_t)n);
    for (int32_t i = 0; i < n; i++) {
        const char *s = h->tokenizer_token_str(tok, i);
        s = s ? s : "";
        if (llama && (i == 1 || i == 2) && h->tokenizer_token_type(tok, i) == 3) { /* llama2.c's "\n<s>\n" */
            s = i == 1 ? "<s>" : "</s>";
            put_str(b, s, strlen(s));
            continue;
        }
        if (!llama) {
            put_str(b, s, strlen(s));
            continue;
        }
        /* SentencePiece pieces carry U+2581 where llama2.c stores a space */
        size_t len = 0;
        for (const char *c = s; *c; c++) len += *c == ' ' ? 3 : 1;
        put_u64(b, len);
        for (const char *c = s; *c; c++) put(b, *c == ' ' ? "\xe2\x96\x81" : c, *c == ' ' ? 3 : 1);
    }
    kv_arr(b, "tokenizer.ggml.token_type", KV_I32, (uint64_t)n);
    for (int32_t i = 0; i < n; i++) {
        int32_t ty = h->tokenizer_token_type(tok, i);
        put(b, &ty, 4);
    }
    *n_kv += 2;
    if (llama) {
        kv_arr(b, "tokenizer.ggml.scores", KV_F32, (uint64_t)n);
        for (int32_t i = 0; i < n; i++) {
            float s = h->tokenizer_score(tok, i);
            put(b, &s, 4);
        }
        kv_u32(b, "tokenizer.ggml.bos_token_id", 1);
        kv_u32(b, "tokenizer.ggml.eos_token_id", 2);
        kv_u32(b, "tokenizer.ggml.unknown_token_id", 0);
        kv_bool(b, "tokenizer.ggml.add_bos_token", 1);
        *n_kv += 5;
        return MOPT_OK;
    }
    const int32_t nm = h->tokenizer_merges(tok, NULL, NULL, 0);
    int32_t *L = malloc((size_t)(nm > 0 ? nm : 1) * 4), *R = malloc((size_t)(nm > 0 ? nm : 1) * 4);
    if (nm < 0 || !L || !R || h->tokenizer_merges(tok, L, R, nm) != nm) {
        free(L);
        free(R);
        return h->error_set(err, MOPT_E_NOMEM, "export.gguf", "out of memory");
    }
    kv_arr(b, "tokenizer.ggml.merges", KV_STRING, (uint64_t)nm);
    for (int32_t i = 0; i < nm; i++) {
        const char *l = h->tokenizer_token_str(tok, L[i]), *r = h->tokenizer_token_str(tok, R[i]);
        put_u64(b, strlen(l) + 1 + strlen(r));
        put(b, l, strlen(l));
        put(b, " ", 1);
        put(b, r, strlen(r));
    }
    free(L);
    free(R);
    ++*n_kv;
    if (a->bos_id >= 0) kv_u32(b, "tokenizer.ggml.bos_token_id", (uint32_t)a->bos_id), ++*n_kv;
    if (a->eos_id >= 0) kv_u32(b, "tokenizer.ggml.eos_token_id", (uint32_t)a->eos_id), ++*n_kv;
    kv_bool(b, "tokenizer.ggml.add_bos_token", 0);
    ++*n_kv;
    return MOPT_OK;
}

static void arch_kv(const mopt_arch *a, const char *name, int32_t want, int quantized, buf *b, uint64_t *n_kv) {
    const char *ar = a->family;
    char k[96];
    kv_str(b, "general.architecture", ar);
    kv_str(b, "general.name", name);
    kv_u32(b, "general.file_type", (uint32_t)file_type(want));
    kv_u32(b, "general.alignment", 32);
    *n_kv += 4;
    if (quantized) kv_u32(b, "general.quantization_version", 2), ++*n_kv;
#define KU(key, v) (snprintf(k, sizeof k, "%s." key, ar), kv_u32(b, k, (uint32_t)(v)), ++*n_kv)
    KU("context_length", a->max_ctx);
    KU("embedding_length", a->dim);
    KU("block_count", a->n_layers);
    KU("feed_forward_length", a->ffn_dim);
    KU("attention.head_count", a->n_heads);
    /* as llama.cpp's converter: the head size is explicit, so a model whose head_dim
     * is not hidden / heads (Mistral-Nemo, Qwen3, Gemma configs) loads as it was trained */
    KU("attention.key_length", a->head_dim);
    KU("attention.value_length", a->head_dim);
    if (!strcmp(ar, "llama")) {
        KU("attention.head_count_kv", a->n_kv_heads);
        KU("rope.dimension_count", a->head_dim);
        KU("vocab_size", a->vocab_size);
        snprintf(k, sizeof k, "llama.attention.layer_norm_rms_epsilon");
        kv_f32(b, k, a->norm_eps);
        kv_f32(b, "llama.rope.freq_base", a->rope_theta);
        *n_kv += 2;
    } else {
        kv_f32(b, "gpt2.attention.layer_norm_epsilon", a->norm_eps);
        ++*n_kv;
    }
#undef KU
}

/* --- the pass ---------------------------------------------------------------------- */

static int32_t type_from(const char *s) {
    static const struct {
        const char *n;
        int32_t t;
    } tab[] = {{"auto", -1}, {"f32", MOPT_GGML_F32},   {"f16", MOPT_GGML_F16},   {"bf16", MOPT_GGML_BF16}, {"q8_0", MOPT_GGML_Q8_0},
               {"q4_0", MOPT_GGML_Q4_0}, {"q4_1", MOPT_GGML_Q4_1}, {"q5_0", MOPT_GGML_Q5_0}, {"q5_1", MOPT_GGML_Q5_1},
               {"q4_k", MOPT_GGML_Q4_K}, {"q5_k", MOPT_GGML_Q5_K}, {"q6_k", MOPT_GGML_Q6_K}};
    for (size_t i = 0; i < sizeof tab / sizeof *tab; i++)
        if (!strcmp(s, tab[i].n)) return tab[i].t;
    return -1;
}

static mopt_status run(const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *g, const mopt_options *o, mopt_report *report,
                       mopt_error *err) {
    mopt_model *m = h->ctx_model(ctx);
    if (!m || !g) return h->error_set(err, MOPT_E_INVALID, "export.gguf", "needs a model");
    const mopt_arch *a = h->graph_arch(g);
    int32_t want = type_from(h->opt_string(o, "type"));
    gtens ts = {0};
    if (!collect(h, g, &ts)) return h->error_set(err, MOPT_E_NOMEM, "export.gguf", "out of memory");
    int quantized = 0, dequantized = 0;
    for (int32_t i = 0; i < ts.n; i++) {
        gten *t = &ts.t[i];
        t->type = pick_type(h, t, want);
        quantized |= is_block(t->type);
        dequantized += want < 0 && t->type == MOPT_GGML_F16 && t->src[0]->dtype >= MOPT_DTYPE_PACKED_FIRST;
    }
    if (dequantized)
        h->log(ctx, "%d packed tensors are not Q4_0/Q8_0 blocks (symmetric, groups of 32): written dequantized as f16", dequantized);
    if (want < 0) /* the file type names the linears' type */
        for (int32_t i = 0; i < ts.n; i++)
            if (strstr(ts.t[i].name, "blk.0.attn_q.weight") || strstr(ts.t[i].name, "blk.0.attn_qkv.weight")) want = ts.t[i].type;
    buf b = {0};
    uint64_t n_kv = 0;
    const char *mp = h->model_path(m), *slash = strrchr(mp, '/');
    arch_kv(a, slash && slash[1] ? slash + 1 : mp, want, quantized, &b, &n_kv);
    mopt_status st = MOPT_OK;
    const mopt_tokenizer *tok = h->model_tokenizer(m);
    if (tok && h->opt_bool(o, "tokenizer")) st = tokenizer_kv(h, tok, a, &b, &n_kv, err);
    /* tensor infos; offsets are relative to the 32-aligned data section */
    buf info = {0};
    uint64_t off = 0;
    int64_t max_cols = 1;
    for (int32_t i = 0; i < ts.n && !st; i++) {
        gten *t = &ts.t[i];
        t->nbytes = (uint64_t)h->ggml_row_bytes(t->type, t->cols) * (uint64_t)t->rows;
        t->offset = off;
        off += (t->nbytes + 31) / 32 * 32;
        if (t->cols > max_cols) max_cols = t->cols;
        put_str(&info, t->name, strlen(t->name));
        put_u32(&info, (uint32_t)t->ndim);
        put_u64(&info, (uint64_t)(t->ndim == 2 ? t->cols : t->cols * t->rows)); /* fused 1-D biases: rows of a vector */
        if (t->ndim == 2) put_u64(&info, (uint64_t)t->rows);
        put_u32(&info, (uint32_t)t->type);
        put_u64(&info, t->offset);
    }
    buf head = {0};
    put(&head, "GGUF", 4);
    put_u32(&head, 3);
    put_u64(&head, (uint64_t)ts.n);
    put_u64(&head, n_kv);
    put(&head, b.p, b.n);
    put(&head, info.p, info.n);
    static const uint8_t zeros[32] = {0};
    put(&head, zeros, (32 - head.n % 32) % 32);
    if (!st && (b.oom || info.oom || head.oom)) st = h->error_set(err, MOPT_E_NOMEM, "export.gguf", "out of memory");
    atomic_dir d;
    int began = 0;
    if (!st) st = atomic_dir_begin(h, ctx, &d, h->opt_string(o, "out"), h->opt_bool(o, "force"), 1, err), began = !st;
    FILE *f = NULL;
    char path[5000];
    if (!st && !(f = fopen(atomic_dir_path(&d, "model.gguf", path, sizeof path), "wb")))
        st = h->error_set(err, MOPT_E_IO, "export.gguf", "%s: cannot write: %s", path, strerror(errno));
    if (!st && fwrite(head.p, 1, head.n, f) != head.n)
        st = h->error_set(err, MOPT_E_IO, "export.gguf", "%s: write failed: %s", path, strerror(errno));
    float *tmp = malloc((size_t)max_cols * sizeof *tmp);
    uint8_t *row = malloc((size_t)h->ggml_row_bytes(MOPT_GGML_F32, max_cols));
    if (!st && (!tmp || !row)) st = h->error_set(err, MOPT_E_NOMEM, "export.gguf", "out of memory");
    uint64_t data_bytes = 0;
    for (int32_t i = 0; i < ts.n && !st; i++) {
        const gten *t = &ts.t[i];
        const int64_t rb = h->ggml_row_bytes(t->type, t->cols);
        for (int64_t r = 0; r < t->rows && !st; r++) {
            if (h->interrupted()) st = h->error_set(err, MOPT_E_INTERRUPTED, "export.gguf", "interrupted at tensor %s", t->name);
            if (!st) st = write_row(h, t, r, tmp, row, err);
            if (!st && fwrite(row, 1, (size_t)rb, f) != (size_t)rb)
                st = h->error_set(err, MOPT_E_IO, "export.gguf", "%s: write failed: %s", path, strerror(errno));
        }
        const size_t pad = (size_t)((32 - t->nbytes % 32) % 32);
        if (!st && pad && fwrite(zeros, 1, pad, f) != pad)
            st = h->error_set(err, MOPT_E_IO, "export.gguf", "%s: write failed: %s", path, strerror(errno));
        data_bytes += t->nbytes;
        h->progress(ctx, i + 1, ts.n);
    }
    if (f && (fflush(f) != 0 || fsync(fileno(f)) != 0) && !st)
        st = h->error_set(err, MOPT_E_IO, "export.gguf", "%s: cannot flush: %s", path, strerror(errno));
    if (f && fclose(f) != 0 && !st) st = h->error_set(err, MOPT_E_IO, "export.gguf", "%s: cannot close: %s", path, strerror(errno));
    free(tmp);
    free(row);
    free(b.p);
    free(info.p);
    free(head.p);
    if (!st) st = atomic_dir_commit_file(h, &d, "model.gguf", err);
    if (st && began) atomic_dir_abort(&d);
    if (!st) {
        int64_t params = 0;
        for (int32_t i = 0; i < ts.n; i++) params += ts.t[i].rows * ts.t[i].cols;
        h->report_artifact(report, "gguf", d.target);
        h->report_metric(report, "bytes", (double)(data_bytes + head.n));
        h->report_metric(report, "tensors", ts.n);
        h->report_metric(report, "bits_per_weight", 8.0 * (double)data_bytes / (double)params);
        h->report_string(report, "type", h->opt_string(o, "type"));
    }
    free(ts.t);
    return st;
}

static const char *const types[] = {"auto", "f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k", "q5_k", "q6_k", NULL};

static const mopt_opt_spec opts[] = {
    {"out", MOPT_OPT_STRING, MOPT_OPT_REQUIRED, "target .gguf file (written beside it, then renamed)", NULL, 0, -1, NULL},
    {"type", MOPT_OPT_ENUM, 0, "type of the 2-D weights (1-D stay f32; output.weight takes q6_k under a block type other than q8_0); auto keeps float dtypes and writes QINT int4/int8 sym g32 as q4_0/q8_0", "auto", 0, -1, types},
    {"force", MOPT_OPT_BOOL, 0, "replace an existing target", "false", 0, -1, NULL},
    {"tokenizer", MOPT_OPT_BOOL, 0, "store the tokenizer as tokenizer.ggml.*", "true", 0, -1, NULL},
};

const mopt_pass_desc export_gguf_pass = {
    .struct_size = sizeof(mopt_pass_desc),
    .kind = MOPT_PASS_EXPORT,
    .name = "export.gguf",
    .summary = "GGUF v3 for llama.cpp: llama/gpt2 keys, tokenizer, f32/f16/bf16/q8_0/q4_0/q4_1/q5_0/q5_1/q4_k/q5_k/q6_k, atomic",
    .opts = opts,
    .n_opts = sizeof opts / sizeof *opts,
    .run = run,
};
