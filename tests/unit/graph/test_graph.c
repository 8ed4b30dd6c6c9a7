/* The graph layer on its own: values, nodes, tensors and the bookkeeping every
 * pass relies on (producers, consumers, roles, retargeting on replace). */
#include "testutil.h"
#include "graph_impl.h"
#include "mopt/quant.h"

static mopt_graph *tiny_graph(void) {
    mopt_arch a = {0};
    snprintf(a.family, sizeof a.family, "llama");
    a.dim = 4, a.n_layers = 1, a.n_heads = 1, a.n_kv_heads = 1, a.head_dim = 4, a.ffn_dim = 4, a.vocab_size = 3, a.max_ctx = 8;
    mopt_graph *g = mopt_graph_new(&a, NULL);
    assert_non_null(g);
    return g;
}

static mopt_tensor *tensor(const char *name, int64_t rows, int64_t cols) {
    int64_t dims[2] = {rows, cols};
    mopt_tensor *t = mopt_tensor_new(name, MOPT_DTYPE_F32, cols ? 2 : 1, dims, NULL);
    assert_non_null(t);
    return t;
}

static int32_t node(mopt_graph *g, mopt_op op, mopt_role role, int32_t n_in, int32_t in0, int32_t in1, mopt_tensor *w, int32_t width,
                    mopt_error *err) {
    mopt_node n = {0};
    n.op = op, n.role = role, n.layer = op == MOPT_OP_EMBEDDING ? -1 : 0, n.n_inputs = n_in, n.kv_slot = -1;
    n.inputs[0] = in0, n.inputs[1] = in1, n.weight = w;
    snprintf(n.name, sizeof n.name, "%s", mopt_role_name(role));
    n.output = mopt_graph_add_value(g, width);
    return mopt_graph_add_node(g, &n, err) < 0 ? -1 : n.output;
}

static void test_nodes_read_only_values_written_before_them(void **state) {
    (void)state;
    mopt_graph *g = tiny_graph();
    mopt_error err = {0};
    const int32_t later = mopt_graph_add_value(g, 4); /* declared, never written */
    assert_int_equal(node(g, MOPT_OP_ADD, MOPT_ROLE_ATTN_RESIDUAL, 2, later, later, NULL, 4, &err), -1);
    CHECK_ERR(err, MOPT_E_INVALID, "not produced by an earlier node");
    /* an output may be written once */
    mopt_node n = {0};
    n.op = MOPT_OP_EMBEDDING, n.output = mopt_graph_add_value(g, 4);
    assert_true(mopt_graph_add_node(g, &n, &err) >= 0);
    assert_true(mopt_graph_add_node(g, &n, &err) < 0);
    CHECK_ERR(err, MOPT_E_INVALID, "already written");
    mopt_graph_free(g);
}

static void test_producers_consumers_and_roles_are_found(void **state) {
    (void)state;
    mopt_graph *g = tiny_graph();
    mopt_tensor *emb = tensor("emb.weight", 3, 4), *w = tensor("lin.weight", 4, 4);
    assert_int_equal(mopt_graph_add_tensor(g, emb, NULL), MOPT_OK);
    assert_int_equal(mopt_graph_add_tensor(g, w, NULL), MOPT_OK);
    const int32_t x = node(g, MOPT_OP_EMBEDDING, MOPT_ROLE_EMBED, 0, 0, 0, emb, 4, NULL);
    const int32_t y = node(g, MOPT_OP_LINEAR, MOPT_ROLE_ATTN_O, 1, x, 0, w, 4, NULL);
    const int32_t z = node(g, MOPT_OP_ADD, MOPT_ROLE_ATTN_RESIDUAL, 2, x, y, NULL, 4, NULL);
    assert_true(x >= 0 && y >= 0 && z >= 0);
    assert_int_equal(mopt_graph_producer(g, y), 1);
    int32_t uses[4];
    assert_int_equal(mopt_graph_consumers(g, x, uses, 4), 2); /* the linear and the residual */
    assert_int_equal(uses[0], 1);
    assert_int_equal(uses[1], 2);
    assert_int_equal(mopt_graph_consumers(g, z, uses, 4), 0);
    assert_int_equal(mopt_graph_find_node(g, MOPT_ROLE_ATTN_O, 0), 1);
    assert_int_equal(mopt_graph_find_node(g, MOPT_ROLE_ATTN_O, 1), -1);
    assert_int_equal(mopt_graph_n_params(g), 3 * 4 + 4 * 4);
    assert_int_equal(mopt_graph_weight_bytes(g), (3 * 4 + 4 * 4) * 4);
    mopt_graph_free(g);
}

