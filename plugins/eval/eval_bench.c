/* eval.bench: wall-clock speed of the pipeline's model. Per run: one prefill
 * of each prompt length, then `gen` greedy decode steps; warm-up runs are not
 * counted. Reports medians with min/max/stdev across runs (the spread is
 * reported, not hidden), per-token decode latency percentiles over every
 * measured token, time to first token, peak RSS and the model's bytes; the
 * weight bytes a decode step reads per token, the GB/s that makes at the
 * median decode speed, and the machine's read bandwidth measured on the same
 * threads, so decode speed reads as a fraction of what the memory allows.
 * The bandwidth is measured before the first run and after each: a shared
 * host's memory moved between 31 and 72 GB/s within one benchmark, so each
 * run is set against the mean of the two measurements beside it, and the
 * fraction reported is the median of those. (After a run, not between its
 * prefill and decode: the next prefill brings a small model's weights back
 * into the caches before its decode is timed.) */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "eval_plugin.h"
#include "eval_util.h"

/* Each run's decode GB/s (weights and cache) over the mean read bandwidth measured before and after it
 * (probe[r], probe[r + 1]): the medians of those fractions, their spread, and the median bandwidth. */
static void bandwidth_fractions(const mopt_host_api *h, mopt_report *report, const double *dec, const double *probe, int32_t runs,
                                double per_token, double kv_per_token) {
    for (int32_t r = 0; r <= runs; r++)
        if (!(probe[r] > 0)) return; /* no buffer to measure on: no fractions */
    double *f = malloc((size_t)runs * sizeof *f), *fw = malloc((size_t)runs * sizeof *fw);
    if (f && fw) {
        for (int32_t r = 0; r < runs; r++) {
            const double bw = (probe[r] + probe[r + 1]) / 2;
            f[r] = dec[r] * (per_token + kv_per_token) / 1e9 / bw;
            fw[r] = dec[r] * per_token / 1e9 / bw; /* the weights alone */
        }
        h->report_metric(report, "read_gb_s", h->quantile(probe, runs + 1, 0.5));
        h->report_metric(report, "decode_bandwidth_fraction", h->quantile(f, runs, 0.5));
        h->report_metric(report, "decode_bandwidth_fraction_min", h->quantile(f, runs, 0));
        h->report_metric(report, "decode_bandwidth_fraction_max", h->quantile(f, runs, 1));
        h->report_metric(report, "decode_weight_bandwidth_fraction", h->quantile(fw, runs, 0.5));
        h->report_series(report, "read_gb_s_probes", probe, runs + 1);
    }
    free(f);
    free(fw);
}

/* The read bandwidth on the session's own threads, where the host has that (else on as many threads of a pool of
 * the probe's own) */
static double probe_bandwidth(const mopt_host_api *h, mopt_session *s, int64_t mib) {
    if (h->struct_size > offsetof(mopt_host_api, session_read_bandwidth)) return h->session_read_bandwidth(s, (size_t)mib << 20, 3);
    return h->read_bandwidth(h->session_n_threads(s), (size_t)mib << 20, 3);
}

/* The process's resident bytes now (Linux; 0 elsewhere) */
static double rss_now(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, resident = 0;
    const int got = f ? fscanf(f, "%ld %ld", &pages, &resident) : 0;
    if (f) fclose(f);
    const long page = sysconf(_SC_PAGESIZE);
    return got == 2 && page > 0 ? (double)resident * (double)page : 0;
}

/* Its peak resident bytes so far */
static double rss_peak(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss * 1024.0;
}

