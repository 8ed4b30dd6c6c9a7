/* GGUF models (llama and gpt2 architectures) and their tokenizers. Tensors get
 * mopt's Hugging Face names; f32/f16/bf16 stay views into the mapping, Q4_0 and
 * Q8_0 linears become QINT tensors holding the same levels and scales (the
 * packed kernels run them directly), every other block type is dequantized to
 * f32. Q/K rows stay in GGUF's interleaved RoPE order, which the LLaMA builder
 * runs as is. GPT-2's fused attn_qkv [3D, D] is split into q/k/v. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "arch_impl.h"
#include "tensor_impl.h"
#include "model_impl.h"
#include "mopt/ggml.h"
#include "mopt/quant.h"
#include "tok_impl.h"

/* --- architecture ------------------------------------------------------------ */

static mopt_status get_size(const gguf_file *f, const char *path, const char *arch, const char *key, int32_t *out,
                            int required, mopt_error *err) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    int64_t v;
    if (!gguf_get_int(f, k, &v)) {
        if (!required) return MOPT_OK;
        return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: missing integer key %s", path, k);
    }
    if (v <= 0 || v > (1 << 24)) return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: %s = %lld is not a usable size", path, k, (long long)v);
    *out = (int32_t)v;
    return MOPT_OK;
}

static mopt_status arch_from_kv(const gguf_file *f, const char *path, mopt_arch *a, mopt_error *err) {
    memset(a, 0, sizeof *a);
    uint64_t n;
    const char *name = gguf_get_str(f, "general.architecture", &n);
    if (!name) return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: missing string key general.architecture", path);
    char arch[32];
    snprintf(arch, sizeof arch, "%.*s", (int)(n < 31 ? n : 31), name);
    if (strcmp(arch, "llama") && strcmp(arch, "gpt2"))
        return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: general.architecture \"%s\" is not supported (llama, gpt2)", path, arch);
    snprintf(a->family, sizeof a->family, "%s", arch);
    const int llama = !strcmp(arch, "llama");
    mopt_status st;
    if ((st = get_size(f, path, arch, "embedding_length", &a->dim, 1, err)) ||
        (st = get_size(f, path, arch, "block_count", &a->n_layers, 1, err)) ||
        (st = get_size(f, path, arch, "feed_forward_length", &a->ffn_dim, 1, err)) ||
        (st = get_size(f, path, arch, "attention.head_count", &a->n_heads, 1, err)) ||
        (st = get_size(f, path, arch, "context_length", &a->max_ctx, 1, err)))
        return st;
    a->n_kv_heads = a->n_heads;
    if ((st = get_size(f, path, arch, "attention.head_count_kv", &a->n_kv_heads, 0, err))) return st;
    /* the head size: attention.key_length when given (it need not be embedding_length / head_count) */
    int32_t k_len = 0, v_len = 0;
    if ((st = get_size(f, path, arch, "attention.key_length", &k_len, 0, err)) ||
        (st = get_size(f, path, arch, "attention.value_length", &v_len, 0, err)))
        return st;
    if (k_len && v_len && k_len != v_len)
        return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: %s.attention.key_length %d differs from value_length %d", path, arch, k_len, v_len);
    if (!k_len) k_len = v_len;
    if (a->n_heads % a->n_kv_heads || (!k_len && a->dim % a->n_heads))
        return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: %d heads (%d kv) do not divide embedding_length %d", path, a->n_heads,
                         a->n_kv_heads, a->dim);
    a->head_dim = k_len ? k_len : a->dim / a->n_heads;
    char k[128];
    double v = llama ? 1e-5 : 1e-5;
    snprintf(k, sizeof k, "%s.attention.%s", arch, llama ? "layer_norm_rms_epsilon" : "layer_norm_epsilon");
    if (!gguf_get_num(f, k, &v) && llama) return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: missing number key %s", path, k);
    a->norm_eps = (float)v;
    if (llama) {
        int32_t rot = a->head_dim;
        if ((st = get_size(f, path, arch, "rope.dimension_count", &rot, 0, err))) return st;
        if (rot != a->head_dim)
            return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: llama.rope.dimension_count %d differs from the head size %d (partial RoPE)",
                             path, rot, a->head_dim);
        v = 10000.0;
        gguf_get_num(f, "llama.rope.freq_base", &v);
        if (!(v > 0)) return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: llama.rope.freq_base %g must be positive", path, v);
        a->rope_theta = (float)v;
        a->rope_style = MOPT_ROPE_INTERLEAVED;
        a->norm = MOPT_NORM_RMS;
        a->mlp = MOPT_MLP_SWIGLU;
    } else {
        a->norm = MOPT_NORM_LAYER;
        a->mlp = MOPT_MLP_GELU;
        a->qkv_bias = a->o_bias = a->mlp_bias = 1;
    }
    const gguf_tensor *emb = gguf_find_tensor(f, "token_embd.weight");
    if (!emb || emb->ndim != 2) return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: missing 2-D tensor token_embd.weight", path);
    a->vocab_size = (int32_t)emb->ne[1];
    a->tied_embeddings = gguf_find_tensor(f, "output.weight") == NULL;
    static const char *const special[2] = {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"};
    for (int i = 0; i < 2; i++) {
        int64_t id;
        int32_t *dst = i ? &a->eos_id : &a->bos_id;
        *dst = -1;
        if (!gguf_get_int(f, special[i], &id)) continue;
        if (id < 0 || id >= a->vocab_size)
            return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: %s %lld is outside the vocabulary of %d", path, special[i], (long long)id, a->vocab_size);
        *dst = (int32_t)id;
    }
    return MOPT_OK;
}

