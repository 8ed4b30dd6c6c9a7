/* The sparsity passes end to end on lit-gpt2-1m: magnitude's masks equal an
 * independent float64 selection in this file, N:M patterns hold in every group
 * with the weights left unchanged elsewhere (Wanda) or updated (SparseGPT),
 * the quality order of the papers holds at 2:4, the pruned model exports and
 * reloads with the same perplexity, and bad input gets one line and exit 2. */
#include <jansson.h>
#include <math.h>

#include "llama_ref64.h"
#include "testutil.h"


/* The weight of a linear as doubles. */
static double *weights(const mopt_tensor *t, int64_t *n) {
    *n = mopt_tensor_nelements(t);
    float *f = malloc((size_t)*n * sizeof *f);
    double *d = malloc((size_t)*n * sizeof *d);
    mopt_error err = {0};
    assert_int_equal(mopt_tensor_read_f32(t, 0, *n, f, &err), MOPT_OK);
    for (int64_t i = 0; i < *n; i++) d[i] = f[i];
    free(f);
    return d;
}

static double val16k(mopt_model *m) { return test_val_nll(m, 16384, 256); }

static const double *g_abs;
static int by_abs_then_index(const void *a, const void *b) {
    const int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    if (g_abs[x] != g_abs[y]) return g_abs[x] < g_abs[y] ? -1 : 1;
    return x < y ? -1 : 1;
}

static void test_magnitude_masks_match_a_float64_selection(void **s) {
    REQUIRE_SHARED();
    mopt_model *orig = test_load_model("models/lit-gpt2-1m"), *m = test_load_model("models/lit-gpt2-1m");
    mopt_report *r = test_run_pipeline(m, "prune.magnitude<sparsity=0.5>");
    const mopt_graph *g0 = mopt_model_graph(orig), *g = mopt_model_graph(m);
    int linears = 0;
    for (int32_t i = 0; i < mopt_graph_n_nodes(g); i++) {
        if (!mopt_role_is_linear(mopt_graph_node(g, i)->role)) continue;
        int64_t n, n2;
        double *w0 = weights(mopt_graph_node(g0, i)->weight, &n), *w = weights(mopt_graph_node(g, i)->weight, &n2);
        /* the floor(n / 2) + 1 smallest |w| (ties by position) are zero, every other weight is as it was */
        double *a = malloc((size_t)n * sizeof *a);
        int64_t *order = malloc((size_t)n * sizeof *order);
        for (int64_t k = 0; k < n; k++) a[k] = fabs(w0[k]), order[k] = k;
        g_abs = a;
        qsort(order, (size_t)n, sizeof *order, by_abs_then_index);
        const int64_t pruned = n / 2 + 1;
        for (int64_t k = 0; k < n; k++) {
            const int64_t at = order[k];
            if (k < pruned) assert_true(w[at] == 0.0);
            else assert_true(w[at] == w0[at]);
        }
        const double sp = (double)pruned / (double)n;
        assert_true(sp >= 0.5 && sp < 0.501);
        free(a), free(order), free(w0), free(w);
        linears++;
    }
    assert_int_equal(linears, 6 * mopt_model_arch(m)->n_layers);
    assert_true(mopt_report_get_metric(r, "sparsity_min") >= 0.5 && mopt_report_get_metric(r, "sparsity_max") < 0.501);
    mopt_report_free(r);
    mopt_model_free(m);
    mopt_model_free(orig);
}

/* --- Wanda against a float64 reference ---------------------------------------------
 * Wanda's reference code (prune_wanda): layer by layer, the layer's linears get
 * ||X_j||_2 from one run of the layer on inputs that went through the layers
 * already pruned; each row keeps its weights with the largest |W_ij| ||X_j||
 * (stable sort, the lowest floor(in / 2) pruned; 2:4: the two lowest of every
 * group of four); then the pruned layer runs again for the next layer's input.
 * Written here in float64 over tests/llama_ref64.h. */

static const double *g_metric;
static int by_metric_then_index(const void *a, const void *b) {
    const int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (g_metric[x] != g_metric[y]) return g_metric[x] < g_metric[y] ? -1 : 1;
    return x - y;
}

/* Prunes W [out, in] in place by the Wanda metric with input norms sq (sum of squares). */
static void wanda_prune64(double *W, int out, int in, const double *sq, int two_four) {
    double *m = malloc((size_t)in * sizeof *m);
    int32_t *order = malloc((size_t)in * sizeof *order);
    for (int r = 0; r < out; r++) {
        double *w = W + (size_t)r * in;
        for (int j = 0; j < in; j++) m[j] = fabs(w[j]) * sqrt(sq[j]), order[j] = j;
        if (two_four) {
            for (int c = 0; c < in; c += 4) {
                g_metric = m;
                qsort(order + c, 4, sizeof *order, by_metric_then_index);
                w[order[c]] = w[order[c + 1]] = 0;
            }
        } else {
            g_metric = m;
            qsort(order, (size_t)in, sizeof *order, by_metric_then_index);
            for (int j = 0; j < in / 2; j++) w[order[j]] = 0;
        }
    }
    free(m), free(order);
}

/* Lower Cholesky factor of A [n, n] in place (upper triangle left as it was). */
static void chol64(double *A, int n) {
    for (int j = 0; j < n; j++) {
        double d = A[(size_t)j * n + j];
        for (int k = 0; k < j; k++) d -= A[(size_t)j * n + k] * A[(size_t)j * n + k];
        A[(size_t)j * n + j] = sqrt(d);
        for (int i = j + 1; i < n; i++) {
            double v = A[(size_t)i * n + j];
            for (int k = 0; k < j; k++) v -= A[(size_t)i * n + k] * A[(size_t)j * n + k];
            A[(size_t)i * n + j] = v / A[(size_t)j * n + j];
        }
    }
}

