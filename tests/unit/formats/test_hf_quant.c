/* Quantized Hugging Face exports (AWQ GEMM, GPTQ v1, compressed-tensors pack-,
 * int- and float-quantized): each loads back into the same packed weights, so
 * logits are identical to the in-process model (difference exactly 0); an
 * independent Python reader written from the published layouts decodes them to
 * the project's dequantized weights; formats that cannot hold a scheme refuse it
 * with a message; corrupt packed tensors are refused on import. 2:4 packed
 * weights go through compressed-tensors' sparse-24-bitmask the same way. */
#include <jansson.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "testutil.h"

static char calib[1024];

/* quantize with `quant`, export as `format`, load the export, compare logits */
static void roundtrip_tol(const char *model_rel, const char *quant, const char *format, const char *tag, int reader,
                          double tol) {
    REQUIRE_SHARED();
    char src[1024], dir[1024], out[1100], dense[1100], text[4096];
    test_shared_path(src, sizeof src, model_rel);
    test_tmpdir(dir, sizeof dir, tag);
    snprintf(out, sizeof out, "%s/q", dir);
    snprintf(dense, sizeof dense, "%s/dense", dir);
    mopt_model *m = test_load_model(src);
    snprintf(text, sizeof text, "%s,export.hf<out=%s;format=%s>,export.hf<out=%s;format=dense;dtype=f32>", quant, out,
             format, dense);
    mopt_report_free(test_run_pipeline(m, text));
    mopt_model *e = test_load_model(out);
    double d = test_max_logit_diff(m, e);
    fprintf(stderr, "%s %s as %s: max |logit diff| %.3g\n", model_rel, quant, format, d);
    assert_true(d <= tol);
    mopt_model_free(e);
    mopt_model_free(m);
    if (reader) {
        char cmd[4400];
        snprintf(cmd, sizeof cmd, "python3 '%s/tests/hf_quant_reader.py' '%s' '%s'", MOPT_SOURCE_DIR, out, dense);
        assert_int_equal(system(cmd), 0);
    }
}

static void exact_roundtrip(const char *model_rel, const char *quant, const char *format, const char *tag, int reader) {
    roundtrip_tol(model_rel, quant, format, tag, reader, 0.0);
}

static void test_awq_gemm_roundtrip_is_exact(void **s) {
    exact_roundtrip("models/lit-llama-7m", "quant.rtn<bits=4;group_size=128>", "awq", "awq", 1);
}

static void test_awq_pass_exports_as_awq(void **s) {
    char q[2048];
    snprintf(q, sizeof q, "quant.awq<bits=4;group_size=64;calib=%s;calib_samples=4;calib_len=128>", calib);
    exact_roundtrip("models/lit-llama-7m", q, "awq", "awq-pass", 0);
}

static void test_gptq_v1_roundtrip_is_exact_for_2_4_8_bits(void **s) {
    exact_roundtrip("models/lit-llama-7m", "quant.rtn<bits=4;group_size=128>", "gptq", "gptq4", 1);
    exact_roundtrip("models/lit-llama-7m", "quant.rtn<bits=8;group_size=-1;sym=true>", "gptq", "gptq8", 0);
    exact_roundtrip("models/lit-llama-7m", "quant.rtn<bits=2;group_size=32>", "gptq", "gptq2", 0);
}

static void test_gptq_act_order_keeps_g_idx(void **s) {
    char q[2048];
    snprintf(q, sizeof q, "quant.gptq<bits=4;group_size=64;act_order=true;sym=true;calib=%s;calib_samples=4;calib_len=128>", calib);
    exact_roundtrip("models/lit-llama-7m", q, "gptq", "gptq-act", 1);
    exact_roundtrip("models/lit-llama-7m", q, "compressed-tensors", "ct-act", 1);
}

static void test_compressed_tensors_pack_quantized_sym_and_asym(void **s) {
    exact_roundtrip("models/lit-llama-7m", "quant.rtn<bits=4;group_size=128>", "compressed-tensors", "ct-asym", 1);
    exact_roundtrip("models/lit-llama-7m", "quant.rtn<bits=4;group_size=32;sym=true>", "compressed-tensors", "ct-sym", 1);
    exact_roundtrip("models/lit-llama-7m", "quant.rtn<bits=8;group_size=-1>", "compressed-tensors", "ct-8", 0);
    /* W4A8: the FP8-per-token activations travel in input_activations and come back (else the logits would differ) */
    exact_roundtrip("models/lit-llama-7m", "quant.rtn<bits=4;group_size=128;sym=true;activations=fp8>", "compressed-tensors", "ct-w4a8", 1);
}

/* A packed checkpoint's linears are copied into mopt's packed tensors at load, so the pages of the file they came
 * from are let go: the mapping keeps at most what stays in place (embeddings, norms), not a second copy of the
 * linears. And what was copied out still gives the in-process model's logits exactly. */
static void test_a_loaded_packed_checkpoint_keeps_no_second_copy_of_its_linears(void **s) {
    REQUIRE_SHARED();
    char src[1024], dir[1024], out[1100], path[1200];
    test_shared_path(src, sizeof src, "models/lit-llama-7m");
    test_tmpdir(dir, sizeof dir, "ct-rss");
    snprintf(out, sizeof out, "%s/q", dir);
    snprintf(path, sizeof path, "%s/model.safetensors", out);
    mopt_model *m = test_load_model(src);
    char text[2048];
    snprintf(text, sizeof text, "quant.rtn<bits=4;group_size=128>,export.hf<out=%s;format=compressed-tensors>", out);
    mopt_report_free(test_run_pipeline(m, text));
    mopt_model *e = test_load_model(out);
    const mopt_graph *g = mopt_model_graph(e);
    long long packed = 0;
    for (int32_t i = 0; i < mopt_graph_n_tensors(g); i++) {
        const mopt_tensor *t = mopt_graph_tensor(g, i);
        if (t->dtype == MOPT_DTYPE_QINT) packed += (long long)mopt_tensor_nbytes(t);
    }
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    const long long rss = test_mapped_rss(path);
    fprintf(stderr, "%s: %lld of its %lld bytes resident, %lld of them packed linears\n", path, rss, (long long)st.st_size, packed);
    assert_true(packed > st.st_size / 3);
    assert_true(rss >= 0 && rss <= st.st_size - packed + 64 * 1024);
    assert_true(test_max_logit_diff(m, e) == 0.0);
    mopt_model_free(e);
    mopt_model_free(m);
}