/* --- tensors ------------------------------------------------------------------ */

/* GGUF names <-> mopt's (Hugging Face) names, per family. "" marks GPT-2's
 * fused attn_qkv, which is split into q/k/v separately. */
typedef struct { const char *gguf, *hf; } name_pair;
static const name_pair llama_blk[] = {
    {"attn_norm", "input_layernorm"}, {"attn_q", "self_attn.q_proj"},   {"attn_k", "self_attn.k_proj"},
    {"attn_v", "self_attn.v_proj"},   {"attn_output", "self_attn.o_proj"}, {"ffn_norm", "post_attention_layernorm"},
    {"ffn_gate", "mlp.gate_proj"},    {"ffn_up", "mlp.up_proj"},         {"ffn_down", "mlp.down_proj"}};
static const name_pair gpt2_blk[] = {{"attn_norm", "ln_1"},  {"attn_output", "attn.c_proj"}, {"ffn_norm", "ln_2"},
                                     {"ffn_up", "mlp.c_fc"}, {"ffn_down", "mlp.c_proj"},     {"attn_qkv", ""}};
static const name_pair llama_top[] = {{"token_embd.weight", "model.embed_tokens.weight"},
                                      {"output_norm.weight", "model.norm.weight"},
                                      {"output.weight", "lm_head.weight"}};
static const name_pair gpt2_top[] = {{"token_embd.weight", "transformer.wte.weight"}, {"position_embd.weight", "transformer.wpe.weight"},
                                     {"output_norm.weight", "transformer.ln_f.weight"}, {"output_norm.bias", "transformer.ln_f.bias"},
                                     {"output.weight", "lm_head.weight"}};

typedef struct {
    const name_pair *blk, *top;
    size_t n_blk, n_top;
    const char *blk_fmt; /* the HF name of a block tensor: layer, part, kind */
} name_map;

static name_map names_of(const char *family) {
    if (!strcmp(family, "llama")) return (name_map){llama_blk, llama_top, 9, 3, "model.layers.%d.%s.%s"};
    return (name_map){gpt2_blk, gpt2_top, 6, 5, "transformer.h.%d.%s.%s"};
}

/* GGUF name -> mopt name; 0 when the family has no such tensor */
static int map_name(const char *family, const char *in, char *out, size_t cap) {
    const name_map m = names_of(family);
    int layer, pos = 0;
    char part[64], kind[16];
    if (sscanf(in, "blk.%d.%63[a-z_].%15[a-z]%n", &layer, part, kind, &pos) == 3 && in[pos] == 0 && layer >= 0) {
        for (size_t i = 0; i < m.n_blk; i++)
            if (!strcmp(part, m.blk[i].gguf)) {
                if (!*m.blk[i].hf) return snprintf(out, cap, "%s", ""), 1;
                snprintf(out, cap, m.blk_fmt, layer, m.blk[i].hf, kind);
                return 1;
            }
        return 0;
    }
    for (size_t i = 0; i < m.n_top; i++)
        if (!strcmp(in, m.top[i].gguf)) return snprintf(out, cap, "%s", m.top[i].hf), 1;
    return 0;
}