static double *g_score;
static int by_score(const void *a, const void *b) {
    const double x = g_score[*(const int32_t *)a], y = g_score[*(const int32_t *)b];
    return x < y ? -1 : x > y;
}

/* SparseGPT's fasterprune (sparsegpt.py) in float64 from its description: H =
 * 2/N sum x x^T (xx: the lower triangle of the sum, N windows), a dead input's
 * diagonal set to 1 and its weights to 0, 1% of the mean diagonal added, U the
 * upper Cholesky factor of H^-1, then 128-column blocks: unstructured, the
 * block's mask is every w^2 / U_jj^2 <= its int(size x 0.5)-th smallest; 2:4,
 * each row's two lowest of the next four columns at every fourth column; each
 * column's error (w - q) / U_jj goes onto the block's later columns, the
 * block's onto the rest. */
static void sparsegpt_prune64(double *W, int out, int in, const double *xx, int windows, int two_four) {
    enum { B = 128 };
    const size_t nn = (size_t)in * in;
    double *H = malloc(nn * sizeof *H), *Li = calloc(nn, sizeof *Li), *U = malloc(nn * sizeof *U);
    for (int i = 0; i < in; i++)
        for (int j = 0; j <= i; j++) H[(size_t)i * in + j] = H[(size_t)j * in + i] = 2.0 / windows * xx[(size_t)i * in + j];
    double mean = 0;
    for (int j = 0; j < in; j++) {
        if (H[(size_t)j * in + j] == 0) {
            H[(size_t)j * in + j] = 1;
            for (int r = 0; r < out; r++) W[(size_t)r * in + j] = 0;
        }
        mean += H[(size_t)j * in + j] / in;
    }
    for (int j = 0; j < in; j++) H[(size_t)j * in + j] += 0.01 * mean;
    chol64(H, in); /* H = L L^T */
    for (int j = 0; j < in; j++) { /* Li = L^-1, column by column */
        Li[(size_t)j * in + j] = 1 / H[(size_t)j * in + j];
        for (int i = j + 1; i < in; i++) {
            double v = 0;
            for (int k = j; k < i; k++) v -= H[(size_t)i * in + k] * Li[(size_t)k * in + j];
            Li[(size_t)i * in + j] = v / H[(size_t)i * in + i];
        }
    }
    for (int i = 0; i < in; i++) /* H^-1 = Li^T Li, into U's lower triangle */
        for (int j = 0; j <= i; j++) {
            double v = 0;
            for (int k = i; k < in; k++) v += Li[(size_t)k * in + i] * Li[(size_t)k * in + j];
            U[(size_t)i * in + j] = v;
        }
    chol64(U, in); /* H^-1 = L2 L2^T; U = L2^T */
    for (int i = 0; i < in; i++)
        for (int j = i; j < in; j++) U[(size_t)i * in + j] = i == j ? U[(size_t)i * in + j] : U[(size_t)j * in + i];
    double *E = malloc((size_t)out * B * sizeof *E), *sc = malloc((size_t)out * B * sizeof *sc);
    unsigned char *mask = malloc((size_t)out * B);
    int32_t *ord = malloc((size_t)out * B * sizeof *ord);
    for (int i1 = 0; i1 < in; i1 += B) {
        const int i2 = i1 + B < in ? i1 + B : in, nb = i2 - i1;
        memset(mask, 0, (size_t)out * B);
        if (!two_four) {
            for (int r = 0; r < out; r++)
                for (int c = 0; c < nb; c++) {
                    const double w = W[(size_t)r * in + i1 + c], d = U[(size_t)(i1 + c) * in + i1 + c];
                    sc[r * nb + c] = w * w / (d * d), ord[r * nb + c] = r * nb + c;
                }
            g_score = sc;
            qsort(ord, (size_t)out * nb, sizeof *ord, by_score);
            const double thresh = sc[ord[(int)(out * nb * 0.5)]];
            for (int k = 0; k < out * nb; k++) mask[k] = sc[k] <= thresh;
        }
        for (int i = i1; i < i2; i++) {
            const int c = i - i1;
            const double d = U[(size_t)i * in + i];
            if (two_four && c % 4 == 0)
                for (int r = 0; r < out; r++) { /* the two lowest of w^2 / U_jj^2, lower index first on a tie */
                    int32_t o4[4] = {0, 1, 2, 3};
                    double s4[4];
                    for (int q = 0; q < 4; q++) {
                        const double w = W[(size_t)r * in + i + q], dq = U[(size_t)(i + q) * in + i + q];
                        s4[q] = w * w / (dq * dq);
                    }
                    for (int a = 1; a < 4; a++)
                        for (int b = a; b > 0 && s4[o4[b]] < s4[o4[b - 1]]; b--) {
                            const int32_t t = o4[b];
                            o4[b] = o4[b - 1], o4[b - 1] = t;
                        }
                    mask[r * nb + c + o4[0]] = mask[r * nb + c + o4[1]] = 1;
                }
            for (int r = 0; r < out; r++) {
                double *w = W + (size_t)r * in;
                const double q = mask[r * nb + c] ? 0 : w[i], e = (w[i] - q) / d;
                for (int j = i + 1; j < i2; j++) w[j] -= e * U[(size_t)i * in + j];
                w[i] = q;
                E[r * nb + c] = e;
            }
        }
        for (int r = 0; r < out; r++)
            for (int c = 0; c < nb; c++) {
                const double e = E[r * nb + c];
                for (int j = i2; j < in; j++) W[(size_t)r * in + j] -= e * U[(size_t)(i1 + c) * in + j];
            }
    }
    free(H), free(Li), free(U), free(E), free(sc), free(mask), free(ord);
}

