/* The trainer's gradients against central finite differences of a float64
 * forward written here, independently of core/train: every op on small
 * hand-built graphs (every entry of every parameter), then the real
 * lit-llama-7m and lit-gpt2-1m on a window of lit-val (entries of every kind
 * of weight). Tolerance: 1e-3 relative where the reference |g| > 1e-6; on the
 * small graphs, whose every entry is checked, 1e-7 absolute slack on top for
 * the few entries fp32 cancellation leaves at ~1e-5 of the largest. */
#include <math.h>

#include "testutil.h"

/* --- the float64 reference ------------------------------------------------------- */

typedef struct {
    const mopt_graph *g;
    mopt_trainer *tr;
    double **p; /* per trainer parameter, its values in float64 */
    int32_t np;
} ref;

static int32_t param_index(const ref *r, const mopt_tensor *t) {
    for (int32_t i = 0; t && i < r->np; i++)
        if (mopt_trainer_param_tensor(r->tr, i) == t) return i;
    return -1;
}

static void ref_init(ref *r, const mopt_graph *g, mopt_trainer *tr) {
    r->g = g;
    r->tr = tr;
    r->np = mopt_trainer_n_params(tr);
    r->p = calloc((size_t)r->np, sizeof *r->p);
    assert_non_null(r->p);
    for (int32_t i = 0; i < r->np; i++) {
        const int64_t n = mopt_tensor_nelements(mopt_trainer_param_tensor(tr, i));
        r->p[i] = malloc((size_t)n * sizeof(double));
        assert_non_null(r->p[i]);
        for (int64_t k = 0; k < n; k++) r->p[i][k] = mopt_trainer_param(tr, i)[k];
    }
}

static void ref_free(ref *r) {
    for (int32_t i = 0; i < r->np; i++) free(r->p[i]);
    free(r->p);
}

/* Mean cross-entropy of tok[1..T-1], every op in float64. */
static double ref_loss(const ref *r, const int32_t *tok, int T) {
    const mopt_graph *g = r->g;
    const int32_t nv = mopt_graph_n_values(g), nn = mopt_graph_n_nodes(g);
    double **val = calloc((size_t)nv, sizeof *val);
    double loss = 0;
    for (int32_t v = 0; v < nv; v++) val[v] = calloc((size_t)T * (size_t)mopt_graph_value_width(g, v), sizeof(double));
    for (int32_t i = 0; i < nn; i++) {
        const mopt_node *n = mopt_graph_node(g, i);
        const int32_t W = mopt_graph_value_width(g, n->output);
        const int32_t iw0 = n->n_inputs > 0 ? mopt_graph_value_width(g, n->inputs[0]) : 0;
        const int32_t iw1 = n->n_inputs > 1 ? mopt_graph_value_width(g, n->inputs[1]) : 0;
        const int32_t iw2 = n->n_inputs > 2 ? mopt_graph_value_width(g, n->inputs[2]) : 0;
        const double *x = n->n_inputs > 0 ? val[n->inputs[0]] : NULL, *z = n->n_inputs > 1 ? val[n->inputs[1]] : NULL;
        const int32_t wi = param_index(r, n->weight), bi = param_index(r, n->bias);
        const double *w = wi >= 0 ? r->p[wi] : NULL, *b = bi >= 0 ? r->p[bi] : NULL;
        const int64_t cols = n->weight ? n->weight->ne[0] : 0;
        double *y = val[n->output];
        for (int t = 0; t < T; t++) {
            double *yt = y + (size_t)t * W;
            const double *xt = x ? x + (size_t)t * iw0 : NULL, *zt = z ? z + (size_t)t * iw1 : NULL;
            switch (n->op) {
            case MOPT_OP_EMBEDDING:
                for (int k = 0; k < W; k++) yt[k] = w[(int64_t)tok[t] * cols + k];
                break;
            case MOPT_OP_POS_EMBEDDING:
                for (int k = 0; k < W; k++) yt[k] = xt[k] + w[(int64_t)t * cols + k];
                break;
            case MOPT_OP_RMSNORM: {
                double ss = 0;
                for (int k = 0; k < W; k++) ss += xt[k] * xt[k];
                const double s = 1.0 / sqrt(ss / W + n->eps);
                for (int k = 0; k < W; k++) yt[k] = w[k] * xt[k] * s;
                break;
            }
            case MOPT_OP_LAYERNORM: {
                double m = 0, var = 0;
                for (int k = 0; k < W; k++) m += xt[k];
                m /= W;
                for (int k = 0; k < W; k++) var += (xt[k] - m) * (xt[k] - m);
                const double s = 1.0 / sqrt(var / W + n->eps);
                for (int k = 0; k < W; k++) yt[k] = (xt[k] - m) * s * w[k] + (b ? b[k] : 0);
                break;
            }
            case MOPT_OP_LINEAR:
            case MOPT_OP_LM_HEAD:
                for (int o = 0; o < W; o++) {
                    double acc = b ? b[o] : 0;
                    for (int64_t k = 0; k < cols; k++) acc += w[o * cols + k] * xt[k];
                    yt[o] = acc;
                }
                break;
            case MOPT_OP_ROPE: {
                const int hd = n->head_dim, half = hd / 2;
                for (int h = 0; h < n->n_heads; h++)
                    for (int k = 0; k < half; k++) {
                        const double ang = t * pow((double)n->rope_theta, -2.0 * k / hd);
                        const int a = n->rope_style == MOPT_ROPE_HALF ? k : 2 * k, c = n->rope_style == MOPT_ROPE_HALF ? k + half : 2 * k + 1;
                        const double x0 = xt[h * hd + a], x1 = xt[h * hd + c];
                        yt[h * hd + a] = x0 * cos(ang) - x1 * sin(ang);
                        yt[h * hd + c] = x1 * cos(ang) + x0 * sin(ang);
                    }
                break;
            }
            case MOPT_OP_ATTENTION: {
                const int hd = n->head_dim, group = n->n_heads / n->n_kv_heads;
                const double *kv = z, *vv = val[n->inputs[2]];
                double p[512];
                for (int h = 0; h < n->n_heads; h++) {
                    const int kvo = (h / group) * hd;
                    double mx = -INFINITY, sum = 0;
                    for (int s = 0; s <= t; s++) {
                        double d = 0;
                        for (int k = 0; k < hd; k++) d += xt[h * hd + k] * kv[(size_t)s * iw1 + kvo + k];
                        p[s] = d / sqrt((double)hd);
                        mx = fmax(mx, p[s]);
                    }
                    for (int s = 0; s <= t; s++) sum += (p[s] = exp(p[s] - mx));
                    for (int k = 0; k < hd; k++) {
                        double acc = 0;
                        for (int s = 0; s <= t; s++) acc += p[s] / sum * vv[(size_t)s * iw2 + kvo + k];
                        yt[h * hd + k] = acc;
                    }
                }
                break;
            }
            case MOPT_OP_SWIGLU:
                for (int k = 0; k < W; k++) yt[k] = xt[k] / (1 + exp(-xt[k])) * zt[k];
                break;
            case MOPT_OP_GELU:
                for (int k = 0; k < W; k++) yt[k] = 0.5 * xt[k] * (1 + tanh(sqrt(2 / M_PI) * (xt[k] + 0.044715 * pow(xt[k], 3))));
                break;
            case MOPT_OP_ADD:
                for (int k = 0; k < W; k++) yt[k] = xt[k] + zt[k];
                break;
            default: fail();
            }
        }
        if (n->op == MOPT_OP_LM_HEAD)
            for (int t = 0; t + 1 < T; t++) {
                const double *row = y + (size_t)t * W;
                double mx = row[0], s = 0;
                for (int k = 1; k < W; k++) mx = fmax(mx, row[k]);
                for (int k = 0; k < W; k++) s += exp(row[k] - mx);
                loss += log(s) + mx - row[tok[t + 1]];
            }
    }
    for (int32_t v = 0; v < nv; v++) free(val[v]);
    free(val);
    return loss / (T - 1);
}

