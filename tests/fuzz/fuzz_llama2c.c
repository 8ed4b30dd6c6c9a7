/* A llama2.c checkpoint end to end (header, sizes, weights, forward pass). */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_load(fuzz_write("model.bin", data, size));
    return 0;
}