/* Prunes lit-llama-7m with mopt's pass and with the float64 reference of the
 * same method, layer by layer on the same calibration windows (each layer's
 * statistics from inputs that went through the reference's pruned layers);
 * compares the masks (block 0, where both see the same inputs, and all, where
 * later blocks see inputs that drifted apart) and the perplexity of the two
 * models. */
static void check_against_float64(const char *method, int two_four, double min_agree) {
    enum { N = 8, LEN = 256 };
    const int sgpt = !strcmp(method, "sparsegpt");
    char train[1200], text[2400];
    test_shared_path(train, sizeof train, "data/lit-train.txt");
    mopt_model *m = test_load_model("models/lit-llama-7m"), *ref = test_load_model("models/lit-llama-7m");
    snprintf(text, sizeof text, "prune.%s<%s;calib=%s;calib_samples=%d;calib_len=%d;seed=5>", method, two_four ? "pattern=2:4" : "sparsity=0.5",
             train, N, LEN);
    mopt_report_free(test_run_pipeline(m, text));
    const mopt_graph *g = mopt_model_graph(m), *g0 = mopt_model_graph(ref);
    const mopt_arch *a = mopt_graph_arch(g0);
    int32_t *ids = NULL;
    size_t n = 0;
    mopt_error err = {0};
    assert_int_equal(mopt_tokenizer_encode_file(mopt_model_tokenizer(ref), train, 0, &ids, &n, &err), MOPT_OK);
    int32_t *win = ref64_calib_windows(ids, n, N, LEN, 5);
    double *x[N];
    for (int w = 0; w < N; w++) x[w] = ref64_embed(g0, win + (size_t)w * LEN, LEN);
    const int width[REF64_LINEARS] = {a->dim, a->dim, a->dim, a->n_heads * a->head_dim, a->dim, a->dim, a->ffn_dim};
    int64_t agree = 0, total = 0;
    double agree0 = 0; /* in block 0, where both see the same inputs */
    for (int l = 0; l < a->n_layers; l++) {
        ref64_block b;
        ref64_block_load(&b, g0, l);
        ref64_stats st = {{0}, NULL, {0}};
        for (int k = 0; k < REF64_LINEARS; k++) /* q, k, v share the attention norm's output; gate and up the MLP norm's */
            if (k != REF64_K && k != REF64_V && k != REF64_UP) {
                if (sgpt) st.xx[k] = calloc((size_t)width[k] * width[k], sizeof(double));
                else st.sq[k] = calloc((size_t)width[k], sizeof(double));
            }
        const int D = a->dim;
        double *tmp = malloc((size_t)LEN * D * sizeof *tmp);
        for (int w = 0; w < N; w++) { /* statistics from the unpruned layer, inputs untouched */
            memcpy(tmp, x[w], (size_t)LEN * D * sizeof *tmp);
            ref64_block_run(&b, tmp, LEN, &st);
        }
        free(tmp);
        for (int k = 0; k < REF64_LINEARS; k++) {
            const int src = k == REF64_K || k == REF64_V ? REF64_Q : k == REF64_UP ? REF64_GATE : k, in = width[k];
            char name[128];
            snprintf(name, sizeof name, ref64_linear_names[k], l);
            const int rows = (int)mopt_graph_find_tensor(g0, name)->ne[1];
            if (sgpt) sparsegpt_prune64(b.w[k], rows, in, st.xx[src], N, two_four);
            else wanda_prune64(b.w[k], rows, in, st.sq[src], two_four);
            double *mine = ref64_tensor(g, ref64_linear_names[k], l);
            for (int64_t i = 0; i < (int64_t)rows * in; i++) agree += (mine[i] == 0) == (b.w[k][i] == 0), total++;
            free(mine);
        }
        if (l == 0) agree0 = (double)agree / (double)total;
        for (int w = 0; w < N; w++) ref64_block_run(&b, x[w], LEN, NULL); /* the next layer sees this one pruned */
        for (int k = 0; k < REF64_LINEARS; k++) free(st.sq[k]), free(st.xx[k]);
        /* the reference's pruned layer goes into `ref` for the perplexity comparison */
        for (int k = 0; k < REF64_LINEARS; k++) {
            char name[128];
            snprintf(name, sizeof name, ref64_linear_names[k], l);
            mopt_tensor *old = mopt_graph_find_tensor(mopt_model_graph(ref), name);
            const int64_t dims[2] = {old->ne[1], old->ne[0]}, cnt = dims[0] * dims[1];
            float *f = malloc((size_t)cnt * sizeof *f);
            for (int64_t i = 0; i < cnt; i++) f[i] = (float)b.w[k][i];
            mopt_tensor *nt = mopt_tensor_from_f32(name, old->dtype, 2, dims, f, &err);
            assert_int_equal(mopt_graph_replace_tensor(mopt_model_graph(ref), nt, &err), MOPT_OK);
            free(f);
        }
        ref64_block_free(&b);
    }
    const double nll_mine = val16k(m), nll_ref = val16k(ref), ratio = exp(nll_mine - nll_ref);
    fprintf(stderr, "%s %s vs float64 reference: masks agree on %.5f of block 0's weights, %.5f of all %lld; ppl %.3f vs %.3f, ratio %.5f\n",
            method, two_four ? "2:4" : "50%", agree0, (double)agree / (double)total, (long long)total, exp(nll_mine), exp(nll_ref), ratio);
    assert_true(agree0 >= 0.9995); /* the same algorithm: only float32 near-ties differ */
    assert_true((double)agree / (double)total >= min_agree);
    assert_true(fabs(ratio - 1) <= 0.01); /* the bound: each method within 1% of its reference */
    for (int w = 0; w < N; w++) free(x[w]);
    free(win), free(ids);
    mopt_model_free(m), mopt_model_free(ref);
}