/* mopt name -> GGUF name, for messages (GPT-2's q/k/v come from blk.N.attn_qkv) */
static const char *gguf_name_of(const char *family, const char *hf, char *buf, size_t cap) {
    const name_map m = names_of(family);
    for (size_t i = 0; i < m.n_top; i++)
        if (!strcmp(hf, m.top[i].hf)) return snprintf(buf, cap, "%s", m.top[i].gguf), buf;
    int layer, pos = 0;
    char part[64], kind[16];
    const char *fmt = !strcmp(family, "llama") ? "model.layers.%d.%63[a-z_.]%n" : "transformer.h.%d.%63[a-z_.]%n";
    if (sscanf(hf, fmt, &layer, part, &pos) != 2 || hf[pos]) return NULL;
    char *dot = strrchr(part, '.');
    if (!dot) return NULL;
    *dot = 0;
    snprintf(kind, sizeof kind, "%s", dot + 1);
    if (strstr(part, "attn.") == part && !strcmp(family, "gpt2") && strcmp(part, "attn.c_proj"))
        return snprintf(buf, cap, "blk.%d.attn_qkv.%s", layer, kind), buf;
    for (size_t i = 0; i < m.n_blk; i++)
        if (!strcmp(part, m.blk[i].hf)) return snprintf(buf, cap, "blk.%d.%s.%s", layer, m.blk[i].gguf, kind), buf;
    return NULL;
}

static const char *llama_gguf_name(const char *hf, char *buf, size_t cap) { return gguf_name_of("llama", hf, buf, cap); }
static const char *gpt2_gguf_name(const char *hf, char *buf, size_t cap) { return gguf_name_of("gpt2", hf, buf, cap); }

static int is_linear(const char *gguf_name) {
    return !strncmp(gguf_name, "blk.", 4) && (strstr(gguf_name, ".attn_q.weight") || strstr(gguf_name, ".attn_k.weight") ||
                                               strstr(gguf_name, ".attn_v.weight") || strstr(gguf_name, ".attn_output.weight") ||
                                               strstr(gguf_name, ".ffn_gate.weight") || strstr(gguf_name, ".ffn_up.weight") ||
                                               strstr(gguf_name, ".ffn_down.weight") || strstr(gguf_name, ".attn_qkv.weight"));
}

/* Rows [row0, row0 + rows) of a 1-D or 2-D GGUF tensor as a mopt tensor named
 * `name`. A row is ne[0] values, so a 1-D tensor is one row (row0 0, rows 1). */
