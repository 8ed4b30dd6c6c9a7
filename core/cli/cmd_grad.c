/* mopt grad MODEL --data FILE [--ctx N] [--offset TOKENS] -o GRADS.safetensors
 * The gradient of one window's mean cross-entropy with respect to every
 * weight, for checking the backward against an independent implementation. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"

static void help(void) {
    printf("usage: mopt grad MODEL --data FILE -o GRADS.safetensors [--ctx 256] [--offset 0] [--force]\n"
           "                [--threads N] [--quiet]\n\n"
           "Writes the gradient of the mean cross-entropy of ONE window with respect to every weight:\n"
           "tokens offset..offset+ctx-1 of FILE (tokenized whole, no BOS), positions 1..ctx-1 scored as in\n"
           "the perplexity protocol. Each gradient is F32 under its weight's own name and in its shape as\n"
           "a Hugging Face checkpoint stores it (GPT-2's fused, transposed c_attn included; a tied\n"
           "embedding once); __metadata__ holds loss, ctx, offset and the scored count. Packed weights\n"
           "are dequantized to fp32 first, so their gradient is the dense one.\n"
           "  --data FILE      UTF-8 text\n"
           "  --ctx N          window length (default: 256, at most the model's context)\n"
           "  --offset TOKENS  first token of the window (default: 0)\n"
           "  --force          replace an existing GRADS file\n"
           "  --threads N      worker threads (default: all cores)\n"
           "  --quiet          no summary line\n");
}

/* The gradients as the checkpoint stores its weights: the Hugging Face names,
 * fusings (GPT-2's c_attn), Conv1D transposes and RoPE row order, written by
 * the exporter's own layout code over F32 stand-ins that hold the gradients. */
static mopt_status add_grads(const mopt_trainer *tr, const mopt_graph *g, mopt_st_list *l, mopt_error *err) {
    const int32_t np = mopt_trainer_n_params(tr);
    mopt_tensor **stand = calloc((size_t)np, sizeof *stand);
    mopt_file_tensor *ft = NULL;
    int32_t nft = 0;
    mopt_status st = stand ? mopt_file_tensors(g, MOPT_NAMING_HF, &ft, &nft, err) : mopt_error_set(err, MOPT_E_NOMEM, "grad", "out of memory");
    for (int32_t i = 0; i < np && !st; i++) {
        const mopt_tensor *t = mopt_trainer_param_tensor(tr, i);
        const int64_t dims[2] = {t->ne[1], t->ne[0]};
        const int vec = t->ne[1] == 1 && t->ndim <= 1;
        stand[i] = mopt_tensor_new(t->name, MOPT_DTYPE_F32, vec ? 1 : 2, vec ? dims + 1 : dims, err);
        if (!stand[i]) st = err->code ? (mopt_status)err->code : MOPT_E_NOMEM;
        else memcpy(stand[i]->data, mopt_trainer_grad(tr, i), (size_t)mopt_tensor_nelements(t) * sizeof(float));
    }
    for (int32_t f = 0; f < nft && !st; f++) {
        mopt_file_tensor grad = ft[f];
        for (int32_t k = 0; k < grad.n_src; k++) {
            grad.src[k] = NULL;
            for (int32_t i = 0; i < np && !grad.src[k]; i++)
                if (mopt_trainer_param_tensor(tr, i) == ft[f].src[k]) grad.src[k] = stand[i];
            if (!grad.src[k]) st = mopt_error_set(err, MOPT_E_INVALID, "grad", "%s: no gradient for %s", ft[f].name, ft[f].src[k]->name);
        }
        if (!st) st = mopt_st_add_rows(l, &grad, "F32", NULL, 0, 0, 0, err);
    }
    for (int32_t i = 0; stand && i < np; i++) mopt_tensor_free(stand[i]);
    free(stand);
    free(ft);
    return st;
}

