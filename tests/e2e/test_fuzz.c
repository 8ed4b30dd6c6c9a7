/* Seeded mutation fuzzing of every importer on real checkpoints: safetensors
 * (header, data offsets), config.json, tokenizer.json, llama2.c checkpoints and
 * tokenizers, GGUF (llama and gpt2, block types), TensorRT-LLM (dense and
 * quantized ranks, config) and every quantized Hugging Face format (AWQ, GPTQ,
 * compressed-tensors pack/int/float, sparse-24-bitmask (float and int8 values) and marlin-24, ModelOpt int4 and
 * FP8), and mopt's own training states. Each mutant must
 * load or fail with a one-line message; one that loads runs a short forward
 * pass and a tokenizer round trip. Nothing may crash, hang or touch memory it
 * does not own (the suite runs under ASan+UBSan too).
 *
 * MOPT_FUZZ_SCALE (default 1) multiplies every target's rounds: the default
 * is over 20,000 inputs in all; MOPT_FUZZ_SEED changes the mutations. */
#include <jansson.h>
#include <sys/stat.h>

#include "model_exercise.h"
#include "testutil.h"

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t next(void) {
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 0x2545F4914F6CDD1Dull;
}

static char work[1024]; /* the seed checkpoints, built once */
static double scale = 1;
static long total_inputs, total_loaded, total_forwards;

/* --- mutations ------------------------------------------------------------------- */

/* Bytes, interesting values, integers written in place, or a truncation,
 * inside [lo, hot) (hot 0: the whole file). */
static size_t mutate_range(unsigned char *d, size_t n, size_t lo, size_t hot) {
    const size_t span = hot && hot < n ? hot : n;
    if (lo >= span) lo = 0;
    const int kind = (int)(next() % 5);
    if (kind == 0) return (size_t)(next() % (n ? n : 1)); /* truncate */
    const int k = 1 + (int)(next() % 4);
    for (int i = 0; i < k; i++) {
        size_t at = lo + (size_t)(next() % (span - lo));
        static const unsigned char vals[] = {0, 0xff, '"', '{', '}', '[', ']', ',', ':', '9', '-', 0x7f, 0x80};
        if (kind == 1) d[at] ^= (unsigned char)(1u << (next() % 8));
        else if (kind == 2) d[at] = vals[next() % sizeof vals];
        else if (kind == 3) d[at] = (unsigned char)next();
        else { /* a little-endian integer of interest, as lengths, counts and offsets are */
            static const uint64_t ints[] = {0, 1, 2, 3, 7, 8, 31, 32, 33, 255, 256, 4096, 65535, 0x7fffffff, 0x80000000u,
                                            0xffffffffu, 1ull << 32, 1ull << 40, UINT64_MAX, (uint64_t)INT64_MAX};
            uint64_t v = ints[next() % (sizeof ints / sizeof *ints)];
            size_t w = next() % 2 ? 4 : 8;
            if (at + w <= span) memcpy(d + at, &v, w);
        }
    }
    return n;
}

static size_t mutate_bytes(unsigned char *d, size_t n, size_t hot) { return mutate_range(d, n, 0, hot); }

/* In JSON text: replaces one number with an interesting one (the values a
 * hostile config would try), or falls back to byte mutations. */
static size_t mutate_json(unsigned char *d, size_t n, size_t cap, size_t hot) {
    const size_t span = hot && hot < n ? hot : n;
    if (next() % 3 == 0) return mutate_bytes(d, n, hot);
    size_t start = (size_t)(next() % (span ? span : 1)), i = start;
    while (i < span && !(d[i] >= '0' && d[i] <= '9')) i++;
    if (i >= span) return mutate_bytes(d, n, hot);
    size_t e = i;
    while (e < n && ((d[e] >= '0' && d[e] <= '9') || d[e] == '.' || d[e] == 'e' || d[e] == '-' || d[e] == '+')) e++;
    static const char *const nums[] = {"0", "-1", "1", "2", "3", "33", "65", "255", "4097", "65536", "2147483647", "2147483648",
                                       "4294967296", "1099511627776", "9223372036854775807", "-2147483648", "1e308", "1.5", "1e-30", "0.5"};
    const char *r = nums[next() % (sizeof nums / sizeof *nums)];
    const size_t rl = strlen(r), old = e - i;
    if (n - old + rl > cap) return mutate_bytes(d, n, hot);
    memmove(d + i + rl, d + e, n - e);
    memcpy(d + i, r, rl);
    return n - old + rl;
}

