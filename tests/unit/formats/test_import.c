/* Importers: sharded and single-file HF checkpoints, config variants, GPT-2
 * Conv1D handling, llama2.c headers, and every malformed input the issue lists
 * (each must fail with MOPT_E_FORMAT/UNSUPPORTED and a message naming the file
 * and the problem, never crash). */
#include <math.h>

#include "st_writer.h"
#include "testutil.h"

/* --- a tiny LLaMA written from scratch ---------------------------------------- */

enum { TD = 8, TF = 16, TV = 32, TH = 2, TKV = 1, THD = 4 };

typedef struct tiny {
    float embed[TV * TD], norm1[TD], q[TD * TD], k[TKV * THD * TD], v[TKV * THD * TD], o[TD * TD], norm2[TD];
    float gate[TF * TD], up[TF * TD], down[TD * TF], norm[TD], head[TV * TD];
} tiny;

static void tiny_fill(tiny *t) {
    float *p = (float *)t;
    uint32_t s = 12345;
    for (size_t i = 0; i < sizeof *t / sizeof(float); i++) {
        s = s * 1664525u + 1013904223u;
        p[i] = ((float)(s >> 8) / 16777216.0f - 0.5f) * 0.5f;
    }
    for (int i = 0; i < TD; i++) t->norm1[i] = t->norm2[i] = t->norm[i] = 1.0f;
}

static const char *TINY_CONFIG =
    "{\"model_type\": \"llama\", \"hidden_size\": 8, \"num_hidden_layers\": 1, \"num_attention_heads\": 2,\n"
    " \"num_key_value_heads\": 1, \"head_dim\": 4, \"intermediate_size\": 16, \"vocab_size\": 32,\n"
    " \"max_position_embeddings\": 16, \"rms_norm_eps\": 1e-5, \"rope_theta\": 10000.0}\n";

/* Writes a tiny model into dir; `drop` omits that tensor, `bad_dtype` writes it with that dtype. */
static void tiny_write(const char *dir, const char *config, const char *drop, const char *bad_dtype) {
    static tiny t;
    tiny_fill(&t);
    st_item items[] = {
        {"model.embed_tokens.weight", "F32", 2, {TV, TD}, t.embed, sizeof t.embed},
        {"model.layers.0.input_layernorm.weight", "F32", 1, {TD}, t.norm1, sizeof t.norm1},
        {"model.layers.0.self_attn.q_proj.weight", "F32", 2, {TD, TD}, t.q, sizeof t.q},
        {"model.layers.0.self_attn.k_proj.weight", "F32", 2, {TKV * THD, TD}, t.k, sizeof t.k},
        {"model.layers.0.self_attn.v_proj.weight", "F32", 2, {TKV * THD, TD}, t.v, sizeof t.v},
        {"model.layers.0.self_attn.o_proj.weight", "F32", 2, {TD, TD}, t.o, sizeof t.o},
        {"model.layers.0.post_attention_layernorm.weight", "F32", 1, {TD}, t.norm2, sizeof t.norm2},
        {"model.layers.0.mlp.gate_proj.weight", "F32", 2, {TF, TD}, t.gate, sizeof t.gate},
        {"model.layers.0.mlp.up_proj.weight", "F32", 2, {TF, TD}, t.up, sizeof t.up},
        {"model.layers.0.mlp.down_proj.weight", "F32", 2, {TD, TF}, t.down, sizeof t.down},
        {"model.norm.weight", "F32", 1, {TD}, t.norm, sizeof t.norm},
        {"lm_head.weight", "F32", 2, {TV, TD}, t.head, sizeof t.head},
    };
    int n = 0;
    st_item kept[16];
    for (size_t i = 0; i < sizeof items / sizeof *items; i++) {
        if (drop && !strcmp(items[i].name, drop)) continue;
        kept[n] = items[i];
        if (bad_dtype && i == 0) kept[n].dtype = bad_dtype;
        n++;
    }
    char path[1200];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    st_write(path, kept, n, "\"__metadata__\":{\"format\":\"pt\"}");
    snprintf(path, sizeof path, "%s/config.json", dir);
    write_file(path, config, strlen(config));
}

static mopt_error load_fail(const char *path) {
    mopt_error err = {0};
    mopt_model *m = mopt_model_load(path, NULL, &err);
    if (m) fprintf(stderr, "%s loaded but should not have\n", path);
    assert_null(m);
    fprintf(stderr, "  expected failure: %s\n", err.msg);
    return err;
}

