/* mopt export MODEL -o DIR [--format F] [--dtype auto|f32|f16|bf16] [--force] [--draft D --draft-k K]:
 * the export passes. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"

/* --calib: the --pipeline passes, then quant.imatrix into OUT.imatrix.dat (kept: llama.cpp users keep theirs),
 * whose path (in path) goes to export.gguf's imatrix */
static int imatrix_first(cli_job *j, char *path, size_t cap, const char *out, const char *calib, const char *n, int force,
                         const char *pre) {
    int w = snprintf(path, cap, "%s.imatrix.dat", out);
    struct stat sb;
    if (w < 0 || (size_t)w >= cap) return cli_usage_error("export", "-o %s: path too long", out);
    if (!force && lstat(path, &sb) == 0) return cli_usage_error("export", "%s exists: pass --force to replace it, or --imatrix it", path);
    char text[3 * 4096];
    w = snprintf(text, sizeof text, "%s%squant.imatrix<out=%s;calib=%s%s%s%s>", pre ? pre : "", pre ? "," : "", path, calib,
                 n ? ";calib_samples=" : "", n ? n : "", force ? ";force=true" : "");
    if (w < 0 || (size_t)w >= sizeof text) return cli_usage_error("export", "--calib %s: path too long", calib);
    return mopt_pipeline_parse(j->p, text, &j->err) ? cli_fail(&j->err) : 0;
}

/* --method gptq|awq: the --pipeline passes, then quant.gptq or quant.awq onto the blocks --type gives each linear
 * (calibrated on --calib). AWQ follows llama-quantize's layout with an importance matrix, so imatrix_first runs
 * after it and weights what it leaves (Q4_1 / Q5_1 ffn_down, output.weight); GPTQ follows the layout without one. */
static int method_first(cli_job *j, const char *method, const char *type, const char *calib, const char *n, const char *pre) {
    char text[3 * 4096];
    int w = snprintf(text, sizeof text, "%s%squant.%s<gguf_type=%s;calib=%s%s%s>", pre ? pre : "", pre ? "," : "", method, type, calib,
                     n ? ";calib_samples=" : "", n ? n : "");
    if (w < 0 || (size_t)w >= sizeof text) return cli_usage_error("export", "--calib %s: path too long", calib);
    return mopt_pipeline_parse(j->p, text, &j->err) ? cli_fail(&j->err) : 0;
}

