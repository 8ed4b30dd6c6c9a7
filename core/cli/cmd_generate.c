/* mopt generate MODEL [--tokenizer PATH] [--prompt S] [-n MAX_NEW] [--temp T]
 *                     [--top-p P] [--seed N] [--threads N] */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

static void help(void) {
    printf("usage: mopt generate MODEL [options]\n\n"
           "Generates a continuation of the prompt and prints the new text alone on stdout;\n"
           "timing goes to stderr.\n"
           "  --prompt S        prompt text (default: empty, i.e. start from BOS)\n"
           "  -n, --max-new N   tokens to generate (default 256; stops early at end-of-sequence)\n"
           "  --temp T          temperature; 0 is greedy (default 1.0)\n"
           "  --top-p P         nucleus sampling mass (default 0.9; 1 turns it off)\n"
           "  --seed N          random seed (default: from the clock, printed on stderr)\n"
           "  --threads N       worker threads (default: all cores)\n"
           "  --device D        cpu (default), cuda or cuda:N: the linears on that GPU\n"
           "  --kv-cache F      f32 (default) or f16: the KV cache in IEEE halves (half the memory)\n"
           "  --tokenizer PATH  tokenizer.json or llama2.c tokenizer file (default: the model's;\n"
           "                    for a llama2.c .bin, tokenizer.bin or tok*.bin beside it)\n"
           "  --draft MODEL     speculative decoding with this draft (same tokenizer); output is exactly\n"
           "                    what the model alone would give (greedy) or its distribution (sampling)\n"
           "  --draft-k K|auto  tokens the draft proposes per round (default 4; auto adapts up to 8)\n"
           "  --lookup N        prompt-lookup speculation with N-grams from the context (no draft model)\n"
           "  --stats-json OUT  speculation statistics (rounds, acceptance, tokens per target call, times)\n");
}

/* --draft / --lookup: the specdec.generate pass (one code path with Lua and pipelines). */
static int cli_speculate(const char *model, const char *tok_path, const char *prompt, long long n, double temp,
                         double top_p, long long seed, long long threads, const char *draft, const char *k,
                         long long lookup, const char *stats_json) {
    cli_job j;
    int rc = cli_job_open(&j, 1, threads);
    if (rc) return rc;
    char num[5][64];
    snprintf(num[0], sizeof num[0], "%lld", lookup);
    snprintf(num[1], sizeof num[1], "%.17g", temp);
    snprintf(num[2], sizeof num[2], "%.17g", top_p);
    snprintf(num[3], sizeof num[3], "%lld", seed);
    snprintf(num[4], sizeof num[4], "%lld", n);
    if (cli_job_set(&j, "prompt", prompt) || cli_job_set(&j, "draft", draft) || cli_job_set(&j, "k", k) ||
        cli_job_set(&j, "lookup", lookup ? num[0] : NULL) || cli_job_set(&j, "temp", num[1]) || cli_job_set(&j, "top_p", num[2]) ||
        cli_job_set(&j, "seed", num[3]) || cli_job_set(&j, "n", num[4]))
        rc = cli_fail(&j.err);
    else
        rc = cli_job_run(&j, "specdec.generate", model, tok_path);
    if (!rc) {
        char *json = mopt_report_json(j.rep);
        json_t *js = json ? json_loads(json, 0, NULL) : NULL;
        free(json);
        json_t *pass = json_array_get(json_object_get(js, "passes"), 0), *mt = json_object_get(pass, "metrics");
        printf("%s\n", json_string_value(json_object_get(json_object_get(pass, "strings"), "text")));
#define G(key) json_number_value(json_object_get(mt, key))
        fprintf(stderr, "mopt: speculative (%s): %.0f tokens in %.0f target calls (%.3f per call), acceptance %.3f, "
                        "%.3f s (draft %.3f s, target %.3f s)\n",
                draft ? draft : "prompt lookup", G("generated"), G("rounds"), G("tokens_per_target_call"),
                G("acceptance_rate"), G("wall_seconds"), G("draft_seconds"), G("target_seconds"));
#undef G
        if (stats_json) {
            json_object_set_new(mt, "draft", draft ? json_string(draft) : json_null());
            json_object_set_new(mt, "lookup", json_integer(lookup));
            if (cli_write_json(stats_json, mt, &j.err)) rc = cli_fail(&j.err);
        }
        json_decref(js);
    }
    cli_job_close(&j);
    return rc;
}