/* float32 activations flip only near-ties in a selection without weight updates */
static void test_wanda_matches_a_float64_reference_unstructured(void **s) {
    REQUIRE_SHARED();
    check_against_float64("wanda", 0, 0.999);
}

static void test_wanda_matches_a_float64_reference_2_4(void **s) {
    REQUIRE_SHARED();
    check_against_float64("wanda", 1, 0.999);
}

/* SparseGPT updates the kept weights, so float32 rounding makes each pruned
 * block differ a little from the reference's, later blocks see inputs that
 * drifted apart, and near-ties within groups of four flip more often (measured:
 * 1.0000 in block 0, 0.9972 of all at 50%, 0.9772 at 2:4); the perplexity
 * bound is the same. */
static void test_sparsegpt_matches_a_float64_reference_unstructured(void **s) {
    REQUIRE_SHARED();
    check_against_float64("sparsegpt", 0, 0.99);
}

static void test_sparsegpt_matches_a_float64_reference_2_4(void **s) {
    REQUIRE_SHARED();
    check_against_float64("sparsegpt", 1, 0.97);
}

/* Every group of m inputs of every row of every linear holds at most n non-zeros. */
static void check_nm(const mopt_graph *g, int n, int m) {
    for (int32_t i = 0; i < mopt_graph_n_nodes(g); i++) {
        const mopt_tensor *t = mopt_graph_node(g, i)->weight;
        if (!mopt_role_is_linear(mopt_graph_node(g, i)->role)) continue;
        int64_t ne;
        double *w = weights(t, &ne);
        assert_int_equal(t->ne[0] % m, 0); /* groups never straddle rows */
        for (int64_t k = 0; k < ne; k += m) {
            int nz = 0;
            for (int q = 0; q < m; q++) nz += w[k + q] != 0.0;
            assert_true(nz <= n);
        }
        free(w);
    }
}

static void test_nm_patterns_and_the_quality_order_at_2_4(void **s) {
    REQUIRE_SHARED();
    char text[4096];
    const char *sh = test_shared_dir();
    const char *calib = "calib_samples=16;calib_len=256";
    double nll[3];
    const char *methods[3] = {"magnitude", "wanda", "sparsegpt"};
    for (int k = 0; k < 3; k++) {
        mopt_model *m = test_load_model("models/lit-gpt2-1m");
        if (k == 0) snprintf(text, sizeof text, "prune.magnitude<pattern=2:4>");
        else snprintf(text, sizeof text, "prune.%s<pattern=2:4;calib=%s/data/lit-train.txt;%s>", methods[k], sh, calib);
        mopt_report *r = test_run_pipeline(m, text);
        assert_float_equal(mopt_report_get_metric(r, "sparsity"), 0.5, 1e-12);
        check_nm(mopt_model_graph(m), 2, 4);
        nll[k] = val16k(m);
        fprintf(stderr, "2:4 %s: validation NLL %.4f\n", methods[k], nll[k]);
        mopt_report_free(r);
        mopt_model_free(m);
    }
    assert_true(nll[2] < nll[1] && nll[1] < nll[0]); /* SparseGPT < Wanda < magnitude, as the papers find */
    mopt_model *m = test_load_model("models/lit-gpt2-1m");
    snprintf(text, sizeof text, "prune.wanda<pattern=4:8;calib=%s/data/lit-train.txt;%s>", sh, calib);
    mopt_report_free(test_run_pipeline(m, text));
    check_nm(mopt_model_graph(m), 4, 8);
    mopt_model_free(m);
}

/* Largest |logit difference| over 24 tokens fed one at a time (decode: the
 * linears' few-token kernels), relative to the largest |logit|. */
static double decode_rel_diff(mopt_model *a, mopt_model *b) {
    mopt_error err = {0};
    mopt_session *sa = mopt_session_new(mopt_model_graph(a), NULL, &err), *sb = mopt_session_new(mopt_model_graph(b), NULL, &err);
    const int32_t V = mopt_model_arch(a)->vocab_size;
    float *copy = malloc((size_t)V * sizeof *copy);
    double d = 0, mag = 0;
    for (int32_t t = 0; t < 24; t++) {
        const int32_t id = (t * 151 + 7) % V;
        const float *la, *lb;
        assert_int_equal(mopt_session_forward(sa, &id, 1, false, &la, &err), MOPT_OK);
        memcpy(copy, la, (size_t)V * sizeof *copy);
        assert_int_equal(mopt_session_forward(sb, &id, 1, false, &lb, &err), MOPT_OK);
        for (int32_t i = 0; i < V; i++) d = fmax(d, fabs((double)copy[i] - lb[i])), mag = fmax(mag, fabs((double)copy[i]));
    }
    free(copy);
    mopt_session_free(sa);
    mopt_session_free(sb);
    return d / mag;
}

