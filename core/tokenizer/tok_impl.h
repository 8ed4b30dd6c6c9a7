/* Tokenizer internals shared by tokenizer.c, tok_bpe.c, tok_hf.c and tok_llama2c.c. */
#ifndef MOPT_TOK_IMPL_H
#define MOPT_TOK_IMPL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mopt/tokenizer.h"

typedef struct id_vec id_vec;

/* How a kind of tokenizer encodes and what GGUF calls it: one table per kind
 * (tok_hf.c, tok_llama2c.c), so the shared code never asks which kind it has. */
typedef struct tok_strategy {
    const char *name;
    /* appends the ids of text; `add_special`: the kind's BOS / template ids around them */
    mopt_status (*encode)(const mopt_tokenizer *tok, const char *text, size_t len, int add_special, id_vec *out, mopt_error *err);
    /* GGUF's tokenizer.ggml.model for this tokenizer, or NULL when GGUF has no form of it */
    const char *(*ggml_model)(const mopt_tokenizer *tok);
    /* BOS, EOS (and UNK) are control tokens, as SentencePiece vocabularies mark them */
    bool spm_controls;
} tok_strategy;

extern const tok_strategy tok_strategy_hf, tok_strategy_llama2c;
typedef enum { TOK_DECODER_BYTELEVEL = 0, TOK_DECODER_SPM = 1, TOK_DECODER_LLAMA2C = 2 } tok_decoder;

/* string -> id, open addressing */
typedef struct str_map {
    uint32_t cap; /* power of two */
    int32_t *slots; /* id or -1 */
    char *const *keys; /* borrowed: the tokenizer's token strings */
    const uint32_t *key_len;
} str_map;

/* (left id, right id) -> (rank, merged id), open addressing */
typedef struct pair_map {
    uint32_t cap;
    uint64_t *keys; /* (left << 32 | right) + 1; 0 = empty */
    int32_t *rank;
    int32_t *merged;
} pair_map;

typedef struct added_token {
    char *content;
    uint32_t len;
    int32_t id;
    bool special;
} added_token;

/* One pre-tokenizer split step (each encoding makes its own match data: a tokenizer is shared by threads). */
typedef struct split_step {
    pcre2_code *re;
} split_step;

#define TOK_MAX_SPLITS 4
#define TOK_MAX_TEMPLATE 8

struct mopt_tokenizer {
    char source[256]; /* the file it came from, for messages */
    const tok_strategy *strategy;
    tok_decoder decoder;
    int32_t n_vocab;
    char **tokens;        /* id -> stored token string (NUL-terminated; NULL for holes) */
    uint32_t *token_len;
    uint8_t *is_special;  /* id -> 1 for special added tokens */
    float *scores;        /* llama2.c merge scores */
    str_map vocab;
    pair_map merges;
    added_token *added;   /* sorted by decreasing length */
    int32_t n_added;
    /* normalizer */
    bool norm_prepend_space_marker; /* Prepend("▁") */
    bool norm_replace_space;        /* Replace(" ", "▁") */
    /* pre-tokenizer */
    split_step splits[TOK_MAX_SPLITS];
    int32_t n_splits;
    bool byte_level;      /* ByteLevel pre-tokenizer: map bytes to the GPT-2 alphabet */
    bool add_prefix_space;
    /* model */
    bool ignore_merges;
    bool byte_fallback;
    int32_t unk_id;
    int32_t byte_ids[256]; /* byte -> id of its byte-level char or <0xXX> token, -1 if none */
    /* post-processor: ids around the sequence when MOPT_TOK_ADD_SPECIAL */
    int32_t tmpl_pre[TOK_MAX_TEMPLATE], n_tmpl_pre;
    int32_t tmpl_post[TOK_MAX_TEMPLATE], n_tmpl_post;
    /* decoder */
    int32_t strip_leading; /* spaces removed at the start (Strip decoder) */
    uint8_t **piece;       /* id -> decoded bytes (byte-level / ▁ replaced); NULL for byte tokens */
    uint32_t *piece_len;
    int16_t *piece_byte;   /* id -> raw byte for <0xXX> tokens, -1 otherwise */
    int32_t bos_id, eos_id;
    char *chat_template; /* Jinja, from tokenizer_config.json or GGUF's tokenizer.chat_template; NULL if none */
    char *hf_json;       /* the tokenizer.json a GGUF file's byte-level BPE was rebuilt as; NULL otherwise */
};

/* growable id list */
struct id_vec {
    int32_t *v;
    size_t n, cap;
};
int id_vec_push(id_vec *a, int32_t x);

uint32_t tok_hash(const char *s, size_t n);
int str_map_build(str_map *m, char *const *keys, const uint32_t *lens, int32_t n);
int32_t str_map_get(const str_map *m, const char *s, size_t n);
void str_map_free(str_map *m);

int pair_map_init(pair_map *m, uint32_t n);
int pair_map_put(pair_map *m, int32_t a, int32_t b, int32_t rank, int32_t merged);
int pair_map_get(const pair_map *m, int32_t a, int32_t b, int32_t *rank, int32_t *merged);
void pair_map_free(pair_map *m);

/* Merges `syms` (ids, in place) by merge rank, lowest rank first and leftmost
 * first on ties, as HF tokenizers' BPE does; appends the result to out.
 * Returns 0 when out of memory or interrupted (mopt_interrupted tells which). */
int tok_bpe_merge(const mopt_tokenizer *tok, const int32_t *syms, size_t n, id_vec *out);

/* A new tokenizer of `strategy` from `path` (for messages), everything else empty. */
mopt_tokenizer *tok_new(const tok_strategy *strategy, const char *path, mopt_error *err);
/* Whether id is a control token (special, or a SentencePiece BOS / EOS). */
bool tok_is_control(const mopt_tokenizer *tok, int32_t id);

/* Fills piece/piece_len/piece_byte for every id (after tokens are loaded). */
int tok_build_pieces(mopt_tokenizer *tok);
/* GPT-2's reversible byte -> printable code point table (every code point below 512) */
void tok_byte_level_table(uint32_t cp[256]);

/* Constructors from memory (GGUF stores tokenizers as metadata): a parsed
 * tokenizer.json, and the bytes of a llama2.c tokenizer file. `path` names the
 * source in messages. */
typedef struct json_t json_t;
mopt_tokenizer *tok_hf_from_json(json_t *root, const char *path, mopt_error *err);
mopt_tokenizer *tok_llama2c_parse(const char *data, size_t size, int32_t vocab_size, const char *path, mopt_error *err);


/* Length of the UTF-8 sequence starting with byte c (1 for invalid lead bytes). */
static inline size_t utf8_len(unsigned char c) {
    if (c < 0x80) return 1;
    if ((c & 0xe0) == 0xc0) return 2;
    if ((c & 0xf0) == 0xe0) return 3;
    if ((c & 0xf8) == 0xf0) return 4;
    return 1;
}

#endif
