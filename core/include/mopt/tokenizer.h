/* Tokenizers: Hugging Face tokenizer.json (byte-level BPE as in GPT-2 /
 * Llama-3 / Qwen, and SentencePiece-style BPE with byte fallback as in
 * Llama-2) and the llama2.c tokenizer file. */
#ifndef MOPT_TOKENIZER_H
#define MOPT_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mopt/error.h"
#include "mopt/export.h"

MOPT_EXTERN_C_BEGIN

typedef struct mopt_tokenizer mopt_tokenizer;

enum {
    MOPT_TOK_ADD_SPECIAL = 1u << 0, /* apply the post-processor template / BOS */
    MOPT_TOK_SKIP_SPECIAL = 1u << 1 /* decode: drop special tokens */
};

/* Loads a tokenizer.json. */
MOPT_API mopt_tokenizer *mopt_tokenizer_load_hf(const char *path, mopt_error *err);
/* Loads a llama2.c tokenizer.bin holding `vocab_size` entries. */
MOPT_API mopt_tokenizer *mopt_tokenizer_load_llama2c(const char *path, int32_t vocab_size, mopt_error *err);
MOPT_API void mopt_tokenizer_free(mopt_tokenizer *tok);

/* Encodes a whole UTF-8 text file (mapped, not copied) as mopt_tokenizer_encode
 * does; errors name the file (an empty file is one). *ids is malloc'd. */
MOPT_API mopt_status mopt_tokenizer_encode_file(const mopt_tokenizer *tok, const char *path, uint32_t flags, int32_t **ids,
                                                size_t *n_ids, mopt_error *err);

MOPT_API int32_t mopt_tokenizer_vocab_size(const mopt_tokenizer *tok);
/* The token's string as stored in the vocabulary, or NULL. */
MOPT_API const char *mopt_tokenizer_token_str(const mopt_tokenizer *tok, int32_t id);
MOPT_API bool mopt_tokenizer_is_special(const mopt_tokenizer *tok, int32_t id);
MOPT_API int32_t mopt_tokenizer_bos_id(const mopt_tokenizer *tok); /* -1 if none */
MOPT_API int32_t mopt_tokenizer_eos_id(const mopt_tokenizer *tok); /* -1 if none */
/* The Jinja chat template the model's files carry: the chat_template of the
 * tokenizer_config.json beside tokenizer.json (a string, or the "default" of a
 * list), or GGUF's tokenizer.chat_template. NULL if none. */
MOPT_API const char *mopt_tokenizer_chat_template(const mopt_tokenizer *tok);
/* The files transformers and vLLM read a tokenizer from, for a tokenizer that
 * came out of a GGUF file (tokenizer.ggml.model gpt2): *tokenizer_json, the
 * tokenizer.json it was rebuilt as, and *config_json, a tokenizer_config.json
 * naming its special tokens and carrying its chat template; both malloc'd.
 * MOPT_E_UNSUPPORTED for one without such a form (a GGUF llama vocabulary of
 * pieces and scores) or whose own files are elsewhere (a tokenizer.json). */
MOPT_API mopt_status mopt_tokenizer_hf_files(const mopt_tokenizer *tok, char **tokenizer_json, char **config_json,
                                             mopt_error *err);

/* Whether two tokenizers have the same vocabulary: same size and the same
 * string for every id. *first_diff (may be NULL) gets the first differing id,
 * or -1 when only the sizes differ. */
MOPT_API bool mopt_tokenizer_same_vocab(const mopt_tokenizer *a, const mopt_tokenizer *b, int32_t *first_diff);

/* What GGUF stores about a tokenizer (tokenizer.ggml.*). The model is "gpt2"
 * (byte-level BPE with merges), "llama" (llama2.c / SentencePiece pieces with
 * scores), or NULL when the tokenizer is neither (SentencePiece-style BPE from a
 * tokenizer.json carries merges but no scores). */
MOPT_API const char *mopt_tokenizer_ggml_model(const mopt_tokenizer *tok);
/* The token's merge score (llama2.c), 0 for BPE tokenizers. */
MOPT_API float mopt_tokenizer_score(const mopt_tokenizer *tok, int32_t id);
/* GGUF token type: 1 normal, 2 unknown, 3 control, 6 byte. */
MOPT_API int32_t mopt_tokenizer_token_type(const mopt_tokenizer *tok, int32_t id);
/* The BPE merges in rank order as (left id, right id) pairs; returns how many
 * there are (fills at most cap), -1 when out of memory. */
MOPT_API int32_t mopt_tokenizer_merges(const mopt_tokenizer *tok, int32_t *left, int32_t *right, int32_t cap);

/* Encodes `len` bytes of UTF-8 text. *ids is allocated with malloc (free()). */
MOPT_API mopt_status mopt_tokenizer_encode(const mopt_tokenizer *tok, const char *text, size_t len, uint32_t flags,
                                           int32_t **ids, size_t *n_ids, mopt_error *err);
/* Decodes ids to text (NUL-terminated, malloc'd; *len excludes the NUL). */
MOPT_API mopt_status mopt_tokenizer_decode(const mopt_tokenizer *tok, const int32_t *ids, size_t n, uint32_t flags,
                                           char **text, size_t *len, mopt_error *err);

/* Streaming decode: the bytes token `id` adds after the already decoded
 * `prev` ids. Writes into buf (cap bytes) and returns the byte count, or -1
 * when buf is too small. May emit partial UTF-8 sequences. */
MOPT_API int64_t mopt_tokenizer_decode_next(const mopt_tokenizer *tok, const int32_t *prev, size_t n_prev, int32_t id,
                                            char *buf, size_t cap);

MOPT_EXTERN_C_END

#endif