/* a's and b's logits in decode (decode_rel_diff) and prefill (absolute) within tol; what names the pair. */
static void expect_same_logits(mopt_model *a, mopt_model *b, double tol, const char *what) {
    const double dec = decode_rel_diff(a, b), pre = test_max_logit_diff(a, b);
    fprintf(stderr, "%s: decode %.3g relative, prefill %.3g absolute\n", what, dec, pre);
    assert_true(dec <= tol);
    assert_true(pre <= tol);
}

/* pack=true stores 2:4 linears as kept values + 2-bit positions: 0.5625x the
 * bf16 bytes, and the sparse kernels give the logits of the dense masked weights. */
static void test_packed_2_4_is_smaller_and_runs_like_the_masked_weights(void **s) {
    REQUIRE_SHARED();
    mopt_model *dense = test_load_model("models/lit-llama-7m"), *packed = test_load_model("models/lit-llama-7m");
    mopt_report_free(test_run_pipeline(dense, "prune.magnitude<pattern=2:4>"));
    mopt_report_free(test_run_pipeline(packed, "prune.magnitude<pattern=2:4;pack=true>"));
    const mopt_graph *gd = mopt_model_graph(dense), *gp = mopt_model_graph(packed);
    int64_t bytes_dense = 0, bytes_packed = 0;
    int linears = 0;
    for (int32_t i = 0; i < mopt_graph_n_nodes(gp); i++) {
        if (!mopt_role_is_linear(mopt_graph_node(gp, i)->role)) continue;
        assert_int_equal(mopt_graph_node(gp, i)->weight->dtype, MOPT_DTYPE_SP24);
        bytes_dense += mopt_weight_storage_bytes(mopt_graph_node(gd, i)->weight);
        bytes_packed += mopt_weight_storage_bytes(mopt_graph_node(gp, i)->weight);
        linears++;
    }
    assert_int_equal(linears, 7 * 8);
    fprintf(stderr, "2:4 packed bf16 linears: %lld of %lld dense bytes (%.4f)\n", (long long)bytes_packed, (long long)bytes_dense,
            (double)bytes_packed / (double)bytes_dense);
    assert_true((double)bytes_packed <= 0.57 * (double)bytes_dense);
    expect_same_logits(dense, packed, 1e-4, "2:4 packed vs dense masked logits");
    /* a dense export decodes the packed rows: the checkpoint holds the masked model's weights, and reloaded (the
     * loader packs 2:4 rows again) it runs as the packed model, to the bit */
    char dir[1024], text[1400];
    test_tmpdir(dir, sizeof dir, "prune-packed");
    snprintf(text, sizeof text, "export.hf<out=%s/hf>", dir);
    mopt_report_free(test_run_pipeline(packed, text));
    snprintf(text, sizeof text, "%s/hf", dir);
    mopt_model *back = test_load_model(text);
    const mopt_graph *gb = mopt_model_graph(back);
    mopt_error err = {0};
    for (int32_t i = 0; i < mopt_graph_n_nodes(gb); i++) {
        const mopt_tensor *wb = mopt_graph_node(gb, i)->weight, *wd = mopt_graph_node(gd, i)->weight;
        if (!mopt_role_is_linear(mopt_graph_node(gb, i)->role)) continue;
        float *rb = malloc((size_t)wb->ne[0] * sizeof *rb), *rd = malloc((size_t)wd->ne[0] * sizeof *rd);
        for (int64_t r = 0; r < wb->ne[1]; r++) {
            assert_int_equal(mopt_weight_row_f32(wb, r, rb, &err), MOPT_OK);
            assert_int_equal(mopt_weight_row_f32(wd, r, rd, &err), MOPT_OK);
            assert_memory_equal(rb, rd, (size_t)wb->ne[0] * sizeof *rb);
        }
        free(rb), free(rd);
    }
    assert_true(test_max_logit_diff(back, packed) == 0);
    mopt_model_free(back);
    mopt_model_free(dense);
    mopt_model_free(packed);
}

/* values=int8 keeps int8 levels with a scale per row (2:4 W8A8): the 2:4
 * kernels give the logits of dense W8A8 weights holding the same levels and
 * scales, in decode (the packed rows read in place) and prefill (rows widened
 * for OpenBLAS); the linears take 0.3125x the bf16 bytes plus their scales. */
static void test_packed_2_4_int8_runs_like_dense_w8a8_with_the_same_levels(void **s) {
    REQUIRE_SHARED();
    mopt_model *packed = test_load_model("models/lit-llama-7m"), *w8 = test_load_model("models/lit-llama-7m");
    mopt_report_free(test_run_pipeline(packed, "prune.magnitude<pattern=2:4;pack=true;values=int8>"));
    const mopt_graph *gp = mopt_model_graph(packed);
    mopt_error err = {0};
    int64_t bytes_bf16 = 0, bytes_packed = 0;
    for (int32_t i = 0; i < mopt_graph_n_nodes(gp); i++) {
        const mopt_tensor *t = mopt_graph_node(gp, i)->weight;
        if (!mopt_role_is_linear(mopt_graph_node(gp, i)->role)) continue;
        assert_int_equal(t->dtype, MOPT_DTYPE_SP24);
        assert_true(t->quant->flags & MOPT_QUANT_VALUES_I8);
        const int64_t out = t->ne[1], in = t->ne[0];
        bytes_bf16 += 2 * out * in;
        bytes_packed += mopt_weight_storage_bytes(t);
        int8_t *q = malloc((size_t)(out * in));
        float *row = malloc((size_t)in * sizeof *row);
        const float *sc = t->quant->scale->data;
        for (int64_t r = 0; r < out; r++) { /* the levels: each row back over its scale */
            assert_int_equal(mopt_weight_row_f32(t, r, row, &err), MOPT_OK);
            for (int64_t c = 0; c < in; c++) q[r * in + c] = (int8_t)lrintf(row[c] / sc[r]);
        }
        mopt_tensor *d = mopt_w8a8_pack(t->name, out, in, q, sc, &err);
        assert_non_null(d);
        assert_int_equal(mopt_graph_replace_tensor(mopt_model_graph(w8), d, &err), MOPT_OK);
        free(q), free(row);
    }
    fprintf(stderr, "2:4 int8 linears: %lld bytes, %.4f of bf16\n", (long long)bytes_packed, (double)bytes_packed / (double)bytes_bf16);
    assert_true((double)bytes_packed <= 0.33 * (double)bytes_bf16);
    const double dec = decode_rel_diff(w8, packed), pre = test_max_logit_diff(w8, packed);
    fprintf(stderr, "2:4 int8 vs dense W8A8 with the same levels: decode %.3g relative, prefill %.3g absolute\n", dec, pre);
    assert_true(dec <= 1e-5); /* integer sums: only the float scale products differ */
    assert_true(pre <= 1e-4);
    mopt_model_free(packed);
    mopt_model_free(w8);
}