static void test_compressed_tensors_w8a8_and_fp8(void **s) {
    char q[2048];
    snprintf(q, sizeof q, "quant.smoothquant<alpha=0.5;calib=%s;calib_samples=4;calib_len=128>", calib);
    exact_roundtrip("models/lit-llama-7m", q, "compressed-tensors", "ct-w8a8", 1);
    exact_roundtrip("models/lit-llama-7m", "quant.fp8<activations=dynamic>", "compressed-tensors", "ct-fp8", 1);
    exact_roundtrip("models/lit-llama-7m", "quant.fp8<weights=per_tensor;activations=none>", "compressed-tensors", "ct-fp8w", 0);
    snprintf(q, sizeof q, "quant.fp8<activations=static;calib=%s;calib_samples=4;calib_len=128>", calib);
    exact_roundtrip("models/lit-llama-7m", q, "compressed-tensors", "ct-fp8s", 0);
}

static void test_modelopt_unified_w4a16_awq_and_fp8(void **s) {
    exact_roundtrip("models/lit-llama-7m", "quant.rtn<bits=4;group_size=128;sym=true>", "modelopt", "mo-int4", 1);
    char q[2048];
    snprintf(q, sizeof q, "quant.fp8<weights=per_tensor;activations=static;calib_samples=4;calib_len=128;calib=%s>", calib);
    exact_roundtrip("models/lit-llama-7m", q, "modelopt", "mo-fp8", 1);
    exact_roundtrip("models/lit-llama-7m", "quant.fp8<activations=dynamic>", "modelopt", "mo-fp8pc", 1);
}

/* W4A8_AWQ: the int4 values, their group scales and the two calibrated per-tensor scales (weight_scale_2, the FP8
 * scale the int4 values widen with, shared by q/k/v; input_scale, not 1.0) reload as they were (the same logits),
 * and the independent reader decodes the values with ModelOpt's second, FP8 quantizer. */
static void test_modelopt_unified_w4a8_awq(void **s) {
    char q[2048];
    snprintf(q, sizeof q, "quant.gptq<sym=true;activations=fp8_static;calib_samples=2;calib_len=64;calib=%s>", calib);
    exact_roundtrip("models/lit-llama-7m", q, "modelopt", "mo-w4a8", 1);
    char dir[1024], out[1100];
    test_tmpdir_path(dir, sizeof dir, "mo-w4a8");
    snprintf(out, sizeof out, "%s/q", dir);
    mopt_model *e = test_load_model(out);
    const mopt_graph *g = mopt_model_graph(e);
    const mopt_tensor *tq = mopt_graph_find_tensor(g, "model.layers.1.self_attn.q_proj.weight"),
                      *tk = mopt_graph_find_tensor(g, "model.layers.1.self_attn.k_proj.weight"),
                      *td = mopt_graph_find_tensor(g, "model.layers.1.mlp.down_proj.weight");
    assert_non_null(tq), assert_non_null(tk), assert_non_null(td);
    const uint32_t want = MOPT_QUANT_W_FP8 | MOPT_QUANT_ACT_STATIC | MOPT_QUANT_SYM;
    assert_int_equal(tq->quant->flags & want, want);
    assert_true(tq->quant->global_scale == tk->quant->global_scale && tq->quant->act_scale == tk->quant->act_scale);
    assert_true(tq->quant->act_scale != 1.0f && td->quant->act_scale != 1.0f && tq->quant->act_scale != td->quant->act_scale);
    mopt_model_free(e);
    /* a W4A8_AWQ linear whose weight_scale_2 is gone is refused by name */
    char cmd[4400];
    snprintf(cmd, sizeof cmd, "python3 - '%s/model.safetensors' <<'PY'\n"
                              "import json,struct,sys\n"
                              "p=sys.argv[1]; d=open(p,'rb').read(); n=struct.unpack('<Q',d[:8])[0]; h=json.loads(d[8:8+n])\n"
                              "k='model.layers.1.mlp.down_proj.weight_scale_2'; h[k+'_renamed']=h.pop(k)\n"
                              "b=json.dumps(h).encode(); b+=b' '*((8-len(b)%%8)%%8)\n"
                              "open(p,'wb').write(struct.pack('<Q',len(b))+b+d[8+n:])\n"
                              "PY",
             out);
    assert_int_equal(system(cmd), 0);
    mopt_error err = {0};
    assert_null(mopt_model_load(out, NULL, &err));
    CHECK_ERR(err, MOPT_E_FORMAT, "model.layers.1.mlp.down_proj: W4A8_AWQ needs weight_scale_2 and input_scale");
}

/* NVFP4 with its calibrated input_scale: the E2M1 pairs, E4M3 block scales and both global scales reload as they
 * were, and the independent reader decodes the values */
static void test_modelopt_unified_nvfp4(void **s) {
    char q[2048];
    snprintf(q, sizeof q, "quant.nvfp4<activations=static;calib_samples=4;calib_len=128;calib=%s>", calib);
    exact_roundtrip("models/lit-llama-7m", q, "modelopt", "mo-nvfp4", 1);
}

/* compressed-tensors' nvfp4-pack-quantized, weight-only (NVFP4A16) and with a calibrated global activation scale
 * (NVFP4): the global scales are stored inverted and read back as they were */
