/* prune.minitron end to end: the FFN neurons it keeps on lit-llama-7m match a
 * float64 reference importance (tests/llama_ref64.h, an independent
 * transcription of HF's LlamaForCausalLM, over the same calibration windows); every tensor
 * is sliced consistently with the kept indices it reports; cut models of both
 * families export as HF checkpoints whose config has the new shape and reload
 * with the same perplexity; params= finds a shape under the budget; depth=loss
 * drops the block whose removal costs least, by the measured loss; bad input
 * gets one line and exit 2 with nothing written. */
#include <jansson.h>
#include <math.h>

#include "llama_ref64.h"
#include "testutil.h"

/* A report string of the last pass (kept indices are comma-joined). */
static const char *report_string(const mopt_report *r, const char *key) {
    const json_t *passes = json_object_get((const json_t *)mopt_report_tree(r), "passes");
    const json_t *strings = json_object_get(json_array_get(passes, 0), "strings");
    const char *s = json_string_value(json_object_get(strings, key));
    if (!s) fprintf(stderr, "the report has no string %s\n", key);
    assert_non_null(s);
    return s;
}

static int32_t parse_ints(const char *s, int32_t *out, int32_t cap) {
    int32_t n = 0;
    while (*s && n < cap) {
        out[n++] = (int32_t)strtol(s, (char **)&s, 10);
        if (*s == ',') s++;
    }
    return n;
}

static double *f64(const mopt_graph *g, const char *fmt, int l) {
    double *d = ref64_tensor(g, fmt, l);
    assert_non_null(d);
    return d;
}

/* Adds each FFN neuron's window mean |input of down_proj|, squared, into imp[layer][ffn]. */
static void llama_ffn_importance64(const mopt_graph *g, const int32_t *ids, int T, double *imp) {
    const mopt_arch *a = mopt_graph_arch(g);
    double *x = ref64_embed(g, ids, T), *mean = malloc((size_t)a->ffn_dim * sizeof *mean);
    ref64_stats st = {{0}, mean, {0}};
    for (int l = 0; l < a->n_layers; l++) {
        ref64_block b;
        ref64_block_load(&b, g, l);
        ref64_block_run(&b, x, T, &st);
        for (int j = 0; j < a->ffn_dim; j++) imp[(size_t)l * a->ffn_dim + j] += mean[j] * mean[j];
        ref64_block_free(&b);
    }
    free(x), free(mean);
}

static const double *g_imp;
static int by_importance_desc(const void *a, const void *b) {
    const int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (g_imp[x] != g_imp[y]) return g_imp[x] > g_imp[y] ? -1 : 1;
    return x - y;
}

enum { WINDOWS = 8, WLEN = 512 };

