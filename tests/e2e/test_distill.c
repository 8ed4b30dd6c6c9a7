/* The training passes end to end. mopt distill: lit-gpt2-1m learns from
 * lit-llama-7m (the same tokenizer) on a small budget, the saved student
 * reloads with the validation loss the run reported, and bad input is refused
 * with one line, exit 2, nothing written. quant.qat with a teacher (QAD): int2
 * lit-llama-7m beats RTN on the same grid, stays packed, and the packed
 * kernels score exactly what was trained; it also starts from a PTQ pass's
 * result. An interrupted run resumes to the same weights bit for bit; frozen
 * parameters stay as they were; scripts/qad.lua draws its loss curves. */
#include <jansson.h>
#include <math.h>

#include "testutil.h"

/* Mean NLL of the first n tokens of lit-val in windows of ctx. */

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
    assert_true(fabs(test_val_nll(st, 8192, 128) - best) <= 2e-3 * best); /* bf16 rounding of the saved weights */
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
    snprintf(args, sizeof args, "qat '%s/models/lit-llama-7m' --init hqq --data '%s/data/lit-val.txt' -o '%s'", sh, sh, out);
    test_cli_refuses(args, 2, "--init expects rtn, awq or gptq", NULL);
    /* a training state resumed by another model, or a file that is no state */
    char state[1200];
    snprintf(state, sizeof state, "%s/gpt2.state", dir);
    snprintf(args, sizeof args,
             "%s distill --teacher '%s/models/lit-llama-7m' --student '%s/models/lit-gpt2-1m' --data '%s/data/lit-val.txt' --tokens 256 "
             "--ctx 64 --batch 2 --checkpoint '%s' --quiet > /dev/null",
             MOPT_CLI, sh, sh, sh, state);
    assert_int_equal(system(args), 0);
    snprintf(args, sizeof args, "qat '%s/models/lit-llama-7m' --data '%s/data/lit-val.txt' --tokens 256 --ctx 64 --batch 2 --resume '%s' -o '%s'",
             sh, sh, state, out);
    test_cli_refuses(args, 2, "a training state of another model", NULL);
    snprintf(args, sizeof args, "qat '%s/models/lit-llama-7m' --data '%s/data/lit-val.txt' --tokens 256 --ctx 64 --batch 2 --resume '%s' -o '%s'",
             sh, sh, shortf, out);
    test_cli_refuses(args, 2, "short.txt", NULL);
    assert_int_not_equal(access(out, F_OK), 0);
}

static void test_qad_int2_beats_rtn_and_runs_packed(void **s) {
    REQUIRE_SHARED();
    char text[8192];
    const char *sh = test_shared_dir();
    mopt_model *rtn = test_load_model("models/lit-llama-7m");
    mopt_report_free(test_run_pipeline(rtn, "quant.rtn<bits=2;group_size=64>"));
    const double rtn_nll = test_val_nll(rtn, 4096, 128);
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
    const double after = test_val_nll(m, 4096, 128);
    assert_true(fabs(after - best) <= 2e-3 * best);
    assert_true(after < rtn_nll - 0.005);
    mopt_report_free(r);
    mopt_model_free(m);
    mopt_model_free(rtn);
}

static void test_qat_refuses_a_model_packed_in_another_format(void **s) {
    REQUIRE_SHARED();
    char text[4096];
    snprintf(text, sizeof text, "quant.rtn<bits=4>,quant.qat<bits=2;group_size=64;data=%s/data/lit-val.txt;tokens=1024;ctx=64>",
             test_shared_dir());
    test_pipeline_fails("models/lit-llama-7m", text, "give the earlier pass the same format");
    snprintf(text, sizeof text, "quant.fp8,quant.qat<data=%s/data/lit-val.txt;tokens=1024;ctx=64>", test_shared_dir());
    test_pipeline_fails("models/lit-llama-7m", text, "packed W8A8, FP8, 2:4 or a GGUF k-quant");
}

