/* mopt distill end to end: lit-gpt2-1m learns from lit-llama-7m (the same
 * tokenizer) on a small budget, the saved student reloads with the validation
 * loss the run reported, and bad input is refused with one line, exit 2,
 * nothing written. */
#include <jansson.h>
#include <math.h>

#include "testutil.h"

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
    int32_t *ids = NULL;
    size_t n = 0;
    char val[1200];
    assert_int_equal(mopt_tokenizer_encode_file(mopt_model_tokenizer(st), test_shared_path(val, sizeof val, "data/lit-val.txt"), 0,
                                                &ids, &n, &err),
                     MOPT_OK);
    mopt_session *se = mopt_session_new(mopt_model_graph(st), NULL, &err);
    mopt_ppl_result pr;
    assert_int_equal(mopt_perplexity(se, ids, 8192, 128, NULL, NULL, &pr, &err), MOPT_OK);
    assert_true(fabs(pr.nll - best) <= 2e-3 * best); /* bf16 rounding of the saved weights */
    mopt_session_free(se);
    free(ids);
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
    assert_int_not_equal(access(out, F_OK), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_distilled_student_improves_and_reloads),
        cmocka_unit_test(test_distill_refuses_bad_input_and_writes_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