/* --- running a mutant ---------------------------------------------------------------- */

static void check_error(const mopt_error *err) {
    assert_true(err->code != MOPT_OK);
    assert_true(err->msg[0] != '\0');
    assert_null(strchr(err->msg, '\n'));
}

static int load_and_exercise(const char *path) {
    mopt_error err = {0};
    mopt_model *m = mopt_model_load(path, NULL, &err);
    total_inputs++;
    if (!m) {
        check_error(&err);
        return 0;
    }
    total_loaded++;
    total_forwards += exercise_model(m, 8, check_error);
    mopt_model_free(m);
    return 1;
}

/* Mutates file `victim` (inside the checkpoint at `model`, or the checkpoint
 * itself when victim is NULL) `rounds` times, loading each mutant; restores it. */
static void fuzz_file(const char *model, const char *victim, int json, size_t hot, int rounds) {
    char path[2400];
    if (victim) snprintf(path, sizeof path, "%s/%s", model, victim);
    else snprintf(path, sizeof path, "%s", model);
    size_t n;
    unsigned char *orig = read_whole(path, &n);
    assert_non_null(orig);
    const size_t cap = n + 64;
    unsigned char *buf = malloc(cap);
    rounds = (int)(rounds * scale);
    int loaded = 0;
    for (int r = 0; r < rounds; r++) {
        memcpy(buf, orig, n);
        size_t m = json ? mutate_json(buf, n, cap, hot) : mutate_bytes(buf, n, hot);
        write_file(path, buf, m);
        loaded += load_and_exercise(model);
    }
    write_file(path, orig, n);
    fprintf(stderr, "  %s%s%s: %d of %d mutants loaded and ran, the rest failed cleanly\n", model + strlen(work) + 1,
            victim ? "/" : "", victim ? victim : "", loaded, rounds);
    free(buf);
    free(orig);
}

/* Mutates the weights themselves (bytes from `lo` on): the file still loads, so
 * the kernels meet whatever values a hostile file carries (NaN scales, levels
 * and zero points out of range, g_idx beyond the groups). */
static void fuzz_data(const char *model, const char *victim, size_t lo, int rounds) {
    char path[2400];
    snprintf(path, sizeof path, "%s/%s", model, victim);
    size_t n;
    unsigned char *orig = read_whole(path, &n), *buf = malloc(n);
    assert_non_null(orig);
    rounds = (int)(rounds * scale);
    int loaded = 0;
    for (int r = 0; r < rounds; r++) {
        memcpy(buf, orig, n);
        size_t m = mutate_range(buf, n, lo, 0);
        for (int k = 0; k < 16 && m == n; k++) mutate_range(buf, n, lo, 0); /* many values, not one */
        write_file(path, buf, m);
        loaded += load_and_exercise(model);
    }
    write_file(path, orig, n);
    fprintf(stderr, "  %s/%s (data): %d of %d mutants loaded and ran\n", model + strlen(work) + 1, victim, loaded, rounds);
    free(buf);
    free(orig);
}

/* The safetensors header of a file, as the hot region. */
static size_t st_header(const char *dir, const char *file) {
    char path[2400];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    size_t n;
    unsigned char *d = read_whole(path, &n);
    assert_non_null(d);
    uint64_t hl;
    memcpy(&hl, d, 8);
    free(d);
    return (size_t)hl + 8;
}

/* The GGUF header up to the tensor data: everything before the first tensor's bytes. */
static size_t gguf_header(const char *path) {
    size_t n;
    unsigned char *d = read_whole(path, &n);
    assert_non_null(d);
    free(d);
    return n < 16384 ? n : 16384; /* key/values, tokenizer arrays and tensor infos of the seeds */
}

/* --- seeds ------------------------------------------------------------------------ */

static char *seed(char *buf, size_t cap, const char *name) {
    snprintf(buf, cap, "%s/%s", work, name);
    return buf;
}

/* Runs a pipeline on a freshly loaded fixture (quiet); the exports are the seeds. */
static void build(const char *model_rel, const char *text_fmt, const char *out) {
    char text[4096];
    snprintf(text, sizeof text, text_fmt, out, out);
    mopt_model *m = test_load_model(model_rel);
    mopt_report_free(test_run_pipeline(m, text));
    mopt_model_free(m);
}