/* Distillation trains float weights: a packed student (2:4, quantized) is refused before any training. */
static void test_distill_refuses_a_packed_student_before_training(void **s) {
    REQUIRE_SHARED();
    char text[4096];
    snprintf(text, sizeof text,
             "prune.magnitude<pattern=2:4;pack=true>,distill.logits<teacher=%s/models/lit-llama-7m;data=%s/data/lit-val.txt;tokens=1024;ctx=64>",
             test_shared_dir(), test_shared_dir());
    test_pipeline_fails("models/lit-llama-7m", text, "is packed; distill the float model");
    snprintf(text, sizeof text, "quant.rtn<bits=4>,distill.hidden<teacher=%s/models/lit-llama-7m;data=%s/data/lit-val.txt;tokens=1024;ctx=64>",
             test_shared_dir(), test_shared_dir());
    test_pipeline_fails("models/lit-llama-7m", text, "is packed; distill the float model");
}

/* Runs text on m with log lines going to on_log; returns the status. */
static mopt_status run_logged(mopt_model *m, const char *text, mopt_log_fn on_log, mopt_report *r, mopt_error *err) {
    mopt_pipeline *p = mopt_pipeline_new(test_reg);
    mopt_status st = mopt_pipeline_parse(p, text, err);
    mopt_run_opts o;
    mopt_run_opts_default(&o);
    o.log = on_log;
    if (!st) st = mopt_pipeline_run(p, m, &o, r, err);
    mopt_pipeline_free(p);
    return st;
}

static void quiet_log(void *user, mopt_log_level level, const char *text) { (void)user, (void)level, (void)text; }

/* Stands in for SIGINT's handler once the loop reports step 8. */
static void interrupt_at_step_8(void *user, mopt_log_level level, const char *text) {
    (void)user, (void)level;
    if (strstr(text, "step 8/16")) mopt_interrupt(2);
}

static void test_interrupted_run_resumes_to_the_same_weights(void **s) {
    REQUIRE_SHARED();
    char dir[1024], text[8192], base[4096], state[1200], state2[1200];
    test_tmpdir(dir, sizeof dir, "resume");
    snprintf(state, sizeof state, "%s/run.state", dir);
    snprintf(state2, sizeof state2, "%s/resumed.state", dir);
    const char *sh = test_shared_dir();
    snprintf(base, sizeof base,
             "distill.logits<teacher=%s/models/lit-llama-7m;data=%s/data/lit-train.txt;eval=%s/data/lit-val.txt;eval_tokens=2048;"
             "tokens=2048;ctx=64;batch=2;lr=1e-4;warmup=2;eval_every=4;alpha=0.2;checkpoint_every=0",
             sh, sh, sh);
    /* the run straight through */
    mopt_error err = {0};
    mopt_model *a = test_load_model("models/lit-gpt2-1m");
    mopt_report *ra = mopt_report_new();
    snprintf(text, sizeof text, "%s>", base);
    assert_int_equal(run_logged(a, text, quiet_log, ra, &err), MOPT_OK);
    /* the same run stopped after step 8: the state on disk is that of step 8 */
    mopt_interrupt_clear();
    mopt_model *b = test_load_model("models/lit-gpt2-1m");
    mopt_report *rb = mopt_report_new();
    snprintf(text, sizeof text, "%s;checkpoint=%s>", base, state);
    assert_int_equal(run_logged(b, text, interrupt_at_step_8, rb, &err), MOPT_E_INTERRUPTED);
    assert_non_null(strstr(err.msg, "resume with resume="));
    mopt_interrupt_clear();
    /* a state is refused by another model, with nothing trained */
    test_pipeline_fails("models/lit-llama-7m",
                        (snprintf(text, sizeof text, "%s;resume=%s>", base, state), text), "a training state of another model");
    /* resumed on a fresh copy of the student, it ends where the uninterrupted run ended, bit for bit */
    mopt_model *c = test_load_model("models/lit-gpt2-1m");
    mopt_report *rc = mopt_report_new();
    snprintf(text, sizeof text, "%s;resume=%s;checkpoint=%s>", base, state, state2);
    assert_int_equal(run_logged(c, text, quiet_log, rc, &err), MOPT_OK);
    assert_int_equal((int)mopt_report_get_metric(rc, "resumed_at_step"), 8);
    assert_float_equal(mopt_report_get_metric(rc, "val_loss_best"), mopt_report_get_metric(ra, "val_loss_best"), 0);
    const mopt_graph *ga = mopt_model_graph(a), *gc = mopt_model_graph(c);
    int compared = 0;
    for (int32_t i = 0; i < mopt_graph_n_nodes(ga); i++) {
        const mopt_tensor *wa = mopt_graph_node(ga, i)->weight, *wc = mopt_graph_node(gc, i)->weight;
        if (!wa) continue;
        assert_string_equal(wa->name, wc->name);
        assert_int_equal(mopt_tensor_nbytes(wa), mopt_tensor_nbytes(wc));
        assert_memory_equal(wa->data, wc->data, mopt_tensor_nbytes(wa));
        compared++;
    }
    assert_true(compared > 10);
    mopt_report_free(ra);
    mopt_report_free(rb);
    mopt_report_free(rc);
    mopt_model_free(a);
    mopt_model_free(b);
    mopt_model_free(c);
}

