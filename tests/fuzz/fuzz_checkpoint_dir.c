/* A whole checkpoint directory: config.json, safetensors (one or sharded,
 * with an index), TensorRT-LLM ranks, quantized HF formats (AWQ, GPTQ,
 * compressed-tensors, ModelOpt with hf_quant_config.json), tokenizer.json.
 * The input is a small archive of files: repeated [u8 name length][name]
 * [u32 little-endian data length][data]; names are plain file names. */
#include "fuzz_common.h"

static void clear_dir(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[1100];
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.') snprintf(p, sizeof p, "%s/%s", dir, e->d_name), unlink(p);
    if (d) closedir(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char dir[700];
    snprintf(dir, sizeof dir, "%s/ckpt", fuzz_workdir());
    mkdir(dir, 0755);
    clear_dir(dir);
    size_t at = 0;
    for (int files = 0; files < 8 && at < size; files++) {
        const size_t nl = data[at++];
        if (nl == 0 || nl > 64 || at + nl + 4 > size) break;
        char name[80];
        memcpy(name, data + at, nl);
        name[nl] = 0;
        at += nl;
        for (size_t i = 0; i < nl; i++)
            if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' && name[i] <= '9') || name[i] == '.' || name[i] == '_' ||
                  name[i] == '-'))
                return 0;
        if (name[0] == '.') return 0;
        uint32_t len;
        memcpy(&len, data + at, 4);
        at += 4;
        if (len > size - at) len = (uint32_t)(size - at);
        char path[1100];
        snprintf(path, sizeof path, "ckpt/%s", name);
        fuzz_write(path, data + at, len);
        at += len;
    }
    fuzz_load(dir);
    return 0;
}
