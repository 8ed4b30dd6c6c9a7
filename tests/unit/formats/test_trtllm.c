/* TensorRT-LLM checkpoints: dense and quantized (W4A16_AWQ, W8A16, W8A8 per
 * token, FP8 per channel and per tensor, NVFP4) exports, one rank or split for tensor parallelism,
 * load back with the in-process logits (exactly; llama2.c's RoPE rows to 1e-4);
 * the config carries mapping and quantization; an independent Python reader
 * stitches the ranks together from the published layout; schemes TRT-LLM
 * cannot hold and impossible splits are refused. */
#include <jansson.h>
#include <sys/stat.h>

#include "testutil.h"

static char dir[1024], calib[1024];

static void roundtrip(const char *model_rel, const char *quant, int tp, double tol, int reader) {
    REQUIRE_SHARED();
    char out[1200], dense[1200], text[4096];
    snprintf(out, sizeof out, "%s/trt", dir);
    snprintf(dense, sizeof dense, "%s/dense", dir);
    mopt_model *m = test_load_model(model_rel);
    snprintf(text, sizeof text, "%s%sexport.trtllm<out=%s;tp=%d;force=true>,export.hf<out=%s;format=dense;dtype=f32;force=true>",
             quant, *quant ? "," : "", out, tp, dense);
    mopt_report_free(test_run_pipeline(m, text));
    mopt_model *e = test_load_model(out);
    double d = test_max_logit_diff(m, e);
    fprintf(stderr, "%s %s tp=%d: max |logit diff| %.3g\n", model_rel, quant, tp, d);
    assert_true(d <= tol);
    mopt_model_free(e);
    mopt_model_free(m);
    if (reader) {
        char cmd[4400];
        snprintf(cmd, sizeof cmd, "python3 '%s/tests/trtllm_reader.py' '%s' '%s'", MOPT_SOURCE_DIR, out, dense);
        assert_int_equal(system(cmd), 0);
    }
}

static void test_dense_checkpoints_roundtrip_on_one_and_two_ranks(void **s) {
    roundtrip("models/lit-llama-7m", "", 1, 0.0, 1);
    roundtrip("models/lit-llama-7m", "", 2, 0.0, 1);
    roundtrip("models/lit-gpt2-1m", "", 2, 0.0, 0);
    roundtrip("models/stories260K/stories260K.bin", "", 2, 1e-4, 0); /* interleaved -> rotate-half RoPE rows */
}

static void test_quantized_checkpoints_keep_their_values(void **s) {
    char q[2048];
    roundtrip("models/lit-llama-7m", "quant.rtn<bits=4;group_size=64;sym=true>", 2, 0.0, 1);
    roundtrip("models/lit-llama-7m", "quant.rtn<bits=8;group_size=-1;sym=true>", 2, 0.0, 1);
    snprintf(q, sizeof q, "quant.smoothquant<calib=%s;calib_samples=4;calib_len=128>", calib);
    roundtrip("models/lit-llama-7m", q, 2, 0.0, 1);
    roundtrip("models/lit-llama-7m", "quant.fp8<activations=dynamic>", 2, 0.0, 1);
}

/* The last roundtrip's config.json names the algorithm, its group size and whether prequant scales are there. */
static void expect_quantization(const char *algo, int64_t group_size, int pre_quant_scale) {
    char path[1400];
    snprintf(path, sizeof path, "%s/trt/config.json", dir);
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    assert_non_null(j);
    json_t *qc = json_object_get(j, "quantization");
    assert_string_equal(json_string_value(json_object_get(qc, "quant_algo")), algo);
    assert_int_equal(json_integer_value(json_object_get(qc, "group_size")), group_size);
    assert_int_equal(json_is_true(json_object_get(qc, "pre_quant_scale")), pre_quant_scale);
    json_decref(j);
}

/* Per-tensor scales a fused GEMM holds once: FP8 per tensor and NVFP4 quantize q/k/v (and gate/up) with their
 * group's largest |w|, so TensorRT-LLM's fused qkv holds them as stored, on one rank or split over two. */