static void test_compressed_tensors_nvfp4(void **s) {
    exact_roundtrip("models/lit-llama-7m", "quant.nvfp4<activations=none>", "compressed-tensors", "ct-nvfp4a16", 1);
    char q[2048];
    snprintf(q, sizeof q, "quant.nvfp4<activations=static;calib_samples=4;calib_len=128;calib=%s>", calib);
    exact_roundtrip("models/lit-llama-7m", q, "compressed-tensors", "ct-nvfp4", 1);
    /* MXFP4 as mxfp4-pack-quantized: E2M1 pairs and E8M0 bytes, weight-only (MXFP4A16) and with activations per block */
    exact_roundtrip("models/lit-llama-7m", "quant.mxfp4<activations=none>", "compressed-tensors", "ct-mxfp4a16", 1);
    exact_roundtrip("models/lit-llama-7m", "quant.mxfp4", "compressed-tensors", "ct-mxfp4", 0);
    /* NVFP4_AWQ's scales are folded into the graph: it is NVFP4 to every reader */
    snprintf(q, sizeof q, "quant.awq<format=nvfp4;calib_samples=2;calib_len=64;calib=%s>", calib);
    exact_roundtrip("models/lit-llama-7m", q, "compressed-tensors", "ct-nvfp4-awq", 0);
}

/* lm_head quantized on request travels packed (compressed-tensors leaves it out of `ignore`, as vLLM then loads
 * it quantized) and reloads bit for bit; without the request it stays float and ignored. */
static void test_quantized_lm_head_exports_packed(void **s) {
    REQUIRE_SHARED();
    exact_roundtrip("models/lit-llama-7m", "quant.rtn<bits=8;group_size=-1;sym=true;lm_head=true>", "compressed-tensors", "ct-lm8", 1);
    exact_roundtrip("models/lit-llama-7m", "quant.nvfp4<activations=none;lm_head=true>", "compressed-tensors", "ct-lm-nvfp4", 1);
    for (int lm = 0; lm < 2; lm++) {
        char dir[1024], out[1100], text[2400], path[1200];
        test_tmpdir(dir, sizeof dir, "ct-lm-ignore");
        snprintf(out, sizeof out, "%s/q", dir);
        mopt_model *m = test_load_model("models/lit-llama-7m");
        snprintf(text, sizeof text, "quant.rtn<bits=4;group_size=128;sym=true;lm_head=%s>,export.hf<out=%s;format=compressed-tensors>",
                 lm ? "true" : "false", out);
        mopt_report_free(test_run_pipeline(m, text));
        mopt_model_free(m);
        snprintf(path, sizeof path, "%s/config.json", out);
        json_error_t je;
        json_t *j = json_load_file(path, 0, &je);
        json_t *ign = json_object_get(json_object_get(j, "quantization_config"), "ignore");
        assert_int_equal(json_array_size(ign), lm ? 0 : 1);
        json_decref(j);
        mopt_model *e = test_load_model(out);
        const mopt_graph *g = mopt_model_graph(e);
        const mopt_tensor *head = mopt_graph_node(g, mopt_graph_find_node(g, MOPT_ROLE_LM_HEAD, -1))->weight;
        assert_int_equal(head->dtype == MOPT_DTYPE_QINT, lm);
        mopt_model_free(e);
    }
}

static void test_modelopt_scheme_read_from_hf_quant_config_alone(void **s) {
    REQUIRE_SHARED();
    char dir[1024], out[1100], text[2400], path[1200];
    test_tmpdir(dir, sizeof dir, "mo-side");
    snprintf(out, sizeof out, "%s/q", dir);
    mopt_model *m = test_load_model("models/lit-llama-7m");
    snprintf(text, sizeof text, "quant.rtn<bits=4;group_size=64;sym=true>,export.hf<out=%s;format=modelopt>", out);
    mopt_report_free(test_run_pipeline(m, text));
    snprintf(path, sizeof path, "%s/config.json", out); /* older exports: no quantization_config in config.json */
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    json_object_del(j, "quantization_config");
    assert_int_equal(json_dump_file(j, path, 0), 0);
    json_decref(j);
    mopt_model *e = test_load_model(out);
    assert_true(test_max_logit_diff(m, e) == 0.0);
    mopt_model_free(e);
    mopt_model_free(m);
}

static void test_llama2c_rope_rows_are_permuted_in_packed_form(void **s) {
    /* q/k rows move from llama2.c's interleaved RoPE order to HF's rotate-half order, scales and zeros with them */
    /* its MLP width 172 is not a multiple of 8: compressed-tensors pads the packed words. Interleaved and
     * rotate-half RoPE sum in another order, hence the dense export's 1e-4 rather than 0. */
    roundtrip_tol("models/stories260K/stories260K.bin", "quant.rtn<bits=4;group_size=32>", "compressed-tensors", "l2c-ct", 1, 1e-4);
    roundtrip_tol("models/stories260K/stories260K.bin", "quant.rtn<bits=4;group_size=32;sym=true;exclude=*mlp*>", "gptq",
                    "l2c-gptq", 1, 1e-4);
}

/* Sets the byte at `offset` into the data of tensor `name` of a safetensors file to `value`. */
static void poke_tensor_byte(const char *file, const char *name, size_t offset, uint8_t value) {
    size_t n;
    uint8_t *d = read_whole(file, &n);
    assert_non_null(d);
    uint64_t hlen;
    memcpy(&hlen, d, 8);
    json_error_t je;
    json_t *h = json_loadb((const char *)d + 8, (size_t)hlen, 0, &je);
    assert_non_null(h);
    json_t *offs = json_object_get(json_object_get(h, name), "data_offsets");
    assert_non_null(offs);
    d[8 + hlen + (size_t)json_integer_value(json_array_get(offs, 0)) + offset] = value;
    write_file(file, d, n);
    json_decref(h);
    free(d);
}

