/* The pipeline text form and option validation against the built-in passes'
 * schemas (types, ranges, enums, lists, required options). Nothing runs. */
#include "fuzz_common.h"

static mopt_registry *reg;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!reg) {
        mopt_error e = {0};
        if (!(reg = mopt_registry_new(NULL, &e))) abort();
    }
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = 0;
    mopt_pipeline *p = mopt_pipeline_new(reg);
    mopt_error err = {0};
    if (mopt_pipeline_parse(p, text, &err)) fuzz_check_error(&err);
    mopt_pipeline_free(p);
    free(text);
    return 0;
}
