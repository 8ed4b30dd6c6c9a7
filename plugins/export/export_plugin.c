/* plugins/export: checkpoint writers. */
#include "export_plugin.h"

static const mopt_pass_desc *const passes[] = {&export_hf_pass, &export_gguf_pass, &export_trtllm_pass, NULL};

static const mopt_plugin_desc desc = {
    .abi_version = MOPT_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(mopt_plugin_desc),
    .name = "export",
    .version = "0.1.0",
    .license = "MIT",
    .description = "checkpoint exporters: Hugging Face (dense, AWQ, GPTQ, compressed-tensors, ModelOpt), TensorRT-LLM and GGUF, written atomically",
    .passes = passes,
};

MOPT_PLUGIN_ENTRY {
    (void)host;
    (void)err;
    return &desc;
}
