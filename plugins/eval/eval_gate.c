/* eval.gate: thresholds on metrics already in the report. A failed gate marks
 * the report's gates failed and names the metric, its value and the threshold;
 * the pipeline goes on (reports still get written) and `mopt run` / `mopt
 * pipeline` exit with status 3. Named gates:
 *   max_ppl_increase  ppl_ratio - 1 (eval.compare), else ppl / ppl_baseline - 1
 *   min_top1_agree    top1_agree           max_kl_mean    kl_mean
 *   max_p95_ms        latency_ms_p95       min_speedup    speedup
 *   min_decode_tok_s  decode_tok_s         max_bits_per_weight  bits_per_weight
 * and `checks`: any "metric<=value" / "metric>=value" (or metric:max:value /
 * metric:min:value in the one-line text form, where < and > delimit options). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval_plugin.h"

static const struct {
    const char *option, *metric, *op;
} named[] = {{"max_ppl_increase", "ppl_increase", "<="}, {"min_top1_agree", "top1_agree", ">="},
             {"max_kl_mean", "kl_mean", "<="},           {"max_p95_ms", "latency_ms_p95", "<="},
             {"min_speedup", "speedup", ">="},           {"min_decode_tok_s", "decode_tok_s", ">="},
             {"max_bits_per_weight", "bits_per_weight", "<="}};

static mopt_status gate(const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_report *r, const char *metric, const char *op, double thr,
                        int32_t *failed, mopt_error *err) {
    double v;
    if (!strcmp(metric, "ppl_increase")) {
        double ratio = h->report_get_metric(r, "ppl_ratio");
        if (isnan(ratio)) ratio = h->report_get_metric(r, "ppl") / h->report_get_metric(r, "ppl_baseline");
        v = ratio - 1;
    } else {
        v = h->report_get_metric(r, metric);
    }
    if (isnan(v))
        return h->error_set(err, MOPT_E_INVALID, "eval.gate", "no pass before the gate reported '%s'", metric);
    int ok = op[0] == '<' ? v <= thr : v >= thr;
    if (!ok) {
        (*failed)++;
        h->log(ctx, "gate failed: %s = %g, required %s %g", metric, v, op, thr);
    }
    return h->report_gate(r, metric, op, thr, v, ok);
}

static mopt_status run(const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *g, const mopt_options *o,
                       mopt_report *report, mopt_error *err) {
    int32_t failed = 0, checked = 0;
    mopt_status st = MOPT_OK;
    for (size_t i = 0; i < sizeof named / sizeof *named && !st; i++)
        if (h->opt_is_set(o, named[i].option)) {
            st = gate(h, ctx, report, named[i].metric, named[i].op, h->opt_float(o, named[i].option), &failed, err);
            checked++;
        }
    for (int32_t i = 0; i < h->opt_list_len(o, "checks") && !st; i++) {
        /* "metric<=value", "metric>=value", or (in the text form, where < and > nest) "metric:max:value" */
        const char *c = h->opt_list_item(o, "checks", i), *op = NULL, *num = NULL;
        char metric[128];
        const char *at = strstr(c, "<=") ? strstr(c, "<=") : strstr(c, ">=");
        if (at) {
            op = at[0] == '<' ? "<=" : ">=";
            num = at + 2;
        } else if ((at = strstr(c, ":max:")) || (at = strstr(c, ":min:"))) {
            op = at[2] == 'a' ? "<=" : ">=";
            num = at + 5;
        }
        if (!op)
            return h->error_set(err, MOPT_E_INVALID, "eval.gate", "check '%s' needs metric<=value, metric>=value, metric:max:value or metric:min:value", c);
        char *end;
        double thr = strtod(num, &end);
        if (end == num || *end) return h->error_set(err, MOPT_E_INVALID, "eval.gate", "check '%s': '%s' is not a number", c, num);
        snprintf(metric, sizeof metric, "%.*s", (int)(at - c), c);
        st = gate(h, ctx, report, metric, op, thr, &failed, err);
        checked++;
    }
    if (!st && checked == 0) return h->error_set(err, MOPT_E_INVALID, "eval.gate", "no threshold given (see 'mopt describe eval.gate')");
    if (!st) {
        h->report_metric(report, "gates_checked", checked);
        h->report_metric(report, "gates_failed", failed);
    }
    return st;
}

static const mopt_opt_spec opts[] = {
    {"max_ppl_increase", MOPT_OPT_FLOAT, 0, "largest allowed ppl / ppl_baseline - 1", NULL, 0, 1e9, NULL},
    {"min_top1_agree", MOPT_OPT_FLOAT, 0, "smallest allowed top-1 agreement", NULL, 0, 1, NULL},
    {"max_kl_mean", MOPT_OPT_FLOAT, 0, "largest allowed mean KL", NULL, 0, 1e9, NULL},
    {"max_p95_ms", MOPT_OPT_FLOAT, 0, "largest allowed p95 per-token latency (ms)", NULL, 0, 1e9, NULL},
    {"min_speedup", MOPT_OPT_FLOAT, 0, "smallest allowed speedup", NULL, 0, 1e9, NULL},
    {"min_decode_tok_s", MOPT_OPT_FLOAT, 0, "smallest allowed decode tokens/s", NULL, 0, 1e12, NULL},
    {"max_bits_per_weight", MOPT_OPT_FLOAT, 0, "largest allowed bits per weight", NULL, 0, 64, NULL},
    {"checks", MOPT_OPT_LIST, 0, "more thresholds: metric<=value, metric>=value, metric:max:value, metric:min:value", "", 0, -1, NULL},
};

MOPT_PASS_DEFINE(eval_gate_pass, MOPT_PASS_ANALYSIS, "eval.gate",
                 "fail the run (exit 3) when metrics cross thresholds; reports are still written",
                 opts, run);
