/* The executor on a hand-built graph, checked against a float64 reference
 * written here: embedding, RMS norm, q/k/v with grouped-query heads, rotate-half
 * RoPE, causal attention over the KV cache, output projection, residual and a
 * tied classifier. Prefill, token-by-token decode and rolling the cache back
 * must all give the reference logits, with a float cache and with FP8 and int8
 * caches (quantized here in float64, from the formats' definitions). */
#include <math.h>

#include "testutil.h"

enum { V = 6, D = 8, H = 4, KVH = 2, HD = 4, CTX = 16, T = 10 }; /* T >= 8: prefill takes the blocked attention */
static const float THETA = 10000.0f, EPS = 1e-5f;

typedef struct {
    mopt_graph *g;
    float emb[V][D], norm[D], wq[H * HD][D], wk[KVH * HD][D], wv[KVH * HD][D], wo[D][H * HD];
} model;

static float det(uint32_t *s) { /* deterministic values in [-0.5, 0.5) */
    *s = *s * 1664525u + 1013904223u;
    return (float)(*s >> 8) / 16777216.0f - 0.5f;
}

static mopt_tensor *add_tensor(mopt_graph *g, const char *name, const float *v, int64_t rows, int64_t cols) {
    int64_t dims[2] = {rows, cols};
    mopt_tensor *t = mopt_tensor_new(name, MOPT_DTYPE_F32, cols ? 2 : 1, dims, NULL);
    assert_non_null(t);
    memcpy(t->data, v, (size_t)(rows * (cols ? cols : 1)) * sizeof(float));
    assert_int_equal(mopt_graph_add_tensor(g, t, NULL), MOPT_OK);
    return t;
}

static int32_t add_node(mopt_graph *g, mopt_node n, int32_t width) {
    n.output = mopt_graph_add_value(g, width);
    assert_true(mopt_graph_add_node(g, &n, NULL) >= 0);
    return n.output;
}

static mopt_node mk(mopt_op op, mopt_role role, int32_t n_in, int32_t a, int32_t b, int32_t c, mopt_tensor *w) {
    mopt_node n = {0};
    n.op = op, n.role = role, n.layer = 0, n.n_inputs = n_in, n.kv_slot = -1, n.weight = w;
    n.inputs[0] = a, n.inputs[1] = b, n.inputs[2] = c;
    n.n_heads = H, n.n_kv_heads = KVH, n.head_dim = HD, n.rope_theta = THETA, n.rope_style = MOPT_ROPE_HALF, n.eps = EPS;
    snprintf(n.name, sizeof n.name, "%s", mopt_role_name(role));
    return n;
}

static void build(model *m) {
    uint32_t s = 12345;
    float *all[] = {&m->emb[0][0], m->norm, &m->wq[0][0], &m->wk[0][0], &m->wv[0][0], &m->wo[0][0]};
    const int sizes[] = {V * D, D, H * HD * D, KVH * HD * D, KVH * HD * D, D * H * HD};
    for (int k = 0; k < 6; k++)
        for (int i = 0; i < sizes[k]; i++) all[k][i] = k == 1 ? 1.0f + det(&s) : 2.0f * det(&s);
    mopt_arch a = {0};
    snprintf(a.family, sizeof a.family, "llama");
    a.dim = D, a.n_layers = 1, a.n_heads = H, a.n_kv_heads = KVH, a.head_dim = HD, a.ffn_dim = D, a.vocab_size = V;
    a.max_ctx = CTX, a.norm_eps = EPS, a.rope_theta = THETA, a.rope_style = MOPT_ROPE_HALF, a.tied_embeddings = 1;
    mopt_graph *g = m->g = mopt_graph_new(&a, NULL);
    assert_non_null(g);
    mopt_tensor *emb = add_tensor(g, "emb", &m->emb[0][0], V, D), *nw = add_tensor(g, "norm", m->norm, D, 0);
    mopt_tensor *q = add_tensor(g, "q", &m->wq[0][0], H * HD, D), *k = add_tensor(g, "k", &m->wk[0][0], KVH * HD, D);
    mopt_tensor *v = add_tensor(g, "v", &m->wv[0][0], KVH * HD, D), *o = add_tensor(g, "o", &m->wo[0][0], D, H * HD);
    mopt_node e = mk(MOPT_OP_EMBEDDING, MOPT_ROLE_EMBED, 0, 0, 0, 0, emb);
    e.layer = -1;
    const int32_t x = add_node(g, e, D);
    const int32_t h = add_node(g, mk(MOPT_OP_RMSNORM, MOPT_ROLE_ATTN_NORM, 1, x, 0, 0, nw), D);
    const int32_t qv = add_node(g, mk(MOPT_OP_LINEAR, MOPT_ROLE_ATTN_Q, 1, h, 0, 0, q), H * HD);
    const int32_t kv = add_node(g, mk(MOPT_OP_LINEAR, MOPT_ROLE_ATTN_K, 1, h, 0, 0, k), KVH * HD);
    const int32_t vv = add_node(g, mk(MOPT_OP_LINEAR, MOPT_ROLE_ATTN_V, 1, h, 0, 0, v), KVH * HD);
    const int32_t qr = add_node(g, mk(MOPT_OP_ROPE, MOPT_ROLE_ATTN_ROPE_Q, 1, qv, 0, 0, NULL), H * HD);
    mopt_node rk = mk(MOPT_OP_ROPE, MOPT_ROLE_ATTN_ROPE_K, 1, kv, 0, 0, NULL);
    rk.n_heads = KVH;
    const int32_t kr = add_node(g, rk, KVH * HD);
    mopt_node at = mk(MOPT_OP_ATTENTION, MOPT_ROLE_ATTN, 3, qr, kr, vv, NULL);
    at.kv_slot = 0;
    const int32_t att = add_node(g, at, H * HD);
    const int32_t ov = add_node(g, mk(MOPT_OP_LINEAR, MOPT_ROLE_ATTN_O, 1, att, 0, 0, o), D);
    const int32_t x1 = add_node(g, mk(MOPT_OP_ADD, MOPT_ROLE_ATTN_RESIDUAL, 2, x, ov, 0, NULL), D);
    mopt_node lm = mk(MOPT_OP_LM_HEAD, MOPT_ROLE_LM_HEAD, 1, x1, 0, 0, emb);
    lm.layer = -1;
    add_node(g, lm, V);
}