static void test_kept_ffn_neurons_match_a_float64_importance(void **s) {
    REQUIRE_SHARED();
    mopt_model *orig = test_load_model("models/lit-llama-7m"), *m = test_load_model("models/lit-llama-7m");
    char text[4096], train[1200];
    test_shared_path(train, sizeof train, "data/lit-train.txt");
    snprintf(text, sizeof text, "prune.minitron<ffn=512;calib=%s;calib_samples=%d;calib_len=%d;seed=3>", train, WINDOWS, WLEN);
    mopt_report *r = test_run_pipeline(m, text);
    const mopt_graph *g0 = mopt_model_graph(orig), *g = mopt_model_graph(m);
    const mopt_arch *a0 = mopt_graph_arch(g0);
    const int F = a0->ffn_dim, L = a0->n_layers;
    assert_int_equal(mopt_graph_arch(g)->ffn_dim, 512);
    /* the same windows the calibration draws (seeded starts, as plugins/quant/calib.c documents) */
    int32_t *ids = NULL;
    size_t n = 0;
    mopt_error err = {0};
    assert_int_equal(mopt_tokenizer_encode_file(mopt_model_tokenizer(orig), train, 0, &ids, &n, &err), MOPT_OK);
    int32_t *win = ref64_calib_windows(ids, n, WINDOWS, WLEN, 3);
    double *imp = calloc((size_t)L * F, sizeof *imp);
    for (int w = 0; w < WINDOWS; w++) llama_ffn_importance64(g0, win + (size_t)w * WLEN, WLEN, imp);
    free(win);
    int32_t *order = malloc((size_t)F * sizeof *order), kept[1024];
    double worst = 1;
    for (int l = 0; l < L; l++) {
        g_imp = imp + (size_t)l * F;
        for (int j = 0; j < F; j++) order[j] = j;
        qsort(order, (size_t)F, sizeof *order, by_importance_desc);
        char key[32];
        snprintf(key, sizeof key, "kept_ffn.%d", l);
        assert_int_equal(parse_ints(report_string(r, key), kept, 1024), 512);
        int common = 0;
        for (int i = 0; i < 512; i++)
            for (int j = 0; j < 512; j++) common += kept[i] == order[j];
        worst = fmin(worst, common / 512.0);
        /* the cut's gate/up rows and down columns are the original's kept ones, bit for bit (bf16 stays bf16) */
        double *g_new = f64(g, "model.layers.%d.mlp.gate_proj.weight", l), *g_old = f64(g0, "model.layers.%d.mlp.gate_proj.weight", l);
        double *d_new = f64(g, "model.layers.%d.mlp.down_proj.weight", l), *d_old = f64(g0, "model.layers.%d.mlp.down_proj.weight", l);
        const int D = a0->dim;
        for (int i = 0; i < 512; i++) {
            assert_true(i == 0 || kept[i] > kept[i - 1]);
            assert_memory_equal(g_new + (size_t)i * D, g_old + (size_t)kept[i] * D, (size_t)D * sizeof(double));
            for (int c = 0; c < D; c++) assert_true(d_new[(size_t)c * 512 + i] == d_old[(size_t)c * F + kept[i]]);
        }
        free(g_new), free(g_old), free(d_new), free(d_old);
    }
    fprintf(stderr, "FFN 768 -> 512: worst overlap with the float64 reference's kept neurons %.4f\n", worst);
    assert_true(worst >= 0.9);
    assert_int_equal(mopt_graph_find_tensor(g, "model.layers.0.mlp.up_proj.weight")->dtype, MOPT_DTYPE_BF16);
    assert_float_equal(mopt_report_get_metric(r, "params_before") - mopt_report_get_metric(r, "params_after"), (double)L * 3 * 256 * a0->dim, 0);
    free(order), free(imp), free(ids);
    mopt_report_free(r);
    mopt_model_free(m);
    mopt_model_free(orig);
}

/* Rows `rows` (or all, n_rows = 0) and columns `cols` (or all) of the original tensor equal the cut one. */
static void check_slice(const mopt_graph *g0, const char *old_name, const mopt_graph *g, const char *new_name, const int32_t *rows,
                        int32_t n_rows, const int32_t *cols, int32_t n_cols) {
    const mopt_tensor *t0 = mopt_graph_find_tensor(g0, old_name), *t = mopt_graph_find_tensor(g, new_name);
    assert_non_null(t0);
    assert_non_null(t);
    double *a = f64(g0, old_name, 0), *b = f64(g, new_name, 0);
    const int64_t C0 = t0->ndim == 1 ? 1 : t0->ne[0], C = t->ndim == 1 ? 1 : t->ne[0], R = t->ndim == 1 ? t->ne[0] : t->ne[1];
    assert_int_equal(R, n_rows ? n_rows : (t0->ndim == 1 ? t0->ne[0] : t0->ne[1]));
    assert_int_equal(C, n_cols ? n_cols : C0);
    for (int64_t i = 0; i < R; i++)
        for (int64_t j = 0; j < C; j++) assert_true(b[i * C + j] == a[(n_rows ? rows[i] : i) * C0 + (n_cols ? cols[j] : j)]);
    free(a), free(b);
}

