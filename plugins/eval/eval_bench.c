/* eval.bench: wall-clock speed of the pipeline's model. Per run: one prefill
 * of each prompt length, then `gen` greedy decode steps; warm-up runs are not
 * counted. Reports medians with min/max/stdev across runs (the spread is
 * reported, not hidden), per-token decode latency percentiles over every
 * measured token, time to first token, peak RSS and the model's bytes; the
 * weight bytes a decode step reads per token, the GB/s that makes at the
 * median decode speed, and the machine's read bandwidth measured on the same
 * threads, so decode speed reads as a fraction of what the memory allows. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "eval_plugin.h"
#include "eval_util.h"

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
    int64_t nlat = 0;
    for (int32_t r = -warm; r < runs && !st; r++) {
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
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        h->report_metric(report, "peak_rss_bytes", (double)ru.ru_maxrss * 1024.0);
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
        /* the host's read bandwidth is the limit only for a session on the CPU */
        const char *device = h->struct_size > offsetof(mopt_host_api, session_device) ? h->session_device(s) : "cpu";
        h->report_string(report, "device", device);
        const int64_t bw_mib = strcmp(device, "cpu") == 0 ? h->opt_int(o, "bandwidth_mib") : 0;
        if (bw_mib > 0) {
            const double bw = h->read_bandwidth(h->session_n_threads(s), (size_t)bw_mib << 20, 5);
            if (bw > 0) {
                h->report_metric(report, "read_gb_s", bw);
                h->report_metric(report, "decode_bandwidth_fraction", dec_gbs / bw);
                h->report_metric(report, "decode_weight_bandwidth_fraction", tok_s * per_token / 1e9 / bw); /* the weights alone */
            }
        }
        h->report_metric(report, "runs", runs);
        h->report_metric(report, "threads", h->session_n_threads(s)); /* the count the session runs, not 0 for "all" */
        h->report_series(report, "latency_ms", lat, nlat);
    }
    if (s) h->session_free(s);
    free(prompt);
    free(out);
    free(pre);
    free(dec);
    free(lat);
    free(ttft);
    return st;
}

static const mopt_opt_spec opts[] = {
    {"prompt_len", MOPT_OPT_LIST, 0, "prompt lengths to prefill (the first also seeds decoding)", "128", 0, -1, NULL},
    {"gen", MOPT_OPT_INT, 0, "tokens generated per run", "128", 1, 1 << 20, NULL},
    {"runs", MOPT_OPT_INT, 0, "measured runs", "5", 1, 10000, NULL},
    {"warmup", MOPT_OPT_INT, 0, "runs before measuring (not counted)", "1", 0, 100, NULL},
    {"text", MOPT_OPT_DATASET, 0, "text whose tokens form the prompts (default: synthetic ids)", NULL, 0, -1, NULL},
    {"bandwidth_mib", MOPT_OPT_INT, 0,
     "MiB of the buffer the machine's read bandwidth is measured on, on the same threads (0, or a session on a GPU: skip); decode GB/s is reported "
     "as a fraction of it",
     "512", 0, 1 << 20, NULL},
};

MOPT_PASS_DEFINE(eval_bench_pass, MOPT_PASS_ANALYSIS, "eval.bench",
                 "prefill and decode tokens/s, per-token latency percentiles, time to first token, peak RSS",
                 opts, run);
