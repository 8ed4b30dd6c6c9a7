/* mopt prune MODEL --method magnitude|wanda|sparsegpt (--sparsity S | --pattern N:M) [--calib FILE]
 *                  [--eval FILE] [-o OUT] ...
 * mopt prune MODEL --method minitron (--params P | --hidden H --ffn F --heads N --kv-heads K --layers L)
 *                  --calib FILE [--eval FILE] [-o OUT] ...
 * A thin layer over the prune passes, then (with --eval) eval.perplexity and
 * (with -o) an export pass. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void help(void) {
    printf("usage: mopt prune MODEL --method magnitude|wanda|sparsegpt [--sparsity S | --pattern N:M] [--calib FILE]\n"
           "                  [--eval FILE] [-o OUT] [options]\n"
           "       mopt prune MODEL --method minitron (--params P | --hidden H --ffn F --heads N --kv-heads K --layers L)\n"
           "                  --calib FILE [--eval FILE] [-o OUT] [options]\n\n"
           "Sets weights of the decoder linears to zero (prune.magnitude, prune.wanda, prune.sparsegpt), or makes\n"
           "the model smaller (prune.minitron; recover it with mopt distill, or scripts/minitron.lua does both):\n"
           "  --method M         magnitude (smallest |W|), wanda (|W| x input norm per row, calibrated),\n"
           "                     sparsegpt (inverse-Hessian pruning with weight updates, calibrated) or\n"
           "                     minitron (structured: channels, neurons, heads, blocks by activation importance)\n"
           "  --sparsity S       unstructured: the fraction of each linear set to zero, in (0, 1) (default 0.5)\n"
           "  --pattern N:M      semi-structured: at most N non-zeros in every M consecutive inputs (2:4, 4:8)\n"
           "  --pack             2:4: store the pruned linears packed (kept values + 2-bit positions, 0.5625x the\n"
           "                     bytes of bf16) and run them with the 2:4 kernels\n"
           "  --values V         with --pack: float (the weights' dtype, default), int8 (a scale per row and int8\n"
           "                     activations per token: W8A8 2:4, as vLLM runs it) or int4 (symmetric, an f16 scale\n"
           "                     per 128 inputs: W4A16 2:4, exported as marlin-24); sparsegpt rounds in its sweep\n"
           "  --bits B           sparsegpt: also quantize the kept weights in the same sweep to B bits (2, 3, 4, 8),\n"
           "                     stored packed as quant.gptq's; --group-size G (default 128, -1: a row) and --sym\n"
           "                     set the grid (with --pack use --values int8 or int4 instead)\n"
           "  --params P         minitron: a budget, the fraction of the parameters to keep; searches the shape\n"
           "  --hidden H, --ffn F, --heads N, --kv-heads K, --layers L\n"
           "                     minitron: the shape to cut to (each defaults to the model's)\n"
           "  --depth D          minitron: rank blocks by cosine (1 - cos of input and output, default) or by loss\n"
           "                     (the calibration loss rise when a block alone is removed)\n"
           "  --calib FILE       calibration text for wanda, sparsegpt and minitron (never the eval text)\n"
           "  --calib-samples N  calibration windows (default 128) of --calib-len tokens (default 512)\n"
           "  --exclude GLOBS    linears to keep dense\n"
           "  --eval FILE        perplexity of the pruned model on FILE (ctx 256)\n"
           "  -o OUT             save it (atomically); --format F as mopt export (default hf); --force replaces OUT\n"
           "  --report R.json    the report: sparsity per linear, min/max/mean, ppl; for minitron the parameters\n"
           "                     before/after and the kept indices (layers, channels, neurons, heads)\n"
           "  --threads N        worker threads (default: all cores)\n"
           "  --quiet            no progress lines\n");
}

int cmd_prune(int argc, char **argv) {
    static const struct option opts[] = {
        {"method", required_argument, 0, 'm'},  {"sparsity", required_argument, 0, 's'}, {"pattern", required_argument, 0, 'p'},
        {"calib", required_argument, 0, 'c'},   {"calib-samples", required_argument, 0, 'n'}, {"calib-len", required_argument, 0, 'L'},
        {"exclude", required_argument, 0, 'x'}, {"eval", required_argument, 0, 'e'},     {"format", required_argument, 0, 'f'},
        {"force", no_argument, 0, 'F'},         {"report", required_argument, 0, 'r'},   {"threads", required_argument, 0, 'j'},
        {"quiet", no_argument, 0, 'q'},         {"help", no_argument, 0, 'h'},           {"params", required_argument, 0, 'P'},
        {"hidden", required_argument, 0, 'H'},  {"ffn", required_argument, 0, 'I'},      {"heads", required_argument, 0, 'N'},
        {"kv-heads", required_argument, 0, 'K'}, {"layers", required_argument, 0, 'Y'},  {"pack", no_argument, 0, 'k'},
        {"values", required_argument, 0, 'V'}, {"depth", required_argument, 0, 'D'},    {"bits", required_argument, 0, 'b'},
        {"group-size", required_argument, 0, 'g'}, {"sym", no_argument, 0, 'S'},         {0, 0, 0, 0}};
    const char *keys[24] = {0}, *vals[24] = {0};
    int nk = 0;
    const char *method = NULL, *eval = NULL, *out = NULL, *format = "hf", *report = NULL, *calib = NULL, *pattern = "unstructured";
    long long threads = 0;
    int force = 0, quiet = 0, c, sparsity_opts = 0, shape_opts = 0, quant_opts = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "ho:", opts, NULL)) != -1) {
        const char *key = NULL, *val = optarg;
        switch (c) {
        case 'm': method = optarg; break;
        case 's': key = "sparsity", sparsity_opts++; break;
        case 'p': key = "pattern", pattern = optarg, sparsity_opts++; break;
        case 'x': key = "exclude", sparsity_opts++; break;
        case 'k': key = "pack", val = "true", sparsity_opts++; break;
        case 'V': key = "values", sparsity_opts++; break;
        case 'b': key = "bits", sparsity_opts++, quant_opts++; break;
        case 'g': key = "group_size", sparsity_opts++, quant_opts++; break;
        case 'S': key = "sym", val = "true", sparsity_opts++, quant_opts++; break;
        case 'P': key = "params", shape_opts++; break;
        case 'H': key = "hidden", shape_opts++; break;
        case 'I': key = "ffn", shape_opts++; break;
        case 'N': key = "heads", shape_opts++; break;
        case 'K': key = "kv_heads", shape_opts++; break;
        case 'Y': key = "layers", shape_opts++; break;
        case 'D': key = "depth", shape_opts++; break;
        case 'c': key = "calib", calib = optarg; break;
        case 'n': key = "calib_samples"; break;
        case 'L': key = "calib_len"; break;
        case 'e': eval = optarg; break;
        case 'o': out = optarg; break;
        case 'f': format = optarg; break;
        case 'F': force = 1; break;
        case 'r': report = optarg; break;
        case 'q': quiet = 1; break;
        case 'j':
            if (!cli_parse_threads(optarg, &threads)) return cli_usage_error("prune", "--threads expects a positive integer, got '%s'", optarg);
            break;
        case 'h': help(); return EXIT_OK;
        default: return cli_bad_option("prune", argv, "ho:", opts);
        }
        if (key && nk < 24) keys[nk] = key, vals[nk++] = val;
    }
    if (optind != argc - 1) return cli_usage_error("prune", "expected exactly one MODEL");
    if (!method) return cli_usage_error("prune", "--method is required (magnitude, wanda, sparsegpt or minitron)");
    char pass[64];
    if (strcmp(method, "magnitude") && strcmp(method, "wanda") && strcmp(method, "sparsegpt") && strcmp(method, "minitron"))
        return cli_usage_error("prune", "--method expects magnitude, wanda, sparsegpt or minitron, got '%s'", method);
    const int minitron = !strcmp(method, "minitron");
    if (minitron && sparsity_opts)
        return cli_usage_error("prune", "--sparsity, --pattern, --exclude, --pack, --values, --bits, --group-size and --sym are for the sparsity "
                                        "methods, not minitron");
    if (quant_opts && strcmp(method, "sparsegpt"))
        return cli_usage_error("prune", "--bits, --group-size and --sym quantize inside SparseGPT's sweep: use --method sparsegpt, or "
                                        "mopt quantize after pruning");
    if (!minitron && shape_opts)
        return cli_usage_error("prune", "--params, --hidden, --ffn, --heads, --kv-heads, --layers and --depth are for --method minitron");
    snprintf(pass, sizeof pass, "prune.%s", method);
    if (strcmp(method, "magnitude") && !calib) return cli_usage_error("prune", "--method %s calibrates: give --calib FILE", method);
    if (!strcmp(method, "magnitude") && calib) return cli_usage_error("prune", "--method magnitude does not calibrate: drop --calib");
    if (force && !out) return cli_usage_error("prune", "--force goes with -o OUT");
    cli_job j;
    int rc = cli_job_open(&j, quiet, threads);
    if (rc) return rc;
    mopt_options *eo = mopt_options_new(), *xo = mopt_options_new();
    for (int i = 0; i < nk && !rc; i++)
        if (cli_job_set(&j, keys[i], vals[i])) rc = cli_fail(&j.err);
    if (!rc && mopt_pipeline_add(j.p, pass, j.o, &j.err)) rc = cli_fail(&j.err);
    if (!rc && eval && (mopt_options_set(eo, "data", eval, &j.err) || mopt_pipeline_add(j.p, "eval.perplexity", eo, &j.err)))
        rc = cli_fail(&j.err);
    if (!rc && out) {
        const char *xp = cli_export_pass(format, xo, &j.err);
        if (!xp || mopt_options_set(xo, "out", out, &j.err) || (force && mopt_options_set(xo, "force", "true", &j.err)) ||
            mopt_pipeline_add(j.p, xp, xo, &j.err))
            rc = cli_fail(&j.err);
    }
    if (!rc) rc = cli_job_run(&j, NULL, argv[optind], NULL);
    if (!rc && minitron) {
        const mopt_report *rep = j.rep;
        printf("pruned %s with minitron: %.0f -> %.0f parameters (%.1f%%): hidden %.0f, ffn %.0f, heads %.0f in %.0f groups, layers %.0f",
               argv[optind], mopt_report_get_metric(rep, "params_before"), mopt_report_get_metric(rep, "params_after"),
               100 * mopt_report_get_metric(rep, "params_ratio"), mopt_report_get_metric(rep, "hidden"), mopt_report_get_metric(rep, "ffn"),
               mopt_report_get_metric(rep, "heads"), mopt_report_get_metric(rep, "kv_heads"), mopt_report_get_metric(rep, "layers"));
        if (eval) printf("; ppl %.4f", mopt_report_get_metric(rep, "ppl"));
        printf("%s%s\n", out ? "; saved to " : "", out ? out : "");
    } else if (!rc) {
        const mopt_report *rep = j.rep;
        printf("pruned %s with %s (%s): sparsity %.4f (per linear %.4f..%.4f)", argv[optind], method,
               pattern,
               mopt_report_get_metric(rep, "sparsity"), mopt_report_get_metric(rep, "sparsity_min"),
               mopt_report_get_metric(rep, "sparsity_max"));
        if (eval) printf("; ppl %.4f", mopt_report_get_metric(rep, "ppl"));
        printf("%s%s\n", out ? "; saved to " : "", out ? out : "");
    }
    rc = cli_job_write_report(&j, report, rc);
    mopt_options_free(eo);
    mopt_options_free(xo);
    cli_job_close(&j);
    return rc;
}
