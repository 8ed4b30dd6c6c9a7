/* Importers and the model object (core only). */
#ifndef MOPT_MODEL_IMPL_H
#define MOPT_MODEL_IMPL_H

#include <stdbool.h>

#include "mopt/model.h"

/* Loads a Hugging Face directory (config.json + safetensors) into a graph. */
mopt_status mopt_import_hf(const char *dir, mopt_graph **out, mopt_error *err);
/* Turns the packed linears of a quantized HF checkpoint (AWQ, GPTQ, compressed-tensors)
 * in g into mopt packed tensors; a no-op without quantization_config. */
struct mopt_hf_kv;
/* ... and takes the KV-cache scales out of g into *kv (mopt_hf_kv_apply sets
 * them once the graph is built) when the config names a KV-cache scheme. */
mopt_status mopt_import_hf_quant(mopt_graph *g, const char *config_path, struct mopt_hf_kv *kv, mopt_error *err);
/* TensorRT-LLM checkpoints: whether a config.json is one, and the loader. */
bool mopt_is_trtllm_config(const char *config_path);
mopt_status mopt_import_trtllm(const char *dir, mopt_graph **out, mopt_error *err);
/* Loads a GGUF file: the graph and, when the file carries one, its tokenizer (*tok may stay NULL). */
mopt_status mopt_import_gguf(const char *path, mopt_graph **out, mopt_tokenizer **tok, mopt_error *err);
/* Loads a llama2.c version-0 checkpoint (a LLaMA) into a graph. */
mopt_status mopt_import_llama2c(const char *path, mopt_graph **out, mopt_error *err);

#endif