/* Central difference of the reference loss in entry k of parameter i. */
static double ref_grad(ref *r, int32_t i, int64_t k, const int32_t *tok, int T) {
    const double keep = r->p[i][k], h = 1e-4;
    r->p[i][k] = keep + h;
    const double up = ref_loss(r, tok, T);
    r->p[i][k] = keep - h;
    const double down = ref_loss(r, tok, T);
    r->p[i][k] = keep;
    return (up - down) / (2 * h);
}

typedef struct {
    int checked, worst_param;
    double worst;
    double floor; /* absolute slack: fp32 cancellation in entries far below the parameter's largest */
} tally;

static void compare(ref *r, int32_t i, int64_t k, const int32_t *tok, int T, tally *ty) {
    const double want = ref_grad(r, i, k, tok, T), got = mopt_trainer_grad(r->tr, i)[k];
    if (fabs(want) <= 1e-6) { /* below the stated range: only no spurious gradient */
        assert_true(fabs(got) <= 1e-5);
        return;
    }
    const double rel = fmax(fabs(got - want) - ty->floor, 0) / fabs(want);
    if (rel > ty->worst) ty->worst = rel, ty->worst_param = i;
    if (rel > 1e-3)
        fprintf(stderr, "%s[%lld]: backward %.9g, finite difference %.9g (rel %.2g)\n",
                mopt_trainer_param_tensor(r->tr, i)->name, (long long)k, got, want, rel);
    assert_true(rel <= 1e-3);
    ty->checked++;
}

/* Runs the trainer on tok, then checks its loss and the chosen entries. */
static mopt_trainer *train_once(const mopt_graph *g, const int32_t *tok, int T, ref *r) {
    mopt_error err = {0};
    mopt_trainer *tr = mopt_trainer_new(g, T, &err);
    assert_non_null(tr);
    double loss;
    mopt_trainer_zero_grad(tr);
    assert_int_equal(mopt_trainer_step(tr, tok, T, &loss, &err), MOPT_OK);
    ref_init(r, g, tr);
    assert_true(fabs(loss - ref_loss(r, tok, T)) <= 1e-5 * fabs(loss));
    return tr;
}

/* --- small hand-built graphs: every op, every entry ---------------------------------------- */

enum { V = 11, D = 8, HD = 4, FFN = 12, CTX = 16, T_SMALL = 7, T_REAL = 12 };

static uint32_t seed = 7;
static float det(void) { /* deterministic values in [-0.5, 0.5) */
    seed = seed * 1664525u + 1013904223u;
    return (float)(seed >> 8) / 16777216.0f - 0.5f;
}

static mopt_tensor *tensor(mopt_graph *g, const char *name, int64_t rows, int64_t cols, float base) {
    int64_t dims[2] = {rows, cols};
    mopt_tensor *t = mopt_tensor_new(name, MOPT_DTYPE_F32, cols ? 2 : 1, dims, NULL);
    assert_non_null(t);
    for (int64_t i = 0; i < rows * (cols ? cols : 1); i++) ((float *)t->data)[i] = base + det();
    assert_int_equal(mopt_graph_add_tensor(g, t, NULL), MOPT_OK);
    return t;
}

static int32_t node(mopt_graph *g, mopt_op op, int32_t width, int32_t n_in, int32_t a, int32_t b, int32_t c, mopt_tensor *w,
                    mopt_tensor *bias, int32_t heads, int32_t kv_heads, int32_t rope_style) {
    mopt_node n = {0};
    n.op = op, n.layer = 0, n.n_inputs = n_in, n.weight = w, n.bias = bias, n.kv_slot = 0;
    n.inputs[0] = a, n.inputs[1] = b, n.inputs[2] = c;
    n.n_heads = heads, n.n_kv_heads = kv_heads, n.head_dim = HD, n.rope_theta = 100.0f, n.rope_style = rope_style, n.eps = 1e-5f;
    snprintf(n.name, sizeof n.name, "%s", mopt_op_name(op));
    n.output = mopt_graph_add_value(g, width);
    assert_true(mopt_graph_add_node(g, &n, NULL) >= 0);
    return n.output;
}

static mopt_graph *new_graph(void) {
    mopt_arch a = {0};
    snprintf(a.family, sizeof a.family, "llama");
    a.dim = D, a.n_layers = 1, a.vocab_size = V, a.max_ctx = CTX, a.head_dim = HD;
    mopt_graph *g = mopt_graph_new(&a, NULL);
    assert_non_null(g);
    return g;
}

/* LLaMA's block: RMS norms, q/k/v with 4 query heads over 2 KV heads, RoPE,
 * SwiGLU MLP, residuals, an untied classifier. */
