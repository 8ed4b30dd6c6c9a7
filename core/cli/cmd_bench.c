/* mopt bench MODEL [--prompt-len 128] [--gen 128] [--runs 5] [--json OUT]: the eval.bench pass. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int cmd_bench(int argc, char **argv) {
    static const struct option opts[] = {{"prompt-len", required_argument, 0, 'p'}, {"gen", required_argument, 0, 'g'},
                                         {"runs", required_argument, 0, 'r'},       {"warmup", required_argument, 0, 'w'},
                                         {"text", required_argument, 0, 'x'},       {"json", required_argument, 0, 'j'},
                                         {"threads", required_argument, 0, 'T'},    {"pipeline", required_argument, 0, 'P'},
                                         {"quiet", no_argument, 0, 'q'},            {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *plen = "128", *gen = "128", *runs = "5", *warm = "1", *text = NULL, *json_path = NULL, *pre = NULL;
    long long threads = 0, v;
    int quiet = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'p': plen = optarg; break;
        case 'g': gen = optarg; break;
        case 'r': runs = optarg; break;
        case 'w': warm = optarg; break;
        case 'x': text = optarg; break;
        case 'j': json_path = optarg; break;
        case 'P': pre = optarg; break;
        case 'q': quiet = 1; break;
        case 'T':
            if (!cli_parse_threads(optarg, &threads)) return cli_usage_error("bench", "--threads expects a positive integer, got '%s'", optarg);
            break;
        case 'h':
            printf("usage: mopt bench MODEL [--prompt-len 128[,512]] [--gen 128] [--runs 5] [--warmup 1] [--text FILE]\n"
                   "                  [--pipeline 'quant.rtn<bits=4>'] [--json OUT] [--threads N] [--quiet]\n\n"
                   "Times prefill of each prompt length and greedy decoding (warm-up runs excluded): medians\n"
                   "with min/max/stdev, per-token latency p50/p95/p99, time to first token, peak RSS.\n"
                   "--pipeline runs passes (e.g. quantization) on the model first.\n");
            return EXIT_OK;
        default: return cli_usage_error("bench", "unknown option");
        }
    }
    if (optind != argc - 1) return cli_usage_error("bench", "expected exactly one MODEL");
    if (!cli_parse_int(gen, 1, 1 << 20, &v) || !cli_parse_int(runs, 1, 10000, &v) || !cli_parse_int(warm, 0, 100, &v))
        return cli_usage_error("bench", "--gen, --runs and --warmup expect integers");
    int rrc;
    mopt_registry *r = cli_registry(&rrc);
    if (!r) return rrc;
    mopt_error err = {0};
    int rc = EXIT_OK;
    mopt_model *m = NULL;
    mopt_report *rep = mopt_report_new();
    mopt_pipeline *p = mopt_pipeline_new(r);
    mopt_options *o = mopt_options_new();
    if ((pre && mopt_pipeline_parse(p, pre, &err)) || mopt_options_set(o, "prompt_len", plen, &err) ||
        mopt_options_set(o, "gen", gen, &err) || mopt_options_set(o, "runs", runs, &err) ||
        mopt_options_set(o, "warmup", warm, &err) || (text && mopt_options_set(o, "text", text, &err)) ||
        mopt_pipeline_add(p, "eval.bench", o, &err) || !(m = mopt_model_load(argv[optind], NULL, &err))) {
        rc = cli_fail(&err);
        goto done;
    }
    mopt_run_opts ro;
    mopt_run_opts_default(&ro);
    ro.quiet = quiet;
    ro.n_threads = (int32_t)threads;
    if (mopt_pipeline_run(p, m, &ro, rep, &err)) {
        rc = cli_fail(&err);
        goto done;
    }
#define G(k) mopt_report_get_metric(rep, k)
    printf("%s: prefill %.1f tok/s (min %.1f, max %.1f), decode %.1f tok/s (min %.1f, max %.1f, stdev %.1f)\n",
           argv[optind], G("prefill_tok_s"), G("prefill_tok_s_min"), G("prefill_tok_s_max"), G("decode_tok_s"),
           G("decode_tok_s_min"), G("decode_tok_s_max"), G("decode_tok_s_stdev"));
    printf("latency p50 %.3f ms, p95 %.3f ms, p99 %.3f ms; time to first token %.2f ms; peak RSS %.1f MB; model %.1f MB\n",
           G("latency_ms_p50"), G("latency_ms_p95"), G("latency_ms_p99"), G("ttft_ms"), G("peak_rss_bytes") / 1e6,
           G("model_bytes") / 1e6);
    if (json_path) {
        json_t *j = json_object(), *lat = json_object();
        json_object_set_new(j, "prefill_tok_s", json_real(G("prefill_tok_s")));
        json_object_set_new(j, "decode_tok_s", json_real(G("decode_tok_s")));
        json_object_set_new(lat, "p50", json_real(G("latency_ms_p50")));
        json_object_set_new(lat, "p95", json_real(G("latency_ms_p95")));
        json_object_set_new(lat, "p99", json_real(G("latency_ms_p99")));
        json_object_set_new(j, "latency_ms", lat);
        json_object_set_new(j, "ttft_ms", json_real(G("ttft_ms")));
        json_object_set_new(j, "peak_rss_bytes", json_integer((json_int_t)G("peak_rss_bytes")));
        json_object_set_new(j, "model_bytes", json_integer((json_int_t)G("model_bytes")));
        json_t *spread = json_object();
        json_object_set_new(spread, "prefill_tok_s_min", json_real(G("prefill_tok_s_min")));
        json_object_set_new(spread, "prefill_tok_s_max", json_real(G("prefill_tok_s_max")));
        json_object_set_new(spread, "prefill_tok_s_stdev", json_real(G("prefill_tok_s_stdev")));
        json_object_set_new(spread, "decode_tok_s_min", json_real(G("decode_tok_s_min")));
        json_object_set_new(spread, "decode_tok_s_max", json_real(G("decode_tok_s_max")));
        json_object_set_new(spread, "decode_tok_s_stdev", json_real(G("decode_tok_s_stdev")));
        json_object_set_new(j, "spread", spread);
        json_object_set_new(j, "runs", json_integer((json_int_t)G("runs")));
        json_object_set_new(j, "threads", json_integer((json_int_t)G("threads")));
        json_object_set_new(j, "model", json_string(argv[optind]));
        if (cli_write_json(json_path, j, &err)) rc = cli_fail(&err);
        json_decref(j);
    }
#undef G
done:
    mopt_options_free(o);
    mopt_report_free(rep);
    mopt_pipeline_free(p);
    mopt_model_free(m);
    mopt_registry_free(r);
    return rc;
}