static int setup(void **state) {
    if (access(test_shared_dir(), R_OK) != 0) return 0; /* each test skips with its message */
    const char *sc = getenv("MOPT_FUZZ_SCALE"), *sd = getenv("MOPT_FUZZ_SEED");
    if (sc && atof(sc) > 0) scale = atof(sc);
    if (sd) rng ^= strtoull(sd, NULL, 0) * 0x9E3779B97F4A7C15ull;
    test_registry_setup(state);
    test_tmpdir(work, sizeof work, "fuzz");
    char cmd[8192], s1[1200], calib[1024];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/gpt2' '%s/l2c' && cp '%s'/models/lit-gpt2-1m/* '%s/gpt2/' && cp '%s'/models/stories260K/* '%s/l2c/'",
             work, work, test_shared_dir(), work, test_shared_dir(), work);
    if (system(cmd) != 0) return -1;
    test_shared_path(calib, sizeof calib, "data/lit-train.txt");
    const char *l2c = "models/stories260K/stories260K.bin";
    /* stories260K (dim 64, FFN 172) in every format; its MLP is kept float where a format needs 8 | out */
    static const struct {
        const char *name, *pipeline;
    } seeds[] = {
        {"hf-llama", "export.hf<out=%s;dtype=f32>"},
        {"awq", "quant.rtn<bits=4;group_size=32;exclude=*mlp*>,export.hf<out=%s;format=awq>"},
        {"gptq", "quant.rtn<bits=4;group_size=32;sym=true;exclude=*mlp*>,export.hf<out=%s;format=gptq>"},
        {"ct-pack", "quant.rtn<bits=4;group_size=32>,export.hf<out=%s;format=compressed-tensors>"},
        {"ct-fp8", "quant.fp8<activations=dynamic>,export.hf<out=%s;format=compressed-tensors>"},
        {"mo-int4", "quant.rtn<bits=4;group_size=32;sym=true;exclude=*mlp*>,export.hf<out=%s;format=modelopt>"},
        {"mo-fp8", "quant.fp8<activations=dynamic>,export.hf<out=%s;format=modelopt>"},
        {"trt", "export.trtllm<out=%s;tp=2>"},
        {"trt-w4a16", "quant.rtn<bits=4;group_size=32;sym=true;exclude=*down_proj*>,export.trtllm<out=%s;tp=2>"},
        {"trt-fp8", "quant.fp8<activations=dynamic>,export.trtllm<out=%s;tp=2>"},
        {"q8_0.gguf", "export.gguf<out=%s;type=q8_0>"},
        {"q4_1.gguf", "export.gguf<out=%s;type=q4_1>"},
        {"ct-24", "prune.magnitude<pattern=2:4;pack=true;exclude=*mlp*>,export.hf<out=%s;format=compressed-tensors>"},
        {"ct-24-i8", "prune.magnitude<pattern=2:4;pack=true;values=int8;exclude=*mlp*>,export.hf<out=%s;format=compressed-tensors>"},
    };
    for (size_t i = 0; i < sizeof seeds / sizeof *seeds; i++) build(l2c, seeds[i].pipeline, seed(s1, sizeof s1, seeds[i].name));
    char text[4096];
    snprintf(text, sizeof text, "quant.smoothquant<calib=%s;calib_samples=2;calib_len=64>,export.hf<out=%%s;format=compressed-tensors>", calib);
    build(l2c, text, seed(s1, sizeof s1, "ct-w8a8"));
    /* NVFP4 (its down_proj's 172 inputs are not whole blocks of 32) as ModelOpt and compressed-tensors hold it, and W4A8 */
    snprintf(text, sizeof text, "quant.nvfp4<activations=static;exclude=*down*;calib=%s;calib_samples=2;calib_len=64>,export.hf<out=%%s;format=modelopt>",
             calib);
    build(l2c, text, seed(s1, sizeof s1, "mo-nvfp4"));
    build(l2c, "quant.nvfp4<activations=none;exclude=*down*>,export.hf<out=%s;format=compressed-tensors>", seed(s1, sizeof s1, "ct-nvfp4"));
    build(l2c, "quant.mxfp4<exclude=*down*>,export.hf<out=%s;format=compressed-tensors>", seed(s1, sizeof s1, "ct-mxfp4"));
    build(l2c, "quant.rtn<bits=4;group_size=32;sym=true;activations=fp8>,export.hf<out=%s;format=compressed-tensors>",
          seed(s1, sizeof s1, "ct-w4a8"));
    /* W4A8_AWQ: int4 widened to FP8 with a calibrated input scale, as ModelOpt and TensorRT-LLM hold it */
    snprintf(text, sizeof text, "quant.gptq<bits=4;group_size=32;sym=true;activations=fp8_static;exclude=*mlp*;calib=%s;calib_samples=2;"
             "calib_len=64>,export.hf<out=%%s;format=modelopt>", calib);
    build(l2c, text, seed(s1, sizeof s1, "mo-w4a8"));
    snprintf(text, sizeof text, "quant.gptq<bits=4;group_size=32;sym=true;activations=fp8_static;exclude=*down_proj*;calib=%s;"
             "calib_samples=2;calib_len=64>,export.trtllm<out=%%s;tp=2>", calib);
    build(l2c, text, seed(s1, sizeof s1, "trt-w4a8"));
    /* calibrated FP8 / int8 KV caches: ModelOpt's k_scale / v_scale, compressed-tensors' output_scale, TensorRT-LLM's
     * kv_cache_scaling_factor */
    snprintf(text, sizeof text, "quant.rtn<bits=4;group_size=32;sym=true;exclude=*mlp*>,quant.kv<calib=%s;calib_samples=2;calib_len=64>,"
             "export.hf<out=%%s;format=modelopt>", calib);
    build(l2c, text, seed(s1, sizeof s1, "mo-kv"));
    snprintf(text, sizeof text, "quant.kv<calib=%s;calib_samples=2;calib_len=64>,export.hf<out=%%s;format=compressed-tensors>", calib);
    build(l2c, text, seed(s1, sizeof s1, "ct-kv"));
    snprintf(text, sizeof text, "quant.kv<format=int8;calib=%s;calib_samples=2;calib_len=64>,export.trtllm<out=%%s;tp=2>", calib);
    build(l2c, text, seed(s1, sizeof s1, "trt-kv"));
    snprintf(text, sizeof text, "quant.nvfp4<activations=static;exclude=*down*;calib=%s;calib_samples=2;calib_len=64>,export.trtllm<out=%%s;tp=2>",
             calib);
    build(l2c, text, seed(s1, sizeof s1, "trt-nvfp4"));
    build("models/lit-gpt2-1m", "export.gguf<out=%s;type=f16>", seed(s1, sizeof s1, "gpt2.gguf"));
    /* lit-llama's widths are whole 256-value super-blocks: Q4_K linears and a Q6_K output.weight, run packed */
    build("models/lit-llama-7m", "export.gguf<out=%s;type=q4_k>", seed(s1, sizeof s1, "q4_k.gguf"));
    /* marlin-24 needs widths of 128: a one-block synthetic llama carries it */
    snprintf(cmd, sizeof cmd, "'%s' synth --hidden 128 --layers 1 --heads 2 --kv-heads 1 --ffn 256 --vocab 300 -o '%s/syn' >/dev/null",
             MOPT_CLI, work);
    if (system(cmd) != 0) return -1;
    snprintf(cmd, sizeof cmd, "%s/syn", work);
    build(cmd, "prune.magnitude<pattern=2:4;pack=true;values=int4>,export.hf<out=%s;format=compressed-tensors>", seed(s1, sizeof s1, "ct-m24"));
    snprintf(cmd, sizeof cmd, "cp -r '%s/mo-int4' '%s/mo-side'", work, work);
    if (system(cmd) != 0) return -1;
    snprintf(s1, sizeof s1, "%s/mo-side/config.json", work);
    json_error_t je;
    json_t *j = json_load_file(s1, 0, &je);
    if (!j) return -1;
    json_object_del(j, "quantization_config");
    json_dump_file(j, s1, JSON_INDENT(2));
    json_decref(j);
    return 0;
}

