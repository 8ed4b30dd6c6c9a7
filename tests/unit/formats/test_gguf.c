/* GGUF export and import: f32 exports run with the original logits (exactly for
 * llama2.c and GPT-2, to RoPE-order rounding for HF LLaMA), QINT models export
 * as Q4_0/Q8_0 bit for bit, every block type decodes in an independent Python
 * reader to what mopt decodes and stays within a stated error of the f32
 * weights, the tokenizers stored as tokenizer.ggml.* encode like the originals,
 * and broken or mutated files fail with a one-line message. */
#include <jansson.h>
#include <math.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "ggml.h"
#include "kernels.h"
#include "tensor_impl.h"
#include "mopt/fileio.h"
#include "gguf_walk.h"
#include "testutil.h"

static char dir[1024];

static mopt_model *export_and_load(mopt_model *m, const char *pipeline_prefix, const char *type, const char *file) {
    char text[4096], out[1400];
    snprintf(out, sizeof out, "%s/%s", dir, file);
    snprintf(text, sizeof text, "%sexport.gguf<out=%s;type=%s;force=true>", pipeline_prefix, out, type);
    mopt_report_free(test_run_pipeline(m, text));
    return test_load_model(out);
}

static double ppl(mopt_model *m) {
    char text[2048], data[1024];
    snprintf(text, sizeof text, "eval.perplexity<data=%s;limit_tokens=8192>", test_shared_path(data, sizeof data, "data/lit-val.txt"));
    mopt_report *r = test_run_pipeline(m, text);
    double p = mopt_report_get_metric(r, "ppl");
    mopt_report_free(r);
    return p;
}

static void test_llama2c_f32_gguf_is_exact(void **s) {
    REQUIRE_SHARED();
    mopt_model *m = test_load_model("models/stories260K/stories260K.bin");
    mopt_model *e = export_and_load(m, "", "f32", "st.gguf");
    assert_int_equal(mopt_model_format_of(e), MOPT_FORMAT_GGUF);
    double d = test_max_logit_diff(m, e);
    fprintf(stderr, "stories260K f32 GGUF: max |logit diff| %.3g\n", d);
    assert_true(d == 0.0);
    mopt_model_free(e);
    mopt_model_free(m);
}

static void test_hf_llama_gguf_matches_after_the_rope_permutation(void **s) {
    REQUIRE_SHARED();
    mopt_model *m = test_load_model("models/lit-llama-7m");
    mopt_model *e = export_and_load(m, "", "f32", "ll.gguf");
    /* q/k rows move to GGUF's interleaved order: the same function, summed in another order */
    double d = test_max_logit_diff(m, e), p0 = ppl(m), p1 = ppl(e);
    fprintf(stderr, "lit-llama f32 GGUF: max |logit diff| %.3g, ppl %.6f vs %.6f\n", d, p1, p0);
    assert_true(d < 1e-4);
    assert_true(fabs(p1 / p0 - 1) < 1e-6);
    mopt_model_free(e);
    mopt_model_free(m);
}

static void test_gpt2_gguf_fuses_qkv_and_roundtrips(void **s) {
    REQUIRE_SHARED();
    mopt_model *m = test_load_model("models/lit-gpt2-1m");
    mopt_model *e = export_and_load(m, "", "f32", "gpt2.gguf");
    double d = test_max_logit_diff(m, e);
    fprintf(stderr, "lit-gpt2 f32 GGUF: max |logit diff| %.3g\n", d);
    assert_true(d == 0.0);
    mopt_model_free(e);
    mopt_model_free(m);
}

static void test_qint_exports_as_q4_0_and_q8_0_bit_for_bit(void **s) {
    REQUIRE_SHARED();
    /* down_proj's 172 columns are not whole 32-value blocks (llama.cpp stores it as f16): keep it float */
    static const char *const cases[][2] = {{"quant.rtn<bits=4;group_size=32;sym=true;exclude=*down_proj*>,", "auto"},
                                           {"quant.rtn<bits=8;group_size=32;sym=true;exclude=*down_proj*>,", "auto"}};
    for (int i = 0; i < 2; i++) {
        mopt_model *m = test_load_model("models/stories260K/stories260K.bin");
        mopt_model *e = export_and_load(m, cases[i][0], cases[i][1], "q.gguf");
        double d = test_max_logit_diff(m, e);
        fprintf(stderr, "stories260K %s as %s: max |logit diff| %.3g\n", cases[i][0], cases[i][1], d);
        assert_true(d == 0.0);
        /* loaded back into packed QINT, not dequantized */
        const mopt_tensor *w = mopt_graph_find_tensor(mopt_model_graph(e), "model.layers.0.self_attn.q_proj.weight");
        assert_int_equal(w->dtype, MOPT_DTYPE_QINT);
        assert_int_equal(w->quant->bits, i ? 8 : 4);
        mopt_model_free(e);
        mopt_model_free(m);
    }
}

/* A quantized GGUF file's linears and embedding table are copied into packed tensors, so the pages of the file
 * they came from are let go: the mapping keeps what stays in place (norms, metadata), not a second copy of the
 * model. */
static void test_a_loaded_gguf_keeps_no_second_copy_of_its_weights(void **s) {
    REQUIRE_SHARED();
    mopt_model *m = test_load_model("models/lit-llama-7m");
    mopt_model *e = export_and_load(m, "", "q8_0", "rss.gguf");
    char path[1400];
    snprintf(path, sizeof path, "%s/rss.gguf", dir);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    const long long rss = test_mapped_rss(path);
    fprintf(stderr, "rss.gguf: %lld of its %lld bytes resident\n", rss, (long long)st.st_size);
    assert_true(rss >= 0 && rss < st.st_size / 10);
    assert_true(test_max_logit_diff(m, e) < 1.0); /* and what was copied out still runs: Q8_0 within its rounding */
    mopt_model_free(e);
    mopt_model_free(m);
}

/* The data of tensor `name` of a GGUF file mopt wrote, in memory, and its ggml type. */
static const unsigned char *tensor_data(const unsigned char *d, const char *name, uint32_t *type) {
    const size_t last = gw_find_tensor(d, gw_u64(d + 8) - 1, NULL), at = gw_find_tensor(d, 0, name);
    size_t p = last + 8 + gw_u64(d + last);
    uint32_t nd;
    memcpy(&nd, d + p, 4);
    p += 4 + 8 * (size_t)nd + 12; /* past the last tensor info: the data section starts at the next 32 bytes */
    assert_true(at > 0);
    memcpy(type, d + at, 4);
    return d + (p + 31) / 32 * 32 + gw_u64(d + at + 4);
}

/* A quantized GGUF file's token embedding table stays packed, as llama.cpp keeps it: a Q4_0 table takes 18 bytes per
 * 32 values where the f32 it was widened to took 128. Each row a lookup reads is the file's row decoded, checked
 * against a decoder written here from ggml's block layout (an f16 scale, then 16 bytes: value j the low nibble of
 * byte j, value j + 16 its high nibble, each less 8). A tied table (GPT-2's) is lm_head's packed weight as well. */
static void test_a_gguf_token_embedding_table_stays_packed(void **s) {
    REQUIRE_SHARED();
    mopt_model *m = test_load_model("models/lit-llama-7m");
    mopt_model *e = export_and_load(m, "", "q4_0", "emb.gguf");
    const mopt_tensor *emb = mopt_graph_find_tensor(mopt_model_graph(e), "model.embed_tokens.weight");
    assert_int_equal(emb->dtype, MOPT_DTYPE_QINT);
    const int64_t vocab = emb->ne[1], dim = emb->ne[0];
    assert_true(mopt_weight_storage_bytes(emb) == vocab * dim / 32 * 18);
    char path[1400];
    snprintf(path, sizeof path, "%s/emb.gguf", dir);
    size_t n;
    unsigned char *d = read_whole(path, &n);
    uint32_t type;
    const unsigned char *q = tensor_data(d, "token_embd.weight", &type);
    assert_int_equal(type, 2); /* GGML_TYPE_Q4_0 */
    assert_true(q + vocab * dim / 32 * 18 <= d + n);
    float *row = malloc((size_t)dim * sizeof *row);
    for (int64_t r = 0; r < vocab; r++) {
        assert_int_equal(mopt_weight_row_f32(emb, r, row, NULL), MOPT_OK);
        for (int64_t b = 0; b < dim / 32; b++) {
            const unsigned char *blk = q + (r * (dim / 32) + b) * 18;
            const float scale = mopt_f16_to_f32((uint16_t)(blk[0] | blk[1] << 8));
            for (int j = 0; j < 16; j++) {
                assert_true(row[b * 32 + j] == (float)((blk[2 + j] & 15) - 8) * scale);
                assert_true(row[b * 32 + j + 16] == (float)((blk[2 + j] >> 4) - 8) * scale);
            }
        }
    }
    free(row);
    free(d);
    const double p0 = ppl(m), p1 = ppl(e);
    fprintf(stderr, "lit-llama Q4_0 with its table packed: max |logit diff| %.3g, ppl %.4f (f32 %.4f)\n", test_max_logit_diff(m, e), p1, p0);
    assert_true(fabs(p1 / p0 - 1) < 1e-3); /* measured 2e-4 */
    mopt_model_free(e);
    mopt_model_free(m);
    /* tied: one packed table for the lookup and for lm_head */
    m = test_load_model("models/lit-gpt2-1m");
    e = export_and_load(m, "", "q8_0", "tied.gguf");
    const mopt_graph *g = mopt_model_graph(e);
    assert_true(mopt_graph_arch(g)->tied_embeddings);
    const mopt_tensor *wte = mopt_graph_find_tensor(g, "transformer.wte.weight");
    assert_int_equal(wte->dtype, MOPT_DTYPE_QINT);
    const int32_t head = mopt_graph_find_node(g, MOPT_ROLE_LM_HEAD, -1);
    assert_true(head >= 0 && mopt_graph_node(g, head)->weight == wte);
    const double q0 = ppl(m), q1 = ppl(e);
    fprintf(stderr, "lit-gpt2 Q8_0 with its tied table packed: max |logit diff| %.3g, ppl %.4f (f32 %.4f)\n", test_max_logit_diff(m, e),
            q1, q0);
    assert_true(fabs(q1 / q0 - 1) < 1e-3); /* measured 2.7e-4: lm_head's int8 activations */
    mopt_model_free(e);
    mopt_model_free(m);
}

/* The data of k-quant tensor `name` of a GGUF file in memory, its ggml type and its size in bytes. */
static const unsigned char *kquant_tensor(const unsigned char *d, const char *name, uint32_t *type, size_t *n) {
    const unsigned char *data = tensor_data(d, name, type);
    const size_t at = gw_find_tensor(d, 0, name), dims = at - 16; /* ne[0], ne[1] of a 2-D tensor precede its type */
    const size_t block = *type == 10 ? 84 : *type == 11 ? 110 : *type == 12 ? 144 : *type == 13 ? 176 : *type == 14 ? 210 : 0;
    assert_true(block > 0);
    *n = gw_u64(d + dims) / 256 * block * gw_u64(d + dims + 8);
    return data;
}

/* Q2_K ... Q6_K files (q2_k: the mix) load into packed KQUANT linears holding the blocks as they are (lm_head Q6_K, as llama-quantize
 * writes it), run with the perplexity of their decoding written out as f32 (within the int8 activations' rounding where the kernel set
 * runs the type's prefill through the integer GEMM; to 1e-6 where it widens the rows exactly), and export their linears and their
 * token embedding table back byte for byte. */
