/* plugins/export: checkpoint writers. */
#include "export_plugin.h"

MOPT_PLUGIN_DEFINE("export", "0.1.0", "MIT",
                   "checkpoint exporters: Hugging Face (dense, AWQ, GPTQ, compressed-tensors, ModelOpt), TensorRT-LLM and GGUF, written atomically",
                   &export_hf_pass, &export_gguf_pass, &export_trtllm_pass)