/* Head indices expanded to their head_dim rows. */
static int32_t expand(const int32_t *heads, int32_t n, int32_t hd, int32_t *out) {
    for (int32_t i = 0; i < n * hd; i++) out[i] = heads[i / hd] * hd + i % hd;
    return n * hd;
}

static void test_a_shape_cut_slices_every_tensor_and_exports_the_new_config(void **s) {
    REQUIRE_SHARED();
    mopt_model *orig = test_load_model("models/lit-llama-7m"), *m = test_load_model("models/lit-llama-7m");
    char text[4096], train[1200], dir[1024], out[1200];
    test_shared_path(train, sizeof train, "data/lit-train.txt");
    snprintf(text, sizeof text, "prune.minitron<hidden=192;ffn=512;heads=6;kv_heads=3;layers=6;calib=%s;calib_samples=8;calib_len=256>", train);
    mopt_report *r = test_run_pipeline(m, text);
    const mopt_graph *g0 = mopt_model_graph(orig), *g = mopt_model_graph(m);
    const mopt_arch *a = mopt_graph_arch(g);
    assert_int_equal(a->dim, 192);
    assert_int_equal(a->ffn_dim, 512);
    assert_int_equal(a->n_heads, 6);
    assert_int_equal(a->n_kv_heads, 3);
    assert_int_equal(a->head_dim, 32);
    assert_int_equal(a->n_layers, 6);
    assert_float_equal(mopt_report_get_metric(r, "params_after"), (double)mopt_graph_n_params(g), 0);
    int32_t layers[8], hidden[256], ffn[768], heads[8], groups[4], rows[256], rows_kv[128];
    assert_int_equal(parse_ints(report_string(r, "kept_layers"), layers, 8), 6);
    assert_int_equal(parse_ints(report_string(r, "kept_hidden"), hidden, 256), 192);
    check_slice(g0, "model.embed_tokens.weight", g, "model.embed_tokens.weight", NULL, 0, hidden, 192);
    check_slice(g0, "lm_head.weight", g, "lm_head.weight", NULL, 0, hidden, 192);
    check_slice(g0, "model.norm.weight", g, "model.norm.weight", hidden, 192, NULL, 0);
    for (int i = 0; i < 6; i++) {
        const int l = layers[i];
        char key[32], o[128], n[128];
        snprintf(key, sizeof key, "kept_ffn.%d", l);
        assert_int_equal(parse_ints(report_string(r, key), ffn, 768), 512);
        snprintf(key, sizeof key, "kept_heads.%d", l);
        assert_int_equal(parse_ints(report_string(r, key), heads, 8), 6);
        snprintf(key, sizeof key, "kept_groups.%d", l);
        assert_int_equal(parse_ints(report_string(r, key), groups, 4), 3);
        for (int h = 0; h < 6; h++) assert_int_equal(heads[h] / 2, groups[h / 2]); /* each new group's heads come from its old group */
        const int nq = expand(heads, 6, 32, rows), nkv = expand(groups, 3, 32, rows_kv);
#define NAMES(suffix) (snprintf(o, sizeof o, "model.layers.%d." suffix, l), snprintf(n, sizeof n, "model.layers.%d." suffix, i))
        NAMES("input_layernorm.weight"), check_slice(g0, o, g, n, hidden, 192, NULL, 0);
        NAMES("post_attention_layernorm.weight"), check_slice(g0, o, g, n, hidden, 192, NULL, 0);
        NAMES("self_attn.q_proj.weight"), check_slice(g0, o, g, n, rows, nq, hidden, 192);
        NAMES("self_attn.k_proj.weight"), check_slice(g0, o, g, n, rows_kv, nkv, hidden, 192);
        NAMES("self_attn.v_proj.weight"), check_slice(g0, o, g, n, rows_kv, nkv, hidden, 192);
        NAMES("self_attn.o_proj.weight"), check_slice(g0, o, g, n, hidden, 192, rows, nq);
        NAMES("mlp.gate_proj.weight"), check_slice(g0, o, g, n, ffn, 512, hidden, 192);
        NAMES("mlp.up_proj.weight"), check_slice(g0, o, g, n, ffn, 512, hidden, 192);
        NAMES("mlp.down_proj.weight"), check_slice(g0, o, g, n, hidden, 192, ffn, 512);
#undef NAMES
    }
    assert_null(mopt_graph_find_tensor(g, "model.layers.6.mlp.up_proj.weight"));
    /* the HF checkpoint carries the new shape and reloads to the same logits */
    test_tmpdir(dir, sizeof dir, "minitron-export");
    snprintf(out, sizeof out, "%s/cut", dir);
    snprintf(text, sizeof text, "export.hf<out=%s>", out);
    mopt_report_free(test_run_pipeline(m, text));
    size_t len;
    snprintf(text, sizeof text, "%s/config.json", out);
    char *cfg = read_whole(text, &len);
    assert_non_null(cfg);
    assert_non_null(strstr(cfg, "\"hidden_size\": 192"));
    assert_non_null(strstr(cfg, "\"intermediate_size\": 512"));
    assert_non_null(strstr(cfg, "\"num_attention_heads\": 6"));
    assert_non_null(strstr(cfg, "\"num_key_value_heads\": 3"));
    assert_non_null(strstr(cfg, "\"num_hidden_layers\": 6"));
    assert_non_null(strstr(cfg, "\"head_dim\": 32"));
    free(cfg);
    mopt_model *back = test_load_model(out);
    assert_true(test_max_logit_diff(back, m) == 0);
    mopt_model_free(back);
    mopt_report_free(r);
    mopt_model_free(m);
    mopt_model_free(orig);
}