/* --- the float64 reference --------------------------------------------------------------- */

static void matvec(const float *w, const double *x, int rows, int cols, double *y) {
    for (int r = 0; r < rows; r++) {
        y[r] = 0;
        for (int c = 0; c < cols; c++) y[r] += (double)w[r * cols + c] * x[c];
    }
}

static void rope_half(double *v, int n_heads, int pos) {
    for (int hh = 0; hh < n_heads; hh++)
        for (int i = 0; i < HD / 2; i++) {
            const double ang = pos * pow((double)THETA, -2.0 * i / HD);
            double *a = v + hh * HD + i, *b = a + HD / 2;
            const double x1 = *a, x2 = *b;
            *a = x1 * cos(ang) - x2 * sin(ang);
            *b = x2 * cos(ang) + x1 * sin(ang);
        }
}

/* E4M3 (OCP FP8, no infinities, 0x7f NaN) from its definition: the nearest of
 * the finite values, a tie to the even code, saturating at 448. */
static double e4m3_round(double x) {
    double best = 0, bd = INFINITY;
    int bcode = 0;
    for (int code = 0; code < 0x7f; code++) {
        const int e = code >> 3, mm = code & 7;
        const double val = e ? ldexp(1.0 + mm / 8.0, e - 7) : ldexp((double)mm, -9);
        const double d = fabs(fabs(x) - val);
        if (d < bd || (d == bd && !(code & 1))) best = val, bd = d, bcode = code;
    }
    (void)bcode;
    return x < 0 ? -best : best;
}

/* IEEE binary16 from its definition: 11 significant bits, nearest even; below 2^-14 a fixed step of 2^-24;
 * infinite from 65520 */
static double half_round(double x) {
    if (x == 0 || !isfinite(x)) return x;
    int e;
    frexp(x, &e); /* |x| = m 2^e, 0.5 <= m < 1 */
    const int shift = e - 1 < -14 ? 24 : 11 - e;
    const double r = ldexp(nearbyint(ldexp(x, shift)), -shift);
    return fabs(r) >= 65520 ? copysign(INFINITY, x) : r;
}

/* The cache's round trip: a half; or q = round(x / s) in the format, read back as q * s. */
static double kv_round(mopt_kv_format f, double x, double s) {
    if (f == MOPT_KV_FLOAT) return x;
    if (f == MOPT_KV_F16) return half_round(x);
    const double r = x / s;
    if (f == MOPT_KV_FP8) return e4m3_round(r) * s;
    return fmin(127.0, fmax(-127.0, nearbyint(r))) * s;
}

