/* export.hf: a Hugging Face checkpoint (config.json, safetensors, sharded
 * with an index above max_shard_size, generation_config.json, the tokenizer
 * files) in f32, f16 or bf16, written atomically. Quantized weights are
 * dequantized (format=dense) or kept packed as AWQ, GPTQ or compressed-tensors
 * (hf_quant.c). GPT-2's Conv1D layout ([in, out], fused c_attn) is restored; a
 * llama2.c model's interleaved RoPE rows of q/k are permuted to the rotate-half
 * layout transformers' LLaMA expects. With draft=MODEL the serving-side
 * speculative-decoding settings are written beside it. */
#include <dirent.h>
#include <jansson.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "atomic_dir.h"
#include "export_plugin.h"
#include "hf_quant.h"
#include "rope_order.h"
#include "st_writer.h"

typedef struct {
    st_list l;
    const char *dtype;       /* forced dtype of the float tensors, or NULL: each keeps its own */
    const char *model_dtype; /* of dequantized weights when dtype is NULL */
} entries;

static const char *st_dtype(const entries *es, const mopt_tensor *src) {
    if (es->dtype) return es->dtype;
    return src->dtype == MOPT_DTYPE_F32 ? "F32" : src->dtype == MOPT_DTYPE_F16 ? "F16" : src->dtype == MOPT_DTYPE_BF16 ? "BF16" : es->model_dtype;
}

/* Adds a tensor from fp32 rows [rows, cols] (cols == 0: a vector of rows values),
 * stored in src's dtype unless the export forces one. */
static mopt_status add(const mopt_host_api *h, entries *es, const char *name, const float *v, int64_t rows, int64_t cols,
                       const mopt_tensor *src, mopt_error *err) {
    const int64_t cnt = rows * (cols ? cols : 1), shape[2] = {rows, cols};
    const char *dt = st_dtype(es, src);
    const size_t nbytes = (size_t)cnt * (strcmp(dt, "F32") ? 2 : 4);
    void *data = malloc(nbytes ? nbytes : 1);
    for (int64_t i = 0; data && i < cnt; i++) st_store_float(h, dt, data, i, v[i]);
    return st_list_add(h, &es->l, name, dt, cols ? 2 : 1, shape, data, nbytes, err);
}

/* The tensor as fp32 [rows, cols] (malloc'd). */
static float *dense(const mopt_host_api *h, const mopt_tensor *t, mopt_error *err) {
    int64_t n = h->tensor_nelements(t), cols = t->ne[0], rows = n / cols;
    float *v = malloc((size_t)n * sizeof *v);
    if (!v) return NULL;
    for (int64_t r = 0; r < rows; r++)
        if (h->weight_row_f32(t, r, v + r * cols, err)) {
            free(v);
            return NULL;
        }
    return v;
}

static mopt_status add_tensor(const mopt_host_api *h, entries *es, const char *name, const mopt_tensor *t, mopt_error *err) {
    float *v = dense(h, t, err);
    if (!v) return err && err->code ? (mopt_status)err->code : MOPT_E_NOMEM;
    mopt_status st = add(h, es, name, v, t->ndim == 2 ? t->ne[1] : t->ne[0], t->ndim == 2 ? t->ne[0] : 0, t, err);
    free(v);
    return st;
}

/* new row r of a q/k weight in rotate-half order is interleaved row perm[r] */
static int64_t *rope_perm(int64_t rows, int32_t hd) {
    int64_t *p = malloc((size_t)rows * sizeof *p);
    if (!p) return NULL;
    for (int64_t r = 0; r < rows; r++) p[r] = rope_half_to_interleaved(r, hd);
    return p;
}

