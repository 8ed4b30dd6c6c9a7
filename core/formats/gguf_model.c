/* GGUF models (the architectures of arch/'s families) and their tokenizers.
 * Tensors get the graph's names from the family's table; f32/f16/bf16 stay views into the mapping, Q4_0 and
 * Q8_0 linears (lm_head and the token embedding table included) become QINT tensors holding the same levels and
 * scales and Q2_K-Q6_K ones KQUANT tensors holding the blocks as they are (the packed kernels run both directly, and
 * a lookup dequantizes one row); every other block type, and every block type outside them, is dequantized to f32.
 * Q/K rows stay in GGUF's interleaved RoPE order, which the LLaMA builder runs as is. A fused q/k/v (GPT-2's
 * attn_qkv) is split into q, k and v. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "arch_impl.h"
#include "tensor_impl.h"
#include "model_impl.h"
#include "ggml.h"
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

static mopt_status arch_from_kv(const gguf_file *f, const char *path, mopt_arch *a, const mopt_family **family, mopt_error *err) {
    memset(a, 0, sizeof *a);
    uint64_t n;
    const char *name = gguf_get_str(f, "general.architecture", &n);
    if (!name) return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: missing string key general.architecture", path);
    char arch[32], known[128];
    snprintf(arch, sizeof arch, "%.*s", (int)(n < 31 ? n : 31), name);
    const mopt_family *fam = mopt_family_of_gguf(name, n);
    if (!fam)
        return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: general.architecture \"%s\" is not supported (%s)", path, arch,
                         mopt_family_list(MOPT_NAMING_GGUF, known, sizeof known));
    *family = fam;
    *a = fam->shape;
    snprintf(a->family, sizeof a->family, "%s", fam->name);
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
    /* RMS-normed families store their epsilon under its own key, and must */
    const int rms = a->norm == MOPT_NORM_RMS;
    char k[128];
    double v = 1e-5;
    snprintf(k, sizeof k, "%s.attention.%s", arch, rms ? "layer_norm_rms_epsilon" : "layer_norm_epsilon");
    if (!gguf_get_num(f, k, &v) && rms) return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: missing number key %s", path, k);
    a->norm_eps = (float)v;
    if (mopt_family_has_rope(fam)) {
        int32_t rot = a->head_dim;
        if ((st = get_size(f, path, arch, "rope.dimension_count", &rot, 0, err))) return st;
        if (rot != a->head_dim)
            return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: %s.rope.dimension_count %d differs from the head size %d (partial RoPE)",
                             path, arch, rot, a->head_dim);
        v = 10000.0;
        snprintf(k, sizeof k, "%s.rope.freq_base", arch);
        gguf_get_num(f, k, &v);
        if (!(v > 0)) return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: %s %g must be positive", path, k, v);
        a->rope_theta = (float)v;
        a->rope_style = MOPT_ROPE_INTERLEAVED; /* llama.cpp's row order, which the graph runs as is */
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
    mopt_tensor *o;
    if (linear && nd == 2 && (t->type == MOPT_GGML_Q4_0 || t->type == MOPT_GGML_Q8_0 || mopt_ggml_kquant_bits(t->type))) {
        o = mopt_ggml_blocks_tensor(name, t->type, rows, cols, src, err);
    } else {
        if (!(o = mopt_tensor_new(name, MOPT_DTYPE_F32, nd, dims, err))) return NULL;
        for (int64_t r = 0; r < rows && o; r++)
            if (mopt_ggml_dequantize_row(t->type, src + r * rb, cols, (float *)o->data + r * cols, err)) {
                mopt_tensor_free(o);
                o = NULL;
            }
    }
    /* copied out: the file's pages need not stay (they would double the resident memory of a quantized model) */
    if (o) mopt_buffer_drop(gguf_buffer(f), src, (size_t)(rows * rb));
    return o;
}

