/* The training passes end to end. mopt distill: lit-gpt2-1m learns from
 * lit-llama-7m (the same tokenizer) on a small budget, the saved student
 * reloads with the validation loss the run reported, and bad input is refused
 * with one line, exit 2, nothing written. quant.qat with a teacher (QAD): int2
 * lit-llama-7m beats RTN on the same grid, stays packed, and the packed
 * kernels score exactly what was trained. */
#include <jansson.h>
#include <math.h>

#include "testutil.h"

/* Mean NLL of the first n tokens of lit-val in windows of ctx. */
static double val_nll(mopt_model *m, int64_t n, int32_t ctx) {
    char val[1200];
    int32_t *ids = NULL;
    size_t nt = 0;
    mopt_error err = {0};
    assert_int_equal(mopt_tokenizer_encode_file(mopt_model_tokenizer(m), test_shared_path(val, sizeof val, "data/lit-val.txt"), 0, &ids,
                                                &nt, &err),
                     MOPT_OK);
    mopt_session *se = mopt_session_new(mopt_model_graph(m), NULL, &err);
    mopt_ppl_result pr;
    assert_int_equal(mopt_perplexity(se, ids, n, ctx, NULL, NULL, &pr, &err), MOPT_OK);
    mopt_session_free(se);
    free(ids);
    return pr.nll;
}

static void test_distilled_student_improves_and_reloads(void **s) {
    REQUIRE_SHARED();
    char dir[1024], args[8192], out[1200], rep[1200];
    test_tmpdir(dir, sizeof dir, "distill");
    snprintf(out, sizeof out, "%s/student", dir);
    snprintf(rep, sizeof rep, "%s/report.json", dir);
    const char *sh = test_shared_dir();
    snprintf(args, sizeof args,
             "%s distill --teacher '%s/models/lit-llama-7m' --student '%s/models/lit-gpt2-1m' --data '%s/data/lit-train.txt' "
             "--eval '%s/data/lit-val.txt' --eval-tokens 8192 --tokens 12288 --ctx 128 --batch 2 --lr 1e-4 --warmup 4 --eval-every 16 "
             "--alpha 0.2 -o '%s' --report '%s' --quiet > '%s/stdout'",
             MOPT_CLI, sh, sh, sh, sh, out, rep, dir);
    assert_int_equal(system(args), 0);
    json_t *r = json_load_file(rep, 0, NULL);
    assert_non_null(r);
    json_t *m = json_object_get(json_array_get(json_object_get(r, "passes"), 0), "metrics");
    const double before = json_number_value(json_object_get(m, "val_loss_before"));
    const double best = json_number_value(json_object_get(m, "val_loss_best"));
    assert_true(best < before - 0.003); /* 48 steps from the teacher lower the student's validation loss (by 0.009 here) */
    assert_int_equal((int)json_number_value(json_object_get(m, "steps")), 48);
    json_decref(r);
    /* the saved student scores the validation windows as the run measured them */
    mopt_error err = {0};
    mopt_model *st = mopt_model_load(out, NULL, &err);
    assert_non_null(st);
    assert_true(fabs(val_nll(st, 8192, 128) - best) <= 2e-3 * best); /* bf16 rounding of the saved weights */
    mopt_model_free(st);
}

static void test_distill_refuses_bad_input_and_writes_nothing(void **s) {
    REQUIRE_SHARED();
    char dir[1024], args[8192], out[1200], shortf[1200];
    test_tmpdir(dir, sizeof dir, "distill-bad");
    snprintf(out, sizeof out, "%s/student", dir);
    snprintf(shortf, sizeof shortf, "%s/short.txt", dir);
    write_file(shortf, "ROMEO: hi", 9);
    const char *sh = test_shared_dir();
    snprintf(args, sizeof args, "distill --teacher '%s/models/stories260K/stories260K.bin' --student '%s/models/lit-gpt2-1m' --data '%s' -o '%s'",
             sh, sh, shortf, out);
    test_cli_refuses(args, 2, "not the same tokenizer", NULL);
    snprintf(args, sizeof args, "distill --teacher '%s/models/lit-llama-7m' --student '%s/models/lit-gpt2-1m' --data '%s' -o '%s'", sh,
             sh, shortf, out);
    test_cli_refuses(args, 2, "fewer than one window of 256", NULL);
    snprintf(args, sizeof args,
             "distill --teacher '%s/models/lit-llama-7m' --student '%s/models/lit-gpt2-1m' --data '%s/data/lit-val.txt' --lr 0 -o '%s'", sh,
             sh, sh, out);
    test_cli_refuses(args, 2, "lr", NULL);
    snprintf(args, sizeof args,
             "distill --teacher '%s/models/lit-llama-7m' --student '%s/models/lit-gpt2-1m' --data '%s/data/lit-val.txt' --tokens 100 -o '%s'",
             sh, sh, sh, out);
    test_cli_refuses(args, 2, "less than one step", NULL);
    snprintf(args, sizeof args, "distill --student '%s/models/lit-gpt2-1m' --data '%s' -o '%s'", sh, shortf, out);
    test_cli_refuses(args, 2, "--teacher and --student are required", NULL);
    snprintf(args, sizeof args, "distill --teacher '%s/models/lit-llama-7m' --student '%s/models/lit-gpt2-1m' --data '%s' --bits 3 -o '%s'",
             sh, sh, shortf, out);
    test_cli_refuses(args, 2, "options of mopt qat", NULL);
    snprintf(args, sizeof args, "qat '%s/models/lit-llama-7m' --bits 5 --data '%s/data/lit-val.txt' -o '%s'", sh, sh, out);
    test_cli_refuses(args, 2, "bits=5 has no packed format", NULL);
    snprintf(args, sizeof args, "qat '%s/models/lit-llama-7m' --teacher '%s/models/stories260K/stories260K.bin' --data '%s/data/lit-val.txt' -o '%s'",
             sh, sh, sh, out);
    test_cli_refuses(args, 2, "not the same tokenizer", NULL);
    assert_int_not_equal(access(out, F_OK), 0);
}