static mopt_status gather_llama(const mopt_host_api *h, mopt_graph *g, entries *es, hf_format f, mopt_error *err) {
    const mopt_arch *a = h->graph_arch(g);
    for (int32_t i = 0; i < h->graph_n_tensors(g); i++) {
        const mopt_tensor *t = h->graph_tensor(g, i);
        int is_qk = strstr(t->name, "self_attn.q_proj.weight") || strstr(t->name, "self_attn.k_proj.weight");
        int permute = a->rope_style == MOPT_ROPE_INTERLEAVED && is_qk;
        if (f != HF_DENSE && t->dtype >= MOPT_DTYPE_PACKED_FIRST) {
            int64_t *perm = permute ? rope_perm(t->ne[1], a->head_dim) : NULL;
            if (permute && !perm) return h->error_set(err, MOPT_E_NOMEM, "export.hf", "out of memory");
            mopt_status st = hfq_add_linear(h, &es->l, t, f, perm, err);
            free(perm);
            if (st) return st;
            continue;
        }
        if (permute) {
            const int64_t rows = t->ne[1], cols = t->ne[0];
            float *v = dense(h, t, err), *pv = malloc((size_t)(rows * cols) * sizeof *pv);
            int64_t *perm = rope_perm(rows, a->head_dim);
            mopt_status st = v && pv && perm ? MOPT_OK : h->error_set(err, MOPT_E_NOMEM, "export.hf", "out of memory");
            for (int64_t r = 0; !st && r < rows; r++) memcpy(pv + r * cols, v + perm[r] * cols, (size_t)cols * sizeof *pv);
            if (!st) st = add(h, es, t->name, pv, rows, cols, t, err);
            free(v);
            free(pv);
            free(perm);
            if (st) return st;
            continue;
        }
        mopt_status st = add_tensor(h, es, t->name, t, err);
        if (st) return st;
    }
    return MOPT_OK;
}

/* GPT-2: refuse c_attn from q/k/v and write every linear back as Conv1D [in, out]. */
static mopt_status gather_gpt2(const mopt_host_api *h, mopt_graph *g, entries *es, mopt_error *err) {
    const mopt_arch *a = h->graph_arch(g);
    const int64_t D = a->dim;
    for (int32_t i = 0; i < h->graph_n_tensors(g); i++) {
        const mopt_tensor *t = h->graph_tensor(g, i);
        if (strstr(t->name, ".attn.q_proj.") || strstr(t->name, ".attn.k_proj.") || strstr(t->name, ".attn.v_proj."))
            continue; /* fused below */
        int conv = t->ndim == 2 && (strstr(t->name, ".attn.c_proj.weight") || strstr(t->name, ".mlp.c_fc.weight") ||
                                    strstr(t->name, ".mlp.c_proj.weight"));
        if (!conv) {
            mopt_status st = add_tensor(h, es, t->name, t, err);
            if (st) return st;
            continue;
        }
        float *v = dense(h, t, err), *tr = malloc((size_t)h->tensor_nelements(t) * sizeof *tr);
        if (!v || !tr) {
            free(v);
            free(tr);
            return h->error_set(err, MOPT_E_NOMEM, "export.hf", "out of memory");
        }
        const int64_t out = t->ne[1], in = t->ne[0];
        for (int64_t o = 0; o < out; o++)
            for (int64_t k = 0; k < in; k++) tr[k * out + o] = v[o * in + k];
        mopt_status st = add(h, es, t->name, tr, in, out, t, err);
        free(v);
        free(tr);
        if (st) return st;
    }
    for (int32_t l = 0; l < a->n_layers; l++) {
        float *W = malloc((size_t)(D * 3 * D) * sizeof *W), *B = malloc((size_t)(3 * D) * sizeof *B);
        if (!W || !B) {
            free(W);
            free(B);
            return h->error_set(err, MOPT_E_NOMEM, "export.hf", "out of memory");
        }
        static const char *const qkv[3] = {"q_proj", "k_proj", "v_proj"};
        mopt_status st = MOPT_OK;
        for (int p = 0; p < 3 && !st; p++) {
            char name[128];
            snprintf(name, sizeof name, "transformer.h.%d.attn.%s.weight", l, qkv[p]);
            const mopt_tensor *w = h->graph_find_tensor(g, name);
            snprintf(name, sizeof name, "transformer.h.%d.attn.%s.bias", l, qkv[p]);
            const mopt_tensor *b = h->graph_find_tensor(g, name);
            float *v = w ? dense(h, w, err) : NULL;
            if (!v || !b) {
                free(v);
                st = h->error_set(err, MOPT_E_FORMAT, "export.hf", "layer %d lacks its q/k/v projections", l);
                break;
            }
            for (int64_t o = 0; o < D; o++)
                for (int64_t k = 0; k < D; k++) W[k * 3 * D + p * D + o] = v[o * D + k];
            st = h->tensor_read_f32(b, 0, D, B + p * D, err);
            free(v);
        }
        char wn[128], bn[128];
        snprintf(wn, sizeof wn, "transformer.h.%d.attn.q_proj.weight", l);
        const mopt_tensor *qw = h->graph_find_tensor(g, wn);
        snprintf(bn, sizeof bn, "transformer.h.%d.attn.q_proj.bias", l);
        const mopt_tensor *qb = h->graph_find_tensor(g, bn);
        snprintf(wn, sizeof wn, "transformer.h.%d.attn.c_attn.weight", l);
        snprintf(bn, sizeof bn, "transformer.h.%d.attn.c_attn.bias", l);
        if (!st) st = add(h, es, wn, W, D, 3 * D, qw, err);
        if (!st) st = add(h, es, bn, B, 3 * D, 0, qb, err);
        free(W);
        free(B);
        if (st) return st;
    }
    return MOPT_OK;
}

