/* mopt-bench-train: training throughput and peak memory of one model.
 *
 *   mopt-bench-train MODEL [--ctx 256] [--runs 5] [--threads N] [--recompute] [--text FILE]
 *
 * Each run is one forward + backward (mopt_trainer_step) over a window of
 * --ctx tokens of real text (FILE, else lit-val.txt's first tokens when given)
 * followed by one AdamW update, as one optimizer step of batch 1 takes. One
 * warm-up run is discarded; the median, min and max tokens/s over --runs and
 * the peak RSS are printed. Not a test: nothing is asserted. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "mopt/mopt.h"
#include "mopt/train.h"
#include "bench_util.h"

static int usage(void) {
    fprintf(stderr, "usage: mopt-bench-train MODEL [--ctx N] [--runs N] [--threads N] [--recompute] [--text FILE]\n");
    return 2;
}

int main(int argc, char **argv) {
    static const struct option opts[] = {{"ctx", required_argument, 0, 'c'},     {"runs", required_argument, 0, 'r'},
                                         {"threads", required_argument, 0, 't'}, {"recompute", no_argument, 0, 'R'},
                                         {"text", required_argument, 0, 'x'},    {0, 0, 0, 0}};
    int ctx = 256, runs = 5, threads = 0, recompute = 0, c;
    const char *text_path = NULL;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'c': ctx = atoi(optarg); break;
        case 'r': runs = atoi(optarg); break;
        case 't': threads = atoi(optarg); break;
        case 'R': recompute = 1; break;
        case 'x': text_path = optarg; break;
        default: return usage();
        }
    }
    if (optind != argc - 1 || ctx < 2 || runs < 1) return usage();
    mopt_error err = {0};
    mopt_model *m = mopt_model_load(argv[optind], NULL, &err);
    if (!m) {
        fprintf(stderr, "mopt-bench-train: %s\n", err.msg);
        return 2;
    }
    const mopt_arch *a = mopt_model_arch(m);
    int32_t *ids = NULL, *win = calloc((size_t)ctx, sizeof *win);
    size_t n = 0;
    if (text_path && mopt_tokenizer_encode_file(mopt_model_tokenizer(m), text_path, 0, &ids, &n, &err)) {
        fprintf(stderr, "mopt-bench-train: %s\n", err.msg);
        return 2;
    }
    for (int i = 0; i < ctx; i++) win[i] = n ? ids[(size_t)i % n] : (i * 31 + 7) % a->vocab_size;
    mopt_trainer *tr = mopt_trainer_new(mopt_model_graph(m), ctx, &err);
    if (!tr || mopt_trainer_set_threads(tr, threads, &err) || mopt_trainer_set_recompute(tr, recompute, &err)) {
        fprintf(stderr, "mopt-bench-train: %s\n", err.msg);
        return 2;
    }
    mopt_adamw_opts ao;
    mopt_adamw_opts_default(&ao);
    double *tps = calloc((size_t)runs, sizeof *tps), loss = 0;
    for (int r = -1; r < runs; r++) { /* r = -1 is the warm-up */
        const double t0 = bench_now();
        mopt_trainer_zero_grad(tr);
        if (mopt_trainer_step(tr, win, ctx, &loss, &err) || mopt_trainer_adamw(tr, &ao, 1e-6f, 1.0f, &err)) {
            fprintf(stderr, "mopt-bench-train: %s\n", err.msg);
            return 1;
        }
        if (r >= 0) tps[r] = ctx / (bench_now() - t0);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("%s: %s, %lld params, ctx %d, %s, %d threads, loss %.4f\n", argv[optind], a->family,
           (long long)mopt_graph_n_params(mopt_model_graph(m)), ctx, recompute ? "recomputation" : "every activation kept", threads, loss);
    bench_stats("fwd+bwd+AdamW", tps, runs);
    printf("  activations %.1f MB, peak RSS %.1f MB\n", mopt_trainer_activation_bytes(tr) / 1e6, ru.ru_maxrss / 1024.0);
    mopt_trainer_free(tr);
    free(tps);
    free(win);
    free(ids);
    mopt_model_free(m);
    return 0;
}
