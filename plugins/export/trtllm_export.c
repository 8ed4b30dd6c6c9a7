/* export.trtllm: a TensorRT-LLM checkpoint (docs/source/architecture/checkpoint.md):
 * config.json with the architecture, mapping {world_size, tp_size, pp_size} and
 * quantization {quant_algo, ...}, and rank{r}.safetensors with TensorRT-LLM's
 * names (the family's table: attention.qkv fuses q, k and v). This pass
 * decides the tensor-parallel split: column-parallel tensors (qkv by heads,
 * mlp.fc, mlp.gate, lm_head) by output rows, row-parallel ones (dense, proj) by
 * input columns; norms, embeddings and row-parallel biases are replicated. The
 * encodings (float dtypes, ModelOpt's quantized layouts, config.json) are the
 * core's TensorRT-LLM module (core/formats/trtllm_write.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atomic_dir.h"
#include "export_plugin.h"
#include "st_stream.h"

/* The rows and columns of file tensor ft that rank r of tp holds: a whole
 * tensor, a slice of its rows, a slice of each fused source's rows (heads), or
 * a slice of its columns. rows has room for ft->rows. */
static int64_t rank_rows(const mopt_file_tensor *ft, int r, int tp, int64_t *rows, int64_t *c0, int64_t *nc) {
    int64_t n = 0;
    *c0 = 0;
    *nc = ft->cols;
    switch (ft->split) {
    case MOPT_SPLIT_ROWS:
        for (int64_t i = 0; i < ft->rows / tp; i++) rows[n++] = r * (ft->rows / tp) + i;
        return n;
    case MOPT_SPLIT_HEADS: /* this rank's q heads, then its k and v heads */
        for (int32_t k = 0, at = 0; k < ft->n_src; k++) {
            const mopt_tensor *s = ft->src[k];
            const int64_t per = (s->ndim == 1 ? s->ne[0] : s->ne[1]) / tp;
            for (int64_t i = 0; i < per; i++) rows[n++] = at + r * per + i;
            at += (int32_t)(per * tp);
        }
        return n;
    case MOPT_SPLIT_COLS:
        if (ft->ndim == 2) *nc = ft->cols / tp, *c0 = r * *nc;
        __attribute__((fallthrough)); /* every row */
    default:
        for (int64_t i = 0; i < ft->rows; i++) rows[n++] = i;
        return n;
    }
}

typedef struct {
    const mopt_host_api *h;
    const mopt_graph *g;
    const mopt_file_tensor *fts;
    int r, tp;
    const char *algo, *fdt;
} rank_enc;

/* Rank r's part of file tensor i. */
static mopt_status encode(void *user, int32_t i, mopt_st_list *l, mopt_error *err) {
    const rank_enc *x = user;
    const mopt_host_api *h = x->h;
    int64_t *rows = malloc((size_t)x->fts[i].rows * sizeof *rows + 1), c0, nc;
    if (!rows) return h->error_set(err, MOPT_E_NOMEM, "export.trtllm", "out of memory");
    const int64_t n_rows = rank_rows(&x->fts[i], x->r, x->tp, rows, &c0, &nc);
    mopt_status st = h->trtllm_add(l, &x->fts[i], x->algo, x->fdt, rows, n_rows, c0, nc, err);
    free(rows);
    return st ? st : h->trtllm_add_kv_scale(l, x->g, &x->fts[i], err);
}