static void test_tiny_model_loads_and_runs(void **s) {
    char dir[1024];
    test_tmpdir(dir, sizeof dir, "tiny");
    tiny_write(dir, TINY_CONFIG, NULL, NULL);
    mopt_error err = {0};
    mopt_model *m = mopt_model_load(dir, NULL, &err);
    if (!m) fprintf(stderr, "%s\n", err.msg);
    assert_non_null(m);
    /* structure is readable from the graph: the attention norm feeds q, k and v */
    const mopt_graph *g = mopt_model_graph(m);
    int32_t norm = mopt_graph_find_node(g, MOPT_ROLE_ATTN_NORM, 0);
    assert_true(norm >= 0);
    int32_t cons[8];
    assert_int_equal(mopt_graph_consumers(g, mopt_graph_node(g, norm)->output, cons, 8), 3);
    for (int i = 0; i < 3; i++) assert_int_equal(mopt_graph_node(g, cons[i])->op, MOPT_OP_LINEAR);
    mopt_session *se = mopt_session_new(g, NULL, &err);
    int32_t ids[3] = {1, 5, 7};
    const float *logits;
    assert_int_equal(mopt_session_forward(se, ids, 3, true, &logits, &err), MOPT_OK);
    for (int i = 0; i < 3 * TV; i++) assert_true(isfinite(logits[i]));
    /* a token outside the vocabulary is refused, not read out of bounds */
    int32_t bad = TV;
    assert_int_equal(mopt_session_forward(se, &bad, 1, false, &logits, &err), MOPT_E_INVALID);
    CHECK_ERR(err, MOPT_E_INVALID, "outside the vocabulary");
    mopt_session_free(se);
    mopt_model_free(m);
}

static void test_truncated_safetensors_is_refused(void **s) {
    char dir[1024], path[1200];
    test_tmpdir(dir, sizeof dir, "trunc");
    tiny_write(dir, TINY_CONFIG, NULL, NULL);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    write_file(path, "\x10\x00\x00", 3);
    mopt_error err = load_fail(dir);
    CHECK_ERR(err, MOPT_E_FORMAT, "truncated safetensors");
    assert_non_null(strstr(err.msg, "model.safetensors"));
}

static void test_header_length_beyond_file_is_refused(void **s) {
    char dir[1024], path[1200];
    test_tmpdir(dir, sizeof dir, "hdr");
    tiny_write(dir, TINY_CONFIG, NULL, NULL);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    unsigned char bytes[16] = {0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0, '{', '}'};
    write_file(path, bytes, sizeof bytes);
    mopt_error err = load_fail(dir);
    CHECK_ERR(err, MOPT_E_FORMAT, "runs past the end of the file");
}

static void test_tensor_bytes_past_end_are_refused(void **s) {
    char dir[1024], path[1200];
    test_tmpdir(dir, sizeof dir, "past");
    tiny_write(dir, TINY_CONFIG, NULL, NULL);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    size_t n;
    char *data = read_whole(path, &n);
    write_file(path, data, n - 100); /* cut into the last tensor */
    free(data);
    mopt_error err = load_fail(dir);
    CHECK_ERR(err, MOPT_E_FORMAT, "lm_head.weight: data runs past the end");
}

static void test_unknown_dtype_is_refused(void **s) {
    char dir[1024];
    test_tmpdir(dir, sizeof dir, "dtype");
    tiny_write(dir, TINY_CONFIG, NULL, "F8_E9M9");
    mopt_error err = load_fail(dir);
    CHECK_ERR(err, MOPT_E_UNSUPPORTED, "unknown dtype \"F8_E9M9\"");
}

static void test_missing_tensor_is_named(void **s) {
    char dir[1024];
    test_tmpdir(dir, sizeof dir, "missing");
    tiny_write(dir, TINY_CONFIG, "model.layers.0.mlp.up_proj.weight", NULL);
    mopt_error err = load_fail(dir);
    CHECK_ERR(err, MOPT_E_FORMAT, "missing tensor model.layers.0.mlp.up_proj.weight");
}