static void test_kquant_files_load_packed_and_export_bit_for_bit(void **s) {
    REQUIRE_SHARED();
    static const char *const types[] = {"q4_k", "q5_k", "q6_k", "q3_k", "q2_k"};
    static const int bits[] = {4, 5, 6, 3, 2};
    mopt_model *m = test_load_model("models/lit-llama-7m");
    for (int i = 0; i < 5; i++) {
        char file[64], a[1400], b[1400];
        snprintf(file, sizeof file, "k%d.gguf", i);
        mopt_model *e = export_and_load(m, "", types[i], file);
        const mopt_graph *g = mopt_model_graph(e);
        const mopt_tensor *q = mopt_graph_find_tensor(g, "model.layers.0.self_attn.q_proj.weight");
        const mopt_tensor *down = mopt_graph_find_tensor(g, "model.layers.7.mlp.down_proj.weight");
        const mopt_tensor *head = mopt_graph_find_tensor(g, "lm_head.weight");
        assert_int_equal(q->dtype, MOPT_DTYPE_KQUANT);
        assert_int_equal(q->quant->bits, bits[i]);
        assert_int_equal(down->dtype, MOPT_DTYPE_KQUANT);
        assert_int_equal(head->dtype, MOPT_DTYPE_KQUANT);
        assert_int_equal(head->quant->bits, 6);
        mopt_model *f = export_and_load(e, "", "f32", "kdec.gguf");
        /* the integer GEMM runs against x as int8 per sub-block (32 or 16 values), as Q4_0's does against x per 32 */
        const mopt_kernels *k = mopt_kernels_get();
        const int int_gemm = bits[i] == 4 || (bits[i] == 5 ? k->u8_levels : k->gemm_q4_q8_b16 != NULL);
        const double pk = ppl(e), pf = ppl(f), tol = int_gemm ? 3e-4 : 1e-6;
        fprintf(stderr, "lit-llama %s packed: ppl %.6f, its f32 decoding %.6f (%+.2e)\n", types[i], pk, pf, pk / pf - 1);
        assert_true(fabs(pk / pf - 1) < tol);
        mopt_model_free(export_and_load(e, "", "auto", "kre.gguf"));
        snprintf(a, sizeof a, "%s/%s", dir, file);
        snprintf(b, sizeof b, "%s/kre.gguf", dir);
        size_t na, nb;
        unsigned char *da = read_whole(a, &na), *db = read_whole(b, &nb);
        static const char *const kinds[] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
        for (int t = 0; t <= 8 * 7 + 1; t++) { /* every linear, then output.weight and token_embd.weight */
            char name[64];
            if (t < 8 * 7) snprintf(name, sizeof name, "blk.%d.%s.weight", t / 7, kinds[t % 7]);
            else snprintf(name, sizeof name, t == 8 * 7 ? "output.weight" : "token_embd.weight");
            uint32_t ta, tb;
            size_t n;
            const unsigned char *pa = kquant_tensor(da, name, &ta, &n), *pb = kquant_tensor(db, name, &tb, &n);
            assert_int_equal(ta, tb);
            assert_true(pa + n <= da + na && pb + n <= db + nb && memcmp(pa, pb, n) == 0);
        }
        free(da);
        free(db);
        mopt_model_free(f);
        mopt_model_free(e);
    }
    mopt_model_free(m);
}

static uint32_t tensor_type(const unsigned char *d, const char *name) {
    const size_t at = gguf_tensor_type_offset(d, name);
    assert_true(at > 0);
    uint32_t t;
    memcpy(&t, d + at, 4);
    return t;
}

/* The ggml type of tensor `name` in the GGUF file at path. */
static uint32_t file_tensor_type(const char *path, const char *name) {
    size_t n;
    unsigned char *d = read_whole(path, &n);
    assert_non_null(d);
    const uint32_t t = tensor_type(d, name);
    free(d);
    return t;
}

/* llama-quantize's mixes on an 8-layer LLaMA with 2 query heads per KV head, from llama_tensor_get_type's rules
 * worked by hand: use_more_bits(i, 8) holds for layers 0, 3, 6 and 7 (Q4_K_M / Q5_K_M give attn_v and ffn_down
 * Q6_K there); Q4_K_S gives attn_v Q5_K in layers 0-3 and ffn_down Q5_K in layer 0 (i < 8/8); Q2_K gives attn_v
 * (n_gqa < 4), ffn_down and attn_output Q3_K; Q2_K_S only ffn_down.0 Q4_K; Q3_K_M attn_v Q5_K in layers 0-1 and
 * Q4_K after, ffn_down Q4_K (i < 8/16 holds for none), attn_output Q4_K; Q3_K_L attn_v, ffn_down and attn_output
 * Q5_K; output.weight is Q6_K; the file types are LLAMA_FTYPE_MOSTLY_Q2_K 10, Q3_K_S 11, Q3_K_M 12, Q3_K_L 13,
 * Q4_K_S 14, Q4_K_M 15, Q5_K_M 17, Q2_K_S 21. */
static void test_k_mixes_give_the_layers_llama_quantize_gives(void **s) {
    REQUIRE_SHARED();
    enum { Q2K = 10, Q3K = 11, Q4K = 12, Q5K = 13, Q6K = 14 };
    static const struct {
        const char *type;
        uint32_t file_type, v[8], down[8], out, base;
    } mixes[] = {
        {"q2_k", 10, {Q3K, Q3K, Q3K, Q3K, Q3K, Q3K, Q3K, Q3K}, {Q3K, Q3K, Q3K, Q3K, Q3K, Q3K, Q3K, Q3K}, Q3K, Q2K},
        {"q2_k_s", 21, {Q2K, Q2K, Q2K, Q2K, Q2K, Q2K, Q2K, Q2K}, {Q4K, Q2K, Q2K, Q2K, Q2K, Q2K, Q2K, Q2K}, Q2K, Q2K},
        {"q3_k_s", 11, {Q3K, Q3K, Q3K, Q3K, Q3K, Q3K, Q3K, Q3K}, {Q3K, Q3K, Q3K, Q3K, Q3K, Q3K, Q3K, Q3K}, Q3K, Q3K},
        {"q3_k_m", 12, {Q5K, Q5K, Q4K, Q4K, Q4K, Q4K, Q4K, Q4K}, {Q4K, Q4K, Q4K, Q4K, Q4K, Q4K, Q4K, Q4K}, Q4K, Q3K},
        {"q3_k_l", 13, {Q5K, Q5K, Q5K, Q5K, Q5K, Q5K, Q5K, Q5K}, {Q5K, Q5K, Q5K, Q5K, Q5K, Q5K, Q5K, Q5K}, Q5K, Q3K},
        {"q4_k_s", 14, {Q5K, Q5K, Q5K, Q5K, Q4K, Q4K, Q4K, Q4K}, {Q5K, Q4K, Q4K, Q4K, Q4K, Q4K, Q4K, Q4K}, Q4K, Q4K},
        {"q4_k_m", 15, {Q6K, Q4K, Q4K, Q6K, Q4K, Q4K, Q6K, Q6K}, {Q6K, Q4K, Q4K, Q6K, Q4K, Q4K, Q6K, Q6K}, Q4K, Q4K},
        {"q5_k_m", 17, {Q6K, Q5K, Q5K, Q6K, Q5K, Q5K, Q6K, Q6K}, {Q6K, Q5K, Q5K, Q6K, Q5K, Q5K, Q6K, Q6K}, Q5K, Q5K},
    };
    mopt_model *m = test_load_model("models/lit-llama-7m");
    for (size_t k = 0; k < sizeof mixes / sizeof *mixes; k++) {
        char file[64], path[1400], name[64];
        snprintf(file, sizeof file, "%s.gguf", mixes[k].type);
        mopt_model_free(export_and_load(m, "", mixes[k].type, file));
        snprintf(path, sizeof path, "%s/%s", dir, file);
        size_t n;
        unsigned char *d = read_whole(path, &n);
        assert_non_null(d);
        uint32_t ft;
        memcpy(&ft, d + gguf_kv_value_offset(d, "general.file_type"), 4);
        assert_int_equal(ft, mixes[k].file_type);
        for (int i = 0; i < 8; i++) {
            snprintf(name, sizeof name, "blk.%d.attn_v.weight", i);
            assert_int_equal(tensor_type(d, name), mixes[k].v[i]);
            snprintf(name, sizeof name, "blk.%d.ffn_down.weight", i);
            assert_int_equal(tensor_type(d, name), mixes[k].down[i]);
            snprintf(name, sizeof name, "blk.%d.attn_output.weight", i);
            assert_int_equal(tensor_type(d, name), mixes[k].out);
            snprintf(name, sizeof name, "blk.%d.attn_q.weight", i);
            assert_int_equal(tensor_type(d, name), mixes[k].base);
            snprintf(name, sizeof name, "blk.%d.ffn_up.weight", i);
            assert_int_equal(tensor_type(d, name), mixes[k].base);
        }
        assert_int_equal(tensor_type(d, "output.weight"), Q6K);
        assert_int_equal(tensor_type(d, "token_embd.weight"), mixes[k].base);
        free(d);
    }
    mopt_model_free(m);
}

static int reader(const char *q, const char *ref, double tol) {
    char cmd[4400];
    snprintf(cmd, sizeof cmd, "python3 '%s/tests/gguf_reader.py' '%s' '%s' %g", MOPT_SOURCE_DIR, q, ref, tol);
    return system(cmd);
}

static void test_every_type_decodes_independently_within_its_error(void **s) {
    REQUIRE_SHARED();
    /* relative RMS error bounds against the f32 weights (4-bit ~ 1/2 step of 1/15 of a block's range) */
    static const struct {
        const char *type;
        double rms, ppl;
    } types[] = {{"f16", 1e-3, 1e-4}, {"bf16", 1e-2, 2e-3}, {"q8_0", 0.01, 2e-3}, {"q5_0", 0.05, 0.01},
                 {"q5_1", 0.05, 0.01}, {"q4_0", 0.1, 0.02}, {"q4_1", 0.1, 0.02}, {"q4_k", 0.1, 0.02},
                 {"q5_k", 0.05, 0.01}, {"q6_k", 0.025, 0.005}, {"q3_k", 0.2, 0.01}, {"q2_k", 0.35, 0.07}};
    mopt_model *m = test_load_model("models/lit-llama-7m");
    mopt_model_free(export_and_load(m, "", "f32", "ref.gguf"));
    const double p0 = ppl(m);
    char q[1400], ref[1400], dec[1400];
    snprintf(ref, sizeof ref, "%s/ref.gguf", dir);
    for (size_t i = 0; i < sizeof types / sizeof *types; i++) {
        char file[64];
        snprintf(file, sizeof file, "%s.gguf", types[i].type);
        mopt_model *e = export_and_load(m, "", types[i].type, file);
        snprintf(q, sizeof q, "%s/%s", dir, file);
        /* mopt's own decoding of the file, written back as f32: the reader must decode the same values */
        mopt_model_free(export_and_load(e, "", "f32", "dec.gguf"));
        snprintf(dec, sizeof dec, "%s/dec.gguf", dir);
        assert_int_equal(reader(q, dec, 0), 0);
        assert_int_equal(reader(q, ref, types[i].rms), 0);
        const double p = ppl(e);
        fprintf(stderr, "lit-llama %s: ppl %.4f (f32 %.4f, %+.3f%%)\n", types[i].type, p, p0, 100 * (p / p0 - 1));
        assert_true(fabs(p / p0 - 1) < types[i].ppl);
        mopt_model_free(e);
    }
    mopt_model_free(m);
}

/* m's and e's tokenizers encode the first 40,000 bytes of lit-val to the same ids and decode them back alike */
static void expect_same_tokens(const mopt_model *m, const mopt_model *e, const char *what) {
    char path[1024];
    size_t n;
    char *text = read_whole(test_shared_path(path, sizeof path, "data/lit-val.txt"), &n);
    n = n > 40000 ? 40000 : n;
    while (n && ((unsigned char)text[n] & 0xc0) == 0x80) n--; /* whole UTF-8 characters */
    const mopt_tokenizer *a = mopt_model_tokenizer(m), *b = mopt_model_tokenizer(e);
    assert_non_null(b);
    int32_t *ia, *ib;
    size_t na, nb;
    mopt_error err = {0};
    assert_int_equal(mopt_tokenizer_encode(a, text, n, MOPT_TOK_ADD_SPECIAL, &ia, &na, &err), MOPT_OK);
    assert_int_equal(mopt_tokenizer_encode(b, text, n, MOPT_TOK_ADD_SPECIAL, &ib, &nb, &err), MOPT_OK);
    fprintf(stderr, "%s: %zu tokens, %zu from the original\n", what, nb, na);
    assert_int_equal(na, nb);
    assert_memory_equal(ia, ib, na * sizeof *ia);
    char *da, *db;
    size_t la, lb;
    assert_int_equal(mopt_tokenizer_decode(a, ia, na, MOPT_TOK_SKIP_SPECIAL, &da, &la, &err), MOPT_OK);
    assert_int_equal(mopt_tokenizer_decode(b, ib, nb, MOPT_TOK_SKIP_SPECIAL, &db, &lb, &err), MOPT_OK);
    assert_int_equal(la, lb);
    assert_memory_equal(da, db, la);
    free(da);
    free(db);
    free(ia);
    free(ib);
    free(text);
}

