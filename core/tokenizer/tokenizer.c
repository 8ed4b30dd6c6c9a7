/* Public tokenizer API: encode with the post-processor, decode through the
 * decoder the tokenizer declares, streaming decode for generation. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "tok_impl.h"

#define SPM_SPACE "\xe2\x96\x81"

const char *mopt_tokenizer_chat_template(const mopt_tokenizer *tok) { return tok->chat_template; }

void mopt_tokenizer_free(mopt_tokenizer *tok) {
    if (!tok) return;
    for (int32_t i = 0; i < tok->n_vocab; i++) {
        if (tok->tokens) free(tok->tokens[i]);
        if (tok->piece) free(tok->piece[i]);
    }
    free(tok->tokens);
    free(tok->token_len);
    free(tok->is_special);
    free(tok->scores);
    free(tok->added);
    free(tok->piece);
    free(tok->piece_len);
    free(tok->piece_byte);
    str_map_free(&tok->vocab);
    pair_map_free(&tok->merges);
    free(tok->chat_template);
    free(tok->hf_json);
    for (int32_t i = 0; i < tok->n_splits; i++) {
        pcre2_code_free(tok->splits[i].re);
    }
    free(tok);
}

int32_t mopt_tokenizer_vocab_size(const mopt_tokenizer *tok) { return tok->n_vocab; }
const char *mopt_tokenizer_token_str(const mopt_tokenizer *tok, int32_t id) {
    return (id >= 0 && id < tok->n_vocab) ? tok->tokens[id] : NULL;
}
bool mopt_tokenizer_is_special(const mopt_tokenizer *tok, int32_t id) {
    return id >= 0 && id < tok->n_vocab && tok->is_special[id];
}
bool mopt_tokenizer_same_vocab(const mopt_tokenizer *a, const mopt_tokenizer *b, int32_t *first_diff) {
    if (first_diff) *first_diff = -1;
    if (a->n_vocab != b->n_vocab) return false;
    for (int32_t i = 0; i < a->n_vocab; i++) {
        const char *x = a->tokens[i], *y = b->tokens[i];
        if ((x || y) && (!x || !y || a->token_len[i] != b->token_len[i] || memcmp(x, y, a->token_len[i]) != 0)) {
            if (first_diff) *first_diff = i;
            return false;
        }
    }
    return true;
}

mopt_tokenizer *tok_new(const tok_strategy *strategy, const char *path, mopt_error *err) {
    mopt_tokenizer *tok = calloc(1, sizeof *tok);
    if (!tok) {
        MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
        return NULL;
    }
    snprintf(tok->source, sizeof tok->source, "%s", path);
    tok->strategy = strategy;
    tok->unk_id = tok->bos_id = tok->eos_id = -1;
    return tok;
}

bool tok_is_control(const mopt_tokenizer *tok, int32_t id) {
    return mopt_tokenizer_is_special(tok, id) || (tok->strategy->spm_controls && (id == tok->bos_id || id == tok->eos_id));
}

const char *mopt_tokenizer_ggml_model(const mopt_tokenizer *tok) { return tok->strategy->ggml_model(tok); }

float mopt_tokenizer_score(const mopt_tokenizer *tok, int32_t id) {
    return tok->scores && id >= 0 && id < tok->n_vocab ? tok->scores[id] : 0.0f;
}

int32_t mopt_tokenizer_token_type(const mopt_tokenizer *tok, int32_t id) {
    if (id < 0 || id >= tok->n_vocab) return 0;
    if (id == tok->unk_id && tok->strategy->spm_controls) return 2;
    if (tok_is_control(tok, id)) return 3;
    if (tok->piece_byte && tok->piece_byte[id] >= 0) return 6;
    return 1;
}

static int by_rank(const void *a, const void *b) {
    const int64_t *x = a, *y = b;
    return x[0] < y[0] ? -1 : x[0] > y[0];
}

int32_t mopt_tokenizer_merges(const mopt_tokenizer *tok, int32_t *left, int32_t *right, int32_t cap) {
    int32_t n = 0;
    for (uint32_t i = 0; i < tok->merges.cap; i++) n += tok->merges.keys[i] != 0;
    if (cap <= 0 || n == 0) return n;
    int64_t (*e)[2] = malloc((size_t)n * sizeof *e); /* (rank, key) */
    if (!e) return -1;
    int32_t k = 0;
    for (uint32_t i = 0; i < tok->merges.cap; i++)
        if (tok->merges.keys[i]) e[k][0] = tok->merges.rank[i], e[k++][1] = (int64_t)(tok->merges.keys[i] - 1);
    qsort(e, (size_t)n, sizeof *e, by_rank);
    for (int32_t i = 0; i < n && i < cap; i++) {
        left[i] = (int32_t)((uint64_t)e[i][1] >> 32);
        right[i] = (int32_t)((uint64_t)e[i][1] & 0xffffffffu);
    }
    free(e);
    return n;
}