/* values=int4 keeps symmetric int4 levels with an f16 scale per 128 inputs
 * (2:4 W4A16, vLLM's Marlin-24): every group's scale and levels are the
 * round-to-nearest of the masked float weights (checked in float64: scale
 * 2 max|w| / 15 rounded to f16, levels clamped to -8..7), the 2:4 kernels give
 * the logits of dense f32 weights holding the same values in decode (values
 * widened per row in cache) and prefill (rows widened for OpenBLAS), and the
 * linears take under 0.2x the bf16 bytes. */
static void test_packed_2_4_int4_holds_rtn_levels_and_runs_like_their_dense_weights(void **s) {
    REQUIRE_SHARED();
    mopt_model *masked = test_load_model("models/lit-llama-7m"), *packed = test_load_model("models/lit-llama-7m"),
               *same = test_load_model("models/lit-llama-7m");
    mopt_report_free(test_run_pipeline(masked, "prune.magnitude<pattern=2:4>"));
    mopt_report_free(test_run_pipeline(packed, "prune.magnitude<pattern=2:4;pack=true;values=int4>"));
    const mopt_graph *gm = mopt_model_graph(masked), *gp = mopt_model_graph(packed);
    mopt_error err = {0};
    int64_t bytes_bf16 = 0, bytes_packed = 0, levels = 0;
    for (int32_t i = 0; i < mopt_graph_n_nodes(gp); i++) {
        const mopt_tensor *t = mopt_graph_node(gp, i)->weight, *m = mopt_graph_node(gm, i)->weight;
        if (!mopt_role_is_linear(mopt_graph_node(gp, i)->role)) continue;
        assert_int_equal(t->dtype, MOPT_DTYPE_SP24);
        assert_true(t->quant->flags & MOPT_QUANT_VALUES_I4);
        const int64_t out = t->ne[1], in = t->ne[0];
        bytes_bf16 += 2 * out * in;
        bytes_packed += mopt_weight_storage_bytes(t);
        float *W = malloc((size_t)(out * in) * sizeof *W), *w = malloc((size_t)in * sizeof *w);
        for (int64_t r = 0; r < out; r++) {
            assert_int_equal(mopt_weight_row_f32(t, r, W + r * in, &err), MOPT_OK);
            assert_int_equal(mopt_weight_row_f32(m, r, w, &err), MOPT_OK);
            for (int64_t g0 = 0; g0 < in; g0 += 128) {
                double amax = 0;
                for (int64_t c = g0; c < g0 + 128; c++) amax = fmax(amax, fabs((double)w[c]));
                const double sc = mopt_f16_to_f32(mopt_f32_to_f16((float)(2.0 * amax / 15.0)));
                for (int64_t c = g0; c < g0 + 128; c++, levels++) {
                    const double x = (double)w[c] / sc, q = fmin(fmax(nearbyint(x), -8), 7);
                    if (fabs(fabs(x - trunc(x)) - 0.5) > 1e-5) assert_true(W[r * in + c] == (float)(q * sc)); /* ties aside */
                }
            }
        }
        mopt_tensor *d = mopt_tensor_from_f32(t->name, MOPT_DTYPE_F32, 2, (const int64_t[]){out, in}, W, &err);
        assert_non_null(d);
        assert_int_equal(mopt_graph_replace_tensor(mopt_model_graph(same), d, &err), MOPT_OK);
        free(W), free(w);
    }
    fprintf(stderr, "2:4 int4 linears: %lld levels checked, %lld bytes, %.4f of bf16\n", (long long)levels, (long long)bytes_packed,
            (double)bytes_packed / (double)bytes_bf16);
    assert_true((double)bytes_packed <= 0.2 * (double)bytes_bf16);
    expect_same_logits(same, packed, 1e-4, "2:4 int4 vs dense f32 weights with the same values");
    mopt_model_free(masked);
    mopt_model_free(packed);
    mopt_model_free(same);
}

