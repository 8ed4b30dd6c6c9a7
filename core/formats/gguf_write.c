/* GGUF v3 writing (gguf.c reads; ggml docs/gguf.md, llama.cpp's
 * convert_hf_to_gguf.py for keys and names): the family's hyper-parameters
 * under general.architecture's prefix, the tokenizer as tokenizer.ggml.*, the
 * family table's ggml tensor names, 32-byte alignment. 2-D weights take the
 * requested type, 1-D ones stay f32; output.weight (a tied model's
 * token_embd) takes q6_k under a block type other than q8_0, learned positions
 * stay float, and the K_S / K_M mixes give attn_v, ffn_down and attn_qkv more
 * bits where llama-quantize does (mix_type), and a row length the block
 * does not divide falls back as llama.cpp does (q4_k -> q5_0, q5_k -> q5_1,
 * q6_k -> q8_0, then f16). A QINT linear that already is Q4_0 or Q8_0
 * (symmetric, groups of 32), and a KQUANT one of the type, is written bit for
 * bit; type auto writes such linears so and keeps every float tensor's dtype. Rows go out in the format's
 * RoPE order and fused as the table says (mopt_file_tensors). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arch_impl.h"
#include "base.h"
#include "ggml.h"
#include "gguf.h"
#include "mopt/fileio.h"
#include "mopt/formats.h"
#include "mopt/interrupt.h"
#include "mopt/quant.h"
#include "strbuf.h"

/* --- key/values ------------------------------------------------------------------------ */

static void put_u32(sbuf *b, uint32_t v) { sb_put(b, &v, 4); }
static void put_u64(sbuf *b, uint64_t v) { sb_put(b, &v, 8); }
static void put_str(sbuf *b, const char *s, size_t n) {
    put_u64(b, n);
    sb_put(b, s, n);
}

typedef struct {
    sbuf b;
    uint64_t n; /* key/values written */
} kvs;

static void kv_key(kvs *k, const char *key, uint32_t type) {
    put_str(&k->b, key, strlen(key));
    put_u32(&k->b, type);
    k->n++;
}
static void kv_str(kvs *k, const char *key, const char *v) {
    kv_key(k, key, GGUF_STRING);
    put_str(&k->b, v, strlen(v));
}
static void kv_u32(kvs *k, const char *key, uint32_t v) {
    kv_key(k, key, GGUF_U32);
    put_u32(&k->b, v);
}
static void kv_f32(kvs *k, const char *key, float v) {
    kv_key(k, key, GGUF_F32);
    sb_put(&k->b, &v, 4);
}
static void kv_bool(kvs *k, const char *key, int v) {
    kv_key(k, key, GGUF_BOOL);
    uint8_t c = (uint8_t)(v != 0);
    sb_put(&k->b, &c, 1);
}
static void kv_arr(kvs *k, const char *key, uint32_t elem, uint64_t n) {
    kv_key(k, key, GGUF_ARRAY);
    put_u32(&k->b, elem);
    put_u64(&k->b, n);
}

/* The types a file can be asked for: the linears' ggml type, llama-quantize's per-tensor mix (none: every 2-D
 * weight takes the type, output.weight aside), and llama.cpp's general.file_type (LLAMA_FTYPE_*). */
typedef enum { MIX_NONE, MIX_Q2_K, MIX_Q2_K_S, MIX_Q3_K_S, MIX_Q3_K_M, MIX_Q3_K_L, MIX_Q4_K_S, MIX_Q4_K_M, MIX_Q5_K_S, MIX_Q5_K_M } gguf_mix;
typedef struct {
    const char *name;
    int32_t type, mix, file_type;
} type_choice;
static const type_choice choices[] = {
    {"f32", MOPT_GGML_F32, MIX_NONE, 0},       {"f16", MOPT_GGML_F16, MIX_NONE, 1},         {"bf16", MOPT_GGML_BF16, MIX_NONE, 32},
    {"q8_0", MOPT_GGML_Q8_0, MIX_NONE, 7},     {"q4_0", MOPT_GGML_Q4_0, MIX_NONE, 2},       {"q4_1", MOPT_GGML_Q4_1, MIX_NONE, 3},
    {"q5_0", MOPT_GGML_Q5_0, MIX_NONE, 8},     {"q5_1", MOPT_GGML_Q5_1, MIX_NONE, 9},       {"q4_k", MOPT_GGML_Q4_K, MIX_NONE, 14},
    {"q5_k", MOPT_GGML_Q5_K, MIX_NONE, 16},    {"q6_k", MOPT_GGML_Q6_K, MIX_NONE, 18},      {"q4_k_s", MOPT_GGML_Q4_K, MIX_Q4_K_S, 14},
    {"q4_k_m", MOPT_GGML_Q4_K, MIX_Q4_K_M, 15}, {"q5_k_s", MOPT_GGML_Q5_K, MIX_Q5_K_S, 16}, {"q5_k_m", MOPT_GGML_Q5_K, MIX_Q5_K_M, 17},
    {"q3_k", MOPT_GGML_Q3_K, MIX_NONE, 11},    {"q3_k_s", MOPT_GGML_Q3_K, MIX_Q3_K_S, 11},  {"q3_k_m", MOPT_GGML_Q3_K, MIX_Q3_K_M, 12},
    {"q3_k_l", MOPT_GGML_Q3_K, MIX_Q3_K_L, 13}, /* llama-quantize's Q2_K is a mix (there is no pure one): so is mopt's q2_k */
    {"q2_k", MOPT_GGML_Q2_K, MIX_Q2_K, 10},    {"q2_k_s", MOPT_GGML_Q2_K, MIX_Q2_K_S, 21},
};