static int teardown(void **state) { return test_registry_teardown(state); }

/* --- the targets ------------------------------------------------------------------- */

static void test_hf_safetensors_config_and_tokenizer(void **s) {
    REQUIRE_SHARED();
    char d[1200];
    seed(d, sizeof d, "gpt2");
    fuzz_file(d, "model.safetensors", 0, st_header(d, "model.safetensors"), 900);
    fuzz_file(d, "model.safetensors", 1, st_header(d, "model.safetensors"), 800);
    fuzz_data(d, "model.safetensors", st_header(d, "model.safetensors"), 300);
    fuzz_file(d, "config.json", 1, 0, 800);
    fuzz_file(d, "tokenizer.json", 0, 4000, 300);
    fuzz_file(d, "tokenizer.json", 1, 0, 300);
    seed(d, sizeof d, "hf-llama");
    fuzz_file(d, "model.safetensors", 1, st_header(d, "model.safetensors"), 800);
    fuzz_file(d, "config.json", 1, 0, 800);
}

static void test_llama2c_checkpoint_and_tokenizer(void **s) {
    REQUIRE_SHARED();
    char d[1200], p[1300];
    seed(d, sizeof d, "l2c");
    snprintf(p, sizeof p, "%s/stories260K.bin", d);
    fuzz_file(p, NULL, 0, 28, 800);
    /* the tokenizer is found beside the checkpoint */
    size_t n;
    char tpath[1400];
    snprintf(tpath, sizeof tpath, "%s/tok512.bin", d);
    unsigned char *orig = read_whole(tpath, &n), *buf = malloc(n);
    int loaded = 0, rounds = (int)(800 * scale);
    for (int r = 0; r < rounds; r++) {
        memcpy(buf, orig, n);
        write_file(tpath, buf, mutate_bytes(buf, n, 2000));
        loaded += load_and_exercise(p);
    }
    write_file(tpath, orig, n);
    fprintf(stderr, "  l2c/tok512.bin: %d of %d mutants loaded and ran\n", loaded, rounds);
    free(buf);
    free(orig);
}

