/* export.hf: a Hugging Face checkpoint (config.json, safetensors, sharded
 * with an index above max_shard_size, generation_config.json, the tokenizer
 * files) in f32, f16 or bf16, written atomically. Quantized weights are
 * dequantized (format=dense) or kept packed as AWQ, GPTQ, compressed-tensors
 * or ModelOpt's unified checkpoint. This pass chooses the layout and the
 * dtypes, shards, and places the files; the tensors as Hugging Face stores them
 * (GPT-2's Conv1D [in, out] and fused c_attn, q/k rows in rotate-half order)
 * and every encoding are the core's (mopt_file_tensors, core/formats); files
 * are written one tensor at a time (st_stream.c). With
 * draft=MODEL the serving-side speculative-decoding settings are written beside it. */
#include <dirent.h>
#include <jansson.h>
#include <libgen.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "atomic_dir.h"
#include "export_plugin.h"
#include "st_stream.h"

static mopt_status write_text(const mopt_host_api *h, const atomic_dir *d, const char *name, char *text, mopt_error *err) {
    if (!text) return err && err->code ? (mopt_status)err->code : h->error_set(err, MOPT_E_NOMEM, "export.hf", "out of memory");
    mopt_status st = atomic_dir_write(h, d, name, text, strlen(text), err);
    h->free(text);
    return st;
}

/* A packed layout stores a linear's own weight; a fused or Conv1D-transposed
 * HF tensor (GPT-2's c_attn) cannot hold packed rows. */
static mopt_status check_packable(const mopt_host_api *h, const mopt_file_tensor *fts, int32_t n, const char *fs, mopt_error *err) {
    for (int32_t i = 0; i < n; i++)
        if (fts[i].src[0]->dtype >= MOPT_DTYPE_PACKED_FIRST && fts[i].role != MOPT_ROLE_LM_HEAD && fts[i].role != MOPT_ROLE_EMBED &&
            (fts[i].n_src > 1 || fts[i].transposed))
            return h->error_set(err, MOPT_E_UNSUPPORTED, "export.hf",
                                "%s is fused or Conv1D-transposed in the Hugging Face layout, which format %s cannot pack; use format=dense",
                                fts[i].name, fs);
    return MOPT_OK;
}

typedef struct {
    const mopt_host_api *h;
    const mopt_graph *g;
    const mopt_file_tensor *fts;
    mopt_hf_layout layout;
    const char *forced, *model_dt;
    int lm_packed; /* lm_head was quantized in the scheme (lm_head=true): written packed too */
} hf_enc;

/* The entries file tensor i becomes in the layout: a packed linear as the
 * layout stores it, the rest as floats (forced dtype, else each its own;
 * dequantized ones, a packed lm_head and a quantized embedding table among
 * them, take model_dt: vLLM and the HF layouts load embeddings in float); a k_proj or
 * v_proj of a quantized KV cache brings its scale along. */
static mopt_status encode(void *user, int32_t i, mopt_st_list *l, mopt_error *err) {
    const hf_enc *x = user;
    const mopt_file_tensor *ft = &x->fts[i];
    const mopt_tensor *s = ft->src[0];
    mopt_status st;
    if (x->layout != MOPT_HF_DENSE && s->dtype >= MOPT_DTYPE_PACKED_FIRST && ft->role != MOPT_ROLE_EMBED &&
        (ft->role != MOPT_ROLE_LM_HEAD || x->lm_packed)) {
        st = x->h->hf_add_packed(l, ft, x->layout, err);
    } else {
        const char *dt = x->forced ? x->forced
                         : s->dtype == MOPT_DTYPE_F32  ? "F32"
                         : s->dtype == MOPT_DTYPE_F16  ? "F16"
                         : s->dtype == MOPT_DTYPE_BF16 ? "BF16"
                                                       : x->model_dt;
        st = x->h->st_add_rows(l, ft, dt, NULL, 0, 0, 0, err);
    }
    return st ? st : x->h->hf_add_kv_scales(l, x->g, ft, x->layout, err);
}