/* The reference with the cache in format f, scales per KV head. */
static void reference_kv(const model *m, const int32_t *tok, int n, double logits[][V], mopt_kv_format f, const float *ks,
                         const float *vs) {
    double x[T][D], k[T][KVH * HD], v[T][KVH * HD], q[T][H * HD];
    for (int t = 0; t < n; t++) {
        double ss = 0, h[D];
        for (int i = 0; i < D; i++) x[t][i] = m->emb[tok[t]][i], ss += x[t][i] * x[t][i];
        for (int i = 0; i < D; i++) h[i] = x[t][i] / sqrt(ss / D + EPS) * m->norm[i];
        matvec(&m->wq[0][0], h, H * HD, D, q[t]);
        matvec(&m->wk[0][0], h, KVH * HD, D, k[t]);
        matvec(&m->wv[0][0], h, KVH * HD, D, v[t]);
        rope_half(q[t], H, t);
        rope_half(k[t], KVH, t);
        for (int i = 0; i < KVH * HD; i++) {
            if (f == MOPT_KV_FLOAT) continue;
            k[t][i] = kv_round(f, (float)k[t][i], ks ? ks[i / HD] : 1); /* mopt's K and V are fp32 before they are rounded */
            v[t][i] = kv_round(f, (float)v[t][i], vs ? vs[i / HD] : 1);
        }
    }
    for (int t = 0; t < n; t++) {
        double att[H * HD] = {0}, o[D], x1[D];
        for (int hh = 0; hh < H; hh++) {
            const int g = hh / (H / KVH);
            double sc[T], mx = -INFINITY, z = 0;
            for (int u = 0; u <= t; u++) {
                sc[u] = 0;
                for (int i = 0; i < HD; i++) sc[u] += q[t][hh * HD + i] * k[u][g * HD + i];
                sc[u] /= sqrt((double)HD);
                mx = fmax(mx, sc[u]);
            }
            for (int u = 0; u <= t; u++) z += sc[u] = exp(sc[u] - mx);
            for (int u = 0; u <= t; u++)
                for (int i = 0; i < HD; i++) att[hh * HD + i] += sc[u] / z * v[u][g * HD + i];
        }
        matvec(&m->wo[0][0], att, D, H * HD, o);
        for (int i = 0; i < D; i++) x1[i] = x[t][i] + o[i];
        matvec(&m->emb[0][0], x1, V, D, logits[t]);
    }
}

static void reference(const model *m, const int32_t *tok, int n, double logits[][V]) {
    reference_kv(m, tok, n, logits, MOPT_KV_FLOAT, NULL, NULL);
}

/* fp32 accumulation over a handful of terms of size ~1: 1e-5 absolute */
static void expect_row(const float *got, const double *want) {
    for (int i = 0; i < V; i++)
        if (fabs(got[i] - want[i]) > 1e-5) {
            fprintf(stderr, "logit %d: %.9g, reference %.9g\n", i, (double)got[i], want[i]);
            fail();
        }
}

static const int32_t tokens[T] = {3, 1, 4, 1, 5, 0, 2, 5, 3, 4};

static void test_prefill_matches_the_float64_reference(void **state) {
    (void)state;
    model m;
    build(&m);
    double want[T][V];
    reference(&m, tokens, T, want);
    mopt_session *s = mopt_session_new(m.g, NULL, NULL);
    assert_non_null(s);
    const float *logits;
    assert_int_equal(mopt_session_forward(s, tokens, T, true, &logits, NULL), MOPT_OK);
    for (int t = 0; t < T; t++) expect_row(logits + t * V, want[t]);
    assert_int_equal(mopt_session_length(s), T);
    mopt_session_free(s);
    mopt_graph_free(m.g);
}

static void test_decoding_token_by_token_matches_prefill(void **state) {
    (void)state;
    model m;
    build(&m);
    double want[T][V];
    reference(&m, tokens, T, want);
    mopt_session *s = mopt_session_new(m.g, NULL, NULL);
    const float *logits;
    for (int t = 0; t < T; t++) {
        assert_int_equal(mopt_session_forward(s, tokens + t, 1, false, &logits, NULL), MOPT_OK);
        expect_row(logits, want[t]);
    }
    mopt_session_free(s);
    mopt_graph_free(m.g);
}

static void test_truncating_the_cache_replays_the_same_logits(void **state) {
    (void)state;
    model m;
    build(&m);
    double want[T][V];
    reference(&m, tokens, T, want);
    mopt_session *s = mopt_session_new(m.g, NULL, NULL);
    const float *logits;
    assert_int_equal(mopt_session_forward(s, tokens, T, false, &logits, NULL), MOPT_OK);
    assert_int_equal(mopt_session_truncate(s, 2, NULL), MOPT_OK);
    assert_int_equal(mopt_session_length(s), 2);
    assert_int_equal(mopt_session_forward(s, tokens + 2, 2, true, &logits, NULL), MOPT_OK);
    expect_row(logits, want[2]);
    expect_row(logits + V, want[3]);
    mopt_error err = {0};
    assert_int_not_equal(mopt_session_truncate(s, 9, &err), MOPT_OK); /* beyond the length */
    mopt_session_free(s);
    mopt_graph_free(m.g);
}

/* Three sequences share each forward: one prefills 10 tokens (blocked
 * attention) while another decodes and a third prefills 3; then all decode
 * together. Each row equals the float64 reference of its own sequence, so
 * no sequence sees another's keys or positions. */