static void test_frozen_parameters_stay_put(void **s) {
    REQUIRE_SHARED();
    char text[8192];
    const char *sh = test_shared_dir();
    mopt_model *m = test_load_model("models/lit-gpt2-1m"), *orig = test_load_model("models/lit-gpt2-1m");
    snprintf(text, sizeof text,
             "distill.logits<teacher=%s/models/lit-llama-7m;data=%s/data/lit-train.txt;tokens=1024;ctx=64;batch=2;lr=1e-3;warmup=0;"
             "train=*ln_*>",
             sh, sh);
    mopt_report_free(test_run_pipeline(m, text));
    const mopt_graph *g = mopt_model_graph(m), *g0 = mopt_model_graph(orig);
    int moved = 0, kept = 0;
    for (int32_t i = 0; i < mopt_graph_n_nodes(g); i++) {
        const mopt_tensor *w = mopt_graph_node(g, i)->weight, *w0 = mopt_graph_node(g0, i)->weight;
        if (!w) continue;
        const int same = !memcmp(w->data, w0->data, mopt_tensor_nbytes(w));
        if (strstr(w->name, "ln_")) moved += !same; /* the layer norms trained */
        else kept += same, assert_true(same); /* nothing else changed */
    }
    assert_true(moved > 0 && kept > 0);
    mopt_model_free(m);
    mopt_model_free(orig);
    snprintf(text, sizeof text, "distill.logits<teacher=%s/models/lit-llama-7m;data=%s/data/lit-train.txt;tokens=1024;ctx=64;freeze=*nope*>",
             sh, sh);
    test_pipeline_fails("models/lit-gpt2-1m", text, "freeze=*nope* matches no parameter");
}

static void test_qad_script_starts_from_gptq_and_draws_the_loss_curves(void **s) {
    REQUIRE_SHARED();
    char dir[1024], args[8192], path[1200];
    test_tmpdir(dir, sizeof dir, "qad-lua");
    const char *sh = test_shared_dir();
    snprintf(args, sizeof args,
             "MOPT_QUIET=1 %s run '%s/scripts/qad.lua' model='%s/models/lit-gpt2-1m' train='%s/data/lit-train.txt' "
             "val='%s/data/lit-val.txt' bits=4 group=32 init=gptq calib_samples=4 tokens=1024 ctx=64 batch=2 lr=1e-4 "
             "max_ppl_increase=0.5 out='%s/reports' > '%s/stdout' 2>&1",
             MOPT_CLI, MOPT_SOURCE_DIR, sh, sh, sh, dir, dir);
    assert_int_equal(system(args), 0);
    snprintf(path, sizeof path, "%s/reports/report.json", dir);
    json_t *r = json_load_file(path, 0, NULL);
    assert_non_null(r);
    json_t *passes = json_object_get(r, "passes");
    assert_string_equal(json_string_value(json_object_get(json_array_get(passes, 0), "name")), "quant.gptq");
    json_t *qat = json_object_get(json_array_get(passes, 1), "metrics");
    assert_string_equal(json_string_value(json_object_get(json_array_get(passes, 1), "name")), "quant.qat");
    assert_float_equal(json_number_value(json_object_get(qat, "bits_per_weight")), 4.0 + (16.0 + 8.0) / 32, 1e-9);
    json_decref(r);
    /* the HTML report draws the training and validation curves */
    snprintf(path, sizeof path, "%s/reports/report.html", dir);
    size_t n = 0;
    char *html = read_whole(path, &n);
    assert_non_null(html);
    assert_non_null(strstr(html, "Loss curve (2. quant.qat)"));
    assert_non_null(strstr(html, "<polyline"));
    assert_non_null(strstr(html, "validation loss"));
    free(html);
}