static void test_per_tensor_fp8_and_nvfp4_keep_their_values(void **s) {
    char q[2048];
    snprintf(q, sizeof q, "quant.fp8<weights=per_tensor;activations=static;calib=%s;calib_samples=2;calib_len=64>", calib);
    roundtrip("models/lit-llama-7m", q, 2, 0.0, 1);
    snprintf(q, sizeof q, "quant.nvfp4<activations=static;calib=%s;calib_samples=2;calib_len=64>", calib);
    roundtrip("models/lit-llama-7m", q, 1, 0.0, 1);
    roundtrip("models/lit-llama-7m", q, 2, 0.0, 1);
    expect_quantization("NVFP4", 16, 0);
}

/* W4A8_AWQ: the int4 pairs and group scales as W4A16_AWQ's, and the two calibrated scalars the fused GEMM holds
 * once (weights_scaling_factor_2, activation_scaling_factor), on one rank or split over two; the independent reader
 * widens the int4 values to FP8 as TensorRT-LLM does. */
static void test_w4a8_awq_keeps_its_values(void **s) {
    char q[2048];
    snprintf(q, sizeof q, "quant.gptq<sym=true;activations=fp8_static;calib=%s;calib_samples=2;calib_len=64>", calib);
    roundtrip("models/lit-llama-7m", q, 1, 0.0, 1);
    roundtrip("models/lit-llama-7m", q, 2, 0.0, 1);
    expect_quantization("W4A8_AWQ", 128, 1);
}

static void test_config_names_the_mapping_and_the_scheme(void **s) {
    REQUIRE_SHARED();
    roundtrip("models/lit-llama-7m", "quant.rtn<bits=4;group_size=128;sym=true>", 2, 0.0, 0);
    char path[1400];
    snprintf(path, sizeof path, "%s/trt/config.json", dir);
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "architecture")), "LlamaForCausalLM");
    assert_string_equal(json_string_value(json_object_get(j, "position_embedding_type")), "rope_gpt_neox");
    json_t *map = json_object_get(j, "mapping"), *q = json_object_get(j, "quantization");
    assert_int_equal(json_integer_value(json_object_get(map, "tp_size")), 2);
    assert_int_equal(json_integer_value(json_object_get(map, "world_size")), 2);
    assert_string_equal(json_string_value(json_object_get(q, "quant_algo")), "W4A16_AWQ");
    assert_int_equal(json_integer_value(json_object_get(q, "group_size")), 128);
    assert_true(json_is_false(json_object_get(q, "has_zero_point")));
    assert_true(json_is_true(json_object_get(q, "pre_quant_scale")));
    json_decref(j);
    /* rank files: fused qkv of this rank's 4 q heads and 2 k/v heads (x32 rows), two int4 rows per byte */
    for (int r = 0; r < 2; r++) {
        snprintf(path, sizeof path, "%s/trt/rank%d.safetensors", dir, r);
        size_t n;
        char *d = read_whole(path, &n);
        assert_non_null(d);
        uint64_t hl;
        memcpy(&hl, d, 8);
        json_t *h = json_loadb(d + 8, hl, 0, &je);
        json_t *qkv = json_object_get(h, "transformer.layers.0.attention.qkv.weight");
        assert_string_equal(json_string_value(json_object_get(qkv, "dtype")), "I8");
        assert_int_equal(json_integer_value(json_array_get(json_object_get(qkv, "shape"), 0)), (4 + 2 + 2) * 32 / 2);
        json_t *dense = json_object_get(h, "transformer.layers.0.attention.dense.weights_scaling_factor");
        assert_int_equal(json_integer_value(json_array_get(json_object_get(dense, "shape"), 1)), 1); /* 128 of 256 columns */
        json_decref(h);
        free(d);
    }
}

