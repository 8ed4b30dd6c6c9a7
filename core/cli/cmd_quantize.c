/* mopt quantize MODEL --method rtn|awq|gptq|smoothquant|fp8|nvfp4|mxfp4|mxfp8 [...]
 * A thin layer over the quant.* passes: quantize, then (with --eval) the
 * perplexity of the quantized model and of the original, loaded afresh. The
 * quantization runs first so a bad option or calibration file fails before
 * any other work. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void help(void) {
    printf("usage: mopt quantize MODEL --method rtn|awq|gptq|smoothquant|fp8|nvfp4|mxfp4|mxfp8 [options]\n"
           "       mopt quantize MODEL --recipe RECIPE.json [options]\n"
           "       mopt quantize MODEL --method auto --calib FILE [--bits-budget 4.5] [--candidates int4_awq,int8,fp8]\n"
           "       mopt quantize MODEL [--method M] --kv-cache fp8|int8 --calib FILE\n\n"
           "Quantizes MODEL's decoder linears into packed storage (lm_head and embeddings are kept\n"
           "unless --lm-head / --embeddings ask for them)\n"
           "and reports size and, with --eval, perplexity against the original.\n"
           "  --method M          rtn, awq, gptq, smoothquant (W8A8), fp8 (E4M3), or the block-scaled floats\n"
           "                      nvfp4 (E2M1, E4M3 scale per 16), mxfp4 (E2M1) and mxfp8 (E4M3, E8M0 scale per 32)\n"
           "  --method auto       auto_quantize (quant.auto): the format per linear that loses least (KL on the\n"
           "                      calibration windows) within --bits-budget B bits per weight (default 4.5),\n"
           "                      among --candidates (int4_awq, int4, int8, fp8, nvfp4, mxfp4, mxfp8, keep;\n"
           "                      default int4_awq,int8,fp8), then quantized with that plan\n"
           "  --recipe FILE       per-layer formats: a JSON object from name globs (and \"default\") to a quant\n"
           "                      pass or \"keep\", e.g. {\"default\": \"quant.rtn<bits=4;sym=true>\",\n"
           "                      \"*down*\": \"quant.fp8\", \"layers.0.*\": \"keep\"}; each linear takes the last\n"
           "                      glob that matches it (node names like layers.3.down, or weight names)\n"
           "  --bits B            weight bits for rtn/awq/gptq: 2, 3, 4 or 8 (default 4)\n"
           "  --group G           columns per scale group: 32, 64, 128, ... or -1 (default 128)\n"
           "  --sym               symmetric grid, no zero-points\n"
           "  --act-order         gptq: quantize columns by decreasing Hessian diagonal (g_idx)\n"
           "  --keep-mb MB        gptq: memory for the calibration activations kept between a block's groups,\n"
           "                      so each group's inputs come from the rest of the block alone (default\n"
           "                      4096; 0 runs the block from its start for every group: slower, same result)\n"
           "  --judge J           awq: each scale candidate judged by the module it feeds (module, the default:\n"
           "                      attention for q/k/v, the MLP for gate/up, as AutoAWQ) or by the scaled\n"
           "                      linears' own outputs (linear: ModelOpt's awq_lite, several times faster)\n"
           "  --search-samples N  awq: calibration windows that judge the scales and clipping, the first N of\n"
           "                      --calib-samples (default 64, as llm-awq; only these go through the model)\n"
           "  --alpha A           smoothquant migration strength (default 0.5)\n"
           "  --act MODE          fp8, nvfp4, mxfp4, mxfp8 activations: rounded per token (dynamic, the\n"
           "                      default), with a calibrated scale (static: fp8, nvfp4) or kept (none);\n"
           "                      rtn/awq/gptq: none, fp8 (W4A8 per token) or fp8_static (awq/gptq: ModelOpt's\n"
           "                      W4A8_AWQ, a calibrated input scale and the int4 values widened to FP8)\n"
           "  --kv-cache F        also store the KV cache as fp8 (E4M3) or int8 with K and V scales calibrated\n"
           "                      per layer (quant.kv; needs --calib); exported as ModelOpt k_scale/v_scale,\n"
           "                      compressed-tensors kv_cache_scheme or TensorRT-LLM kv_cache_scaling_factor\n"
           "  --calib FILE        calibration text (awq, gptq, smoothquant, fp8 and nvfp4 static, --kv-cache)\n"
           "  --calib-samples N   calibration windows (default 128; awq reads the first --search-samples)\n"
           "  --calib-len L       tokens per window (default 512)\n"
           "  --exclude GLOB      keep matching linears (node or tensor names); repeatable\n"
           "  --lm-head           quantize lm_head too (rtn, fp8, nvfp4, mxfp4, mxfp8; an untied one)\n"
           "  --embeddings        rtn: quantize the token embedding table too (an untied one; GGUF keeps it\n"
           "                      packed, the Hugging Face and TensorRT-LLM formats write it dequantized)\n"
           "  --eval FILE         perplexity of the quantized and the original model (ctx 256)\n"
           "  --report OUT.json   write the report\n"
           "  --threads N         worker threads (default: all cores)\n"
           "  --device D          cpu (default), cuda or cuda:N: --eval's linears on that GPU\n"
           "  --quiet             no progress lines\n"
           "  -o OUTDIR           save the quantized checkpoint there (atomically)\n"
           "  --format F          its format: " CLI_EXPORT_FORMATS " (default hf:\n"
           "                      compressed-tensors, which vLLM and SGLang load)\n"
           "  --type T            --format gguf: ggml type of the weights (f16, q8_0, q4_0, q4_k, ...);\n"
           "                      rtn --bits 4|8 --group 32 --sym is written as q4_0|q8_0 bit for bit;\n"
           "                      gptq quantizes onto the blocks of T (q4_0, q8_0, k-quants, q4_k_m ...)\n"
           "  --force             replace an existing OUTDIR\n"
           "  --stream            hold about one block in memory: each packed weight goes to a scratch\n"
           "                      file beside OUTDIR as it is made (removed at exit), the original's\n"
           "                      pages are let go, and the export writes tensor by tensor\n");
}

typedef struct {
    const char *method, *calib, *eval, *report_path, *fp8_act, *out, *format, *gguf_type, *recipe, *candidates, *kv_cache, *judge;
    char budget[32];
    char bits[16], group[16], alpha[32], samples[16], len[16], keep_mb[24], search[16];
    int sym, act_order, quiet, have_bits, have_group, have_alpha, force, stream, lm_head, embeddings;
    long long threads;
    char exclude[1024];
} qargs;

static int parse(int argc, char **argv, qargs *a) {
    static const struct option opts[] = {
        {"method", required_argument, 0, 'm'},        {"bits", required_argument, 0, 'b'},
        {"group", required_argument, 0, 'g'},         {"sym", no_argument, 0, 's'},
        {"act-order", no_argument, 0, 'A'},           {"alpha", required_argument, 0, 'a'},
        {"fp8-act", required_argument, 0, 'F'},       {"act", required_argument, 0, 'F'},
        {"calib", required_argument, 0, 'c'},
        {"calib-samples", required_argument, 0, 'N'}, {"calib-len", required_argument, 0, 'L'},
        {"exclude", required_argument, 0, 'x'},       {"eval", required_argument, 0, 'e'},
        {"report", required_argument, 0, 'r'},        {"threads", required_argument, 0, 'T'}, {"device", required_argument, 0, CLI_OPT_DEVICE},
        {"quiet", no_argument, 0, 'q'},               {"help", no_argument, 0, 'h'},
        {"format", required_argument, 0, 'f'},        {"force", no_argument, 0, 'O'},
        {"type", required_argument, 0, 'y'},         {"stream", no_argument, 0, 'S'},
        {"recipe", required_argument, 0, 'R'},        {"bits-budget", required_argument, 0, 'B'},
        {"candidates", required_argument, 0, 'C'},    {"kv-cache", required_argument, 0, 'K'},
        {"lm-head", no_argument, 0, 'H'},             {"embeddings", no_argument, 0, 'E'},
        {"keep-mb", required_argument, 0, 'k'},       {"judge", required_argument, 0, 'J'},
        {"search-samples", required_argument, 0, 'W'}, {0, 0, 0, 0}};
    long long v;
    double f;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "ho:", opts, NULL)) != -1) {
        switch (c) {
        case 'm': a->method = optarg; break;
        case 'b':
            if (!cli_parse_int(optarg, 1, 64, &v)) return cli_usage_error("quantize", "--bits expects an integer, got '%s'", optarg);
            snprintf(a->bits, sizeof a->bits, "%lld", v), a->have_bits = 1;
            break;
        case 'g':
            if (!cli_parse_int(optarg, -1, 1 << 20, &v)) return cli_usage_error("quantize", "--group expects an integer, got '%s'", optarg);
            snprintf(a->group, sizeof a->group, "%lld", v), a->have_group = 1;
            break;
        case 's': a->sym = 1; break;
        case 'A': a->act_order = 1; break;
        case 'a':
            if (!cli_parse_float(optarg, 0, 1, &f)) return cli_usage_error("quantize", "--alpha expects a number in [0, 1], got '%s'", optarg);
            snprintf(a->alpha, sizeof a->alpha, "%.17g", f), a->have_alpha = 1;
            break;
        case 'F': a->fp8_act = optarg; break;
        case 'R': a->recipe = optarg; break;
        case 'C': a->candidates = optarg; break;
        case 'K': a->kv_cache = optarg; break;
        case 'H': a->lm_head = 1; break;
        case 'E': a->embeddings = 1; break;
        case 'B':
            if (!cli_parse_float(optarg, 1, 16, &f)) return cli_usage_error("quantize", "--bits-budget expects a number in [1, 16], got '%s'", optarg);
            snprintf(a->budget, sizeof a->budget, "%.17g", f);
            break;
        case 'c': a->calib = optarg; break;
        case 'J': a->judge = optarg; break;
        case 'W':
            if (!cli_parse_int(optarg, 1, 4096, &v)) return cli_usage_error("quantize", "--search-samples expects 1..4096, got '%s'", optarg);
            snprintf(a->search, sizeof a->search, "%lld", v);
            break;
        case 'k':
            if (!cli_parse_int(optarg, 0, 1 << 20, &v)) return cli_usage_error("quantize", "--keep-mb expects 0..1048576 (MB), got '%s'", optarg);
            snprintf(a->keep_mb, sizeof a->keep_mb, "%lld", v);
            break;
        case 'N':
            if (!cli_parse_int(optarg, 1, 4096, &v)) return cli_usage_error("quantize", "--calib-samples expects 1..4096, got '%s'", optarg);
            snprintf(a->samples, sizeof a->samples, "%lld", v);
            break;
        case 'L':
            if (!cli_parse_int(optarg, 2, 1 << 16, &v)) return cli_usage_error("quantize", "--calib-len expects an integer >= 2, got '%s'", optarg);
            snprintf(a->len, sizeof a->len, "%lld", v);
            break;
        case 'x':
            if (strlen(a->exclude) + strlen(optarg) + 2 > sizeof a->exclude) return cli_usage_error("quantize", "too many --exclude globs");
            if (a->exclude[0]) strcat(a->exclude, ",");
            strcat(a->exclude, optarg);
            break;
        case 'e': a->eval = optarg; break;
        case 'r': a->report_path = optarg; break;
        case CLI_OPT_DEVICE: cli_set_device(optarg); break;
        case 'T':
            if (!cli_parse_threads(optarg, &a->threads)) return cli_usage_error("quantize", "--threads expects a positive integer, got '%s'", optarg);
            break;
        case 'q': a->quiet = 1; break;
        case 'o': a->out = optarg; break;
        case 'f': a->format = optarg; break;
        case 'y': a->gguf_type = optarg; break;
        case 'O': a->force = 1; break;
        case 'S': a->stream = 1; break;
        case 'h': help(); return -1;
        default: return cli_bad_option("quantize", argv, "ho:", opts);
        }
    }
    if (optind != argc - 1) return cli_usage_error("quantize", "expected exactly one MODEL");
    if (a->recipe && (a->method || a->have_bits || a->have_group || a->sym || a->act_order || a->have_alpha || a->fp8_act ||
                      (!a->kv_cache && (a->calib || a->samples[0] || a->len[0])) || a->exclude[0]))
        return cli_usage_error("quantize", "--recipe names every pass and its options itself; drop --method and the method's flags");
    if (a->embeddings && (!a->method || strcmp(a->method, "rtn")))
        return cli_usage_error("quantize", "--embeddings goes with --method rtn (a looked-up table gains nothing from calibration)");
    if (a->keep_mb[0] && (!a->method || strcmp(a->method, "gptq")))
        return cli_usage_error("quantize", "--keep-mb goes with --method gptq");
    if (a->judge && (!a->method || strcmp(a->method, "awq")))
        return cli_usage_error("quantize", "--judge goes with --method awq");
    if (a->search[0] && (!a->method || strcmp(a->method, "awq")))
        return cli_usage_error("quantize", "--search-samples goes with --method awq");
    if ((a->budget[0] || a->candidates) && (!a->method || strcmp(a->method, "auto")))
        return cli_usage_error("quantize", "--bits-budget and --candidates go with --method auto");
    if (!a->method && !a->recipe && !a->kv_cache)
        return cli_usage_error("quantize", "--method is required (rtn, awq, gptq, smoothquant, fp8, nvfp4, mxfp4, mxfp8), or --recipe or --kv-cache");
    if (a->kv_cache && !a->calib)
        return cli_usage_error("quantize", "--kv-cache calibrates the K and V scales: give --calib FILE (text, never the eval text)");
    /* said here in the command's own words; the passes would name their option (calib=FILE) instead */
    static const char *const calibrated[] = {"awq", "gptq", "smoothquant", "auto"};
    for (size_t k = 0; a->method && !a->calib && k < sizeof calibrated / sizeof *calibrated; k++)
        if (!strcmp(a->method, calibrated[k]))
            return cli_usage_error("quantize", "--method %s calibrates: give --calib FILE (text, never the eval text)", a->method);
    if (a->fp8_act && strstr(a->fp8_act, "static") && !a->calib)
        return cli_usage_error("quantize", "--act %s calibrates the activations' scale: give --calib FILE (text, never the eval text)",
                               strcmp(a->fp8_act, "fp8_static") ? "static" : "fp8_static");
    if ((a->format || a->force || a->gguf_type || a->stream) && !a->out)
        return cli_usage_error("quantize", "--format, --type, --force and --stream go with -o OUTDIR");
    return 0;
}