int cmd_generate(int argc, char **argv) {
    static const struct option opts[] = {
        {"prompt", required_argument, 0, 'p'}, {"max-new", required_argument, 0, 'n'},
        {"temp", required_argument, 0, 't'},   {"top-p", required_argument, 0, 'P'},
        {"seed", required_argument, 0, 's'},   {"threads", required_argument, 0, 'T'}, {"device", required_argument, 0, CLI_OPT_DEVICE}, {"kv-cache", required_argument, 0, CLI_OPT_KV_CACHE},
        {"tokenizer", required_argument, 0, 'k'}, {"draft", required_argument, 0, 'D'},
        {"draft-k", required_argument, 0, 'K'},   {"lookup", required_argument, 0, 'L'},
        {"stats-json", required_argument, 0, 'S'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *prompt = "", *tok_path = NULL, *draft = NULL, *draft_k = "4", *stats_json = NULL;
    long long lookup = 0;
    long long max_new = 256, seed = -1, threads = 0;
    double temp = 1.0, top_p = 0.9;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "n:h", opts, NULL)) != -1) {
        switch (c) {
        case 'p': prompt = optarg; break;
        case 'n':
            if (!cli_parse_int(optarg, 0, 1 << 24, &max_new))
                return cli_usage_error("generate", "-n expects a non-negative integer, got '%s'", optarg);
            break;
        case 't':
            if (!cli_parse_float(optarg, 0, 100, &temp))
                return cli_usage_error("generate", "--temp expects a number in [0, 100], got '%s'", optarg);
            break;
        case 'P':
            if (!cli_parse_float(optarg, 0, 1, &top_p) || top_p <= 0)
                return cli_usage_error("generate", "--top-p expects a number in (0, 1], got '%s'", optarg);
            break;
        case 's':
            if (!cli_parse_int(optarg, 0, (long long)9e18, &seed))
                return cli_usage_error("generate", "--seed expects a non-negative integer, got '%s'", optarg);
            break;
        case CLI_OPT_DEVICE: cli_set_device(optarg); break;
        case CLI_OPT_KV_CACHE: cli_set_kv_cache(optarg); break;
        case 'T':
            if (!cli_parse_threads(optarg, &threads))
                return cli_usage_error("generate", "--threads expects a positive integer, got '%s'", optarg);
            break;
        case 'k': tok_path = optarg; break;
        case 'D': draft = optarg; break;
        case 'K': draft_k = optarg; break;
        case 'L':
            if (!cli_parse_int(optarg, 1, 64, &lookup)) return cli_usage_error("generate", "--lookup expects an n-gram size 1..64, got '%s'", optarg);
            break;
        case 'S': stats_json = optarg; break;
        case 'h': help(); return EXIT_OK;
        default: return cli_bad_option("generate", argv, "n:h", opts);
        }
    }
    if (optind != argc - 1) return cli_usage_error("generate", "expected exactly one MODEL");
    if (seed < 0) seed = (long long)time(NULL);
    if (draft || lookup) return cli_speculate(argv[optind], tok_path, prompt, max_new, temp, top_p, seed, threads, draft,
                                              draft_k, lookup, stats_json);

    mopt_error err = {0};
    mopt_model *m = mopt_model_load(argv[optind], tok_path, &err);
    if (!m) return cli_fail(&err);
    const mopt_tokenizer *tok = mopt_model_tokenizer(m);
    const mopt_arch *a = mopt_model_arch(m);
    int rc = EXIT_OK;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    mopt_session *s = NULL;
    float *scratch = NULL;
    if (!tok) {
        rc = cli_usage_error("generate", "%s has no tokenizer; pass --tokenizer", argv[optind]);
        goto done;
    }
    if (mopt_tokenizer_encode(tok, prompt, strlen(prompt), MOPT_TOK_ADD_SPECIAL, &ids, &n_ids, &err)) {
        rc = cli_fail(&err);
        goto done;
    }
    if (n_ids == 0) {
        rc = cli_usage_error("generate", "the prompt is empty and the tokenizer adds no BOS token; give --prompt");
        goto done;
    }
    mopt_session_opts so;
    mopt_session_opts_default(&so);
    so.n_threads = (int32_t)threads;
    s = mopt_session_new(mopt_model_graph(m), &so, &err);
    if (!s) {
        rc = cli_fail(&err);
        goto done;
    }
    if ((int64_t)n_ids >= a->max_ctx) {
        rc = cli_usage_error("generate", "the prompt has %zu tokens; the context holds %d", n_ids, a->max_ctx);
        goto done;
    }
    if ((int64_t)n_ids + max_new > a->max_ctx) max_new = a->max_ctx - (long long)n_ids;
    int32_t *all = realloc(ids, (n_ids + (size_t)max_new + 1) * sizeof *all);
    scratch = malloc((size_t)a->vocab_size * 2 * sizeof(float));
    if (!all || !scratch) {
        mopt_error_set(&err, MOPT_E_NOMEM, "generate", "out of memory");
        rc = cli_fail(&err);
        goto done;
    }
    ids = all;
    const int32_t eos = a->eos_id >= 0 ? a->eos_id : mopt_tokenizer_eos_id(tok);
    mopt_sampler sampler;
    mopt_sampler_init(&sampler, (float)temp, (float)top_p, (uint64_t)seed);
    fprintf(stderr, "mopt: %s, %zu prompt tokens, seed %lld, %d threads, kernels %s\n", mopt_model_path(m), n_ids,
            seed, mopt_session_n_threads(s), mopt_cpu_kernels_name());

    const float *logits;
    double t0 = cli_now();
    if (mopt_session_forward(s, ids, (int32_t)n_ids, false, &logits, &err)) {
        rc = cli_fail(&err);
        goto done;
    }
    double t_prefill = cli_now() - t0, t1 = cli_now();
    size_t n = n_ids;
    long long produced = 0;
    char piece[1024];
    while (produced < max_new) {
        int32_t next = mopt_sampler_sample(&sampler, logits, a->vocab_size, scratch);
        if (next < 0 || next == eos) break;
        int64_t k = mopt_tokenizer_decode_next(tok, ids, n, next, piece, sizeof piece);
        if (k > 0) fwrite(piece, 1, (size_t)k, stdout);
        fflush(stdout);
        ids[n++] = next;
        produced++;
        if (produced == max_new) break;
        if (mopt_session_forward(s, &next, 1, false, &logits, &err)) {
            rc = cli_fail(&err);
            goto done;
        }
    }
    putchar('\n');
    double t_decode = cli_now() - t1;
    fprintf(stderr, "mopt: prefill %zu tokens in %.1f ms (%.1f tok/s); generated %lld tokens in %.3f s (%.1f tok/s)\n",
            n_ids, t_prefill * 1e3, n_ids / (t_prefill > 0 ? t_prefill : 1e-9), produced, t_decode,
            produced / (t_decode > 0 ? t_decode : 1e-9));
done:
    free(scratch);
    free(ids);
    mopt_session_free(s);
    mopt_model_free(m);
    return rc;
}