static void same_tokens(const char *model_rel, const char *file) {
    mopt_model *m = test_load_model(model_rel);
    mopt_model *e = export_and_load(m, "", "f16", file);
    char what[256];
    snprintf(what, sizeof what, "%s through GGUF", model_rel);
    expect_same_tokens(m, e, what);
    mopt_model_free(e);
    mopt_model_free(m);
}

static void test_gguf_tokenizers_encode_like_the_originals(void **s) {
    REQUIRE_SHARED();
    same_tokens("models/lit-llama-7m", "tl.gguf");       /* tokenizer.ggml.model gpt2: byte-level BPE with merges */
    same_tokens("models/lit-gpt2-1m", "tg.gguf");
    same_tokens("models/stories260K/stories260K.bin", "ts.gguf"); /* llama: pieces and scores */
}

/* A model's chat template (tokenizer_config.json) goes into the GGUF file as
 * tokenizer.chat_template, where llama.cpp's chat looks, and comes back from it. */
static void test_the_chat_template_travels_through_gguf(void **s) {
    REQUIRE_SHARED();
    char hf[1100], src[1200], link[1200];
    snprintf(hf, sizeof hf, "%s/chat-hf", dir);
    assert_int_equal(mkdir(hf, 0755), 0);
    static const char *const files[] = {"config.json", "model.safetensors", "tokenizer.json"};
    for (size_t i = 0; i < 3; i++) {
        char rel[256];
        snprintf(rel, sizeof rel, "models/lit-llama-7m/%s", files[i]);
        test_shared_path(src, sizeof src, rel);
        snprintf(link, sizeof link, "%s/%s", hf, files[i]);
        assert_int_equal(symlink(src, link), 0);
    }
    static const char tmpl[] = "{%- for m in messages %}<|{{ m.role }}|>\\n{{ m.content | trim }}\\n{% endfor -%}"
                               "{% if add_generation_prompt %}<|assistant|>\\n{% endif %} \u00e9";
    static const char cfg_text[] = "{\"chat_template\": \"%s\", \"eos_token\": \"<|endoftext|>\"}";
    char cfg[1024], path[1200];
    snprintf(cfg, sizeof cfg, cfg_text, tmpl);
    snprintf(path, sizeof path, "%s/tokenizer_config.json", hf);
    write_file(path, cfg, strlen(cfg));
    mopt_model *m = test_load_model(hf);
    const char *want = mopt_tokenizer_chat_template(mopt_model_tokenizer(m));
    assert_non_null(want);
    assert_non_null(strstr(want, "<|assistant|>\n{% endif %} \xc3\xa9")); /* JSON's escapes decoded */
    mopt_model *g = export_and_load(m, "", "q8_0", "chat.gguf");
    assert_string_equal(mopt_tokenizer_chat_template(mopt_model_tokenizer(g)), want);
    { /* a template that is not UTF-8 text (the é's second byte made malformed, or a NUL) is refused in one line */
        char path[1200], bad[1200];
        snprintf(path, sizeof path, "%s/chat.gguf", dir);
        snprintf(bad, sizeof bad, "%s/chat-bad.gguf", dir);
        size_t n;
        unsigned char *d = read_whole(path, &n);
        static const char tail[] = "{% endif %} \xc3\xa9";
        unsigned char *at = memmem(d, n, tail, sizeof tail - 1);
        assert_non_null(at);
        const unsigned char subs[] = {0x28, 0xc0, 0x00};
        for (size_t i = 0; i < sizeof subs; i++) {
            at[sizeof tail - 2 - (subs[i] == 0)] = subs[i]; /* the é's last byte, or its first made NUL */
            write_file(bad, d, n);
            mopt_error err = {0};
            assert_null(mopt_model_load(bad, NULL, &err));
            CHECK_ERR(err, MOPT_E_FORMAT, "tokenizer.chat_template is not UTF-8 text");
            at[sizeof tail - 3] = 0xc3, at[sizeof tail - 2] = 0xa9;
        }
        free(d);
    }
    char out[1200], text[1400]; /* and on into an HF export's tokenizer_config.json */
    snprintf(out, sizeof out, "%s/chat-back", dir);
    snprintf(text, sizeof text, "export.hf<out=%s;force=true>", out);
    mopt_report_free(test_run_pipeline(g, text));
    mopt_model *h = test_load_model(out);
    assert_string_equal(mopt_tokenizer_chat_template(mopt_model_tokenizer(h)), want);
    mopt_model_free(h);
    mopt_model_free(g);
    mopt_model_free(m);
    /* a model without one writes none */
    m = test_load_model("models/lit-llama-7m");
    assert_null(mopt_tokenizer_chat_template(mopt_model_tokenizer(m)));
    g = export_and_load(m, "", "q8_0", "nochat.gguf");
    assert_null(mopt_tokenizer_chat_template(mopt_model_tokenizer(g)));
    mopt_model_free(g);
    mopt_model_free(m);
}

static json_t *load_json(const char *dir_path, const char *name) {
    char path[1400];
    snprintf(path, sizeof path, "%s/%s", dir_path, name);
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j) fprintf(stderr, "%s: %s\n", path, je.text);
    assert_non_null(j);
    return j;
}

/* A model read from a GGUF file and exported for transformers/vLLM takes its tokenizer along: a byte-level BPE as the
 * tokenizer.json it was rebuilt as (every field transformers writes, so its own reader takes it) and a
 * tokenizer_config.json naming the special tokens and carrying the chat template; the export encodes as the original
 * model did. A vocabulary of pieces and scores has no such form: that export has no tokenizer files, and in particular
 * not those of another model that shares the GGUF's directory. */
static void test_a_gguf_models_tokenizer_goes_into_its_hf_export(void **s) {
    REQUIRE_SHARED();
    static const char *const models[] = {"models/lit-llama-7m", "models/lit-gpt2-1m"};
    for (size_t i = 0; i < 2; i++) {
        mopt_model *m = test_load_model(models[i]);
        char file[64], out[1200], text[1400];
        snprintf(file, sizeof file, "hftok%zu.gguf", i);
        mopt_model *g = export_and_load(m, "", "f16", file);
        snprintf(out, sizeof out, "%s/hftok%zu-hf", dir, i);
        snprintf(text, sizeof text, "export.hf<out=%s;force=true>", out);
        mopt_report_free(test_run_pipeline(g, text));
        mopt_model *h = test_load_model(out);
        char what[256];
        snprintf(what, sizeof what, "%s through GGUF to HF", models[i]);
        expect_same_tokens(m, h, what);
        const mopt_tokenizer *a = mopt_model_tokenizer(m), *b = mopt_model_tokenizer(h);
        assert_int_equal(mopt_tokenizer_eos_id(b), mopt_tokenizer_eos_id(a));
        assert_int_equal(mopt_tokenizer_bos_id(b), mopt_tokenizer_bos_id(a));
        json_t *tj = load_json(out, "tokenizer.json"), *cj = load_json(out, "tokenizer_config.json");
        assert_string_equal(json_string_value(json_object_get(tj, "version")), "1.0");
        assert_string_equal(json_string_value(json_object_get(json_object_get(tj, "model"), "type")), "BPE");
        json_t *added = json_array_get(json_object_get(tj, "added_tokens"), 0);
        static const char *const fields[] = {"id", "content", "single_word", "lstrip", "rstrip", "normalized", "special"};
        for (size_t k = 0; k < 7; k++) assert_non_null(json_object_get(added, fields[k]));
        assert_string_equal(json_string_value(json_object_get(cj, "eos_token")), mopt_tokenizer_token_str(a, mopt_tokenizer_eos_id(a)));
        assert_string_equal(json_string_value(json_object_get(cj, "tokenizer_class")), "PreTrainedTokenizerFast");
        json_decref(tj);
        json_decref(cj);
        mopt_model_free(h);
        mopt_model_free(g);
        mopt_model_free(m);
    }
    /* a GGUF that asks for BOS first (tokenizer.ggml.add_bos_token, set in place): a TemplateProcessing [BOS] $A */
    char src[1200], bos_file[1200], out_b[1200], text_b[1400];
    snprintf(src, sizeof src, "%s/hftok1.gguf", dir);
    snprintf(bos_file, sizeof bos_file, "%s/hftok-bos.gguf", dir);
    size_t nb;
    unsigned char *gb = read_whole(src, &nb);
    const size_t at = gguf_kv_value_offset(gb, "tokenizer.ggml.add_bos_token");
    assert_true(at > 0 && gb[at] == 0);
    gb[at] = 1;
    write_file(bos_file, gb, nb);
    free(gb);
    mopt_model *gp = test_load_model(bos_file);
    snprintf(out_b, sizeof out_b, "%s/hftok-bos-hf", dir);
    snprintf(text_b, sizeof text_b, "export.hf<out=%s;force=true>", out_b);
    mopt_report_free(test_run_pipeline(gp, text_b));
    mopt_model *hp = test_load_model(out_b);
    expect_same_tokens(gp, hp, "lit-gpt2-1m with BOS first, through GGUF to HF");
    int32_t *ids;
    size_t nids;
    mopt_error err = {0};
    assert_int_equal(mopt_tokenizer_encode(mopt_model_tokenizer(hp), "KING", 4, MOPT_TOK_ADD_SPECIAL, &ids, &nids, &err), MOPT_OK);
    assert_true(nids >= 2);
    assert_int_equal(ids[0], mopt_tokenizer_bos_id(mopt_model_tokenizer(gp)));
    free(ids);
    mopt_model_free(hp);
    mopt_model_free(gp);
    /* pieces and scores, next to another model's tokenizer files */
    char sub[1100], decoy[1200], text[1400], out[1200], path[1300];
    snprintf(sub, sizeof sub, "%s/spm", dir);
    assert_int_equal(mkdir(sub, 0755), 0);
    snprintf(decoy, sizeof decoy, "%s/tokenizer.json", sub);
    char lit[1024];
    size_t n;
    char *other = read_whole(test_shared_path(lit, sizeof lit, "models/lit-gpt2-1m/tokenizer.json"), &n);
    write_file(decoy, other, n);
    free(other);
    mopt_model *m = test_load_model("models/stories260K/stories260K.bin");
    mopt_model *g = export_and_load(m, "", "f32", "spm/stories.gguf");
    snprintf(out, sizeof out, "%s/spm-hf", dir);
    snprintf(text, sizeof text, "export.hf<out=%s;force=true>", out);
    mopt_report_free(test_run_pipeline(g, text));
    snprintf(path, sizeof path, "%s/config.json", out);
    assert_int_equal(access(path, F_OK), 0);
    snprintf(path, sizeof path, "%s/tokenizer.json", out);
    assert_int_not_equal(access(path, F_OK), 0);
    snprintf(path, sizeof path, "%s/tokenizer_config.json", out);
    assert_int_not_equal(access(path, F_OK), 0);
    mopt_model_free(g);
    mopt_model_free(m);
}

static void expect_refused(const char *path, const char *msg) {
    mopt_error err = {0};
    assert_null(mopt_model_load(path, NULL, &err));
    if (!strstr(err.msg, msg)) fprintf(stderr, "message \"%s\" lacks \"%s\"\n", err.msg, msg);
    assert_non_null(strstr(err.msg, msg));
    assert_null(strchr(err.msg, '\n'));
}

static void test_broken_gguf_files_are_refused(void **s) {
    REQUIRE_SHARED();
    mopt_model *m = test_load_model("models/stories260K/stories260K.bin");
    mopt_model_free(export_and_load(m, "", "q8_0", "ok.gguf"));
    mopt_model_free(m);
    char path[1400], bad[1400];
    snprintf(path, sizeof path, "%s/ok.gguf", dir);
    snprintf(bad, sizeof bad, "%s/bad.gguf", dir);
    size_t n;
    unsigned char *d = read_whole(path, &n);
    write_file(bad, d, 0); /* found by fuzz_gguf: an empty mapping has no base pointer */
    expect_refused(bad, "empty file, not a GGUF file");
    write_file(bad, d, 10);
    expect_refused(bad, "truncated GGUF file");
    write_file(bad, d, n - 100);
    expect_refused(bad, "runs past the end of the file");
    unsigned char *c = malloc(n);
    memcpy(c, d, n);
    memcpy(c, "GGML", 4);
    write_file(bad, c, n);
    expect_refused(bad, "not a GGUF file");
    memcpy(c, d, n);
    c[4] = 9;
    write_file(bad, c, n);
    expect_refused(bad, "GGUF version 9");
    memcpy(c, d, n);
    memset(c + 16, 0xff, 8); /* n_kv */
    write_file(bad, c, n);
    expect_refused(bad, "impossible GGUF header");
    free(c);
    free(d);
}

