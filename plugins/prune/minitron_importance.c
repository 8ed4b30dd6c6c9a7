/* Minitron's activation importance (Muralidharan et al., 2024, best setting:
 * mean of |activation| over a window, then L2 over the windows), from one run
 * of the dense model over the calibration windows, layer by layer. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "minitron.h"

mt_shape mt_shape_of(const mopt_arch *a) { return (mt_shape){a->dim, a->ffn_dim, a->n_heads, a->n_kv_heads, a->n_layers}; }

void mt_importance_free(mt_importance *imp) {
    free(imp->channel);
    free(imp->neuron);
    free(imp->head);
    free(imp->block);
    memset(imp, 0, sizeof *imp);
}

typedef struct {
    const mopt_host_api *h;
    const mopt_graph *g;
    mt_importance *imp;
    int32_t layer, head_dim;
    double *chan_win; /* [windows][dim]: sum over the norms of mean |output| */
} observer;

static void add_norm_output(double *win, const float *y, int32_t w, int32_t T) {
    for (int32_t t = 0; t < T; t++)
        for (int32_t c = 0; c < w; c++) win[c] += fabs((double)y[(size_t)t * w + c]) / T;
}

static void observe(void *user, int32_t sample, int32_t node, const float *const *in, const int32_t *in_w, const float *out,
                    int32_t out_w, int32_t T) {
    observer *ob = user;
    const mopt_node *n = ob->h->graph_node(ob->g, node);
    const mt_shape s = ob->imp->of;
    if (n->op == MOPT_OP_RMSNORM || n->op == MOPT_OP_LAYERNORM) {
        add_norm_output(ob->chan_win + (size_t)sample * s.dim, out, out_w, T);
    } else if (n->role == MOPT_ROLE_MLP_DOWN) {
        double *imp = ob->imp->neuron + (size_t)ob->layer * s.ffn;
        for (int32_t j = 0; j < in_w[0]; j++) {
            double m = 0;
            for (int32_t t = 0; t < T; t++) m += fabs((double)in[0][(size_t)t * in_w[0] + j]);
            m /= T;
            imp[j] += m * m;
        }
    } else if (n->role == MOPT_ROLE_ATTN_O) {
        double *imp = ob->imp->head + (size_t)ob->layer * s.heads;
        for (int32_t hh = 0; hh < s.heads; hh++) {
            double m = 0;
            for (int32_t t = 0; t < T; t++) {
                const float *x = in[0] + (size_t)t * in_w[0] + (size_t)hh * ob->head_dim;
                double sq = 0;
                for (int32_t d = 0; d < ob->head_dim; d++) sq += (double)x[d] * x[d];
                m += sqrt(sq);
            }
            m /= T;
            imp[hh] += m * m;
        }
    }
}

/* The final norm's output, which the layer runner never reaches, from the last block's output. */
static mopt_status final_norm(const mopt_host_api *h, const mopt_graph *g, const calib *c, double *chan_win, mopt_error *err) {
    const int32_t fi = h->graph_find_node(g, MOPT_ROLE_FINAL_NORM, -1);
    if (fi < 0) return MOPT_OK;
    const mopt_node *n = h->graph_node(g, fi);
    const int32_t D = c->D;
    float *w = malloc((size_t)D * sizeof *w), *b = calloc((size_t)D, sizeof *b);
    mopt_status st = w && b ? MOPT_OK : h->error_set(err, MOPT_E_NOMEM, "prune.minitron", "out of memory");
    if (!st) st = h->tensor_read_f32(n->weight, 0, D, w, err);
    if (!st && n->bias) st = h->tensor_read_f32(n->bias, 0, D, b, err);
    for (int32_t s = 0; s < c->N && !st; s++)
        for (int32_t t = 0; t < c->L; t++) {
            const float *x = c->x + ((size_t)s * c->L + t) * D;
            double mean = 0, var = 0;
            if (n->op == MOPT_OP_LAYERNORM)
                for (int32_t k = 0; k < D; k++) mean += x[k] / (double)D;
            for (int32_t k = 0; k < D; k++) var += (x[k] - mean) * (x[k] - mean) / D;
            const double inv = 1.0 / sqrt(var + n->eps);
            double *win = chan_win + (size_t)s * D;
            for (int32_t k = 0; k < D; k++) win[k] += fabs((x[k] - mean) * inv * w[k] + b[k]) / c->L;
        }
    free(w), free(b);
    return st;
}

mopt_status mt_importance_run(calib *c, const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *g, const mopt_options *o,
                              mt_importance *imp, mopt_error *err) {
    const mopt_arch *a = h->graph_arch(g);
    memset(imp, 0, sizeof *imp);
    imp->of = mt_shape_of(a);
    mopt_status st = calib_init(c, h, ctx, g, o, (int64_t)a->n_layers + 1, err);
    if (st) return st;
    imp->channel = calloc((size_t)a->dim, sizeof(double));
    imp->neuron = calloc((size_t)a->n_layers * (size_t)a->ffn_dim, sizeof(double));
    imp->head = calloc((size_t)a->n_layers * (size_t)a->n_heads, sizeof(double));
    imp->block = calloc((size_t)a->n_layers, sizeof(double));
    observer ob = {h, g, imp, 0, a->head_dim, calloc((size_t)c->N * (size_t)a->dim, sizeof(double))};
    if (!imp->channel || !imp->neuron || !imp->head || !imp->block || !ob.chan_win)
        st = h->error_set(err, MOPT_E_NOMEM, "prune.minitron", "out of memory");
    const size_t tokens = (size_t)c->N * (size_t)c->L;
    for (int32_t l = 0; l < a->n_layers && !st; l++) {
        ob.layer = l;
        st = calib_run_layer(c, l, -1, observe, &ob, 1, err);
        double bi = 0;
        for (size_t t = 0; !st && t < tokens; t++) {
            const float *x = c->x + t * (size_t)c->D, *y = c->x_next + t * (size_t)c->D;
            double xy = 0, xx = 0, yy = 0;
            for (int32_t k = 0; k < c->D; k++) xy += (double)x[k] * y[k], xx += (double)x[k] * x[k], yy += (double)y[k] * y[k];
            bi += 1.0 - (xx > 0 && yy > 0 ? xy / sqrt(xx * yy) : 1.0);
        }
        imp->block[l] = bi / (double)tokens;
        calib_advance(c);
        calib_tick(c);
    }
    if (!st) st = final_norm(h, g, c, ob.chan_win, err);
    for (int64_t i = 0; !st && i < (int64_t)a->n_layers * a->ffn_dim; i++) imp->neuron[i] = sqrt(imp->neuron[i]);
    for (int64_t i = 0; !st && i < (int64_t)a->n_layers * a->n_heads; i++) imp->head[i] = sqrt(imp->head[i]);
    for (int32_t k = 0; !st && k < a->dim; k++) {
        double sq = 0;
        for (int32_t s = 0; s < c->N; s++) sq += ob.chan_win[(size_t)s * a->dim + k] * ob.chan_win[(size_t)s * a->dim + k];
        imp->channel[k] = sqrt(sq);
    }
    calib_tick(c);
    free(ob.chan_win);
    if (st) mt_importance_free(imp);
    return st;
}
