/* plugins/quant: post-training quantization into packed formats. */
#include "passes.h"

static const mopt_pass_desc *const passes[] = {&quant_rtn_pass, &quant_gptq_pass, &quant_awq_pass,
                                               &quant_smoothquant_pass, &quant_fp8_pass, NULL};

static const mopt_plugin_desc desc = {
    .abi_version = MOPT_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(mopt_plugin_desc),
    .name = "quant",
    .version = "0.1.0",
    .license = "MIT",
    .description = "post-training quantization: RTN, GPTQ, AWQ, SmoothQuant W8A8, FP8",
    .passes = passes,
};

MOPT_PLUGIN_ENTRY {
    (void)host;
    (void)err;
    return &desc;
}
