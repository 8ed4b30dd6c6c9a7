/* Loading checkpoints into a graph with its tokenizer. */
#ifndef MOPT_MODEL_H
#define MOPT_MODEL_H

#include <stdint.h>

#include "mopt/error.h"
#include "mopt/export.h"
#include "mopt/graph.h"
#include "mopt/tokenizer.h"

MOPT_EXTERN_C_BEGIN

typedef enum mopt_model_format {
    MOPT_FORMAT_HF = 0,     /* directory with config.json: Hugging Face (dense or AWQ / GPTQ / compressed-tensors /
                               ModelOpt packed) or TensorRT-LLM (rank*.safetensors) */
    MOPT_FORMAT_LLAMA2C = 1, /* llama2.c version-0 checkpoint */
    MOPT_FORMAT_GGUF = 2     /* GGUF file (llama.cpp) */
} mopt_model_format;

typedef struct mopt_model mopt_model;

/* Loads a checkpoint directory (Hugging Face, quantized HF, TensorRT-LLM), a
 * GGUF file or a llama2.c .bin, whichever `path` holds. `tokenizer_path` may
 * be NULL: a directory's tokenizer.json (or tokenizer.bin) is used, a GGUF
 * file's own tokenizer, or a tok*.bin / tokenizer.bin beside a llama2.c
 * checkpoint (a model without a tokenizer still loads; mopt_model_tokenizer
 * then returns NULL). A tokenizer_path given wins over the file's own. */
MOPT_API mopt_model *mopt_model_load(const char *path, const char *tokenizer_path, mopt_error *err);
MOPT_API void mopt_model_free(mopt_model *m);

MOPT_API mopt_graph *mopt_model_graph(const mopt_model *m);
MOPT_API const mopt_arch *mopt_model_arch(const mopt_model *m);
MOPT_API const mopt_tokenizer *mopt_model_tokenizer(const mopt_model *m);
MOPT_API mopt_model_format mopt_model_format_of(const mopt_model *m);
MOPT_API const char *mopt_model_path(const mopt_model *m);

MOPT_EXTERN_C_END

#endif