static mopt_graph *llama_block(int rope_style) {
    mopt_graph *g = new_graph();
    const int H = 2 * D / HD, KVH = H / 2; /* q width 2*D: heads need not match the model width */
    int32_t x = node(g, MOPT_OP_EMBEDDING, D, 0, 0, 0, 0, tensor(g, "emb", V, D, 0), NULL, 0, 0, 0);
    int32_t h = node(g, MOPT_OP_RMSNORM, D, 1, x, 0, 0, tensor(g, "n1", D, 0, 1), NULL, 0, 0, 0);
    int32_t q = node(g, MOPT_OP_LINEAR, H * HD, 1, h, 0, 0, tensor(g, "q", H * HD, D, 0), NULL, 0, 0, 0);
    int32_t k = node(g, MOPT_OP_LINEAR, KVH * HD, 1, h, 0, 0, tensor(g, "k", KVH * HD, D, 0), NULL, 0, 0, 0);
    int32_t v = node(g, MOPT_OP_LINEAR, KVH * HD, 1, h, 0, 0, tensor(g, "v", KVH * HD, D, 0), NULL, 0, 0, 0);
    int32_t qr = node(g, MOPT_OP_ROPE, H * HD, 1, q, 0, 0, NULL, NULL, H, KVH, rope_style);
    int32_t kr = node(g, MOPT_OP_ROPE, KVH * HD, 1, k, 0, 0, NULL, NULL, KVH, KVH, rope_style);
    int32_t at = node(g, MOPT_OP_ATTENTION, H * HD, 3, qr, kr, v, NULL, NULL, H, KVH, 0);
    int32_t o = node(g, MOPT_OP_LINEAR, D, 1, at, 0, 0, tensor(g, "o", D, H * HD, 0), NULL, 0, 0, 0);
    int32_t x1 = node(g, MOPT_OP_ADD, D, 2, x, o, 0, NULL, NULL, 0, 0, 0);
    int32_t h2 = node(g, MOPT_OP_RMSNORM, D, 1, x1, 0, 0, tensor(g, "n2", D, 0, 1), NULL, 0, 0, 0);
    int32_t gt = node(g, MOPT_OP_LINEAR, FFN, 1, h2, 0, 0, tensor(g, "gate", FFN, D, 0), NULL, 0, 0, 0);
    int32_t up = node(g, MOPT_OP_LINEAR, FFN, 1, h2, 0, 0, tensor(g, "up", FFN, D, 0), NULL, 0, 0, 0);
    int32_t act = node(g, MOPT_OP_SWIGLU, FFN, 2, gt, up, 0, NULL, NULL, 0, 0, 0);
    int32_t dn = node(g, MOPT_OP_LINEAR, D, 1, act, 0, 0, tensor(g, "down", D, FFN, 0), NULL, 0, 0, 0);
    int32_t x2 = node(g, MOPT_OP_ADD, D, 2, x1, dn, 0, NULL, NULL, 0, 0, 0);
    int32_t f = node(g, MOPT_OP_RMSNORM, D, 1, x2, 0, 0, tensor(g, "nf", D, 0, 1), NULL, 0, 0, 0);
    node(g, MOPT_OP_LM_HEAD, V, 1, f, 0, 0, tensor(g, "head", V, D, 0), NULL, 0, 0, 0);
    return g;
}

/* GPT-2's block: learned positions, LayerNorms with biases, biased linears,
 * GELU MLP, a classifier tied to the embedding. */
static mopt_graph *gpt2_block(void) {
    mopt_graph *g = new_graph();
    const int H = D / HD;
    mopt_tensor *emb = tensor(g, "wte", V, D, 0);
    int32_t e = node(g, MOPT_OP_EMBEDDING, D, 0, 0, 0, 0, emb, NULL, 0, 0, 0);
    int32_t x = node(g, MOPT_OP_POS_EMBEDDING, D, 1, e, 0, 0, tensor(g, "wpe", CTX, D, 0), NULL, 0, 0, 0);
    int32_t h = node(g, MOPT_OP_LAYERNORM, D, 1, x, 0, 0, tensor(g, "ln1", D, 0, 1), tensor(g, "ln1b", D, 0, 0), 0, 0, 0);
    int32_t q = node(g, MOPT_OP_LINEAR, D, 1, h, 0, 0, tensor(g, "q", D, D, 0), tensor(g, "qb", D, 0, 0), 0, 0, 0);
    int32_t k = node(g, MOPT_OP_LINEAR, D, 1, h, 0, 0, tensor(g, "k", D, D, 0), tensor(g, "kb", D, 0, 0), 0, 0, 0);
    int32_t v = node(g, MOPT_OP_LINEAR, D, 1, h, 0, 0, tensor(g, "v", D, D, 0), tensor(g, "vb", D, 0, 0), 0, 0, 0);
    int32_t at = node(g, MOPT_OP_ATTENTION, D, 3, q, k, v, NULL, NULL, H, H, 0);
    int32_t o = node(g, MOPT_OP_LINEAR, D, 1, at, 0, 0, tensor(g, "o", D, D, 0), tensor(g, "ob", D, 0, 0), 0, 0, 0);
    int32_t x1 = node(g, MOPT_OP_ADD, D, 2, x, o, 0, NULL, NULL, 0, 0, 0);
    int32_t h2 = node(g, MOPT_OP_LAYERNORM, D, 1, x1, 0, 0, tensor(g, "ln2", D, 0, 1), tensor(g, "ln2b", D, 0, 0), 0, 0, 0);
    int32_t fc = node(g, MOPT_OP_LINEAR, FFN, 1, h2, 0, 0, tensor(g, "fc", FFN, D, 0), tensor(g, "fcb", FFN, 0, 0), 0, 0, 0);
    int32_t act = node(g, MOPT_OP_GELU, FFN, 1, fc, 0, 0, NULL, NULL, 0, 0, 0);
    int32_t pr = node(g, MOPT_OP_LINEAR, D, 1, act, 0, 0, tensor(g, "proj", D, FFN, 0), tensor(g, "projb", D, 0, 0), 0, 0, 0);
    int32_t x2 = node(g, MOPT_OP_ADD, D, 2, x1, pr, 0, NULL, NULL, 0, 0, 0);
    int32_t f = node(g, MOPT_OP_LAYERNORM, D, 1, x2, 0, 0, tensor(g, "lnf", D, 0, 1), tensor(g, "lnfb", D, 0, 0), 0, 0, 0);
    node(g, MOPT_OP_LM_HEAD, V, 1, f, 0, 0, emb, NULL, 0, 0, 0);
    return g;
}