static void test_a_batched_forward_keeps_each_sequence_to_its_own_cache(void **state) {
    (void)state;
    model m;
    build(&m);
    const int32_t a_tok[T] = {3, 1, 4, 1, 5, 0, 2, 5, 3, 4}, b_tok[4] = {2, 2, 0, 5}, c_tok[4] = {5, 4, 3, 1};
    double want_a[T][V], want_b[4][V], want_c[4][V];
    reference(&m, a_tok, T, want_a);
    reference(&m, b_tok, 4, want_b);
    reference(&m, c_tok, 4, want_c);
    mopt_session *s = mopt_session_new(m.g, NULL, NULL);
    mopt_seq *qa = mopt_seq_new(s, 0, NULL), *qb = mopt_seq_new(s, 0, NULL), *qc = mopt_seq_new(s, 0, NULL);
    assert_non_null(qa);
    assert_non_null(qc);
    assert_true(mopt_seq_bytes(qa) > 0);
    const float *logits;
    /* b alone first, so it decodes while a and c prefill */
    mopt_seq *one[1] = {qb};
    const int32_t *t1[1] = {b_tok};
    const int32_t n1[1] = {1};
    assert_int_equal(mopt_session_forward_batch(s, one, t1, n1, 1, &logits, NULL), MOPT_OK);
    expect_row(logits, want_b[0]);
    mopt_seq *three[3] = {qa, qb, qc};
    const int32_t *t3[3] = {a_tok, b_tok + 1, c_tok};
    const int32_t n3[3] = {T - 1, 1, 3};
    assert_int_equal(mopt_session_forward_batch(s, three, t3, n3, 3, &logits, NULL), MOPT_OK);
    expect_row(logits, want_a[T - 2]);
    expect_row(logits + V, want_b[1]);
    expect_row(logits + 2 * V, want_c[2]);
    const int32_t *t4[3] = {a_tok + T - 1, b_tok + 2, c_tok + 3};
    const int32_t n4[3] = {1, 1, 1};
    assert_int_equal(mopt_session_forward_batch(s, three, t4, n4, 3, &logits, NULL), MOPT_OK);
    expect_row(logits, want_a[T - 1]);
    expect_row(logits + V, want_b[2]);
    expect_row(logits + 2 * V, want_c[3]);
    assert_int_equal(mopt_seq_length(qa), T);
    assert_int_equal(mopt_seq_length(qb), 3);
    assert_int_equal(mopt_session_length(s), 0); /* the session's own cache is untouched */
    /* refusals leave every length as it was */
    mopt_error err = {0};
    mopt_seq *twice[2] = {qb, qb};
    assert_int_equal(mopt_session_forward_batch(s, twice, t4, n4, 2, &logits, &err), MOPT_E_INVALID);
    CHECK_ERR(err, MOPT_E_INVALID, "twice");
    const int32_t bad[1] = {V}, *tb[3] = {a_tok, bad, c_tok};
    err = (mopt_error){0};
    assert_int_equal(mopt_session_forward_batch(s, three, tb, n4, 3, &logits, &err), MOPT_E_INVALID);
    CHECK_ERR(err, MOPT_E_INVALID, "outside the vocabulary");
    const int32_t nfull[3] = {CTX, 1, 1};
    err = (mopt_error){0};
    assert_int_equal(mopt_session_forward_batch(s, three, t3, nfull, 3, &logits, &err), MOPT_E_INVALID);
    CHECK_ERR(err, MOPT_E_INVALID, "context");
    assert_int_equal(mopt_seq_length(qb), 3);
    assert_int_equal(mopt_seq_truncate(qb, 1, NULL), MOPT_OK);
    assert_int_equal(mopt_seq_length(qb), 1);
    mopt_seq_free(qa);
    mopt_seq_free(qb);
    mopt_seq_free(qc);
    mopt_session_free(s);
    mopt_graph_free(m.g);
}

static void count_nodes(void *user, int32_t node, const float *const *inputs, const int32_t *in_widths, int32_t n_inputs,
                        const float *output, int32_t out_width, int32_t T_) {
    (void)node, (void)inputs, (void)in_widths, (void)n_inputs, (void)output, (void)out_width, (void)T_;
    (*(int *)user)++;
}

/* q, k and v read one input and run as one group of tasks; with an observer
 * they run one at a time, and every value of theirs is the same to the bit. */
static void test_linears_sharing_an_input_give_the_same_bits_grouped_as_alone(void **state) {
    (void)state;
    model m;
    build(&m);
    mopt_session *s = mopt_session_new(m.g, NULL, NULL);
    assert_non_null(s);
    const int32_t nn = mopt_graph_n_nodes(m.g);
    float grouped[3][T * H * HD];
    int32_t outs[3], n = 0, seen = 0;
    for (int32_t i = 0; i < nn; i++) {
        const mopt_node *nd = mopt_graph_node(m.g, i);
        if (nd->op == MOPT_OP_LINEAR && nd->role != MOPT_ROLE_ATTN_O) outs[n++] = nd->output;
    }
    assert_int_equal(n, 3);
    assert_int_equal(mopt_session_run_range(s, 0, nn, tokens, T, NULL, NULL, NULL), MOPT_OK);
    for (int k = 0; k < 3; k++)
        memcpy(grouped[k], mopt_session_value(s, outs[k]), (size_t)T * (size_t)mopt_graph_value_width(m.g, outs[k]) * sizeof(float));
    assert_int_equal(mopt_session_run_range(s, 0, nn, tokens, T, count_nodes, &seen, NULL), MOPT_OK);
    assert_int_equal(seen, nn); /* every node ran on its own */
    for (int k = 0; k < 3; k++)
        assert_memory_equal(grouped[k], mopt_session_value(s, outs[k]), (size_t)T * (size_t)mopt_graph_value_width(m.g, outs[k]) * sizeof(float));
    mopt_session_free(s);
    mopt_graph_free(m.g);
}

