/* The export plugin's passes. */
#ifndef MOPT_EXPORT_PLUGIN_H
#define MOPT_EXPORT_PLUGIN_H

#include "atomic_dir.h"
#include "mopt/plugin_util.h"

extern const mopt_pass_desc export_hf_pass;
extern const mopt_pass_desc export_gguf_pass;
extern const mopt_pass_desc export_trtllm_pass;

/* Writes m's tokenizer files into d: those a GGUF file's tokenizer is rebuilt as, or
 * the ones beside the model (tokenizer*.json, special_tokens_map.json, a llama2.c
 * tok*.bin as tokenizer.bin); ctx for the line saying a GGUF's has none. */
mopt_status export_copy_tokenizer(const mopt_host_api *h, const mopt_pass_ctx *ctx, const mopt_model *m, const atomic_dir *d,
                                  mopt_error *err);

#endif
