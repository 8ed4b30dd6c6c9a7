/* llama2.c tokenizer files (tokenizer.bin / tok512.bin):
 *   int32 max_token_length, then vocab_size × {float score, int32 len, len bytes}.
 * Encoding follows run.c: BOS, a dummy-prefix space, one token per UTF-8 code
 * point (bytes + 3 when the code point is not in the vocabulary), then merge
 * the adjacent pair whose concatenation has the highest score until none is left
 * (through tok_bpe_merge's heap, see build_merges). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "mopt/interrupt.h"
#include "tok_impl.h"

/* NaN scores (a damaged file) order last, so the sort stays a total order */
static float score_key(float f) { return f == f ? f : -INFINITY; }

static int by_score_desc(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x > y ? -1 : x < y;
}

/* run.c merges the adjacent pair whose concatenation is a token with the highest
 * score, leftmost on ties. As merge ranks (scores in descending order, equal
 * scores sharing a rank) the pairs feed tok_bpe_merge's heap, which picks the
 * lowest rank and then the leftmost pair: the same result in n log n. */
static int build_merges(mopt_tokenizer *tok) {
    const int32_t n = tok->n_vocab;
    float *sorted = malloc((size_t)n * sizeof *sorted);
    if (!sorted) return 0;
    for (int32_t i = 0; i < n; i++) sorted[i] = score_key(tok->scores[i]);
    qsort(sorted, (size_t)n, sizeof *sorted, by_score_desc);
    uint32_t pairs = 0;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1 && !pair_map_init(&tok->merges, pairs)) {
            free(sorted);
            return 0;
        }
        for (int32_t c = 0; c < n; c++) {
            const char *s = tok->tokens[c];
            const uint32_t len = tok->token_len[c];
            if (len < 2 || str_map_get(&tok->vocab, s, len) != c) continue; /* duplicates: the id lookups find */
            int32_t rank = 0;
            if (pass == 1) { /* first index of this score in the descending order */
                int32_t lo = 0, hi = n;
                while (lo < hi) {
                    int32_t mid = lo + (hi - lo) / 2;
                    if (sorted[mid] > score_key(tok->scores[c])) lo = mid + 1;
                    else hi = mid;
                }
                rank = lo;
            }
            for (uint32_t k = 1; k < len; k++) {
                int32_t a = str_map_get(&tok->vocab, s, k), b = str_map_get(&tok->vocab, s + k, len - k);
                if (a < 0 || b < 0) continue;
                if (pass == 0) pairs++;
                else pair_map_put(&tok->merges, a, b, rank, c);
            }
        }
    }
    free(sorted);
    return 1;
}

mopt_tokenizer *mopt_tokenizer_load_llama2c(const char *path, int32_t vocab_size, mopt_error *err) {
    char *data;
    size_t size;
    if (mopt_read_file(path, &data, &size, err)) return NULL;
    mopt_tokenizer *tok = tok_llama2c_parse(data, size, vocab_size, path, err);
    free(data);
    return tok;
}

mopt_tokenizer *tok_llama2c_parse(const char *data, size_t size, int32_t vocab_size, const char *path, mopt_error *err) {
    mopt_tokenizer *tok = tok_new(&tok_strategy_llama2c, path, err);
    mopt_status st = MOPT_OK;
    if (!tok) return NULL;
    tok->decoder = TOK_DECODER_LLAMA2C;
    tok->unk_id = 0;
    tok->bos_id = 1;
    tok->eos_id = 2;
    if (vocab_size <= 0 || vocab_size > (1 << 24)) {
        st = MOPT_FAIL(err, MOPT_E_INVALID, "%s: vocabulary size %d is not usable", path, vocab_size);
        goto done;
    }
    tok->n_vocab = vocab_size;
    tok->tokens = calloc((size_t)vocab_size, sizeof *tok->tokens);
    tok->token_len = calloc((size_t)vocab_size, sizeof *tok->token_len);
    tok->scores = calloc((size_t)vocab_size, sizeof *tok->scores);
    tok->is_special = calloc((size_t)vocab_size, 1);
    if (!tok->tokens || !tok->token_len || !tok->scores || !tok->is_special) {
        st = MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
        goto done;
    }
    size_t off = 0;
    int32_t max_len;
    if (size < 4) {
        st = MOPT_FAIL(err, MOPT_E_FORMAT, "%s: truncated llama2.c tokenizer: %zu bytes", path, size);
        goto done;
    }
    memcpy(&max_len, data, 4);
    off = 4;
    if (max_len <= 0 || max_len > 65536) {
        st = MOPT_FAIL(err, MOPT_E_FORMAT, "%s: impossible max_token_length %d", path, max_len);
        goto done;
    }
    for (int32_t i = 0; i < vocab_size; i++) {
        int32_t len;
        if (size - off < 8) {
            st = MOPT_FAIL(err, MOPT_E_FORMAT, "%s: truncated at token %d of %d (the model's vocabulary size)", path, i,
                           vocab_size);
            goto done;
        }
        memcpy(&tok->scores[i], data + off, 4);
        memcpy(&len, data + off + 4, 4);
        off += 8;
        if (len < 0 || len > max_len || (size_t)len > size - off) {
            st = MOPT_FAIL(err, MOPT_E_FORMAT, "%s: token %d has impossible length %d", path, i, len);
            goto done;
        }
        tok->tokens[i] = malloc((size_t)len + 1);
        if (!tok->tokens[i]) {
            st = MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
            goto done;
        }
        memcpy(tok->tokens[i], data + off, (size_t)len);
        tok->tokens[i][len] = '\0';
        tok->token_len[i] = (uint32_t)len;
        off += (size_t)len;
    }
    if (!str_map_build(&tok->vocab, tok->tokens, tok->token_len, vocab_size) || !tok_build_pieces(tok) || !build_merges(tok))
        st = MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
done:
    if (st) {
        mopt_tokenizer_free(tok);
        return NULL;
    }
    return tok;
}

static mopt_status encode(const mopt_tokenizer *tok, const char *text, size_t len, int add_bos, id_vec *out, mopt_error *err) {
    id_vec t = {0};
    int ok = 1;
    if (add_bos) ok = id_vec_push(out, tok->bos_id);
    if (len > 0) {
        int32_t sp = str_map_get(&tok->vocab, " ", 1);
        if (sp >= 0) ok = ok && id_vec_push(&t, sp);
    }
    for (size_t i = 0; ok && i < len;) {
        size_t cl = utf8_len((unsigned char)text[i]);
        if (i + cl > len) cl = len - i;
        int32_t id = str_map_get(&tok->vocab, text + i, cl);
        if (id >= 0) {
            ok = id_vec_push(&t, id);
        } else {
            for (size_t k = 0; ok && k < cl; k++) {
                int32_t b = (unsigned char)text[i + k] + 3; /* <0x00>.. start at id 3 */
                ok = id_vec_push(&t, b < tok->n_vocab ? b : tok->unk_id);
            }
        }
        i += cl;
    }
    ok = ok && tok_bpe_merge(tok, t.v, t.n, out);
    free(t.v);
    if (!ok && mopt_interrupted()) return MOPT_FAIL(err, MOPT_E_INTERRUPTED, "interrupted while tokenizing");
    return ok ? MOPT_OK : MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
}

static const char *ggml_model(const mopt_tokenizer *tok) {
    (void)tok;
    return "llama";
}

const tok_strategy tok_strategy_llama2c = {"llama2.c", encode, ggml_model, true};