/* Packed linears that read one input (a quantized model's q, k and v) are each prepared in turn, x transformed into
 * buffers of their own, and then run as one task list: 4-bit groups of 32, 8-bit rows, Q6_K and W8A8 side by side
 * give every value the bits each gives alone, for one token (decode) and for five (a server's batch). */
static void test_packed_linears_sharing_an_input_give_the_same_bits_grouped_as_alone(void **state) {
    (void)state;
    enum { PD = 256, PV = 6, NL = 4 };
    uint32_t r = 777;
    mopt_arch a = {0};
    snprintf(a.family, sizeof a.family, "llama");
    a.dim = PD, a.n_layers = 1, a.n_heads = H, a.n_kv_heads = KVH, a.head_dim = HD, a.ffn_dim = PD, a.vocab_size = PV;
    a.max_ctx = CTX, a.norm_eps = EPS, a.rope_theta = THETA, a.rope_style = MOPT_ROPE_HALF, a.tied_embeddings = 1;
    mopt_graph *g = mopt_graph_new(&a, NULL);
    assert_non_null(g);
    float *emb = malloc(PV * PD * sizeof *emb), *sc = malloc(PD * (PD / 32) * sizeof *sc);
    uint8_t *lv = malloc(PD * PD), *z = malloc(PD * (PD / 32)), *blocks = malloc((size_t)PD * (size_t)mopt_kquant_block_bytes(6));
    assert_true(emb && sc && lv && z && blocks);
    for (int i = 0; i < PV * PD; i++) emb[i] = 2.0f * det(&r);
    for (int i = 0; i < PD * (PD / 32); i++) sc[i] = 0.01f + 0.02f * (det(&r) + 0.5f), z[i] = (uint8_t)((det(&r) + 0.5f) * 16);
    mopt_error err = {0};
    mopt_tensor *w[NL];
    for (int i = 0; i < PD * PD; i++) lv[i] = (uint8_t)((det(&r) + 0.5f) * 16);
    w[0] = mopt_qint_pack("w4", PD, PD, 4, 32, lv, sc, z, NULL, &err);
    for (int i = 0; i < PD * PD; i++) lv[i] = (uint8_t)((det(&r) + 0.5f) * 256);
    w[1] = mopt_qint_pack("w8", PD, PD, 8, -1, lv, sc, NULL, NULL, &err);
    const int32_t bb = mopt_kquant_block_bytes(6);
    for (int i = 0; i < PD * bb; i++) blocks[i] = (uint8_t)((det(&r) + 0.5f) * 256);
    for (int b = 0; b < PD; b++) { /* Q6_K's d, the block's last two bytes: finite */
        const uint16_t d = mopt_f32_to_f16(0.002f + 0.004f * (det(&r) + 0.5f));
        memcpy(blocks + b * bb + 208, &d, 2);
    }
    w[2] = mopt_kquant_pack("q6k", PD, PD, 6, blocks, &err);
    for (int i = 0; i < PD * PD; i++) lv[i] = (uint8_t)(int8_t)(det(&r) * 250);
    w[3] = mopt_w8a8_pack("w8a8", PD, PD, (const int8_t *)lv, sc, &err);
    mopt_tensor *e = add_tensor(g, "emb", emb, PV, PD);
    mopt_node en = mk(MOPT_OP_EMBEDDING, MOPT_ROLE_EMBED, 0, 0, 0, 0, e);
    en.layer = -1;
    const int32_t x = add_node(g, en, PD);
    const mopt_role roles[NL] = {MOPT_ROLE_ATTN_Q, MOPT_ROLE_ATTN_K, MOPT_ROLE_ATTN_V, MOPT_ROLE_MLP_GATE};
    int32_t out[NL], sum;
    for (int k = 0; k < NL; k++) {
        assert_non_null(w[k]);
        assert_int_equal(mopt_graph_add_tensor(g, w[k], NULL), MOPT_OK);
        out[k] = add_node(g, mk(MOPT_OP_LINEAR, roles[k], 1, x, 0, 0, w[k]), PD);
    }
    sum = add_node(g, mk(MOPT_OP_ADD, MOPT_ROLE_ATTN_RESIDUAL, 2, out[0], out[1], 0, NULL), PD); /* every output read */
    sum = add_node(g, mk(MOPT_OP_ADD, MOPT_ROLE_ATTN_RESIDUAL, 2, sum, out[2], 0, NULL), PD);
    sum = add_node(g, mk(MOPT_OP_ADD, MOPT_ROLE_ATTN_RESIDUAL, 2, sum, out[3], 0, NULL), PD);
    mopt_node lm = mk(MOPT_OP_LM_HEAD, MOPT_ROLE_LM_HEAD, 1, sum, 0, 0, e);
    lm.layer = -1;
    add_node(g, lm, PV);
    mopt_session *s = mopt_session_new(g, NULL, NULL);
    assert_non_null(s);
    for (int k = 0; k < NL; k++) /* each output a buffer of its own, so the executor groups them */
        for (int l = 0; l < k; l++) assert_ptr_not_equal(mopt_session_value(s, out[k]), mopt_session_value(s, out[l]));
    const int32_t nn = mopt_graph_n_nodes(g), lens[] = {1, 5};
    float *grouped = malloc(NL * 5 * PD * sizeof *grouped);
    assert_non_null(grouped);
    for (int li = 0; li < 2; li++) {
        const int32_t n = lens[li];
        int32_t seen = 0;
        assert_int_equal(mopt_session_run_range(s, 0, nn, tokens, n, NULL, NULL, NULL), MOPT_OK);
        for (int k = 0; k < NL; k++) memcpy(grouped + k * 5 * PD, mopt_session_value(s, out[k]), (size_t)n * PD * sizeof *grouped);
        assert_int_equal(mopt_session_run_range(s, 0, nn, tokens, n, count_nodes, &seen, NULL), MOPT_OK);
        assert_int_equal(seen, nn); /* every node ran on its own */
        for (int k = 0; k < NL; k++) assert_memory_equal(grouped + k * 5 * PD, mopt_session_value(s, out[k]), (size_t)n * PD * sizeof *grouped);
    }
    mopt_session_free(s);
    mopt_graph_free(g);
    free(emb), free(sc), free(lv), free(z), free(blocks), free(grouped);
}