static void test_replacing_a_tensor_retargets_the_nodes_that_use_it(void **state) {
    (void)state;
    mopt_graph *g = tiny_graph();
    mopt_tensor *emb = tensor("emb.weight", 3, 4);
    assert_int_equal(mopt_graph_add_tensor(g, emb, NULL), MOPT_OK);
    node(g, MOPT_OP_EMBEDDING, MOPT_ROLE_EMBED, 0, 0, 0, emb, 4, NULL);
    node(g, MOPT_OP_LM_HEAD, MOPT_ROLE_LM_HEAD, 1, 0, 0, emb, 3, NULL); /* tied */
    mopt_error err = {0};
    mopt_tensor *dup = tensor("emb.weight", 3, 4);
    assert_int_equal(mopt_graph_add_tensor(g, dup, &err), MOPT_E_FORMAT);
    CHECK_ERR(err, MOPT_E_FORMAT, "appears twice");
    mopt_tensor_free(dup);
    mopt_tensor *neu = tensor("emb.weight", 3, 4);
    assert_int_equal(mopt_graph_replace_tensor(g, neu, NULL), MOPT_OK);
    assert_ptr_equal(mopt_graph_node(g, 0)->weight, neu);
    assert_ptr_equal(mopt_graph_node(g, 1)->weight, neu);
    /* swap hands the old tensor back instead of freeing it */
    mopt_tensor *again = tensor("emb.weight", 3, 4);
    assert_ptr_equal(mopt_graph_swap_tensor(g, again, NULL), neu);
    assert_ptr_equal(mopt_graph_node(g, 1)->weight, again);
    mopt_tensor_free(neu);
    mopt_tensor *stray = tensor("other.weight", 1, 0);
    assert_int_equal(mopt_graph_replace_tensor(g, stray, &err), MOPT_E_INVALID); /* the caller keeps it */
    CHECK_ERR(err, MOPT_E_INVALID, "no tensor named other.weight");
    mopt_tensor_free(stray);
    mopt_graph_remove_tensor(g, "emb.weight");
    assert_null(mopt_graph_node(g, 0)->weight);
    assert_null(mopt_graph_find_tensor(g, "emb.weight"));
    mopt_graph_free(g);
}

/* With a spill directory, a packed weight installed by replace keeps the same
 * levels, scales and zero-points but lives in a nameless mapped file; a float
 * weight stays on the heap; nothing is left in the directory. */
static void test_spilled_packed_weights_keep_their_bytes_in_a_nameless_file(void **state) {
    (void)state;
    enum { OUT = 5, IN = 64 };
    char dir[1024];
    assert_non_null(test_tmpdir(dir, sizeof dir, "spill"));
    mopt_graph *g = tiny_graph();
    assert_int_equal(mopt_graph_add_tensor(g, tensor("q.weight", OUT, IN), NULL), MOPT_OK);
    assert_int_equal(mopt_graph_add_tensor(g, tensor("norm.weight", IN, 0), NULL), MOPT_OK);
    mopt_error err = {0};
    assert_int_equal(mopt_graph_spill_to(g, "/nonexistent-mopt-dir", &err), MOPT_E_IO);
    CHECK_ERR(err, MOPT_E_IO, "cannot create a spill file");
    assert_int_equal(mopt_graph_spill_to(g, dir, &err), MOPT_OK);
    uint8_t q[OUT * IN], z[OUT * 2];
    float sc[OUT * 2];
    for (int i = 0; i < OUT * IN; i++) q[i] = (uint8_t)((i * 7 + 3) % 16);
    for (int i = 0; i < OUT * 2; i++) sc[i] = 0.01f * (float)(i + 1), z[i] = (uint8_t)(i % 16);
    mopt_tensor *want = mopt_qint_pack("q.weight", OUT, IN, 4, 32, q, sc, z, NULL, &err);
    mopt_tensor *t = mopt_qint_pack("q.weight", OUT, IN, 4, 32, q, sc, z, NULL, &err);
    assert_non_null(want);
    assert_non_null(t);
    assert_int_equal(mopt_graph_replace_tensor(g, t, &err), MOPT_OK);
    assert_int_equal(t->buffer->kind, MOPT_BUFFER_MMAP);
    assert_string_equal(t->buffer->origin, "spill");
    assert_int_equal(t->quant->scale->buffer->kind, MOPT_BUFFER_MMAP);
    assert_memory_equal(t->data, want->data, mopt_tensor_nbytes(want));
    assert_memory_equal(t->quant->scale->data, want->quant->scale->data, mopt_tensor_nbytes(want->quant->scale));
    assert_memory_equal(t->quant->zero->data, want->quant->zero->data, mopt_tensor_nbytes(want->quant->zero));
    mopt_tensor_drop_pages(t); /* the bytes come back from the file */
    for (int r = 0; r < OUT; r++)
        for (int c = 0; c < IN; c++) assert_int_equal(mopt_qint_get(t, r, c), q[r * IN + c]);
    mopt_tensor *norm = tensor("norm.weight", IN, 0);
    assert_int_equal(mopt_graph_replace_tensor(g, norm, &err), MOPT_OK);
    assert_int_equal(norm->buffer->kind, MOPT_BUFFER_HEAP);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "test -z \"$(ls -A '%s')\"", dir);
    assert_int_equal(system(cmd), 0);
    mopt_tensor_free(want);
    mopt_graph_free(g);
}

