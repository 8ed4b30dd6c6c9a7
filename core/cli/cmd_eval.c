/* mopt eval MODEL --data FILE [--ctx 256] [--json OUT] [--threads N] [--quiet]
 * A thin layer over the eval.perplexity pass. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void help(void) {
    printf("usage: mopt eval MODEL --data FILE [--ctx 256] [--json OUT] [--threads N] [--device cuda] [--quiet]\n\n"
           "Perplexity of MODEL on FILE (the eval.perplexity pass): the file is tokenized whole\n"
           "(no BOS), cut into non-overlapping windows of CTX tokens (the last partial one dropped),\n"
           "and every window is scored on its positions 1..CTX-1 from the tokens before them.\n"
           "  --data FILE   UTF-8 text to score\n"
           "  --ctx N       window length (default 256)\n"
           "  --stride S    start a window every S tokens (default: ctx); later windows score only their\n"
           "                last S tokens\n"
           "  --limit-tokens N  score only the first N tokens of FILE\n"
           "  --baseline B  compare against model B on the same windows (eval.compare): KL, top-1\n"
           "                agreement, ppl ratio with a bootstrap 95%% interval\n"
           "  --json OUT    also write {ppl, nll, tokens_scored, ctx, seconds, ...} to OUT\n"
           "  --threads N   worker threads (default: all cores)\n"
           "  --device D    cpu (default), cuda or cuda:N: the linears on that GPU\n"
           "  --kv-cache F  f32 (default) or f16: the KV cache in IEEE halves\n"
           "  --quiet       no progress lines on stderr\n");
}

int cmd_eval(int argc, char **argv) {
    static const struct option opts[] = {{"data", required_argument, 0, 'd'},    {"ctx", required_argument, 0, 'c'},
                                         {"baseline", required_argument, 0, 'B'},
                                         {"stride", required_argument, 0, 'S'},  {"limit-tokens", required_argument, 0, 'l'},
                                         {"json", required_argument, 0, 'j'},    {"threads", required_argument, 0, 'T'}, {"device", required_argument, 0, CLI_OPT_DEVICE}, {"kv-cache", required_argument, 0, CLI_OPT_KV_CACHE},
                                         {"quiet", no_argument, 0, 'q'},         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *data_path = NULL, *json_path = NULL, *ctx = "256", *baseline = NULL, *stride = NULL, *limit = NULL;
    long long threads = 0, ctx_val;
    int quiet = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'd': data_path = optarg; break;
        case 'B': baseline = optarg; break;
        case 'S':
            if (!cli_parse_int(optarg, 1, 1 << 20, &ctx_val)) return cli_usage_error("eval", "--stride expects a positive integer, got '%s'", optarg);
            stride = optarg;
            break;
        case 'l':
            if (!cli_parse_int(optarg, 1, (long long)1 << 40, &ctx_val)) return cli_usage_error("eval", "--limit-tokens expects a positive integer, got '%s'", optarg);
            limit = optarg;
            break;
        case 'c':
            if (!cli_parse_int(optarg, 2, 1 << 20, &ctx_val))
                return cli_usage_error("eval", "--ctx expects an integer >= 2, got '%s'", optarg);
            ctx = optarg;
            break;
        case 'j': json_path = optarg; break;
        case CLI_OPT_DEVICE: cli_set_device(optarg); break;
        case CLI_OPT_KV_CACHE: cli_set_kv_cache(optarg); break;
        case 'T':
            if (!cli_parse_threads(optarg, &threads))
                return cli_usage_error("eval", "--threads expects a positive integer, got '%s'", optarg);
            break;
        case 'q': quiet = 1; break;
        case 'h': help(); return EXIT_OK;
        default: return cli_bad_option("eval", argv, "h", opts);
        }
    }
    if (optind != argc - 1) return cli_usage_error("eval", "expected exactly one MODEL");
    if (!data_path) return cli_usage_error("eval", "--data FILE is required");

    double t0 = cli_now();
    cli_job j;
    int rc = cli_job_open(&j, quiet, threads);
    if (rc) return rc;
    if (cli_job_set(&j, "data", data_path) || cli_job_set(&j, "ctx", ctx) || cli_job_set(&j, "baseline", baseline) ||
        cli_job_set(&j, "limit_tokens", limit) || cli_job_set(&j, "stride", stride))
        rc = cli_fail(&j.err);
    else
        rc = cli_job_run(&j, baseline ? "eval.compare" : "eval.perplexity", argv[optind], NULL);
    if (rc) {
        cli_job_close(&j);
        return rc;
    }
    const mopt_report *rep = j.rep;
    double secs = cli_now() - t0;
    double ppl = mopt_report_get_metric(rep, "ppl"), nll = mopt_report_get_metric(rep, "nll");
    long long scored = (long long)mopt_report_get_metric(rep, "tokens_scored");
    long long windows = (long long)mopt_report_get_metric(rep, "windows");
    if (baseline) {
        nll = log(ppl);
        printf("ppl %.4f vs baseline %.4f: ratio %.5f [95%% CI %.5f, %.5f], KL mean %.3g p99 %.3g, top-1 agree %.4f (%lld tokens, %.1f s)\n",
               ppl, mopt_report_get_metric(rep, "ppl_baseline"), mopt_report_get_metric(rep, "ppl_ratio"),
               mopt_report_get_metric(rep, "ppl_ratio_ci95_lo"), mopt_report_get_metric(rep, "ppl_ratio_ci95_hi"),
               mopt_report_get_metric(rep, "kl_mean"), mopt_report_get_metric(rep, "kl_p99"),
               mopt_report_get_metric(rep, "top1_agree"), scored, secs);
    } else {
        printf("ppl %.4f  (nll %.6f over %lld tokens, %lld windows of %s, %.1f s)\n", ppl, nll, scored, windows, ctx, secs);
    }
    if (json_path) {
        json_t *js = json_object();
        json_object_set_new(js, "ppl", json_real(ppl));
        json_object_set_new(js, "nll", json_real(nll));
        json_object_set_new(js, "tokens_scored", json_integer(scored));
        json_object_set_new(js, "windows", json_integer(windows));
        json_object_set_new(js, "ctx", json_integer(atoll(ctx)));
        json_object_set_new(js, "seconds", json_real(secs));
        json_object_set_new(js, "tokens", json_integer((json_int_t)mopt_report_get_metric(rep, "tokens")));
        json_object_set_new(js, "model", json_string(mopt_model_path(j.m)));
        json_object_set_new(js, "data", json_string(data_path));
        json_object_set_new(js, "peak_rss_bytes", json_integer(cli_peak_rss_bytes()));
        if (baseline) {
            const char *keys[] = {"ppl_baseline", "kl_mean", "kl_p99", "top1_agree", "ppl_ratio", "mean_abs_dlogp"};
            for (int i = 0; i < 6; i++) json_object_set_new(js, keys[i], json_real(mopt_report_get_metric(rep, keys[i])));
            json_object_set_new(js, "ppl_ratio_ci95", json_pack("[f, f]", mopt_report_get_metric(rep, "ppl_ratio_ci95_lo"),
                                                               mopt_report_get_metric(rep, "ppl_ratio_ci95_hi")));
            json_object_set_new(js, "baseline", json_string(baseline));
        }
        if (cli_write_json(json_path, js, &j.err)) rc = cli_fail(&j.err);
        json_decref(js);
    }
    cli_job_close(&j);
    return rc;
}