/* GPT-2 (LayerNorm with biases, tied embeddings, one head per group) to a parameter budget through the CLI. */
static void test_a_budget_search_cuts_gpt2_under_it_and_the_checkpoint_reloads(void **s) {
    REQUIRE_SHARED();
    char dir[1024], out[1200], args[8192], text[4096];
    test_tmpdir(dir, sizeof dir, "minitron-cli");
    snprintf(out, sizeof out, "%s/cut", dir);
    const char *sh = test_shared_dir();
    snprintf(args, sizeof args,
             "%s prune '%s/models/lit-gpt2-1m' --method minitron --params 0.6 --calib '%s/data/lit-train.txt' --calib-samples 8 "
             "--calib-len 128 -o '%s' --report '%s/r.json' --quiet > '%s/stdout'",
             MOPT_CLI, sh, sh, out, dir, dir);
    assert_int_equal(system(args), 0);
    mopt_model *orig = test_load_model("models/lit-gpt2-1m"), *back = test_load_model(out), *m = test_load_model("models/lit-gpt2-1m");
    const int64_t p0 = mopt_graph_n_params(mopt_model_graph(orig)), p1 = mopt_graph_n_params(mopt_model_graph(back));
    fprintf(stderr, "lit-gpt2-1m params=0.6: %lld -> %lld parameters\n", (long long)p0, (long long)p1);
    assert_true(p1 <= 0.6 * (double)p0 && p1 > 0.4 * (double)p0);
    const mopt_arch *a = mopt_model_arch(back);
    assert_int_equal(a->dim, a->n_heads * a->head_dim); /* GPT-2's config has no head_dim */
    /* the same pass in this process gives the same model the CLI saved */
    snprintf(text, sizeof text, "prune.minitron<params=0.6;calib=%s/data/lit-train.txt;calib_samples=8;calib_len=128>", sh);
    mopt_report *r = test_run_pipeline(m, text);
    assert_true(mopt_report_get_metric(r, "search_candidates") >= 1);
    assert_true(test_max_logit_diff(back, m) == 0);
    mopt_report_free(r);
    mopt_model_free(orig), mopt_model_free(back), mopt_model_free(m);
}