static void test_bad_tokens_and_a_full_context_are_refused(void **state) {
    (void)state;
    model m;
    build(&m);
    mopt_session *s = mopt_session_new(m.g, NULL, NULL);
    const float *logits;
    mopt_error err = {0};
    const int32_t bad[2] = {1, V};
    assert_int_not_equal(mopt_session_forward(s, bad, 2, false, &logits, &err), MOPT_OK);
    assert_true(err.msg[0]);
    assert_int_equal(mopt_session_length(s), 0); /* nothing half-appended */
    int32_t many[CTX + 1] = {0};
    err = (mopt_error){0};
    assert_int_not_equal(mopt_session_forward(s, many, CTX + 1, false, &logits, &err), MOPT_OK);
    assert_true(err.msg[0]);
    mopt_session_free(s);
    mopt_graph_free(m.g);
}

/* A quantized cache: prefill (blocked attention) and token-by-token decode
 * both give the logits of the float64 reference whose K and V went through the
 * same format. Scales differ per head, and head 1's K scale is small enough
 * that some values saturate (fp8 at 448, int8 at 127). */
static void check_kv_format(mopt_kv_format f, const float *ks, const float *vs) {
    model m;
    build(&m);
    double want[T][V], plain[T][V];
    reference_kv(&m, tokens, T, want, f, ks, vs);
    reference(&m, tokens, T, plain);
    double moved = 0; /* the format must change the logits, or the test proves nothing */
    for (int t = 0; t < T; t++)
        for (int i = 0; i < V; i++) moved = fmax(moved, fabs(want[t][i] - plain[t][i]));
    assert_true(moved > 1e-3);
    assert_int_equal(mopt_graph_set_kv_quant(m.g, 0, f, KVH, ks, vs, NULL), MOPT_OK);
    assert_int_equal(mopt_graph_kv_bytes_per_token(m.g), 2 * KVH * HD);
    const float *logits;
    mopt_session *s = mopt_session_new(m.g, NULL, NULL);
    assert_non_null(s);
    assert_int_equal(mopt_session_forward(s, tokens, T, true, &logits, NULL), MOPT_OK);
    for (int t = 0; t < T; t++) expect_row(logits + t * V, want[t]);
    mopt_session_free(s);
    s = mopt_session_new(m.g, NULL, NULL);
    for (int t = 0; t < T; t++) {
        assert_int_equal(mopt_session_forward(s, tokens + t, 1, false, &logits, NULL), MOPT_OK);
        expect_row(logits, want[t]);
    }
    mopt_session_free(s);
    mopt_graph_free(m.g);
}

static void test_an_fp8_kv_cache_gives_the_reference_of_rounded_k_and_v(void **state) {
    (void)state;
    const float ks[KVH] = {0.01f, 0.0005f}, vs[KVH] = {0.004f, 0.002f};
    check_kv_format(MOPT_KV_FP8, ks, vs);
}