static json_t *config_json(const mopt_arch *a, const char *torch_dtype) {
    json_t *c;
    if (!strcmp(a->family, "gpt2")) {
        c = json_pack("{s:[s], s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:s, s:b, s:s}", "architectures", "GPT2LMHeadModel",
                      "model_type", "gpt2", "n_embd", a->dim, "n_layer", a->n_layers, "n_head", a->n_heads, "n_inner",
                      a->ffn_dim, "n_positions", a->max_ctx, "vocab_size", a->vocab_size, "layer_norm_epsilon",
                      (double)a->norm_eps, "activation_function", "gelu_new", "tie_word_embeddings", a->tied_embeddings,
                      "torch_dtype", torch_dtype);
    } else {
        int qwen = a->qkv_bias && !a->o_bias;
        c = json_pack("{s:[s], s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, s:n, s:s, s:b, s:b, s:b, s:s}",
                      "architectures", qwen ? "Qwen2ForCausalLM" : "LlamaForCausalLM", "model_type", qwen ? "qwen2" : "llama",
                      "hidden_size", a->dim, "intermediate_size", a->ffn_dim, "num_hidden_layers", a->n_layers,
                      "num_attention_heads", a->n_heads, "num_key_value_heads", a->n_kv_heads, "head_dim", a->head_dim,
                      "max_position_embeddings", a->max_ctx, "vocab_size", a->vocab_size, "rms_norm_eps", (double)a->norm_eps,
                      "rope_theta", (double)a->rope_theta, "rope_scaling", "hidden_act", "silu", "tie_word_embeddings",
                      a->tied_embeddings, "attention_bias", a->o_bias, "mlp_bias", a->mlp_bias, "torch_dtype", torch_dtype);
    }
    if (a->bos_id >= 0) json_object_set_new(c, "bos_token_id", json_integer(a->bos_id));
    if (a->eos_id >= 0) json_object_set_new(c, "eos_token_id", json_integer(a->eos_id));
    return c;
}

static mopt_status write_json(const mopt_host_api *h, const atomic_dir *d, const char *name, json_t *j, mopt_error *err) {
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
    if (!text) return h->error_set(err, MOPT_E_NOMEM, "export.hf", "out of memory");
    size_t n = strlen(text);
    text[n] = '\n';
    mopt_status st = atomic_dir_write(h, d, name, text, n + 1, err);
    free(text);
    return st;
}

/* Tokenizer files beside the source: an HF directory's tokenizer*.json and
 * special_tokens_map.json, or a llama2.c tokenizer.bin / tok*.bin (kept as tokenizer.bin). */
mopt_status export_copy_tokenizer(const mopt_host_api *h, const char *src, const atomic_dir *d, mopt_error *err) {
    char dir[4096], tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", src);
    DIR *dd = opendir(src);
    snprintf(dir, sizeof dir, "%s", dd ? src : dirname(tmp));
    if (!dd) dd = opendir(dir);
    if (!dd) return MOPT_OK;
    struct dirent *e;
    mopt_status st = MOPT_OK;
    int have_bin = 0;
    while ((e = readdir(dd)) && !st) {
        const char *n = e->d_name;
        size_t len = strlen(n);
        int hf = !strcmp(n, "tokenizer.json") || !strcmp(n, "tokenizer_config.json") || !strcmp(n, "special_tokens_map.json");
        int l2c = !have_bin && !strncmp(n, "tok", 3) && len > 4 && !strcmp(n + len - 4, ".bin");
        if (!hf && !l2c) continue;
        char path[4400];
        snprintf(path, sizeof path, "%s/%s", dir, n);
        char *data;
        size_t sz;
        if (h->read_file(path, &data, &sz, err)) {
            st = (mopt_status)err->code;
            break;
        }
        st = atomic_dir_write(h, d, hf ? n : "tokenizer.bin", data, sz, err);
        have_bin |= l2c;
        h->free(data);
    }
    closedir(dd);
    return st;
}