/* A tensor's type patched in place: a 1-D norm weight claiming a block type,
 * and a type change that shifts every later tensor's data. */
static void test_patched_tensor_types_are_refused(void **s) {
    REQUIRE_SHARED();
    mopt_model *m = test_load_model("models/stories260K/stories260K.bin");
    mopt_model_free(export_and_load(m, "", "f32", "t.gguf"));
    mopt_model_free(m);
    char path[1400], bad[1400], args[1500];
    snprintf(path, sizeof path, "%s/t.gguf", dir);
    snprintf(bad, sizeof bad, "%s/patched.gguf", dir);
    snprintf(args, sizeof args, "info '%s'", bad);
    size_t n;
    unsigned char *d = read_whole(path, &n);
    static const struct {
        const char *tensor;
        uint32_t type;
        const char *msg;
    } cases[] = {{"output_norm.weight", 2, "tensor output_norm.weight: a 1-D tensor stored as q4_0"},
                 {"output_norm.weight", 8, "tensor output_norm.weight: a 1-D tensor stored as q8_0"},
                 {"blk.0.attn_norm.weight", 8, "tensor blk.0.attn_q.weight: offset"}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        unsigned char *c = malloc(n);
        memcpy(c, d, n);
        size_t at = gguf_tensor_type_offset(c, cases[i].tensor);
        assert_true(at > 0);
        memcpy(c + at, &cases[i].type, 4);
        write_file(bad, c, n);
        free(c);
        mopt_error err = {0};
        assert_null(mopt_model_load(bad, NULL, &err));
        CHECK_ERR(err, MOPT_E_FORMAT, cases[i].msg);
        assert_non_null(strstr(err.msg, bad));
        test_cli_refuses(args, 2, cases[i].msg, bad);
    }
    free(d);
}

/* Metadata the weights or the vocabulary contradict. */
static void test_inconsistent_gguf_metadata_is_refused(void **s) {
    REQUIRE_SHARED();
    char path[1400], bad[1400];
    snprintf(path, sizeof path, "%s/t.gguf", dir); /* written by test_patched_tensor_types_are_refused */
    snprintf(bad, sizeof bad, "%s/meta.gguf", dir);
    size_t n;
    unsigned char *d = read_whole(path, &n), *c = malloc(n);
    assert_non_null(d);
    static const struct {
        const char *key;
        uint32_t value;
        const char *msg;
    } cases[] = {{"tokenizer.ggml.bos_token_id", 512, "tokenizer.ggml.bos_token_id 512 is outside the vocabulary of 512"},
                 {"tokenizer.ggml.eos_token_id", 70000, "tokenizer.ggml.eos_token_id 70000 is outside the vocabulary"},
                 {"llama.block_count", 4, "tensor blk.4.attn_norm.weight is not used by a llama model of 4 layers"}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        memcpy(c, d, n);
        size_t at = gguf_kv_value_offset(c, cases[i].key);
        assert_true(at > 0);
        memcpy(c + at, &cases[i].value, 4); /* u32 values */
        write_file(bad, c, n);
        mopt_error err = {0};
        assert_null(mopt_model_load(bad, NULL, &err));
        CHECK_ERR(err, MOPT_E_FORMAT, cases[i].msg);
    }
    /* a tensor of no llama model: renamed in place (same length) */
    memcpy(c, d, n);
    size_t at = gguf_tensor_name_offset(c, 1); /* not token_embd, which the metadata reading needs first */
    assert_true(at > 0 && gw_u64(c + at) >= 5);
    memcpy(c + at + 8, "zzzzz", 5);
    write_file(bad, c, n);
    mopt_error err = {0};
    assert_null(mopt_model_load(bad, NULL, &err));
    CHECK_ERR(err, MOPT_E_FORMAT, "is not part of a llama model");
    free(c);
    free(d);
}

static void test_gguf_mutations_fail_cleanly(void **s) {
    REQUIRE_SHARED();
    mopt_model *m = test_load_model("models/stories260K/stories260K.bin");
    mopt_model_free(export_and_load(m, "", "q4_0", "fz.gguf"));
    mopt_model_free(m);
    char path[1400], bad[1400];
    snprintf(path, sizeof path, "%s/fz.gguf", dir);
    snprintf(bad, sizeof bad, "%s/mut.gguf", dir);
    size_t n;
    unsigned char *d = read_whole(path, &n), *c = malloc(n);
    uint64_t rng = 0x9E3779B97F4A7C15ull;
    int loaded = 0;
    for (int r = 0; r < 300; r++) {
        memcpy(c, d, n);
        size_t len = n;
        rng ^= rng >> 12, rng ^= rng << 25, rng ^= rng >> 27;
        uint64_t x = rng * 0x2545F4914F6CDD1Dull;
        if (x % 5 == 0) {
            len = (size_t)(x >> 8) % n; /* truncate */
        } else {
            for (int k = 0; k < 4; k++) { /* the header: keys, the tokenizer, tensor infos */
                x = x * 6364136223846793005ull + 1442695040888963407ull;
                static const unsigned char vals[] = {0, 0xff, 0x7f, 0x80, 1, 9, 4, 32};
                c[(x >> 20) % (n < 12000 ? n : 12000)] = (x >> 8) % 2 ? vals[(x >> 40) % 8] : (unsigned char)(x >> 48);
            }
        }
        write_file(bad, c, len);
        mopt_error err = {0};
        mopt_model *mm = mopt_model_load(bad, NULL, &err);
        if (mm) {
            loaded++;
            mopt_model_free(mm);
        } else {
            assert_true(err.code != MOPT_OK);
            assert_null(strchr(err.msg, '\n'));
        }
    }
    fprintf(stderr, "GGUF: %d of 300 mutants still loaded, the rest failed cleanly\n", loaded);
    free(c);
    free(d);
}

static void test_cli_quantize_to_gguf_and_eval(void **s) {
    REQUIRE_SHARED();
    char cmd[8192];
    snprintf(cmd, sizeof cmd,
             "%s quantize '%s/models/lit-llama-7m' --method rtn --bits 4 --group 32 --sym -o '%s/cli.gguf' --format gguf --type q4_0 "
             "--quiet > /dev/null && %s eval '%s/cli.gguf' --data '%s/data/lit-val.txt' --limit-tokens 4096 --quiet | grep -q '^ppl '",
             MOPT_CLI, test_shared_dir(), dir, MOPT_CLI, dir, test_shared_dir());
    assert_int_equal(system(cmd), 0);
    /* a type mopt does not write is named in the error */
    snprintf(cmd, sizeof cmd, "%s export '%s/models/lit-llama-7m' -o '%s/x.gguf' --format gguf --type iq2_xs --quiet 2>&1 | grep -q 'iq2_xs'",
             MOPT_CLI, test_shared_dir(), dir);
    assert_int_equal(system(cmd), 0);
    /* rows of 128 (GPT-2 1m) are no whole Q2_K block: as llama-quantize, those tensors go out as IQ4_NL (its blocks
     * are checked against llama-quantize's in test_blocks_equal_llama_quantize_bytes); rows of 512 keep the mix's
     * Q3_K; the file loads (IQ4_NL decoded to f32) and evaluates */
    snprintf(cmd, sizeof cmd,
             "%s export '%s/models/lit-gpt2-1m' -o '%s/g2.gguf' --format gguf --type q2_k --quiet && "
             "%s eval '%s/g2.gguf' --data '%s/data/lit-val.txt' --limit-tokens 2048 --quiet | grep -q '^ppl '",
             MOPT_CLI, test_shared_dir(), dir, MOPT_CLI, dir, test_shared_dir());
    assert_int_equal(system(cmd), 0);
    char g2f[1400], g2d[1400], g2r[1400];
    snprintf(g2f, sizeof g2f, "%s/g2.gguf", dir), snprintf(g2d, sizeof g2d, "%s/g2-dec.gguf", dir), snprintf(g2r, sizeof g2r, "%s/g2-f32.gguf", dir);
    assert_int_equal(file_tensor_type(g2f, "blk.0.attn_qkv.weight"), 20);
    assert_int_equal(file_tensor_type(g2f, "blk.1.ffn_up.weight"), 20);
    assert_int_equal(file_tensor_type(g2f, "blk.0.ffn_down.weight"), 11);
    /* the independent reader decodes the IQ4_NL tensors to what mopt decodes, and within Q3_K's bound of the f32 weights */
    snprintf(cmd, sizeof cmd,
             "%s export '%s' -o '%s' --format gguf --type f32 --force --quiet && %s export '%s/models/lit-gpt2-1m' -o '%s' --format gguf "
             "--type f32 --force --quiet",
             MOPT_CLI, g2f, g2d, MOPT_CLI, test_shared_dir(), g2r);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(reader(g2f, g2d, 0), 0);
    assert_int_equal(reader(g2f, g2r, 0.2), 0);
    /* --method gptq / awq: GPTQ or AWQ onto the type's blocks; GPTQ leaves no importance matrix file, AWQ computes one on
     * its model afterwards for what it leaves (kept, as --calib alone keeps it); the files load with their blocks packed */
    static const struct {
        const char *method, *type, *file, *imatrix_test, *kind;
    } calibrated[] = {{"gptq", "q4_k_m", "gq-cli.gguf", "!", "kquant"}, {"awq", "q4_0", "aq-cli.gguf", "", "qint"}};
    for (int i = 0; i < 2; i++) {
        snprintf(cmd, sizeof cmd,
                 "%s export '%s/models/lit-llama-7m' -o '%s/%s' --format gguf --type %s --method %s --calib '%s/data/lit-train.txt' "
                 "--calib-samples 2 --quiet && [ %s -e '%s/%s.imatrix.dat' ] && %s info '%s/%s' | grep -q '^  %s'",
                 MOPT_CLI, test_shared_dir(), dir, calibrated[i].file, calibrated[i].type, calibrated[i].method, test_shared_dir(),
                 calibrated[i].imatrix_test, dir, calibrated[i].file, MOPT_CLI, dir, calibrated[i].file, calibrated[i].kind);
        assert_int_equal(system(cmd), 0);
    }
    /* the file exists now: refused before GPTQ runs (no progress printed), in one line */
    snprintf(cmd, sizeof cmd,
             "out=$(%s export '%s/models/lit-llama-7m' -o '%s/gq-cli.gguf' --format gguf --type q4_k_m --method gptq --calib '%s/data/lit-train.txt' "
             "--calib-samples 2 2>&1); st=$?; [ $st -eq 2 ] && echo \"$out\" | grep -q 'already exists' && [ $(echo \"$out\" | wc -l) -eq 1 ]",
             MOPT_CLI, test_shared_dir(), dir, test_shared_dir());
    assert_int_equal(system(cmd), 0);
    /* AWQ's file is in llama-quantize's layout with an importance matrix: Q4_0, the first eighth of ffn_down Q4_1 */
    snprintf(cmd, sizeof cmd, "%s/aq-cli.gguf", dir);
    assert_int_equal(file_tensor_type(cmd, "blk.0.ffn_down.weight"), 3);
    assert_int_equal(file_tensor_type(cmd, "blk.1.ffn_down.weight"), 2);
    assert_int_equal(file_tensor_type(cmd, "blk.0.attn_q.weight"), 2);
    /* a method with no GGUF grid, and AWQ without its calibration text: each said in one line, no file written */
    const char *bad[] = {"--method smoothquant --calib x.txt", "--method awq"};
    for (int i = 0; i < 2; i++) {
        snprintf(cmd, sizeof cmd,
                 "out=$(%s export '%s/models/lit-llama-7m' -o '%s/m.gguf' --format gguf --type q4_0 %s 2>&1); st=$?; "
                 "[ $st -eq 2 ] && echo \"$out\" | grep -q -- '--method' && [ $(echo \"$out\" | wc -l) -eq 1 ] && [ ! -e '%s/m.gguf' ]",
                 MOPT_CLI, test_shared_dir(), dir, bad[i], dir);
        assert_int_equal(system(cmd), 0);
    }
}