int32_t mopt_tokenizer_bos_id(const mopt_tokenizer *tok) { return tok->bos_id; }
int32_t mopt_tokenizer_eos_id(const mopt_tokenizer *tok) { return tok->eos_id; }

void tok_byte_level_table(uint32_t cp[256]) {
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        cp[b] = printable ? (uint32_t)b : (uint32_t)(256 + n++);
    }
}

/* Decodes a GPT-2 byte-alphabet token back to bytes with rev (code point -> byte, -1 for none: the table above
 * inverted, once per tokenizer); a token holding any char outside the alphabet is taken as its raw UTF-8 (as HF's
 * ByteLevel decoder does). */
static int byte_level_piece(const int16_t rev[512], const char *s, uint32_t n, uint8_t *out, uint32_t *out_len) {
    uint32_t m = 0;
    for (uint32_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        uint32_t cp, cl = (uint32_t)utf8_len(c);
        if (i + cl > n) return 0;
        if (cl == 1) cp = c;
        else if (cl == 2) cp = ((c & 0x1fu) << 6) | (s[i + 1] & 0x3fu);
        else cp = 0xffffffffu;
        if (cp >= 512 || rev[cp] < 0) return 0;
        out[m++] = (uint8_t)rev[cp];
        i += cl;
    }
    *out_len = m;
    return 1;
}

int tok_build_pieces(mopt_tokenizer *tok) {
    tok->piece = calloc((size_t)tok->n_vocab, sizeof *tok->piece);
    tok->piece_len = calloc((size_t)tok->n_vocab, sizeof *tok->piece_len);
    tok->piece_byte = malloc((size_t)tok->n_vocab * sizeof *tok->piece_byte);
    if (!tok->piece || !tok->piece_len || !tok->piece_byte) return 0;
    int16_t rev[512]; /* per call, not a static filled on first use: tokenizers load on any thread */
    uint32_t cp[256];
    tok_byte_level_table(cp);
    for (int i = 0; i < 512; i++) rev[i] = -1;
    for (int b = 0; b < 256; b++) rev[cp[b]] = (int16_t)b;
    for (int32_t id = 0; id < tok->n_vocab; id++) {
        tok->piece_byte[id] = -1;
        const char *s = tok->tokens[id];
        uint32_t n = tok->token_len[id];
        if (!s) continue;
        uint8_t *p = malloc(n * 3 + 1);
        if (!p) return 0;
        uint32_t m = 0;
        unsigned int byte;
        if (tok->decoder != TOK_DECODER_BYTELEVEL && n == 6 && sscanf(s, "<0x%02X>", &byte) == 1 && s[5] == '>') {
            tok->piece_byte[id] = (int16_t)byte;
        } else if (tok->decoder == TOK_DECODER_BYTELEVEL && !tok->is_special[id] && byte_level_piece(rev, s, n, p, &m)) {
            /* m set */
        } else if (tok->decoder == TOK_DECODER_SPM) {
            for (uint32_t i = 0; i < n;) {
                if (i + 3 <= n && memcmp(s + i, SPM_SPACE, 3) == 0) {
                    p[m++] = ' ';
                    i += 3;
                } else {
                    p[m++] = (uint8_t)s[i++];
                }
            }
        } else {
            memcpy(p, s, n);
            m = n;
        }
        tok->piece[id] = p;
        tok->piece_len[id] = m;
    }
    return 1;
}