static mopt_status run(const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *g, const mopt_options *o,
                       mopt_report *report, mopt_error *err) {
    mopt_model *m = h->ctx_model(ctx);
    if (!m || !g) return h->error_set(err, MOPT_E_INVALID, "export.hf", "needs a model");
    const mopt_arch *a = h->graph_arch(g);
    const char *want = h->opt_string(o, "dtype");
    const mopt_tensor *emb = h->graph_tensor(g, 0);
    const char *model_dt = emb && emb->dtype == MOPT_DTYPE_F32 ? "F32" : emb && emb->dtype == MOPT_DTYPE_F16 ? "F16" : "BF16";
    const char *forced = !strcmp(want, "f32") ? "F32" : !strcmp(want, "f16") ? "F16" : !strcmp(want, "bf16") ? "BF16" : NULL;
    const char *dt = forced ? forced : model_dt;
    const char *torch = !strcmp(dt, "F32") ? "float32" : !strcmp(dt, "F16") ? "float16" : "bfloat16";
    const char *fs = h->opt_string(o, "format");
    hf_format f = !strcmp(fs, "awq") ? HF_AWQ : !strcmp(fs, "gptq") ? HF_GPTQ : !strcmp(fs, "compressed-tensors") ? HF_CT
                  : !strcmp(fs, "modelopt") ? HF_MODELOPT : HF_DENSE;
    hfq_scheme scheme;
    if (!strcmp(fs, "auto")) f = HF_DENSE;
    mopt_status st = hfq_scheme_of(h, g, f, &scheme, err);
    if (st) return st;
    if (!strcmp(fs, "auto") && scheme.n_packed) f = HF_CT;
    if (f != HF_DENSE && !scheme.n_packed)
        return h->error_set(err, MOPT_E_INVALID, "export.hf", "format %s needs a quantized model (run a quant pass first)", fs);
    if (f != HF_DENSE && !strcmp(a->family, "gpt2"))
        return h->error_set(err, MOPT_E_UNSUPPORTED, "export.hf", "quantized GPT-2 exports are not supported (fused Conv1D c_attn); use format=dense");
    atomic_dir d;
    st = atomic_dir_begin(h, ctx, &d, h->opt_string(o, "out"), h->opt_bool(o, "force"), 0, err);
    if (st) return st;
    entries es = {{0}, forced, model_dt};
    st = !strcmp(a->family, "gpt2") ? gather_gpt2(h, g, &es, err) : gather_llama(h, g, &es, f, err);
    /* shards of at most max_shard_size bytes */
    const int64_t max_shard = h->opt_int(o, "max_shard_size");
    int64_t total = 0;
    for (int32_t i = 0; i < es.l.n; i++) total += (int64_t)es.l.e[i].nbytes;
    int32_t shards = 1;
    if (!st && total > max_shard) {
        int64_t cur = 0;
        shards = 1;
        for (int32_t i = 0; i < es.l.n; i++) {
            if (cur > 0 && cur + (int64_t)es.l.e[i].nbytes > max_shard) shards++, cur = 0;
            cur += (int64_t)es.l.e[i].nbytes;
        }
    }
    json_t *weight_map = json_object();
    for (int32_t s = 0, i = 0; !st && s < shards; s++) {
        int32_t first = i;
        int64_t cur = 0;
        while (i < es.l.n && (cur == 0 || cur + (int64_t)es.l.e[i].nbytes <= max_shard || s == shards - 1)) cur += (int64_t)es.l.e[i++].nbytes;
        char name[128];
        if (shards == 1) snprintf(name, sizeof name, "model.safetensors");
        else snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", s + 1, shards);
        for (int32_t k = first; k < i; k++) json_object_set_new(weight_map, es.l.e[k].name, json_string(name));
        if (h->interrupted()) st = h->error_set(err, MOPT_E_INTERRUPTED, "export.hf", "interrupted before %s", name);
        if (!st) st = st_write_file(h, &d, name, es.l.e + first, i - first, err);
        if (!st && h->opt_int(o, "pause_ms") > 0) { /* diagnostic: lets a test interrupt a half-written export */
            struct timespec ts = {h->opt_int(o, "pause_ms") / 1000, (h->opt_int(o, "pause_ms") % 1000) * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    if (!st && shards > 1) {
        json_t *idx = json_pack("{s:{s:I}, s:O}", "metadata", "total_size", (json_int_t)total, "weight_map", weight_map);
        st = write_json(h, &d, "model.safetensors.index.json", idx, err);
        json_decref(idx);
    }
    json_decref(weight_map);
    if (!st) {
        json_t *cfg = config_json(a, torch);
        if (f != HF_DENSE) json_object_set_new(cfg, "quantization_config", hfq_config(h, g, f, &scheme));
        if (f == HF_MODELOPT) {
            json_t *hq = hfq_modelopt_file(h, g, &scheme);
            st = write_json(h, &d, "hf_quant_config.json", hq, err);
            json_decref(hq);
        }
        if (!st) st = write_json(h, &d, "config.json", cfg, err);
        json_decref(cfg);
    }
    if (!st) {
        json_t *gen = json_object();
        if (a->bos_id >= 0) json_object_set_new(gen, "bos_token_id", json_integer(a->bos_id));
        if (a->eos_id >= 0) json_object_set_new(gen, "eos_token_id", json_integer(a->eos_id));
        st = write_json(h, &d, "generation_config.json", gen, err);
        json_decref(gen);
    }
    if (!st) st = export_copy_tokenizer(h, h->model_path(m), &d, err);
    if (!st && h->opt_is_set(o, "draft")) {
        const int64_t k = h->opt_int(o, "num_speculative_tokens");
        json_t *sc = json_pack("{s:{s:s, s:I}, s:{s:s, s:I, s:s}}", "vllm", "model", h->opt_string(o, "draft"),
                               "num_speculative_tokens", (json_int_t)k, "tensorrt_llm", "speculative_decoding_mode",
                               "draft_tokens_external", "max_draft_len", (json_int_t)k, "draft_model", h->opt_string(o, "draft"));
        st = write_json(h, &d, "speculative_config.json", sc, err);
        json_decref(sc);
    }
    st_list_free(&es.l);
    if (!st) st = atomic_dir_commit(h, &d, err);
    if (st) {
        atomic_dir_abort(&d);
        return st;
    }
    h->report_artifact(report, "hf-checkpoint", d.target);
    h->report_metric(report, "bytes", (double)total);
    h->report_metric(report, "shards", shards);
    h->report_string(report, "dtype", torch);
    h->report_string(report, "format", fs);
    return MOPT_OK;
}

static const char *const dtypes[] = {"auto", "f32", "f16", "bf16", NULL};
static const char *const formats[] = {"auto", "dense", "awq", "gptq", "compressed-tensors", "modelopt", NULL};

static const mopt_opt_spec opts[] = {
    {"out", MOPT_OPT_STRING, MOPT_OPT_REQUIRED, "target directory (written atomically)", NULL, 0, -1, NULL},
    {"format", MOPT_OPT_ENUM, 0, "auto: dense for a float model, compressed-tensors for a quantized one; dense dequantizes; awq (GEMM, int4), gptq (v1), compressed-tensors and modelopt (unified checkpoint: W4A16_AWQ, FP8) keep the packed weights bit for bit", "auto", 0, -1, formats},
    {"dtype", MOPT_OPT_ENUM, 0, "dtype of the float tensors; auto keeps each tensor's own (dequantized weights take the embeddings')", "auto", 0, -1, dtypes},
    {"force", MOPT_OPT_BOOL, 0, "replace an existing target", "false", 0, -1, NULL},
    {"max_shard_size", MOPT_OPT_INT, 0, "bytes per safetensors shard before splitting (with an index)", "5000000000", 1024, 1e15, NULL},
    {"draft", MOPT_OPT_STRING, 0, "draft model path for speculative decoding: writes speculative_config.json", NULL, 0, -1, NULL},
    {"num_speculative_tokens", MOPT_OPT_INT, 0, "tokens the draft proposes per step (vLLM num_speculative_tokens, TRT-LLM max_draft_len)", "4", 1, 64, NULL},
    {"pause_ms", MOPT_OPT_INT, 0, "diagnostic: sleep after each shard (to test interrupted exports)", "0", 0, 600000, NULL},
};

const mopt_pass_desc export_hf_pass = {
    .struct_size = sizeof(mopt_pass_desc),
    .kind = MOPT_PASS_EXPORT,
    .name = "export.hf",
    .summary = "dense Hugging Face checkpoint (safetensors, config, tokenizer), atomic; GPT-2 Conv1D kept",
    .opts = opts,
    .n_opts = sizeof opts / sizeof *opts,
    .run = run,
};