static uint8_t *unhex(const char *h, size_t *n) {
    *n = strlen(h) / 2;
    uint8_t *b = malloc(*n + 1);
    for (size_t i = 0; b && i < *n; i++) {
        unsigned v = 0;
        sscanf(h + 2 * i, "%2x", &v);
        b[i] = (uint8_t)v;
    }
    return b;
}

/* tests/fixtures/ggml_ref_blocks.json (make_ggml_ref_blocks.py): its rows x cols of floats in *x (malloc'd) */
static json_t *ref_blocks(int64_t *rows, int64_t *cols, float **x) {
    json_error_t je;
    json_t *fx = json_load_file(MOPT_SOURCE_DIR "/tests/fixtures/ggml_ref_blocks.json", 0, &je);
    assert_non_null(fx);
    *rows = json_integer_value(json_object_get(fx, "rows")), *cols = json_integer_value(json_object_get(fx, "cols"));
    size_t nf;
    *x = (float *)unhex(json_string_value(json_object_get(fx, "f32")), &nf);
    assert_int_equal(nf, (size_t)(*rows * *cols) * 4);
    return fx;
}

/* Every legacy type and k-quant mopt writes makes the bytes upstream llama-quantize made of the same floats
 * (tests/fixtures/ggml_ref_blocks.json, from make_ggml_ref_blocks.py: zero, constant, one-signed, outlier,
 * sub-1e-15 and mixed-scale rows among ordinary ones), block for block: without an importance matrix, and with
 * the fixture's (llama-quantize --imatrix: the weighted searches of quantize_*_impl). */
static void test_blocks_equal_llama_quantize_bytes(void **s) {
    int64_t rows, cols;
    float *x;
    json_t *fx = ref_blocks(&rows, &cols, &x);
    size_t ni;
    float *imat = (float *)unhex(json_string_value(json_object_get(fx, "imatrix")), &ni);
    assert_int_equal(ni, (size_t)cols * 4);
    static const struct {
        const char *key;
        int32_t type;
    } types[] = {{"q4_0", MOPT_GGML_Q4_0}, {"q4_1", MOPT_GGML_Q4_1}, {"q5_0", MOPT_GGML_Q5_0}, {"q5_1", MOPT_GGML_Q5_1},
                 {"q8_0", MOPT_GGML_Q8_0}, {"q2_k", MOPT_GGML_Q2_K}, {"q3_k", MOPT_GGML_Q3_K}, {"q4_k", MOPT_GGML_Q4_K},
                 {"q5_k", MOPT_GGML_Q5_K}, {"q6_k", MOPT_GGML_Q6_K}, {"iq4_nl", MOPT_GGML_IQ4_NL}};
    for (int weighted = 0; weighted < 2; weighted++)
        for (size_t t = 0; t < sizeof types / sizeof *types; t++) {
            size_t nb;
            uint8_t *want = unhex(json_string_value(json_object_get(json_object_get(fx, weighted ? "blocks_imatrix" : "blocks"), types[t].key)), &nb);
            const int64_t rb = mopt_ggml_row_bytes(types[t].type, cols), bb = mopt_ggml_block_bytes(types[t].type);
            assert_int_equal(nb, (size_t)(rows * rb));
            uint8_t *got = malloc((size_t)rb);
            int bad = 0;
            for (int64_t r = 0; r < rows; r++) {
                assert_int_equal(mopt_ggml_quantize_row_weighted(types[t].type, x + r * cols, cols, weighted ? imat : NULL, got, NULL), MOPT_OK);
                for (int64_t b = 0; b < rb / bb; b++)
                    if (memcmp(got + b * bb, want + r * rb + b * bb, (size_t)bb) && bad++ < 4)
                        fprintf(stderr, "%s%s: row %lld block %lld differs from llama-quantize's\n", types[t].key, weighted ? " imatrix" : "",
                                (long long)r, (long long)b);
            }
            fprintf(stderr, "%s%s: %lld rows, %lld blocks, %d differ\n", types[t].key, weighted ? " imatrix" : "", (long long)rows,
                    (long long)(rows * rb / bb), bad);
            assert_int_equal(bad, 0);
            free(got);
            free(want);
        }
    free(x);
    free(imat);
    json_decref(fx);
}

/* GPTQ's access to a block (mopt_ggml_block_requantize): setting every value of one of llama-quantize's k-quant
 * blocks (the fixture's) from its own float, under the block's stored scales, gives the same bytes back (each
 * value lands where ggml's packing puts it), and returns what the block then decodes to. */
static void test_block_requantize_rebuilds_llama_quantize_blocks(void **s) {
    int64_t rows, cols;
    float *x;
    json_t *fx = ref_blocks(&rows, &cols, &x);
    float dec[256];
    int rebuilt = 0;
    static const struct {
        const char *key;
        int32_t type;
    } types[] = {{"q2_k", MOPT_GGML_Q2_K}, {"q3_k", MOPT_GGML_Q3_K}, {"q4_k", MOPT_GGML_Q4_K}, {"q5_k", MOPT_GGML_Q5_K}, {"q6_k", MOPT_GGML_Q6_K}};
    for (size_t t = 0; t < 5; t++) {
        size_t nb;
        uint8_t *want = unhex(json_string_value(json_object_get(json_object_get(fx, "blocks"), types[t].key)), &nb);
        const int64_t bb = mopt_ggml_block_bytes(types[t].type);
        uint8_t blk[256];
        for (int64_t r = 0; r < rows; r++) {
            memcpy(blk, want + r * bb, (size_t)bb);
            if (types[t].type == MOPT_GGML_Q6_K) memset(blk, 0, 192); /* levels cleared, scales and d kept */
            else if (types[t].type == MOPT_GGML_Q2_K) memset(blk + 16, 0, 64);
            else if (types[t].type == MOPT_GGML_Q3_K) memset(blk, 0, 96);
            else memset(blk + 16, 0, (size_t)bb - 16);
            float got[256];
            for (int v = 0; v < 256; v++) got[v] = mopt_ggml_block_requantize(types[t].type, blk, v, x[r * cols + v]);
            /* where a sub-block's stored scale is 0, ggml keeps the search's levels: only blocks without one are rebuilt */
            int zero_scale = 0;
            const uint8_t *wb = want + r * bb;
            if (types[t].type == MOPT_GGML_Q6_K) {
                for (int j = 0; j < 16; j++) zero_scale |= want[r * bb + 192 + j] == 0;
                zero_scale |= !mopt_f16_at(want + r * bb + 208);
            } else if (types[t].type == MOPT_GGML_Q2_K) {
                for (int j = 0; j < 16; j++) zero_scale |= (wb[j] & 0xF) == 0;
                zero_scale |= !mopt_f16_at(wb + 80);
            } else if (types[t].type == MOPT_GGML_Q3_K) { /* a 6-bit scale of 32 is 0 */
                for (int j = 0; j < 16; j++)
                    zero_scale |= ((j < 8 ? wb[96 + j] & 0xF : wb[96 + j - 8] >> 4) | ((wb[104 + j % 4] >> (2 * (j / 4))) & 3) << 4) == 32;
                zero_scale |= !mopt_f16_at(wb + 108);
            } else {
                uint8_t sc[8], mn[8];
                mopt_kquant_scales_mins(want + r * bb + 4, sc, mn);
                for (int j = 0; j < 8; j++) zero_scale |= sc[j] == 0;
                zero_scale |= !mopt_f16_at(want + r * bb);
            }
            if (!zero_scale) assert_memory_equal(blk, want + r * bb, (size_t)bb);
            rebuilt += !zero_scale;
            assert_int_equal(mopt_ggml_dequantize_row(types[t].type, blk, 256, dec, NULL), MOPT_OK);
            for (int v = 0; v < 256; v++) assert_true(got[v] == dec[v]);
        }
        free(want);
    }
    assert_true(rebuilt >= 5 * 16); /* most of the 24 rows per type */
    free(x);
    json_decref(fx);
}

/* quant.gptq<gguf_type=q4_k_m> leaves each linear as the blocks export.gguf<type=q4_k_m> gives it (Q6_K where the
 * mix bumps attn_v / ffn_down, Q4_K elsewhere), and the export writes those blocks unchanged. */
static void test_gptq_onto_gguf_blocks_exports_them_as_they_are(void **s) {
    REQUIRE_SHARED();
    char text[4096], calib[1024], file[1400];
    snprintf(text, sizeof text, "quant.gptq<gguf_type=q4_k_m;calib=%s;calib_samples=4;calib_len=128>",
             test_shared_path(calib, sizeof calib, "data/lit-train.txt"));
    mopt_model *m = test_load_model("models/lit-llama-7m");
    mopt_report_free(test_run_pipeline(m, text));
    const mopt_graph *g = mopt_model_graph(m);
    const mopt_tensor *v0 = mopt_graph_find_tensor(g, "model.layers.0.self_attn.v_proj.weight"),
                      *v1 = mopt_graph_find_tensor(g, "model.layers.1.self_attn.v_proj.weight"),
                      *q1 = mopt_graph_find_tensor(g, "model.layers.1.self_attn.o_proj.weight");
    assert_int_equal(v0->dtype, MOPT_DTYPE_KQUANT);
    assert_int_equal(v0->quant->bits, 6);
    assert_int_equal(v1->quant->bits, 4);
    assert_int_equal(q1->quant->bits, 4);
    snprintf(text, sizeof text, "export.gguf<out=%s/gq.gguf;type=q4_k_m;force=true>", dir);
    mopt_report_free(test_run_pipeline(m, text));
    snprintf(file, sizeof file, "%s/gq.gguf", dir);
    size_t n;
    unsigned char *d = read_whole(file, &n);
    uint32_t ty;
    const unsigned char *p = kquant_tensor(d, "blk.1.attn_output.weight", &ty, &n); /* rows as the graph's (q, k: RoPE order) */
    assert_int_equal(ty, 12);
    assert_memory_equal(p, q1->data, n);
    p = kquant_tensor(d, "blk.0.attn_v.weight", &ty, &n);
    assert_int_equal(ty, 14);
    assert_memory_equal(p, v0->data, n);
    free(d);
    mopt_model_free(m);
}

/* GPTQ's descent after the sweep (quant.gptq<refine>: levels, sub-block scales, d and dmin against each linear's
 * layer loss) brings a Q4_K_M model (one block's linears, to keep the test short) closer to the float one than the
 * sweep alone: lower KL on lit-val text the calibration never saw, and the same block types. */
static void test_gptq_descent_brings_blocks_closer_to_the_float_model(void **s) {
    REQUIRE_SHARED();
    char text[4096], calib[1024], val[1024], base[1024];
    test_shared_path(calib, sizeof calib, "data/lit-train.txt");
    test_shared_path(val, sizeof val, "data/lit-val.txt");
    test_shared_path(base, sizeof base, "models/lit-llama-7m");
    double kl[2];
    for (int refine = 0; refine < 2; refine++) {
        snprintf(text, sizeof text,
                 "quant.gptq<gguf_type=q4_k_m;only=*layers.1.*;refine=%d;calib=%s;calib_samples=16;calib_len=256>,"
                 "eval.compare<baseline=%s;data=%s;limit_tokens=8192;bootstrap=0>",
                 refine ? 2 : 0, calib, base, val);
        mopt_model *m = test_load_model("models/lit-llama-7m");
        mopt_report *r = test_run_pipeline(m, text);
        kl[refine] = mopt_report_get_metric(r, "kl_mean");
        const mopt_tensor *t = mopt_graph_find_tensor(mopt_model_graph(m), "model.layers.1.mlp.down_proj.weight");
        assert_int_equal(t->dtype, MOPT_DTYPE_KQUANT);
        mopt_report_free(r);
        mopt_model_free(m);
    }
    fprintf(stderr, "q4_k_m GPTQ on layer 1, KL to the float model on 8k tokens of lit-val: sweep %.6f, with the descent %.6f\n", kl[0], kl[1]);
    assert_true(kl[0] > 0);
    assert_true(kl[1] < kl[0]);
}