/* What a decode step streams per token: linears and lm_head whole, one row of
 * an embedding table that is only looked up, a table tied to lm_head whole. */
static void test_decode_bytes_count_one_embedding_row_unless_tied(void **state) {
    (void)state;
    for (int tied = 0; tied < 2; tied++) {
        mopt_graph *g = tiny_graph();
        mopt_tensor *emb = tensor("emb.weight", 3, 4), *w = tensor("lin.weight", 4, 4), *head = tied ? emb : tensor("head.weight", 3, 4);
        assert_int_equal(mopt_graph_add_tensor(g, emb, NULL), MOPT_OK);
        assert_int_equal(mopt_graph_add_tensor(g, w, NULL), MOPT_OK);
        if (!tied) assert_int_equal(mopt_graph_add_tensor(g, head, NULL), MOPT_OK);
        const int32_t x = node(g, MOPT_OP_EMBEDDING, MOPT_ROLE_EMBED, 0, 0, 0, emb, 4, NULL);
        const int32_t y = node(g, MOPT_OP_LINEAR, MOPT_ROLE_ATTN_O, 1, x, 0, w, 4, NULL);
        assert_true(node(g, MOPT_OP_LM_HEAD, MOPT_ROLE_LM_HEAD, 1, y, 0, head, 3, NULL) >= 0);
        /* f32: a row of the table 16 bytes, the linear 64, the head 48 */
        assert_int_equal(mopt_graph_decode_bytes(g), tied ? 48 + 64 : 16 + 64 + 48);
        mopt_graph_free(g);
    }
}

static void test_linear_roles_are_the_decoder_projections(void **state) {
    (void)state;
    const mopt_role linear[] = {MOPT_ROLE_ATTN_Q, MOPT_ROLE_ATTN_K, MOPT_ROLE_ATTN_V, MOPT_ROLE_ATTN_O,
                                MOPT_ROLE_MLP_GATE, MOPT_ROLE_MLP_UP, MOPT_ROLE_MLP_DOWN};
    int n = 0;
    for (int r = 0; r < MOPT_ROLE_COUNT; r++) n += mopt_role_is_linear((mopt_role)r);
    assert_int_equal(n, 7);
    for (int i = 0; i < 7; i++) assert_true(mopt_role_is_linear(linear[i]));
    assert_false(mopt_role_is_linear(MOPT_ROLE_EMBED));
    assert_false(mopt_role_is_linear(MOPT_ROLE_LM_HEAD));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nodes_read_only_values_written_before_them),
        cmocka_unit_test(test_producers_consumers_and_roles_are_found),
        cmocka_unit_test(test_replacing_a_tensor_retargets_the_nodes_that_use_it),
        cmocka_unit_test(test_linear_roles_are_the_decoder_projections),
        cmocka_unit_test(test_decode_bytes_count_one_embedding_row_unless_tied),
        cmocka_unit_test(test_spilled_packed_weights_keep_their_bytes_in_a_nameless_file),
    };
    return test_run_tests(tests, NULL, NULL);
}