static void test_shape_disagreeing_with_config_is_named(void **s) {
    char dir[1024];
    test_tmpdir(dir, sizeof dir, "shape");
    char cfg[1024];
    snprintf(cfg, sizeof cfg, "%s", TINY_CONFIG);
    char *p = strstr(cfg, "\"intermediate_size\": 16");
    memcpy(p, "\"intermediate_size\": 12", 23);
    tiny_write(dir, cfg, NULL, NULL);
    mopt_error err = load_fail(dir);
    CHECK_ERR(err, MOPT_E_FORMAT, "gate_proj.weight has shape [16, 8] but config.json implies [12, 8]");
}

static void test_malformed_config_reports_line_and_column(void **s) {
    char dir[1024];
    test_tmpdir(dir, sizeof dir, "cfg");
    tiny_write(dir, "{\"model_type\": \"llama\",\n \"hidden_size\": 8,,\n}", NULL, NULL);
    mopt_error err = load_fail(dir);
    CHECK_ERR(err, MOPT_E_FORMAT, "config.json:2:");
}

static void test_missing_config_key_is_named(void **s) {
    char dir[1024];
    test_tmpdir(dir, sizeof dir, "key");
    tiny_write(dir, "{\"model_type\": \"llama\", \"hidden_size\": 8}", NULL, NULL);
    mopt_error err = load_fail(dir);
    CHECK_ERR(err, MOPT_E_FORMAT, "missing key \"num_hidden_layers\"");
}

static void test_unsupported_rope_scaling_is_refused(void **s) {
    char dir[1024], cfg[1024];
    test_tmpdir(dir, sizeof dir, "rope");
    snprintf(cfg, sizeof cfg, "%.*s, \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4}}",
             (int)(strrchr(TINY_CONFIG, '}') - TINY_CONFIG), TINY_CONFIG);
    tiny_write(dir, cfg, NULL, NULL);
    mopt_error err = load_fail(dir);
    CHECK_ERR(err, MOPT_E_UNSUPPORTED, "yarn");
}

/* Writes a safetensors file byte by byte: a header as given (padded to 8), then n data bytes. */
static void st_raw(const char *path, const char *header, size_t n) {
    size_t hl = strlen(header), padded = (hl + 7) / 8 * 8;
    unsigned char *b = calloc(1, 8 + padded + n);
    uint64_t h64 = padded;
    memcpy(b, &h64, 8);
    memcpy(b + 8, header, hl);
    memset(b + 8 + hl, ' ', padded - hl);
    write_file(path, b, 8 + padded + n);
    free(b);
}

/* The data region must be indexed whole and once, each tensor aligned to its
 * elements, as the reference reader requires: otherwise two readers could see
 * two different models in one file. */
static void test_safetensors_offsets_must_tile_the_data_region(void **s) {
    char dir[1024], path[1200];
    test_tmpdir(dir, sizeof dir, "tile");
    tiny_write(dir, TINY_CONFIG, NULL, NULL);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    static const struct {
        const char *header;
        size_t n;
        const char *msg;
    } cases[] = {
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
         "overlap tensor"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12,
         "overlap tensor"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 16, "leaving bytes 0..8 unindexed"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 24, "the tensors index 8 data bytes but the file holds 24"},
        {"{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[2,10]}}", 10,
         "tensor b: data offset 2 is not a multiple of its 4-byte elements"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        st_raw(path, cases[i].header, cases[i].n);
        mopt_error err = load_fail(dir);
        CHECK_ERR(err, MOPT_E_FORMAT, cases[i].msg);
        assert_non_null(strstr(err.msg, "model.safetensors"));
    }
}

/* Writes the tiny model plus `extra` tensors of one float each (and maybe a config). */
static void tiny_write_extra(const char *dir, const char *config, const char *const *extra) {
    tiny_write(dir, config, NULL, NULL);
    char path[1200];
    snprintf(path, sizeof path, "%s/extra.safetensors", dir);
    static const float one = 1.0f;
    st_item items[4];
    int n = 0;
    for (; extra[n]; n++) items[n] = (st_item){extra[n], "F32", 1, {1}, &one, sizeof one};
    st_write(path, items, n, NULL);
    snprintf(path, sizeof path, "%s/model.safetensors", dir); /* both files load: no index, no model.safetensors */
    char moved[1300];
    snprintf(moved, sizeof moved, "%s/a.safetensors", dir);
    assert_int_equal(rename(path, moved), 0);
}