/* llama.cpp's general.file_type for the linears' type, when no mix was asked for (type auto) */
static int32_t file_type(int32_t type) {
    for (size_t i = 0; i < sizeof choices / sizeof *choices; i++)
        if (choices[i].type == type && (choices[i].mix == MIX_NONE || type == MOPT_GGML_Q2_K)) return choices[i].file_type;
    return 0;
}

/* The family's hyper-parameters. Rotary families also record their kv heads,
 * RoPE and vocabulary as llama.cpp's LLaMA converter does. */
static void arch_kv(kvs *k, const mopt_family *f, const mopt_arch *a, const char *name, int32_t ftype, int quantized) {
    const char *ar = f->gguf_arch;
    char key[96];
    kv_str(k, "general.architecture", ar);
    kv_str(k, "general.name", name);
    kv_u32(k, "general.file_type", (uint32_t)ftype);
    kv_u32(k, "general.alignment", 32);
    if (quantized) kv_u32(k, "general.quantization_version", 2);
#define KU(sub, v) (snprintf(key, sizeof key, "%s." sub, ar), kv_u32(k, key, (uint32_t)(v)))
#define KF(sub, v) (snprintf(key, sizeof key, "%s." sub, ar), kv_f32(k, key, (v)))
    KU("context_length", a->max_ctx);
    KU("embedding_length", a->dim);
    KU("block_count", a->n_layers);
    KU("feed_forward_length", a->ffn_dim);
    KU("attention.head_count", a->n_heads);
    /* the head size is explicit, so a model whose head_dim is not hidden / heads
     * (Mistral-Nemo, Qwen3, Gemma configs) loads as it was trained */
    KU("attention.key_length", a->head_dim);
    KU("attention.value_length", a->head_dim);
    if (mopt_family_has_rope(f)) {
        KU("attention.head_count_kv", a->n_kv_heads);
        KU("rope.dimension_count", a->head_dim);
        KU("vocab_size", a->vocab_size);
    }
    if (a->norm == MOPT_NORM_RMS) KF("attention.layer_norm_rms_epsilon", a->norm_eps);
    if (mopt_family_has_rope(f)) KF("rope.freq_base", a->rope_theta);
    if (a->norm != MOPT_NORM_RMS) KF("attention.layer_norm_epsilon", a->norm_eps);
#undef KU
#undef KF
}

/* tokenizer.ggml.*: "llama" (SentencePiece pieces with scores, U+2581 for
 * spaces) or "gpt2" (byte-level BPE with merges), as gguf_model.c reads them */
