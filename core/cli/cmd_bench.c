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
                                         {"threads", required_argument, 0, 'T'}, {"device", required_argument, 0, CLI_OPT_DEVICE}, {"kv-cache", required_argument, 0, CLI_OPT_KV_CACHE},    {"pipeline", required_argument, 0, 'P'},
                                         {"quiet", no_argument, 0, 'q'},            {"help", no_argument, 0, 'h'},
                                         {"bandwidth-mib", required_argument, 0, 'b'}, {0, 0, 0, 0}};
    const char *plen = "128", *gen = "128", *runs = "5", *warm = "1", *text = NULL, *json_path = NULL, *pre = NULL, *bw = NULL;
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
        case 'b': bw = optarg; break;
        case 'q': quiet = 1; break;
        case CLI_OPT_DEVICE: cli_set_device(optarg); break;
        case CLI_OPT_KV_CACHE: cli_set_kv_cache(optarg); break;
        case 'T':
            if (!cli_parse_threads(optarg, &threads)) return cli_usage_error("bench", "--threads expects a positive integer, got '%s'", optarg);
            break;
        case 'h':
            printf("usage: mopt bench MODEL [--prompt-len 128[,512]] [--gen 128] [--runs 5] [--warmup 1] [--text FILE]\n"
                   "                  [--pipeline 'quant.rtn<bits=4>'] [--json OUT] [--threads N] [--bandwidth-mib 512]\n"
                   "                  [--device cpu|cuda|cuda:N] [--kv-cache f32|f16] [--quiet]\n\n"
                   "Times prefill of each prompt length and greedy decoding (warm-up runs excluded): medians\n"
                   "with min/max/stdev, per-token latency p50/p95/p99, time to first token, peak RSS.\n"
                   "Also the bytes a decode step reads per token (the weights, and the KV cache up to its position),\n"
                   "the GB/s that makes, and the machine's read bandwidth measured on the same threads over a\n"
                   "--bandwidth-mib buffer (0: skip) before the first run and after each: each run's decode GB/s\n"
                   "as a fraction of the two measurements beside it, the median and the spread.\n"
                   "--pipeline runs passes (e.g. quantization) on the model first. --device cuda runs the\n"
                   "linears on the GPU (libmopt-cuda), the rest on the CPU. --kv-cache f16 keeps the KV cache in\n"
                   "IEEE halves (half its memory and of what decode reads at long contexts; default f32).\n"
                   "On the CPU it names the kernels the figures ran on: mopt's set, and the GEMM library's for\n"
                   "prefill (OpenBLAS's choice, or the one OPENBLAS_CORETYPE forces on it).\n");
            return EXIT_OK;
        default: return cli_bad_option("bench", argv, "h", opts);
        }
    }
    if (optind != argc - 1) return cli_usage_error("bench", "expected exactly one MODEL");
    if (!cli_parse_int(gen, 1, 1 << 20, &v)) return cli_usage_error("bench", "--gen expects 1..1048576");
    if (!cli_parse_int(runs, 1, 10000, &v)) return cli_usage_error("bench", "--runs expects 1..10000");
    if (!cli_parse_int(warm, 0, 100, &v)) return cli_usage_error("bench", "--warmup expects 0..100");
    cli_job j;
    int rc = cli_job_open(&j, quiet, threads);
    if (rc) return rc;
    if ((pre && mopt_pipeline_parse(j.p, pre, &j.err)) || cli_job_set(&j, "prompt_len", plen) || cli_job_set(&j, "gen", gen) ||
        cli_job_set(&j, "runs", runs) || cli_job_set(&j, "warmup", warm) || cli_job_set(&j, "text", text) ||
        cli_job_set(&j, "bandwidth_mib", bw))
        rc = cli_fail(&j.err);
    else
        rc = cli_job_run(&j, "eval.bench", argv[optind], NULL);
    if (rc) {
        cli_job_close(&j);
        return rc;
    }