/* Sets key=value on o when value is non-empty. */
static int set(mopt_options *o, const char *k, const char *v, mopt_error *err) {
    return v && *v ? mopt_options_set(o, k, v, err) : MOPT_OK;
}

/* The --method pass with the flags mapped onto its options; the pass's schema rejects what the method does not take. */
static int add_method(qargs *a, mopt_registry *r, mopt_pipeline *p, mopt_options *qo, const char *pass, mopt_error *err) {
    const mopt_pass_desc *qd = mopt_registry_find(r, pass);
    if (!qd) return cli_usage_error("quantize", "unknown --method '%s' (rtn, awq, gptq, smoothquant, fp8, nvfp4, mxfp4, mxfp8)", a->method);
    const int is_int = !strcmp(a->method, "rtn") || !strcmp(a->method, "awq") || !strcmp(a->method, "gptq");
    if (!is_int && (a->have_bits || a->have_group || a->sym))
        return cli_usage_error("quantize", "--bits/--group/--sym apply to rtn, awq and gptq; %s has a fixed format", a->method);
    /* a method that does not calibrate ignores the calibration flags (--kv-cache still takes them), with a note (not an error) */
    int calibrates = 0;
    for (uint32_t k = 0; k < qd->n_opts; k++) calibrates |= !strcmp(qd->opts[k].name, "calib");
    if (!calibrates && !a->kv_cache && (a->calib || a->samples[0] || a->len[0]) && !a->quiet)
        fprintf(stderr, "mopt: note: --method %s needs no calibration; --calib/--calib-samples/--calib-len are ignored\n", a->method);
    if (set(qo, "bits", a->bits, err) || set(qo, "group_size", a->group, err) || (a->sym && set(qo, "sym", "true", err)) ||
        (a->act_order && set(qo, "act_order", "true", err)) || set(qo, "alpha", a->alpha, err) ||
        set(qo, "activations", a->fp8_act, err) || (calibrates && set(qo, "calib", a->calib, err)) ||
        (calibrates && set(qo, "calib_samples", a->samples, err)) || (calibrates && set(qo, "calib_len", a->len, err)) ||
        set(qo, "exclude", a->exclude, err) || (a->lm_head && set(qo, "lm_head", "true", err)) ||
        (a->embeddings && set(qo, "embeddings", "true", err)) || set(qo, "keep_mb", a->keep_mb, err) ||
        set(qo, "judge", a->judge, err) || set(qo, "search_samples", a->search, err) ||
        /* GPTQ into a GGUF file: onto the blocks of the type asked for (quant.gptq gguf_type) */
        (!strcmp(a->method, "gptq") && a->format && !strcmp(a->format, "gguf") && set(qo, "gguf_type", a->gguf_type, err)) ||
        mopt_pipeline_add(p, pass, qo, err))
        return cli_fail(err);
    return 0;
}