static const int32_t small_tokens[T_SMALL] = {3, 1, 4, 1, 5, 9, 2};

static void check_every_entry(mopt_graph *g, int expect_params) {
    ref r;
    mopt_trainer *tr = train_once(g, small_tokens, T_SMALL, &r);
    assert_int_equal(mopt_trainer_n_params(tr), expect_params);
    tally ty = {0, -1, 0, 1e-7};
    for (int32_t i = 0; i < r.np; i++)
        for (int64_t k = 0; k < mopt_tensor_nelements(mopt_trainer_param_tensor(tr, i)); k++) compare(&r, i, k, small_tokens, T_SMALL, &ty);
    assert_true(ty.checked > 200);
    ref_free(&r);
    mopt_trainer_free(tr);
    mopt_graph_free(g);
}

static void test_every_llama_op_matches_finite_differences_rotate_half(void **s) {
    (void)s;
    check_every_entry(llama_block(MOPT_ROPE_HALF), 12);
}

static void test_every_llama_op_matches_finite_differences_interleaved_rope(void **s) {
    (void)s;
    check_every_entry(llama_block(MOPT_ROPE_INTERLEAVED), 12);
}

static void test_every_gpt2_op_matches_finite_differences_with_a_tied_classifier(void **s) {
    (void)s;
    check_every_entry(gpt2_block(), 20); /* wte counted once */
}

static void test_gradients_accumulate_until_zeroed(void **s) {
    (void)s;
    mopt_graph *g = llama_block(MOPT_ROPE_HALF);
    mopt_error err = {0};
    mopt_trainer *tr = mopt_trainer_new(g, T_SMALL, &err);
    assert_non_null(tr);
    double l1, l2;
    mopt_trainer_zero_grad(tr);
    assert_int_equal(mopt_trainer_step(tr, small_tokens, T_SMALL, &l1, &err), MOPT_OK);
    const float once = mopt_trainer_grad(tr, 0)[3 * D];
    assert_int_equal(mopt_trainer_step(tr, small_tokens, T_SMALL, &l2, &err), MOPT_OK);
    assert_true(l1 == l2 && once != 0);
    assert_float_equal(mopt_trainer_grad(tr, 0)[3 * D], 2 * once, 1e-6 * fabs(once));
    mopt_trainer_zero_grad(tr);
    assert_true(mopt_trainer_grad(tr, 0)[3 * D] == 0);
    mopt_trainer_free(tr);
    mopt_graph_free(g);
}

static void test_bad_windows_are_refused(void **s) {
    (void)s;
    mopt_graph *g = llama_block(MOPT_ROPE_HALF);
    mopt_error err = {0};
    assert_null(mopt_trainer_new(g, 1, &err));
    CHECK_ERR(err, MOPT_E_INVALID, "window of 1 tokens");
    assert_null(mopt_trainer_new(g, CTX + 1, &err));
    CHECK_ERR(err, MOPT_E_INVALID, "context of 16");
    mopt_trainer *tr = mopt_trainer_new(g, 4, &err);
    assert_non_null(tr);
    double loss;
    assert_int_equal(mopt_trainer_step(tr, small_tokens, 5, &loss, &err), MOPT_E_INVALID);
    CHECK_ERR(err, MOPT_E_INVALID, "2 to 4");
    const int32_t bad[3] = {1, V, 2};
    assert_int_equal(mopt_trainer_step(tr, bad, 3, &loss, &err), MOPT_E_INVALID);
    CHECK_ERR(err, MOPT_E_INVALID, "outside the vocabulary");
    mopt_trainer_free(tr);
    mopt_graph_free(g);
}

/* --- the losses on logits ----------------------------------------------------------------- */

/* Gradient of a loss of the student's logits against central differences. */
static void check_loss_gradient(int kind, int32_t top_k, double tau, int hard) {
    enum { N = 3, VV = 9 };
    float s[N * VV], t[N * VV], d[N * VV] = {0};
    const int32_t tok[N] = {4, 7, 1};
    for (int i = 0; i < N * VV; i++) s[i] = 3 * det(), t[i] = 3 * det();
    double loss = hard ? mopt_cross_entropy(s, d, tok, N, VV, 0.7) : mopt_distill_kl(s, t, d, N, VV, tau, kind, top_k, 0.7);
    assert_true(isfinite(loss) && loss > 0);
    for (int i = 0; i < N * VV; i++) {
        const float keep = s[i], up = keep + 1e-3f, down = keep - 1e-3f;
        s[i] = up;
        const double lu = hard ? mopt_cross_entropy(s, NULL, tok, N, VV, 1) : mopt_distill_kl(s, t, NULL, N, VV, tau, kind, top_k, 1);
        s[i] = down;
        const double ld = hard ? mopt_cross_entropy(s, NULL, tok, N, VV, 1) : mopt_distill_kl(s, t, NULL, N, VV, tau, kind, top_k, 1);
        s[i] = keep;
        const double want = 0.7 * (lu - ld) / ((double)up - (double)down);
        if (fabs(d[i] - want) > 1e-4 * fmax(fabs(want), 1e-2))
            fprintf(stderr, "logit %d: gradient %.8g, finite difference %.8g\n", i, d[i], want);
        assert_true(fabs(d[i] - want) <= 1e-4 * fmax(fabs(want), 1e-2));
    }
}

static void test_cross_entropy_gradient_matches_finite_differences(void **st) {
    (void)st;
    check_loss_gradient(0, 0, 1, 1);
}

static void test_distillation_kl_gradients_match_finite_differences(void **st) {
    (void)st;
    check_loss_gradient(MOPT_KL_FORWARD, 0, 1.0, 0);
    check_loss_gradient(MOPT_KL_FORWARD, 0, 2.5, 0);
    check_loss_gradient(MOPT_KL_REVERSE, 0, 2.0, 0);
    check_loss_gradient(MOPT_KL_FORWARD, 3, 1.5, 0); /* top-3 of the teacher, renormalized */
}

