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
                                         {"stream", no_argument, 0, 'S'},        {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *out = NULL, *format = "hf", *dtype = NULL, *shard = NULL, *draft = NULL, *k = NULL, *pre = NULL, *type = NULL, *tp = NULL;
    int force = 0, quiet = 0, stream = 0, c;
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
        case 'S': stream = 1; break;
        case 'h':
            printf("usage: mopt export MODEL -o DIR|FILE.gguf [--format F] [--dtype auto|f32|f16|bf16] [--force]\n"
                   "                   [--shard-size BYTES] [--draft DRAFT [--draft-k K]] [--pipeline 'PASSES']\n"
                   "                   [--type f32|f16|bf16|q8_0|q4_0|q4_1|q5_0|q5_1|q4_k|q5_k|q6_k|q4_k_s|q4_k_m|q5_k_s|q5_k_m] [--tp N] [--stream]\n\n"
                   "Writes MODEL as a checkpoint DIR, atomically (a temporary directory renamed into place;\n"
                   "an existing DIR is kept unless --force). --pipeline runs passes first (e.g. quantization).\n"
                   "--draft writes speculative_config.json for vLLM and TensorRT-LLM. --stream keeps about one\n"
                   "block in memory: packed weights the pipeline makes go to a scratch file beside DIR.\n"
                   "Formats: " CLI_EXPORT_FORMATS ".\n"
                   "  hf                  dense Hugging Face, or compressed-tensors when the model is quantized\n"
                   "  dense               Hugging Face with quantized weights dequantized (transformers loads it)\n"
                   "  awq | gptq          HF AWQ (GEMM, int4) or GPTQ (v1) packed weights, as vLLM reads them\n"
                   "  compressed-tensors  pack-quantized int, int-quantized W8A8 or float-quantized FP8\n"
                   "  modelopt            ModelOpt's unified HF checkpoint (hf_quant_config.json): W4A16_AWQ, FP8, NVFP4\n"
                   "  trtllm              TensorRT-LLM checkpoint (config.json + rank*.safetensors); --tp N splits\n"
                   "                      it for N tensor-parallel ranks; W4A16_AWQ, W8A16, W8A8, FP8, NVFP4 when quantized\n"
                   "  gguf                one GGUF v3 file for llama.cpp; --type picks the weights' ggml type\n"
                   "                      (default f16; a QINT int4/int8 sym g32 model goes out as q4_0/q8_0 exactly)\n");
            return EXIT_OK;
        default: return cli_usage_error("export", "unknown option");
        }
    }
    if (optind != argc - 1) return cli_usage_error("export", "expected exactly one MODEL");
    if (!out) return cli_usage_error("export", "-o DIR is required");
    cli_job j;
    int rc = cli_job_open(&j, quiet, 0);
    if (rc) return rc;
    if (stream) cli_job_spill_beside(&j, out);
    const char *pass = cli_export_pass(format, j.o, &j.err);
    if (!pass)
        rc = cli_usage_error("export", "%s", j.err.msg);
    else if ((type && strcmp(pass, "export.gguf")) || (tp && strcmp(pass, "export.trtllm")))
        rc = cli_usage_error("export", type ? "--type goes with --format gguf" : "--tp goes with --format trtllm");
    else if (cli_job_set(&j, "type", type) || cli_job_set(&j, "tp", tp) || (pre && mopt_pipeline_parse(j.p, pre, &j.err)) ||
             cli_job_set(&j, "out", out) || cli_job_set(&j, "dtype", dtype) || cli_job_set(&j, "force", force ? "true" : NULL) ||
             cli_job_set(&j, "max_shard_size", shard) || cli_job_set(&j, "draft", draft) || cli_job_set(&j, "num_speculative_tokens", k))
        rc = cli_fail(&j.err);
    else if (!(rc = cli_job_run(&j, pass, argv[optind], NULL)) && !quiet)
        printf("wrote %s (%.1f MB)\n", out, mopt_report_get_metric(j.rep, "bytes") / 1e6);
    cli_job_close(&j);
    return rc;
}
