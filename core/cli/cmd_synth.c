/* mopt synth [--shape PRESET] [--arch llama|gpt2 --hidden H --layers L --heads N --kv-heads K --ffn F --vocab V]
 *            [--dtype bf16|f16|f32] [--seed S] [--tokenizer DIR] (-o DIR | --dry-run)
 * A random-weight checkpoint of a real model's shape for speed measurements
 * (synth.c writes it). */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "synth.h"

/* Shapes of published models (the parameter counts their model cards give). */
static const struct {
    const char *name, *arch;
    int64_t dim, layers, heads, kv, ffn, vocab, ctx;
    int tied;
    double theta;
    const char *what;
} presets[] = {
    {"llama-1b", "llama", 2048, 16, 32, 8, 5632, 32000, 2048, 0, 10000, "hidden 2048, 16 layers, 32/8 heads, FFN 5632, vocab 32000 (0.85B)"},
    {"llama-3b", "llama", 3072, 28, 24, 8, 8192, 128256, 8192, 1, 500000, "Llama-3.2-3B's shape, tied embeddings (3.21B)"},
    {"llama-8b", "llama", 4096, 32, 32, 8, 14336, 128256, 8192, 0, 500000, "Llama-3.1-8B's shape (8.03B)"},
    {"gpt2-124m", "gpt2", 768, 12, 12, 12, 3072, 50257, 1024, 1, 0, "GPT-2 small's shape (124M)"},
};

static void help(void) {
    printf("usage: mopt synth [--shape PRESET] [--arch llama|gpt2 --hidden H --layers L --heads N --kv-heads K --ffn F\n"
           "                  --vocab V] [--dtype bf16|f16|f32] [--seed S] [--tokenizer DIR] (-o DIR | --dry-run)\n\n"
           "Writes a Hugging Face checkpoint with random weights of a real model's shape, for speed measurements at\n"
           "sizes no fixture has. Linears are N(0, 1/fan_in), norms 1, so activations stay at a trained model's scale.\n"
           "The weights are streamed to disk, so memory stays small at any size.\n"
           "  --shape PRESET     a published shape; explicit options below override its fields:\n");
    for (size_t i = 0; i < sizeof presets / sizeof *presets; i++) printf("                       %-10s %s\n", presets[i].name, presets[i].what);
    printf("  --arch A           llama (default) or gpt2\n"
           "  --hidden H, --layers L, --heads N, --kv-heads K (default N), --ffn F, --vocab V, --ctx C (positions)\n"
           "  --tied             llama: lm_head shares the embedding (gpt2 always does)\n"
           "  --dtype D          bf16 (default), f16 or f32\n"
           "  --seed S           the random weights' seed (default 1); the same seed gives the same bytes\n"
           "  --tokenizer DIR    copy DIR's tokenizer (its ids must fit the vocabulary); default: a generated\n"
           "                     byte-level tokenizer of 257 tokens\n"
           "  -o DIR             a new directory (written beside it, then renamed into place)\n"
           "  --dry-run          print the shape, parameters and bytes; write nothing\n"
           "  --quiet            no progress line\n");
}

static int parse_dim(const char *opt, const char *v, int64_t *out) {
    long long x;
    if (!cli_parse_int(v, 1, 1 << 20, &x)) return cli_usage_error("synth", "%s expects an integer in 1..%d, got '%s'", opt, 1 << 20, v);
    *out = x;
    return 0;
}