static void test_distillation_kl_is_zero_for_the_same_logits_and_matches_float64(void **st) {
    (void)st;
    enum { VV = 5 };
    const float a[VV] = {0.5f, -1, 2, 0, 1}, b[VV] = {1, 0, -0.5f, 0.25f, 0};
    assert_true(fabs(mopt_distill_kl(a, a, NULL, 1, VV, 2.0, MOPT_KL_FORWARD, 0, 1)) < 1e-15);
    /* KL(pb || pa) at tau = 2, scaled by 4, written out in float64 */
    double pa[VV], pb[VV], za = 0, zb = 0, kl = 0;
    for (int i = 0; i < VV; i++) za += (pa[i] = exp(a[i] / 2.0)), zb += (pb[i] = exp(b[i] / 2.0));
    for (int i = 0; i < VV; i++) kl += pb[i] / zb * log((pb[i] / zb) / (pa[i] / za));
    assert_true(fabs(mopt_distill_kl(a, b, NULL, 1, VV, 2.0, MOPT_KL_FORWARD, 0, 1) - 4 * kl) < 1e-12);
}

/* --- optimization ------------------------------------------------------------------------ */

/* Two AdamW steps on the small graph against the update written out in float64:
 * bias-corrected moments, decoupled decay on matrices only. */
static void test_adamw_follows_the_reference_update(void **st) {
    (void)st;
    mopt_graph *g = llama_block(MOPT_ROPE_HALF);
    mopt_error err = {0};
    mopt_trainer *tr = mopt_trainer_new(g, T_SMALL, &err);
    assert_non_null(tr);
    mopt_adamw_opts o;
    mopt_adamw_opts_default(&o);
    o.weight_decay = 0.1f;
    const int32_t np = mopt_trainer_n_params(tr);
    double *w[16], *m[16], *v[16];
    for (int32_t i = 0; i < np; i++) {
        const int64_t n = mopt_tensor_nelements(mopt_trainer_param_tensor(tr, i));
        w[i] = malloc((size_t)n * sizeof(double)), m[i] = calloc((size_t)n, sizeof(double)), v[i] = calloc((size_t)n, sizeof(double));
        for (int64_t k = 0; k < n; k++) w[i][k] = mopt_trainer_param(tr, i)[k];
    }
    const float lr[2] = {1e-2f, 5e-3f}, scale[2] = {1.0f, 0.5f};
    for (int step = 1; step <= 2; step++) {
        double loss;
        mopt_trainer_zero_grad(tr);
        assert_int_equal(mopt_trainer_step(tr, small_tokens, T_SMALL, &loss, &err), MOPT_OK);
        for (int32_t i = 0; i < np; i++) {
            const mopt_tensor *t = mopt_trainer_param_tensor(tr, i);
            const int matrix = t->ndim == 2;
            for (int64_t k = 0; k < mopt_tensor_nelements(t); k++) {
                const double gr = (double)mopt_trainer_grad(tr, i)[k] * scale[step - 1];
                m[i][k] = 0.9 * m[i][k] + 0.1 * gr;
                v[i][k] = 0.95 * v[i][k] + 0.05 * gr * gr;
                const double up = (m[i][k] / (1 - pow(0.9, step))) / (sqrt(v[i][k] / (1 - pow(0.95, step))) + 1e-8);
                w[i][k] -= lr[step - 1] * (up + (matrix ? 0.1 * w[i][k] : 0));
            }
        }
        assert_int_equal(mopt_trainer_adamw(tr, &o, lr[step - 1], scale[step - 1], &err), MOPT_OK);
    }
    for (int32_t i = 0; i < np; i++) {
        for (int64_t k = 0; k < mopt_tensor_nelements(mopt_trainer_param_tensor(tr, i)); k++)
            assert_true(fabs(mopt_trainer_param(tr, i)[k] - w[i][k]) <= 1e-5 * fmax(1, fabs(w[i][k])));
        free(w[i]), free(m[i]), free(v[i]);
    }
    assert_int_equal(mopt_trainer_adamw(tr, &o, 0.0f, 1, &err), MOPT_E_INVALID);
    CHECK_ERR(err, MOPT_E_INVALID, "learning rate");
    mopt_trainer_free(tr);
    mopt_graph_free(g);
}

/* One AdamW step from opts on a fresh trainer of the small graph: its parameters after it, concatenated (malloc'd) */
static float *adamw_step_params(const mopt_adamw_opts *o, int64_t *n_out) {
    const uint32_t kept = seed;
    seed = 11; /* the same weights each call */
    mopt_graph *g = llama_block(MOPT_ROPE_HALF);
    seed = kept;
    mopt_error err = {0};
    mopt_trainer *tr = mopt_trainer_new(g, T_SMALL, &err);
    assert_non_null(tr);
    double loss;
    mopt_trainer_zero_grad(tr);
    assert_int_equal(mopt_trainer_step(tr, small_tokens, T_SMALL, &loss, &err), MOPT_OK);
    assert_int_equal(mopt_trainer_adamw(tr, o, 1e-2f, 1.0f, &err), MOPT_OK);
    int64_t n = 0;
    for (int32_t i = 0; i < mopt_trainer_n_params(tr); i++) n += mopt_tensor_nelements(mopt_trainer_param_tensor(tr, i));
    float *out = malloc((size_t)n * sizeof *out), *at = out;
    for (int32_t i = 0; i < mopt_trainer_n_params(tr); i++) {
        const int64_t k = mopt_tensor_nelements(mopt_trainer_param_tensor(tr, i));
        memcpy(at, mopt_trainer_param(tr, i), (size_t)k * sizeof *at);
        at += k;
    }
    *n_out = n;
    mopt_trainer_free(tr);
    mopt_graph_free(g);
    return out;
}

/* A caller built against older headers passes a shorter struct: what lies past its struct_size is not read, and those
 * fields keep mopt_adamw_opts_default's values (here a weight decay, 0 by default, that would change the step). */