static mopt_status add(mopt_graph *g, mopt_tensor *t, mopt_error *err) {
    if (!t) return err && err->code ? (mopt_status)err->code : MOPT_E_NOMEM;
    mopt_status st = mopt_graph_add_tensor(g, t, err);
    if (st) mopt_tensor_free(t);
    return st;
}

static mopt_status load_tensors(gguf_file *f, const char *path, mopt_graph *g, const mopt_family *fam, mopt_error *err) {
    const mopt_arch *a = mopt_graph_arch(g);
    for (int64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        if (!strcmp(t->name, "rope_freqs.weight"))
            return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: tensor rope_freqs.weight (RoPE frequency scaling, as Llama 3.1's) is not supported", path);
        const mopt_name_rule *rules[3];
        int32_t layer;
        char kind[16], name[MOPT_MAX_NAME];
        const int32_t n = mopt_family_parse_name(fam, MOPT_NAMING_GGUF, t->name, rules, &layer, kind, sizeof kind);
        if (!n) return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: tensor %s is not part of a %s model", path, t->name, a->family);
        /* output.weight runs through the same kernels as the linears; token_embd.weight stays packed too, a row
         * dequantized per token looked up (and as lm_head where tied, the packed kernels' work) */
        const mopt_role role = (mopt_role)rules[0]->role;
        const int linear = (mopt_role_is_linear(role) || role == MOPT_ROLE_LM_HEAD || role == MOPT_ROLE_EMBED) && !strcmp(kind, "weight");
        if (n == 1) {
            mopt_rule_graph_name(rules[0], layer, kind, name, sizeof name);
            mopt_status st = add(g, convert(f, t, name, 0, t->ndim == 2 ? t->ne[1] : 1, linear, err), err);
            if (st) return st;
            continue;
        }
        /* a fused q/k/v (GPT-2's attn_qkv): [q; k; v] rows, or one bias row of them */
        int64_t total = 0;
        for (int32_t k = 0; k < n; k++) total += mopt_rule_rows(a, rules[k]);
        if ((t->ndim == 2 && (t->ne[1] != total || t->ne[0] != a->dim)) || (t->ndim == 1 && t->ne[0] != total))
            return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: tensor %s does not hold the %lld q/k/v rows the metadata implies", path,
                             t->name, (long long)total);
        int64_t off = 0;
        for (int32_t k = 0; k < n; k++) {
            const int64_t rows = mopt_rule_rows(a, rules[k]);
            mopt_rule_graph_name(rules[k], layer, kind, name, sizeof name);
            mopt_status st;
            if (t->ndim == 2) {
                st = add(g, convert(f, t, name, off, rows, linear, err), err);
            } else {
                const int64_t skip = mopt_ggml_row_bytes(t->type, off);
                if (skip < 0) return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: tensor %s: bias parts are not whole blocks", path, t->name);
                gguf_tensor part = *t;
                part.ne[0] = rows;
                part.data = t->data + skip;
                st = add(g, convert(f, &part, name, 0, 1, 0, err), err);
            }
            if (st) return st;
            off += rows;
        }
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
            json_array_append_new(added, json_pack("{s:I, s:o, s:b, s:b, s:b, s:b, s:b}", "id", (json_int_t)i, "content", key,
                                                   "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized", 0, "special", 1));
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
    /* every field transformers' own tokenizer.json has, so the text is one it reads back (an export keeps it) */
    int64_t bos = -1, id;
    bool add_bos = false;
    if (gguf_get_int(f, "tokenizer.ggml.bos_token_id", &id) && id >= 0 && (uint64_t)id < n) bos = id;
    json_t *post;
    if (bos >= 0 && gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &add_bos) && add_bos) { /* [BOS] text */
        uint64_t bl = 0;
        const char *bs = gguf_arr_str(f, "tokenizer.ggml.tokens", (uint64_t)bos, &bl);
        json_t *name = bs ? json_stringn(bs, (size_t)bl) : NULL, *specials = json_object();
        post = name && specials ? json_pack("{s:s, s:[{s:{s:O, s:i}}, {s:{s:s, s:i}}], s:[{s:{s:O, s:i}}, {s:{s:s, s:i}}, "
                                            "{s:{s:O, s:i}}, {s:{s:s, s:i}}], s:O}",
                                            "type", "TemplateProcessing", "single", "SpecialToken", "id", name, "type_id", 0,
                                            "Sequence", "id", "A", "type_id", 0, "pair", "SpecialToken", "id", name, "type_id",
                                            0, "Sequence", "id", "A", "type_id", 0, "SpecialToken", "id", name, "type_id", 1,
                                            "Sequence", "id", "B", "type_id", 1, "special_tokens", specials)
                                : NULL;
        if (post) json_object_setn_new(json_object_get(post, "special_tokens"), bs, (size_t)bl,
                                       json_pack("{s:O, s:[I], s:[O]}", "id", name, "ids", (json_int_t)bos, "tokens", name));
        json_decref(specials);
        json_decref(name);
        if (!name) { /* every token was checked as UTF-8 above: only memory can fail here */
            MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
            json_decref(post);
            goto fail;
        }
    } else {
        post = json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 1, "trim_offsets", 0, "use_regex", 1);
    }
    json_t *root = json_pack("{s:s, s:n, s:n, s:o, s:n, s:{s:s, s:b, s:b, s:b}, s:o, s:{s:s, s:b, s:b, s:b}, "
                             "s:{s:s, s:n, s:n, s:n, s:n, s:b, s:b, s:b, s:o, s:o}}",
                             "version", "1.0", "truncation", "padding", "added_tokens", added, "normalizer", "pre_tokenizer",
                             "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1, "use_regex", 1, "post_processor", post,
                             "decoder", "type", "ByteLevel", "add_prefix_space", 1, "trim_offsets", 1, "use_regex", 1, "model",
                             "type", "BPE", "dropout", "unk_token", "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk", 0,
                             "byte_fallback", 0, "ignore_merges", 0, "vocab", vocab, "merges", merges);
    if (!root) {
        MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
        return NULL;
    }
    mopt_tokenizer *tok = tok_hf_from_json(root, path, err);
    if (tok && !(tok->hf_json = json_dumps(root, JSON_COMPACT))) {
        mopt_tokenizer_free(tok);
        tok = NULL;
        MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    }
    json_decref(root);
    if (tok) {
        if (gguf_get_int(f, "tokenizer.ggml.eos_token_id", &id) && id >= 0 && id < tok->n_vocab) tok->eos_id = (int32_t)id;
        if (bos >= 0) tok->bos_id = (int32_t)bos;
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
    if (*tok) {
        uint64_t cl;
        const char *ct = gguf_get_str(f, "tokenizer.chat_template", &cl); /* within the file: gguf_get_str checked it */
        /* kept as C text and written into tokenizer_config.json, where a NUL would cut it and bad UTF-8 drop it */
        const int bad = ct && cl && !mopt_utf8_text(ct, (size_t)cl);
        if (bad || (ct && cl && !((*tok)->chat_template = strndup(ct, (size_t)cl)))) {
            mopt_tokenizer_free(*tok);
            *tok = NULL;
            return bad ? MOPT_FAIL(err, MOPT_E_FORMAT, "%s: tokenizer.chat_template is not UTF-8 text (a NUL or a malformed byte)", path)
                       : MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
        }
        return MOPT_OK;
    }
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
    const mopt_family *fam = NULL;
    mopt_graph *g = NULL;
    if ((st = arch_from_kv(f, path, &a, &fam, err))) goto done;
    if (!(g = mopt_graph_new(&a, err))) {
        st = MOPT_E_NOMEM;
        goto done;
    }
    if ((st = load_tensors(f, path, g, fam, err))) goto done;
    const mopt_build_src src = {"the GGUF metadata", MOPT_NAMING_GGUF};
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