/* quant.awq<gguf_type=q4_0> on layer 1: its linears become Q4_0 blocks (the QINT symmetric groups of 32 export.gguf
 * writes as Q4_0), and with AWQ's scales searched on those blocks and the blocks weighted by the calibration inputs,
 * the model is closer to the float one (KL on lit-val text the calibration never saw) than with the Q4_0 blocks
 * llama-quantize writes without calibration (ggml's quantize_row_q4_0 of the same weights). */
static void test_awq_onto_gguf_blocks_beats_uncalibrated_blocks(void **s) {
    REQUIRE_SHARED();
    static const char *const lin[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                      "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
    char text[4096], calib[1024], val[1024], base[1024], name[128];
    test_shared_path(calib, sizeof calib, "data/lit-train.txt");
    test_shared_path(val, sizeof val, "data/lit-val.txt");
    test_shared_path(base, sizeof base, "models/lit-llama-7m");
    double kl[2];
    for (int awq = 0; awq < 2; awq++) {
        mopt_model *m = test_load_model("models/lit-llama-7m");
        mopt_graph *g = mopt_model_graph(m);
        mopt_error err = {0};
        for (int i = 0; i < 7 && !awq; i++) { /* the uncalibrated blocks, row by row as llama-quantize makes them */
            snprintf(name, sizeof name, "model.layers.1.%s.weight", lin[i]);
            const mopt_tensor *t = mopt_graph_find_tensor(g, name);
            const int64_t rows = t->ne[1], cols = t->ne[0], rb = cols / 32 * mopt_ggml_type_block_bytes(2);
            float *row = malloc((size_t)cols * sizeof *row);
            uint8_t *blocks = malloc((size_t)(rows * rb));
            for (int64_t r = 0; r < rows; r++) {
                assert_int_equal(mopt_weight_row_f32(t, r, row, &err), MOPT_OK);
                assert_int_equal(mopt_ggml_quantize_row(2, row, cols, blocks + r * rb, &err), MOPT_OK);
            }
            assert_int_equal(mopt_graph_replace_tensor(g, mopt_ggml_blocks_tensor(name, 2, rows, cols, blocks, &err), &err), MOPT_OK);
            free(row);
            free(blocks);
        }
        snprintf(text, sizeof text, "%s%s%s%seval.compare<baseline=%s;data=%s;limit_tokens=8192;bootstrap=0>",
                 awq ? "quant.awq<gguf_type=q4_0;only=*layers.1.*;calib=" : "", awq ? calib : "",
                 awq ? ";calib_samples=16;calib_len=256>" : "", awq ? "," : "", base, val);
        mopt_report *r = test_run_pipeline(m, text);
        kl[awq] = mopt_report_get_metric(r, "kl_mean");
        for (int i = 0; i < 7; i++) {
            snprintf(name, sizeof name, "model.layers.1.%s.weight", lin[i]);
            const mopt_tensor *t = mopt_graph_find_tensor(g, name);
            assert_int_equal(t->dtype, MOPT_DTYPE_QINT);
            assert_int_equal(t->quant->bits, 4);
            assert_int_equal(t->quant->group_size, 32);
        }
        assert_int_not_equal(mopt_graph_find_tensor(g, "model.layers.0.mlp.down_proj.weight")->dtype, MOPT_DTYPE_QINT);
        mopt_report_free(r);
        mopt_model_free(m);
    }
    fprintf(stderr, "q4_0 on layer 1, KL to the float model on 8k tokens of lit-val: llama-quantize's blocks %.6f, AWQ's %.6f\n", kl[0], kl[1]);
    assert_true(kl[1] > 0);
    assert_true(kl[1] < kl[0]);
}

/* llama-imatrix's GGUF imatrix, laid out by hand from its save_imatrix (keys general.type, imatrix.datasets,
 * imatrix.chunk_count, imatrix.chunk_size; per weight by name, <name>.in_sum2 and <name>.counts as f32, one
 * dimension each since ggml drops trailing 1s; 32-byte alignment): the reader takes in_sum2 / counts (as
 * llama-quantize), the writer gives the same bytes back, the matrix survives a trip through imatrix.dat, and a
 * model file, a missing counts tensor, expert matrices and mutated files are refused cleanly. */
static size_t gguf_imatrix_by_hand(uint8_t *b, int with_counts, uint64_t n_mat) {
    size_t n = 0;
#define PUT(v) (memcpy(b + n, &(v), sizeof(v)), n += sizeof(v))
#define STR(t) do { const uint64_t l_ = strlen(t); PUT(l_); memcpy(b + n, t, l_); n += l_; } while (0)
    const uint32_t version = 3, t_str = 8, t_arr = 9, t_u32 = 4, chunks = 4, chunk = 128, f32 = 0;
    const uint64_t n_t = with_counts ? 4 : 3, n_kv = 4, one = 1;
    memcpy(b, "GGUF", 4);
    n = 4;
    PUT(version), PUT(n_t), PUT(n_kv);
    STR("general.type");
    PUT(t_str);
    STR("imatrix");
    STR("imatrix.datasets");
    PUT(t_arr), PUT(t_str), PUT(one);
    STR("calib");
    STR("imatrix.chunk_count");
    PUT(t_u32), PUT(chunks);
    STR("imatrix.chunk_size");
    PUT(t_u32), PUT(chunk);
    static const char *const names[] = {"blk.0.attn_q.weight.in_sum2", "blk.0.attn_q.weight.counts", "blk.0.ffn_down.weight.in_sum2",
                                        "blk.0.ffn_down.weight.counts"};
    const uint64_t ne[] = {3, 1, 2, 1}, off[] = {0, 32, 64, 96};
    for (int t = 0, k = 0; t < 4; t++) {
        if (!with_counts && t == 3) continue;
        const uint32_t nd = n_mat > 1 && t == 0 ? 2 : 1;
        const uint64_t o = off[k++];
        STR(names[t]);
        PUT(nd), PUT(ne[t]);
        if (nd == 2) PUT(n_mat);
        PUT(f32), PUT(o);
    }
    while (n % 32) b[n++] = 0;
    const float sums0[3] = {1024.0f, 256.0f, 64.0f}, sums1[2] = {768.0f, 128.0f}, tokens = 512.0f;
    memset(b + n, 0, 128);
    memcpy(b + n, sums0, 12), memcpy(b + n + 32, &tokens, 4), memcpy(b + n + 64, sums1, 8), memcpy(b + n + 96, &tokens, 4);
    return n + (with_counts ? 128 : 96);
#undef STR
#undef PUT
}

static void test_gguf_imatrix_files_follow_llama_imatrix_layout(void **s) {
    REQUIRE_SHARED();
    uint8_t b[1024];
    const size_t n = gguf_imatrix_by_hand(b, 1, 1);
    char path[1400], back[1400], dat[1400];
    snprintf(path, sizeof path, "%s/hand-imatrix.gguf", dir);
    snprintf(back, sizeof back, "%s/back-imatrix.gguf", dir);
    snprintf(dat, sizeof dat, "%s/via.dat", dir);
    mopt_error err = {0};
    assert_int_equal(mopt_file_write_atomic(path, b, n, &err), MOPT_OK);
    mopt_imatrix *m = NULL;
    assert_int_equal(mopt_imatrix_read(path, &m, &err), MOPT_OK);
    assert_int_equal(m->n, 2);
    assert_int_equal(m->chunks, 4);
    assert_int_equal(m->chunk_size, 128);
    assert_string_equal(m->dataset, "calib");
    const float *q = mopt_imatrix_find(m, "blk.0.attn_q.weight"), *d = mopt_imatrix_find(m, "blk.0.ffn_down.weight");
    assert_true(q && q[0] == 2.0f && q[1] == 0.5f && q[2] == 0.125f);
    assert_true(d && d[0] == 1.5f && d[1] == 0.25f);
    assert_int_equal(m->e[0].ncall, 4); /* 512 tokens in chunks of 128 */
    assert_int_equal(mopt_imatrix_write(back, m, &err), MOPT_OK);
    size_t nb;
    char *w = read_whole(back, &nb);
    assert_int_equal(nb, n);
    assert_memory_equal(w, b, n);
    free(w);
    /* through the legacy layout and back: the same means */
    assert_int_equal(mopt_imatrix_write(dat, m, &err), MOPT_OK);
    mopt_imatrix_free(m);
    assert_int_equal(mopt_imatrix_read(dat, &m, &err), MOPT_OK);
    q = mopt_imatrix_find(m, "blk.0.attn_q.weight");
    assert_true(q && q[0] == 2.0f && q[1] == 0.5f && q[2] == 0.125f);
    mopt_imatrix_free(m);
    /* a model file is no importance matrix; in_sum2 without counts; a mixture of experts' matrices */
    char model[1400];
    snprintf(model, sizeof model, "%s/f32.gguf", dir);
    mopt_model *lm = test_load_model("models/stories260K/stories260K.bin");
    mopt_model_free(export_and_load(lm, "", "f32", "f32.gguf"));
    mopt_model_free(lm);
    m = NULL;
    assert_int_not_equal(mopt_imatrix_read(model, &m, &err), MOPT_OK);
    assert_null(m);
    assert_non_null(strstr(err.msg, "not an importance matrix"));
    size_t k = gguf_imatrix_by_hand(b, 0, 1);
    assert_int_equal(mopt_file_write_atomic(path, b, k, &err), MOPT_OK);
    assert_int_not_equal(mopt_imatrix_read(path, &m, &err), MOPT_OK);
    assert_non_null(strstr(err.msg, "counts"));
    k = gguf_imatrix_by_hand(b, 1, 2);
    assert_int_equal(mopt_file_write_atomic(path, b, k, &err), MOPT_OK);
    assert_int_not_equal(mopt_imatrix_read(path, &m, &err), MOPT_OK);
    /* 400 mutants: each reads or fails cleanly (ASan watches) */
    uint32_t seed = 777;
    uint8_t bad[1024];
    for (int t = 0; t < 400; t++) {
        memcpy(bad, gguf_imatrix_by_hand(b, 1, 1) ? b : b, n);
        size_t len = n;
        for (int e = 0; e < 1 + t % 4; e++) {
            seed = seed * 1664525u + 1013904223u;
            bad[(seed >> 8) % n] = (uint8_t)(seed >> 24);
        }
        if (t % 5 == 0) len = (seed >> 4) % n;
        assert_int_equal(mopt_file_write_atomic(path, bad, len, &err), MOPT_OK);
        m = NULL;
        if (mopt_imatrix_read(path, &m, &err) == MOPT_OK) mopt_imatrix_free(m);
        else assert_null(m);
    }
}

/* GPTQ's second look at a sub-block (mopt_ggml_block_refit_sub): in a k-quant block whose values lie on its grid, a
 * sub-block's stored scale moved by 2 is found again from those values (the block decodes to them once more), only
 * that scale's bits change, and a sub-block already right is left alone. Blocks: the fixture's rows as mopt (=
 * llama-quantize) quantizes them; the scale is moved by hand in each type's layout. */
static void test_block_refit_finds_a_moved_sub_block_scale(void **s) {
    int64_t rows, cols;
    float *x;
    json_t *fx = ref_blocks(&rows, &cols, &x);
    float y[256], w[32];
    for (int i = 0; i < 32; i++) w[i] = 1;
    static const int32_t types[] = {MOPT_GGML_Q2_K, MOPT_GGML_Q3_K, MOPT_GGML_Q4_K, MOPT_GGML_Q5_K, MOPT_GGML_Q6_K};
    int found = 0;
    for (size_t t = 0; t < 5; t++) {
        const int32_t ty = types[t];
        const int n = mopt_ggml_type_sub_block(ty), bb = (int)mopt_ggml_type_block_bytes(ty);
        assert_int_equal(n, ty == MOPT_GGML_Q4_K || ty == MOPT_GGML_Q5_K ? 32 : 16);
        for (int64_t r = 12; r < rows; r++) { /* the ordinary rows */
            uint8_t blk[256], moved[256];
            assert_int_equal(mopt_ggml_quantize_block(ty, x + r * cols, NULL, blk, NULL), MOPT_OK);
            assert_int_equal(mopt_ggml_dequantize_row(ty, blk, 256, y, NULL), MOPT_OK);
            for (int j = 0; j < (ty == MOPT_GGML_Q4_K || ty == MOPT_GGML_Q5_K ? 4 : 16); j++) {
                memcpy(moved, blk, (size_t)bb);
                assert_int_equal(mopt_ggml_block_refit_sub(ty, moved, j, y + j * n, w), 0); /* on its grid already */
                uint8_t *p; /* the byte holding the scale's low bits, and how to move it by 2 */
                int sh = 0, mask = 0xFF;
                switch (ty) {
                case MOPT_GGML_Q2_K: p = moved + j, mask = 0x0F; break;
                case MOPT_GGML_Q3_K: p = moved + 96 + j % 8, sh = j < 8 ? 0 : 4, mask = 0x0F; break;
                case MOPT_GGML_Q6_K: p = moved + 192 + j; break;
                default: p = moved + 4 + j, mask = 0x3F; break;
                }
                const int low = (*p >> sh) & mask;
                if (ty == MOPT_GGML_Q6_K ? (int8_t)*p < -120 || abs((int8_t)*p) < 4 : low < 4) continue; /* room to move down, no sign change */
                *p = (uint8_t)((*p & ~(mask << sh)) | ((low - 2) & mask) << sh);
                assert_int_equal(mopt_ggml_block_refit_sub(ty, moved, j, y + j * n, w), 1);
                float back[256];
                assert_int_equal(mopt_ggml_dequantize_row(ty, moved, 256, back, NULL), MOPT_OK);
                for (int i = 0; i < 256; i++) assert_true(back[i] == y[i]);
                found++;
            }
        }
    }
    assert_true(found > 5 * 20);
    assert_int_equal(mopt_ggml_type_sub_block(MOPT_GGML_Q4_0), 0);
    free(x);
    json_decref(fx);
}

/* GPTQ's descent moves a block's fields one at a time (mopt_ggml_block_basis, set_scales, sub_get, sub_set): on
 * the fixture's llama-quantize blocks of every type, the bases times the stored d and dmin decode as the block
 * does; new d and dmin scale them exactly so; a sub-block's scale or min stepped by one moves that sub-block's 16
 * or 32 values alone, each by its level times d (or by dmin); out-of-range values leave the block as it was. */
static void test_block_fields_move_the_values_they_own(void **s) {
    int64_t rows, cols;
    float *x;
    json_t *fx = ref_blocks(&rows, &cols, &x);
    static const struct {
        const char *key;
        int32_t type;
    } types[] = {{"q4_0", MOPT_GGML_Q4_0}, {"q8_0", MOPT_GGML_Q8_0}, {"q2_k", MOPT_GGML_Q2_K}, {"q3_k", MOPT_GGML_Q3_K},
                 {"q4_k", MOPT_GGML_Q4_K}, {"q5_k", MOPT_GGML_Q5_K}, {"q6_k", MOPT_GGML_Q6_K}};
    int stepped = 0;
    for (size_t t = 0; t < sizeof types / sizeof *types; t++) {
        const int32_t ty = types[t].type;
        size_t nb;
        uint8_t *all = unhex(json_string_value(json_object_get(json_object_get(fx, "blocks"), types[t].key)), &nb);
        const int64_t bs = mopt_ggml_type_block(ty), bb = mopt_ggml_type_block_bytes(ty), sub = mopt_ggml_type_sub_block(ty);
        const int with_min = ty == MOPT_GGML_Q2_K || ty == MOPT_GGML_Q4_K || ty == MOPT_GGML_Q5_K;
        for (int64_t k = 0; k < (int64_t)nb / bb; k++) {
            uint8_t blk[256], was[256];
            memcpy(blk, all + k * bb, (size_t)bb);
            float dec[256], pd[256], pm[256], sc[2], sc2[2];
            assert_int_equal(mopt_ggml_dequantize_row(ty, blk, bs, dec, NULL), MOPT_OK);
            assert_int_equal(mopt_ggml_block_basis(ty, blk, pd, pm, sc), with_min ? 2 : 1);
            for (int64_t i = 0; i < bs; i++) /* ggml rounds d * scale first; one rounding either way */
                assert_true(fabs(sc[0] * (double)pd[i] + (with_min ? sc[1] * (double)pm[i] : 0) - dec[i]) <= 1e-6 * fabs(dec[i]) + 1e-30);
            mopt_ggml_block_set_scales(ty, blk, 0.75f, 0.5f); /* both exact in f16 */
            assert_int_equal(mopt_ggml_dequantize_row(ty, blk, bs, dec, NULL), MOPT_OK);
            assert_int_equal(mopt_ggml_block_basis(ty, blk, pd, pm, sc2), with_min ? 2 : 1);
            assert_true(sc2[0] == 0.75f && sc2[1] == (with_min ? 0.5f : 0.0f));
            for (int64_t i = 0; i < bs; i++) assert_true(fabs(0.75 * pd[i] + (with_min ? 0.5 * pm[i] : 0) - dec[i]) <= 1e-6 * fabs(dec[i]));
            if (!sub) continue;
            for (int32_t j = 0; j < bs / sub; j++) {
                int sm[2], moved[2], back[2];
                mopt_ggml_block_sub_get(ty, blk, j, sm);
                memcpy(was, blk, (size_t)bb);
                const int out_of_range[2] = {ty == MOPT_GGML_Q6_K ? 128 : 64, 0}, bad_min[2] = {sm[0], -1};
                assert_int_equal(mopt_ggml_block_sub_set(ty, blk, j, out_of_range), 0);
                assert_int_equal(mopt_ggml_block_sub_set(ty, blk, j, bad_min), 0);
                assert_memory_equal(blk, was, (size_t)bb);
                for (int p = 0; p < 1 + with_min; p++) {
                    moved[0] = sm[0] + (p == 0), moved[1] = sm[1] + (p == 1);
                    if (!mopt_ggml_block_sub_set(ty, blk, j, moved)) continue; /* at the top of its range */
                    mopt_ggml_block_sub_get(ty, blk, j, back);
                    assert_true(back[0] == moved[0] && back[1] == moved[1]);
                    float after[256];
                    assert_int_equal(mopt_ggml_dequantize_row(ty, blk, bs, after, NULL), MOPT_OK);
                    for (int64_t i = 0; i < bs; i++) {
                        /* pd = scale x level: one more of scale adds d x level, one more of min takes dmin away */
                        if (p == 0 && i / sub == j && sm[0] == 0) continue; /* no level to read off a zero scale */
                        const double want = i / sub != j ? dec[i] : p == 0 ? dec[i] + 0.75 * pd[i] / sm[0] : dec[i] - 0.5;
                        assert_true(fabs(after[i] - want) <= 1e-5 * (fabs(want) + 1));
                    }
                    assert_true(mopt_ggml_block_sub_set(ty, blk, j, sm));
                    assert_memory_equal(blk, was, (size_t)bb);
                    stepped++;
                }
            }
        }
        free(all);
    }
    assert_true(stepped > 5 * 24 * 8);
    free(x);
    json_decref(fx);
}

/* mopt_ggml_quantize_block_direct (GPTQ's diag(H) as the error weights themselves): given llama-quantize's own
 * weights for the fixture's importance matrix, it makes llama-quantize's imatrix blocks. */
static void test_direct_error_weights_reproduce_llama_quantize_imatrix_blocks(void **s) {
    int64_t rows, cols;
    float *x;
    json_t *fx = ref_blocks(&rows, &cols, &x);
    /* llama-quantize's weights: qw * sqrt(sigma^2 + x^2) with its quantize_row_*_impl's sigma^2 (Q2_K: mean x^2 over
     * 256, Q3_K ... Q5_K: twice that; Q6_K: qw alone) */
    size_t ni, nb;
    float *imat = (float *)unhex(json_string_value(json_object_get(fx, "imatrix")), &ni), wd[256];
    static const struct {
        const char *key;
        int32_t type;
    } direct[] = {{"q2_k", MOPT_GGML_Q2_K}, {"q3_k", MOPT_GGML_Q3_K}, {"q4_k", MOPT_GGML_Q4_K}, {"q5_k", MOPT_GGML_Q5_K}, {"q6_k", MOPT_GGML_Q6_K}};
    int same = 0, total = 0;
    for (size_t t = 0; t < 5; t++) {
        uint8_t *want = unhex(json_string_value(json_object_get(json_object_get(fx, "blocks_imatrix"), direct[t].key)), &nb);
        const int64_t bb = mopt_ggml_type_block_bytes(direct[t].type);
        for (int64_t r = 12; r < rows; r++) {
            const float *xr = x + r * cols;
            float sum = 0;
            for (int i = 0; i < 256; i++) sum += xr[i] * xr[i];
            const float sigma2 = direct[t].type == MOPT_GGML_Q2_K ? sum / 256 : 2 * sum / 256;
            for (int i = 0; i < 256; i++) wd[i] = direct[t].type == MOPT_GGML_Q6_K ? imat[i] : imat[i] * sqrtf(sigma2 + xr[i] * xr[i]);
            uint8_t blk[256];
            assert_int_equal(mopt_ggml_quantize_block_direct(direct[t].type, xr, wd, blk, NULL), MOPT_OK);
            same += !memcmp(blk, want + r * bb, (size_t)bb);
            total++;
        }
        free(want);
    }
    fprintf(stderr, "direct weights: %d of %d blocks are llama-quantize's imatrix blocks\n", same, total);
    assert_int_equal(same, total);
    free(imat);
    free(x);
    json_decref(fx);
}

/* llama.cpp's legacy imatrix.dat, laid out by hand from llama-imatrix's save_imatrix: the reader takes the means
 * as stored / ncall in float (as llama-quantize does), the writer gives the same bytes back, and cut or
 * inconsistent files fail with a message naming the file. */
static void test_imatrix_files_read_write_and_refuse(void **s) {
    uint8_t b[512];
    size_t n = 0;
#define PUT(v) (memcpy(b + n, &(v), sizeof(v)), n += sizeof(v))
    const int32_t entries = 2, len0 = 19, ncall0 = 4, nval0 = 3, len1 = 20, ncall1 = 1, nval1 = 2, chunks = 4, dl = 5;
    const float v0[3] = {8.0f, 2.0f, 0.5f}, v1[2] = {1.5f, 0.25f};
    PUT(entries);
    PUT(len0), memcpy(b + n, "blk.0.attn_q.weight", 19), n += 19, PUT(ncall0), PUT(nval0);
    for (int i = 0; i < 3; i++) PUT(v0[i]);
    PUT(len1), memcpy(b + n, "blk.0.ffn_down.weight", 20), n += 20, PUT(ncall1), PUT(nval1);
    for (int i = 0; i < 2; i++) PUT(v1[i]);
    PUT(chunks), PUT(dl), memcpy(b + n, "calib", 5), n += 5;
#undef PUT
    char path[1400], back[1400];
    snprintf(path, sizeof path, "%s/hand.dat", dir);
    snprintf(back, sizeof back, "%s/back.dat", dir);
    mopt_error err = {0};
    assert_int_equal(mopt_file_write_atomic(path, b, n, &err), MOPT_OK);
    mopt_imatrix *m = NULL;
    assert_int_equal(mopt_imatrix_read(path, &m, &err), MOPT_OK);
    assert_int_equal(m->n, 2);
    assert_int_equal(m->chunks, 4);
    assert_string_equal(m->dataset, "calib");
    const float *q = mopt_imatrix_find(m, "blk.0.attn_q.weight");
    assert_non_null(q);
    assert_int_equal(mopt_imatrix_len(m, "blk.0.attn_q.weight"), 3);
    assert_true(q[0] == 2.0f && q[1] == 0.5f && q[2] == 0.125f);
    assert_null(mopt_imatrix_find(m, "blk.0.attn_k.weight"));
    assert_int_equal(mopt_imatrix_write(back, m, &err), MOPT_OK);
    mopt_imatrix_free(m);
    size_t nb;
    char *d = read_whole(back, &nb);
    assert_int_equal(nb, n);
    assert_memory_equal(d, b, n);
    free(d);
    /* cut anywhere inside the entries, a count past the file, a negative importance: refused, naming the file */
    const size_t cuts[] = {2, 6, 20, 30, 40, n - 12};
    for (size_t c = 0; c < sizeof cuts / sizeof *cuts; c++) {
        assert_int_equal(mopt_file_write_atomic(path, b, cuts[c], &err), MOPT_OK);
        assert_int_not_equal(mopt_imatrix_read(path, &m, &err), MOPT_OK);
        assert_null(m);
        assert_non_null(strstr(err.msg, "hand.dat"));
    }
    uint8_t bad[512];
    memcpy(bad, b, n);
    const int32_t huge = 1 << 28;
    memcpy(bad + 4 + 4 + 19 + 4, &huge, 4); /* nval0 */
    assert_int_equal(mopt_file_write_atomic(path, bad, n, &err), MOPT_OK);
    assert_int_not_equal(mopt_imatrix_read(path, &m, &err), MOPT_OK);
    assert_non_null(strstr(err.msg, "do not fit"));
    memcpy(bad, b, n);
    const float neg = -1.0f;
    memcpy(bad + 4 + 4 + 19 + 8, &neg, 4);
    assert_int_equal(mopt_file_write_atomic(path, bad, n, &err), MOPT_OK);
    assert_int_not_equal(mopt_imatrix_read(path, &m, &err), MOPT_OK);
    assert_non_null(strstr(err.msg, "sum of squares"));
    /* 400 mutants (a few bytes set to random values, sometimes cut): each reads or fails cleanly (ASan watches) */
    uint32_t seed = 12345;
    int loaded = 0;
    for (int k = 0; k < 400; k++) {
        memcpy(bad, b, n);
        size_t len = n;
        for (int e = 0; e < 1 + k % 4; e++) {
            seed = seed * 1664525u + 1013904223u;
            bad[(seed >> 8) % n] = (uint8_t)(seed >> 24);
        }
        if (k % 5 == 0) len = (seed >> 4) % n;
        assert_int_equal(mopt_file_write_atomic(path, bad, len, &err), MOPT_OK);
        m = NULL;
        if (mopt_imatrix_read(path, &m, &err) == MOPT_OK) {
            loaded++;
            mopt_imatrix_free(m);
        } else {
            assert_null(m);
        }
    }
    fprintf(stderr, "imatrix.dat: %d of 400 mutants still read, the rest failed cleanly\n", loaded);
}

/* The importance-weighted squared error of a GGUF linear's decoding against the original weights. */
static double weighted_error(mopt_model *orig, mopt_model *q, const char *wname, const float *qw) {
    const mopt_tensor *a = mopt_graph_find_tensor(mopt_model_graph(orig), wname), *b = mopt_graph_find_tensor(mopt_model_graph(q), wname);
    assert_true(a && b);
    const int64_t in = a->ne[0];
    float *ra = malloc((size_t)in * sizeof *ra), *rb = malloc((size_t)in * sizeof *rb);
    mopt_error err = {0};
    double e = 0;
    for (int64_t r = 0; r < a->ne[1]; r++) {
        assert_int_equal(mopt_weight_row_f32(a, r, ra, &err), MOPT_OK);
        assert_int_equal(mopt_weight_row_f32(b, r, rb, &err), MOPT_OK);
        for (int64_t j = 0; j < in; j++) e += (double)qw[j] * ((double)ra[j] - rb[j]) * ((double)ra[j] - rb[j]);
    }
    free(ra);
    free(rb);
    return e;
}

/* quant.imatrix computes, per GGUF linear, the calibration tokens' mean x^2 per input column: q, k and v (one
 * input) get the same vector, every value is positive. Q4_0 weighted by it has a lower importance-weighted error
 * over the linears than Q4_0 without (round to nearest), and llama.cpp's type rule for Q4_0 with an imatrix (the
 * first eighth of ffn_down as Q4_1) holds. (That the weighted blocks are llama-quantize's is the fixture's test.) */
/* mopt_gguf_write from a caller built against older headers: a struct_size short of imatrix leaves the importance
 * matrix off (the pointer past it, garbage here, is not read): the file equals the one written from the full struct.
 * A struct_size of 0 (a {0} initializer) is refused rather than read as all defaults, and nothing is written. */
static void test_gguf_write_reads_no_option_past_the_callers_struct_size(void **s) {
    REQUIRE_SHARED();
    mopt_model *m = test_load_model("models/lit-llama-7m");
    const mopt_graph *g = mopt_model_graph(m);
    mopt_error err = {0};
    mopt_gguf_write_result res;
    char a[1400], b[1400];
    snprintf(a, sizeof a, "%s/opts-full.gguf", dir);
    snprintf(b, sizeof b, "%s/opts-short.gguf", dir);
    mopt_gguf_write_opts full;
    mopt_gguf_write_opts_default(&full);
    assert_int_equal(full.struct_size, sizeof full);
    full.type = "q4_0";
    mopt_gguf_write_opts shorter = full;
    shorter.struct_size = (uint32_t)offsetof(mopt_gguf_write_opts, imatrix);
    shorter.imatrix = (const mopt_imatrix *)(uintptr_t)0x10; /* past the caller's struct: never followed */
    assert_int_equal(mopt_gguf_write(g, mopt_model_tokenizer(m), a, &full, &res, &err), MOPT_OK);
    assert_int_equal(mopt_gguf_write(g, mopt_model_tokenizer(m), b, &shorter, &res, &err), MOPT_OK);
    size_t na, nb;
    unsigned char *da = read_whole(a, &na), *db = read_whole(b, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(da, db, na);
    assert_int_equal(tensor_type(da, "blk.0.attn_q.weight"), 2); /* Q4_0 */
    free(da), free(db);
    char c[1400];
    snprintf(c, sizeof c, "%s/opts-zero.gguf", dir);
    mopt_gguf_write_opts zero = {0};
    zero.type = "q4_0";
    assert_int_equal(mopt_gguf_write(g, mopt_model_tokenizer(m), c, &zero, &res, &err), MOPT_E_INVALID);
    CHECK_ERR(err, MOPT_E_INVALID, "struct_size is 0: start from mopt_gguf_write_opts_default()");
    struct stat sb;
    assert_int_not_equal(stat(c, &sb), 0); /* nothing written */
    mopt_model_free(m);
}

static void test_imatrix_from_calibration_weights_the_gguf_quantizers(void **s) {
    REQUIRE_SHARED();
    char text[4096], calib[1024], dat[1400], file[1400];
    snprintf(dat, sizeof dat, "%s/lit.dat", dir);
    test_shared_path(calib, sizeof calib, "data/lit-train.txt");
    snprintf(text, sizeof text, "quant.imatrix<out=%s;calib=%s;calib_samples=16;calib_len=256>", dat, calib);
    mopt_model *m = test_load_model("models/lit-llama-7m");
    mopt_report *r = test_run_pipeline(m, text);
    assert_int_equal((int)mopt_report_get_metric(r, "entries"), 8 * 7);
    test_pipeline_fails("models/lit-llama-7m", text, "exists: force=true replaces it"); /* never over a file unasked */
    assert_int_equal((int)mopt_report_get_metric(r, "tokens"), 16 * 256);
    mopt_report_free(r);
    mopt_imatrix *im = NULL;
    mopt_error err = {0};
    assert_int_equal(mopt_imatrix_read(dat, &im, &err), MOPT_OK);
    assert_int_equal(im->n, 56);
    for (int l = 0; l < 8; l++) {
        char qn[64], kn[64], vn[64];
        snprintf(qn, sizeof qn, "blk.%d.attn_q.weight", l);
        snprintf(kn, sizeof kn, "blk.%d.attn_k.weight", l);
        snprintf(vn, sizeof vn, "blk.%d.attn_v.weight", l);
        const float *q = mopt_imatrix_find(im, qn), *k = mopt_imatrix_find(im, kn), *v = mopt_imatrix_find(im, vn);
        assert_true(q && k && v && mopt_imatrix_len(im, qn) == 256);
        assert_memory_equal(q, k, 256 * sizeof *q);
        assert_memory_equal(q, v, 256 * sizeof *q);
        for (int j = 0; j < 256; j++) assert_true(q[j] > 0);
    }
    mopt_model *plain = export_and_load(m, "", "q4_0", "q40.gguf");
    snprintf(text, sizeof text, "export.gguf<out=%s/q40i.gguf;type=q4_0;imatrix=%s;force=true>", dir, dat);
    mopt_report_free(test_run_pipeline(m, text));
    snprintf(file, sizeof file, "%s/q40i.gguf", dir);
    mopt_model *weighted = test_load_model(file);
    static const char *const kinds[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
                                        "mlp.up_proj", "mlp.down_proj"};
    static const char *const gguf[] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
    double sum_plain = 0, sum_weighted = 0;
    for (int l = 0; l < 8; l++)
        for (int k = 0; k < 7; k++) {
            char wn[128], gn[64];
            snprintf(wn, sizeof wn, "model.layers.%d.%s.weight", l, kinds[k]);
            snprintf(gn, sizeof gn, "blk.%d.%s.weight", l, gguf[k]);
            const float *qw = mopt_imatrix_find(im, gn);
            const double ep = weighted_error(m, plain, wn, qw), ew = weighted_error(m, weighted, wn, qw);
            sum_plain += ep, sum_weighted += ew;
        }
    fprintf(stderr, "lit-llama q4_0: importance-weighted error %.4g plain, %.4g with the matrix (%.2f%% lower)\n", sum_plain,
            sum_weighted, 100 * (1 - sum_weighted / sum_plain));
    assert_true(sum_weighted < sum_plain);
    mopt_imatrix_free(im);
    mopt_model_free(weighted);
    mopt_model_free(plain);
    size_t n;
    unsigned char *d = read_whole(file, &n);
    assert_int_equal(tensor_type(d, "blk.0.ffn_down.weight"), 3); /* Q4_1 */
    assert_int_equal(tensor_type(d, "blk.1.ffn_down.weight"), 2); /* Q4_0 */
    free(d);
    mopt_model_free(m);
}

int main(void) {
    test_tmpdir(dir, sizeof dir, "gguf");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blocks_equal_llama_quantize_bytes),
        cmocka_unit_test(test_llama2c_f32_gguf_is_exact),
        cmocka_unit_test(test_hf_llama_gguf_matches_after_the_rope_permutation),
        cmocka_unit_test(test_gpt2_gguf_fuses_qkv_and_roundtrips),
        cmocka_unit_test(test_qint_exports_as_q4_0_and_q8_0_bit_for_bit),
        cmocka_unit_test(test_a_loaded_gguf_keeps_no_second_copy_of_its_weights),
        cmocka_unit_test(test_a_gguf_token_embedding_table_stays_packed),
        cmocka_unit_test(test_every_type_decodes_independently_within_its_error),
        cmocka_unit_test(test_kquant_files_load_packed_and_export_bit_for_bit),
        cmocka_unit_test(test_k_mixes_give_the_layers_llama_quantize_gives),
        cmocka_unit_test(test_block_requantize_rebuilds_llama_quantize_blocks),
        cmocka_unit_test(test_block_refit_finds_a_moved_sub_block_scale),
        cmocka_unit_test(test_block_fields_move_the_values_they_own),
        cmocka_unit_test(test_direct_error_weights_reproduce_llama_quantize_imatrix_blocks),
        cmocka_unit_test(test_gptq_onto_gguf_blocks_exports_them_as_they_are),
        cmocka_unit_test(test_gptq_descent_brings_blocks_closer_to_the_float_model),
        cmocka_unit_test(test_awq_onto_gguf_blocks_beats_uncalibrated_blocks),
        cmocka_unit_test(test_imatrix_files_read_write_and_refuse),
        cmocka_unit_test(test_gguf_imatrix_files_follow_llama_imatrix_layout),
        cmocka_unit_test(test_imatrix_from_calibration_weights_the_gguf_quantizers),
        cmocka_unit_test(test_gguf_write_reads_no_option_past_the_callers_struct_size),
        cmocka_unit_test(test_gguf_tokenizers_encode_like_the_originals),
        cmocka_unit_test(test_the_chat_template_travels_through_gguf),
        cmocka_unit_test(test_a_gguf_models_tokenizer_goes_into_its_hf_export),
        cmocka_unit_test(test_broken_gguf_files_are_refused),
        cmocka_unit_test(test_patched_tensor_types_are_refused),
        cmocka_unit_test(test_inconsistent_gguf_metadata_is_refused),
        cmocka_unit_test(test_gguf_mutations_fail_cleanly),
        cmocka_unit_test(test_cli_quantize_to_gguf_and_eval),
    };
    return test_run_tests(tests, test_registry_setup, test_registry_teardown);
}