static void test_adamw_reads_no_option_past_the_callers_struct_size(void **st) {
    (void)st;
    mopt_adamw_opts d, shorter, full;
    mopt_adamw_opts_default(&d);
    assert_int_equal(d.struct_size, sizeof d);
    shorter = d, full = d;
    shorter.weight_decay = full.weight_decay = 0.5f;
    shorter.struct_size = (uint32_t)offsetof(mopt_adamw_opts, weight_decay);
    int64_t n1, n2, n3;
    float *a = adamw_step_params(&d, &n1), *b = adamw_step_params(&shorter, &n2), *c = adamw_step_params(&full, &n3);
    assert_true(n1 == n2 && n1 == n3);
    assert_memory_equal(a, b, (size_t)n1 * sizeof *a);
    assert_memory_not_equal(a, c, (size_t)n1 * sizeof *a); /* the decay is read where the struct holds it */
    free(a), free(b), free(c);
    /* a {0} initializer is refused, not read as all defaults */
    mopt_graph *g = llama_block(MOPT_ROPE_HALF);
    mopt_error err = {0};
    mopt_trainer *tr = mopt_trainer_new(g, T_SMALL, &err);
    const mopt_adamw_opts zero = {0};
    assert_int_equal(mopt_trainer_adamw(tr, &zero, 1e-2f, 1.0f, &err), MOPT_E_INVALID);
    CHECK_ERR(err, MOPT_E_INVALID, "struct_size is 0: start from mopt_adamw_opts_default()");
    mopt_trainer_free(tr);
    mopt_graph_free(g);
}

static void test_learning_rate_warms_up_then_follows_a_cosine(void **st) {
    (void)st;
    assert_float_equal(mopt_lr_cosine(0, 10, 110, 1e-3f, 1e-4f), 1e-4f, 1e-9);
    assert_float_equal(mopt_lr_cosine(9, 10, 110, 1e-3f, 1e-4f), 1e-3f, 1e-9);
    assert_float_equal(mopt_lr_cosine(10, 10, 110, 1e-3f, 1e-4f), 1e-3f, 1e-9);
    assert_float_equal(mopt_lr_cosine(60, 10, 110, 1e-3f, 1e-4f), 5.5e-4f, 1e-9);
    assert_float_equal(mopt_lr_cosine(110, 10, 110, 1e-3f, 1e-4f), 1e-4f, 1e-9);
}

/* Written back as bf16, the executor runs the new weights: its loss is the trainer's. */
static void test_written_back_weights_keep_their_dtype_and_run(void **st) {
    (void)st;
    REQUIRE_SHARED();
    mopt_model *m = test_load_model("models/lit-gpt2-1m");
    mopt_graph *g = mopt_model_graph(m);
    mopt_error err = {0};
    mopt_trainer *tr = mopt_trainer_new(g, T_REAL, &err);
    assert_non_null(tr);
    const int32_t ids[T_REAL] = {40, 470, 11, 995, 0, 3, 9, 27, 100, 7, 64, 5};
    double before, after;
    mopt_adamw_opts o;
    mopt_adamw_opts_default(&o);
    assert_int_equal(mopt_trainer_step(tr, ids, T_REAL, &before, &err), MOPT_OK);
    assert_int_equal(mopt_trainer_adamw(tr, &o, 1e-2f, 1, &err), MOPT_OK);
    assert_int_equal(mopt_trainer_write_back(tr, g, &err), MOPT_OK);
    for (int32_t i = 0; i < mopt_trainer_n_params(tr); i++) { /* the master copy takes the stored bf16 value */
        const mopt_tensor *t = mopt_trainer_param_tensor(tr, i);
        assert_ptr_equal(t, mopt_graph_find_tensor(g, t->name));
        assert_int_equal(t->dtype, MOPT_DTYPE_BF16);
        float *p = mopt_trainer_param(tr, i);
        for (int64_t k = 0; k < mopt_tensor_nelements(t); k++) p[k] = mopt_bf16_to_f32(((const uint16_t *)t->data)[k]);
    }
    mopt_trainer_zero_grad(tr);
    assert_int_equal(mopt_trainer_step(tr, ids, T_REAL, &after, &err), MOPT_OK);
    assert_true(after < before);
    mopt_session *se = mopt_session_new(g, NULL, &err);
    mopt_ppl_result pr;
    assert_int_equal(mopt_perplexity(se, ids, T_REAL, T_REAL, NULL, NULL, &pr, &err), MOPT_OK);
    assert_true(fabs(pr.nll - after) <= 1e-5 * after);
    mopt_session_free(se);
    mopt_trainer_free(tr);
    mopt_model_free(m);
}

/* --- the real models ------------------------------------------------------------------ */


/* lit-val's first T_REAL tokens, then per parameter its largest-gradient entry
 * and two more spread over it; parameters of layer 0, the last layer and
 * outside the blocks (every kind of weight), to keep the float64 forwards few. */
static void check_real_model(const char *rel) {
    REQUIRE_SHARED();
    mopt_model *m = test_load_model(rel);
    char data[4096];
    int32_t *ids = NULL;
    size_t n = 0;
    mopt_error err = {0};
    assert_int_equal(mopt_tokenizer_encode_file(mopt_model_tokenizer(m), test_shared_path(data, sizeof data, "data/lit-val.txt"), 0, &ids, &n, &err), MOPT_OK);
    assert_true(n >= T_REAL);
    ref r;
    mopt_trainer *tr = train_once(mopt_model_graph(m), ids, T_REAL, &r);
    tally ty = {0, -1, 0, 0}; /* the stated tolerance, no slack */
    char last[32];
    snprintf(last, sizeof last, ".%d.", mopt_model_arch(m)->n_layers - 1);
    int kinds = 0;
    for (int32_t i = 0; i < r.np; i++) {
        const mopt_tensor *t = mopt_trainer_param_tensor(tr, i);
        const int in_block = strstr(t->name, "layers.") || strstr(t->name, ".h.");
        if (in_block && !strstr(t->name, ".0.") && !strstr(t->name, last)) continue;
        const int64_t ne = mopt_tensor_nelements(t);
        const float *gr = mopt_trainer_grad(tr, i);
        int64_t best = 0;
        for (int64_t k = 1; k < ne; k++)
            if (fabsf(gr[k]) > fabsf(gr[best])) best = k;
        compare(&r, i, best, ids, T_REAL, &ty);
        compare(&r, i, (best + ne / 3) % ne, ids, T_REAL, &ty);
        compare(&r, i, (best * 7 + 2 * ne / 3 + 1) % ne, ids, T_REAL, &ty);
        kinds++;
    }
    fprintf(stderr, "%s: %d parameters, %d entries checked, worst relative difference %.2g (%s)\n", rel, kinds, ty.checked, ty.worst,
            ty.worst_param >= 0 ? mopt_trainer_param_tensor(tr, ty.worst_param)->name : "-");
    assert_true(ty.checked >= kinds);
    free(ids);
    ref_free(&r);
    mopt_trainer_free(tr);
    mopt_model_free(m);
}

