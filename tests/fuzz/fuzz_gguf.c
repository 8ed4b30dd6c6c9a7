/* A GGUF file end to end: header, key/values, tokenizer, tensor infos, block
 * types, the graph, a forward pass and the tokenizer. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_load(fuzz_write("m.gguf", data, size));
    return 0;
}