static mopt_status run(const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *g, const mopt_options *o,
                       mopt_report *report, mopt_error *err) {
    mopt_model *m = h->ctx_model(ctx);
    if (!m || !g) return h->error_set(err, MOPT_E_INVALID, "eval.bench", "needs a model");
    const mopt_arch *a = h->graph_arch(g);
    const int32_t gen = (int32_t)h->opt_int(o, "gen"), runs = (int32_t)h->opt_int(o, "runs"), warm = (int32_t)h->opt_int(o, "warmup");
    const int32_t nlen = h->opt_list_len(o, "prompt_len");
    int32_t lens[16], maxlen = 1;
    for (int32_t i = 0; i < nlen && i < 16; i++) {
        lens[i] = atoi(h->opt_list_item(o, "prompt_len", i));
        if (lens[i] < 1 || lens[i] + gen > a->max_ctx)
            return h->error_set(err, MOPT_E_INVALID, "eval.bench", "prompt_len %s + gen %d must fit the context of %d",
                                h->opt_list_item(o, "prompt_len", i), gen, a->max_ctx);
        if (lens[i] > maxlen) maxlen = lens[i];
    }
    const int32_t nl = nlen < 16 ? nlen : 16;
    /* prompt tokens: real text when given, else a cycle of ordinary ids */
    int32_t *prompt = malloc((size_t)maxlen * sizeof *prompt), *out = malloc((size_t)(gen > 0 ? gen : 1) * sizeof *out);
    double *pre = calloc((size_t)(runs * nl), sizeof *pre), *dec = calloc((size_t)runs, sizeof *dec);
    double *lat = malloc((size_t)runs * (size_t)(gen > 1 ? gen : 1) * sizeof *lat), *ttft = calloc((size_t)runs, sizeof *ttft);
    mopt_status st = prompt && out && pre && dec && lat && ttft ? MOPT_OK : h->error_set(err, MOPT_E_NOMEM, "eval.bench", "out of memory");
    if (!st) {
        for (int32_t i = 0; i < maxlen; i++) prompt[i] = (int32_t)((i * 7 + 11) % a->vocab_size);
        if (h->opt_is_set(o, "text")) {
            int32_t *ids;
            size_t n;
            if (!(st = eval_tokens(h, m, h->opt_string(o, "text"), 0, &ids, &n, err))) {
                for (int32_t i = 0; i < maxlen && n; i++) prompt[i] = ids[(size_t)i % n];
                free(ids);
            }
        }
    }
    mopt_session *s = st ? NULL : eval_session(h, ctx, g, a->max_ctx, err);
    if (!st && !s) st = err ? (mopt_status)err->code : MOPT_E_NOMEM;
    /* the host's read bandwidth is the limit only for a session on the CPU */
    const char *device = s && h->struct_size > offsetof(mopt_host_api, session_device) ? h->session_device(s) : "cpu";
    const int64_t bw_mib = strcmp(device, "cpu") == 0 ? h->opt_int(o, "bandwidth_mib") : 0;
    double *probe = bw_mib > 0 ? calloc((size_t)runs + 1, sizeof *probe) : NULL; /* before run 0, then after each run */
    if (!st && bw_mib > 0 && !probe) st = h->error_set(err, MOPT_E_NOMEM, "eval.bench", "out of memory");
    /* peak RSS: the model's, not the bandwidth measurements' buffers: the high-water mark before the first of them
     * (after the warm-up runs), then the resident bytes after each run */
    double peak_rss = 0;
    int64_t nlat = 0;
    for (int32_t r = -warm; r < runs && !st; r++) {
        if (r == 0) peak_rss = rss_peak();
        if (probe && r == 0) probe[0] = probe_bandwidth(h, s, bw_mib);
        for (int32_t i = 0; i < nl && !st; i++) { /* prefill at each length */
            const float *l;
            double t0 = h->now();
            if (!(st = h->session_truncate(s, 0, err))) st = h->session_forward(s, prompt, lens[i], 0, &l, err);
            if (!st && r >= 0) pre[r * nl + i] = lens[i] / (h->now() - t0);
        }
        if (st) break;
        double tt;
        double *lr = r >= 0 ? lat + nlat : NULL;
        double t0 = h->now();
        st = eval_greedy(h, s, a->vocab_size, prompt, lens[0], gen, out, lr, &tt, err);
        double total = h->now() - t0;
        if (!st && r >= 0) {
            ttft[r] = tt;
            dec[r] = gen > 1 ? (gen - 1) / (total - tt / 1e3) : 0;
            nlat += gen > 1 ? gen - 1 : 0;
            const double rss = rss_now();
            if (rss > peak_rss) peak_rss = rss;
            if (probe) probe[r + 1] = probe_bandwidth(h, s, bw_mib);
        }
        h->progress(ctx, r + warm + 1, runs + warm);
    }
    if (!st) {
        char key[64];
        double *col = malloc((size_t)runs * sizeof *col);
        for (int32_t i = 0; col && i < nl; i++) {
            for (int32_t r = 0; r < runs; r++) col[r] = pre[r * nl + i];
            snprintf(key, sizeof key, "prefill_tok_s_%d", lens[i]);
            h->report_metric(report, key, h->quantile(col, runs, 0.5));
            if (i == 0) {
                h->report_metric(report, "prefill_tok_s", h->quantile(col, runs, 0.5));
                h->report_metric(report, "prefill_tok_s_min", h->quantile(col, runs, 0));
                h->report_metric(report, "prefill_tok_s_max", h->quantile(col, runs, 1));
                h->report_metric(report, "prefill_tok_s_stdev", eval_stdev(col, runs));
            }
        }
        free(col);
        h->report_metric(report, "decode_tok_s", h->quantile(dec, runs, 0.5));
        h->report_metric(report, "decode_tok_s_min", h->quantile(dec, runs, 0));
        h->report_metric(report, "decode_tok_s_max", h->quantile(dec, runs, 1));
        h->report_metric(report, "decode_tok_s_stdev", eval_stdev(dec, runs));
        h->report_metric(report, "latency_ms_p50", h->quantile(lat, nlat, 0.50));
        h->report_metric(report, "latency_ms_p95", h->quantile(lat, nlat, 0.95));
        h->report_metric(report, "latency_ms_p99", h->quantile(lat, nlat, 0.99));
        h->report_metric(report, "ttft_ms", h->quantile(ttft, runs, 0.5));
        h->report_metric(report, "peak_rss_bytes", probe ? peak_rss : rss_peak());
        int64_t bytes = 0;
        for (int32_t i = 0; i < h->graph_n_tensors(g); i++) bytes += h->weight_storage_bytes(h->graph_tensor(g, i));
        h->report_metric(report, "model_bytes", (double)bytes);
        /* what decoding streams per token, and how close that comes to this machine's read bandwidth: every weight, and
         * the cache up to the step's position (decode step k of gen - 1 attends to prompt_len + k positions: on
         * average prompt_len + gen / 2) */
        const double per_token = (double)h->graph_decode_bytes(g), tok_s = h->quantile(dec, runs, 0.5);
        const int64_t kv_pos = h->struct_size > offsetof(mopt_host_api, session_kv_bytes_per_position) ? h->session_kv_bytes_per_position(s) : 0;
        const double kv_per_token = (double)kv_pos * (lens[0] + gen / 2.0), dec_gbs = tok_s * (per_token + kv_per_token) / 1e9;
        h->report_metric(report, "weight_bytes_per_token", per_token);
        h->report_metric(report, "kv_bytes_per_token", kv_per_token);
        h->report_metric(report, "decode_gb_s", dec_gbs);
        h->report_string(report, "device", device);
        if (!strcmp(device, "cpu") && h->struct_size > offsetof(mopt_host_api, cpu_gemm_name)) { /* what the figures ran on */
            h->report_string(report, "kernels", h->cpu_kernels_name());
            h->report_string(report, "gemm", h->cpu_gemm_name());
        }
        if (probe) bandwidth_fractions(h, report, dec, probe, runs, per_token, kv_per_token);
        h->report_metric(report, "runs", runs);
        h->report_metric(report, "threads", h->session_n_threads(s)); /* the count the session runs, not 0 for "all" */
        h->report_series(report, "latency_ms", lat, nlat);
        h->report_series(report, "decode_tok_s_runs", dec, runs);
    }
    if (s) h->session_free(s);
    free(prompt);
    free(out);
    free(pre);
    free(dec);
    free(lat);
    free(ttft);
    free(probe);
    return st;
}

static const mopt_opt_spec opts[] = {
    {"prompt_len", MOPT_OPT_LIST, 0, "prompt lengths to prefill (the first also seeds decoding)", "128", 0, -1, NULL},
    {"gen", MOPT_OPT_INT, 0, "tokens generated per run", "128", 1, 1 << 20, NULL},
    {"runs", MOPT_OPT_INT, 0, "measured runs", "5", 1, 10000, NULL},
    {"warmup", MOPT_OPT_INT, 0, "runs before measuring (not counted)", "1", 0, 100, NULL},
    {"text", MOPT_OPT_DATASET, 0, "text whose tokens form the prompts (default: synthetic ids)", NULL, 0, -1, NULL},
    {"bandwidth_mib", MOPT_OPT_INT, 0,
     "MiB of the buffer the machine's read bandwidth is measured on, on the same threads, before the first run and after each (0, or a "
     "session on a GPU: skip); each run's decode GB/s is reported as a fraction of the two beside it",
     "512", 0, 1 << 20, NULL},
};

MOPT_PASS_DEFINE(eval_bench_pass, MOPT_PASS_ANALYSIS, "eval.bench",
                 "prefill and decode tokens/s, per-token latency percentiles, time to first token, peak RSS",
                 opts, run);