static void test_lit_llama_gradients_match_finite_differences(void **s) {
    (void)s;
    check_real_model("models/lit-llama-7m");
}

static void test_lit_gpt2_gradients_match_finite_differences(void **s) {
    (void)s;
    check_real_model("models/lit-gpt2-1m");
}

/* A transform's gradient side that doubles what reaches the weight. */
static void double_grad(void *user, int32_t param, const float *w, const float *dfw, float *dw, int64_t rows, int64_t cols) {
    (void)user, (void)param, (void)w;
    for (int64_t k = 0; k < rows * cols; k++) dw[k] += 2.0f * dfw[k];
}
static void identity_fn(void *user, int32_t param, const float *w, float *out, int64_t rows, int64_t cols) {
    (void)user, (void)param;
    memcpy(out, w, (size_t)(rows * cols) * sizeof *out);
}

static void test_frozen_and_transformed_gradients(void **st) {
    (void)st;
    mopt_graph *g = llama_block(MOPT_ROPE_HALF);
    mopt_error err = {0};
    mopt_trainer *tr = mopt_trainer_new(g, T_SMALL, &err);
    double loss;
    assert_int_equal(mopt_trainer_step(tr, small_tokens, T_SMALL, &loss, &err), MOPT_OK);
    const int32_t np = mopt_trainer_n_params(tr);
    float *plain[16];
    for (int32_t i = 0; i < np; i++) {
        plain[i] = malloc((size_t)mopt_trainer_param_size(tr, i) * sizeof(float));
        memcpy(plain[i], mopt_trainer_grad(tr, i), (size_t)mopt_trainer_param_size(tr, i) * sizeof(float));
    }
    /* parameter 1 frozen: no gradient, no update; parameter 2 through a doubling gradient transform */
    assert_int_equal(mopt_trainer_set_frozen(tr, 1, 1, &err), MOPT_OK);
    assert_int_equal(mopt_trainer_set_transform(tr, 2, identity_fn, NULL, &err), MOPT_OK);
    assert_int_equal(mopt_trainer_set_transform_grad(tr, 2, double_grad, &err), MOPT_OK);
    mopt_trainer_zero_grad(tr);
    assert_int_equal(mopt_trainer_step(tr, small_tokens, T_SMALL, &loss, &err), MOPT_OK);
    for (int32_t i = 0; i < np; i++)
        for (int64_t k = 0; k < mopt_trainer_param_size(tr, i); k++) {
            const float want = i == 1 ? 0.0f : i == 2 ? 2.0f * plain[i][k] : plain[i][k];
            assert_true(fabsf(mopt_trainer_grad(tr, i)[k] - want) <= 1e-6f * fmaxf(1.0f, fabsf(want)));
        }
    float before = mopt_trainer_param(tr, 1)[0];
    mopt_adamw_opts o;
    mopt_adamw_opts_default(&o);
    assert_int_equal(mopt_trainer_adamw(tr, &o, 1e-2f, 1, &err), MOPT_OK);
    assert_true(mopt_trainer_param(tr, 1)[0] == before);
    for (int32_t i = 0; i < np; i++) free(plain[i]);
    mopt_trainer_free(tr);
    mopt_graph_free(g);
}

static void test_a_saved_state_resumes_and_another_models_is_refused(void **st) {
    (void)st;
    char dir[1024], path[1200];
    test_tmpdir(dir, sizeof dir, "train-state");
    snprintf(path, sizeof path, "%s/a.state", dir);
    mopt_graph *g = llama_block(MOPT_ROPE_HALF), *g2 = gpt2_block();
    mopt_error err = {0};
    mopt_trainer *tr = mopt_trainer_new(g, T_SMALL, &err), *other = mopt_trainer_new(g2, T_SMALL, &err);
    const float init[3] = {1, 2, 3};
    const int32_t extra = mopt_trainer_add_param(tr, "my.scales", 3, init, &err);
    assert_true(extra >= 0);
    assert_null(mopt_trainer_param_tensor(tr, extra));
    assert_string_equal(mopt_trainer_param_name(tr, extra), "my.scales");
    mopt_adamw_opts o;
    mopt_adamw_opts_default(&o);
    double loss;
    assert_int_equal(mopt_trainer_step(tr, small_tokens, T_SMALL, &loss, &err), MOPT_OK);
    assert_int_equal(mopt_trainer_adamw(tr, &o, 1e-2f, 1, &err), MOPT_OK);
    int64_t counter = 42, room = 1;
    mopt_train_extra x = {"counter", 1, &counter, 1};
    assert_int_equal(mopt_trainer_save(tr, path, &x, 1, &err), MOPT_OK);
    const float w0 = mopt_trainer_param(tr, 1)[0], s0 = mopt_trainer_param(tr, extra)[1];
    /* one more update moves everything; loading goes back to the saved state, the moments too */
    mopt_trainer_zero_grad(tr);
    assert_int_equal(mopt_trainer_step(tr, small_tokens, T_SMALL, &loss, &err), MOPT_OK);
    assert_int_equal(mopt_trainer_adamw(tr, &o, 1e-2f, 1, &err), MOPT_OK);
    const float w1 = mopt_trainer_param(tr, 1)[0];
    assert_true(w1 != w0);
    counter = 0;
    x.n = room;
    assert_int_equal(mopt_trainer_load(tr, path, &x, 1, &err), MOPT_OK);
    assert_true(mopt_trainer_param(tr, 1)[0] == w0 && mopt_trainer_param(tr, extra)[1] == s0);
    assert_int_equal(counter, 42);
    assert_int_equal(x.n, 1);
    mopt_trainer_zero_grad(tr); /* the same update again gives the same weights: the moments and step count came back */
    assert_int_equal(mopt_trainer_step(tr, small_tokens, T_SMALL, &loss, &err), MOPT_OK);
    assert_int_equal(mopt_trainer_adamw(tr, &o, 1e-2f, 1, &err), MOPT_OK);
    assert_true(mopt_trainer_param(tr, 1)[0] == w1);
    /* another model's trainer refuses the file and keeps its weights */
    const float o0 = mopt_trainer_param(other, 0)[0];
    assert_int_equal(mopt_trainer_load(other, path, NULL, 0, &err), MOPT_E_INVALID);
    CHECK_ERR(err, MOPT_E_INVALID, "a training state of another model");
    assert_true(mopt_trainer_param(other, 0)[0] == o0);
    mopt_trainer_free(tr);
    mopt_trainer_free(other);
    mopt_graph_free(g);
    mopt_graph_free(g2);
}