static void test_what_trtllm_cannot_hold_is_refused(void **s) {
    REQUIRE_SHARED();
    char text[4400];
    snprintf(text, sizeof text, "export.trtllm<out=%s/x;tp=3>", dir);
    test_pipeline_fails("models/lit-llama-7m", text, "tp=3 must divide");
    snprintf(text, sizeof text, "quant.rtn<bits=4>,export.trtllm<out=%s/x>", dir);
    test_pipeline_fails("models/lit-llama-7m", text, "no TensorRT-LLM quant_algo");
    snprintf(text, sizeof text, "quant.nvfp4<activations=dynamic>,export.trtllm<out=%s/x>", dir);
    test_pipeline_fails("models/lit-llama-7m", text, "NVFP4 with activations=static");
    /* q quantized apart from k and v: two global scales where the fused qkv holds one */
    snprintf(text, sizeof text,
             "quant.nvfp4<activations=static;only=*q_proj*;calib=%s;calib_samples=2;calib_len=64>,"
             "quant.nvfp4<activations=static;exclude=*q_proj*;calib=%s;calib_samples=2;calib_len=64>,export.trtllm<out=%s/x>",
             calib, calib, dir);
    test_pipeline_fails("models/lit-llama-7m", text, "different NVFP4 global scales");
    struct stat st;
    char x[1200];
    snprintf(x, sizeof x, "%s/x", dir);
    assert_int_not_equal(stat(x, &st), 0);
}

static void test_broken_trtllm_checkpoints_are_refused(void **s) {
    REQUIRE_SHARED();
    roundtrip("models/lit-llama-7m", "", 2, 0.0, 0);
    char path[1400];
    snprintf(path, sizeof path, "%s/trt/rank1.safetensors", dir);
    assert_int_equal(unlink(path), 0);
    snprintf(path, sizeof path, "%s/trt", dir);
    mopt_error err = {0};
    assert_null(mopt_model_load(path, NULL, &err));
    CHECK_ERR(err, MOPT_E_FORMAT, "rank1.safetensors is missing");
}

/* Rewrites one key of a checkpoint's config.json (at the top level, or under `section`). */
static void set_config(const char *ckpt, const char *section, const char *key, json_t *value) {
    char path[1400];
    snprintf(path, sizeof path, "%s/config.json", ckpt);
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    assert_non_null(j);
    json_object_set_new(section ? json_object_get(j, section) : j, key, value);
    assert_int_equal(json_dump_file(j, path, JSON_INDENT(2)), 0);
    json_decref(j);
}

/* Config values the weights contradict: found before any row is placed. */
static void test_config_that_contradicts_the_weights_is_refused(void **s) {
    REQUIRE_SHARED();
    char ckpt[1200], args[4096];
    snprintf(ckpt, sizeof ckpt, "%s/trt", dir);
    roundtrip("models/lit-llama-7m", "", 2, 0.0, 0);
    set_config(ckpt, NULL, "head_size", json_integer(33));
    mopt_error err = {0};
    assert_null(mopt_model_load(ckpt, NULL, &err));
    CHECK_ERR(err, MOPT_E_FORMAT, "transformer.layers.0.attention.qkv.weight has 256 rows per rank");
    assert_non_null(strstr(err.msg, "head_size 33"));
    snprintf(args, sizeof args, "info '%s'", ckpt);
    test_cli_refuses(args, 2, ckpt, "head_size 33");

    roundtrip("models/lit-llama-7m", "quant.rtn<bits=4;group_size=128;sym=true>", 2, 0.0, 0);
    set_config(ckpt, "quantization", "group_size", json_integer(32));
    assert_null(mopt_model_load(ckpt, NULL, &err));
    CHECK_ERR(err, MOPT_E_FORMAT, "weights_scaling_factor has 2 groups per row, but quantization.group_size 32");
    snprintf(args, sizeof args, "eval '%s' --data '%s' --limit-tokens 512", ckpt, calib);
    test_cli_refuses(args, 2, "quantization.group_size 32", NULL);
    set_config(ckpt, "quantization", "group_size", json_integer((json_int_t)1 << 40));
    assert_null(mopt_model_load(ckpt, NULL, &err));
    CHECK_ERR(err, MOPT_E_FORMAT, "quantization.group_size 1099511627776 is not a positive multiple of 32");
}

/* A quantized KV cache travels as kv_cache_quant_algo and one attention.kv_cache_scaling_factor per layer on
 * every rank: TensorRT-LLM keeps one scale for K and V, so the reload holds max(k_scale, v_scale) for both, bit for
 * bit, and runs exactly like the original model given those scales. */
