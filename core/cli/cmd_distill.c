/* mopt distill --teacher T --student S --data TRAIN [--eval VAL] [...] -o OUT
 * mopt qat MODEL --bits B --group G [--init rtn|awq|gptq] [--teacher T] --data TRAIN [--eval VAL] [...] -o OUT
 * Thin layers over distill.logits and quant.qat (which share the training
 * loop and its options), after (--init) the PTQ pass QAT starts from, then
 * (with -o) an export pass. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void help(int qat) {
    if (qat)
        printf("usage: mopt qat MODEL [--bits B] [--group G] [--sym | --fp8] [--init rtn|awq|gptq] [--teacher T] --data TRAIN [--eval VAL] [-o OUT] [options]\n\n"
               "Quantization-aware training (quant.qat): the decoder linears train through fake quantization on\n"
               "the RTN grid of B bits in groups of G (straight-through estimator), then are packed by the same\n"
               "rule; with --teacher the loss is distillation from it (QAD; usually MODEL itself, unquantized).\n"
               "  --bits B           2, 3, 4 or 8 (default 4)\n"
               "  --group G          columns per scale group (default 128; -1: whole rows)\n"
               "  --sym              symmetric grid\n"
               "  --fp8              E4M3 weights with per-row scales instead of the int grid (weight-only)\n"
               "  --teacher T        QAD: the model to distill from\n"
               "  --init rtn|awq|gptq   the starting weights: RTN's (default), or those of quant.awq / quant.gptq\n"
               "                     (same format), calibrated on --calib-samples windows of TRAIN\n"
               "  --calib-samples N  calibration windows of 512 tokens for --init awq|gptq (default 128)\n");
    else
        printf("usage: mopt distill --teacher T --student S --data TRAIN [--eval VAL] [-o OUT] [options]\n\n"
               "Trains the student on the teacher's distributions (distill.logits): alpha x cross-entropy on\n"
               "the text + (1 - alpha) x tau^2 x KL(teacher || student) at temperature tau, AdamW with warm-up\n"
               "and cosine decay; with --eval the validation loss is measured every --eval-every steps and the\n"
               "best parameters are kept. Teacher and student must share the tokenizer.\n"
               "  --teacher T        the teacher model\n"
               "  --student S        the student model (a float checkpoint; its dtype is kept)\n");
    printf("  --data TRAIN       training text (windows at seeded random offsets)\n"
           "  --eval VAL         validation text\n"
           "  --tokens N         training tokens (default 200000)\n"
           "  --ctx N            window length (default 256)\n"
           "  --batch N          windows per optimizer step (default 4)\n"
           "  --lr X             peak learning rate (default 3e-4 for distill, 5e-5 for qat)\n"
           "  --warmup N         warm-up steps (default 10)\n"
           "  --temp X           temperature tau (default 1)\n"
           "  --alpha X          weight of the hard-label loss, 0..1 (default 0.5)\n"
           "  --kl forward|reverse  direction of the KL (default forward)\n"
           "  --topk K           forward KL over the teacher's top-k tokens (default 0: all)\n"
           "  --eval-every N     steps between validations (default 50)\n"
           "  --eval-tokens N    validate on the first N tokens of VAL (default 16384; 0: all)\n"
           "  --seed N           window sampler seed (default 1)\n"
           "  --recompute        activation recomputation per block: less memory, one more forward per step\n"
           "  --freeze GLOBS     parameters to keep fixed, comma-separated globs (e.g. '*norm*')\n"
           "  --train GLOBS      train only the parameters matching these globs\n"
           "  --checkpoint FILE  save the resumable state (weights, AdamW moments, curves) here, atomically,\n"
           "                     every --checkpoint-every steps (default 50), at the end and on Ctrl-C\n"
           "  --resume FILE      continue a run saved by --checkpoint (same model, tokens, batch and ctx)\n"
           "  -o OUT             save the student (atomically); --format F as mopt export (default hf)\n"
           "  --force            replace an existing OUT\n"
           "  --report R.json    the report: loss curves (train, validation), final numbers\n"
           "  --report-dir DIR   report.json, report.md and report.html (which draws the loss curves)\n"
           "  --threads N        worker threads (default: all cores)\n"
           "  --quiet            no progress lines\n");
}

static int train_cmd(int argc, char **argv, int qat) {
    const char *cmd = qat ? "qat" : "distill";
    static const struct option opts[] = {
        {"teacher", required_argument, 0, 'T'}, {"student", required_argument, 0, 'S'}, {"data", required_argument, 0, 'd'},
        {"eval", required_argument, 0, 'e'},    {"tokens", required_argument, 0, 'n'},  {"ctx", required_argument, 0, 'c'},
        {"batch", required_argument, 0, 'b'},   {"lr", required_argument, 0, 'l'},      {"warmup", required_argument, 0, 'w'},
        {"temp", required_argument, 0, 't'},    {"alpha", required_argument, 0, 'a'},   {"kl", required_argument, 0, 'k'},
        {"topk", required_argument, 0, 'K'},    {"eval-every", required_argument, 0, 'E'}, {"seed", required_argument, 0, 's'},
        {"eval-tokens", required_argument, 0, 'V'},
        {"format", required_argument, 0, 'f'},  {"force", no_argument, 0, 'F'},         {"report", required_argument, 0, 'r'},
        {"threads", required_argument, 0, 'j'}, {"quiet", no_argument, 0, 'q'},         {"help", no_argument, 0, 'h'},
        {"bits", required_argument, 0, 'B'},    {"group", required_argument, 0, 'G'},   {"sym", no_argument, 0, 'Y'},
        {"freeze", required_argument, 0, 'z'},  {"train", required_argument, 0, 'x'},   {"checkpoint", required_argument, 0, 'C'},
        {"checkpoint-every", required_argument, 0, 'P'}, {"resume", required_argument, 0, 'R'},
        {"fp8", no_argument, 0, '8'},           {"recompute", no_argument, 0, 'X'},           {"report-dir", required_argument, 0, 'D'}, {"init", required_argument, 0, 'I'}, {"calib-samples", required_argument, 0, 'N'},
        {0, 0, 0, 0}};
    /* options of the pass, by their schema names, in the order getopt sees them */
    const char *keys[128] = {0}, *vals[128] = {0};
    int nk = 0;
    const char *teacher = NULL, *student = NULL, *out = NULL, *format = "hf", *report = NULL, *report_dir = NULL, *init = "rtn";
    const char *bits = "4", *group = "128", *sym = "false", *data = NULL, *calib_samples = "128";
    long long threads = 0;
    int force = 0, quiet = 0, fp8 = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "ho:", opts, NULL)) != -1) {
        const char *key = NULL;
        switch (c) {
        case 'T': teacher = optarg, key = "teacher"; break;
        case 'S': student = optarg; break;
        case 'B': key = "bits", bits = optarg; break;
        case 'G': key = "group_size", group = optarg; break;
        case 'Y': key = "sym", sym = optarg = "true"; break;
        case 'd': key = "data", data = optarg; break;
        case '8': key = "dtype", optarg = "fp8", fp8 = 1; break;
        case 'X': key = "recompute", optarg = "true"; break;
        case 'z': key = "freeze"; break;
        case 'x': key = "train"; break;
        case 'C': key = "checkpoint"; break;
        case 'P': key = "checkpoint_every"; break;
        case 'R': key = "resume"; break;
        case 'D': report_dir = optarg; break;
        case 'I': init = optarg; break;
        case 'N': calib_samples = optarg; break;
        case 'e': key = "eval"; break;
        case 'n': key = "tokens"; break;
        case 'c': key = "ctx"; break;
        case 'b': key = "batch"; break;
        case 'l': key = "lr"; break;
        case 'w': key = "warmup"; break;
        case 't': key = "temp"; break;
        case 'a': key = "alpha"; break;
        case 'k': key = "kl"; break;
        case 'K': key = "topk"; break;
        case 'E': key = "eval_every"; break;
        case 'V': key = "eval_tokens"; break;
        case 's': key = "seed"; break;
        case 'o': out = optarg; break;
        case 'f': format = optarg; break;
        case 'F': force = 1; break;
        case 'r': report = optarg; break;
        case 'q': quiet = 1; break;
        case 'j':
            if (!cli_parse_threads(optarg, &threads)) return cli_usage_error(cmd, "--threads expects a positive integer, got '%s'", optarg);
            break;
        case 'h': help(qat); return EXIT_OK;
        default: return cli_bad_option(cmd, argv, "ho:", opts);
        }
        if (!qat && ((key && (!strcmp(key, "bits") || !strcmp(key, "group_size") || !strcmp(key, "sym"))) || c == 'I' || c == 'N' || c == '8'))
            return cli_usage_error(cmd, "--bits, --group, --sym, --fp8, --init and --calib-samples are options of mopt qat");
        if (key && nk < 128) keys[nk] = key, vals[nk++] = optarg;
    }
    if (qat) {
        if (student) return cli_usage_error(cmd, "--student is an option of mopt distill; give MODEL");
        if (optind != argc - 1) return cli_usage_error(cmd, "expected exactly one MODEL");
        student = argv[optind];
    } else {
        if (optind != argc) return cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
        if (!teacher || !student) return cli_usage_error(cmd, "--teacher and --student are required");
    }
    if (force && !out) return cli_usage_error(cmd, "--force goes with -o OUT");
    const char *init_pass = !strcmp(init, "awq") ? "quant.awq" : !strcmp(init, "gptq") ? "quant.gptq" : NULL;
    if (!init_pass && strcmp(init, "rtn")) return cli_usage_error(cmd, "--init expects rtn, awq or gptq, got '%s'", init);
    if (init_pass && !data) return cli_usage_error(cmd, "--init %s calibrates on --data TRAIN", init);
    if (init_pass && fp8) return cli_usage_error(cmd, "--init %s starts from int weights, not --fp8", init);
    cli_job j;
    int rc = cli_job_open(&j, quiet, threads);
    if (rc) return rc;
    mopt_options *xo = mopt_options_new();
    for (int i = 0; i < nk && !rc; i++)
        if (cli_job_set(&j, keys[i], vals[i])) rc = cli_fail(&j.err);
    if (!rc && init_pass) { /* the PTQ pass whose result QAT starts from, in the same format */
        mopt_options *io = mopt_options_new();
        if (!io || mopt_options_set(io, "bits", bits, &j.err) || mopt_options_set(io, "group_size", group, &j.err) ||
            mopt_options_set(io, "sym", sym, &j.err) || mopt_options_set(io, "calib", data, &j.err) ||
            mopt_options_set(io, "calib_samples", calib_samples, &j.err) || mopt_pipeline_add(j.p, init_pass, io, &j.err))
            rc = cli_fail(&j.err);
        mopt_options_free(io);
    }
    if (!rc && mopt_pipeline_add(j.p, qat ? "quant.qat" : "distill.logits", j.o, &j.err)) rc = cli_fail(&j.err);
    if (!rc && out) {
        const char *xp = cli_export_pass(format, xo, &j.err);
        if (!xp || mopt_options_set(xo, "out", out, &j.err) || (force && mopt_options_set(xo, "force", "true", &j.err)) ||
            mopt_pipeline_add(j.p, xp, xo, &j.err))
            rc = cli_fail(&j.err);
    }
    if (!rc) rc = cli_job_run(&j, NULL, student, NULL);
    const mopt_report *rep = j.rep;
    if (!rc) {
        const double before = mopt_report_get_metric(rep, "val_loss_before"), best = mopt_report_get_metric(rep, "val_loss_best");
        if (qat)
            printf("%s %s: %.3f bits/weight, %.0f tokens in %.1f s (%.0f tokens/s)", teacher ? "QAD of" : "QAT of", student,
                   mopt_report_get_metric(rep, "bits_per_weight"), mopt_report_get_metric(rep, "tokens_trained"),
                   mopt_report_get_metric(rep, "seconds"), mopt_report_get_metric(rep, "tokens_per_second"));
        else
            printf("distilled %s from %s: %.0f tokens in %.1f s (%.0f tokens/s)", student, teacher,
                   mopt_report_get_metric(rep, "tokens_trained"), mopt_report_get_metric(rep, "seconds"),
                   mopt_report_get_metric(rep, "tokens_per_second"));
        if (!isnan(best)) printf("; validation loss %.4f -> %.4f (ppl %.2f -> %.2f)", before, best, exp(before), exp(best));
        printf("%s%s\n", out ? "; saved to " : "", out ? out : "");
    }
    if (report_dir && j.rep && mopt_report_write(j.rep, report_dir, qat ? "mopt qat" : "mopt distill", &j.err) && !rc) rc = cli_fail(&j.err);
    rc = cli_job_write_report(&j, report, rc);
    mopt_options_free(xo);
    cli_job_close(&j);
    return rc;
}

int cmd_distill(int argc, char **argv) { return train_cmd(argc, argv, 0); }
int cmd_qat(int argc, char **argv) { return train_cmd(argc, argv, 1); }
