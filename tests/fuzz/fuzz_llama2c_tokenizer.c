/* A llama2.c tokenizer file: header, scores, lengths; then encode and decode. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    const int32_t vocab = 1 + data[0] * 4; /* the model's vocabulary, which the file must match */
    const char *path = fuzz_write("tok.bin", data + 1, size - 1);
    mopt_error err = {0};
    mopt_tokenizer *t = mopt_tokenizer_load_llama2c(path, vocab, &err);
    if (!t) {
        fuzz_check_error(&err);
        return 0;
    }
    int32_t *ids;
    size_t k;
    if (mopt_tokenizer_encode(t, "Once upon a time \xe2\x96\x81\xff", 20, MOPT_TOK_ADD_SPECIAL, &ids, &k, &err) == MOPT_OK) {
        char *txt;
        size_t tl;
        if (mopt_tokenizer_decode(t, ids, k, 0, &txt, &tl, &err) == MOPT_OK) free(txt);
        free(ids);
    }
    mopt_tokenizer_free(t);
    return 0;
}
