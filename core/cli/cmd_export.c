/* mopt export MODEL -o DIR [--format F] [--dtype auto|f32|f16|bf16] [--force] [--draft D --draft-k K]:
 * the export passes. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int cmd_export(int argc, char **argv) {
    static const struct option opts[] = {{"format", required_argument, 0, 'f'}, {"dtype", required_argument, 0, 'd'},
                                         {"force", no_argument, 0, 'F'},         {"shard-size", required_argument, 0, 's'},
                                         {"draft", required_argument, 0, 'D'},   {"draft-k", required_argument, 0, 'K'},
                                         {"pipeline", required_argument, 0, 'P'}, {"quiet", no_argument, 0, 'q'},
                                         {"type", required_argument, 0, 't'},    {"tp", required_argument, 0, 'T'},
                                         {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
    const char *out = NULL, *format = "hf", *dtype = NULL, *shard = NULL, *draft = NULL, *k = NULL, *pre = NULL, *type = NULL, *tp = NULL;
    int force = 0, quiet = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "ho:", opts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 'f': format = optarg; break;
        case 'd': dtype = optarg; break;
        case 'F': force = 1; break;
        case 's': shard = optarg; break;
        case 'D': draft = optarg; break;
        case 'K': k = optarg; break;
        case 'P': pre = optarg; break;
        case 'q': quiet = 1; break;
        case 't': type = optarg; break;
        case 'T': tp = optarg; break;
        case 'h':
            printf("usage: mopt export MODEL -o DIR|FILE.gguf [--format F] [--dtype auto|f32|f16|bf16] [--force]\n"
                   "                   [--shard-size BYTES] [--draft DRAFT [--draft-k K]] [--pipeline 'PASSES']\n"
                   "                   [--type f32|f16|bf16|q8_0|q4_0|q4_1|q5_0|q5_1|q4_k|q5_k|q6_k] [--tp N]\n\n"
                   "Writes MODEL as a checkpoint DIR, atomically (a temporary directory renamed into place;\n"
                   "an existing DIR is kept unless --force). --pipeline runs passes first (e.g. quantization).\n"
                   "--draft writes speculative_config.json for vLLM and TensorRT-LLM.\n"
                   "Formats: " CLI_EXPORT_FORMATS ".\n"
                   "  hf                  dense Hugging Face, or compressed-tensors when the model is quantized\n"
                   "  dense               Hugging Face with quantized weights dequantized (transformers loads it)\n"
                   "  awq | gptq          HF AWQ (GEMM, int4) or GPTQ (v1) packed weights, as vLLM reads them\n"
                   "  compressed-tensors  pack-quantized int, int-quantized W8A8 or float-quantized FP8\n"
                   "  modelopt            ModelOpt's unified HF checkpoint (hf_quant_config.json): W4A16_AWQ, FP8\n"
                   "  trtllm              TensorRT-LLM checkpoint (config.json + rank*.safetensors); --tp N splits\n"
                   "                      it for N tensor-parallel ranks; W4A16_AWQ, W8A16, W8A8, FP8 when quantized\n"
                   "  gguf                one GGUF v3 file for llama.cpp; --type picks the weights' ggml type\n"
                   "                      (default f16; a QINT int4/int8 sym g32 model goes out as q4_0/q8_0 exactly)\n");
            return EXIT_OK;
        default: return cli_usage_error("export", "unknown option");
        }
    }
    if (optind != argc - 1) return cli_usage_error("export", "expected exactly one MODEL");
    if (!out) return cli_usage_error("export", "-o DIR is required");
    int rrc;
    mopt_registry *r = cli_registry(&rrc);
    if (!r) return rrc;
    mopt_error err = {0};
    int rc = EXIT_OK;
    mopt_model *m = NULL;
    mopt_report *rep = mopt_report_new();
    mopt_pipeline *p = mopt_pipeline_new(r);
    mopt_options *o = mopt_options_new();
    const char *pass = cli_export_pass(format, o, &err);
    if (!pass) {
        rc = cli_usage_error("export", "%s", err.msg);
        goto done;
    }
    if ((type && strcmp(pass, "export.gguf")) || (tp && strcmp(pass, "export.trtllm"))) {
        rc = cli_usage_error("export", type ? "--type goes with --format gguf" : "--tp goes with --format trtllm");
        goto done;
    }
    if ((type && mopt_options_set(o, "type", type, &err)) || (tp && mopt_options_set(o, "tp", tp, &err)) || (pre && mopt_pipeline_parse(p, pre, &err)) ||
        mopt_options_set(o, "out", out, &err) ||
        (dtype && mopt_options_set(o, "dtype", dtype, &err)) || (force && mopt_options_set(o, "force", "true", &err)) ||
        (shard && mopt_options_set(o, "max_shard_size", shard, &err)) || (draft && mopt_options_set(o, "draft", draft, &err)) ||
        (k && mopt_options_set(o, "num_speculative_tokens", k, &err)) || mopt_pipeline_add(p, pass, o, &err) ||
        !(m = mopt_model_load(argv[optind], NULL, &err))) {
        rc = cli_fail(&err);
        goto done;
    }
    mopt_run_opts ro;
    mopt_run_opts_default(&ro);
    ro.quiet = quiet;
    if (mopt_pipeline_run(p, m, &ro, rep, &err)) rc = cli_fail(&err);
    else if (!quiet) printf("wrote %s (%.1f MB)\n", out, mopt_report_get_metric(rep, "bytes") / 1e6);
done:
    mopt_options_free(o);
    mopt_report_free(rep);
    mopt_pipeline_free(p);
    mopt_model_free(m);
    mopt_registry_free(r);
    return rc;
}