static void test_pruned_model_exports_and_reloads(void **s) {
    REQUIRE_SHARED();
    char dir[1024], out[1200], args[8192];
    test_tmpdir(dir, sizeof dir, "prune-cli");
    snprintf(out, sizeof out, "%s/pruned", dir);
    const char *sh = test_shared_dir();
    snprintf(args, sizeof args,
             "%s prune '%s/models/lit-gpt2-1m' --method sparsegpt --sparsity 0.5 --calib '%s/data/lit-train.txt' --calib-samples 8 "
             "--calib-len 128 -o '%s' --quiet > '%s/stdout'",
             MOPT_CLI, sh, sh, out, dir);
    assert_int_equal(system(args), 0);
    mopt_error err = {0};
    mopt_model *m = mopt_model_load(out, NULL, &err), *again = test_load_model("models/lit-gpt2-1m");
    assert_non_null(m);
    snprintf(args, sizeof args, "prune.sparsegpt<sparsity=0.5;calib=%s/data/lit-train.txt;calib_samples=8;calib_len=128>", sh);
    mopt_report_free(test_run_pipeline(again, args));
    assert_float_equal(val16k(m), val16k(again), 1e-6); /* the saved checkpoint is the pruned model */
    mopt_model_free(m);
    mopt_model_free(again);
    /* --bits quantizes in the sweep: the checkpoint holds packed 4-bit 2:4 weights (compressed-tensors) */
    snprintf(out, sizeof out, "%s/pruned-int4", dir);
    snprintf(args, sizeof args,
             "%s prune '%s/models/lit-llama-7m' --method sparsegpt --pattern 2:4 --bits 4 --group-size 64 --sym --calib "
             "'%s/data/lit-train.txt' --calib-samples 4 --calib-len 128 -o '%s' --quiet > '%s/stdout'",
             MOPT_CLI, sh, sh, out, dir);
    assert_int_equal(system(args), 0);
    m = mopt_model_load(out, NULL, &err);
    assert_non_null(m);
    const mopt_tensor *t = mopt_graph_find_tensor(mopt_model_graph(m), "model.layers.2.mlp.up_proj.weight");
    assert_int_equal(t->dtype, MOPT_DTYPE_QINT);
    assert_int_equal(t->quant->bits, 4);
    assert_int_equal(t->quant->group_size, 64);
    assert_true(t->quant->flags & MOPT_QUANT_SYM);
    float row[256];
    assert_int_equal(mopt_weight_row_f32(t, 0, row, &err), MOPT_OK);
    for (int c = 0; c < 256; c += 4) assert_true((row[c] != 0) + (row[c + 1] != 0) + (row[c + 2] != 0) + (row[c + 3] != 0) <= 2);
    mopt_model_free(m);
}

static void test_prune_refuses_bad_input(void **s) {
    REQUIRE_SHARED();
    char dir[1024], out[1200], args[4096];
    test_tmpdir(dir, sizeof dir, "prune-bad");
    snprintf(out, sizeof out, "%s/out", dir);
    const char *sh = test_shared_dir();
    snprintf(args, sizeof args, "prune '%s/models/lit-gpt2-1m' --method magnitude --sparsity 0 -o '%s'", sh, out);
    test_cli_refuses(args, 2, "strictly between 0 and 1", NULL);
    snprintf(args, sizeof args, "prune '%s/models/lit-gpt2-1m' --method magnitude --sparsity 1 -o '%s'", sh, out);
    test_cli_refuses(args, 2, "strictly between 0 and 1", NULL);
    snprintf(args, sizeof args, "prune '%s/models/lit-gpt2-1m' --method magnitude --pattern 4:2 -o '%s'", sh, out);
    test_cli_refuses(args, 2, "N must be smaller than M", NULL);
    snprintf(args, sizeof args, "prune '%s/models/lit-gpt2-1m' --method magnitude --pattern 2:3 -o '%s'", sh, out);
    test_cli_refuses(args, 2, "not a multiple of M = 3", NULL);
    snprintf(args, sizeof args, "prune '%s/models/lit-gpt2-1m' --method wanda -o '%s'", sh, out);
    test_cli_refuses(args, 2, "give --calib FILE", NULL);
    snprintf(args, sizeof args, "prune '%s/models/lit-gpt2-1m' --method obd -o '%s'", sh, out);
    test_cli_refuses(args, 2, "magnitude, wanda, sparsegpt or minitron", NULL);
    snprintf(args, sizeof args, "prune '%s/models/lit-gpt2-1m' --method magnitude --pattern 4:8 --pack -o '%s'", sh, out);
    test_cli_refuses(args, 2, "pack=true stores the 2:4 pattern only", NULL);
    snprintf(args, sizeof args, "prune '%s/models/lit-gpt2-1m' --method magnitude --pattern 2:4 --values int8 -o '%s'", sh, out);
    test_cli_refuses(args, 2, "values=int8 is the packed 2:4 storage's; add pack=true", NULL);
    snprintf(args, sizeof args, "prune '%s/models/lit-gpt2-1m' --method magnitude --pattern 2:4 --pack --values int2 -o '%s'", sh, out);
    test_cli_refuses(args, 2, "values=int2: expected float, int8 or int4", NULL);
    snprintf(args, sizeof args, "prune '%s/models/stories260K/stories260K.bin' --method magnitude --pattern 2:4 --pack --values int4 -o '%s'",
             sh, out);
    test_cli_refuses(args, 2, "values=int4 needs a multiple of 128", NULL);
    snprintf(args, sizeof args, "prune '%s/models/lit-gpt2-1m' --method magnitude --pattern 2:4 --bits 4 -o '%s'", sh, out);
    test_cli_refuses(args, 2, "quantize inside SparseGPT's sweep", NULL);
    assert_int_not_equal(access(out, F_OK), 0);
    char text[2400];
    snprintf(text, sizeof text, "prune.sparsegpt<pattern=2:4;pack=true;bits=4;calib=%s/data/lit-train.txt>", sh);
    mopt_pipeline *p = mopt_pipeline_new(test_reg); /* the pass's check refuses it when the pipeline is read */
    mopt_error err = {0};
    assert_int_equal(mopt_pipeline_parse(p, text, &err), MOPT_E_INVALID);
    assert_non_null(strstr(err.msg, "with bits= the result is packed QINT"));
    mopt_pipeline_free(p);
    test_pipeline_fails("models/lit-gpt2-1m", "quant.rtn<bits=4;group_size=32>,prune.magnitude", "prune the float model, then quantize");
}

