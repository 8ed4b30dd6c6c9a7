/* The safetensors reader alone: header JSON, dtypes, shapes, data offsets. */
#include "fuzz_common.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write("t.safetensors", data, size);
    mopt_tensor **list;
    int32_t n;
    mopt_error err = {0};
    if (mopt_safetensors_read(path, &list, &n, &err) != MOPT_OK) {
        fuzz_check_error(&err);
        return 0;
    }
    for (int32_t i = 0; i < n; i++) {
        float v;
        if (mopt_tensor_nelements(list[i]) > 0 && list[i]->dtype <= MOPT_DTYPE_BF16) mopt_tensor_read_f32(list[i], 0, 1, &v, &err);
        mopt_tensor_free(list[i]);
    }
    free(list);
    return 0;
}