/* lit-llama-7m through `pipeline`, exported as Hugging Face (auto format) to a new folder named after tag: out. */
static void export_lit_llama(const char *pipeline, const char *tag, char *out, size_t cap) {
    char dir[1024], text[2400];
    test_tmpdir(dir, sizeof dir, tag);
    snprintf(out, cap, "%s/q", dir);
    mopt_model *m = test_load_model("models/lit-llama-7m");
    snprintf(text, sizeof text, "%s,export.hf<out=%s>", pipeline, out);
    mopt_report_free(test_run_pipeline(m, text));
    mopt_model_free(m);
}

static void test_compressed_tensors_sparse_24_bitmask(void **s) {
    /* packed 2:4 weights export as sparse-24-bitmask and load back into the same packed weights */
    exact_roundtrip("models/lit-llama-7m", "prune.magnitude<pattern=2:4;pack=true>", "compressed-tensors", "ct-24", 1);
    /* int8 values (W8A8 2:4, as vLLM's CUTLASS kernels load it): I8 .compressed and a weight_scale per row */
    exact_roundtrip("models/lit-llama-7m", "prune.magnitude<pattern=2:4;pack=true;values=int8>", "compressed-tensors", "ct-24-i8", 1);
    /* llama2.c's q/k rows move to rotate-half order with their bitmasks (its FFN of 172 is no multiple of 8: kept dense) */
    roundtrip_tol("models/stories260K/stories260K.bin", "prune.magnitude<pattern=2:4;pack=true;exclude=*mlp*>", "compressed-tensors",
                  "l2c-24", 1, 1e-4);
    /* scales move with their rows (the reader checks the weights exactly). The two RoPE orders' 1e-7 differences in
     * the attention output can flip a per-token int8 level of o_proj's input, hence a looser logit bound (measured 0.017) */
    roundtrip_tol("models/stories260K/stories260K.bin", "prune.magnitude<pattern=2:4;pack=true;values=int8;exclude=*mlp*>",
                  "compressed-tensors", "l2c-24-i8", 1, 0.05);
    char out[1100], file[1200];
    export_lit_llama("prune.magnitude<pattern=2:4;pack=true>", "ct-24-bad", out, sizeof out);
    mopt_error err = {0};
    mopt_model *back = mopt_model_load(out, NULL, &err);
    assert_non_null(back);
    assert_int_equal(mopt_graph_find_tensor(mopt_model_graph(back), "model.layers.3.mlp.up_proj.weight")->dtype, MOPT_DTYPE_SP24);
    mopt_model_free(back);
    /* a group of four with three kept inputs is no 2:4 */
    snprintf(file, sizeof file, "%s/model.safetensors", out);
    poke_tensor_byte(file, "model.layers.0.mlp.down_proj.bitmask", 5, 0x07);
    assert_null(mopt_model_load(out, NULL, &err));
    CHECK_ERR(err, MOPT_E_FORMAT, "keep 3 values, not 2 of 4");
    /* another sparsity compressor */
    char path[1200];
    snprintf(path, sizeof path, "%s/config.json", out);
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    json_object_set_new(json_object_get(json_object_get(j, "quantization_config"), "sparsity_config"), "format", json_string("sparse-bitmask"));
    json_dump_file(j, path, 0);
    json_decref(j);
    assert_null(mopt_model_load(out, NULL, &err));
    CHECK_ERR(err, MOPT_E_UNSUPPORTED, "sparsity_config.format");
}

/* 2:4 with int4 values exports as compressed-tensors marlin-24 (vLLM's W4A16
 * 2:4 kernel), which the independent reader decodes to the same weights and
 * mopt loads back into the same packed weights; metadata that is no 2:4
 * encoding and a marlin-24 config of another width are refused. */
static void test_compressed_tensors_marlin_24(void **s) {
    exact_roundtrip("models/lit-llama-7m", "prune.magnitude<pattern=2:4;pack=true;values=int4>", "compressed-tensors", "ct-m24", 1);
    char out[1100], file[1200], path[1200];
    export_lit_llama("prune.magnitude<pattern=2:4;pack=true;values=int4>", "ct-m24-bad", out, sizeof out);
    mopt_error err = {0};
    mopt_model *back = mopt_model_load(out, NULL, &err);
    assert_non_null(back);
    const mopt_tensor *t = mopt_graph_find_tensor(mopt_model_graph(back), "model.layers.3.mlp.down_proj.weight");
    assert_int_equal(t->dtype, MOPT_DTYPE_SP24);
    assert_true(t->quant->flags & MOPT_QUANT_VALUES_I4);
    assert_int_equal(t->quant->group_size, 128);
    mopt_model_free(back);
    snprintf(path, sizeof path, "%s/config.json", out);
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je), *w = json_object_get(
        json_object_get(json_object_get(json_object_get(j, "quantization_config"), "config_groups"), "group_0"), "weights");
    json_object_set_new(w, "num_bits", json_integer(8));
    json_dump_file(j, path, 0);
    assert_null(mopt_model_load(out, NULL, &err));
    CHECK_ERR(err, MOPT_E_UNSUPPORTED, "marlin-24 is read for symmetric int4 weights");
    json_object_set_new(w, "num_bits", json_integer(4));
    json_dump_file(j, path, 0);
    json_decref(j);
    snprintf(file, sizeof file, "%s/model.safetensors", out);
    poke_tensor_byte(file, "model.layers.0.mlp.down_proj.meta", 0, 0x00); /* positions (0, 0): no pair */
    assert_null(mopt_model_load(out, NULL, &err));
    CHECK_ERR(err, MOPT_E_FORMAT, "is not a 2:4 encoding");
}

static void expect_refusal(const char *model_rel, const char *text_fmt, const char *msg) {
    char dir[1024], text[4096], out[1100];
    test_tmpdir(dir, sizeof dir, "refuse");
    snprintf(text, sizeof text, text_fmt, dir);
    test_pipeline_fails(model_rel, text, msg);
    snprintf(out, sizeof out, "%s/o", dir);
    struct stat st;
    assert_int_not_equal(stat(out, &st), 0); /* nothing written */
}