/* bits= quantizes the kept weights in the sweep (packed QINT); pack=true with
 * values=int8 (int4) rounds them to int8 per row (int4 per 128 inputs) there
 * and stores 2:4 with int8 (int4) values. */
static void test_sparsegpt_quantizes_in_the_same_sweep(void **s) {
    REQUIRE_SHARED();
    char text[4096];
    mopt_model *m = test_load_model("models/lit-gpt2-1m");
    snprintf(text, sizeof text, "prune.sparsegpt<pattern=2:4;bits=4;group_size=32;calib=%s/data/lit-train.txt;calib_samples=16;calib_len=256>",
             test_shared_dir());
    mopt_report_free(test_run_pipeline(m, text));
    const mopt_graph *g = mopt_model_graph(m);
    mopt_error err = {0};
    for (int32_t i = 0; i < mopt_graph_n_nodes(g); i++) {
        const mopt_tensor *t = mopt_graph_node(g, i)->weight;
        if (!mopt_role_is_linear(mopt_graph_node(g, i)->role)) continue;
        assert_int_equal(t->dtype, MOPT_DTYPE_QINT); /* packed int4 */
        assert_int_equal(t->quant->bits, 4);
        float *row = malloc((size_t)t->ne[0] * sizeof *row);
        for (int64_t r = 0; r < t->ne[1]; r++) { /* the pruned weights decode to exact zeros: 2:4 holds in the packed form */
            assert_int_equal(mopt_weight_row_f32(t, r, row, &err), MOPT_OK);
            for (int64_t c = 0; c < t->ne[0]; c += 4) assert_true((row[c] != 0) + (row[c + 1] != 0) + (row[c + 2] != 0) + (row[c + 3] != 0) <= 2);
        }
        free(row);
    }
    const double nll = val16k(m);
    fprintf(stderr, "2:4 + int4 g32 in one SparseGPT sweep: validation NLL %.4f\n", nll);
    assert_true(nll < 3.93); /* below 2:4 magnitude without any quantization (3.9317) */
    mopt_model_free(m);
    /* packed 2:4 with int8 (int4) values rounded in the sweep: about the quality of float SparseGPT 2:4 */
    const char *values[3] = {"float", "int8", "int4"};
    const uint32_t flag[3] = {0, MOPT_QUANT_VALUES_I8, MOPT_QUANT_VALUES_I4};
    double nllv[3];
    for (int k = 0; k < 3; k++) {
        m = test_load_model("models/lit-gpt2-1m");
        snprintf(text, sizeof text, "prune.sparsegpt<pattern=2:4;pack=true;values=%s;calib=%s/data/lit-train.txt;calib_samples=16;calib_len=256>",
                 values[k], test_shared_dir());
        mopt_report_free(test_run_pipeline(m, text));
        g = mopt_model_graph(m);
        for (int32_t i = 0; i < mopt_graph_n_nodes(g); i++)
            if (mopt_role_is_linear(mopt_graph_node(g, i)->role)) {
                assert_int_equal(mopt_graph_node(g, i)->weight->dtype, MOPT_DTYPE_SP24);
                assert_int_equal(mopt_graph_node(g, i)->weight->quant->flags & (MOPT_QUANT_VALUES_I8 | MOPT_QUANT_VALUES_I4), flag[k]);
            }
        nllv[k] = val16k(m);
        mopt_model_free(m);
    }
    fprintf(stderr, "SparseGPT 2:4 packed: validation NLL %.4f with float values, %.4f with int8, %.4f with int4 g128\n", nllv[0],
            nllv[1], nllv[2]);
    assert_true(nllv[1] < 3.93 && fabs(nllv[1] - nllv[0]) < 0.01);
    assert_true(nllv[2] < 3.93 && nllv[2] - nllv[0] < 0.03); /* int4 g128 in the sweep costs 0.014 here; still below 2:4 magnitude */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_magnitude_masks_match_a_float64_selection),
        cmocka_unit_test(test_wanda_matches_a_float64_reference_unstructured),
        cmocka_unit_test(test_wanda_matches_a_float64_reference_2_4),
        cmocka_unit_test(test_sparsegpt_matches_a_float64_reference_unstructured),
        cmocka_unit_test(test_sparsegpt_matches_a_float64_reference_2_4),
        cmocka_unit_test(test_nm_patterns_and_the_quality_order_at_2_4),
        cmocka_unit_test(test_sparsegpt_quantizes_in_the_same_sweep),
        cmocka_unit_test(test_packed_2_4_is_smaller_and_runs_like_the_masked_weights),
        cmocka_unit_test(test_packed_2_4_int8_runs_like_dense_w8a8_with_the_same_levels),
        cmocka_unit_test(test_packed_2_4_int4_holds_rtn_levels_and_runs_like_their_dense_weights),
        cmocka_unit_test(test_pruned_model_exports_and_reloads),
        cmocka_unit_test(test_prune_refuses_bad_input),
    };
    return test_run_tests(tests, test_registry_setup, test_registry_teardown);
}