/* Mean next-token loss of m over the windows, from its logits with a float64 log-softmax written here. */
static double window_loss(mopt_model *m, const int32_t *win, int windows, int len) {
    mopt_error err = {0};
    mopt_session *ses = mopt_session_new(mopt_model_graph(m), NULL, &err);
    assert_non_null(ses);
    const int32_t V = mopt_model_arch(m)->vocab_size;
    double sum = 0;
    for (int w = 0; w < windows; w++) {
        const float *logits;
        assert_int_equal(mopt_session_truncate(ses, 0, &err), MOPT_OK);
        assert_int_equal(mopt_session_forward(ses, win + (size_t)w * len, len, true, &logits, &err), MOPT_OK);
        double nll = 0;
        for (int t = 0; t + 1 < len; t++) {
            const float *row = logits + (size_t)t * V;
            double mx = -INFINITY, z = 0;
            for (int32_t v = 0; v < V; v++) mx = fmax(mx, row[v]);
            for (int32_t v = 0; v < V; v++) z += exp(row[v] - mx);
            nll += mx + log(z) - row[win[(size_t)w * len + t + 1]];
        }
        sum += nll / (len - 1);
    }
    mopt_session_free(ses);
    return sum / windows;
}

/* depth=loss ranks blocks by how much the calibration loss rises without each:
 * the block it drops has the smallest rise, and that rise equals the loss of
 * the cut model minus the original's, measured here on the same windows. */
static void test_depth_by_loss_drops_the_block_whose_removal_costs_least(void **s) {
    REQUIRE_SHARED();
    enum { N = 4, LEN = 128 };
    char train[1200], text[2400];
    test_shared_path(train, sizeof train, "data/lit-train.txt");
    mopt_model *m = test_load_model("models/lit-llama-7m"), *orig = test_load_model("models/lit-llama-7m");
    snprintf(text, sizeof text, "prune.minitron<layers=7;depth=loss;calib=%s;calib_samples=%d;calib_len=%d;search_windows=%d;seed=5>", train, N,
             LEN, N);
    mopt_report *r = test_run_pipeline(m, text);
    const json_t *pass = json_array_get(json_object_get((const json_t *)mopt_report_tree(r), "passes"), 0);
    const json_t *imp = json_object_get(json_object_get(pass, "series"), "block_importance");
    assert_int_equal(json_array_size(imp), 8);
    int32_t kept[8];
    assert_int_equal(parse_ints(report_string(r, "kept_layers"), kept, 8), 7);
    int dropped = 0;
    while (dropped < 7 && kept[dropped] == dropped) dropped++;
    for (int l = 0; l < 8; l++) assert_true(json_real_value(json_array_get(imp, (size_t)dropped)) <= json_real_value(json_array_get(imp, (size_t)l)));
    int32_t *ids = NULL;
    size_t n = 0;
    mopt_error err = {0};
    assert_int_equal(mopt_tokenizer_encode_file(mopt_model_tokenizer(orig), train, 0, &ids, &n, &err), MOPT_OK);
    int32_t *win = ref64_calib_windows(ids, n, N, LEN, 5);
    const double rise = window_loss(m, win, N, LEN) - window_loss(orig, win, N, LEN), reported = json_real_value(json_array_get(imp, (size_t)dropped));
    fprintf(stderr, "depth=loss drops block %d: loss rise %.6f reported, %.6f measured\n", dropped, reported, rise);
    assert_true(fabs(rise - reported) <= 1e-4);
    free(win), free(ids);
    mopt_report_free(r);
    mopt_model_free(m), mopt_model_free(orig);
}