static void test_formats_refuse_what_they_cannot_hold(void **s) {
    REQUIRE_SHARED();
    expect_refusal("models/lit-llama-7m", "quant.rtn<bits=8>,export.hf<out=%s/o;format=awq>", "AWQ GEMM holds 4-bit weights only");
    expect_refusal("models/lit-llama-7m", "quant.rtn<bits=3>,export.hf<out=%s/o;format=gptq>", "3-bit");
    expect_refusal("models/lit-llama-7m", "quant.fp8,export.hf<out=%s/o;format=gptq>", "export as compressed-tensors");
    expect_refusal("models/lit-llama-7m", "export.hf<out=%s/o;format=gptq>", "needs a quantized model");
    expect_refusal("models/lit-llama-7m", "prune.magnitude<pattern=2:4;pack=true>,export.hf<out=%s/o;format=gptq>",
                   "2:4 packed weights export as compressed-tensors (sparse-24-bitmask, or marlin-24 for int4 values) or dense");
    expect_refusal("models/lit-llama-7m", "quant.rtn<bits=4>,export.hf<out=%s/o;format=modelopt>", "sym=true");
    expect_refusal("models/lit-llama-7m", "quant.nvfp4,export.hf<out=%s/o;format=modelopt>", "NVFP4 exports as ModelOpt");
    expect_refusal("models/lit-llama-7m", "quant.rtn<sym=true;activations=fp8>,export.hf<out=%s/o;format=modelopt>",
                   "W4A8 (integer weights with FP8 activations per token) exports as compressed-tensors");
    expect_refusal("models/lit-llama-7m", "quant.mxfp8,export.hf<out=%s/o;format=compressed-tensors>", "MXFP8 exports dense");
    char w4a8[2048];
    snprintf(w4a8, sizeof w4a8, "quant.gptq<sym=true;activations=fp8_static;calib=%s;calib_samples=1;calib_len=32>,"
                                "export.hf<out=%%s/o;format=compressed-tensors>", calib);
    expect_refusal("models/lit-llama-7m", w4a8, "W4A8_AWQ (int4 weights widened to FP8, static FP8 activations) exports as ModelOpt's");
    expect_refusal("models/lit-llama-7m", "quant.rtn<sym=true;activations=fp8_static>,export.hf<out=%s/o;format=modelopt>",
                   "activations=fp8_static calibrates its scales on data: use quant.awq or quant.gptq");
    expect_refusal("models/lit-llama-7m", "quant.mxfp4,export.hf<out=%s/o;format=modelopt>", "MXFP4 as compressed-tensors");
    expect_refusal("models/lit-llama-7m", "quant.nvfp4,export.hf<out=%s/o;format=compressed-tensors>", "static activations or none");
    /* GPT-2 fuses q/k/v into one Conv1D c_attn in Hugging Face's layout: no packing holds that */
    expect_refusal("models/lit-gpt2-1m", "quant.rtn,export.hf<out=%s/o;format=gptq>", "transformer.h.0.attn.c_attn.weight is fused or Conv1D");
    expect_refusal("models/stories260K/stories260K.bin", "quant.rtn<group_size=32>,export.hf<out=%s/o;format=awq>", "divisible by 8");
}

