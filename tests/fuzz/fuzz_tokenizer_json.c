/* A tokenizer.json: model, merges, added tokens, normalizer, pre-tokenizer
 * regexes, post-processor, decoder; then encode and decode. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write("tokenizer.json", data, size);
    mopt_error err = {0};
    mopt_tokenizer *t = mopt_tokenizer_load_hf(path, &err);
    if (!t) {
        fuzz_check_error(&err);
        return 0;
    }
    static const char text[] = "ROMEO:\r\nBut soft, what light 123 \xe4\xbd\xa0\xe5\xa5\xbd \xf0\x9f\x91\x8d<s> </s>";
    int32_t *ids;
    size_t k;
    if (mopt_tokenizer_encode(t, text, sizeof text - 1, MOPT_TOK_ADD_SPECIAL, &ids, &k, &err) == MOPT_OK) {
        char *txt;
        size_t tl;
        if (mopt_tokenizer_decode(t, ids, k, 0, &txt, &tl, &err) == MOPT_OK) free(txt);
        free(ids);
    } else {
        fuzz_check_error(&err);
    }
    mopt_tokenizer_free(t);
    return 0;
}