int cmd_grad(int argc, char **argv) {
    static const struct option opts[] = {{"data", required_argument, 0, 'd'},   {"ctx", required_argument, 0, 'c'},
                                         {"offset", required_argument, 0, 'O'}, {"force", no_argument, 0, 'F'},
                                         {"threads", required_argument, 0, 'T'}, {"quiet", no_argument, 0, 'q'},
                                         {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
    const char *data = NULL, *out = NULL, *ctx_s = "256", *off_s = "0";
    long long threads = 0, ctx, offset;
    int force = 0, quiet = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "ho:", opts, NULL)) != -1) {
        switch (c) {
        case 'd': data = optarg; break;
        case 'o': out = optarg; break;
        case 'c': ctx_s = optarg; break;
        case 'O': off_s = optarg; break;
        case 'F': force = 1; break;
        case 'q': quiet = 1; break;
        case 'T':
            if (!cli_parse_threads(optarg, &threads)) return cli_usage_error("grad", "--threads expects a positive integer, got '%s'", optarg);
            break;
        case 'h': help(); return EXIT_OK;
        default: return cli_bad_option("grad", argv, "ho:", opts);
        }
    }
    if (optind != argc - 1) return cli_usage_error("grad", "expected exactly one MODEL");
    if (!data) return cli_usage_error("grad", "--data FILE is required");
    if (!out) return cli_usage_error("grad", "-o GRADS.safetensors is required");
    if (!cli_parse_int(ctx_s, 2, 1 << 20, &ctx)) return cli_usage_error("grad", "--ctx expects an integer >= 2, got '%s'", ctx_s);
    if (!cli_parse_int(off_s, 0, (long long)1 << 40, &offset))
        return cli_usage_error("grad", "--offset expects a token count >= 0, got '%s'", off_s);
    struct stat sb;
    if (!force && lstat(out, &sb) == 0) return cli_usage_error("grad", "%s exists; pass --force to replace it", out);

    mopt_error err = {0};
    mopt_model *m = mopt_model_load(argv[optind], NULL, &err);
    if (!m) return cli_fail(&err);
    int rc = EXIT_OK;
    int32_t *ids = NULL;
    size_t n = 0;
    mopt_trainer *tr = NULL;
    mopt_st_list l = {0};
    char *bytes = NULL;
    size_t len = 0;
    const mopt_tokenizer *tok = mopt_model_tokenizer(m);
    const mopt_arch *a = mopt_model_arch(m);
    double loss = 0;
    if (!tok) {
        rc = cli_usage_error("grad", "%s has no tokenizer", argv[optind]);
        goto done;
    }
    if (ctx > a->max_ctx) {
        rc = cli_usage_error("grad", "--ctx %lld exceeds the model's context of %d", ctx, a->max_ctx);
        goto done;
    }
    if (mopt_tokenizer_encode_file(tok, data, 0, &ids, &n, &err)) goto fail;
    if ((long long)n < offset + ctx) {
        rc = cli_usage_error("grad", "%s has %zu tokens: a window of %lld at offset %lld needs %lld", data, n, ctx, offset,
                             offset + ctx);
        goto done;
    }
    tr = mopt_trainer_new(mopt_model_graph(m), (int32_t)ctx, &err);
    if (!tr || mopt_trainer_set_threads(tr, (int32_t)threads, &err) || mopt_trainer_step(tr, ids + offset, (int32_t)ctx, &loss, &err) || add_grads(tr, mopt_model_graph(m), &l, &err)) goto fail;
    char loss_s[32], ctx_txt[24], off_txt[24], scored[24];
    snprintf(loss_s, sizeof loss_s, "%.17g", loss);
    snprintf(ctx_txt, sizeof ctx_txt, "%lld", ctx);
    snprintf(off_txt, sizeof off_txt, "%lld", offset);
    snprintf(scored, sizeof scored, "%lld", ctx - 1);
    const char *meta[] = {"loss", loss_s, "ctx", ctx_txt, "offset", off_txt, "tokens_scored", scored, NULL};
    if (mopt_safetensors_encode_meta(l.e, l.n, meta, &bytes, &len, &err) || mopt_file_write_atomic(out, bytes, len, &err)) goto fail;
    if (!quiet)
        printf("loss %.6f over %lld tokens (window of %lld at offset %lld): %d gradients, %zu bytes -> %s\n", loss, ctx - 1, ctx,
               offset, l.n, len, out);
    goto done;
fail:
    rc = cli_fail(&err);
done:
    free(bytes);
    mopt_st_list_free(&l);
    mopt_trainer_free(tr);
    free(ids);
    mopt_model_free(m);
    return rc;
}
