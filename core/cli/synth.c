/* mopt synth: a random-weight checkpoint of a given shape, streamed tensor by
 * tensor into model.safetensors (memory stays at one chunk whatever the
 * size), with config.json and a tokenizer, in a temporary directory renamed
 * into place at the end. Linears are N(0, 1/fan_in): with normalized inputs
 * every projection's output has unit scale, so the residual stream grows like
 * sqrt(depth) and the logits stay near unit scale, as in a trained model. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <jansson.h>

#include "cli.h"
#include "synth.h"

#define MOPT_FAIL(err, code, ...) mopt_error_set((err), (code), __func__, __VA_ARGS__)
#define SYNTH_MAX_TENSORS 4096
#define SYNTH_CHUNK (1 << 20) /* elements generated and written at a time */

typedef struct {
    char name[96];
    int32_t ndim;
    int64_t ne[2]; /* HF order: rows, columns */
    double sigma;  /* > 0: gaussian; 0: zeros; < 0: ones */
} synth_tensor;

typedef struct {
    synth_tensor t[SYNTH_MAX_TENSORS];
    int32_t n;
} synth_list;

static void add(synth_list *l, const char *name, int64_t rows, int64_t cols, double sigma) {
    if (l->n >= SYNTH_MAX_TENSORS) return; /* synth_check bounds the layers first */
    synth_tensor *t = &l->t[l->n++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = cols ? 2 : 1;
    t->ne[0] = rows, t->ne[1] = cols;
    t->sigma = sigma;
}

static void tensors_of(const synth_spec *s, synth_list *l) {
    char n[96];
    const int64_t D = s->dim, F = s->ffn, hd = s->dim / s->heads, KV = s->kv_heads * hd;
    l->n = 0;
    if (!strcmp(s->arch, "gpt2")) { /* Conv1D weights are [in, out] */
        add(l, "transformer.wte.weight", s->vocab, D, 0.02);
        add(l, "transformer.wpe.weight", s->ctx, D, 0.01);
        for (int64_t i = 0; i < s->layers; i++) {
#define G(suffix, r, c, sg) (snprintf(n, sizeof n, "transformer.h.%" PRId64 ".%s", i, suffix), add(l, n, r, c, sg))
            G("ln_1.weight", D, 0, -1), G("ln_1.bias", D, 0, 0);
            G("attn.c_attn.weight", D, 3 * D, 1 / sqrt((double)D)), G("attn.c_attn.bias", 3 * D, 0, 0);
            G("attn.c_proj.weight", D, D, 1 / sqrt((double)D)), G("attn.c_proj.bias", D, 0, 0);
            G("ln_2.weight", D, 0, -1), G("ln_2.bias", D, 0, 0);
            G("mlp.c_fc.weight", D, F, 1 / sqrt((double)D)), G("mlp.c_fc.bias", F, 0, 0);
            G("mlp.c_proj.weight", F, D, 1 / sqrt((double)F)), G("mlp.c_proj.bias", D, 0, 0);
#undef G
        }
        add(l, "transformer.ln_f.weight", D, 0, -1);
        add(l, "transformer.ln_f.bias", D, 0, 0);
        return;
    }
    add(l, "model.embed_tokens.weight", s->vocab, D, 0.02);
    for (int64_t i = 0; i < s->layers; i++) {
#define L(suffix, r, c, sg) (snprintf(n, sizeof n, "model.layers.%" PRId64 ".%s", i, suffix), add(l, n, r, c, sg))
        L("input_layernorm.weight", D, 0, -1);
        L("self_attn.q_proj.weight", s->heads * hd, D, 1 / sqrt((double)D));
        L("self_attn.k_proj.weight", KV, D, 1 / sqrt((double)D));
        L("self_attn.v_proj.weight", KV, D, 1 / sqrt((double)D));
        L("self_attn.o_proj.weight", D, s->heads * hd, 1 / sqrt((double)(s->heads * hd)));
        L("post_attention_layernorm.weight", D, 0, -1);
        L("mlp.gate_proj.weight", F, D, 1 / sqrt((double)D));
        L("mlp.up_proj.weight", F, D, 1 / sqrt((double)D));
        L("mlp.down_proj.weight", D, F, 1 / sqrt((double)F));
#undef L
    }
    add(l, "model.norm.weight", D, 0, -1);
    if (!s->tied) add(l, "lm_head.weight", s->vocab, D, 1 / sqrt((double)D));
}

static int64_t elems(const synth_tensor *t) { return t->ne[0] * (t->ndim == 2 ? t->ne[1] : 1); }
static int dtype_size(const char *d) { return !strcmp(d, "f32") ? 4 : 2; }

mopt_status synth_check(const synth_spec *s, int64_t *params, int64_t *bytes, mopt_error *err) {
    const int gpt2 = !strcmp(s->arch, "gpt2");
    if (!gpt2 && strcmp(s->arch, "llama")) return MOPT_FAIL(err, MOPT_E_INVALID, "--arch %s: expected llama or gpt2", s->arch);
    if (strcmp(s->dtype, "bf16") && strcmp(s->dtype, "f16") && strcmp(s->dtype, "f32"))
        return MOPT_FAIL(err, MOPT_E_INVALID, "--dtype %s: expected bf16, f16 or f32", s->dtype);
    const int64_t v[6] = {s->dim, s->layers, s->heads, s->kv_heads, s->ffn, s->vocab};
    static const char *const what[6] = {"--hidden", "--layers", "--heads", "--kv-heads", "--ffn", "--vocab"};
    for (int i = 0; i < 6; i++)
        if (v[i] < 1 || v[i] > (1 << 20)) return MOPT_FAIL(err, MOPT_E_INVALID, "%s %" PRId64 " is not in 1..%d", what[i], v[i], 1 << 20);
    if (s->layers > (SYNTH_MAX_TENSORS - 8) / 13)
        return MOPT_FAIL(err, MOPT_E_INVALID, "--layers %" PRId64 ": at most %d", s->layers, (SYNTH_MAX_TENSORS - 8) / 13);
    if (s->dim % s->heads) return MOPT_FAIL(err, MOPT_E_INVALID, "--hidden %" PRId64 " is not a multiple of --heads %" PRId64, s->dim, s->heads);
    if (s->heads % s->kv_heads)
        return MOPT_FAIL(err, MOPT_E_INVALID, "--heads %" PRId64 " do not divide into --kv-heads %" PRId64 " query groups", s->heads, s->kv_heads);
    if (gpt2 && s->kv_heads != s->heads) return MOPT_FAIL(err, MOPT_E_INVALID, "gpt2 has one key/value head per head: --kv-heads must equal --heads");
    if (!s->tokenizer_dir && s->vocab < 257)
        return MOPT_FAIL(err, MOPT_E_INVALID, "--vocab %" PRId64 " is below the generated byte-level tokenizer's 257 tokens", s->vocab);
    synth_list *l = malloc(sizeof *l);
    if (!l) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    tensors_of(s, l);
    *params = 0;
    for (int32_t i = 0; i < l->n; i++) *params += elems(&l->t[i]);
    *bytes = *params * dtype_size(s->dtype);
    free(l);
    return MOPT_OK;
}

/* splitmix64, then Box-Muller: one gaussian per call, the pair's second kept. */
typedef struct {
    uint64_t s;
    int have;
    double spare;
} synth_rng;

static uint64_t next64(synth_rng *r) {
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double gauss(synth_rng *r) {
    if (r->have) {
        r->have = 0;
        return r->spare;
    }
    const double u1 = ((double)(next64(r) >> 11) + 1.0) / 9007199254740993.0, u2 = (double)(next64(r) >> 11) / 9007199254740992.0;
    const double m = sqrt(-2.0 * log(u1));
    r->spare = m * sin(2 * M_PI * u2), r->have = 1;
    return m * cos(2 * M_PI * u2);
}

static mopt_status write_all(FILE *f, const void *p, size_t n, const char *path, mopt_error *err) {
    if (fwrite(p, 1, n, f) != n) return MOPT_FAIL(err, MOPT_E_IO, "cannot write %s: %s", path, strerror(errno));
    return MOPT_OK;
}

static mopt_status write_weights(const synth_spec *s, const synth_list *l, const char *path, int quiet, mopt_error *err) {
    const char *dt = !strcmp(s->dtype, "f32") ? "F32" : !strcmp(s->dtype, "f16") ? "F16" : "BF16";
    const int es = dtype_size(s->dtype);
    json_t *h = json_object();
    json_object_set_new(h, "__metadata__", json_pack("{s:s, s:s}", "format", "pt", "producer", "mopt synth"));
    int64_t off = 0;
    for (int32_t i = 0; i < l->n; i++) {
        const synth_tensor *t = &l->t[i];
        json_t *shape = t->ndim == 2 ? json_pack("[I, I]", (json_int_t)t->ne[0], (json_int_t)t->ne[1]) : json_pack("[I]", (json_int_t)t->ne[0]);
        const int64_t nb = elems(t) * es;
        json_object_set_new(h, t->name, json_pack("{s:s, s:o, s:[I, I]}", "dtype", dt, "shape", shape, "data_offsets", (json_int_t)off,
                                                  (json_int_t)(off + nb)));
        off += nb;
    }
    char *hj = json_dumps(h, JSON_COMPACT);
    json_decref(h);
    if (!hj) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    const size_t hlen = strlen(hj), padded = (hlen + 7) / 8 * 8;
    FILE *f = fopen(path, "wb");
    void *buf = malloc((size_t)SYNTH_CHUNK * 4);
    mopt_status st = f && buf ? MOPT_OK : MOPT_FAIL(err, f ? MOPT_E_NOMEM : MOPT_E_IO, "cannot write %s: %s", path, f ? "out of memory" : strerror(errno));
    const uint64_t hl = padded;
    if (!st) st = write_all(f, &hl, 8, path, err);
    if (!st) st = write_all(f, hj, hlen, path, err);
    for (size_t i = hlen; !st && i < padded; i++) st = write_all(f, " ", 1, path, err);
    free(hj);
    synth_rng rng = {s->seed * 0xD1B54A32D192ED03ull + 1, 0, 0};
    int64_t done = 0, shown = -1;
    for (int32_t i = 0; i < l->n && !st; i++) {
        const synth_tensor *t = &l->t[i];
        for (int64_t k = 0; k < elems(t) && !st; k += SYNTH_CHUNK) {
            const int64_t m = elems(t) - k < SYNTH_CHUNK ? elems(t) - k : SYNTH_CHUNK;
            for (int64_t e = 0; e < m; e++) {
                const float v = t->sigma > 0 ? (float)(t->sigma * gauss(&rng)) : t->sigma < 0 ? 1.0f : 0.0f;
                if (es == 4) ((float *)buf)[e] = v;
                else ((uint16_t *)buf)[e] = !strcmp(s->dtype, "f16") ? mopt_f32_to_f16(v) : mopt_f32_to_bf16(v);
            }
            st = write_all(f, buf, (size_t)(m * es), path, err);
            done += m * es;
            if (!st && mopt_interrupted()) st = MOPT_FAIL(err, MOPT_E_INTERRUPTED, "interrupted while writing %s", path);
            if (!quiet && off > 0 && done * 50 / off != shown) {
                char bar[96];
                shown = done * 50 / off;
                snprintf(bar, sizeof bar, "  [synth] %3d%% (%.2f of %.2f GB)", (int)(done * 100 / off), (double)done / 1e9, (double)off / 1e9);
                mopt_log_stderr(NULL, MOPT_LOG_PROGRESS, bar);
            }
        }
    }
    if (!quiet) mopt_log_stderr_flush();
    free(buf);
    if (f && fclose(f) && !st) st = MOPT_FAIL(err, MOPT_E_IO, "cannot write %s: %s", path, strerror(errno));
    return st;
}

static json_t *config_of(const synth_spec *s) {
    const char *td = !strcmp(s->dtype, "f32") ? "float32" : !strcmp(s->dtype, "f16") ? "float16" : "bfloat16";
    if (!strcmp(s->arch, "gpt2"))
        return json_pack("{s:[s], s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:s, s:f, s:b, s:s, s:i, s:i}", "architectures", "GPT2LMHeadModel",
                         "model_type", "gpt2", "n_embd", (json_int_t)s->dim, "n_layer", (json_int_t)s->layers, "n_head", (json_int_t)s->heads,
                         "n_inner", (json_int_t)s->ffn, "n_positions", (json_int_t)s->ctx, "vocab_size", (json_int_t)s->vocab,
                         "activation_function", "gelu_new", "layer_norm_epsilon", 1e-5, "tie_word_embeddings", 1, "torch_dtype", td,
                         "bos_token_id", 0, "eos_token_id", 0);
    return json_pack("{s:[s], s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:f, s:b, s:s, s:s, s:i, s:i}", "architectures",
                     "LlamaForCausalLM", "model_type", "llama", "hidden_size", (json_int_t)s->dim, "intermediate_size", (json_int_t)s->ffn,
                     "num_hidden_layers", (json_int_t)s->layers, "num_attention_heads", (json_int_t)s->heads, "num_key_value_heads",
                     (json_int_t)s->kv_heads, "head_dim", (json_int_t)(s->dim / s->heads), "max_position_embeddings", (json_int_t)s->ctx,
                     "vocab_size", (json_int_t)s->vocab, "rms_norm_eps", 1e-5, "rope_theta", s->rope_theta, "tie_word_embeddings", s->tied,
                     "hidden_act", "silu", "torch_dtype", td, "bos_token_id", 0, "eos_token_id", 0);
}

/* GPT-2's byte-to-unicode map (bytes that print stand for themselves, the rest
 * move to U+0100 and up): 256 single-byte tokens after <|endoftext|>, no merges. */
static json_t *byte_level_tokenizer(void) {
    json_t *vocab = json_object();
    json_object_set_new(vocab, "<|endoftext|>", json_integer(0));
    int next = 256;
    for (int b = 0; b < 256; b++) {
        const int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
        const int cp = printable ? b : next++;
        char u[4] = {0};
        if (cp < 0x80) u[0] = (char)cp;
        else u[0] = (char)(0xC0 | cp >> 6), u[1] = (char)(0x80 | (cp & 0x3F));
        json_object_set_new(vocab, u, json_integer(b + 1));
    }
    json_t *bl = json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1, "use_regex", 1);
    return json_pack("{s:s, s:n, s:[{s:i, s:s, s:b, s:b, s:b, s:b, s:b}], s:n, s:O, s:n, s:o, s:{s:s, s:n, s:n, s:n, s:n, s:b, s:b, s:b, s:o, s:[]}}",
                     "version", "1.0", "truncation", "added_tokens", "id", 0, "content", "<|endoftext|>", "single_word", 0, "lstrip", 0,
                     "rstrip", 0, "normalized", 0, "special", 1, "normalizer", "pre_tokenizer", bl, "post_processor", "decoder", bl, "model",
                     "type", "BPE", "dropout", "unk_token", "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk", 0,
                     "byte_fallback", 0, "ignore_merges", 0, "vocab", vocab, "merges");
}

/* The largest token id a tokenizer.json names (model vocabulary and added tokens). */
static mopt_status tokenizer_max_id(const char *path, int64_t *max_id, mopt_error *err) {
    json_error_t je;
    json_t *t = json_load_file(path, 0, &je);
    if (!t) return MOPT_FAIL(err, MOPT_E_FORMAT, "%s:%d:%d: %s", path, je.line, je.column, je.text);
    *max_id = -1;
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(json_object_get(t, "model"), "vocab"), k, v) if (json_integer_value(v) > *max_id) *max_id = json_integer_value(v);
    size_t i;
    json_array_foreach(json_object_get(t, "added_tokens"), i, v) {
        const json_int_t id = json_integer_value(json_object_get(v, "id"));
        if (id > *max_id) *max_id = id;
    }
    json_decref(t);
    return *max_id >= 0 ? MOPT_OK : MOPT_FAIL(err, MOPT_E_FORMAT, "%s holds no vocabulary", path);
}