static mopt_tensor *convert(gguf_file *f, const gguf_tensor *t, const char *name, int64_t row0, int64_t rows, int linear,
                            mopt_error *err) {
    const int64_t cols = t->ne[0], rb = mopt_ggml_row_bytes(t->type, cols);
    const int32_t nd = t->ndim;
    if (nd > 2 || row0 < 0 || rows < 1 || row0 + rows > (nd == 2 ? t->ne[1] : 1)) {
        MOPT_FAIL(err, MOPT_E_FORMAT, "tensor %s: %d dimensions, rows %lld..%lld: not a weight this architecture uses", t->name,
                  nd, (long long)row0, (long long)(row0 + rows));
        return NULL;
    }
    if (nd == 1 && t->type != MOPT_GGML_F32 && t->type != MOPT_GGML_F16 && t->type != MOPT_GGML_BF16) {
        MOPT_FAIL(err, MOPT_E_FORMAT, "tensor %s: a 1-D tensor stored as %s (norm weights and biases are f32, f16 or bf16)",
                  t->name, mopt_ggml_type_name(t->type));
        return NULL;
    }
    const uint8_t *src = t->data + row0 * rb;
    int64_t dims[2] = {nd == 2 ? rows : cols, cols};
    if (t->type == MOPT_GGML_F32 || t->type == MOPT_GGML_F16 || t->type == MOPT_GGML_BF16) {
        const mopt_dtype dt = t->type == MOPT_GGML_F32 ? MOPT_DTYPE_F32 : t->type == MOPT_GGML_F16 ? MOPT_DTYPE_F16 : MOPT_DTYPE_BF16;
        return mopt_tensor_view(gguf_buffer(f), (void *)src, name, dt, nd, dims, err);
    }
    const int64_t nblk = cols / 32;
    if (linear && nd == 2 && (t->type == MOPT_GGML_Q4_0 || t->type == MOPT_GGML_Q8_0)) {
        const int q4 = t->type == MOPT_GGML_Q4_0;
        uint8_t *q = malloc((size_t)(rows * cols));
        float *s = malloc((size_t)(rows * nblk) * sizeof *s);
        mopt_tensor *o = NULL;
        if (!q || !s) {
            MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
        } else {
            for (int64_t r = 0; r < rows; r++)
                for (int64_t b = 0; b < nblk; b++) {
                    const uint8_t *blk = src + r * rb + b * (q4 ? 18 : 34);
                    uint16_t h;
                    memcpy(&h, blk, 2);
                    s[r * nblk + b] = mopt_f16_to_f32(h);
                    uint8_t *dst = q + r * cols + b * 32;
                    for (int j = 0; j < (q4 ? 16 : 32); j++) {
                        if (q4) dst[j] = blk[2 + j] & 15, dst[j + 16] = blk[2 + j] >> 4;
                        else dst[j] = (uint8_t)((int8_t)blk[2 + j] + 128);
                    }
                }
            o = mopt_qint_pack(name, rows, cols, q4 ? 4 : 8, 32, q, s, NULL, NULL, err);
        }
        free(q);
        free(s);
        return o;
    }
    mopt_tensor *o = mopt_tensor_new(name, MOPT_DTYPE_F32, nd, dims, err);
    if (!o) return NULL;
    for (int64_t r = 0; r < rows; r++)
        if (mopt_ggml_dequantize_row(t->type, src + r * rb, cols, (float *)o->data + r * cols, err)) {
            mopt_tensor_free(o);
            return NULL;
        }
    return o;
}

static mopt_status add(mopt_graph *g, mopt_tensor *t, mopt_error *err) {
    if (!t) return err && err->code ? (mopt_status)err->code : MOPT_E_NOMEM;
    mopt_status st = mopt_graph_add_tensor(g, t, err);
    if (st) mopt_tensor_free(t);
    return st;
}

