/* mopt-bench: prefill and decode throughput and peak memory of one model.
 *
 *   mopt-bench MODEL [--prompt-len 128] [--gen 128] [--runs 5] [--threads N] [--pipeline 'quant.rtn<bits=4>']
 *
 * --pipeline runs passes on the model first (e.g. quantization) so the
 * packed kernels are what gets timed.
 * Each run prefills a prompt of real text (lit-val.txt tokens when the
 * fixtures are there, else repeated BOS) in one forward call, then decodes
 * --gen tokens greedily one at a time. One warm-up run is discarded; the
 * median, min and max over --runs are printed. Not a test: nothing is asserted. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "mopt/mopt.h"
#include "mopt/pipeline.h"
#include "bench_util.h"

int main(int argc, char **argv) {
    static const struct option opts[] = {{"prompt-len", required_argument, 0, 'p'}, {"gen", required_argument, 0, 'g'},
                                         {"runs", required_argument, 0, 'r'},       {"threads", required_argument, 0, 't'},
                                         {"text", required_argument, 0, 'x'},       {"pipeline", required_argument, 0, 'P'},
                                         {0, 0, 0, 0}};
    int plen = 128, gen = 128, runs = 5, threads = 0, c;
    const char *text_path = NULL, *pipeline = NULL;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'p': plen = atoi(optarg); break;
        case 'g': gen = atoi(optarg); break;
        case 'r': runs = atoi(optarg); break;
        case 't': threads = atoi(optarg); break;
        case 'x': text_path = optarg; break;
        case 'P': pipeline = optarg; break;
        default: fprintf(stderr, "usage: mopt-bench MODEL [--prompt-len N] [--gen N] [--runs N] [--threads N] [--text FILE]\n"); return 2;
        }
    }
    if (optind != argc - 1 || plen < 1 || gen < 1 || runs < 1) {
        fprintf(stderr, "usage: mopt-bench MODEL [--prompt-len N] [--gen N] [--runs N] [--threads N] [--text FILE]\n");
        return 2;
    }
    mopt_error err = {0};
    mopt_model *m = mopt_model_load(argv[optind], NULL, &err);
    if (!m) {
        fprintf(stderr, "mopt-bench: %s\n", err.msg);
        return 2;
    }
    mopt_registry *reg = NULL;
    if (pipeline) {
        reg = mopt_registry_new(NULL, &err);
        mopt_pipeline *p = reg ? mopt_pipeline_new(reg) : NULL;
        mopt_report *rep = mopt_report_new();
        mopt_run_opts ro;
        mopt_run_opts_default(&ro);
        ro.quiet = 1;
        if (!p || mopt_pipeline_parse(p, pipeline, &err) || mopt_pipeline_run(p, m, &ro, rep, &err)) {
            fprintf(stderr, "mopt-bench: %s\n", err.msg);
            return 2;
        }
        mopt_pipeline_free(p);
        mopt_report_free(rep);
    }
    const mopt_arch *a = mopt_model_arch(m);
    if (plen + gen > a->max_ctx) {
        fprintf(stderr, "mopt-bench: prompt %d + gen %d exceed the context of %d\n", plen, gen, a->max_ctx);
        return 2;
    }
    int32_t *prompt = calloc((size_t)plen, sizeof *prompt);
    const mopt_tokenizer *tok = mopt_model_tokenizer(m);
    if (text_path && tok) {
        FILE *f = fopen(text_path, "rb");
        char *buf = calloc(1, 1 << 16);
        size_t n = f ? fread(buf, 1, (1 << 16) - 1, f) : 0;
        if (f) fclose(f);
        int32_t *ids;
        size_t ni;
        if (mopt_tokenizer_encode(tok, buf, n, 0, &ids, &ni, &err) == MOPT_OK) {
            for (int i = 0; i < plen; i++) prompt[i] = ni ? ids[(size_t)i % ni] : 0;
            free(ids);
        }
        free(buf);
    }
    mopt_session_opts o;
    mopt_session_opts_default(&o);
    o.n_threads = threads;
    mopt_session *s = mopt_session_new(mopt_model_graph(m), &o, &err);
    if (!s) {
        fprintf(stderr, "mopt-bench: %s\n", err.msg);
        return 1;
    }
    double *pre = calloc((size_t)runs, sizeof *pre), *dec = calloc((size_t)runs, sizeof *dec);
    for (int r = -1; r < runs; r++) { /* r = -1 is the warm-up */
        const float *logits;
        mopt_session_truncate(s, 0, NULL);
        double t0 = bench_now();
        if (mopt_session_forward(s, prompt, plen, false, &logits, &err)) {
            fprintf(stderr, "mopt-bench: %s\n", err.msg);
            return 1;
        }
        double t1 = bench_now();
        for (int i = 0; i < gen; i++) {
            int32_t next = mopt_argmax(logits, a->vocab_size);
            if (mopt_session_forward(s, &next, 1, false, &logits, &err)) {
                fprintf(stderr, "mopt-bench: %s\n", err.msg);
                return 1;
            }
        }
        double t2 = bench_now();
        if (r >= 0) {
            pre[r] = plen / (t1 - t0);
            dec[r] = gen / (t2 - t1);
        }
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    int64_t stored = 0;
    for (int32_t i = 0; i < mopt_graph_n_tensors(mopt_model_graph(m)); i++)
        stored += mopt_weight_storage_bytes(mopt_graph_tensor(mopt_model_graph(m), i));
    printf("%s%s%s: %s, %lld params (%.1f MB as stored), %d threads, kernels %s\n", argv[optind], pipeline ? " + " : "",
           pipeline ? pipeline : "", a->family, (long long)mopt_graph_n_params(mopt_model_graph(m)), stored / 1e6,
           mopt_session_n_threads(s), mopt_cpu_kernels_name());
    printf("  prompt %d tokens, %d generated, %d runs after 1 warm-up\n", plen, gen, runs);
    bench_stats("prefill", pre, runs);
    bench_stats("decode", dec, runs);
    printf("  peak RSS       %.1f MB\n", ru.ru_maxrss / 1024.0);
    /* the weights a decode step streams, against what this machine's memory can read on the same threads */
    const double per_token = (double)mopt_graph_decode_bytes(mopt_model_graph(m)), gbs = bench_median(dec, runs) * per_token / 1e9; /* dec: sorted */
    const double bw = mopt_read_bandwidth(mopt_session_n_threads(s), (size_t)512 << 20, 5);
    printf("  weights read   %.1f MB per token: %.2f GB/s at the median decode", per_token / 1e6, gbs);
    if (bw > 0) printf(", %.0f%% of the %.2f GB/s read bandwidth measured on %d threads", 100 * gbs / bw, bw, mopt_session_n_threads(s));
    printf("\n");
    free(pre);
    free(dec);
    free(prompt);
    mopt_session_free(s);
    mopt_model_free(m);
    mopt_registry_free(reg);
    return 0;
}