static void test_kv_cache_scales_travel_as_kv_cache_scaling_factor(void **s) {
    REQUIRE_SHARED();
    const char *fmts[] = {"fp8", "int8"}, *algos[] = {"FP8", "INT8"}, *weights[] = {"quant.rtn<bits=4;group_size=64;sym=true>,", ""};
    const int tps[] = {2, 1};
    for (int k = 0; k < 2; k++) {
        char out[1200], text[4096], path[1400];
        snprintf(out, sizeof out, "%s/trt-kv", dir);
        mopt_model *m = test_load_model("models/lit-llama-7m");
        snprintf(text, sizeof text, "%squant.kv<format=%s;calib=%s;calib_samples=4;calib_len=128>,export.trtllm<out=%s;tp=%d;force=true>",
                 weights[k], fmts[k], calib, out, tps[k]);
        mopt_report_free(test_run_pipeline(m, text));
        snprintf(path, sizeof path, "%s/config.json", out);
        json_error_t je;
        json_t *j = json_load_file(path, 0, &je);
        assert_string_equal(json_string_value(json_object_get(json_object_get(j, "quantization"), "kv_cache_quant_algo")), algos[k]);
        json_decref(j);
        mopt_model *e = test_load_model(out);
        mopt_graph *g = mopt_model_graph(m);
        for (int32_t l = 0; l < mopt_graph_arch(g)->n_layers; l++) {
            const mopt_kv_quant qm = mopt_graph_kv_quant(g, l), qe = mopt_graph_kv_quant(mopt_model_graph(e), l);
            const float mx = qm.k_scale[0] > qm.v_scale[0] ? qm.k_scale[0] : qm.v_scale[0];
            assert_int_equal(qe.format, qm.format);
            assert_true(qe.k_scale[0] == mx && qe.v_scale[0] == mx && mx != 1.0f);
            assert_int_equal(mopt_graph_set_kv_quant(g, l, (mopt_kv_format)qm.format, 1, &mx, &mx, NULL), MOPT_OK);
        }
        const double d = test_max_logit_diff(m, e);
        fprintf(stderr, "%s KV cache tp=%d: max |logit diff| %.3g\n", fmts[k], tps[k], d);
        assert_true(d == 0.0);
        mopt_model_free(e);
        mopt_model_free(m);
        if (k) continue;
        mopt_error err = {0};
        set_config(out, "quantization", "kv_cache_quant_algo", json_string("NVFP4"));
        assert_null(mopt_model_load(out, NULL, &err));
        CHECK_ERR(err, MOPT_E_UNSUPPORTED, "kv_cache_quant_algo \"NVFP4\"");
        set_config(out, "quantization", "kv_cache_quant_algo", json_null()); /* the scales are then nobody's */
        assert_null(mopt_model_load(out, NULL, &err));
        CHECK_ERR(err, MOPT_E_FORMAT, "kv_cache_scaling_factor is not part of");
    }
    char text[2400];
    snprintf(text, sizeof text, "quant.kv<granularity=head;calib=%s;calib_samples=2;calib_len=64>,export.trtllm<out=%s/x>", calib, dir);
    test_pipeline_fails("models/lit-llama-7m", text, "store one per layer");
}

int main(void) {
    test_tmpdir(dir, sizeof dir, "trtllm");
    snprintf(calib, sizeof calib, "%s/data/lit-train.txt", test_shared_dir());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dense_checkpoints_roundtrip_on_one_and_two_ranks),
        cmocka_unit_test(test_quantized_checkpoints_keep_their_values),
        cmocka_unit_test(test_w4a8_awq_keeps_its_values),
        cmocka_unit_test(test_config_names_the_mapping_and_the_scheme),
        cmocka_unit_test(test_per_tensor_fp8_and_nvfp4_keep_their_values),
        cmocka_unit_test(test_what_trtllm_cannot_hold_is_refused),
        cmocka_unit_test(test_broken_trtllm_checkpoints_are_refused),
        cmocka_unit_test(test_config_that_contradicts_the_weights_is_refused),
        cmocka_unit_test(test_kv_cache_scales_travel_as_kv_cache_scaling_factor),
    };
    return test_run_tests(tests, test_registry_setup, test_registry_teardown);
}