#define G(k) mopt_report_get_metric(j.rep, k)
    printf("%s: prefill %.1f tok/s (min %.1f, max %.1f), decode %.1f tok/s (min %.1f, max %.1f, stdev %.1f)\n",
           argv[optind], G("prefill_tok_s"), G("prefill_tok_s_min"), G("prefill_tok_s_max"), G("decode_tok_s"),
           G("decode_tok_s_min"), G("decode_tok_s_max"), G("decode_tok_s_stdev"));
    printf("latency p50 %.3f ms, p95 %.3f ms, p99 %.3f ms; time to first token %.2f ms; peak RSS %.1f MB; model %.1f MB\n",
           G("latency_ms_p50"), G("latency_ms_p95"), G("latency_ms_p99"), G("ttft_ms"), G("peak_rss_bytes") / 1e6,
           G("model_bytes") / 1e6);
    if (G("read_gb_s") > 0)
        printf("read per token: %.1f MB of weights and %.1f MB of KV cache; %.2f GB/s at the median decode. Read bandwidth on %.0f "
               "threads, measured beside each run: median %.2f GB/s; each run's decode against it: median %.0f%% (%.0f-%.0f%%; the "
               "weights alone %.0f%%)\n",
               G("weight_bytes_per_token") / 1e6, G("kv_bytes_per_token") / 1e6, G("decode_gb_s"), G("threads"), G("read_gb_s"),
               100 * G("decode_bandwidth_fraction"), 100 * G("decode_bandwidth_fraction_min"), 100 * G("decode_bandwidth_fraction_max"),
               100 * G("decode_weight_bandwidth_fraction"));
    const json_t *passes = json_object_get(mopt_report_tree(j.rep), "passes"); /* eval.bench runs last */
    const json_t *bench = json_array_get(passes, json_array_size(passes) - 1);
    json_t *kernels = json_object_get(json_object_get(bench, "strings"), "kernels"); /* a CPU session's */
    json_t *gemm = json_object_get(json_object_get(bench, "strings"), "gemm");
    if (kernels && gemm) printf("kernels: %s; GEMM: %s\n", json_string_value(kernels), json_string_value(gemm));
    if (json_path) {
        json_t *js = json_pack("{s:f, s:f, s:{s:f, s:f, s:f}, s:f, s:I, s:I, s:{s:f, s:f, s:f, s:f, s:f, s:f}, s:I, s:I, s:s}",
                               "prefill_tok_s", G("prefill_tok_s"), "decode_tok_s", G("decode_tok_s"), "latency_ms", "p50",
                               G("latency_ms_p50"), "p95", G("latency_ms_p95"), "p99", G("latency_ms_p99"), "ttft_ms", G("ttft_ms"),
                               "peak_rss_bytes", (json_int_t)G("peak_rss_bytes"), "model_bytes", (json_int_t)G("model_bytes"),
                               "spread", "prefill_tok_s_min", G("prefill_tok_s_min"), "prefill_tok_s_max", G("prefill_tok_s_max"),
                               "prefill_tok_s_stdev", G("prefill_tok_s_stdev"), "decode_tok_s_min", G("decode_tok_s_min"),
                               "decode_tok_s_max", G("decode_tok_s_max"), "decode_tok_s_stdev", G("decode_tok_s_stdev"), "runs",
                               (json_int_t)G("runs"), "threads", (json_int_t)G("threads"), "model", argv[optind]);
        json_object_set_new(js, "weight_bytes_per_token", json_integer((json_int_t)G("weight_bytes_per_token")));
        json_object_set_new(js, "kv_bytes_per_token", json_integer((json_int_t)G("kv_bytes_per_token")));
        json_object_set_new(js, "decode_gb_s", json_real(G("decode_gb_s")));
        if (kernels && gemm) { /* what the figures ran on */
            json_object_set(js, "kernels", kernels);
            json_object_set(js, "gemm", gemm);
        }
        if (G("read_gb_s") > 0) {
            json_object_set_new(js, "read_gb_s", json_real(G("read_gb_s")));
            json_object_set_new(js, "decode_bandwidth_fraction", json_real(G("decode_bandwidth_fraction")));
            json_object_set_new(js, "decode_weight_bandwidth_fraction", json_real(G("decode_weight_bandwidth_fraction")));
            json_object_set_new(json_object_get(js, "spread"), "decode_bandwidth_fraction_min", json_real(G("decode_bandwidth_fraction_min")));
            json_object_set_new(json_object_get(js, "spread"), "decode_bandwidth_fraction_max", json_real(G("decode_bandwidth_fraction_max")));
        }
        /* the figures behind the medians: each run's decode tok/s, the bandwidth measured before the first run and after each */
        json_t *series = json_object_get(bench, "series");
        const char *keys[] = {"decode_tok_s_runs", "read_gb_s_probes"};
        for (int k = 0; k < 2; k++)
            if (json_object_get(series, keys[k])) json_object_set(js, keys[k], json_object_get(series, keys[k]));
        if (cli_write_json(json_path, js, &j.err)) rc = cli_fail(&j.err);
        json_decref(js);
    }
#undef G
    cli_job_close(&j);
    return rc;
}