static void test_gguf_llama_and_gpt2(void **s) {
    REQUIRE_SHARED();
    char p[1200];
    static const char *const files[] = {"q8_0.gguf", "q4_1.gguf", "gpt2.gguf"};
    for (int i = 0; i < 3; i++) {
        seed(p, sizeof p, files[i]);
        fuzz_file(p, NULL, 0, gguf_header(p), 1200);
    }
    /* block scales and levels: the files still load */
    seed(p, sizeof p, "gguf-data");
    static const char *const data[] = {"q8_0.gguf", "q4_1.gguf", "q4_k.gguf"};
    for (int i = 0; i < 3; i++) {
        char src[1300], cmd[4400];
        snprintf(cmd, sizeof cmd, "mkdir -p '%s' && cp '%s/%s' '%s/model.gguf'", p, work, data[i], p);
        assert_int_equal(system(cmd), 0);
        snprintf(src, sizeof src, "%s/model.gguf", p);
        int rounds = (int)(450 * scale), loaded = 0;
        size_t n;
        unsigned char *orig = read_whole(src, &n), *buf = malloc(n);
        for (int r = 0; r < rounds; r++) {
            memcpy(buf, orig, n);
            for (int k = 0; k < 16; k++) mutate_range(buf, n, n / 2, 0); /* the second half is weights */
            write_file(src, buf, n);
            loaded += load_and_exercise(src);
        }
        fprintf(stderr, "  %s (data): %d of %d mutants loaded and ran\n", data[i], loaded, rounds);
        free(buf);
        free(orig);
    }
}

static void test_tensorrt_llm_ranks_and_config(void **s) {
    REQUIRE_SHARED();
    char d[1200];
    static const char *const dirs[] = {"trt", "trt-w4a16", "trt-fp8", "trt-kv", "trt-nvfp4", "trt-w4a8"};
    for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++) {
        seed(d, sizeof d, dirs[i]);
        fuzz_file(d, "config.json", 1, 0, 700);
        fuzz_file(d, "rank0.safetensors", 1, st_header(d, "rank0.safetensors"), 350);
        fuzz_file(d, "rank1.safetensors", 0, st_header(d, "rank1.safetensors"), 200);
        fuzz_data(d, "rank1.safetensors", st_header(d, "rank1.safetensors"), 250);
    }
}

