/* The family tables: every tensor name a format gives a family's tensor parses
 * back to the same graph tensor, every reader finds its family, and a family's
 * build refuses what does not belong to it. */
#include "testutil.h"
#include "arch_impl.h"

static const mopt_family *const families[] = {&mopt_family_llama, &mopt_family_qwen2, &mopt_family_gpt2};

static void test_every_file_name_parses_back_to_its_rule(void **state) {
    (void)state;
    for (size_t f = 0; f < 3; f++)
        for (int naming = 0; naming < MOPT_NAMING_COUNT; naming++)
            for (int32_t i = 0; i < families[f]->n_rules; i++) {
                const mopt_name_rule *r = &families[f]->rules[i];
                const int32_t layer = r->at == MOPT_AT_LAYER ? 11 : -1;
                char gn[MOPT_MAX_NAME], fn[MOPT_MAX_NAME], kind[16];
                assert_non_null(mopt_rule_graph_name(r, layer, "bias", gn, sizeof gn));
                if (!mopt_family_file_name(families[f], (mopt_naming)naming, gn, fn, sizeof fn)) continue; /* not stored */
                const mopt_name_rule *got[3];
                int32_t l = -2;
                const int32_t n = mopt_family_parse_name(families[f], (mopt_naming)naming, fn, got, &l, kind, sizeof kind);
                assert_true(n >= 1);
                assert_int_equal(l, layer);
                assert_string_equal(kind, "bias");
                int found = 0;
                for (int32_t k = 0; k < n; k++) found |= got[k] == r;
                if (!found) {
                    fprintf(stderr, "%s: %s -> %s does not parse back\n", families[f]->name, gn, fn);
                    fail();
                }
            }
}

static void test_names_that_look_alike_are_not_parsed(void **state) {
    (void)state;
    const mopt_name_rule *got[3];
    int32_t l;
    char kind[16];
    const char *bad[] = {"blk.01.attn_q.weight", "blk.-1.attn_q.weight", "blk.1.attn_q.scale", "blk.1.attn_q", "blk..attn_q.weight",
                         "xblk.1.attn_q.weight", "blk.1.attn_qx.weight", "token_embd.weight.weight"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(mopt_family_parse_name(&mopt_family_llama, MOPT_NAMING_GGUF, bad[i], got, &l, kind, sizeof kind), 0);
    /* GPT-2's fused tensors stand for q, k and v in order */
    assert_int_equal(mopt_family_parse_name(&mopt_family_gpt2, MOPT_NAMING_HF, "transformer.h.3.attn.c_attn.weight", got, &l, kind,
                                            sizeof kind),
                     3);
    assert_int_equal(got[0]->role, MOPT_ROLE_ATTN_Q);
    assert_int_equal(got[2]->role, MOPT_ROLE_ATTN_V);
    assert_int_equal(l, 3);
}

static void test_each_reader_finds_its_family(void **state) {
    (void)state;
    assert_ptr_equal(mopt_family_of_hf("llama"), &mopt_family_llama);
    assert_ptr_equal(mopt_family_of_hf("mistral"), &mopt_family_llama);
    assert_ptr_equal(mopt_family_of_hf("qwen2"), &mopt_family_qwen2);
    assert_ptr_equal(mopt_family_of_hf("gpt2"), &mopt_family_gpt2);
    assert_null(mopt_family_of_hf("bert"));
    assert_ptr_equal(mopt_family_of_gguf("llama", 5), &mopt_family_llama); /* Qwen2 is written as a LLaMA with biases */
    assert_ptr_equal(mopt_family_of_gguf("gpt2", 4), &mopt_family_gpt2);
    assert_null(mopt_family_of_gguf("gpt", 3));
    assert_ptr_equal(mopt_family_of_trt("GPTForCausalLM"), &mopt_family_gpt2);
    assert_ptr_equal(mopt_family_of_trt("MistralForCausalLM"), &mopt_family_llama);
    char buf[256];
    assert_string_equal(mopt_family_list(MOPT_NAMING_GGUF, buf, sizeof buf), "llama, gpt2");
    assert_string_equal(mopt_family_list(MOPT_NAMING_HF, buf, sizeof buf), "llama, mistral, qwen2, gpt2");
    assert_true(mopt_family_has_rope(&mopt_family_qwen2));
    assert_false(mopt_family_has_rope(&mopt_family_gpt2));
}

/* a 1-layer GPT-2 graph of zeros, built, then with a stray tensor */
static void test_a_build_refuses_tensors_no_node_uses(void **state) {
    (void)state;
    mopt_arch a = mopt_family_gpt2.shape;
    snprintf(a.family, sizeof a.family, "gpt2");
    a.dim = 8, a.n_layers = 1, a.n_heads = 2, a.n_kv_heads = 2, a.head_dim = 4, a.ffn_dim = 16, a.vocab_size = 10, a.max_ctx = 4;
    a.norm_eps = 1e-5f;
    for (int stray = 0; stray < 2; stray++) {
        mopt_graph *g = mopt_graph_new(&a, NULL);
        for (int32_t i = 0; i < mopt_family_gpt2.n_rules; i++) {
            const mopt_name_rule *r = &mopt_family_gpt2.rules[i];
            if (r->role == MOPT_ROLE_LM_HEAD) continue; /* tied */
            for (int b = 0; b < 2; b++) {
                char n[MOPT_MAX_NAME];
                mopt_rule_graph_name(r, r->at == MOPT_AT_LAYER ? 0 : -1, b ? "bias" : "weight", n, sizeof n);
                const int emb = r->role == MOPT_ROLE_EMBED || r->role == MOPT_ROLE_POS_EMBED;
                if (b && emb) continue;
                const int64_t rows = r->role == MOPT_ROLE_EMBED ? 10 : r->role == MOPT_ROLE_POS_EMBED ? 4 : r->role == MOPT_ROLE_MLP_UP ? 16 : 8;
                const int64_t cols = r->role == MOPT_ROLE_MLP_DOWN ? 16 : 8;
                const int vec = b || r->role == MOPT_ROLE_ATTN_NORM || r->role == MOPT_ROLE_MLP_NORM || r->role == MOPT_ROLE_FINAL_NORM;
                int64_t dims[2] = {rows, cols};
                assert_int_equal(mopt_graph_add_tensor(g, mopt_tensor_new(n, MOPT_DTYPE_F32, vec ? 1 : 2, dims, NULL), NULL), MOPT_OK);
            }
        }
        if (stray) {
            int64_t d[1] = {8};
            mopt_graph_add_tensor(g, mopt_tensor_new("transformer.h.1.ln_1.weight", MOPT_DTYPE_F32, 1, d, NULL), NULL);
        }
        mopt_error err = {0};
        const mopt_build_src src = {"config.json", MOPT_NAMING_HF};
        const mopt_status st = mopt_arch_build(g, &src, &err);
        if (!stray) {
            if (st) fprintf(stderr, "%s\n", err.msg);
            assert_int_equal(st, MOPT_OK);
            assert_true(mopt_graph_n_nodes(g) > 10);
        } else {
            CHECK_ERR(err, MOPT_E_FORMAT, "transformer.h.1.ln_1.weight is not used by a gpt2 model of 1 layers");
        }
        mopt_graph_free(g);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_file_name_parses_back_to_its_rule),
        cmocka_unit_test(test_names_that_look_alike_are_not_parsed),
        cmocka_unit_test(test_each_reader_finds_its_family),
        cmocka_unit_test(test_a_build_refuses_tensors_no_node_uses),
    };
    return test_run_tests(tests, NULL, NULL);
}