static mopt_status load_tensors(gguf_file *f, const char *path, mopt_graph *g, mopt_error *err) {
    const mopt_arch *a = mopt_graph_arch(g);
    for (int64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        char name[MOPT_MAX_NAME];
        if (!strcmp(t->name, "rope_freqs.weight"))
            return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: tensor rope_freqs.weight (RoPE frequency scaling, as Llama 3.1's) is not supported", path);
        if (!map_name(a->family, t->name, name, sizeof name))
            return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: tensor %s is not part of a %s model", path, t->name, a->family);
        mopt_status st;
        if (*name) {
            st = add(g, convert(f, t, name, 0, t->ndim == 2 ? t->ne[1] : 1, is_linear(t->name), err), err);
        } else { /* GPT-2 attn_qkv [3D, D] (weight) or [3D] (bias) */
            int layer;
            char kind[16];
            sscanf(t->name, "blk.%d.attn_qkv.%15s", &layer, kind);
            const int64_t D = a->dim;
            if ((t->ndim == 2 && (t->ne[1] != 3 * D || t->ne[0] != D)) || (t->ndim == 1 && t->ne[0] != 3 * D))
                return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: tensor %s does not hold 3 x %lld rows", path, t->name, (long long)D);
            static const char *const qkv[3] = {"q_proj", "k_proj", "v_proj"};
            st = MOPT_OK;
            for (int p = 0; p < 3 && !st; p++) {
                snprintf(name, sizeof name, "transformer.h.%d.attn.%s.%s", layer, qkv[p], kind);
                if (t->ndim == 2) {
                    st = add(g, convert(f, t, name, p * D, D, 1, err), err);
                } else {
                    const int64_t bytes = mopt_ggml_row_bytes(t->type, D);
                    gguf_tensor part = *t;
                    part.ne[0] = D;
                    part.data = t->data + p * bytes;
                    if (bytes < 0) return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: tensor %s: bias rows are not whole blocks", path, t->name);
                    st = add(g, convert(f, &part, name, 0, 1, 0, err), err);
                }
            }
        }
        if (st) return st;
    }
    return MOPT_OK;
}

/* --- tokenizer ------------------------------------------------------------------ */

#define SPM_SPACE "\xe2\x96\x81"

/* "llama": SentencePiece pieces with scores, read as a llama2.c tokenizer
 * (pieces carry real spaces there, the same merge-by-score algorithm). */
static mopt_tokenizer *llama_tokenizer(const gguf_file *f, const char *path, uint64_t n, mopt_error *err) {
    int32_t stype;
    uint64_t ns;
    if (!gguf_get_arr(f, "tokenizer.ggml.scores", &stype, &ns) || ns != n) {
        MOPT_FAIL(err, MOPT_E_FORMAT, "%s: tokenizer.ggml.scores must hold one score per token", path);
        return NULL;
    }
    size_t cap = 4 + n * 8, len = 4;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t l;
        gguf_arr_str(f, "tokenizer.ggml.tokens", i, &l);
        cap += l;
    }
    char *buf = malloc(cap);
    if (!buf) {
        MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
        return NULL;
    }
    int32_t max_len = 1;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t l;
        const char *s = gguf_arr_str(f, "tokenizer.ggml.tokens", i, &l);
        double sc = 0;
        gguf_arr_num(f, "tokenizer.ggml.scores", i, &sc);
        float fs = (float)sc;
        memcpy(buf + len, &fs, 4);
        size_t at = len + 8, w = 0;
        for (uint64_t k = 0; k < l;) { /* U+2581 back to a space */
            if (l - k >= 3 && !memcmp(s + k, SPM_SPACE, 3)) buf[at + w++] = ' ', k += 3;
            else buf[at + w++] = s[k++];
        }
        int32_t wl = (int32_t)w;
        memcpy(buf + len + 4, &wl, 4);
        if (wl > max_len) max_len = wl;
        len = at + w;
    }
    memcpy(buf, &max_len, 4);
    mopt_tokenizer *tok = tok_llama2c_parse(buf, len, (int32_t)n, path, err);
    free(buf);
    return tok;
}