/* --method auto: quant.auto plans on a model of its own (loaded afresh; weights are mapped), then its recipe joins
 * the pipeline. */
static int add_auto(qargs *a, cli_job *j, const char *model, mopt_error *err) {
    if (a->have_bits || a->sym || a->act_order || a->have_alpha || a->fp8_act)
        return cli_usage_error("quantize", "--method auto picks the formats itself; drop --bits/--sym/--act-order/--alpha/--act "
                                           "(--group sets the int4 candidates' group size)");
    mopt_model *m = mopt_model_load(model, NULL, err);
    mopt_pipeline *pa = mopt_pipeline_new(j->r);
    mopt_options *ao = mopt_options_new();
    mopt_report *rep = mopt_report_new();
    int rc = 0;
    if (!m || !pa || !ao || !rep || set(ao, "bits_budget", a->budget, err) || set(ao, "candidates", a->candidates, err) ||
        set(ao, "group_size", a->group, err) || set(ao, "calib", a->calib, err) || set(ao, "calib_samples", a->samples, err) ||
        set(ao, "calib_len", a->len, err) || set(ao, "exclude", a->exclude, err) || mopt_pipeline_add(pa, "quant.auto", ao, err) ||
        mopt_pipeline_run(pa, m, &j->ro, rep, err)) {
        rc = cli_fail(err);
    } else {
        char *text = mopt_report_json(rep);
        json_t *full = text ? json_loads(text, 0, NULL) : NULL;
        free(text);
        json_t *st = json_object_get(json_array_get(json_object_get(full, "passes"), 0), "strings");
        const char *recipe = json_string_value(json_object_get(st, "recipe")), *plan = json_string_value(json_object_get(st, "plan"));
        printf("quant.auto: %.3f bits/weight planned (budget %s): %s\n", mopt_report_get_metric(rep, "planned_bits_per_weight"),
               a->budget[0] ? a->budget : "4.5", plan ? plan : "?");
        if (!recipe || mopt_pipeline_add_recipe(j->p, recipe, "quant.auto", err)) rc = cli_fail(err);
        json_decref(full);
    }
    mopt_report_free(rep);
    mopt_options_free(ao);
    mopt_pipeline_free(pa);
    mopt_model_free(m);
    return rc;
}

