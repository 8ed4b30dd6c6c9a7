/* example.weight_stats: per-linear weight statistics, written against the
 * public headers only and built out of tree in the tests. It keeps no global
 * state and reaches the core only through the host table. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "mopt/plugin_util.h"

static mopt_status run(const mopt_host_api *host, mopt_pass_ctx *ctx, mopt_graph *graph, const mopt_options *opts,
                       mopt_report *report, mopt_error *err) {
    if (!graph) return host->error_set(err, MOPT_E_INVALID, "example.weight_stats", "needs a model");
    const char *which = host->opt_string(opts, "layers");
    int verbose = host->opt_bool(opts, "print");
    double overall_absmax = 0;
    int64_t n_linear = 0, n_weights = 0;
    int32_t nn = host->graph_n_nodes(graph);
    for (int32_t i = 0; i < nn; i++) {
        const mopt_node *n = host->graph_node(graph, i);
        if (n->op != MOPT_OP_LINEAR || !n->weight) continue;
        int is_attn = n->role >= MOPT_ROLE_ATTN_NORM && n->role <= MOPT_ROLE_ATTN_RESIDUAL;
        if ((!strcmp(which, "attn") && !is_attn) || (!strcmp(which, "mlp") && is_attn)) continue;
        int64_t cnt = host->tensor_nelements(n->weight);
        float buf[4096];
        double sum = 0, sq = 0, absmax = 0;
        for (int64_t off = 0; off < cnt; off += 4096) {
            int64_t k = cnt - off < 4096 ? cnt - off : 4096;
            mopt_status st = host->tensor_read_f32(n->weight, off, k, buf, err);
            if (st) return st;
            for (int64_t j = 0; j < k; j++) {
                sum += buf[j];
                sq += (double)buf[j] * buf[j];
                if (fabs(buf[j]) > absmax) absmax = fabs(buf[j]);
            }
        }
        double mean = sum / (double)cnt, sd = sqrt(fmax(sq / (double)cnt - mean * mean, 0));
        char key[128];
        snprintf(key, sizeof key, "%s.absmax", n->name);
        host->report_metric(report, key, absmax);
        snprintf(key, sizeof key, "%s.std", n->name);
        host->report_metric(report, key, sd);
        if (verbose) host->log(ctx, "%-20s mean % .5f  std %.5f  absmax %.5f", n->name, mean, sd, absmax);
        if (absmax > overall_absmax) overall_absmax = absmax;
        n_linear++;
        n_weights += cnt;
        host->progress(ctx, i + 1, nn);
    }
    host->report_metric(report, "linear_layers", (double)n_linear);
    host->report_metric(report, "linear_weights", (double)n_weights);
    host->report_metric(report, "absmax", overall_absmax);
    return MOPT_OK;
}

static const char *const layer_choices[] = {"all", "attn", "mlp", NULL};

static const mopt_opt_spec opts[] = {
    {"layers", MOPT_OPT_ENUM, 0, "which linears to measure", "all", 0, -1, layer_choices},
    {"print", MOPT_OPT_BOOL, 0, "log one line per linear on stderr", "false", 0, -1, NULL},
};

static MOPT_PASS_DEFINE(weight_stats, MOPT_PASS_ANALYSIS, "example.weight_stats",
                 "mean, std and absmax of every linear layer's weights",
                 opts, run);

MOPT_PLUGIN_DEFINE("example", "0.1.0", "MIT",
                   "example third-party plugin: weight statistics",
                   &weight_stats)