/* "gpt2": byte-level BPE, rebuilt as the tokenizer.json it came from */
static mopt_tokenizer *bpe_tokenizer(const gguf_file *f, const char *path, uint64_t n, mopt_error *err) {
    uint64_t pl = 0;
    const char *pre = gguf_get_str(f, "tokenizer.ggml.pre", &pl);
    if (pre && !(pl == 5 && !memcmp(pre, "gpt-2", 5)) && !(pl == 7 && !memcmp(pre, "default", 7))) {
        MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: tokenizer.ggml.pre \"%.*s\" is not supported (gpt-2, default)", path,
                  (int)(pl < 40 ? pl : 40), pre);
        return NULL;
    }
    json_t *vocab = json_object(), *merges = json_array(), *added = json_array();
    int32_t mtype, ttype = -1;
    uint64_t nm = 0, nt = 0;
    gguf_get_arr(f, "tokenizer.ggml.merges", &mtype, &nm);
    gguf_get_arr(f, "tokenizer.ggml.token_type", &ttype, &nt);
    for (uint64_t i = 0; i < n; i++) {
        uint64_t l;
        const char *s = gguf_arr_str(f, "tokenizer.ggml.tokens", i, &l);
        json_t *key = json_stringn(s, (size_t)l);
        if (!key) {
            MOPT_FAIL(err, MOPT_E_FORMAT, "%s: token %llu is not valid UTF-8", path, (unsigned long long)i);
            goto fail;
        }
        json_object_setn_new(vocab, s, (size_t)l, json_integer((json_int_t)i));
        double type = 1;
        if (nt == n && gguf_arr_num(f, "tokenizer.ggml.token_type", i, &type) && type == 3)
            json_array_append_new(added, json_pack("{s:I, s:o, s:b}", "id", (json_int_t)i, "content", key, "special", 1));
        else
            json_decref(key);
    }
    for (uint64_t i = 0; i < nm; i++) {
        uint64_t l;
        const char *s = gguf_arr_str(f, "tokenizer.ggml.merges", i, &l);
        json_t *m = s ? json_stringn(s, (size_t)l) : NULL;
        if (!m) {
            MOPT_FAIL(err, MOPT_E_FORMAT, "%s: tokenizer.ggml.merges[%llu] is not a UTF-8 string", path, (unsigned long long)i);
            goto fail;
        }
        json_array_append_new(merges, m);
    }
    json_t *root = json_pack("{s:{s:s, s:o, s:o}, s:o, s:{s:s, s:b, s:b}, s:{s:s}}", "model", "type", "BPE", "vocab", vocab,
                             "merges", merges, "added_tokens", added, "pre_tokenizer", "type", "ByteLevel", "add_prefix_space",
                             0, "use_regex", 1, "decoder", "type", "ByteLevel");
    mopt_tokenizer *tok = root ? tok_hf_from_json(root, path, err) : NULL;
    json_decref(root);
    if (tok) {
        int64_t id;
        bool add_bos = false;
        if (gguf_get_int(f, "tokenizer.ggml.eos_token_id", &id) && id >= 0 && id < tok->n_vocab) tok->eos_id = (int32_t)id;
        if (gguf_get_int(f, "tokenizer.ggml.bos_token_id", &id) && id >= 0 && id < tok->n_vocab) {
            tok->bos_id = (int32_t)id;
            if (gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &add_bos) && add_bos) tok->tmpl_pre[0] = (int32_t)id, tok->n_tmpl_pre = 1;
        }
    }
    return tok;
fail:
    json_decref(vocab);
    json_decref(merges);
    json_decref(added);
    return NULL;
}

static mopt_status tokenizer_from_kv(const gguf_file *f, const char *path, mopt_tokenizer **tok, mopt_error *err) {
    uint64_t ml, n;
    int32_t type;
    const char *model = gguf_get_str(f, "tokenizer.ggml.model", &ml);
    if (!model) return MOPT_OK; /* no tokenizer: ids only */
    if (!gguf_get_arr(f, "tokenizer.ggml.tokens", &type, &n) || type != GGUF_STRING || n == 0 || n > (1 << 24))
        return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: tokenizer.ggml.tokens must be a non-empty string array", path);
    mopt_error e = {0};
    if (ml == 5 && !memcmp(model, "llama", 5)) *tok = llama_tokenizer(f, path, n, &e);
    else if (ml == 4 && !memcmp(model, "gpt2", 4)) *tok = bpe_tokenizer(f, path, n, &e);
    else
        return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: tokenizer.ggml.model \"%.*s\" is not supported (llama, gpt2)", path,
                         (int)(ml < 40 ? ml : 40), model);
    if (*tok) return MOPT_OK;
    if (err) *err = e;
    return e.code ? (mopt_status)e.code : MOPT_E_FORMAT;
}

/* --- entry ------------------------------------------------------------------------ */

mopt_status mopt_import_gguf(const char *path, mopt_graph **out, mopt_tokenizer **tok, mopt_error *err) {
    *out = NULL;
    *tok = NULL;
    gguf_file *f;
    mopt_status st = gguf_open(path, &f, err);
    if (st) return st;
    mopt_arch a;
    mopt_graph *g = NULL;
    if ((st = arch_from_kv(f, path, &a, err))) goto done;
    if (!(g = mopt_graph_new(&a, err))) {
        st = MOPT_E_NOMEM;
        goto done;
    }
    if ((st = load_tensors(f, path, g, err))) goto done;
    const mopt_build_src src = {"the GGUF metadata", !strcmp(a.family, "gpt2") ? gpt2_gguf_name : llama_gguf_name};
    st = mopt_arch_build(g, &src, err);
    if (!st) st = tokenizer_from_kv(f, path, tok, err);
done:
    gguf_close(f); /* views hold their own reference to the mapping */
    if (st) {
        mopt_graph_free(g);
        return st;
    }
    *out = g;
    return MOPT_OK;
}