static void test_tensors_the_architecture_does_not_use_are_refused(void **s) {
    char dir[1024];
    test_tmpdir(dir, sizeof dir, "unused");
    tiny_write_extra(dir, TINY_CONFIG, (const char *const[]){"model.layers.1.mlp.up_proj.weight", NULL});
    mopt_error err = load_fail(dir);
    CHECK_ERR(err, MOPT_E_FORMAT, "tensor model.layers.1.mlp.up_proj.weight is not used by a llama model of 1 layers");
    tiny_write_extra(dir, TINY_CONFIG, (const char *const[]){"vision_tower.proj.weight", NULL});
    err = load_fail(dir);
    CHECK_ERR(err, MOPT_E_FORMAT, "tensor vision_tower.proj.weight is not used");
    /* buffers older transformers saved are not weights: dropped, not refused */
    tiny_write_extra(dir, TINY_CONFIG, (const char *const[]){"model.layers.0.self_attn.rotary_emb.inv_freq", NULL});
    mopt_model *m = mopt_model_load(dir, NULL, &err);
    assert_non_null(m);
    assert_null(mopt_graph_find_tensor(mopt_model_graph(m), "model.layers.0.self_attn.rotary_emb.inv_freq"));
    mopt_model_free(m);
}

/* Writes the tiny model with `key` set to the JSON value text in its config. */
static void tiny_write_with(const char *dir, const char *key, const char *value) {
    char cfg[2048];
    snprintf(cfg, sizeof cfg, "%.*s, \"%s\": %s}", (int)(strrchr(TINY_CONFIG, '}') - TINY_CONFIG), TINY_CONFIG, key, value);
    char *dup = strstr(cfg, "\"rms_norm_eps\": 1e-5,"); /* a key given twice is a JSON error: drop the default one */
    if (!strcmp(key, "rms_norm_eps") && dup) memset(dup, ' ', strlen("\"rms_norm_eps\": 1e-5,"));
    tiny_write(dir, cfg, NULL, NULL);
}

static void test_absurd_config_numbers_are_refused(void **s) {
    char dir[1024];
    test_tmpdir(dir, sizeof dir, "absurd");
    static const char *const eps[] = {"0", "-1e-5", "5", "1e300"};
    for (size_t i = 0; i < sizeof eps / sizeof *eps; i++) {
        tiny_write_with(dir, "rms_norm_eps", eps[i]);
        mopt_error err = load_fail(dir);
        CHECK_ERR(err, MOPT_E_FORMAT, "norm epsilon");
        assert_non_null(strstr(err.msg, "is not in (0, 0.1]"));
    }
    tiny_write_with(dir, "bos_token_id", "32");
    mopt_error err = load_fail(dir);
    CHECK_ERR(err, MOPT_E_FORMAT, "BOS token id 32 is outside the vocabulary of 32");
    tiny_write_with(dir, "eos_token_id", "-7");
    err = load_fail(dir);
    CHECK_ERR(err, MOPT_E_FORMAT, "EOS token id -7 is outside the vocabulary");
}

/* --- the real lit model, resharded ------------------------------------------- */

