/* An importance matrix in either of llama.cpp's layouts (imatrix.dat, GGUF imatrix): read, and when it reads,
 * written in both layouts (or refused: a mean too large to store as a sum) and read back with the same entries. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mopt_error err = {0};
    mopt_imatrix *m = NULL;
    if (mopt_imatrix_read(fuzz_write("m.imatrix", data, size), &m, &err)) {
        fuzz_check_error(&err);
        if (m) __builtin_trap();
        return 0;
    }
    static const char *const outs[] = {"back.gguf", "back.dat"};
    for (int i = 0; i < 2; i++) {
        char path[1100];
        snprintf(path, sizeof path, "%s/%s", fuzz_workdir(), outs[i]);
        mopt_imatrix *b = NULL;
        if (mopt_imatrix_write(path, m, &err)) { /* only a mean too large to store as a sum may fail, and cleanly */
            fuzz_check_error(&err);
            if (!strstr(err.msg, "does not fit")) __builtin_trap();
            continue;
        }
        if (mopt_imatrix_read(path, &b, &err)) __builtin_trap(); /* what writes reads back */
        if (b->n != m->n) __builtin_trap();
        for (int32_t e = 0; e < m->n; e++)
            if (mopt_imatrix_len(b, m->e[e].name) != m->e[e].n) __builtin_trap(); /* the GGUF layout sorts by name */
        mopt_imatrix_free(b);
    }
    mopt_imatrix_free(m);
    return 0;
}