/* A checkpoint path holding anything but a training state is the user's: the save refuses it and leaves it as it was. */
static void test_a_save_never_overwrites_a_file_that_is_not_a_training_state(void **st) {
    (void)st;
    char dir[1024], mine[1200], state[1200], link[1200];
    test_tmpdir(dir, sizeof dir, "train-state-keep");
    snprintf(mine, sizeof mine, "%s/notes.txt", dir);
    snprintf(state, sizeof state, "%s/run.state", dir);
    snprintf(link, sizeof link, "%s/link.state", dir);
    FILE *f = fopen(mine, "wb");
    assert_non_null(f);
    fputs("my notes", f);
    fclose(f);
    assert_int_equal(symlink(mine, link), 0);
    mopt_graph *g = llama_block(MOPT_ROPE_HALF);
    mopt_error err = {0};
    mopt_trainer *tr = mopt_trainer_new(g, T_SMALL, &err);
    assert_int_equal(mopt_trainer_save(tr, mine, NULL, 0, &err), MOPT_E_INVALID);
    CHECK_ERR(err, MOPT_E_INVALID, "is not a mopt training state");
    assert_int_equal(mopt_trainer_save(tr, link, NULL, 0, &err), MOPT_E_INVALID);
    CHECK_ERR(err, MOPT_E_INVALID, "not a file mopt wrote");
    char buf[32] = {0};
    f = fopen(mine, "rb");
    assert_non_null(f);
    assert_int_equal(fread(buf, 1, sizeof buf - 1, f), 8);
    fclose(f);
    assert_string_equal(buf, "my notes");
    /* a state mopt wrote is replaced, as a run that checkpoints every N steps needs */
    assert_int_equal(mopt_trainer_save(tr, state, NULL, 0, &err), MOPT_OK);
    assert_int_equal(mopt_trainer_save(tr, state, NULL, 0, &err), MOPT_OK);
    mopt_trainer_free(tr);
    mopt_graph_free(g);
}

/* Recomputation keeps one block's inner activations and gives the same gradients, bit for bit, and so does any thread count. */
static void check_recompute(const char *rel) {
    REQUIRE_SHARED();
    mopt_model *m = test_load_model(rel);
    const mopt_graph *g = mopt_model_graph(m);
    mopt_error err = {0};
    int32_t ids[128];
    for (int32_t t = 0; t < 128; t++) ids[t] = (t * 37 + 11) % mopt_model_arch(m)->vocab_size;
    mopt_trainer *a = mopt_trainer_new(g, 128, &err), *b = mopt_trainer_new(g, 128, &err);
    assert_int_equal(mopt_trainer_set_threads(a, 1, &err), MOPT_OK); /* and the thread count changes no bit either */
    assert_int_equal(mopt_trainer_set_threads(b, 3, &err), MOPT_OK);
    const int64_t before = mopt_trainer_activation_bytes(b);
    assert_int_equal(mopt_trainer_set_recompute(b, 1, &err), MOPT_OK);
    const int64_t after = mopt_trainer_activation_bytes(b);
    fprintf(stderr, "%s: activations %.2f MB, with recomputation %.2f MB\n", rel, before / 1e6, after / 1e6);
    assert_true(after < before / 2);
    double la, lb;
    for (int rep = 0; rep < 2; rep++) { /* twice: the second window starts from the buffers the first left */
        mopt_trainer_zero_grad(a);
        mopt_trainer_zero_grad(b);
        assert_int_equal(mopt_trainer_step(a, ids + rep * 8, 120, &la, &err), MOPT_OK);
        assert_int_equal(mopt_trainer_step(b, ids + rep * 8, 120, &lb, &err), MOPT_OK);
        assert_true(la == lb);
        for (int32_t i = 0; i < mopt_trainer_n_params(a); i++)
            assert_memory_equal(mopt_trainer_grad(a, i), mopt_trainer_grad(b, i), (size_t)mopt_trainer_param_size(a, i) * sizeof(float));
    }
    mopt_trainer_free(a);
    mopt_trainer_free(b);
    mopt_model_free(m);
}

static void test_recomputation_gives_the_same_gradients_llama(void **s) { (void)s, check_recompute("models/lit-llama-7m"); }
static void test_recomputation_gives_the_same_gradients_gpt2(void **s) { (void)s, check_recompute("models/lit-gpt2-1m"); }

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_llama_op_matches_finite_differences_rotate_half),
        cmocka_unit_test(test_every_llama_op_matches_finite_differences_interleaved_rope),
        cmocka_unit_test(test_every_gpt2_op_matches_finite_differences_with_a_tied_classifier),
        cmocka_unit_test(test_gradients_accumulate_until_zeroed),
        cmocka_unit_test(test_frozen_and_transformed_gradients),
        cmocka_unit_test(test_recomputation_gives_the_same_gradients_llama),
        cmocka_unit_test(test_recomputation_gives_the_same_gradients_gpt2),
        cmocka_unit_test(test_a_saved_state_resumes_and_another_models_is_refused),
        cmocka_unit_test(test_a_save_never_overwrites_a_file_that_is_not_a_training_state),
        cmocka_unit_test(test_bad_windows_are_refused),
        cmocka_unit_test(test_cross_entropy_gradient_matches_finite_differences),
        cmocka_unit_test(test_distillation_kl_gradients_match_finite_differences),
        cmocka_unit_test(test_distillation_kl_is_zero_for_the_same_logits_and_matches_float64),
        cmocka_unit_test(test_adamw_follows_the_reference_update),
        cmocka_unit_test(test_adamw_reads_no_option_past_the_callers_struct_size),
        cmocka_unit_test(test_learning_rate_warms_up_then_follows_a_cosine),
        cmocka_unit_test(test_written_back_weights_keep_their_dtype_and_run),
        cmocka_unit_test(test_lit_llama_gradients_match_finite_differences),
        cmocka_unit_test(test_lit_gpt2_gradients_match_finite_differences),
    };
    return test_run_tests(tests, NULL, NULL);
}