static void test_sharded_checkpoint_and_rope_theta_key_give_identical_logits(void **s) {
    REQUIRE_SHARED();
    char src[1024], dir[1024], path[1300];
    mopt_error err = {0};
    mopt_model *m = mopt_model_load(test_shared_path(src, sizeof src, "models/lit-llama-7m"), NULL, &err);
    assert_non_null(m);
    const mopt_graph *g = mopt_model_graph(m);
    int nt = mopt_graph_n_tensors(g);
    st_item *items = calloc((size_t)nt, sizeof *items);
    for (int i = 0; i < nt; i++) {
        const mopt_tensor *t = mopt_graph_tensor(g, i);
        items[i].name = t->name;
        items[i].dtype = "BF16";
        items[i].ndim = t->ndim;
        for (int d = 0; d < t->ndim; d++) items[i].shape[d] = t->ne[t->ndim - 1 - d];
        items[i].data = t->data;
        items[i].nbytes = mopt_tensor_nbytes(t);
    }
    test_tmpdir(dir, sizeof dir, "shards");
    int half = nt / 2;
    snprintf(path, sizeof path, "%s/model-00001-of-00002.safetensors", dir);
    st_write(path, items, half, NULL);
    snprintf(path, sizeof path, "%s/model-00002-of-00002.safetensors", dir);
    st_write(path, items + half, nt - half, NULL);
    /* index */
    size_t cap = 64 + (size_t)nt * 160, len = 0;
    char *idx = malloc(cap);
    len += (size_t)snprintf(idx, cap, "{\"metadata\": {}, \"weight_map\": {");
    for (int i = 0; i < nt; i++)
        len += (size_t)snprintf(idx + len, cap - len, "%s\"%s\": \"model-0000%d-of-00002.safetensors\"", i ? "," : "",
                                items[i].name, i < half ? 1 : 2);
    len += (size_t)snprintf(idx + len, cap - len, "}}");
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    write_file(path, idx, len);
    /* config with the older top-level rope_theta instead of rope_parameters */
    size_t cl;
    char cfgsrc[1100];
    char *cfg = read_whole(test_shared_path(cfgsrc, sizeof cfgsrc, "models/lit-llama-7m/config.json"), &cl);
    char *rp = strstr(cfg, "\"rope_parameters\"");
    assert_non_null(rp);
    char *end = strchr(rp, '}');
    char newcfg[4096];
    snprintf(newcfg, sizeof newcfg, "%.*s\"rope_theta\": 10000.0%s", (int)(rp - cfg), cfg, end + 1);
    snprintf(path, sizeof path, "%s/config.json", dir);
    write_file(path, newcfg, strlen(newcfg));

    mopt_model *m2 = mopt_model_load(dir, NULL, &err);
    if (!m2) fprintf(stderr, "%s\n", err.msg);
    assert_non_null(m2);
    assert_int_equal(mopt_graph_n_params(mopt_model_graph(m2)), mopt_graph_n_params(g));
    int32_t ids[8] = {649, 538, 1587, 653, 31, 199, 199, 39};
    mopt_session *s1 = mopt_session_new(g, NULL, &err), *s2 = mopt_session_new(mopt_model_graph(m2), NULL, &err);
    const float *l1, *l2;
    assert_int_equal(mopt_session_forward(s1, ids, 8, true, &l1, &err), MOPT_OK);
    assert_int_equal(mopt_session_forward(s2, ids, 8, true, &l2, &err), MOPT_OK);
    assert_memory_equal(l1, l2, sizeof(float) * 8 * 2048);
    /* an index naming a tensor its shard lacks is refused */
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    const char *bad_index = "{\"weight_map\": {\"model.norm.weight\": \"model-00002-of-00002.safetensors\", "
                            "\"ghost\": \"model-00001-of-00002.safetensors\"}}";
    write_file(path, bad_index, strlen(bad_index));
    mopt_error e2 = load_fail(dir);
    CHECK_ERR(e2, MOPT_E_FORMAT, "ghost");
    mopt_session_free(s1);
    mopt_session_free(s2);
    mopt_model_free(m2);
    mopt_model_free(m);
    free(cfg);
    free(idx);
    free(items);
}

/* --- llama2.c ------------------------------------------------------------------ */

static void test_impossible_llama2c_header_is_refused(void **s) {
    char dir[1024], path[1200];
    test_tmpdir(dir, sizeof dir, "l2c");
    snprintf(path, sizeof path, "%s/model.bin", dir);
    int32_t hdr[7] = {64, 172, 5, 0, 4, 512, 512}; /* zero heads */
    write_file(path, hdr, sizeof hdr);
    mopt_error err = load_fail(path);
    CHECK_ERR(err, MOPT_E_FORMAT, "impossible llama2.c header: n_heads = 0");
    int32_t hdr2[7] = {64, 172, 5, 8, 3, 512, 512}; /* 8 heads over 3 KV heads */
    write_file(path, hdr2, sizeof hdr2);
    err = load_fail(path);
    CHECK_ERR(err, MOPT_E_FORMAT, "impossible llama2.c header");
    int32_t hdr4[7] = {64, 172, 5, 8, 4, INT32_MIN, 512}; /* found by test_fuzz: -vocab overflowed */
    write_file(path, hdr4, sizeof hdr4);
    err = load_fail(path);
    CHECK_ERR(err, MOPT_E_FORMAT, "impossible llama2.c header: vocab_size");
    int32_t hdr3[7] = {64, 172, 5, 8, 4, 512, 512}; /* sane header, no weights */
    write_file(path, hdr3, sizeof hdr3);
    err = load_fail(path);
    CHECK_ERR(err, MOPT_E_FORMAT, "truncated llama2.c checkpoint");
    write_file(path, hdr3, 10);
    err = load_fail(path);
    CHECK_ERR(err, MOPT_E_FORMAT, "too short");
}