static void test_minitron_refuses_bad_input(void **s) {
    REQUIRE_SHARED();
    char dir[1024], out[1200], args[4096];
    test_tmpdir(dir, sizeof dir, "minitron-bad");
    snprintf(out, sizeof out, "%s/out", dir);
    const char *sh = test_shared_dir();
    const char *model = "models/lit-llama-7m";
    snprintf(args, sizeof args, "prune '%s/%s' --method minitron --hidden 512 --calib '%s/data/lit-train.txt' -o '%s'", sh, model, sh, out);
    test_cli_refuses(args, 2, "hidden=512 is larger than the model's 256", NULL);
    snprintf(args, sizeof args, "prune '%s/%s' --method minitron --layers 9 --calib '%s/data/lit-train.txt' -o '%s'", sh, model, sh, out);
    test_cli_refuses(args, 2, "layers=9 is larger than the model's 8", NULL);
    snprintf(args, sizeof args, "prune '%s/%s' --method minitron --heads 6 --kv-heads 4 --calib '%s/data/lit-train.txt' -o '%s'", sh, model, sh, out);
    test_cli_refuses(args, 2, "do not divide into 4 query groups", NULL);
    snprintf(args, sizeof args, "prune '%s/%s' --method minitron --heads 8 --kv-heads 2 --calib '%s/data/lit-train.txt' -o '%s'", sh, model, sh, out);
    test_cli_refuses(args, 2, "the model's groups hold 2", NULL);
    snprintf(args, sizeof args, "prune '%s/%s' --method minitron --params 0.5 --ffn 512 --calib '%s/data/lit-train.txt' -o '%s'", sh, model, sh, out);
    test_cli_refuses(args, 2, "not both", NULL);
    snprintf(args, sizeof args, "prune '%s/%s' --method minitron --params 1.5 --calib '%s/data/lit-train.txt' -o '%s'", sh, model, sh, out);
    test_cli_refuses(args, 2, "params", NULL);
    snprintf(args, sizeof args, "prune '%s/%s' --method minitron --calib '%s/data/lit-train.txt' -o '%s'", sh, model, sh, out);
    test_cli_refuses(args, 2, "nothing to prune", NULL);
    snprintf(args, sizeof args, "prune '%s/%s' --method minitron --layers 6 --depth ppl --calib '%s/data/lit-train.txt' -o '%s'", sh, model, sh, out);
    test_cli_refuses(args, 2, "depth=ppl: expected cosine", NULL);
    snprintf(args, sizeof args, "prune '%s/%s' --method minitron --ffn 512 -o '%s'", sh, model, out);
    test_cli_refuses(args, 2, "give --calib FILE", NULL);
    snprintf(args, sizeof args, "prune '%s/%s' --method minitron --ffn 512 --pattern 2:4 --calib '%s/data/lit-train.txt' -o '%s'", sh, model, sh, out);
    test_cli_refuses(args, 2, "not minitron", NULL);
    snprintf(args, sizeof args, "prune '%s/models/lit-gpt2-1m' --method minitron --hidden 96 --calib '%s/data/lit-train.txt' --calib-samples 2 "
             "--calib-len 64 --quiet -o '%s'", sh, sh, out);
    test_cli_refuses(args, 2, "a gpt2 model cannot take hidden 96 with 4 heads of 32", NULL);
    assert_int_not_equal(access(out, F_OK), 0);
    char text[2048];
    snprintf(text, sizeof text, "quant.rtn<bits=4;group_size=32>,prune.minitron<ffn=512;calib=%s/data/lit-train.txt;calib_samples=2;calib_len=64>", sh);
    test_pipeline_fails("models/lit-gpt2-1m", text, "prune the float model, then quantize");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kept_ffn_neurons_match_a_float64_importance),
        cmocka_unit_test(test_a_shape_cut_slices_every_tensor_and_exports_the_new_config),
        cmocka_unit_test(test_a_budget_search_cuts_gpt2_under_it_and_the_checkpoint_reloads),
        cmocka_unit_test(test_depth_by_loss_drops_the_block_whose_removal_costs_least),
        cmocka_unit_test(test_minitron_refuses_bad_input),
    };
    return test_run_tests(tests, test_registry_setup, test_registry_teardown);
}
