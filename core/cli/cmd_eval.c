/* mopt eval MODEL --data FILE [--ctx 256] [--json OUT] [--threads N] [--quiet] */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void help(void) {
    printf("usage: mopt eval MODEL --data FILE [--ctx 256] [--json OUT] [--threads N] [--quiet]\n\n"
           "Perplexity of MODEL on FILE: the file is tokenized whole (no BOS), cut into\n"
           "non-overlapping windows of CTX tokens (the last partial one dropped), and every\n"
           "window is scored on its positions 1..CTX-1 from the tokens before them.\n"
           "  --data FILE   UTF-8 text to score\n"
           "  --ctx N       window length (default 256)\n"
           "  --json OUT    also write {ppl, nll, tokens_scored, ctx, seconds, ...} to OUT\n"
           "  --threads N   worker threads (default: all cores)\n"
           "  --quiet       no progress line on stderr\n");
}

int cmd_eval(int argc, char **argv) {
    static const struct option opts[] = {{"data", required_argument, 0, 'd'},    {"ctx", required_argument, 0, 'c'},
                                         {"json", required_argument, 0, 'j'},    {"threads", required_argument, 0, 'T'},
                                         {"quiet", no_argument, 0, 'q'},         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *data_path = NULL, *json_path = NULL;
    long long ctx = 256, threads = 0;
    int quiet = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'd': data_path = optarg; break;
        case 'c':
            if (!cli_parse_int(optarg, 2, 1 << 20, &ctx))
                return cli_usage_error("eval", "--ctx expects an integer >= 2, got '%s'", optarg);
            break;
        case 'j': json_path = optarg; break;
        case 'T':
            if (!cli_parse_int(optarg, 1, 1024, &threads))
                return cli_usage_error("eval", "--threads expects 1..1024, got '%s'", optarg);
            break;
        case 'q': quiet = 1; break;
        case 'h': help(); return EXIT_OK;
        default: return cli_usage_error("eval", "unknown option");
        }
    }
    if (optind != argc - 1) return cli_usage_error("eval", "expected exactly one MODEL");
    if (!data_path) return cli_usage_error("eval", "--data FILE is required");

    mopt_error err = {0};
    char *text = NULL;
    size_t len = 0;
    if (cli_read_text(data_path, &text, &len, &err)) return cli_fail(&err);
    if (len == 0) {
        free(text);
        fprintf(stderr, "mopt: %s: empty data file, nothing to score\n", data_path);
        return EXIT_USAGE;
    }
    mopt_model *m = mopt_model_load(argv[optind], NULL, &err);
    if (!m) {
        free(text);
        return cli_fail(&err);
    }
    int rc = EXIT_OK;
    int32_t *ids = NULL;
    size_t n = 0;
    mopt_session *s = NULL;
    const mopt_tokenizer *tok = mopt_model_tokenizer(m);
    if (!tok) {
        rc = cli_usage_error("eval", "%s has no tokenizer", argv[optind]);
        goto done;
    }
    if (ctx > mopt_model_arch(m)->max_ctx) {
        rc = cli_usage_error("eval", "--ctx %lld exceeds the model's context of %d", ctx, mopt_model_arch(m)->max_ctx);
        goto done;
    }
    double t0 = cli_now();
    if (mopt_tokenizer_encode(tok, text, len, 0, &ids, &n, &err)) {
        rc = cli_fail(&err);
        goto done;
    }
    if ((long long)n < ctx) {
        fprintf(stderr, "mopt: %s: %zu tokens, fewer than one window of %lld\n", data_path, n, ctx);
        rc = EXIT_USAGE;
        goto done;
    }
    mopt_session_opts so;
    mopt_session_opts_default(&so);
    so.n_threads = (int32_t)threads;
    so.max_ctx = (int32_t)ctx;
    s = mopt_session_new(mopt_model_graph(m), &so, &err);
    if (!s) {
        rc = cli_fail(&err);
        goto done;
    }
    cli_progress prog;
    cli_progress_init(&prog, "eval", quiet);
    mopt_ppl_result r;
    if (mopt_perplexity(s, ids, (int64_t)n, (int32_t)ctx, cli_progress_cb, &prog, &r, &err)) {
        rc = cli_fail(&err);
        goto done;
    }
    double secs = cli_now() - t0;
    printf("ppl %.4f  (nll %.6f over %lld tokens, %lld windows of %d, %.1f s)\n", r.ppl, r.nll,
           (long long)r.tokens_scored, (long long)r.windows, r.ctx, secs);
    if (json_path) {
        json_t *j = json_object();
        json_object_set_new(j, "ppl", json_real(r.ppl));
        json_object_set_new(j, "nll", json_real(r.nll));
        json_object_set_new(j, "tokens_scored", json_integer(r.tokens_scored));
        json_object_set_new(j, "windows", json_integer(r.windows));
        json_object_set_new(j, "ctx", json_integer(r.ctx));
        json_object_set_new(j, "seconds", json_real(secs));
        json_object_set_new(j, "tokens", json_integer((json_int_t)n));
        json_object_set_new(j, "model", json_string(mopt_model_path(m)));
        json_object_set_new(j, "data", json_string(data_path));
        json_object_set_new(j, "threads", json_integer(mopt_session_n_threads(s)));
        json_object_set_new(j, "peak_rss_bytes", json_integer(cli_peak_rss_bytes()));
        if (cli_write_json(json_path, j, &err)) rc = cli_fail(&err);
        json_decref(j);
    }
done:
    free(ids);
    free(text);
    mopt_session_free(s);
    mopt_model_free(m);
    return rc;
}