/* small JSON files the exporter composes itself (two-space indents, a final newline) */
static mopt_status write_json(const mopt_host_api *h, const atomic_dir *d, const char *name, json_t *j, mopt_error *err) {
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
    if (!text) return h->error_set(err, MOPT_E_NOMEM, "export.hf", "out of memory");
    size_t n = strlen(text);
    text[n] = '\n';
    mopt_status st = atomic_dir_write(h, d, name, text, n + 1, err);
    free(text);
    return st;
}

/* The tokenizer's files. A GGUF file carries its own: written as the tokenizer.json and tokenizer_config.json it
 * rebuilds (byte-level BPE), or none, with a line saying so, never the files of whatever model shares its directory.
 * Otherwise those beside the source: an HF directory's tokenizer*.json and special_tokens_map.json, or a llama2.c
 * tokenizer.bin / tok*.bin (kept as tokenizer.bin). */
mopt_status export_copy_tokenizer(const mopt_host_api *h, const mopt_pass_ctx *ctx, const mopt_model *m, const atomic_dir *d,
                                  mopt_error *err) {
    const char *src = h->model_path(m);
    const mopt_tokenizer *tok = h->model_tokenizer(m);
    char *tj = NULL, *cj = NULL;
    mopt_error te = {0};
    if (tok && h->struct_size > offsetof(mopt_host_api, tokenizer_hf_files) && !h->tokenizer_hf_files(tok, &tj, &cj, &te)) {
        mopt_status st = atomic_dir_write(h, d, "tokenizer.json", tj, strlen(tj), err);
        if (!st) st = atomic_dir_write(h, d, "tokenizer_config.json", cj, strlen(cj), err);
        h->free(tj);
        h->free(cj);
        return st;
    }
    if (te.code == MOPT_E_NOMEM) return h->error_set(err, MOPT_E_NOMEM, "export", "out of memory");
    const size_t sl = strlen(src);
    if (sl > 5 && !strcmp(src + sl - 5, ".gguf")) {
        if (tok) h->log(ctx, "%s; the export has no tokenizer files", te.msg[0] ? te.msg : src);
        return MOPT_OK;
    }
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
    mopt_hf_layout f = !strcmp(fs, "awq") ? MOPT_HF_AWQ : !strcmp(fs, "gptq") ? MOPT_HF_GPTQ : !strcmp(fs, "compressed-tensors") ? MOPT_HF_CT
                       : !strcmp(fs, "modelopt") ? MOPT_HF_MODELOPT : MOPT_HF_DENSE;
    mopt_quant_scheme scheme;
    mopt_status st = h->quant_scheme_of(g, !strcmp(fs, "auto") ? "dense" : fs, &scheme, err);
    if (st) return st;
    /* the KV cache's format: one for all layers, except in a dense export, which drops it */
    mopt_kv_format kv = MOPT_KV_FLOAT;
    mopt_error kerr = {0};
    const int kv_mixed = h->kv_scheme_of(g, &kv, &kerr) != MOPT_OK;
    int kv_any = kv_mixed || kv != MOPT_KV_FLOAT;
    if (!strcmp(fs, "auto") && (scheme.n_packed || kv_any)) f = MOPT_HF_CT;
    if (kv_mixed && f != MOPT_HF_DENSE) return h->error_set(err, (mopt_status)kerr.code, "export.hf", "%s", kerr.msg);
    if (f != MOPT_HF_DENSE && !scheme.n_packed && !kv_any)
        return h->error_set(err, MOPT_E_INVALID, "export.hf", "format %s needs a quantized model (run a quant pass first)", fs);
    const char *why = h->hf_layout_refuses(&scheme, f);
    if (why) return h->error_set(err, MOPT_E_UNSUPPORTED, "export.hf", "format %s cannot hold %s (%s)", fs, scheme.first, why);
    if ((why = h->hf_kv_refuses(kv, f)))
        return h->error_set(err, MOPT_E_UNSUPPORTED, "export.hf", "format %s cannot hold the %s KV cache (%s)", fs, h->kv_format_name(kv), why);
    if (f == MOPT_HF_DENSE && scheme.n_packed &&
        (scheme.dtype == MOPT_DTYPE_W8A8 || (scheme.flags & (MOPT_QUANT_ACT_PER_TOKEN | MOPT_QUANT_ACT_STATIC))))
        h->log(ctx, "format dense writes float weights and no activation scheme; the activation rounding of %s is "
                    "not kept (use format compressed-tensors or modelopt)", scheme.first);
    if (kv_any && f == MOPT_HF_DENSE)
        h->log(ctx, "format dense stores no KV-cache scales; the quantized KV cache is not exported (use format "
                    "compressed-tensors or modelopt)");
    mopt_file_tensor *fts = NULL;
    int32_t n = 0;
    if ((st = h->file_tensors(g, MOPT_NAMING_HF, &fts, &n, err)) || (f != MOPT_HF_DENSE && (st = check_packable(h, fts, n, fs, err)))) {
        h->free(fts);
        return st;
    }
    atomic_dir d;
    if ((st = atomic_dir_begin(h, ctx, &d, h->opt_string(o, "out"), h->opt_bool(o, "force"), 0, err))) {
        h->free(fts);
        return st;
    }
    hf_enc enc = {h, g, fts, f, forced, model_dt, h->lm_head_in_scheme(g, &scheme)};
    st_plan p = {0};
    st = st_plan_make(h, fts, n, encode, &enc, &p, err);
    /* shards of at most max_shard_size bytes */
    const int64_t max_shard = h->opt_int(o, "max_shard_size");
    int64_t total = 0;
    for (int32_t i = 0; i < p.n; i++) total += (int64_t)p.e[i].nbytes;
    int32_t shards = 1;
    if (!st && total > max_shard) {
        int64_t cur = 0;
        for (int32_t i = 0; i < p.n; i++) {
            if (cur > 0 && cur + (int64_t)p.e[i].nbytes > max_shard) shards++, cur = 0;
            cur += (int64_t)p.e[i].nbytes;
        }
    }
    json_t *weight_map = json_object();
    for (int32_t s = 0, i = 0; !st && s < shards; s++) {
        int32_t first = i;
        int64_t cur = 0;
        while (i < p.n && (cur == 0 || cur + (int64_t)p.e[i].nbytes <= max_shard || s == shards - 1)) cur += (int64_t)p.e[i++].nbytes;
        char name[128], path[5000];
        if (shards == 1) snprintf(name, sizeof name, "model.safetensors");
        else snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", s + 1, shards);
        for (int32_t k = first; k < i; k++) json_object_set_new(weight_map, p.e[k].name, json_string(name));
        if (h->interrupted()) st = h->error_set(err, MOPT_E_INTERRUPTED, "export.hf", "interrupted before %s", name);
        if (!st) st = st_plan_write(h, fts, &p, first, i, encode, &enc, atomic_dir_path(&d, name, path, sizeof path), err);
        if (!st && h->opt_int(o, "pause_ms") > 0) { /* diagnostic: lets a test interrupt a half-written export */
            struct timespec ts = {h->opt_int(o, "pause_ms") / 1000, (h->opt_int(o, "pause_ms") % 1000) * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    st_plan_free(&p);
    h->free(fts);
    if (!st && shards > 1) {
        json_t *idx = json_pack("{s:{s:I}, s:O}", "metadata", "total_size", (json_int_t)total, "weight_map", weight_map);
        st = write_json(h, &d, "model.safetensors.index.json", idx, err);
        json_decref(idx);
    }
    json_decref(weight_map);
    if (!st && f == MOPT_HF_MODELOPT) st = write_text(h, &d, "hf_quant_config.json", h->modelopt_quant_json(g, &scheme, err), err);
    if (!st) st = write_text(h, &d, "config.json", h->hf_config_json(g, torch, f, &scheme, err), err);
    if (!st) {
        json_t *gen = json_object();
        if (a->bos_id >= 0) json_object_set_new(gen, "bos_token_id", json_integer(a->bos_id));
        if (a->eos_id >= 0) json_object_set_new(gen, "eos_token_id", json_integer(a->eos_id));
        st = write_json(h, &d, "generation_config.json", gen, err);
        json_decref(gen);
    }
    if (!st) st = export_copy_tokenizer(h, ctx, m, &d, err);
    if (!st && h->opt_is_set(o, "draft")) {
        const int64_t k = h->opt_int(o, "num_speculative_tokens");
        json_t *sc = json_pack("{s:{s:s, s:I}, s:{s:s, s:I, s:s}}", "vllm", "model", h->opt_string(o, "draft"),
                               "num_speculative_tokens", (json_int_t)k, "tensorrt_llm", "speculative_decoding_mode",
                               "draft_tokens_external", "max_draft_len", (json_int_t)k, "draft_model", h->opt_string(o, "draft"));
        st = write_json(h, &d, "speculative_config.json", sc, err);
        json_decref(sc);
    }
    st = atomic_dir_end(h, &d, NULL, st, err);
    if (st) return st;
    h->report_artifact(report, "hf-checkpoint", d.target);
    h->report_metric(report, "bytes", (double)total);
    h->report_metric(report, "shards", shards);
    h->report_string(report, "dtype", torch);
    h->report_string(report, "format", fs);
    h->report_string(report, "kv_cache", !kv_any ? "float" : f == MOPT_HF_DENSE ? "dropped (format dense)" : h->kv_format_name(kv));
    return MOPT_OK;
}

static const char *const dtypes[] = {"auto", "f32", "f16", "bf16", NULL};
static const char *const formats[] = {"auto", "dense", "awq", "gptq", "compressed-tensors", "modelopt", NULL};

static const mopt_opt_spec opts[] = {
    {"out", MOPT_OPT_STRING, MOPT_OPT_REQUIRED, "target directory (written atomically)", NULL, 0, -1, NULL},
    {"format", MOPT_OPT_ENUM, 0, "auto: dense for a float model, compressed-tensors for a quantized or 2:4-packed one (sparse-24-bitmask); dense dequantizes; awq (GEMM, int4), gptq (v1), compressed-tensors and modelopt (unified checkpoint: W4A16_AWQ, W4A8_AWQ, FP8, NVFP4) keep the packed weights bit for bit", "auto", 0, -1, formats},
    {"dtype", MOPT_OPT_ENUM, 0, "dtype of the float tensors; auto keeps each tensor's own (dequantized weights take the embeddings')", "auto", 0, -1, dtypes},
    {"force", MOPT_OPT_BOOL, 0, "replace an existing target", "false", 0, -1, NULL},
    {"max_shard_size", MOPT_OPT_INT, 0, "bytes per safetensors shard before splitting (with an index)", "5000000000", 1024, 1e15, NULL},
    {"draft", MOPT_OPT_STRING, 0, "draft model path for speculative decoding: writes speculative_config.json", NULL, 0, -1, NULL},
    {"num_speculative_tokens", MOPT_OPT_INT, 0, "tokens the draft proposes per step (vLLM num_speculative_tokens, TRT-LLM max_draft_len)", "4", 1, 64, NULL},
    {"pause_ms", MOPT_OPT_INT, 0, "diagnostic: sleep after each shard (to test interrupted exports)", "0", 0, 600000, NULL},
};

MOPT_PASS_DEFINE(export_hf_pass, MOPT_PASS_EXPORT, "export.hf",
                 "Hugging Face checkpoint (safetensors, config, tokenizer; dense or AWQ/GPTQ/compressed-tensors/ModelOpt), atomic; GPT-2 Conv1D kept",
                 opts, run);