static mopt_status tokenizer_kv(kvs *k, const mopt_tokenizer *tok, const mopt_arch *a, mopt_error *err) {
    const char *model = mopt_tokenizer_ggml_model(tok);
    if (!model)
        return MOPT_FAIL(err, MOPT_E_UNSUPPORTED,
                         "this tokenizer (SentencePiece-style BPE from tokenizer.json) has no GGUF form mopt writes; export without it (tokenizer=false)");
    const int spm = !strcmp(model, "llama");
    /* llama.cpp takes the vocabulary's size from the token list and checks the
     * embedding against it: a tokenizer shorter than the embedding (a synthetic
     * model's byte-level one, a padded vocabulary) is padded with unused
     * "[PAD<id>]" tokens, as convert_hf_to_gguf.py pads it */
    const int32_t ntok = mopt_tokenizer_vocab_size(tok), n = a->vocab_size > ntok ? (int32_t)a->vocab_size : ntok;
    kv_str(k, "tokenizer.ggml.model", model);
    if (mopt_tokenizer_chat_template(tok)) /* as convert_hf_to_gguf.py writes it, for llama.cpp's chat */
        kv_str(k, "tokenizer.chat_template", mopt_tokenizer_chat_template(tok));
    if (!spm) kv_str(k, "tokenizer.ggml.pre", "gpt-2");
    kv_arr(k, "tokenizer.ggml.tokens", GGUF_STRING, (uint64_t)n);
    for (int32_t i = 0; i < n; i++) {
        if (i >= ntok) {
            char pad[32];
            snprintf(pad, sizeof pad, "[PAD%d]", (int)i);
            put_str(&k->b, pad, strlen(pad));
            continue;
        }
        const char *s = mopt_tokenizer_token_str(tok, i);
        s = s ? s : "";
        if (spm && (i == 1 || i == 2) && mopt_tokenizer_token_type(tok, i) == 3) { /* llama2.c's "\n<s>\n" */
            s = i == 1 ? "<s>" : "</s>";
            put_str(&k->b, s, strlen(s));
            continue;
        }
        if (!spm) {
            put_str(&k->b, s, strlen(s));
            continue;
        }
        size_t len = 0; /* SentencePiece pieces carry U+2581 where llama2.c stores a space */
        for (const char *c = s; *c; c++) len += *c == ' ' ? 3 : 1;
        put_u64(&k->b, len);
        for (const char *c = s; *c; c++) sb_put(&k->b, *c == ' ' ? "\xe2\x96\x81" : c, *c == ' ' ? 3 : 1);
    }
    kv_arr(k, "tokenizer.ggml.token_type", GGUF_I32, (uint64_t)n);
    for (int32_t i = 0; i < n; i++) {
        int32_t ty = i < ntok ? mopt_tokenizer_token_type(tok, i) : 5; /* LLAMA_TOKEN_TYPE_UNUSED */
        sb_put(&k->b, &ty, 4);
    }
    if (spm) {
        kv_arr(k, "tokenizer.ggml.scores", GGUF_F32, (uint64_t)n);
        for (int32_t i = 0; i < n; i++) {
            float s = i < ntok ? mopt_tokenizer_score(tok, i) : -1000.0f;
            sb_put(&k->b, &s, 4);
        }
        kv_u32(k, "tokenizer.ggml.bos_token_id", 1);
        kv_u32(k, "tokenizer.ggml.eos_token_id", 2);
        kv_u32(k, "tokenizer.ggml.unknown_token_id", 0);
        kv_bool(k, "tokenizer.ggml.add_bos_token", 1);
        return MOPT_OK;
    }
    const int32_t nm = mopt_tokenizer_merges(tok, NULL, NULL, 0);
    int32_t *L = malloc((size_t)(nm > 0 ? nm : 1) * 4), *R = malloc((size_t)(nm > 0 ? nm : 1) * 4);
    if (nm < 0 || !L || !R || mopt_tokenizer_merges(tok, L, R, nm) != nm) {
        free(L);
        free(R);
        return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    }
    kv_arr(k, "tokenizer.ggml.merges", GGUF_STRING, (uint64_t)nm);
    for (int32_t i = 0; i < nm; i++) {
        const char *l = mopt_tokenizer_token_str(tok, L[i]), *r = mopt_tokenizer_token_str(tok, R[i]);
        put_u64(&k->b, strlen(l) + 1 + strlen(r));
        sb_put(&k->b, l, strlen(l));
        sb_put(&k->b, " ", 1);
        sb_put(&k->b, r, strlen(r));
    }
    free(L);
    free(R);
    if (a->bos_id >= 0) kv_u32(k, "tokenizer.ggml.bos_token_id", (uint32_t)a->bos_id);
    if (a->eos_id >= 0) kv_u32(k, "tokenizer.ggml.eos_token_id", (uint32_t)a->eos_id);
    kv_bool(k, "tokenizer.ggml.add_bos_token", 0);
    return MOPT_OK;
}

/* --- tensors ----------------------------------------------------------------------------- */

typedef struct {
    mopt_file_tensor ft;
    const float *qw; /* importance weights [row_len], or NULL */
    int32_t type; /* ggml type */
    int64_t row_len, n_rows; /* as written: a 1-D tensor is one row of all its values */
    uint64_t offset, nbytes;
} gten;

/* a file tensor as written: a 1-D tensor is one row of all its values */
static gten gten_of(const mopt_file_tensor *ft) {
    gten t = {.ft = *ft};
    t.row_len = ft->ndim == 1 ? ft->rows : ft->cols;
    t.n_rows = ft->ndim == 1 ? 1 : ft->rows;
    return t;
}