static void test_qat_starts_exactly_where_gptq_ended(void **s) {
    REQUIRE_SHARED();
    char gptq[2048], text[8192];
    const char *sh = test_shared_dir();
    snprintf(gptq, sizeof gptq, "quant.gptq<bits=2;group_size=32;calib=%s/data/lit-train.txt;calib_samples=4;calib_len=128>", sh);
    mopt_model *ptq = test_load_model("models/lit-gpt2-1m");
    mopt_report_free(test_run_pipeline(ptq, gptq));
    const double ptq_nll = test_val_nll(ptq, 2048, 64);
    mopt_model *m = test_load_model("models/lit-gpt2-1m");
    snprintf(text, sizeof text,
             "%s,quant.qat<bits=2;group_size=32;data=%s/data/lit-train.txt;eval=%s/data/lit-val.txt;eval_tokens=2048;tokens=256;ctx=64;"
             "batch=2;lr=1e-4;eval_every=0>",
             gptq, sh, sh);
    mopt_report *r = test_run_pipeline(m, text);
    /* the fake quantization keeps GPTQ's scales and zero-points: the first loss is GPTQ's (fp32 trainer vs packed kernels) */
    const double before = mopt_report_get_metric(r, "val_loss_before");
    fprintf(stderr, "GPTQ int2 g32: NLL %.6f; QAT starts at %.6f\n", ptq_nll, before);
    assert_true(fabs(before - ptq_nll) <= 1e-4 * ptq_nll);
    mopt_report_free(r);
    mopt_model_free(m);
    mopt_model_free(ptq);
}

static void test_sigint_leaves_a_resumable_checkpoint(void **s) {
    REQUIRE_SHARED();
    char dir[1024], args[8192], state[1200], out[1200], rcf[1200];
    test_tmpdir(dir, sizeof dir, "sigint");
    snprintf(state, sizeof state, "%s/run.state", dir);
    snprintf(out, sizeof out, "%s/student", dir);
    snprintf(rcf, sizeof rcf, "%s/rc", dir);
    const char *sh = test_shared_dir();
    char train[4096];
    snprintf(train, sizeof train,
             "distill --teacher '%s/models/lit-llama-7m' --student '%s/models/lit-gpt2-1m' --data '%s/data/lit-train.txt' --tokens 16384 "
             "--ctx 64 --batch 2 --checkpoint '%s' --checkpoint-every 1 --quiet",
             sh, sh, sh, state);
    /* SIGINT once the first checkpoint is on disk: mopt stops (exit 130) and the file stays a whole state */
    snprintf(args, sizeof args,
             "%s %s > /dev/null 2>&1 & pid=$!; i=0; while [ ! -f '%s' ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done; "
             "kill -INT $pid; wait $pid; echo $? > '%s'",
             MOPT_CLI, train, state, rcf);
    assert_int_equal(system(args), 0);
    size_t n;
    char *rc = read_whole(rcf, &n);
    assert_non_null(rc);
    assert_int_equal(atoi(rc), 130);
    free(rc);
    assert_int_equal(access(out, F_OK) == 0, 0);
    snprintf(args, sizeof args, "%s %s --resume '%s' -o '%s' > '%s/stdout' 2>&1", MOPT_CLI, train, state, out, dir);
    assert_int_equal(system(args), 0); /* it resumes and finishes */
    assert_int_equal(access(out, F_OK), 0);
}

