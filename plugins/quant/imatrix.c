/* quant.imatrix: an importance matrix from calibration text, as llama-imatrix
 * computes one: for every decoder linear, each input column's mean x^2 over the
 * calibration tokens, written as llama.cpp's imatrix.dat under the linears'
 * GGUF names (a fused attn_qkv once; q, k and v read one input). The model is
 * not changed. export.gguf<imatrix=F> and llama-quantize --imatrix F weight
 * their block quantizers' errors with it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "calib.h"
#include "passes.h"
#include "qcommon.h"

typedef struct {
    const qlinear *ls;
    int32_t n;
    double **sum; /* per linear: sum of x^2 per input column */
} sumsq;

static void track_sumsq(void *user, int32_t sample, int32_t node, const float *const *in, const int32_t *in_w, const float *out,
                        int32_t out_w, int32_t T) {
    (void)sample, (void)out, (void)out_w;
    const sumsq *s = user;
    for (int32_t i = 0; i < s->n; i++) {
        if (s->ls[i].node != node || !s->sum[i] || in_w[0] != s->ls[i].in) continue;
        for (int32_t t = 0; t < T; t++)
            for (int32_t j = 0; j < in_w[0]; j++) {
                const double x = in[0][(size_t)t * in_w[0] + j];
                s->sum[i][j] += x * x;
            }
    }
}

static mopt_status run(const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *g, const mopt_options *o, mopt_report *report,
                       mopt_error *err) {
    if (!g) return h->error_set(err, MOPT_E_INVALID, "quant.imatrix", "needs a model");
    struct stat sb; /* a file mopt did not write is kept unless asked (a link is replaced, never followed) */
    if (!h->opt_bool(o, "force") && lstat(h->opt_string(o, "out"), &sb) == 0)
        return h->error_set(err, MOPT_E_INVALID, "quant.imatrix", "%s exists: force=true replaces it", h->opt_string(o, "out"));
    qlinear *ls;
    int32_t n, nft = 0;
    mopt_status st = q_collect(h, g, o, &ls, &n, err);
    if (st) return st;
    mopt_file_tensor *fts = NULL;
    st = h->file_tensors(g, MOPT_NAMING_GGUF, &fts, &nft, err);
    /* the file tensor each linear goes out as: the first of its sources, so a fused attn_qkv is counted once */
    int32_t *file_of = malloc((size_t)n * sizeof *file_of);
    double **sum = calloc((size_t)n, sizeof *sum);
    mopt_imatrix m = {0};
    m.e = calloc((size_t)n, sizeof *m.e);
    if (!st && (!file_of || !sum || !m.e)) st = h->error_set(err, MOPT_E_NOMEM, "quant.imatrix", "out of memory");
    for (int32_t i = 0; i < n && !st; i++) {
        file_of[i] = -1;
        for (int32_t f = 0; f < nft; f++)
            if (fts[f].ndim == 2 && fts[f].n_src > 0 && !strcmp(fts[f].src[0]->name, ls[i].wname)) file_of[i] = f;
        if (file_of[i] >= 0 && !(sum[i] = calloc((size_t)ls[i].in, sizeof **sum)))
            st = h->error_set(err, MOPT_E_NOMEM, "quant.imatrix", "out of memory");
    }
    int32_t N = 0, L = 0;
    sumsq s = {ls, n, sum};
    if (!st) st = calib_observe_model(h, ctx, g, o, track_sumsq, &s, &N, &L, err);
    for (int32_t i = 0; i < n && !st; i++) {
        if (file_of[i] < 0) continue;
        mopt_imatrix_entry *e = &m.e[m.n];
        snprintf(e->name, sizeof e->name, "%s", fts[file_of[i]].name);
        e->ncall = N; /* one call per calibration window, as llama-imatrix counts its chunks */
        e->n = (int32_t)ls[i].in;
        if (!(e->mean = malloc((size_t)e->n * sizeof *e->mean))) {
            st = h->error_set(err, MOPT_E_NOMEM, "quant.imatrix", "out of memory");
            break;
        }
        for (int32_t j = 0; j < e->n; j++) e->mean[j] = (float)(sum[i][j] / ((double)N * L));
        m.n++;
    }
    if (!st && !m.n) st = h->error_set(err, MOPT_E_INVALID, "quant.imatrix", "no selected linear goes into a GGUF file");
    if (!st) {
        const char *calib = h->opt_string(o, "calib"), *slash = strrchr(calib, '/');
        snprintf(m.dataset, sizeof m.dataset, "%s", slash ? slash + 1 : calib);
        m.chunks = N;
        m.chunk_size = L;
        st = h->imatrix_write(h->opt_string(o, "out"), &m, err);
    }
    if (!st) {
        h->report_artifact(report, "imatrix", h->opt_string(o, "out"));
        h->report_metric(report, "entries", m.n);
        h->report_metric(report, "tokens", (double)N * L);
    }
    for (int32_t i = 0; i < n; i++) {
        if (sum) free(sum[i]);
        if (m.e) free(m.e[i].mean);
    }
    free(m.e);
    free(sum);
    free(file_of);
    free(fts);
    free(ls);
    return st;
}

static const mopt_opt_spec opts[] = {
    {"out", MOPT_OPT_STRING, MOPT_OPT_REQUIRED, "the importance matrix to write, atomically: llama.cpp's GGUF imatrix when it ends in .gguf, else its imatrix.dat", NULL, 0, -1, NULL},
    {"force", MOPT_OPT_BOOL, 0, "replace an existing out", "false", 0, -1, NULL},
    Q_SELECT_OPTS,
    Q_CALIB_OPTS(1),
};

MOPT_PASS_DEFINE(quant_imatrix_pass, MOPT_PASS_ANALYSIS, "quant.imatrix",
                 "importance matrix for GGUF k-quants: each decoder linear's mean x^2 per input column over calibration text, "
                 "written as llama.cpp's imatrix.dat or GGUF imatrix",
                 opts, run);