static void test_qad_int2_beats_rtn_and_runs_packed(void **s) {
    REQUIRE_SHARED();
    char text[8192];
    const char *sh = test_shared_dir();
    mopt_model *rtn = test_load_model("models/lit-llama-7m");
    mopt_report_free(test_run_pipeline(rtn, "quant.rtn<bits=2;group_size=64>"));
    const double rtn_nll = val_nll(rtn, 4096, 128);
    mopt_model *m = test_load_model("models/lit-llama-7m");
    snprintf(text, sizeof text,
             "quant.qat<bits=2;group_size=64;teacher=%s/models/lit-llama-7m;data=%s/data/lit-train.txt;eval=%s/data/lit-val.txt;"
             "eval_tokens=4096;tokens=4096;ctx=128;batch=2;lr=1e-4;warmup=2;eval_every=8;alpha=0>",
             sh, sh, sh);
    mopt_report *r = test_run_pipeline(m, text);
    const double before = mopt_report_get_metric(r, "val_loss_before"), best = mopt_report_get_metric(r, "val_loss_best");
    fprintf(stderr, "QAD int2 g64: validation NLL %.4f (RTN) -> %.4f, bits/weight %.3f\n", before, best,
            mopt_report_get_metric(r, "bits_per_weight"));
    assert_true(fabs(before - rtn_nll) <= 2e-3 * rtn_nll); /* training starts at RTN: the fake quantization is RTN's grid */
    assert_true(best < before - 0.005);
    assert_float_equal(mopt_report_get_metric(r, "bits_per_weight"), 2.0 + (16.0 + 8.0) / 64, 1e-9); /* 2 bits + an f16 scale and a u8 zero per 64 */
    /* every decoder linear is packed int2, and the packed kernels give the validation loss the trainer measured */
    const mopt_graph *g = mopt_model_graph(m);
    int packed = 0;
    for (int32_t i = 0; i < mopt_graph_n_nodes(g); i++) {
        const mopt_node *n = mopt_graph_node(g, i);
        if (!mopt_role_is_linear(n->role)) continue;
        assert_int_equal(n->weight->dtype, MOPT_DTYPE_QINT);
        assert_int_equal(n->weight->quant->bits, 2);
        assert_int_equal(n->weight->quant->group_size, 64);
        packed++;
    }
    assert_int_equal(packed, 7 * mopt_model_arch(m)->n_layers);
    const double after = val_nll(m, 4096, 128);
    assert_true(fabs(after - best) <= 2e-3 * best);
    assert_true(after < rtn_nll - 0.005);
    mopt_report_free(r);
    mopt_model_free(m);
    mopt_model_free(rtn);
}

static void test_qat_refuses_a_quantized_model(void **s) {
    REQUIRE_SHARED();
    char text[4096];
    snprintf(text, sizeof text, "quant.rtn<bits=4>,quant.qat<data=%s/data/lit-val.txt;tokens=1024;ctx=64>", test_shared_dir());
    test_pipeline_fails("models/lit-llama-7m", text, "already quantized");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_distilled_student_improves_and_reloads),
        cmocka_unit_test(test_distill_refuses_bad_input_and_writes_nothing),
        cmocka_unit_test(test_qad_int2_beats_rtn_and_runs_packed),
        cmocka_unit_test(test_qat_refuses_a_quantized_model),
    };
    return cmocka_run_group_tests(tests, test_registry_setup, test_registry_teardown);
}