static int is_block(int32_t t) { return t != MOPT_GGML_F32 && t != MOPT_GGML_F16 && t != MOPT_GGML_BF16; }

/* The ggml type of a KQUANT tensor's blocks. */
/* A packed tensor whose rows already are the block format: KQUANT blocks of
 * the type, or QINT levels that are Q4_0/Q8_0 (symmetric, groups of 32, 4 or 8 bits). */
static int exact_blocks(const mopt_tensor *s, int32_t type) {
    if (s->dtype == MOPT_DTYPE_KQUANT) return mopt_ggml_kquant_type(s->quant->bits) == type;
    if (s->dtype != MOPT_DTYPE_QINT || !(s->quant->flags & MOPT_QUANT_SYM) || (s->quant->flags & MOPT_QUANT_W_FP8) ||
        s->quant->group_size != 32 || s->quant->g_idx)
        return 0; /* W4A8_AWQ's values are FP8 roundings of the levels, which no Q4_0 block holds */
    return (type == MOPT_GGML_Q4_0 && s->quant->bits == 4) || (type == MOPT_GGML_Q8_0 && s->quant->bits == 8);
}

static int all_exact(const mopt_file_tensor *ft, int32_t type) {
    for (int32_t k = 0; k < ft->n_src; k++)
        if (!exact_blocks(ft->src[k], type)) return 0;
    return 1;
}