static void test_hidden_distillation_pulls_hidden_states_together(void **s) {
    REQUIRE_SHARED();
    char text[8192];
    const char *sh = test_shared_dir();
    /* a student that is its teacher: every block's states coincide, the hidden loss is zero */
    mopt_model *m = test_load_model("models/lit-gpt2-1m");
    snprintf(text, sizeof text,
             "distill.hidden<teacher=%s/models/lit-gpt2-1m;hidden_loss=mse;data=%s/data/lit-train.txt;tokens=256;ctx=64;batch=2;lr=1e-4>",
             sh, sh);
    mopt_report *r = test_run_pipeline(m, text);
    assert_true(mopt_report_get_metric(r, "hidden_loss_first_step") < 1e-10);
    mopt_report_free(r);
    mopt_model_free(m);
    /* GPT-2 student, LLaMA teacher of another width: the cosine distance falls through the learned projections */
    m = test_load_model("models/lit-gpt2-1m");
    snprintf(text, sizeof text,
             "distill.hidden<teacher=%s/models/lit-llama-7m;layers=0:1,3:7;hidden_weight=10;data=%s/data/lit-train.txt;tokens=4096;ctx=64;"
             "batch=2;lr=3e-4;warmup=2>",
             sh, sh);
    r = test_run_pipeline(m, text);
    const double first = mopt_report_get_metric(r, "hidden_loss_first_step"), last = mopt_report_get_metric(r, "hidden_loss_last_step");
    fprintf(stderr, "distill.hidden cosine distance: %.4f at the first step, %.4f at the last\n", first, last);
    assert_int_equal((int)mopt_report_get_metric(r, "hidden_pairs"), 2);
    assert_true(last < first - 0.05);
    mopt_report_free(r);
    mopt_model_free(m);
    snprintf(text, sizeof text, "distill.hidden<teacher=%s/models/lit-llama-7m;layers=0:9;data=%s/data/lit-train.txt;tokens=256;ctx=64>", sh, sh);
    test_pipeline_fails("models/lit-gpt2-1m", text, "the student has blocks 0..3, the teacher 0..7");
}

static void test_teacher_cache_runs_the_teacher_once_per_window(void **s) {
    REQUIRE_SHARED();
    char dir[1024], small[1200], text[8192];
    test_tmpdir(dir, sizeof dir, "tcache");
    snprintf(small, sizeof small, "%s/small.txt", dir);
    size_t n;
    char path[1200];
    char *train = read_whole(test_shared_path(path, sizeof path, "data/lit-train.txt"), &n);
    assert_non_null(train);
    write_file(small, train, 6000); /* a few dozen windows of 64 tokens */
    free(train);
    mopt_model *m = test_load_model("models/lit-gpt2-1m");
    snprintf(text, sizeof text, "distill.logits<teacher=%s/models/lit-llama-7m;data=%s;tokens=8192;ctx=64;batch=2;teacher_cache=256>",
             test_shared_dir(), small);
    mopt_report *r = test_run_pipeline(m, text);
    const double forwards = mopt_report_get_metric(r, "teacher_forwards"), draws = 8192 / 64;
    fprintf(stderr, "teacher cache: %.0f teacher forwards for %.0f windows drawn\n", forwards, draws);
    assert_true(forwards > 0 && forwards < draws / 2); /* each aligned window's logits are computed once, then reused */
    mopt_report_free(r);
    mopt_model_free(m);
    snprintf(text, sizeof text, "distill.logits<teacher=%s/models/lit-llama-7m;data=%s/data/lit-train.txt;tokens=1024;ctx=64;teacher_cache=1>",
             test_shared_dir(), test_shared_dir());
    test_pipeline_fails("models/lit-gpt2-1m", text, "raise it, or use less data");
}

