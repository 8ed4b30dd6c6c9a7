/* export.hf: dense checkpoints that mopt loads back with identical logits
 * (LLaMA, GPT-2 with its Conv1D layout, llama2.c with RoPE rows permuted),
 * dtypes, sharding, quantized models exported dequantized, atomic writes
 * (refusing, replacing, and a SIGKILL mid-export), draft settings. */
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "gguf_walk.h"
#include "st_writer.h"
#include "testutil.h"


#define load test_load_model

static void pipeline(mopt_model *m, const char *text) { mopt_report_free(test_run_pipeline(m, text)); }

#define logit_diff test_max_logit_diff

static void roundtrip(const char *model_rel, const char *opts, double tol) {
    REQUIRE_SHARED();
    char src[1024], dir[1024], out[1100], text[2400];
    test_shared_path(src, sizeof src, model_rel);
    test_tmpdir(dir, sizeof dir, "export");
    snprintf(out, sizeof out, "%s/out", dir);
    mopt_model *m = load(src);
    snprintf(text, sizeof text, "export.hf<out=%s%s%s>", out, *opts ? ";" : "", opts);
    pipeline(m, text);
    mopt_model *e = load(out);
    double d = logit_diff(m, e);
    fprintf(stderr, "%s %s: max |logit diff| after export %.3g\n", model_rel, opts, d);
    assert_true(d <= tol);
    mopt_model_free(e);
    mopt_model_free(m);
}

/* The streaming writer lays out the same file the in-memory encoder does,
 * whatever order the tensors arrive in, and refuses what does not fit its header. */
static void test_safetensors_written_tensor_by_tensor_equal_the_encoded_file(void **s) {
    (void)s;
    char dir[1024], path[1200];
    test_tmpdir(dir, sizeof dir, "stwriter");
    static const char *const names[] = {"b.weight", "a.scale", "c.bias", "a.packed"};
    static const char *const dts[] = {"BF16", "F32", "F16", "I32"};
    const size_t sizes[] = {12, 8, 6, 16};
    mopt_st_entry e[4], plan[4];
    for (int i = 0; i < 4; i++) {
        memset(&e[i], 0, sizeof e[i]);
        snprintf(e[i].name, sizeof e[i].name, "%s", names[i]);
        e[i].dtype = dts[i];
        e[i].ndim = 1;
        e[i].shape[0] = (int64_t)(sizes[i] / (strcmp(dts[i], "F32") && strcmp(dts[i], "I32") ? 2 : 4));
        e[i].nbytes = sizes[i];
        e[i].data = malloc(sizes[i]);
        for (size_t k = 0; k < sizes[i]; k++) ((uint8_t *)e[i].data)[k] = (uint8_t)(31 * i + 7 * k + 1);
        plan[i] = e[i];
        plan[i].data = NULL; /* the writer's header needs no bytes */
    }
    mopt_error err = {0};
    snprintf(path, sizeof path, "%s/stream.safetensors", dir);
    mopt_st_writer *w = mopt_st_writer_open(path, plan, 4, NULL, &err);
    assert_non_null(w);
    for (int i = 3; i >= 0; i--) assert_int_equal(mopt_st_writer_put(w, e[i].name, e[i].data, e[i].nbytes, &err), MOPT_OK);
    assert_int_equal(mopt_st_writer_put(w, "a.scale", e[1].data, e[1].nbytes, &err), MOPT_E_INVALID);
    CHECK_ERR(err, MOPT_E_INVALID, "a.scale written twice");
    assert_int_equal(mopt_st_writer_close(w, 1, &err), MOPT_OK);
    char *want;
    size_t want_n, got_n;
    assert_int_equal(mopt_safetensors_encode(e, 4, &want, &want_n, &err), MOPT_OK);
    uint8_t *got = read_whole(path, &got_n);
    assert_non_null(got);
    assert_int_equal(got_n, want_n);
    assert_memory_equal(got, want, want_n);
    free(got);
    free(want);
    /* a file that exists is never replaced; a wrong size, a stranger or a missing tensor fails */
    assert_null(mopt_st_writer_open(path, plan, 4, NULL, &err));
    CHECK_ERR(err, MOPT_E_IO, "cannot write");
    snprintf(path, sizeof path, "%s/short.safetensors", dir);
    assert_non_null(w = mopt_st_writer_open(path, plan, 4, NULL, &err));
    assert_int_equal(mopt_st_writer_put(w, "b.weight", e[0].data, 10, &err), MOPT_E_INVALID);
    CHECK_ERR(err, MOPT_E_INVALID, "holds 10 bytes");
    assert_int_equal(mopt_st_writer_put(w, "z.weight", e[0].data, 12, &err), MOPT_E_INVALID);
    CHECK_ERR(err, MOPT_E_INVALID, "no header entry");
    assert_int_equal(mopt_st_writer_close(w, 1, &err), MOPT_E_INVALID);
    CHECK_ERR(err, MOPT_E_INVALID, "never written");
    for (int i = 0; i < 4; i++) free(e[i].data);
}

