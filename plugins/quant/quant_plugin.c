/* plugins/quant: post-training quantization into packed formats. */
#include "passes.h"

MOPT_PLUGIN_DEFINE("quant", "0.1.0", "MIT",
                   "quantization: RTN, GPTQ, AWQ, SmoothQuant W8A8, FP8, NVFP4, MXFP4, MXFP8, auto_quantize, FP8/int8 KV cache, importance matrices; QAT and QAD",
                   &quant_rtn_pass, &quant_gptq_pass, &quant_awq_pass, &quant_smoothquant_pass, &quant_fp8_pass, &quant_qat_pass,
                   &quant_nvfp4_pass, &quant_mxfp4_pass, &quant_mxfp8_pass, &quant_auto_pass, &quant_kv_pass, &quant_imatrix_pass)