/* llama-quantize's use_more_bits: the first and last eighth of the layers and every third one between */
static int more_bits(int32_t i, int32_t n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

/* a linear's type under one of llama-quantize's mixes, as its llama_tensor_get_type picks it for a dense (not
 * mixture-of-experts, not Falcon) LLaMA or GPT-2: attn_v, ffn_down, attn_output and a fused attn_qkv get more bits
 * where the mix says; n_gqa is query heads per KV head; LLaMA-2-70B (80 layers with grouped KV heads) takes Q5_K
 * for an attn_v of Q3_K or Q4_K */
static int32_t mix_type(const gten *t, int32_t base, int32_t mix, const mopt_arch *a) {
    const char *nm = t->ft.name;
    const int32_t i = t->ft.layer, n = a->n_layers, n_gqa = a->n_kv_heads > 0 ? a->n_heads / a->n_kv_heads : 1;
    const int more = more_bits(i, n);
    int32_t ty = base;
    if (strstr(nm, "attn_v.weight")) {
        switch (mix) {
        case MIX_Q2_K: ty = n_gqa >= 4 ? MOPT_GGML_Q4_K : MOPT_GGML_Q3_K; break;
        case MIX_Q2_K_S: ty = n_gqa >= 4 ? MOPT_GGML_Q4_K : base; break;
        case MIX_Q3_K_M: ty = i < 2 ? MOPT_GGML_Q5_K : MOPT_GGML_Q4_K; break;
        case MIX_Q3_K_L: ty = MOPT_GGML_Q5_K; break;
        case MIX_Q4_K_M:
        case MIX_Q5_K_M: ty = more ? MOPT_GGML_Q6_K : base; break;
        case MIX_Q4_K_S: ty = i < 4 ? MOPT_GGML_Q5_K : base; break;
        }
        if (n == 80 && a->n_heads != a->n_kv_heads && (ty == MOPT_GGML_Q3_K || ty == MOPT_GGML_Q4_K)) ty = MOPT_GGML_Q5_K;
    } else if (strstr(nm, "ffn_down")) {
        switch (mix) {
        case MIX_Q2_K: ty = MOPT_GGML_Q3_K; break;
        case MIX_Q2_K_S: ty = i < n / 8 ? MOPT_GGML_Q4_K : base; break;
        case MIX_Q3_K_M: ty = i < n / 16 ? MOPT_GGML_Q5_K : MOPT_GGML_Q4_K; break;
        case MIX_Q3_K_L: ty = MOPT_GGML_Q5_K; break;
        case MIX_Q4_K_M:
        case MIX_Q5_K_M: ty = more ? MOPT_GGML_Q6_K : base; break;
        case MIX_Q4_K_S: ty = i < n / 8 ? MOPT_GGML_Q5_K : base; break;
        }
    } else if (strstr(nm, "attn_output.weight")) {
        ty = mix == MIX_Q2_K ? MOPT_GGML_Q3_K : mix == MIX_Q3_K_M ? MOPT_GGML_Q4_K : mix == MIX_Q3_K_L ? MOPT_GGML_Q5_K : base;
    } else if (strstr(nm, "attn_qkv.weight")) {
        ty = mix == MIX_Q3_K_M || mix == MIX_Q3_K_L ? MOPT_GGML_Q4_K : mix == MIX_Q4_K_M ? MOPT_GGML_Q5_K : mix == MIX_Q5_K_M ? MOPT_GGML_Q6_K : base;
    }
    return ty;
}

/* the ggml type of one tensor for the requested type (the top comment); auto
 * (-1): float tensors keep their dtype, QINT ones that are Q4_0/Q8_0 keep
 * their blocks, other packed ones are dequantized to f16 */
static int32_t pick_type(const gten *t, int32_t want, int32_t mix, const mopt_arch *a, int has_imatrix) {
    if (t->ft.ndim == 1) return MOPT_GGML_F32;
    const int64_t n = t->row_len;
    int32_t ty = want;
    if (want < 0) {
        const mopt_tensor *s = t->ft.src[0];
        if (s->dtype == MOPT_DTYPE_F32 || s->dtype == MOPT_DTYPE_F16 || s->dtype == MOPT_DTYPE_BF16)
            return s->dtype == MOPT_DTYPE_F32 ? MOPT_GGML_F32 : s->dtype == MOPT_DTYPE_F16 ? MOPT_GGML_F16 : MOPT_GGML_BF16;
        ty = s->dtype == MOPT_DTYPE_KQUANT ? mopt_ggml_kquant_type(s->quant->bits) : s->dtype == MOPT_DTYPE_QINT && s->quant->bits == 4 ? MOPT_GGML_Q4_0 : MOPT_GGML_Q8_0;
        if (!all_exact(&t->ft, ty)) ty = MOPT_GGML_F16;
        return mopt_ggml_row_bytes(ty, n) < 0 ? MOPT_GGML_F16 : ty;
    }
    /* output.weight, or the embedding a tied model's output reads, takes q6_k (as llama-quantize); learned
     * positions stay as they are, as llama-quantize leaves them */
    if (t->ft.role == MOPT_ROLE_POS_EMBED && is_block(ty)) return t->ft.src[0]->dtype == MOPT_DTYPE_F16 ? MOPT_GGML_F16 : MOPT_GGML_F32;
    const int output = t->ft.role == MOPT_ROLE_LM_HEAD || (t->ft.role == MOPT_ROLE_EMBED && a->tied_embeddings);
    if (output && is_block(ty) && ty != MOPT_GGML_Q8_0) ty = mopt_ggml_row_bytes(ty, n) < 0 ? MOPT_GGML_Q8_0 : MOPT_GGML_Q6_K;
    else if (mix != MIX_NONE) ty = mix_type(t, ty, mix, a);
    /* with an importance matrix, the first eighth of ffn_down takes the kind with a minimum (llama-quantize's
     * guard against Q4_0 / Q5_0 going astray there) */
    else if (has_imatrix && (ty == MOPT_GGML_Q4_0 || ty == MOPT_GGML_Q5_0) && strstr(t->ft.name, "ffn_down") && t->ft.layer < a->n_layers / 8)
        ty = ty == MOPT_GGML_Q4_0 ? MOPT_GGML_Q4_1 : MOPT_GGML_Q5_1;
    if (mopt_ggml_row_bytes(ty, n) < 0 && (ty == MOPT_GGML_Q2_K || ty == MOPT_GGML_Q3_K)) ty = MOPT_GGML_IQ4_NL;
    if (mopt_ggml_row_bytes(ty, n) < 0 && ty == MOPT_GGML_Q4_K) ty = MOPT_GGML_Q5_0;
    if (mopt_ggml_row_bytes(ty, n) < 0 && ty == MOPT_GGML_Q5_K) ty = MOPT_GGML_Q5_1;
    if (mopt_ggml_row_bytes(ty, n) < 0 && ty == MOPT_GGML_Q6_K) ty = MOPT_GGML_Q8_0;
    if (mopt_ggml_row_bytes(ty, n) < 0) ty = MOPT_GGML_F16;
    return ty;
}

static mopt_status write_row(const gten *t, int64_t r, float *tmp, uint8_t *out, mopt_error *err) {
    if (t->ft.ndim == 1) { /* the whole vector, over its (fused) sources */
        for (int64_t i = 0; i < t->row_len; i++) {
            int64_t row;
            const mopt_tensor *s = mopt_file_tensor_row(&t->ft, i, &row);
            mopt_status st = mopt_tensor_read_f32(s, row, 1, tmp + i, err);
            if (st) return st;
        }
        return mopt_ggml_quantize_row(t->type, tmp, t->row_len, out, err);
    }
    int64_t row;
    const mopt_tensor *s = mopt_file_tensor_row(&t->ft, r, &row);
    if (exact_blocks(s, t->type) && s->dtype == MOPT_DTYPE_KQUANT) {
        memcpy(out, (const uint8_t *)s->data + (size_t)row * s->nb[1], s->nb[1]);
        return MOPT_OK;
    }
    if (exact_blocks(s, t->type)) {
        const int64_t nb = t->row_len / 32, ng = s->quant->scale->ne[0];
        const int64_t bb = mopt_ggml_block_bytes(t->type);
        uint8_t q[32];
        for (int64_t b = 0; b < nb; b++) {
            for (int j = 0; j < 32; j++) q[j] = mopt_qint_get(s, row, b * 32 + j);
            mopt_ggml_block_from_levels(t->type, q, ((const uint16_t *)s->quant->scale->data)[row * ng + b], out + b * bb);
        }
        return MOPT_OK;
    }
    mopt_status st = mopt_weight_row_f32(s, row, tmp, err);
    return st ? st : mopt_ggml_quantize_row_weighted(t->type, tmp, t->row_len, t->qw, out, err);
}

/* the choice named s; NULL for auto (or none given), and *bad when s names nothing */
static const type_choice *type_from(const char *s, int *bad) {
    *bad = 0;
    for (size_t i = 0; s && i < sizeof choices / sizeof *choices; i++)
        if (!strcmp(s, choices[i].name)) return &choices[i];
    *bad = s && strcmp(s, "auto");
    return NULL;
}

int32_t mopt_gguf_weight_type(const mopt_graph *g, const char *type, const char *weight, int has_imatrix) {
    int bad;
    const type_choice *choice = type_from(type, &bad);
    mopt_file_tensor *fts;
    int32_t n, ty = -1;
    if (!choice || mopt_file_tensors(g, MOPT_NAMING_GGUF, &fts, &n, NULL)) return -1;
    for (int32_t i = 0; i < n && ty < 0; i++)
        for (int32_t k = 0; k < fts[i].n_src; k++)
            if (!strcmp(fts[i].src[k]->name, weight)) {
                const gten t = gten_of(&fts[i]);
                ty = pick_type(&t, choice->type, choice->mix, mopt_graph_arch(g), has_imatrix);
                break;
            }
    free(fts);
    return ty;
}

/* --- the file ---------------------------------------------------------------------------- */

static mopt_status write_all(FILE *f, const char *path, const sbuf *head, gten *ts, int32_t n, int64_t max_len,
                             const mopt_gguf_write_opts *o, mopt_error *err) {
    static const uint8_t zeros[32] = {0};
    if (fwrite(head->s, 1, head->n, f) != head->n) return MOPT_FAIL(err, MOPT_E_IO, "%s: write failed: %s", path, strerror(errno));
    float *tmp = malloc((size_t)max_len * sizeof *tmp);
    uint8_t *row = malloc((size_t)mopt_ggml_row_bytes(MOPT_GGML_F32, max_len));
    mopt_status st = tmp && row ? MOPT_OK : MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    for (int32_t i = 0; i < n && !st; i++) {
        const gten *t = &ts[i];
        const int64_t rb = mopt_ggml_row_bytes(t->type, t->row_len);
        for (int64_t r = 0; r < t->n_rows && !st; r++) {
            if (mopt_interrupted()) st = MOPT_FAIL(err, MOPT_E_INTERRUPTED, "interrupted at tensor %s", t->ft.name);
            if (!st) st = write_row(t, r, tmp, row, err);
            if (!st && fwrite(row, 1, (size_t)rb, f) != (size_t)rb) st = MOPT_FAIL(err, MOPT_E_IO, "%s: write failed: %s", path, strerror(errno));
        }
        for (int32_t k = 0; k < t->ft.n_src; k++) mopt_tensor_drop_pages(t->ft.src[k]); /* read once: let mapped pages go */
        const size_t pad = (size_t)((32 - t->nbytes % 32) % 32);
        if (!st && pad && fwrite(zeros, 1, pad, f) != pad) st = MOPT_FAIL(err, MOPT_E_IO, "%s: write failed: %s", path, strerror(errno));
        if (!st && o->progress) o->progress(o->user, i + 1, n);
    }
    free(tmp);
    free(row);
    return st;
}

void mopt_gguf_write_opts_default(mopt_gguf_write_opts *o) {
    memset(o, 0, sizeof *o);
    o->struct_size = sizeof *o;
    o->type = "auto";
    o->tokenizer = 1;
}

mopt_status mopt_gguf_write(const mopt_graph *g, const mopt_tokenizer *tok, const char *path, const mopt_gguf_write_opts *opts,
                            mopt_gguf_write_result *res, mopt_error *err) {
    memset(res, 0, sizeof *res);
    mopt_gguf_write_opts oo;
    mopt_gguf_write_opts_default(&oo);
    if (!mopt_opts_over(&oo, sizeof oo, opts)) /* a {0} initializer: every field would silently be a default */
        return MOPT_FAIL(err, MOPT_E_INVALID, "mopt_gguf_write_opts.struct_size is 0: start from mopt_gguf_write_opts_default()");
    const mopt_gguf_write_opts *o = &oo;
    const mopt_arch *a = mopt_graph_arch(g);
    const mopt_family *fam = mopt_family_find(a->family);
    if (!fam || !fam->gguf_arch) return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "architecture family \"%s\" has no GGUF form", a->family);
    int bad;
    const type_choice *choice = type_from(o->type, &bad);
    if (bad) return MOPT_FAIL(err, MOPT_E_INVALID, "GGUF type \"%s\" is not one mopt writes", o->type);
    int32_t want = choice ? choice->type : -1;
    mopt_file_tensor *fts;
    int32_t n;
    mopt_status st = mopt_file_tensors(g, MOPT_NAMING_GGUF, &fts, &n, err);
    if (st) return st;
    gten *ts = calloc((size_t)(n ? n : 1), sizeof *ts);
    if (!ts) {
        free(fts);
        return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    }
    int quantized = 0;
    int64_t max_len = 1;
    for (int32_t i = 0; i < n; i++) {
        gten *t = &ts[i];
        *t = gten_of(&fts[i]);
        t->type = pick_type(t, want, choice ? choice->mix : MIX_NONE, a, o->imatrix != NULL);
        const int64_t nq = t->ft.ndim == 2 ? mopt_imatrix_len(o->imatrix, t->ft.name) : 0;
        if (nq && nq != t->row_len) {
            st = MOPT_FAIL(err, MOPT_E_INVALID, "the importance matrix has %lld values for %s, whose rows hold %lld: it was computed for another model",
                           (long long)nq, t->ft.name, (long long)t->row_len);
            break;
        }
        if (nq) t->qw = mopt_imatrix_find(o->imatrix, t->ft.name);
        quantized |= is_block(t->type);
        res->n_dequantized += want < 0 && t->type == MOPT_GGML_F16 && t->ft.src[0]->dtype >= MOPT_DTYPE_PACKED_FIRST;
        if (t->row_len > max_len) max_len = t->row_len;
    }
    free(fts);
    if (want < 0) /* the file type names the linears' type */
        for (int32_t i = 0; i < n; i++)
            if (ts[i].ft.role == MOPT_ROLE_ATTN_Q && ts[i].ft.layer == 0 && ts[i].ft.ndim == 2) want = ts[i].type;
    kvs k = {{0}, 0};
    arch_kv(&k, fam, a, o->name ? o->name : "", choice ? choice->file_type : file_type(want), quantized);
    if (!st && tok && o->tokenizer) st = tokenizer_kv(&k, tok, a, err);
    /* tensor infos; offsets are relative to the 32-aligned data section */
    sbuf info = {0};
    uint64_t off = 0;
    for (int32_t i = 0; i < n && !st; i++) {
        gten *t = &ts[i];
        t->nbytes = (uint64_t)mopt_ggml_row_bytes(t->type, t->row_len) * (uint64_t)t->n_rows;
        t->offset = off;
        off += (t->nbytes + 31) / 32 * 32;
        put_str(&info, t->ft.name, strlen(t->ft.name));
        put_u32(&info, (uint32_t)t->ft.ndim);
        put_u64(&info, (uint64_t)t->row_len);
        if (t->ft.ndim == 2) put_u64(&info, (uint64_t)t->n_rows);
        put_u32(&info, (uint32_t)t->type);
        put_u64(&info, t->offset);
    }
    sbuf head = {0};
    sb_put(&head, "GGUF", 4);
    put_u32(&head, 3);
    put_u64(&head, (uint64_t)n);
    put_u64(&head, k.n);
    sb_put(&head, k.b.s, k.b.n);
    sb_put(&head, info.s, info.n);
    static const uint8_t zeros[32] = {0};
    sb_put(&head, zeros, (32 - head.n % 32) % 32);
    if (!st && (k.b.oom || info.oom || head.oom)) st = MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    FILE *f = NULL;
    if (!st && !(f = fopen(path, "wb"))) st = MOPT_FAIL(err, MOPT_E_IO, "%s: cannot write: %s", path, strerror(errno));
    if (!st) st = write_all(f, path, &head, ts, n, max_len, o, err);
    if (f && (fflush(f) != 0 || fsync(fileno(f)) != 0) && !st) st = MOPT_FAIL(err, MOPT_E_IO, "%s: cannot flush: %s", path, strerror(errno));
    if (f && fclose(f) != 0 && !st) st = MOPT_FAIL(err, MOPT_E_IO, "%s: cannot close: %s", path, strerror(errno));
    if (!st) {
        int64_t params = 0;
        for (int32_t i = 0; i < n; i++) res->data_bytes += ts[i].nbytes, params += ts[i].row_len * ts[i].n_rows;
        res->bytes = res->data_bytes + head.n;
        res->n_tensors = n;
        res->bits_per_weight = params ? 8.0 * (double)res->data_bytes / (double)params : 0;
    }
    free(k.b.s);
    free(info.s);
    free(head.s);
    free(ts);
    return st;
}