/* Sets quantization_config[key] in an exported config.json. */
static void corrupt_config(const char *dir, const char *key, json_t *value) {
    char path[1200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    assert_non_null(j);
    json_object_set_new(json_object_get(j, "quantization_config"), key, value);
    assert_int_equal(json_dump_file(j, path, 0), 0);
    json_decref(j);
}

static void test_bad_quantized_checkpoints_are_refused(void **s) {
    REQUIRE_SHARED();
    char dir[1024], out[1100], text[2400];
    test_tmpdir(dir, sizeof dir, "hfq-bad");
    snprintf(out, sizeof out, "%s/q", dir);
    mopt_model *m = test_load_model("models/lit-llama-7m");
    snprintf(text, sizeof text, "quant.rtn<bits=4;group_size=128>,export.hf<out=%s;format=gptq>", out);
    mopt_report_free(test_run_pipeline(m, text));
    mopt_model_free(m);
    mopt_error err = {0};
    /* group size that does not match the stored groups */
    corrupt_config(out, "group_size", json_integer(64));
    assert_null(mopt_model_load(out, NULL, &err));
    CHECK_ERR(err, MOPT_E_FORMAT, "qzeros");
    corrupt_config(out, "group_size", json_integer(128));
    corrupt_config(out, "bits", json_integer(3));
    assert_null(mopt_model_load(out, NULL, &err));
    CHECK_ERR(err, MOPT_E_UNSUPPORTED, "GPTQ with 3 bits");
    corrupt_config(out, "bits", json_integer(4));
    corrupt_config(out, "checkpoint_format", json_string("gptq_v2"));
    assert_null(mopt_model_load(out, NULL, &err));
    CHECK_ERR(err, MOPT_E_UNSUPPORTED, "checkpoint_format");
    corrupt_config(out, "checkpoint_format", json_null()); /* found by fuzz_checkpoint_dir: null is the default, not NULL */
    mopt_model *ok = mopt_model_load(out, NULL, &err);
    assert_non_null(ok);
    mopt_model_free(ok);
    corrupt_config(out, "checkpoint_format", json_string("gptq"));
    corrupt_config(out, "quant_method", json_string("bitsandbytes"));
    assert_null(mopt_model_load(out, NULL, &err));
    CHECK_ERR(err, MOPT_E_UNSUPPORTED, "quant_method");
    /* packed tensors without a quantization_config */
    char path[1200];
    snprintf(path, sizeof path, "%s/config.json", out);
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    json_object_del(j, "quantization_config");
    json_dump_file(j, path, 0);
    json_decref(j);
    assert_null(mopt_model_load(out, NULL, &err));
    CHECK_ERR(err, MOPT_E_FORMAT, "no quantization_config");
    /* a config that names NVFP4 over int4 words, and NVFP4 activations of another kind */
    snprintf(out, sizeof out, "%s/ct", dir);
    m = test_load_model("models/lit-llama-7m");
    snprintf(text, sizeof text, "quant.rtn<bits=4;group_size=128;sym=true>,export.hf<out=%s;format=compressed-tensors>", out);
    mopt_report_free(test_run_pipeline(m, text));
    mopt_model_free(m);
    snprintf(path, sizeof path, "%s/config.json", out);
    j = json_load_file(path, 0, &je);
    json_t *qc = json_object_get(j, "quantization_config"), *w = json_object_get(json_object_get(json_object_get(qc, "config_groups"), "group_0"), "weights");
    json_object_set_new(qc, "format", json_string("nvfp4-pack-quantized"));
    json_object_set_new(w, "type", json_string("float"));
    json_object_set_new(w, "group_size", json_integer(16));
    json_dump_file(j, path, 0);
    assert_null(mopt_model_load(out, NULL, &err));
    CHECK_ERR(err, MOPT_E_FORMAT, "NVFP4 needs weight_packed U8 [out, in/2]");
    json_object_set_new(json_object_get(json_object_get(qc, "config_groups"), "group_0"), "input_activations",
                        json_pack("{s:i, s:s, s:i, s:b}", "num_bits", 4, "type", "float", "group_size", 16, "dynamic", 1));
    json_dump_file(j, path, 0);
    json_decref(j);
    assert_null(mopt_model_load(out, NULL, &err));
    CHECK_ERR(err, MOPT_E_UNSUPPORTED, "static global scale");
}

/* The KV scales of every layer, K then V, as the model holds them (0 for a float cache). */
static void kv_scales_of(const mopt_model *m, float *ks, float *vs, int32_t *fmt) {
    const mopt_graph *g = mopt_model_graph(m);
    for (int32_t l = 0; l < mopt_graph_arch(g)->n_layers; l++) {
        const mopt_kv_quant q = mopt_graph_kv_quant(g, l);
        fmt[l] = q.format;
        ks[l] = q.format ? q.k_scale[0] : 0;
        vs[l] = q.format ? q.v_scale[0] : 0;
    }
}

/* A calibrated FP8 KV cache travels as ModelOpt's k_scale / v_scale (kv_cache_quant_algo FP8) and as
 * compressed-tensors' output_scale (kv_cache_scheme), over packed int4 weights and over float ones: the scales
 * reload bit for bit (they are the calibrated ones, not 1.0), so the logits are identical; without them the
 * reloaded cache would be float and the logits would differ. */
static void test_fp8_kv_cache_scales_export_and_reload(void **s) {
    REQUIRE_SHARED();
    const char *formats[] = {"modelopt", "compressed-tensors", "compressed-tensors", "modelopt"};
    const char *weights[] = {"quant.rtn<bits=4;group_size=128;sym=true>,", "quant.rtn<bits=4;group_size=128;sym=true>,", "", ""};
    for (int k = 0; k < 4; k++) {
        char dir[1024], out[1100], text[4096];
        test_tmpdir(dir, sizeof dir, "kv-fp8");
        snprintf(out, sizeof out, "%s/q", dir);
        mopt_model *m = test_load_model("models/lit-llama-7m");
        snprintf(text, sizeof text, "%squant.kv<calib=%s;calib_samples=4;calib_len=128>,export.hf<out=%s;format=%s>", weights[k], calib,
                 out, formats[k]);
        mopt_report_free(test_run_pipeline(m, text));
        mopt_model *e = test_load_model(out);
        float ks[2][64], vs[2][64];
        int32_t f[2][64];
        kv_scales_of(m, ks[0], vs[0], f[0]);
        kv_scales_of(e, ks[1], vs[1], f[1]);
        const int32_t L = mopt_graph_arch(mopt_model_graph(m))->n_layers;
        for (int32_t l = 0; l < L; l++) {
            assert_int_equal(f[0][l], MOPT_KV_FP8);
            assert_int_equal(f[1][l], MOPT_KV_FP8);
            assert_true(ks[0][l] != 1.0f && vs[0][l] != 1.0f && ks[0][l] != vs[0][l]);
            assert_memory_equal(&ks[0][l], &ks[1][l], sizeof(float));
            assert_memory_equal(&vs[0][l], &vs[1][l], sizeof(float));
        }
        const double d = test_max_logit_diff(m, e);
        fprintf(stderr, "fp8 KV cache %sas %s: max |logit diff| %.3g\n", weights[k], formats[k], d);
        assert_true(d == 0.0);
        mopt_model_free(e);
        mopt_model_free(m);
    }
}

/* What the formats cannot hold is refused, naming what can; corrupt KV scales are refused on import. */
static void test_kv_cache_exports_refuse_what_they_cannot_hold(void **s) {
    REQUIRE_SHARED();
    char fmt[2048];
    snprintf(fmt, sizeof fmt, "quant.kv<format=int8;calib=%s;calib_samples=2;calib_len=64>,export.hf<out=%%s/o;format=compressed-tensors>", calib);
    expect_refusal("models/lit-llama-7m", fmt, "vLLM reads FP8 KV caches only");
    snprintf(fmt, sizeof fmt, "quant.kv<granularity=head;calib=%s;calib_samples=2;calib_len=64>,export.hf<out=%%s/o;format=modelopt>", calib);
    expect_refusal("models/lit-llama-7m", fmt, "store one per layer (quant.kv granularity=tensor)");
    snprintf(fmt, sizeof fmt, "quant.rtn,quant.kv<calib=%s;calib_samples=2;calib_len=64>,export.hf<out=%%s/o;format=awq>", calib);
    expect_refusal("models/lit-llama-7m", fmt, "AutoAWQ and AutoGPTQ configs have no KV-cache scheme");
    snprintf(fmt, sizeof fmt, "quant.kv<calib=%s;calib_samples=2;calib_len=64>,export.hf<out=%%s/o;format=compressed-tensors>", calib);
    expect_refusal("models/lit-gpt2-1m", fmt, "fuses q, k and v");

    char dir[1024], out[1100], text[2400], path[1200];
    test_tmpdir(dir, sizeof dir, "kv-bad");
    snprintf(out, sizeof out, "%s/q", dir);
    mopt_model *m = test_load_model("models/lit-llama-7m");
    snprintf(text, sizeof text, "quant.rtn<sym=true>,quant.kv<calib=%s;calib_samples=2;calib_len=64>,export.hf<out=%s;format=modelopt>",
             calib, out);
    mopt_report_free(test_run_pipeline(m, text));
    mopt_model_free(m);
    snprintf(path, sizeof path, "%s/model.safetensors", out);
    mopt_error err = {0};
    poke_tensor_byte(path, "model.layers.3.self_attn.k_proj.k_scale", 3, 0xbf); /* a negative scale */
    assert_null(mopt_model_load(out, NULL, &err));
    CHECK_ERR(err, MOPT_E_INVALID, "finite and positive");
    poke_tensor_byte(path, "model.layers.3.self_attn.k_proj.k_scale", 3, 0x3c);
    m = mopt_model_load(out, NULL, &err);
    assert_non_null(m);
    mopt_model_free(m);
    snprintf(path, sizeof path, "%s/hf_quant_config.json", out);
    unlink(path);
    corrupt_config(out, "kv_cache_quant_algo", json_string("NVFP4"));
    assert_null(mopt_model_load(out, NULL, &err));
    CHECK_ERR(err, MOPT_E_UNSUPPORTED, "kv_cache_quant_algo \"NVFP4\"");
    corrupt_config(out, "kv_cache_quant_algo", json_null()); /* no KV scheme: the scale tensors are nobody's */
    assert_null(mopt_model_load(out, NULL, &err));
    CHECK_ERR(err, MOPT_E_FORMAT, "k_scale");

    snprintf(out, sizeof out, "%s/ct", dir);
    m = test_load_model("models/lit-llama-7m");
    snprintf(text, sizeof text, "quant.kv<calib=%s;calib_samples=2;calib_len=64>,export.hf<out=%s;format=compressed-tensors>", calib, out);
    mopt_report_free(test_run_pipeline(m, text));
    mopt_model_free(m);
    corrupt_config(out, "kv_cache_scheme", json_pack("{s:i, s:s, s:s}", "num_bits", 8, "type", "float", "strategy", "channel"));
    assert_null(mopt_model_load(out, NULL, &err));
    CHECK_ERR(err, MOPT_E_UNSUPPORTED, "kv_cache_scheme");
}

/* Sets quantization_config.config_groups.<first>.weights[key] (or input_activations[key]). */
static void corrupt_scheme(const char *dir, const char *part, const char *key, json_t *value) {
    char path[1200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    assert_non_null(j);
    json_t *groups = json_object_get(json_object_get(j, "quantization_config"), "config_groups");
    const char *k;
    json_t *g, *target = NULL;
    json_object_foreach(groups, k, g) if (!target) target = json_object_get(g, part);
    assert_non_null(target);
    if (value) json_object_set_new(target, key, value);
    else json_object_del(target, key);
    assert_int_equal(json_dump_file(j, path, 0), 0);
    json_decref(j);
}

/* compressed-tensors schemes mopt would read wrongly are refused, not guessed at. */
static void test_compressed_tensors_schemes_mopt_cannot_read_are_refused(void **s) {
    REQUIRE_SHARED();
    char dir[1024], out[1100], text[2400], path[1200];
    test_tmpdir(dir, sizeof dir, "ct-bad");
    snprintf(out, sizeof out, "%s/q", dir);
    mopt_model *m = test_load_model("models/lit-llama-7m");
    snprintf(text, sizeof text, "quant.rtn<bits=4;group_size=128>,export.hf<out=%s;format=compressed-tensors>", out);
    mopt_report_free(test_run_pipeline(m, text));
    mopt_model_free(m);
    mopt_error err = {0};
    static const struct {
        const char *part, *key, *json, *msg;
    } cases[] = {{"weights", "strategy", "\"block\"", "weights.strategy \"block\" is not supported"},
                 {"weights", "type", "\"mxfp\"", "weights.type \"mxfp\" is not supported"},
                 {"weights", "group_size", "0", "weights.group_size 0 is not a usable group size"},
                 {"weights", "group_size", "1099511627776", "weights.group_size 1099511627776 is not a usable group size"},
                 {"weights", "group_size", "null", "strategy is \"group\" but group_size is not set"},
                 {"weights", "num_bits", "16", "num_bits 16 is not supported"}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        json_error_t je;
        json_t *v = json_loads(cases[i].json, JSON_DECODE_ANY, &je);
        snprintf(path, sizeof path, "%s/config.json", out);
        json_t *orig = json_load_file(path, 0, &je);
        corrupt_scheme(out, cases[i].part, cases[i].key, v);
        assert_null(mopt_model_load(out, NULL, &err));
        assert_true(err.code == MOPT_E_FORMAT || err.code == MOPT_E_UNSUPPORTED);
        CHECK_ERR(err, err.code, cases[i].msg);
        assert_int_equal(json_dump_file(orig, path, 0), 0); /* restore */
        json_decref(orig);
    }
    /* found by fuzz_checkpoint_dir: packed words read under another scheme, or with a bit width CT does not pack */
    snprintf(path, sizeof path, "%s/config.json", out);
    json_error_t je;
    json_t *orig = json_load_file(path, 0, &je);
    corrupt_config(out, "quant_method", json_string("modelopt"));
    corrupt_config(out, "quant_algo", json_string("W4A16_AWQ"));
    assert_null(mopt_model_load(out, NULL, &err));
    CHECK_ERR(err, MOPT_E_FORMAT, "weight_packed is a compressed-tensors packed weight, but");
    assert_int_equal(json_dump_file(orig, path, 0), 0);
    corrupt_config(out, "format", json_null());
    corrupt_scheme(out, "weights", "num_bits", json_integer(3));
    assert_null(mopt_model_load(out, NULL, &err));
    CHECK_ERR(err, MOPT_E_UNSUPPORTED, "pack-quantized with 3 bits");
    assert_int_equal(json_dump_file(orig, path, 0), 0);
    json_decref(orig);
    /* an asymmetric scheme whose zero points are gone */
    char cmd[4400];
    snprintf(cmd, sizeof cmd, "python3 - '%s/model.safetensors' <<'PY'\n"
                              "import json,struct,sys\n"
                              "p=sys.argv[1]; d=open(p,'rb').read(); n=struct.unpack('<Q',d[:8])[0]; h=json.loads(d[8:8+n])\n"
                              "for k in list(h):\n"
                              "    if k.endswith('.weight_zero_point'): h[k.replace('weight_zero_point','zp_renamed')]=h.pop(k)\n"
                              "b=json.dumps(h).encode(); b+=b' '*((8-len(b)%%8)%%8)\n"
                              "open(p,'wb').write(struct.pack('<Q',len(b))+b+d[8+n:])\n"
                              "PY",
             out);
    assert_int_equal(system(cmd), 0);
    assert_null(mopt_model_load(out, NULL, &err));
    CHECK_ERR(err, MOPT_E_FORMAT, "asymmetric (symmetric: false) but");
    assert_non_null(strstr(err.msg, "weight_zero_point is missing"));
}

static void test_quantize_cli_writes_the_checkpoint(void **s) {
    REQUIRE_SHARED();
    char dir[1024], cmd[8192];
    test_tmpdir(dir, sizeof dir, "hfq-cli");
    snprintf(cmd, sizeof cmd, "%s quantize '%s/models/lit-llama-7m' --method rtn --bits 4 -o '%s/q' --format gptq --quiet > /dev/null",
             MOPT_CLI, test_shared_dir(), dir);
    assert_int_equal(system(cmd), 0);
    char path[1200];
    snprintf(path, sizeof path, "%s/q/config.json", dir);
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    assert_non_null(j);
    json_t *qc = json_object_get(j, "quantization_config");
    assert_string_equal(json_string_value(json_object_get(qc, "quant_method")), "gptq");
    assert_int_equal(json_integer_value(json_object_get(qc, "bits")), 4);
    assert_int_equal(json_integer_value(json_object_get(qc, "group_size")), 128);
    json_decref(j);
    /* the target exists now: refused without --force */
    int st = system(cmd);
    assert_int_equal(WEXITSTATUS(st), 2);
    snprintf(cmd, sizeof cmd, "%s quantize '%s/models/lit-llama-7m' --method rtn -o '%s/q2' --format nope --quiet 2>&1 | grep -q 'format nope is not known'",
             MOPT_CLI, test_shared_dir(), dir);
    assert_int_equal(system(cmd), 0);
    /* --kv-cache: quant.kv after the weights, on the calibration text; the export carries the cache format */
    snprintf(cmd, sizeof cmd,
             "%s quantize '%s/models/lit-llama-7m' --method rtn --sym --kv-cache fp8 --calib '%s' --calib-samples 2 --calib-len 64 -o '%s/kv' "
             "--format hf --quiet | grep -q 'quant.kv: fp8 KV cache, 8192 -> 2048 bytes per token' && %s info '%s/kv' --json | grep -q "
             "'\"kv_cache\": \"fp8\"'",
             MOPT_CLI, test_shared_dir(), calib, dir, MOPT_CLI, dir);
    assert_int_equal(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "quantize '%s/models/lit-llama-7m' --kv-cache fp8", test_shared_dir());
    test_cli_refuses(cmd, 2, "--kv-cache calibrates the K and V scales: give --calib FILE", NULL);
}

int main(void) {
    snprintf(calib, sizeof calib, "%s/data/lit-train.txt", test_shared_dir());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_awq_gemm_roundtrip_is_exact),
        cmocka_unit_test(test_awq_pass_exports_as_awq),
        cmocka_unit_test(test_gptq_v1_roundtrip_is_exact_for_2_4_8_bits),
        cmocka_unit_test(test_gptq_act_order_keeps_g_idx),
        cmocka_unit_test(test_compressed_tensors_pack_quantized_sym_and_asym),
        cmocka_unit_test(test_a_loaded_packed_checkpoint_keeps_no_second_copy_of_its_linears),
        cmocka_unit_test(test_compressed_tensors_w8a8_and_fp8),
        cmocka_unit_test(test_modelopt_unified_w4a16_awq_and_fp8),
        cmocka_unit_test(test_modelopt_unified_w4a8_awq),
        cmocka_unit_test(test_modelopt_unified_nvfp4),
        cmocka_unit_test(test_compressed_tensors_nvfp4),
        cmocka_unit_test(test_fp8_kv_cache_scales_export_and_reload),
        cmocka_unit_test(test_kv_cache_exports_refuse_what_they_cannot_hold),
        cmocka_unit_test(test_quantized_lm_head_exports_packed),
        cmocka_unit_test(test_modelopt_scheme_read_from_hf_quant_config_alone),
        cmocka_unit_test(test_llama2c_rope_rows_are_permuted_in_packed_form),
        cmocka_unit_test(test_compressed_tensors_sparse_24_bitmask),
        cmocka_unit_test(test_compressed_tensors_marlin_24),
        cmocka_unit_test(test_formats_refuse_what_they_cannot_hold),
        cmocka_unit_test(test_bad_quantized_checkpoints_are_refused),
        cmocka_unit_test(test_compressed_tensors_schemes_mopt_cannot_read_are_refused),
        cmocka_unit_test(test_quantize_cli_writes_the_checkpoint),
    };
    return test_run_tests(tests, test_registry_setup, test_registry_teardown);
}
