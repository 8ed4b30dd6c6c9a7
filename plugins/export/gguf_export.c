/* export.gguf: a GGUF v3 file as llama.cpp loads it. What the file holds and
 * how each type is encoded is the core's GGUF module (mopt_gguf_write,
 * core/formats/gguf_write.c); this pass chooses the type, writes beside the
 * target and renames the file into place, and reports what it wrote. */
#include <stdio.h>
#include <string.h>

#include "atomic_dir.h"
#include "export_plugin.h"

typedef struct {
    const mopt_host_api *h;
    mopt_pass_ctx *ctx;
} progress_to;

static int progress(void *user, int64_t done, int64_t total) {
    const progress_to *p = user;
    p->h->progress(p->ctx, done, total);
    return 0;
}

static mopt_status run(const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *g, const mopt_options *o, mopt_report *report,
                       mopt_error *err) {
    mopt_model *m = h->ctx_model(ctx);
    if (!m || !g) return h->error_set(err, MOPT_E_INVALID, "export.gguf", "needs a model");
    atomic_dir d;
    mopt_status st = atomic_dir_begin(h, ctx, &d, h->opt_string(o, "out"), h->opt_bool(o, "force"), 1, err);
    if (st) return st;
    const char *mp = h->model_path(m), *slash = strrchr(mp, '/');
    progress_to pt = {h, ctx};
    mopt_imatrix *im = NULL;
    if (h->opt_is_set(o, "imatrix") && *h->opt_string(o, "imatrix")) st = h->imatrix_read(h->opt_string(o, "imatrix"), &im, err);
    const mopt_gguf_write_opts go = {.struct_size = sizeof go,
                                     .type = h->opt_string(o, "type"),
                                     .name = slash && slash[1] ? slash + 1 : mp,
                                     .tokenizer = h->opt_bool(o, "tokenizer"),
                                     .progress = progress,
                                     .user = &pt,
                                     .imatrix = im};
    mopt_gguf_write_result res;
    char buf[5000];
    const char *path = atomic_dir_path(&d, "model.gguf", buf, sizeof buf);
    if (!st) st = path ? h->gguf_write(g, h->model_tokenizer(m), path, &go, &res, err)
                       : h->error_set(err, MOPT_E_IO, "export.gguf", "%s: path too long", h->opt_string(o, "out"));
    h->imatrix_free(im);
    st = atomic_dir_end(h, &d, "model.gguf", st, err);
    if (st) return st;
    if (res.n_dequantized)
        h->log(ctx, "%d packed tensors are not Q4_0/Q8_0 blocks (symmetric, groups of 32): written dequantized as f16", res.n_dequantized);
    h->report_artifact(report, "gguf", d.target);
    h->report_metric(report, "bytes", (double)res.bytes);
    h->report_metric(report, "tensors", res.n_tensors);
    h->report_metric(report, "bits_per_weight", res.bits_per_weight);
    h->report_string(report, "type", h->opt_string(o, "type"));
    return MOPT_OK;
}

static const char *const types[] = {"auto",   "f32",    "f16",    "bf16",   "q8_0",   "q4_0",   "q4_1",   "q5_0",   "q5_1",   "q2_k",
                                    "q2_k_s", "q3_k",   "q3_k_s", "q3_k_m", "q3_k_l", "q4_k",   "q5_k",   "q6_k",   "q4_k_s", "q4_k_m",
                                    "q5_k_s", "q5_k_m", NULL};

static const mopt_opt_spec opts[] = {
    {"out", MOPT_OPT_STRING, MOPT_OPT_REQUIRED, "target .gguf file (written beside it, then renamed)", NULL, 0, -1, NULL},
    {"type", MOPT_OPT_ENUM, 0, "type of the 2-D weights (1-D stay f32; output.weight takes q6_k under a block type other than q8_0; q2_k, q2_k_s, q3_k_s/m/l, q4_k_s/m and q5_k_s/m are llama-quantize's mixes (attn_v, ffn_down, attn_output more bits in some layers; q2_k is its Q2_K mix)); auto keeps float dtypes and writes QINT int4/int8 sym g32 as q4_0/q8_0", "auto", 0, -1, types},
    {"force", MOPT_OPT_BOOL, 0, "replace an existing target", "false", 0, -1, NULL},
    {"imatrix", MOPT_OPT_STRING, 0, "importance matrix (llama.cpp's imatrix.dat, from llama-imatrix or quant.imatrix): weights the block quantizers' errors as llama-quantize --imatrix does", "", 0, -1, NULL},
    {"tokenizer", MOPT_OPT_BOOL, 0, "store the tokenizer as tokenizer.ggml.*", "true", 0, -1, NULL},
};

MOPT_PASS_DEFINE(export_gguf_pass, MOPT_PASS_EXPORT, "export.gguf",
                 "GGUF v3 for llama.cpp: the family's keys, tokenizer, f32/f16/bf16/q8_0/q4_0/q4_1/q5_0/q5_1/q4_k/q5_k/q6_k, atomic",
                 opts, run);