static mopt_status run(const mopt_host_api *h, mopt_pass_ctx *pctx, mopt_graph *g, const mopt_options *o, mopt_report *report,
                       mopt_error *err) {
    if (!g) return h->error_set(err, MOPT_E_INVALID, "export.trtllm", "needs a model");
    const mopt_arch *a = h->graph_arch(g);
    const int tp = (int)h->opt_int(o, "tp");
    mopt_quant_scheme s;
    mopt_status st = h->quant_scheme_of(g, "TensorRT-LLM", &s, err);
    if (st) return st;
    const char *algo = h->trtllm_algo(&s);
    if (s.n_packed && !algo)
        return h->error_set(err, MOPT_E_UNSUPPORTED, "export.trtllm",
                            "%s's scheme has no TensorRT-LLM quant_algo here (W4A16_AWQ: int4 sym with groups; W8A16: int8 sym "
                            "per channel; W8A8 per token; FP8 per tensor static or per channel dynamic; NVFP4 with activations=static; "
                            "W4A8_AWQ: int4 sym with groups and activations=fp8_static)",
                            s.first);
    mopt_kv_format kv = MOPT_KV_FLOAT;
    if ((st = h->kv_scheme_of(g, &kv, err))) return st;
    int kv_shared = 0; /* layers whose K and V scales differ: TensorRT-LLM keeps one, the larger */
    for (int32_t l = 0; l < a->n_layers && kv != MOPT_KV_FLOAT; l++) {
        const mopt_kv_quant q = h->graph_kv_quant(g, l);
        kv_shared += q.format && q.k_scale[0] != q.v_scale[0];
    }
    if (kv_shared)
        h->log(pctx, "TensorRT-LLM keeps one KV-cache scale per layer; %d layers take max(k_scale, v_scale)", kv_shared);
    if (a->n_heads % tp || a->n_kv_heads % tp || a->ffn_dim % tp || a->vocab_size % tp || a->dim % tp)
        return h->error_set(err, MOPT_E_INVALID, "export.trtllm",
                            "tp=%d must divide the heads (%d, %d kv), the MLP width %d, the vocabulary %d and the width %d", tp,
                            a->n_heads, a->n_kv_heads, a->ffn_dim, a->vocab_size, a->dim);
    const char *want = h->opt_string(o, "dtype");
    const mopt_tensor *emb = h->graph_tensor(g, 0);
    const char *fdt = !strcmp(want, "f32") ? "F32" : !strcmp(want, "bf16") ? "BF16" : !strcmp(want, "f16") ? "F16" : NULL;
    const char *mdt = fdt ? fdt : emb && emb->dtype == MOPT_DTYPE_F32 ? "F32" : emb && emb->dtype == MOPT_DTYPE_BF16 ? "BF16" : "F16";
    const char *torch = !strcmp(mdt, "F32") ? "float32" : !strcmp(mdt, "BF16") ? "bfloat16" : "float16";
    mopt_file_tensor *fts = NULL;
    int32_t n = 0;
    if ((st = h->file_tensors(g, MOPT_NAMING_TRTLLM, &fts, &n, err))) return st;
    atomic_dir d;
    if ((st = atomic_dir_begin(h, pctx, &d, h->opt_string(o, "out"), h->opt_bool(o, "force"), 0, err))) {
        h->free(fts);
        return st;
    }
    int64_t bytes = 0;
    for (int r = 0; r < tp && !st; r++) {
        rank_enc enc = {h, g, fts, r, tp, algo, fdt};
        st_plan p = {0};
        char name[64], path[5000];
        snprintf(name, sizeof name, "rank%d.safetensors", r);
        if (h->interrupted()) st = h->error_set(err, MOPT_E_INTERRUPTED, "export.trtllm", "interrupted before rank %d", r);
        if (!st) st = st_plan_make(h, fts, n, encode, &enc, &p, err);
        for (int32_t i = 0; i < p.n; i++) bytes += (int64_t)p.e[i].nbytes;
        if (!st) st = st_plan_write(h, fts, &p, 0, p.n, encode, &enc, atomic_dir_path(&d, name, path, sizeof path), err);
        st_plan_free(&p);
        h->progress(pctx, r + 1, tp);
    }
    h->free(fts);
    if (!st) {
        char *text = h->trtllm_config_json(g, torch, tp, &s, err);
        st = text ? atomic_dir_write(h, &d, "config.json", text, strlen(text), err) : err && err->code ? (mopt_status)err->code : MOPT_E_NOMEM;
        h->free(text);
    }
    /* TRT-LLM reads the tokenizer from --tokenizer_dir; keeping it here makes the directory self-contained */
    if (!st && h->ctx_model(pctx)) st = export_copy_tokenizer(h, pctx, h->ctx_model(pctx), &d, err);
    st = atomic_dir_end(h, &d, NULL, st, err);
    if (st) return st;
    h->report_artifact(report, "trtllm-checkpoint", d.target);
    h->report_metric(report, "bytes", (double)bytes);
    h->report_metric(report, "tp", tp);
    h->report_string(report, "quant_algo", algo ? algo : "none");
    h->report_string(report, "kv_cache_quant_algo", kv == MOPT_KV_FP8 ? "FP8" : kv == MOPT_KV_INT8 ? "INT8" : "none");
    return MOPT_OK;
}

static const char *const dtypes[] = {"auto", "f32", "f16", "bf16", NULL};

static const mopt_opt_spec opts[] = {
    {"out", MOPT_OPT_STRING, MOPT_OPT_REQUIRED, "target directory (written atomically)", NULL, 0, -1, NULL},
    {"tp", MOPT_OPT_INT, 0, "tensor-parallel ranks: rank0..rank{tp-1}.safetensors", "1", 1, 64, NULL},
    {"dtype", MOPT_OPT_ENUM, 0, "dtype of the float tensors (auto: each keeps its own; config.json names the embeddings')", "auto", 0, -1, dtypes},
    {"force", MOPT_OPT_BOOL, 0, "replace an existing target", "false", 0, -1, NULL},
};

MOPT_PASS_DEFINE(export_trtllm_pass, MOPT_PASS_EXPORT, "export.trtllm",
                 "TensorRT-LLM checkpoint (config.json + rank*.safetensors), fused qkv, W4A16_AWQ/W4A8_AWQ/W8A16/W8A8/FP8/NVFP4, tensor-parallel split",
                 opts, run);