mopt_status mopt_tokenizer_encode(const mopt_tokenizer *tok, const char *text, size_t len, uint32_t flags,
                                  int32_t **ids, size_t *n_ids, mopt_error *err) {
    *ids = NULL;
    *n_ids = 0;
    id_vec out = {0};
    mopt_status st = MOPT_OK;
    int add = (flags & MOPT_TOK_ADD_SPECIAL) != 0;
    st = tok->strategy->encode(tok, text, len, add, &out, err);
    if (st == MOPT_E_NOMEM) MOPT_FAIL(err, st, "out of memory");
    if (st) {
        free(out.v);
        return st;
    }
    if (!out.v) out.v = malloc(sizeof(int32_t)); /* a valid pointer even for no tokens */
    *ids = out.v;
    *n_ids = out.n;
    return out.v ? MOPT_OK : MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
}

mopt_status mopt_tokenizer_encode_file(const mopt_tokenizer *tok, const char *path, uint32_t flags, int32_t **ids,
                                       size_t *n_ids, mopt_error *err) {
    *ids = NULL;
    *n_ids = 0;
    void *text;
    size_t size;
    mopt_status st = mopt_map_file(path, &text, &size, err);
    if (st) return st;
    st = size == 0 ? MOPT_FAIL(err, MOPT_E_INVALID, "%s: empty data file, nothing to tokenize", path)
                   : mopt_tokenizer_encode(tok, text, size, flags, ids, n_ids, err);
    mopt_unmap_file(text, size);
    if (st && err) mopt_error_name_file(err, path);
    return st;
}

/* Appends the bytes of token `id` given the ids decoded before it. */
static int64_t piece_bytes(const mopt_tokenizer *tok, int32_t prev, int nothing_yet, int32_t id, char *buf, size_t cap) {
    if (id < 0 || id >= tok->n_vocab || !tok->tokens[id]) return 0;
    if (tok->piece_byte[id] >= 0) {
        if (cap < 1) return -1;
        buf[0] = (char)tok->piece_byte[id];
        return 1;
    }
    const uint8_t *p = tok->piece[id];
    uint32_t n = tok->piece_len[id];
    if (tok->decoder == TOK_DECODER_LLAMA2C && prev == tok->bos_id && n && p[0] == ' ') {
        p++; /* run.c: the first piece after BOS drops its leading space */
        n--;
    }
    if (tok->decoder == TOK_DECODER_SPM && nothing_yet) {
        for (int32_t k = 0; k < tok->strip_leading && n && p[0] == ' '; k++) {
            p++;
            n--;
        }
    }
    if (n > cap) return -1;
    memcpy(buf, p, n);
    return n;
}

int64_t mopt_tokenizer_decode_next(const mopt_tokenizer *tok, const int32_t *prev, size_t n_prev, int32_t id,
                                   char *buf, size_t cap) {
    if (mopt_tokenizer_is_special(tok, id)) return 0;
    int nothing_yet = 1;
    for (size_t i = 0; i < n_prev && nothing_yet; i++)
        if (!mopt_tokenizer_is_special(tok, prev[i])) nothing_yet = 0;
    return piece_bytes(tok, n_prev ? prev[n_prev - 1] : -1, nothing_yet, id, buf, cap);
}

mopt_status mopt_tokenizer_decode(const mopt_tokenizer *tok, const int32_t *ids, size_t n, uint32_t flags,
                                  char **text, size_t *len, mopt_error *err) {
    *text = NULL;
    *len = 0;
    size_t cap = 64, m = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= tok->n_vocab || !tok->tokens[ids[i]])
            return MOPT_FAIL(err, MOPT_E_INVALID, "token id %d is outside the vocabulary (0..%d)", ids[i],
                             tok->n_vocab - 1);
        cap += tok->piece_len[ids[i]] + 1;
    }
    char *out = malloc(cap);
    if (!out) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    int nothing_yet = 1;
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (tok_is_control(tok, id) && (flags & MOPT_TOK_SKIP_SPECIAL)) continue;
        int64_t k = piece_bytes(tok, i ? ids[i - 1] : -1, nothing_yet, id, out + m, cap - m - 1);
        if (k < 0) {
            free(out);
            return MOPT_FAIL(err, MOPT_E_RUNTIME, "decode buffer overflow");
        }
        m += (size_t)k;
        nothing_yet = 0;
    }
    out[m] = '\0';
    *text = out;
    *len = m;
    return MOPT_OK;
}