static void test_llama2c_file_larger_than_its_header_is_refused(void **s) {
    REQUIRE_SHARED();
    char src[1024], dir[1024], path[1200];
    test_tmpdir(dir, sizeof dir, "l2c-big");
    size_t n;
    unsigned char *d = read_whole(test_shared_path(src, sizeof src, "models/stories260K/stories260K.bin"), &n);
    unsigned char *big = calloc(1, n + 64);
    memcpy(big, d, n);
    snprintf(path, sizeof path, "%s/model.bin", dir);
    write_file(path, big, n + 64);
    mopt_error err = load_fail(path);
    CHECK_ERR(err, MOPT_E_FORMAT, "oversized llama2.c checkpoint: the header implies");
    write_file(path, big, n + 2); /* not even whole floats */
    err = load_fail(path);
    CHECK_ERR(err, MOPT_E_FORMAT, "oversized llama2.c checkpoint");
    free(big);
    free(d);
}

static void test_llama2c_checkpoint_maps_weights_without_copying(void **s) {
    REQUIRE_SHARED();
    char path[1024];
    mopt_error err = {0};
    mopt_model *m = mopt_model_load(test_shared_path(path, sizeof path, "models/stories260K/stories260K.bin"), NULL, &err);
    assert_non_null(m);
    const mopt_arch *a = mopt_model_arch(m);
    assert_int_equal(a->dim, 64);
    assert_int_equal(a->n_layers, 5);
    assert_int_equal(a->n_heads, 8);
    assert_int_equal(a->n_kv_heads, 4);
    assert_int_equal(a->ffn_dim, 172);
    assert_int_equal(a->vocab_size, 512);
    assert_true(a->tied_embeddings);
    assert_non_null(mopt_model_tokenizer(m));
    const mopt_tensor *t = mopt_graph_find_tensor(mopt_model_graph(m), "model.layers.2.mlp.down_proj.weight");
    assert_non_null(t);
    assert_int_equal(t->buffer->kind, MOPT_BUFFER_MMAP);
    mopt_model_free(m);
}

static void test_hf_weights_are_mapped_not_copied(void **s) {
    REQUIRE_SHARED();
    char path[1024];
    mopt_error err = {0};
    mopt_model *m = mopt_model_load(test_shared_path(path, sizeof path, "models/lit-llama-7m"), NULL, &err);
    assert_non_null(m);
    const mopt_graph *g = mopt_model_graph(m);
    for (int i = 0; i < mopt_graph_n_tensors(g); i++) assert_int_equal(mopt_graph_tensor(g, i)->buffer->kind, MOPT_BUFFER_MMAP);
    /* embed + lm_head 2*2048*256, 8 layers of (2 norms 2*256, q/o 2*256*256, k/v 2*128*256, MLP 3*768*256), final norm */
    assert_int_equal(mopt_graph_n_params(g), 2 * 2048 * 256 + 8 * (2 * 256 + 2 * 256 * 256 + 2 * 128 * 256 + 3 * 768 * 256) + 256);
    mopt_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiny_model_loads_and_runs),
        cmocka_unit_test(test_truncated_safetensors_is_refused),
        cmocka_unit_test(test_header_length_beyond_file_is_refused),
        cmocka_unit_test(test_tensor_bytes_past_end_are_refused),
        cmocka_unit_test(test_unknown_dtype_is_refused),
        cmocka_unit_test(test_missing_tensor_is_named),
        cmocka_unit_test(test_shape_disagreeing_with_config_is_named),
        cmocka_unit_test(test_malformed_config_reports_line_and_column),
        cmocka_unit_test(test_missing_config_key_is_named),
        cmocka_unit_test(test_unsupported_rope_scaling_is_refused),
        cmocka_unit_test(test_safetensors_offsets_must_tile_the_data_region),
        cmocka_unit_test(test_tensors_the_architecture_does_not_use_are_refused),
        cmocka_unit_test(test_absurd_config_numbers_are_refused),
        cmocka_unit_test(test_llama2c_file_larger_than_its_header_is_refused),
        cmocka_unit_test(test_sharded_checkpoint_and_rope_theta_key_give_identical_logits),
        cmocka_unit_test(test_impossible_llama2c_header_is_refused),
        cmocka_unit_test(test_llama2c_checkpoint_maps_weights_without_copying),
        cmocka_unit_test(test_hf_weights_are_mapped_not_copied),
    };
    return test_run_tests(tests, NULL, NULL);
}