static void test_an_int8_kv_cache_gives_the_reference_of_rounded_k_and_v(void **state) {
    (void)state;
    const float ks[KVH] = {0.02f, 0.004f}, vs[KVH] = {0.01f, 0.015f};
    check_kv_format(MOPT_KV_INT8, ks, vs);
}

/* A session asked for an f16 cache (mopt_session_opts.kv_cache, or $MOPT_KV_CACHE) gives, in prefill and
 * token by token, the logits of the float64 reference whose K and V were rounded to halves, holds half the bytes,
 * and refuses a cache it does not know; the graph itself never takes f16. */
static void test_an_f16_kv_cache_gives_the_reference_of_halved_k_and_v(void **state) {
    (void)state;
    model m;
    build(&m);
    double want[T][V], plain[T][V];
    reference_kv(&m, tokens, T, want, MOPT_KV_F16, NULL, NULL);
    reference(&m, tokens, T, plain);
    double moved = 0; /* the halves must move the logits past expect_row's 1e-5, or the test proves nothing */
    for (int t = 0; t < T; t++)
        for (int i = 0; i < V; i++) moved = fmax(moved, fabs(want[t][i] - plain[t][i]));
    assert_true(moved > 2e-5);
    mopt_session_opts o;
    mopt_session_opts_default(&o);
    o.kv_cache = "f16";
    const float *logits;
    mopt_session *s = mopt_session_new(m.g, &o, NULL);
    assert_non_null(s);
    assert_int_equal(mopt_session_forward(s, tokens, T, true, &logits, NULL), MOPT_OK);
    for (int t = 0; t < T; t++) expect_row(logits + t * V, want[t]);
    mopt_seq *q = mopt_seq_new(s, 0, NULL);
    assert_int_equal(mopt_seq_bytes(q), (size_t)mopt_seq_max_ctx(q) * 2 * KVH * HD * 2);
    mopt_seq_free(q);
    mopt_session_free(s);
    assert_int_equal(setenv("MOPT_KV_CACHE", "f16", 1), 0); /* what --kv-cache f16 sets */
    assert_int_equal(mopt_kv_bytes_per_position(m.g, NULL, NULL), 2 * KVH * HD * 2);
    s = mopt_session_new(m.g, NULL, NULL);
    assert_non_null(s);
    for (int t = 0; t < T; t++) {
        assert_int_equal(mopt_session_forward(s, tokens + t, 1, false, &logits, NULL), MOPT_OK);
        expect_row(logits, want[t]);
    }
    mopt_session_free(s);
    mopt_error err = {0};
    assert_int_equal(setenv("MOPT_KV_CACHE", "fp16", 1), 0);
    assert_null(mopt_session_new(m.g, NULL, &err));
    assert_non_null(strstr(err.msg, "MOPT_KV_CACHE) 'fp16': expected f32 or f16"));
    assert_int_equal(mopt_kv_bytes_per_position(m.g, NULL, &err), -1);
    assert_int_equal(unsetenv("MOPT_KV_CACHE"), 0);
    o.kv_cache = "f8";
    assert_null(mopt_session_new(m.g, &o, &err));
    assert_non_null(strstr(err.msg, "kv_cache 'f8'"));
    assert_int_equal(mopt_kv_bytes_per_position(m.g, "f32", NULL), 2 * KVH * HD * 4);
    const float one[KVH] = {1, 1};
    assert_int_not_equal(mopt_graph_set_kv_quant(m.g, 0, MOPT_KV_F16, KVH, one, one, &err), MOPT_OK);
    assert_non_null(strstr(err.msg, "session's choice"));
    mopt_graph_free(m.g);
}