int cmd_export(int argc, char **argv) {
    static const struct option opts[] = {{"format", required_argument, 0, 'f'}, {"dtype", required_argument, 0, 'd'},
                                         {"force", no_argument, 0, 'F'},         {"shard-size", required_argument, 0, 's'},
                                         {"draft", required_argument, 0, 'D'},   {"draft-k", required_argument, 0, 'K'},
                                         {"pipeline", required_argument, 0, 'P'}, {"quiet", no_argument, 0, 'q'},
                                         {"type", required_argument, 0, 't'},    {"tp", required_argument, 0, 'T'},
                                         {"stream", no_argument, 0, 'S'},        {"help", no_argument, 0, 'h'},
                                         {"imatrix", required_argument, 0, 'I'}, {"calib", required_argument, 0, 'C'},
                                         {"calib-samples", required_argument, 0, 'N'}, {"method", required_argument, 0, 'M'},
                                         {0, 0, 0, 0}};
    const char *out = NULL, *format = "hf", *dtype = NULL, *shard = NULL, *draft = NULL, *k = NULL, *pre = NULL, *type = NULL, *tp = NULL, *imatrix = NULL,
               *calib = NULL, *calib_n = NULL, *method = NULL;
    int force = 0, quiet = 0, stream = 0, c;
    char imat_path[4200];
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
        case 'I': imatrix = optarg; break;
        case 'C': calib = optarg; break;
        case 'N': calib_n = optarg; break;
        case 'M': method = optarg; break;
        case 'h':
            printf("usage: mopt export MODEL -o DIR|FILE.gguf [--format F] [--dtype auto|f32|f16|bf16] [--force]\n"
                   "                   [--shard-size BYTES] [--draft DRAFT [--draft-k K]] [--pipeline 'PASSES']\n"
                   "                   [--type T] [--tp N] [--stream]\n"
                   "                   [--imatrix FILE.dat | --calib TEXT [--calib-samples N] [--method gptq|awq]]\n\n"
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
                   "                      (default f16; a QINT int4/int8 sym g32 model goes out as q4_0/q8_0 exactly);\n"
                   "                      T: f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q3_k q4_k q5_k q6_k (every linear\n"
                   "                      the type, output.weight q6_k), or llama-quantize's mixes, byte for byte:\n"
                   "                      q2_k q2_k_s q3_k_s q3_k_m q3_k_l q4_k_s q4_k_m q5_k_s q5_k_m (q2_k is the\n"
                   "                      mix llama-quantize calls Q2_K: attn_v, attn_output and ffn_down take q3_k).\n"
                   "                      --imatrix weights the quantizers by a llama.cpp importance matrix (imatrix.dat\n"
                   "                      or a GGUF imatrix; llama-imatrix's or mopt's); --calib computes one from\n"
                   "                      calibration text first and keeps it as OUT.imatrix.dat;\n"
                   "                      --method gptq with --calib runs GPTQ onto the blocks --type gives each\n"
                   "                      linear instead (quant.gptq<gguf_type>: the same layout and size, lower KLD);\n"
                   "                      --method awq searches AWQ's scales on those blocks (quant.awq<gguf_type>),\n"
                   "                      then computes the importance matrix on that model for the rest (kept)\n");
            return EXIT_OK;
        default: return cli_bad_option("export", argv, "ho:", opts);
        }
    }
    if (optind != argc - 1) return cli_usage_error("export", "expected exactly one MODEL");
    if (!out) return cli_usage_error("export", "-o DIR is required");
    struct stat sb; /* said before the pipeline runs (a GPTQ export would spend its minute first); the export pass still
                     * decides what --force may replace */
    if (!force && lstat(out, &sb) == 0) return cli_usage_error("export", "%s already exists; pass force (--force) to replace it", out);
    cli_job j;
    int rc = cli_job_open(&j, quiet, 0);
    if (rc) return rc;
    if (stream) cli_job_spill_beside(&j, out);
    const char *pass = cli_export_pass(format, j.o, &j.err);
    const int calib_imatrix = calib && (!method || !strcmp(method, "awq")); /* a matrix from --calib goes to the export */
    if (!pass)
        rc = cli_usage_error("export", "%s", j.err.msg);
    else if ((type && strcmp(pass, "export.gguf")) || (tp && strcmp(pass, "export.trtllm")))
        rc = cli_usage_error("export", type ? "--type goes with --format gguf" : "--tp goes with --format trtllm");
    else if ((imatrix || calib) && strcmp(pass, "export.gguf"))
        rc = cli_usage_error("export", "--imatrix and --calib go with --format gguf");
    else if (imatrix && calib)
        rc = cli_usage_error("export", "give --imatrix FILE or --calib TEXT (which computes one), not both");
    else if (method && strcmp(method, "gptq") && strcmp(method, "awq"))
        rc = cli_usage_error("export", "--method %s: GGUF blocks take gptq or awq (or drop --method: --calib alone weights by an importance matrix)",
                             method);
    else if (method && (!calib || !type || strcmp(pass, "export.gguf")))
        rc = cli_usage_error("export", "--method %s needs --format gguf, --type T and --calib TEXT", method);
    else if (method && (rc = method_first(&j, method, type, calib, calib_n, pre)))
        ;
    else if (calib_imatrix && (rc = imatrix_first(&j, imat_path, sizeof imat_path, out, calib, calib_n, force, method ? NULL : pre)))
        ;
    else if (cli_job_set(&j, "type", type) || cli_job_set(&j, "tp", tp) || (!calib && pre && mopt_pipeline_parse(j.p, pre, &j.err)) ||
             cli_job_set(&j, "imatrix", calib_imatrix ? imat_path : imatrix) ||
             cli_job_set(&j, "out", out) || cli_job_set(&j, "dtype", dtype) || cli_job_set(&j, "force", force ? "true" : NULL) ||
             cli_job_set(&j, "max_shard_size", shard) || cli_job_set(&j, "draft", draft) || cli_job_set(&j, "num_speculative_tokens", k))
        rc = cli_fail(&j.err);
    else if (!(rc = cli_job_run(&j, pass, argv[optind], NULL)) && !quiet)
        printf("wrote %s (%.1f MB)\n", out, mopt_report_get_metric(j.rep, "bytes") / 1e6);
    cli_job_close(&j);
    return rc;
}