/* --- importance matrices ------------------------------------------------------------------ */

static int entry_cmp(const void *a, const void *b) {
    return strcmp((*(const mopt_imatrix_entry *const *)a)->name, (*(const mopt_imatrix_entry *const *)b)->name);
}

mopt_status gguf_write_imatrix(const char *path, const mopt_imatrix *m, mopt_error *err) {
    const mopt_imatrix_entry **e = malloc((size_t)(m->n > 0 ? m->n : 1) * sizeof *e);
    if (!e) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    mopt_status st = MOPT_OK;
    for (int32_t i = 0; i < m->n; i++) e[i] = &m->e[i];
    qsort(e, (size_t)m->n, sizeof *e, entry_cmp); /* llama-imatrix stores the weights by name */
    kvs k = {{0}, 0};
    kv_str(&k, "general.type", "imatrix");
    kv_arr(&k, "imatrix.datasets", GGUF_STRING, 1);
    put_str(&k.b, m->dataset, strlen(m->dataset));
    kv_u32(&k, "imatrix.chunk_count", (uint32_t)(m->chunks > 0 ? m->chunks : 0));
    kv_u32(&k, "imatrix.chunk_size", (uint32_t)(m->chunk_size > 0 ? m->chunk_size : 0));
    sbuf info = {0}, data = {0};
    static const uint8_t zeros[32] = {0};
    for (int32_t i = 0; i < m->n; i++) { /* per weight: <name>.in_sum2 f32 [n], <name>.counts f32 [1] (ggml drops trailing 1s) */
        const int32_t ncall = e[i]->ncall > 0 ? e[i]->ncall : 1;
        const float tokens = (float)ncall * (float)(m->chunk_size > 0 ? m->chunk_size : 1);
        for (int part = 0; part < 2; part++) {
            char name[MOPT_MAX_NAME + 16];
            snprintf(name, sizeof name, "%s%s", e[i]->name, part ? ".counts" : ".in_sum2");
            put_str(&info, name, strlen(name));
            put_u32(&info, 1);
            put_u64(&info, part ? 1 : (uint64_t)e[i]->n);
            put_u32(&info, MOPT_GGML_F32);
            put_u64(&info, data.n);
            if (part) sb_put(&data, &tokens, 4);
            for (int32_t c = 0; !part && c < e[i]->n; c++) {
                const float v = e[i]->mean[c] * tokens;
                if (!(v <= 3.4e38f) && !st)
                    st = MOPT_FAIL(err, MOPT_E_INVALID, "%s: %s: importance %g over %g tokens does not fit a float sum", path, e[i]->name,
                                   (double)e[i]->mean[c], (double)tokens);
                sb_put(&data, &v, 4);
            }
            sb_put(&data, zeros, (32 - data.n % 32) % 32);
        }
    }
    sbuf f = {0};
    sb_put(&f, "GGUF", 4);
    put_u32(&f, 3);
    put_u64(&f, 2 * (uint64_t)m->n);
    put_u64(&f, k.n);
    sb_put(&f, k.b.s, k.b.n);
    sb_put(&f, info.s, info.n);
    sb_put(&f, zeros, (32 - f.n % 32) % 32);
    sb_put(&f, data.s, data.n);
    if (!st) st = k.b.oom || info.oom || data.oom || f.oom ? MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory") : mopt_file_write_atomic(path, f.s, f.n, err);
    free(e);
    free(k.b.s);
    free(info.s);
    free(data.s);
    free(f.s);
    return st;
}