/* Bad KV settings are refused with a message; a session keeps the format it was made with. */
static void test_kv_formats_refuse_bad_scales_and_sessions_keep_theirs(void **state) {
    (void)state;
    model m;
    build(&m);
    const float one[KVH] = {1, 1}, zero[KVH] = {0, 1}, nan[KVH] = {NAN, 1};
    mopt_error err = {0};
    assert_int_equal(mopt_graph_kv_bytes_per_token(m.g), 2 * KVH * HD * 4);
    assert_int_not_equal(mopt_graph_set_kv_quant(m.g, 0, MOPT_KV_FP8, 3, one, one, &err), MOPT_OK);
    assert_non_null(strstr(err.msg, "one per KV head"));
    assert_int_not_equal(mopt_graph_set_kv_quant(m.g, 0, MOPT_KV_FP8, KVH, zero, one, &err), MOPT_OK);
    assert_non_null(strstr(err.msg, "finite and positive"));
    assert_int_not_equal(mopt_graph_set_kv_quant(m.g, 0, MOPT_KV_INT8, KVH, one, nan, &err), MOPT_OK);
    assert_int_not_equal(mopt_graph_set_kv_quant(m.g, 1, MOPT_KV_FP8, 1, one, one, &err), MOPT_OK);
    assert_non_null(strstr(err.msg, "no attention"));
    assert_int_not_equal(mopt_graph_set_kv_quant(m.g, 0, (mopt_kv_format)7, 1, one, one, &err), MOPT_OK);
    assert_int_equal(mopt_graph_kv_quant(m.g, 0).format, MOPT_KV_FLOAT); /* nothing was set */
    double want[T][V];
    reference(&m, tokens, T, want);
    mopt_session *s = mopt_session_new(m.g, NULL, NULL); /* made with the float cache */
    const float tiny[KVH] = {0.0001f, 0.0001f};
    assert_int_equal(mopt_graph_set_kv_quant(m.g, 0, MOPT_KV_INT8, 1, tiny, tiny, NULL), MOPT_OK);
    assert_int_equal(mopt_graph_kv_quant(m.g, 0).n_scales, 1);
    const float *logits;
    assert_int_equal(mopt_session_forward(s, tokens, T, true, &logits, NULL), MOPT_OK);
    for (int t = 0; t < T; t++) expect_row(logits + t * V, want[t]);
    mopt_session_free(s);
    assert_int_equal(mopt_graph_set_kv_quant(m.g, 0, MOPT_KV_FLOAT, 0, NULL, NULL, NULL), MOPT_OK); /* cleared */
    assert_int_equal(mopt_graph_kv_bytes_per_token(m.g), 2 * KVH * HD * 4);
    mopt_graph_free(m.g);
}

/* The read-bandwidth probe measures on valid arguments and refuses the rest
 * (the value itself is the machine's; no threshold belongs in a test). */
static void test_read_bandwidth_measures_and_refuses_bad_arguments(void **state) {
    (void)state;
    assert_true(mopt_read_bandwidth(1, (size_t)16 << 20, 3) > 0);
    assert_true(mopt_read_bandwidth(2, (size_t)16 << 20, 1) > 0);
    assert_true(mopt_read_bandwidth(0, (size_t)16 << 20, 3) < 0);
    assert_true(mopt_read_bandwidth(1, 100, 3) < 0);
    assert_true(mopt_read_bandwidth(1, (size_t)16 << 20, 0) < 0);
}

/* The same probe on a session's own threads: it measures, leaves those threads decoding as before, and refuses a
 * missing session and bad sizes. */
static void test_session_read_bandwidth_measures_on_the_sessions_threads(void **state) {
    (void)state;
    model m;
    build(&m);
    double want[T][V];
    reference(&m, tokens, T, want);
    for (int32_t n = 1; n <= 2; n++) {
        mopt_session_opts o;
        mopt_session_opts_default(&o);
        o.n_threads = n;
        mopt_session *s = mopt_session_new(m.g, &o, NULL);
        assert_non_null(s);
        assert_int_equal(mopt_session_n_threads(s), n);
        assert_true(mopt_session_read_bandwidth(s, (size_t)16 << 20, 3) > 0);
        const float *logits;
        for (int t = 0; t < T; t++) {
            assert_int_equal(mopt_session_forward(s, tokens + t, 1, false, &logits, NULL), MOPT_OK);
            expect_row(logits, want[t]);
        }
        assert_true(mopt_session_read_bandwidth(s, 100, 3) < 0);
        assert_true(mopt_session_read_bandwidth(s, (size_t)16 << 20, 0) < 0);
        mopt_session_free(s);
    }
    assert_true(mopt_session_read_bandwidth(NULL, (size_t)16 << 20, 3) < 0);
    mopt_graph_free(m.g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prefill_matches_the_float64_reference),
        cmocka_unit_test(test_decoding_token_by_token_matches_prefill),
        cmocka_unit_test(test_truncating_the_cache_replays_the_same_logits),
        cmocka_unit_test(test_linears_sharing_an_input_give_the_same_bits_grouped_as_alone),
        cmocka_unit_test(test_packed_linears_sharing_an_input_give_the_same_bits_grouped_as_alone),
        cmocka_unit_test(test_bad_tokens_and_a_full_context_are_refused),
        cmocka_unit_test(test_a_batched_forward_keeps_each_sequence_to_its_own_cache),
        cmocka_unit_test(test_read_bandwidth_measures_and_refuses_bad_arguments),
        cmocka_unit_test(test_session_read_bandwidth_measures_on_the_sessions_threads),
        cmocka_unit_test(test_an_fp8_kv_cache_gives_the_reference_of_rounded_k_and_v),
        cmocka_unit_test(test_an_int8_kv_cache_gives_the_reference_of_rounded_k_and_v),
        cmocka_unit_test(test_an_f16_kv_cache_gives_the_reference_of_halved_k_and_v),
        cmocka_unit_test(test_kv_formats_refuse_bad_scales_and_sessions_keep_theirs),
    };
    return test_run_tests(tests, NULL, NULL);
}