int cmd_synth(int argc, char **argv) {
    static const struct option opts[] = {
        {"shape", required_argument, 0, 'S'}, {"arch", required_argument, 0, 'a'},  {"hidden", required_argument, 0, 'H'},
        {"layers", required_argument, 0, 'L'}, {"heads", required_argument, 0, 'N'}, {"kv-heads", required_argument, 0, 'K'},
        {"ffn", required_argument, 0, 'F'},   {"vocab", required_argument, 0, 'V'}, {"ctx", required_argument, 0, 'C'},
        {"tied", no_argument, 0, 't'},        {"dtype", required_argument, 0, 'd'}, {"seed", required_argument, 0, 's'},
        {"tokenizer", required_argument, 0, 'T'}, {"dry-run", no_argument, 0, 'n'}, {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},        {0, 0, 0, 0}};
    synth_spec s = {"llama", 0, 0, 0, 0, 0, 0, 2048, 0, 10000, "bf16", 1, NULL};
    int64_t set[7] = {0}; /* hidden, layers, heads, kv, ffn, vocab, ctx from the command line; 0: unset */
    const char *out = NULL, *shape = NULL, *arch = NULL;
    int dry = 0, quiet = 0, tied = 0, c, rc = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "ho:", opts, NULL)) != -1) {
        switch (c) {
        case 'S': shape = optarg; break;
        case 'a': arch = optarg; break;
        case 'H': rc = parse_dim("--hidden", optarg, &set[0]); break;
        case 'L': rc = parse_dim("--layers", optarg, &set[1]); break;
        case 'N': rc = parse_dim("--heads", optarg, &set[2]); break;
        case 'K': rc = parse_dim("--kv-heads", optarg, &set[3]); break;
        case 'F': rc = parse_dim("--ffn", optarg, &set[4]); break;
        case 'V': rc = parse_dim("--vocab", optarg, &set[5]); break;
        case 'C': rc = parse_dim("--ctx", optarg, &set[6]); break;
        case 't': tied = 1; break;
        case 'd': s.dtype = optarg; break;
        case 's': {
            long long x;
            if (!cli_parse_int(optarg, 0, INT64_MAX, &x)) return cli_usage_error("synth", "--seed expects a non-negative integer, got '%s'", optarg);
            s.seed = (uint64_t)x;
            break;
        }
        case 'T': s.tokenizer_dir = optarg; break;
        case 'o': out = optarg; break;
        case 'n': dry = 1; break;
        case 'q': quiet = 1; break;
        case 'h': help(); return EXIT_OK;
        default: return cli_bad_option("synth", argv, "ho:", opts);
        }
        if (rc) return rc;
    }
    if (optind != argc) return cli_usage_error("synth", "unexpected argument '%s' (the output goes to -o DIR)", argv[optind]);
    if (!out && !dry) return cli_usage_error("synth", "give -o DIR (a new directory) or --dry-run");
    if (shape) {
        size_t i = 0;
        while (i < sizeof presets / sizeof *presets && strcmp(presets[i].name, shape)) i++;
        if (i == sizeof presets / sizeof *presets) return cli_usage_error("synth", "--shape %s: expected llama-1b, llama-3b, llama-8b or gpt2-124m", shape);
        s.arch = presets[i].arch, s.dim = presets[i].dim, s.layers = presets[i].layers, s.heads = presets[i].heads;
        s.kv_heads = presets[i].kv, s.ffn = presets[i].ffn, s.vocab = presets[i].vocab, s.ctx = presets[i].ctx;
        s.tied = presets[i].tied, s.rope_theta = presets[i].theta;
    }
    if (arch) s.arch = arch;
    int64_t *field[7] = {&s.dim, &s.layers, &s.heads, &s.kv_heads, &s.ffn, &s.vocab, &s.ctx};
    for (int i = 0; i < 7; i++)
        if (set[i]) *field[i] = set[i];
    if (!set[3] && !shape) s.kv_heads = s.heads; /* one group per head unless asked */
    if (tied) s.tied = 1;
    if (!strcmp(s.arch, "gpt2")) s.tied = 1;
    static const char *const need[6] = {"--hidden", "--layers", "--heads", "--kv-heads", "--ffn", "--vocab"};
    for (int i = 0; i < 6; i++)
        if (!*field[i]) return cli_usage_error("synth", "give %s (or --shape PRESET)", need[i]);
    mopt_error err = {0};
    int64_t params, bytes;
    if (synth_check(&s, &params, &bytes, &err)) return cli_fail(&err);
    printf("%s: hidden %" PRId64 ", %" PRId64 " layers, %" PRId64 "/%" PRId64 " heads, FFN %" PRId64 ", vocab %" PRId64 "%s: %" PRId64
           " parameters, %.2f GB %s",
           s.arch, s.dim, s.layers, s.heads, s.kv_heads, s.ffn, s.vocab, s.tied ? ", tied embeddings" : "", params, (double)bytes / 1e9, s.dtype);
    if (dry) {
        printf(" (dry run: nothing written)\n");
        return EXIT_OK;
    }
    printf(" -> %s\n", out);
    fflush(stdout);
    const double t0 = cli_now();
    if (synth_write(&s, out, quiet, &err)) return cli_fail(&err);
    if (!quiet) fprintf(stderr, "  [synth] wrote %s in %.1f s\n", out, cli_now() - t0);
    return EXIT_OK;
}