/* --kv-cache: quant.kv after the weights' passes, on the same calibration text. */
static int add_kv(const qargs *a, mopt_pipeline *p, mopt_error *err) {
    mopt_options *ko = mopt_options_new();
    int rc = !ko || set(ko, "format", a->kv_cache, err) || set(ko, "calib", a->calib, err) || set(ko, "calib_samples", a->samples, err) ||
             set(ko, "calib_len", a->len, err) || mopt_pipeline_add(p, "quant.kv", ko, err);
    mopt_options_free(ko);
    return rc ? cli_fail(err) : 0;
}

/* The --recipe file's passes (mopt_pipeline_add_recipe). */
static int add_recipe(const char *path, mopt_pipeline *p, mopt_error *err) {
    char *text = NULL;
    size_t len = 0;
    mopt_status st = cli_read_text(path, &text, &len, err);
    if (!st) st = mopt_pipeline_add_recipe(p, text, path, err);
    free(text);
    return st ? cli_fail(err) : 0;
}

int cmd_quantize(int argc, char **argv) {
    qargs a = {0};
    int pr = parse(argc, argv, &a);
    if (pr < 0) return EXIT_OK;
    if (pr) return pr;
    char pass[64];
    snprintf(pass, sizeof pass, "quant.%s", a.method ? a.method : "recipe");
    cli_job j;
    int rc = cli_job_open(&j, a.quiet, a.threads);
    if (rc) return rc;
    mopt_registry *r = j.r;
    mopt_error err = {0};
    mopt_model *base = NULL;
    mopt_report *rep = j.rep, *base_rep = NULL;
    mopt_pipeline *p = j.p, *pb = NULL;
    mopt_options *qo = j.o, *eo = mopt_options_new(), *xo = mopt_options_new();
    if ((rc = a.recipe                    ? add_recipe(a.recipe, p, &err)
              : !a.method                 ? 0
              : !strcmp(a.method, "auto") ? add_auto(&a, &j, argv[optind], &err)
                                          : add_method(&a, r, p, qo, pass, &err)))
        goto done;
    if (a.kv_cache && (rc = add_kv(&a, p, &err))) goto done;
    if (a.out) { /* export before eval: a failed export fails fast */
        const char *xp = cli_export_pass(a.format ? a.format : "hf", xo, &err);
        if (!xp) {
            rc = cli_usage_error("quantize", "%s", err.msg);
            goto done;
        }
        if (mopt_options_set(xo, "out", a.out, &err) || (a.force && mopt_options_set(xo, "force", "true", &err)) ||
            (a.gguf_type && mopt_options_set(xo, "type", a.gguf_type, &err)) ||
            mopt_pipeline_add(p, xp, xo, &err)) {
            rc = cli_fail(&err);
            goto done;
        }
    }
    if (a.eval) {
        if (mopt_options_set(eo, "data", a.eval, &err) || mopt_pipeline_add(p, "eval.perplexity", eo, &err)) {
            rc = cli_fail(&err);
            goto done;
        }
    }
    if (a.stream) cli_job_spill_beside(&j, a.out);
    if ((rc = cli_job_run(&j, NULL, argv[optind], NULL))) goto done;
    double ppl_base = NAN;
    if (a.eval) { /* the original, loaded afresh (weights are mapped, so this is cheap) */
        base_rep = mopt_report_new();
        pb = mopt_pipeline_new(r);
        if (!(base = mopt_model_load(argv[optind], NULL, &err)) || mopt_pipeline_add(pb, "eval.perplexity", eo, &err) ||
            mopt_pipeline_run(pb, base, &j.ro, base_rep, &err)) {
            rc = cli_fail(&err);
            goto done;
        }
        ppl_base = mopt_report_get_metric(base_rep, "ppl");
    }
    /* each quant pass's line (a recipe runs several), then their sum */
    double seconds = 0, wb = 0, wb0 = 0, nw = 0;
    int n_quant = 0;
    char *text = mopt_report_json(rep);
    json_t *full = text ? json_loads(text, 0, NULL) : NULL, *qs;
    free(text);
    size_t qi;
    json_array_foreach(json_object_get(full, "passes"), qi, qs) {
        const char *name = json_string_value(json_object_get(qs, "name"));
        json_t *m = json_object_get(qs, "metrics");
        if (name && !strcmp(name, "quant.kv"))
            printf("quant.kv: %s KV cache, %.0f -> %.0f bytes per token, %.1f s\n",
                   json_string_value(json_object_get(json_object_get(qs, "strings"), "kv_format")),
                   json_number_value(json_object_get(m, "kv_bytes_per_token_baseline")), json_number_value(json_object_get(m, "kv_bytes_per_token")),
                   json_number_value(json_object_get(qs, "seconds")));
        if (!name || strncmp(name, "quant.", 6) || !json_object_get(m, "weight_bytes")) continue;
        const double s = json_number_value(json_object_get(qs, "seconds")), b = json_number_value(json_object_get(m, "weight_bytes"));
        const double b0 = json_number_value(json_object_get(m, "weight_bytes_baseline"));
        const double bpw = json_number_value(json_object_get(m, "bits_per_weight")), bpw0 = json_number_value(json_object_get(m, "bits_per_weight_baseline"));
        printf("%s: %.3f bits/weight, decoder linears %.2f MB -> %.2f MB, %.1f s\n", name, bpw, b0 / 1e6, b / 1e6, s);
        const char *cov = json_string_value(json_object_get(json_object_get(qs, "strings"), "coverage"));
        if (cov) printf("%s: %s\n", name, cov);
        seconds += s, wb += b, wb0 += b0, nw += bpw0 > 0 ? 8 * b0 / bpw0 : 0, n_quant++;
    }
    const double bpw = nw > 0 ? 8 * wb / nw : NAN, ppl = mopt_report_get_metric(rep, "ppl");
    if (n_quant > 1) printf("all %d passes: %.3f bits/weight over the linears they changed, %.2f MB -> %.2f MB, %.1f s\n", n_quant, bpw, wb0 / 1e6, wb / 1e6, seconds);
    if (a.eval) printf("ppl %.4f (baseline %.4f, %+.3f%%)\n", ppl, ppl_base, 100.0 * (ppl / ppl_base - 1));
    if (a.report_path) {
        json_t *j = json_object();
        json_object_set_new(j, "method", json_string(a.method ? a.method : a.recipe ? "recipe" : "kv"));
        json_object_set_new(j, "kv_cache", json_string(a.kv_cache ? a.kv_cache : "float"));
        json_object_set_new(j, "bits", json_integer((json_int_t)mopt_report_get_metric(rep, "bits")));
        json_object_set_new(j, "group_size", json_integer((json_int_t)mopt_report_get_metric(rep, "group_size")));
        json_object_set_new(j, "ppl", isnan(ppl) ? json_null() : json_real(ppl));
        json_object_set_new(j, "ppl_baseline", isnan(ppl_base) ? json_null() : json_real(ppl_base));
        json_object_set_new(j, "weight_bytes", json_integer((json_int_t)wb));
        json_object_set_new(j, "weight_bytes_baseline", json_integer((json_int_t)wb0));
        json_object_set_new(j, "bits_per_weight", json_real(bpw));
        json_object_set_new(j, "seconds", json_real(seconds));
        json_object_set_new(j, "peak_rss_bytes", json_integer(cli_peak_rss_bytes()));
        json_object_set_new(j, "model", json_string(argv[optind]));
        json_object_set_new(j, "pipeline", full ? json_incref(full) : json_null());
        if (cli_write_json(a.report_path, j, &err)) rc = cli_fail(&err);
        json_decref(j);
    }
    json_decref(full);
done:
    mopt_options_free(eo);
    mopt_options_free(xo);
    mopt_report_free(base_rep);
    mopt_pipeline_free(pb);
    mopt_model_free(base);
    cli_job_close(&j);
    return rc;
}