static void test_llama_roundtrip_is_exact(void **s) { roundtrip("models/lit-llama-7m", "", 0.0); }
static void test_gpt2_conv1d_roundtrip_is_exact(void **s) { roundtrip("models/lit-gpt2-1m", "", 0.0); }
static void test_llama2c_exports_as_hf_llama(void **s) { roundtrip("models/stories260K/stories260K.bin", "", 1e-4); }
static void test_f32_export_is_exact_and_f16_close(void **s) {
    roundtrip("models/lit-gpt2-1m", "dtype=f32", 0.0);
    roundtrip("models/lit-gpt2-1m", "dtype=f16", 0.05);
}
static void test_sharded_export_loads(void **s) {
    REQUIRE_SHARED();
    roundtrip("models/lit-llama-7m", "max_shard_size=2000000", 0.0);
}

static void test_quantized_model_exports_dequantized(void **s) {
    REQUIRE_SHARED();
    char src[1024], dir[1024], out[1100], text[2400];
    test_shared_path(src, sizeof src, "models/lit-llama-7m");
    test_tmpdir(dir, sizeof dir, "export-q");
    snprintf(out, sizeof out, "%s/out", dir);
    mopt_model *m = load(src);
    snprintf(text, sizeof text, "quant.rtn<bits=4;group_size=64>,export.hf<out=%s;dtype=f32>", out);
    pipeline(m, text);
    mopt_model *e = load(out);
    double d = logit_diff(m, e); /* packed kernels vs the same weights stored dense */
    fprintf(stderr, "int4 model vs its dense f32 export: max |logit diff| %.3g\n", d);
    assert_true(d < 1e-3);
    mopt_model_free(e);
    mopt_model_free(m);
}

/* --- a head size that is not hidden / heads (Mistral-Nemo, Qwen3, Gemma configs) --------- */

enum { HD_DIM = 256, HD_HEADS = 4, HD_KV = 2, HD_HEAD = 32, HD_FFN = 512, HD_LAYERS = 2, HD_VOCAB = 2048 };

/* Writes a random 2-layer LLaMA with head_dim 32 (hidden 256 / 4 heads would be 64) and
 * the lit tokenizer into dir; weights scaled so activations stay in range. */
