/* mopt-bench: prefill and decode throughput and peak memory of one model.
 *
 *   mopt-bench MODEL [--prompt-len 128] [--gen 128] [--runs 5] [--threads N] [--batch B] [--pipeline 'quant.rtn<bits=4>']
 *
 * --pipeline runs passes on the model first (e.g. quantization) so the
 * packed kernels are what gets timed.
 * Each run prefills a prompt of real text (lit-val.txt tokens when the
 * fixtures are there, else repeated BOS) in one forward call, then decodes
 * --gen tokens greedily one at a time. With --batch B, B sequences (the
 * prompt rotated by a few tokens each, so they differ) decode together, one
 * batched forward per step, as `mopt serve` runs them: the decode figure is
 * then all B sequences' tokens per second. One warm-up run is discarded; the
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

#define USAGE "mopt-bench MODEL [--prompt-len N] [--gen N] [--runs N] [--threads N] [--batch B (1-256)] [--text FILE] [--pipeline P]"

/* One run of B sequences: each prefilled on its own, then gen batched decode
 * steps; the decode seconds go to *dec_s. */
static int run_batched(mopt_session *s, mopt_seq **seqs, int32_t batch, const int32_t *prompt, int32_t plen, int32_t gen,
                       int32_t vocab, double *pre_s, double *dec_s, mopt_error *err) {
    int32_t *rot = calloc((size_t)plen, sizeof *rot), next[256], ones[256];
    const int32_t *toks[256];
    if (!rot) return snprintf(err->msg, sizeof err->msg, "out of memory"), 1;
    const float *logits;
    double t0 = bench_now();
    for (int32_t b = 0; b < batch; b++) {
        mopt_seq_truncate(seqs[b], 0, NULL);
        for (int32_t i = 0; i < plen; i++) rot[i] = prompt[(i + 3 * b) % plen];
        const int32_t n = plen;
        if (mopt_session_forward_batch(s, &seqs[b], (const int32_t *const *)&rot, &n, 1, &logits, err)) return free(rot), 1;
        next[b] = mopt_argmax(logits, vocab);
        ones[b] = 1;
        toks[b] = &next[b];
    }
    double t1 = bench_now();
    for (int32_t i = 0; i < gen; i++) {
        if (mopt_session_forward_batch(s, seqs, toks, ones, batch, &logits, err)) return free(rot), 1;
        for (int32_t b = 0; b < batch; b++) next[b] = mopt_argmax(logits + (size_t)b * vocab, vocab);
    }
    *pre_s = t1 - t0;
    *dec_s = bench_now() - t1;
    free(rot);
    return 0;
}

int main(int argc, char **argv) {
    static const struct option opts[] = {{"prompt-len", required_argument, 0, 'p'}, {"gen", required_argument, 0, 'g'},
                                         {"runs", required_argument, 0, 'r'},       {"threads", required_argument, 0, 't'},
                                         {"text", required_argument, 0, 'x'},       {"pipeline", required_argument, 0, 'P'},
                                         {"batch", required_argument, 0, 'b'},      {0, 0, 0, 0}};
    int plen = 128, gen = 128, runs = 5, threads = 0, batch = 1, c;
    const char *text_path = NULL, *pipeline = NULL;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'p': plen = atoi(optarg); break;
        case 'g': gen = atoi(optarg); break;
        case 'r': runs = atoi(optarg); break;
        case 't': threads = atoi(optarg); break;
        case 'x': text_path = optarg; break;
        case 'P': pipeline = optarg; break;
        case 'b': batch = atoi(optarg); break;
        default: fprintf(stderr, "usage: %s\n", USAGE); return 2;
        }
    }
    if (optind != argc - 1 || plen < 1 || gen < 1 || runs < 1 || batch < 1 || batch > 256) {
        fprintf(stderr, "usage: %s\n", USAGE);
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
    if (batch > 1 && plen < batch) o.max_batch = batch;
    mopt_session *s = mopt_session_new(mopt_model_graph(m), &o, &err);
    if (!s) {
        fprintf(stderr, "mopt-bench: %s\n", err.msg);
        return 1;
    }
    double *pre = calloc((size_t)runs, sizeof *pre), *dec = calloc((size_t)runs, sizeof *dec);
    mopt_seq **seqs = calloc((size_t)batch, sizeof *seqs);
    for (int32_t b = 0; batch > 1 && b < batch; b++)
        if (!(seqs[b] = mopt_seq_new(s, plen + gen, &err))) {
            fprintf(stderr, "mopt-bench: %s\n", err.msg);
            return 1;
        }
    for (int r = -1; r < runs; r++) { /* r = -1 is the warm-up */
        const float *logits;
        if (batch > 1) {
            double ps, ds;
            if (run_batched(s, seqs, batch, prompt, plen, gen, a->vocab_size, &ps, &ds, &err)) {
                fprintf(stderr, "mopt-bench: %s\n", err.msg);
                return 1;
            }
            if (r >= 0) pre[r] = (double)batch * plen / ps, dec[r] = (double)batch * gen / ds;
            continue;
        }
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
    printf("  prompt %d tokens, %d generated, %d runs after 1 warm-up", plen, gen, runs);
    if (batch > 1) printf("; %d sequences decoding in one batch (tok/s: all of theirs)", batch);
    printf("\n");
    bench_stats("prefill", pre, runs);
    bench_stats("decode", dec, runs);
    printf("  peak RSS       %.1f MB\n", ru.ru_maxrss / 1024.0);
    /* the weights a decode step streams, against what this machine's memory can read on the same threads */
    /* a batched step reads the weights once for all its sequences */
    const double per_token = (double)mopt_graph_decode_bytes(mopt_model_graph(m)) / batch,
                 gbs = bench_median(dec, runs) * per_token / 1e9; /* dec: sorted */
    const double bw = mopt_session_read_bandwidth(s, (size_t)512 << 20, 5);
    printf("  weights read   %.1f MB per token: %.2f GB/s at the median decode", per_token / 1e6, gbs);
    if (bw > 0) printf(", %.0f%% of the %.2f GB/s read bandwidth measured on %d threads", 100 * gbs / bw, bw, mopt_session_n_threads(s));
    printf("\n");
    for (int32_t b = 0; b < batch; b++) mopt_seq_free(seqs[b]);
    free(seqs);
    free(pre);
    free(dec);
    free(prompt);
    mopt_session_free(s);
    mopt_model_free(m);
    mopt_registry_free(reg);
    return 0;
}