static mopt_status copy_file(const char *from, const char *to, mopt_error *err) {
    char *data;
    size_t n;
    mopt_status st = cli_read_text(from, &data, &n, err);
    if (st) return st;
    FILE *f = fopen(to, "wb");
    if (!f || fwrite(data, 1, n, f) != n) st = MOPT_FAIL(err, MOPT_E_IO, "cannot write %s: %s", to, strerror(errno));
    if (f && fclose(f) && !st) st = MOPT_FAIL(err, MOPT_E_IO, "cannot write %s: %s", to, strerror(errno));
    free(data);
    return st;
}

static const char *const synth_files[] = {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"};

mopt_status synth_write(const synth_spec *s, const char *out, int quiet, mopt_error *err) {
    int64_t params, bytes;
    mopt_status st = synth_check(s, &params, &bytes, err);
    if (st) return st;
    struct stat sb;
    if (lstat(out, &sb) == 0) return MOPT_FAIL(err, MOPT_E_INVALID, "%s already exists; give a new directory", out);
    if (s->tokenizer_dir) { /* before any writing: its ids must fit the embedding */
        char tj[4200];
        int64_t max_id = -1;
        snprintf(tj, sizeof tj, "%s/tokenizer.json", s->tokenizer_dir);
        if ((st = tokenizer_max_id(tj, &max_id, err))) return st;
        if (max_id >= s->vocab)
            return MOPT_FAIL(err, MOPT_E_INVALID, "%s names token %" PRId64 ", beyond --vocab %" PRId64 "; give a larger vocabulary or drop --tokenizer",
                             tj, max_id, s->vocab);
    }
    char tmp[4200], path[4300], src[4300];
    snprintf(tmp, sizeof tmp, "%s.tmp-XXXXXX", out);
    if (!mkdtemp(tmp)) return MOPT_FAIL(err, MOPT_E_IO, "cannot create a directory beside %s: %s", out, strerror(errno));
    struct statvfs vfs;
    if (statvfs(tmp, &vfs) == 0 && (double)vfs.f_bavail * (double)vfs.f_frsize < (double)bytes * 1.01)
        st = MOPT_FAIL(err, MOPT_E_IO, "%s needs %.2f GB and its filesystem has %.2f GB free", out, (double)bytes / 1e9,
                       (double)vfs.f_bavail * (double)vfs.f_frsize / 1e9);
    synth_list *l = malloc(sizeof *l);
    if (!st && !l) st = MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    if (!st) {
        tensors_of(s, l);
        snprintf(path, sizeof path, "%s/model.safetensors", tmp);
        st = write_weights(s, l, path, quiet, err);
    }
    free(l);
    if (!st) {
        snprintf(path, sizeof path, "%s/config.json", tmp);
        json_t *cfg = config_of(s);
        st = cli_write_json(path, cfg, err);
        json_decref(cfg);
    }
    if (!st && s->tokenizer_dir) {
        snprintf(src, sizeof src, "%s/tokenizer.json", s->tokenizer_dir);
        snprintf(path, sizeof path, "%s/tokenizer.json", tmp);
        if (!st) st = copy_file(src, path, err);
        snprintf(src, sizeof src, "%s/tokenizer_config.json", s->tokenizer_dir);
        snprintf(path, sizeof path, "%s/tokenizer_config.json", tmp);
        if (!st && access(src, R_OK) == 0) st = copy_file(src, path, err);
    } else if (!st) {
        snprintf(path, sizeof path, "%s/tokenizer.json", tmp);
        json_t *tok = byte_level_tokenizer();
        st = cli_write_json(path, tok, err);
        json_decref(tok);
    }
    const mode_t mask = umask(0);
    umask(mask);
    if (!st && chmod(tmp, 0777 & ~mask)) st = MOPT_FAIL(err, MOPT_E_IO, "cannot set the mode of %s: %s", tmp, strerror(errno));
    if (!st && rename(tmp, out)) st = MOPT_FAIL(err, MOPT_E_IO, "cannot rename %s to %s: %s", tmp, out, strerror(errno));
    if (st) { /* only the files written here, then the directory made here */
        for (size_t i = 0; i < sizeof synth_files / sizeof *synth_files; i++) {
            snprintf(path, sizeof path, "%s/%s", tmp, synth_files[i]);
            unlink(path);
        }
        rmdir(tmp);
    }
    return st;
}