static void write_head_dim_model(const char *dir) {
    static const struct {
        const char *fmt;
        int64_t rows, cols; /* cols 0: a norm (ones) */
    } shapes[] = {{"model.layers.%d.input_layernorm.weight", HD_DIM, 0},
                  {"model.layers.%d.self_attn.q_proj.weight", HD_HEADS * HD_HEAD, HD_DIM},
                  {"model.layers.%d.self_attn.k_proj.weight", HD_KV * HD_HEAD, HD_DIM},
                  {"model.layers.%d.self_attn.v_proj.weight", HD_KV * HD_HEAD, HD_DIM},
                  {"model.layers.%d.self_attn.o_proj.weight", HD_DIM, HD_HEADS * HD_HEAD},
                  {"model.layers.%d.post_attention_layernorm.weight", HD_DIM, 0},
                  {"model.layers.%d.mlp.gate_proj.weight", HD_FFN, HD_DIM},
                  {"model.layers.%d.mlp.up_proj.weight", HD_FFN, HD_DIM},
                  {"model.layers.%d.mlp.down_proj.weight", HD_DIM, HD_FFN}};
    enum { N = 9 * HD_LAYERS + 3 };
    static char names[N][96];
    int64_t rows[N], cols[N]; /* cols 0: a norm */
    int n = 0;
    snprintf(names[n], sizeof names[n], "model.embed_tokens.weight"), rows[n] = HD_VOCAB, cols[n++] = HD_DIM;
    for (int l = 0; l < HD_LAYERS; l++)
        for (int k = 0; k < 9; k++) snprintf(names[n], sizeof names[n], shapes[k].fmt, l), rows[n] = shapes[k].rows, cols[n++] = shapes[k].cols;
    snprintf(names[n], sizeof names[n], "model.norm.weight"), rows[n] = HD_DIM, cols[n++] = 0;
    snprintf(names[n], sizeof names[n], "lm_head.weight"), rows[n] = HD_VOCAB, cols[n++] = HD_DIM;
    st_item items[N];
    float *bufs[N];
    uint32_t seed = 20261201u;
    for (int i = 0; i < N; i++) {
        const int64_t count = rows[i] * (cols[i] ? cols[i] : 1);
        const float sc = cols[i] ? 1.7f / sqrtf((float)cols[i]) : 0;
        float *w = bufs[i] = malloc((size_t)count * sizeof *w);
        for (int64_t j = 0; j < count; j++) {
            seed = seed * 1664525u + 1013904223u;
            w[j] = cols[i] ? ((float)(seed >> 8) / 16777216.0f - 0.5f) * sc : 1.0f;
        }
        items[i] = (st_item){names[i], "F32", cols[i] ? 2 : 1, {rows[i], cols[i]}, w, (size_t)count * sizeof *w};
    }
    char path[1400], cmd[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    st_write(path, items, N, NULL);
    for (int i = 0; i < N; i++) free(bufs[i]);
    snprintf(path, sizeof path, "%s/config.json", dir);
    char cfg[1024];
    snprintf(cfg, sizeof cfg,
             "{\"model_type\": \"llama\", \"hidden_size\": %d, \"num_hidden_layers\": %d, \"num_attention_heads\": %d,\n"
             " \"num_key_value_heads\": %d, \"head_dim\": %d, \"intermediate_size\": %d, \"vocab_size\": %d,\n"
             " \"max_position_embeddings\": 512, \"rms_norm_eps\": 1e-5, \"rope_theta\": 10000.0, \"bos_token_id\": 0, \"eos_token_id\": 0}\n",
             HD_DIM, HD_LAYERS, HD_HEADS, HD_KV, HD_HEAD, HD_FFN, HD_VOCAB);
    write_file(path, cfg, strlen(cfg));
    snprintf(cmd, sizeof cmd, "cp '%s/models/lit-llama-7m/tokenizer.json' '%s/'", test_shared_dir(), dir);
    assert_int_equal(system(cmd), 0);
}

/* Exports m with `export_text` (%s: the output path) and compares the export's logits to m's. */
static void export_matches(mopt_model *m, const char *dir, const char *name, const char *export_text, double tol) {
    char out[1400], text[4096];
    snprintf(out, sizeof out, "%s/%s", dir, name);
    snprintf(text, sizeof text, export_text, out);
    pipeline(m, text);
    mopt_model *e = load(out);
    assert_int_equal(mopt_model_arch(e)->head_dim, HD_HEAD);
    double d = logit_diff(m, e);
    fprintf(stderr, "  head_dim %d through %-42s max |logit diff| %.3g\n", HD_HEAD, text, d);
    assert_true(d <= tol);
    mopt_model_free(e);
}

static void test_explicit_head_dim_roundtrips_through_every_format(void **s) {
    REQUIRE_SHARED();
    char dir[1024], src[1100];
    test_tmpdir(dir, sizeof dir, "head-dim");
    snprintf(src, sizeof src, "%s/src", dir);
    mkdir(src, 0755);
    write_head_dim_model(src);
    mopt_model *m = load(src);
    assert_int_equal(mopt_model_arch(m)->head_dim, HD_HEAD);
    /* interleaved RoPE rows in GGUF sum in another order: 1e-4, as for lit-llama */
    export_matches(m, dir, "f32.gguf", "export.gguf<out=%s;type=f32>", 1e-4);
    export_matches(m, dir, "dense", "export.hf<out=%s;format=dense;dtype=f32>", 0);
    export_matches(m, dir, "trt1", "export.trtllm<out=%s;tp=1;dtype=f32>", 0);
    export_matches(m, dir, "trt2", "export.trtllm<out=%s;tp=2;dtype=f32>", 0);
    mopt_model_free(m);
    /* quantized: the export holds exactly the levels and scales the model runs */
    m = load(src);
    pipeline(m, "quant.rtn<bits=4;group_size=32>");
    export_matches(m, dir, "awq", "export.hf<out=%s;format=awq>", 0);
    export_matches(m, dir, "gptq", "export.hf<out=%s;format=gptq>", 0);
    export_matches(m, dir, "ct", "export.hf<out=%s;format=compressed-tensors>", 0);
    mopt_model_free(m);
    m = load(src);
    pipeline(m, "quant.rtn<bits=4;group_size=32;sym=true>");
    export_matches(m, dir, "mo", "export.hf<out=%s;format=modelopt>", 0);
    export_matches(m, dir, "trt-w4a16", "export.trtllm<out=%s;tp=2>", 0);
    export_matches(m, dir, "q4_0.gguf", "export.gguf<out=%s;type=auto>", 1e-4);
    mopt_model_free(m);
    /* the GGUF metadata says the head size itself */
    char path[1200];
    snprintf(path, sizeof path, "%s/f32.gguf", dir);
    size_t n;
    unsigned char *d = read_whole(path, &n);
    size_t at = gguf_kv_value_offset(d, "llama.attention.key_length");
    assert_true(at > 0);
    uint32_t v;
    memcpy(&v, d + at, 4);
    assert_int_equal(v, HD_HEAD);
    assert_true(gguf_kv_value_offset(d, "llama.attention.value_length") > 0);
    free(d);
}

static int cli(const char *args) {
    char cmd[8400];
    snprintf(cmd, sizeof cmd, "%s %s > /dev/null 2>&1", MOPT_CLI, args);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int exists(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0;
}

/* A folder of the user's that must survive whatever an export does. */
static void make_victim(const char *dir, char *victim, size_t cap, char *keep, size_t kcap) {
    snprintf(victim, cap, "%s/victim", dir);
    mkdir(victim, 0755);
    snprintf(keep, kcap, "%s/precious.txt", victim);
    write_file(keep, "mine", 4);
}

static void test_force_replaces_only_a_previous_export(void **s) {
    REQUIRE_SHARED();
    char dir[1024], out[1100], args[4096], keep[1300], victim[1100], marker[1200];
    test_tmpdir(dir, sizeof dir, "export-force");
    snprintf(out, sizeof out, "%s/out", dir);
    make_victim(dir, victim, sizeof victim, keep, sizeof keep);
    /* the user's own directory: refused without and with --force */
    snprintf(args, sizeof args, "export '%s/models/lit-gpt2-1m' -o '%s' --quiet", test_shared_dir(), victim);
    test_cli_refuses(args, 2, "already exists; pass force", NULL);
    snprintf(args, sizeof args, "export '%s/models/lit-gpt2-1m' -o '%s' --force --quiet", test_shared_dir(), victim);
    test_cli_refuses(args, 2, "is not a mopt export (no .mopt-export inside)", NULL);
    assert_true(exists(keep));
    /* a previous export is replaced with --force, and says what wrote it */
    snprintf(args, sizeof args, "export '%s/models/lit-gpt2-1m' -o '%s' --quiet", test_shared_dir(), out);
    assert_int_equal(cli(args), 0);
    snprintf(marker, sizeof marker, "%s/.mopt-export", out);
    assert_true(exists(marker));
    snprintf(args, sizeof args, "export '%s/models/lit-gpt2-1m' -o '%s' --force --quiet", test_shared_dir(), out);
    assert_int_equal(cli(args), 0);
    mopt_model_free(load(out));
    /* a symbolic link to the user's folder, as the target */
    char link[1200];
    snprintf(link, sizeof link, "%s/link", dir);
    assert_int_equal(symlink(victim, link), 0);
    snprintf(args, sizeof args, "export '%s/models/lit-gpt2-1m' -o '%s' --force --quiet", test_shared_dir(), link);
    test_cli_refuses(args, 2, "is a symbolic link", NULL);
    assert_true(exists(keep));
    /* single-file formats replace a regular file, never a directory or a FIFO (or, as root, a device) */
    char gguf[1200], fifo[1200];
    snprintf(gguf, sizeof gguf, "%s/m.gguf", dir);
    write_file(gguf, "old", 3);
    snprintf(args, sizeof args, "export '%s/models/stories260K/stories260K.bin' -o '%s' --format gguf --type f32 --force --quiet",
             test_shared_dir(), gguf);
    assert_int_equal(cli(args), 0);
    mopt_model_free(load(gguf));
    snprintf(fifo, sizeof fifo, "%s/pipe.gguf", dir);
    assert_int_equal(mkfifo(fifo, 0644), 0);
    snprintf(args, sizeof args, "export '%s/models/stories260K/stories260K.bin' -o '%s' --format gguf --force --quiet",
             test_shared_dir(), fifo);
    test_cli_refuses(args, 2, "is not a regular file", NULL);
    snprintf(args, sizeof args, "export '%s/models/stories260K/stories260K.bin' -o '%s' --format gguf --force --quiet",
             test_shared_dir(), victim);
    test_cli_refuses(args, 2, "is a directory; this export is one file", NULL);
    assert_true(exists(keep));
}

/* Leftover temporaries: swept only when real directories of a process that is
 * gone; a planted link is never followed, a live export never disturbed. */
static void test_sweep_never_follows_links_or_removes_live_exports(void **s) {
    REQUIRE_SHARED();
    char dir[1024], out[1100], args[4096], keep[1300], victim[1100], planted[1300], live[1300], stale[1300], inner[1400];
    test_tmpdir(dir, sizeof dir, "export-sweep");
    snprintf(out, sizeof out, "%s/out", dir);
    make_victim(dir, victim, sizeof victim, keep, sizeof keep);
    /* a link named like a dead process's temporary, pointing at the user's folder */
    snprintf(planted, sizeof planted, "%s/.out.mopt-tmp-999999", dir);
    assert_int_equal(symlink(victim, planted), 0);
    /* a dead process's real temporary that holds a link to the user's folder */
    snprintf(stale, sizeof stale, "%s/.out.mopt-tmp-999998", dir);
    mkdir(stale, 0755);
    snprintf(inner, sizeof inner, "%s/MOPT_EXPORT_INCOMPLETE", stale);
    write_file(inner, "x", 1);
    snprintf(inner, sizeof inner, "%s/escape", stale);
    assert_int_equal(symlink(victim, inner), 0);
    /* a live export's temporary: this process is alive */
    snprintf(live, sizeof live, "%s/.out.mopt-tmp-%ld", dir, (long)getpid());
    mkdir(live, 0755);
    snprintf(inner, sizeof inner, "%s/MOPT_EXPORT_INCOMPLETE", live);
    write_file(inner, "x", 1);
    snprintf(args, sizeof args, "export '%s/models/lit-gpt2-1m' -o '%s' --quiet", test_shared_dir(), out);
    assert_int_equal(cli(args), 0);
    assert_true(exists(keep));           /* nothing outside the temporaries was touched */
    assert_true(exists(planted));        /* not a directory of ours: left alone */
    assert_false(exists(stale));         /* swept, its link unlinked, not followed */
    assert_true(exists(live));           /* its process runs: left alone */
    snprintf(inner, sizeof inner, "rm -rf '%s'", live);
    assert_int_equal(system(inner), 0);
}

/* Two exports to one target at once: the second never removes the first's
 * temporary, and without force it does not replace what the first wrote. */
static void test_concurrent_exports_to_one_target(void **s) {
    REQUIRE_SHARED();
    char dir[1024], out[1100], text[2400], model[1024];
    test_tmpdir(dir, sizeof dir, "export-race");
    snprintf(out, sizeof out, "%s/out", dir);
    snprintf(model, sizeof model, "%s/models/lit-llama-7m", test_shared_dir());
    snprintf(text, sizeof text, "export.hf<out=%s;max_shard_size=2000000;pause_ms=150>", out);
    pid_t kids[2];
    for (int k = 0; k < 2; k++) {
        if ((kids[k] = fork()) == 0) {
            freopen("/dev/null", "w", stdout);
            freopen("/dev/null", "w", stderr);
            execl(MOPT_CLI, MOPT_CLI, "pipeline", text, model, "--quiet", (char *)NULL);
            _exit(127);
        }
        usleep(300 * 1000);
    }
    int codes[2];
    for (int k = 0; k < 2; k++) {
        int status;
        waitpid(kids[k], &status, 0);
        codes[k] = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    /* whichever finishes first lands; the other finds it there and replaces nothing */
    assert_true((codes[0] == 0 && codes[1] == 2) || (codes[0] == 2 && codes[1] == 0));
    mopt_model_free(load(out));
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "ls -a '%s' | grep -q mopt-tmp", dir);
    assert_int_not_equal(system(cmd), 0); /* no temporary left */
}

static void test_sigkill_mid_export_leaves_no_model(void **s) {
    REQUIRE_SHARED();
    char dir[1024], out[1100], cmd[8192];
    test_tmpdir(dir, sizeof dir, "export-kill");
    snprintf(out, sizeof out, "%s/out", dir);
    pid_t pid = fork();
    if (pid == 0) {
        char model[1024], text[2400];
        snprintf(model, sizeof model, "%s/models/lit-llama-7m", test_shared_dir());
        snprintf(text, sizeof text, "export.hf<out=%s;max_shard_size=2000000;pause_ms=400>", out);
        freopen("/dev/null", "w", stdout);
        freopen("/dev/null", "w", stderr);
        execl(MOPT_CLI, MOPT_CLI, "pipeline", text, model, "--quiet", (char *)NULL);
        _exit(127);
    }
    usleep(900 * 1000); /* a few shards in */
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    assert_true(WIFSIGNALED(status));
    struct stat st;
    assert_int_not_equal(stat(out, &st), 0); /* the target does not exist */
    /* the hidden temporary is marked incomplete, and refused if someone points mopt at it */
    snprintf(cmd, sizeof cmd, "ls -a '%s' | grep -c '^\\.out\\.mopt-tmp-' > '%s/count'", dir, dir);
    assert_int_equal(system(cmd), 0);
    char countp[1200], tmpd[2400];
    snprintf(countp, sizeof countp, "%s/count", dir);
    size_t n;
    char *c = read_whole(countp, &n);
    assert_int_equal(atoi(c), 1);
    free(c);
    snprintf(tmpd, sizeof tmpd, "%s/.out.mopt-tmp-%ld", dir, (long)pid);
    mopt_error err = {0};
    assert_null(mopt_model_load(tmpd, NULL, &err));
    assert_non_null(strstr(err.msg, "interrupted export"));
    /* the next export cleans it up and lands */
    snprintf(cmd, sizeof cmd, "export '%s/models/lit-llama-7m' -o '%s' --quiet", test_shared_dir(), out);
    assert_int_equal(cli(cmd), 0);
    assert_int_not_equal(stat(tmpd, &st), 0);
    mopt_model_free(load(out));
}

static void test_draft_settings_for_serving(void **s) {
    REQUIRE_SHARED();
    char dir[1024], out[1100], args[4096], path[1200];
    test_tmpdir(dir, sizeof dir, "export-draft");
    snprintf(out, sizeof out, "%s/target", dir);
    snprintf(args, sizeof args, "export '%s/models/lit-llama-7m' -o '%s' --draft '%s/models/lit-gpt2-1m' --draft-k 5 --quiet",
             test_shared_dir(), out, test_shared_dir());
    assert_int_equal(cli(args), 0);
    snprintf(path, sizeof path, "%s/speculative_config.json", out);
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    assert_non_null(j);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "vllm"), "num_speculative_tokens")), 5);
    assert_non_null(strstr(json_string_value(json_object_get(json_object_get(j, "vllm"), "model")), "lit-gpt2-1m"));
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "tensorrt_llm"), "max_draft_len")), 5);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "tensorrt_llm"), "speculative_decoding_mode")),
                        "draft_tokens_external");
    json_decref(j);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama_roundtrip_is_exact),
        cmocka_unit_test(test_gpt2_conv1d_roundtrip_is_exact),
        cmocka_unit_test(test_llama2c_exports_as_hf_llama),
        cmocka_unit_test(test_f32_export_is_exact_and_f16_close),
        cmocka_unit_test(test_sharded_export_loads),
        cmocka_unit_test(test_quantized_model_exports_dequantized),
        cmocka_unit_test(test_explicit_head_dim_roundtrips_through_every_format),
        cmocka_unit_test(test_force_replaces_only_a_previous_export),
        cmocka_unit_test(test_sweep_never_follows_links_or_removes_live_exports),
        cmocka_unit_test(test_concurrent_exports_to_one_target),
        cmocka_unit_test(test_sigkill_mid_export_leaves_no_model),
        cmocka_unit_test(test_draft_settings_for_serving),
        cmocka_unit_test(test_safetensors_written_tensor_by_tensor_equal_the_encoded_file),
    };
    return test_run_tests(tests, test_registry_setup, test_registry_teardown);
}