static void test_quantized_hf_formats(void **s) {
    REQUIRE_SHARED();
    char d[1200];
    static const char *const dirs[] = {"awq",    "gptq",     "ct-pack",  "ct-w8a8", "ct-fp8",   "mo-int4", "mo-fp8",
                                       "ct-24",  "ct-24-i8", "ct-m24",   "mo-nvfp4", "ct-nvfp4", "ct-w4a8",
                                       "mo-kv",  "ct-kv",    "ct-mxfp4", "mo-w4a8"};
    for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++) {
        seed(d, sizeof d, dirs[i]);
        fuzz_file(d, "config.json", 1, 0, 450);
        fuzz_file(d, "model.safetensors", 1, st_header(d, "model.safetensors"), 250);
        fuzz_file(d, "model.safetensors", 0, st_header(d, "model.safetensors"), 100);
        fuzz_data(d, "model.safetensors", st_header(d, "model.safetensors"), 150);
    }
    seed(d, sizeof d, "mo-side"); /* the scheme only in hf_quant_config.json, as older ModelOpt exports */
    fuzz_file(d, "hf_quant_config.json", 1, 0, 100);
}

/* A training state (parameters, AdamW moments, step count, a loop vector) as
 * mopt_trainer_save writes it: each mutant loads or is refused with one line,
 * and a refused one leaves the trainer as it was. */
static void test_training_states(void **s) {
    REQUIRE_SHARED();
    mopt_model *m = test_load_model("models/stories260K/stories260K.bin");
    mopt_error err = {0};
    mopt_trainer *tr = mopt_trainer_new(mopt_model_graph(m), 16, &err);
    assert_non_null(tr);
    int32_t ids[16];
    for (int t = 0; t < 16; t++) ids[t] = (t * 37 + 5) % mopt_model_arch(m)->vocab_size;
    double loss;
    mopt_adamw_opts o;
    mopt_adamw_opts_default(&o);
    assert_int_equal(mopt_trainer_step(tr, ids, 16, &loss, &err), MOPT_OK);
    assert_int_equal(mopt_trainer_adamw(tr, &o, 1e-3f, 1, &err), MOPT_OK);
    int64_t counter[4] = {7, 8, 9, 10};
    mopt_train_extra x = {"counter", 4, counter, 1};
    char path[1200];
    seed(path, sizeof path, "train.state");
    assert_int_equal(mopt_trainer_save(tr, path, &x, 1, &err), MOPT_OK);
    size_t n;
    unsigned char *orig = read_whole(path, &n), *buf = malloc(n + 64);
    assert_non_null(orig);
    uint64_t hl;
    memcpy(&hl, orig, 8);
    const float w0 = mopt_trainer_param(tr, 0)[0];
    const int rounds = (int)(400 * scale);
    int loaded = 0;
    for (int r = 0; r < rounds; r++) {
        memcpy(buf, orig, n);
        const size_t len = r % 4 == 3 ? mutate_range(buf, n, (size_t)hl + 8, 0) /* the values themselves */
                           : r % 2    ? mutate_json(buf, n, n + 64, (size_t)hl + 8)
                                      : mutate_bytes(buf, n, (size_t)hl + 8);
        write_file(path, buf, len);
        x.n = 4;
        total_inputs++;
        const int ok = mopt_trainer_load(tr, path, &x, 1, &err) == MOPT_OK;
        if (!ok) {
            check_error(&err);
            assert_true(mopt_trainer_param(tr, 0)[0] == w0); /* refused: nothing changed */
            continue;
        }
        loaded++;
        assert_true(x.n >= -1 && x.n <= 4);
        write_file(path, orig, n); /* the mutant changed the weights: back to the saved ones */
        x.n = 4;
        assert_int_equal(mopt_trainer_load(tr, path, &x, 1, &err), MOPT_OK);
    }
    write_file(path, orig, n);
    fprintf(stderr, "  train.state: %d of %d mutants loaded, the rest were refused cleanly\n", loaded, rounds);
    free(buf), free(orig);
    mopt_trainer_free(tr);
    mopt_model_free(m);
}

static void test_report_counts(void **s) {
    REQUIRE_SHARED();
    fprintf(stderr, "fuzz: %ld inputs, %ld loaded, %ld forward passes ran; none crashed\n", total_inputs, total_loaded,
            total_forwards);
    assert_true(total_inputs >= (long)(20000 * scale) - 100);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hf_safetensors_config_and_tokenizer),
        cmocka_unit_test(test_llama2c_checkpoint_and_tokenizer),
        cmocka_unit_test(test_gguf_llama_and_gpt2),
        cmocka_unit_test(test_tensorrt_llm_ranks_and_config),
        cmocka_unit_test(test_quantized_hf_formats),
        cmocka_unit_test(test_training_states),
        cmocka_unit_test(test_report_counts),
    };
    return test_run_tests(tests, setup, teardown);
}