static void test_fp8_qat_starts_at_fp8_ptq_and_packs_e4m3(void **s) {
    REQUIRE_SHARED();
    char text[8192];
    const char *sh = test_shared_dir();
    mopt_model *ptq = test_load_model("models/lit-gpt2-1m");
    mopt_report_free(test_run_pipeline(ptq, "quant.fp8<activations=none>"));
    const double ptq_nll = test_val_nll(ptq, 2048, 64);
    mopt_model *m = test_load_model("models/lit-gpt2-1m");
    snprintf(text, sizeof text,
             "quant.qat<dtype=fp8;data=%s/data/lit-train.txt;eval=%s/data/lit-val.txt;eval_tokens=2048;tokens=512;ctx=64;batch=2;lr=1e-4;"
             "eval_every=0>",
             sh, sh);
    mopt_report *r = test_run_pipeline(m, text);
    const double before = mopt_report_get_metric(r, "val_loss_before"), best = mopt_report_get_metric(r, "val_loss_best");
    assert_true(fabs(before - ptq_nll) <= 1e-4 * ptq_nll); /* the fake quantization is quant.fp8's weight rounding */
    const mopt_graph *g = mopt_model_graph(m);
    for (int32_t i = 0; i < mopt_graph_n_nodes(g); i++)
        if (mopt_role_is_linear(mopt_graph_node(g, i)->role)) assert_int_equal(mopt_graph_node(g, i)->weight->dtype, MOPT_DTYPE_FP8);
    assert_true(fabs(test_val_nll(m, 2048, 64) - best) <= 1e-4 * best); /* the packed E4M3 kernels score what was trained */
    mopt_report_free(r);
    mopt_model_free(m);
    mopt_model_free(ptq);
}

static void test_learned_scales_alone_lower_the_loss(void **s) {
    REQUIRE_SHARED();
    char text[8192];
    const char *sh = test_shared_dir();
    mopt_model *m = test_load_model("models/lit-gpt2-1m");
    /* only the scales train (LSQ's gradient), the weights stay: a wrong scale gradient could not lower the loss */
    snprintf(text, sizeof text,
             "quant.qat<bits=2;group_size=32;learn_scales=true;train=*.qat_scale;data=%s/data/lit-train.txt;eval=%s/data/lit-val.txt;"
             "eval_tokens=2048;tokens=2048;ctx=64;batch=2;lr=1e-3;warmup=2;eval_every=4>",
             sh, sh);
    mopt_report *r = test_run_pipeline(m, text);
    const double before = mopt_report_get_metric(r, "val_loss_before"), best = mopt_report_get_metric(r, "val_loss_best");
    fprintf(stderr, "learned int2 scales: validation NLL %.4f -> %.4f\n", before, best);
    assert_true(best < before - 0.01);
    assert_true(fabs(test_val_nll(m, 2048, 64) - best) <= 1e-4 * best); /* packed with the learned scales, the kernels agree */
    mopt_report_free(r);
    mopt_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_distilled_student_improves_and_reloads),
        cmocka_unit_test(test_distill_refuses_bad_input_and_writes_nothing),
        cmocka_unit_test(test_qad_int2_beats_rtn_and_runs_packed),
        cmocka_unit_test(test_qat_refuses_a_model_packed_in_another_format),
        cmocka_unit_test(test_distill_refuses_a_packed_student_before_training),
        cmocka_unit_test(test_qat_starts_exactly_where_gptq_ended),
        cmocka_unit_test(test_fp8_qat_starts_at_fp8_ptq_and_packs_e4m3),
        cmocka_unit_test(test_learned_scales_alone_lower_the_loss),
        cmocka_unit_test(test_interrupted_run_resumes_to_the_same_weights),
        cmocka_unit_test(test_frozen_parameters_stay_put),
        cmocka_unit_test(test_teacher_cache_runs_the_teacher_once_per_window),
        cmocka_unit_test(test_hidden_distillation_pulls_hidden_states_together),
        cmocka_unit_test(test_sigint_leaves_a_resumable_checkpoint),
        cmocka_unit_test(test_qad_script_starts_from_gptq_and_draws_the_loss_curves),
    };
    return test_run_tests(tests, test_registry_setup, test_registry_teardown);
}
