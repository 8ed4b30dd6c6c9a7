/* mopt info MODEL [--json] */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

static void help(void) {
    printf("usage: mopt info MODEL [--json]\n\n"
           "Prints the architecture, parameter count, tensor dtypes and weight bytes of MODEL.\n"
           "  --json   print one JSON object instead of text\n");
}

int cmd_info(int argc, char **argv) {
    static const struct option opts[] = {{"json", no_argument, 0, 'j'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int as_json = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'j') as_json = 1;
        else if (c == 'h') return help(), EXIT_OK;
        else return cli_bad_option("info", argv, "h", opts);
    }
    if (optind != argc - 1) return cli_usage_error("info", "expected exactly one MODEL");
    mopt_error err = {0};
    mopt_model *m = mopt_model_load(argv[optind], NULL, &err);
    if (!m) return cli_fail(&err);
    const mopt_graph *g = mopt_model_graph(m);
    const mopt_arch *a = mopt_model_arch(m);
    int64_t by_dtype[MOPT_DTYPE_COUNT] = {0}, bytes_by_dtype[MOPT_DTYPE_COUNT] = {0};
    for (int32_t i = 0; i < mopt_graph_n_tensors(g); i++) {
        const mopt_tensor *t = mopt_graph_tensor(g, i);
        by_dtype[t->dtype] += mopt_tensor_nelements(t);
        bytes_by_dtype[t->dtype] += (int64_t)mopt_tensor_nbytes(t);
    }
    const mopt_tokenizer *tok = mopt_model_tokenizer(m);
    const char *fmt = mopt_model_format_of(m) == MOPT_FORMAT_HF ? "hf" : mopt_model_format_of(m) == MOPT_FORMAT_GGUF ? "gguf" : "llama2c";
    mopt_kv_format kv = MOPT_KV_FLOAT;
    const char *kv_name = mopt_kv_scheme_of(g, &kv, NULL) ? "mixed" : mopt_kv_format_name(kv);
    if (as_json) {
        json_t *j = json_object(), *dt = json_object();
        json_object_set_new(j, "path", json_string(mopt_model_path(m)));
        json_object_set_new(j, "format", json_string(fmt));
        json_t *arch = json_pack("{s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, s:b}", "family", a->family, "dim", a->dim, "n_layers",
                         a->n_layers, "n_heads", a->n_heads, "n_kv_heads", a->n_kv_heads, "head_dim", a->head_dim, "ffn_dim",
                         a->ffn_dim, "vocab_size", a->vocab_size, "max_ctx", a->max_ctx, "norm_eps", (double)a->norm_eps,
                         "rope_theta", (double)a->rope_theta, "tied_embeddings", a->tied_embeddings);
        json_object_set_new(j, "arch", arch);
        json_object_set_new(j, "n_params", json_integer(mopt_graph_n_params(g)));
        json_object_set_new(j, "weight_bytes", json_integer(mopt_graph_weight_bytes(g)));
        json_object_set_new(j, "n_tensors", json_integer(mopt_graph_n_tensors(g)));
        json_object_set_new(j, "kv_cache", json_string(kv_name));
        json_object_set_new(j, "kv_bytes_per_token", json_integer(mopt_graph_kv_bytes_per_token(g)));
        for (int d = 0; d < MOPT_DTYPE_COUNT; d++)
            if (by_dtype[d]) json_object_set_new(dt, mopt_dtype_name((mopt_dtype)d), json_integer(by_dtype[d]));
        json_object_set_new(j, "params_by_dtype", dt);
        json_object_set_new(j, "tokenizer_vocab", tok ? json_integer(mopt_tokenizer_vocab_size(tok)) : json_null());
        char *s = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
        puts(s);
        free(s);
        json_decref(j);
    } else {
        printf("model:        %s (%s)\n", mopt_model_path(m), fmt);
        printf("architecture: %s, %d layers, dim %d, %d heads (%d KV, head_dim %d), ffn %d\n", a->family,
               a->n_layers, a->dim, a->n_heads, a->n_kv_heads, a->head_dim, a->ffn_dim);
        printf("vocab:        %d, context %d, norm eps %g, rope theta %g, tied embeddings %s\n", a->vocab_size,
               a->max_ctx, a->norm_eps, a->rope_theta, a->tied_embeddings ? "yes" : "no");
        printf("parameters:   %lld in %d tensors\n", (long long)mopt_graph_n_params(g), mopt_graph_n_tensors(g));
        for (int d = 0; d < MOPT_DTYPE_COUNT; d++)
            if (by_dtype[d])
                printf("  %-5s       %lld params, %lld bytes\n", mopt_dtype_name((mopt_dtype)d), (long long)by_dtype[d],
                       (long long)bytes_by_dtype[d]);
        printf("weight bytes: %lld\n", (long long)mopt_graph_weight_bytes(g));
        printf("KV cache:     %s, %lld bytes per token\n", kv_name, (long long)mopt_graph_kv_bytes_per_token(g));
        if (tok) printf("tokenizer:    %d tokens\n", mopt_tokenizer_vocab_size(tok));
    }
    mopt_model_free(m);
    return EXIT_OK;
}
