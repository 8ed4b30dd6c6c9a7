/* Shared quantization helpers (see qcommon.h). */
#include <fnmatch.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qcommon.h"

mopt_status q_check_spec(const mopt_host_api *h, const char *pass, qspec sp, mopt_error *err) {
    if (sp.bits != 2 && sp.bits != 3 && sp.bits != 4 && sp.bits != 8)
        return h->error_set(err, MOPT_E_INVALID, pass, "bits=%d has no packed format (2, 3, 4 or 8)", sp.bits);
    if (sp.group != -1 && (sp.group <= 0 || sp.group % MOPT_QBLOCK != 0))
        return h->error_set(err, MOPT_E_INVALID, pass,
                            "group_size=%d must be a multiple of %d or -1 for a whole row (a shorter last group "
                            "is allowed)",
                            sp.group, MOPT_QBLOCK);
    return MOPT_OK;
}

mopt_status q_check_int_options(const mopt_host_api *h, const mopt_options *o, mopt_error *err) {
    return q_check_spec(h, "quant", q_spec_from(h, o), err);
}

qspec q_spec_from(const mopt_host_api *h, const mopt_options *o) {
    qspec sp = {(int32_t)h->opt_int(o, "bits"), (int32_t)h->opt_int(o, "group_size"), h->opt_bool(o, "sym")};
    return sp;
}

static bool excluded(const mopt_host_api *h, const mopt_options *o, const char *node, const char *tensor) {
    for (int32_t i = 0; i < h->opt_list_len(o, "exclude"); i++) {
        const char *pat = h->opt_list_item(o, "exclude", i);
        if (fnmatch(pat, node, 0) == 0 || fnmatch(pat, tensor, 0) == 0) return true;
    }
    return false;
}

mopt_status q_collect(const mopt_host_api *h, mopt_graph *g, const mopt_options *o, qlinear **out, int32_t *n,
                      mopt_error *err) {
    int32_t nn = h->graph_n_nodes(g), cnt = 0;
    qlinear *ls = calloc((size_t)(nn ? nn : 1), sizeof *ls);
    if (!ls) return h->error_set(err, MOPT_E_NOMEM, "quant", "out of memory");
    for (int32_t i = 0; i < nn; i++) {
        const mopt_node *node = h->graph_node(g, i);
        if (node->op != MOPT_OP_LINEAR || node->layer < 0 || !node->weight) continue;
        if (excluded(h, o, node->name, node->weight->name)) continue;
        qlinear *l = &ls[cnt++];
        l->node = i;
        l->layer = node->layer;
        l->role = node->role;
        l->out = node->weight->ne[1];
        l->in = node->weight->ne[0];
        snprintf(l->wname, sizeof l->wname, "%s", node->weight->name);
        snprintf(l->nname, sizeof l->nname, "%s", node->name);
    }
    if (cnt == 0) {
        free(ls);
        return h->error_set(err, MOPT_E_INVALID, "quant", "no linear layer left to quantize (check exclude)");
    }
    *out = ls;
    *n = cnt;
    return MOPT_OK;
}

int32_t q_layer_linears(const qlinear *all, int32_t n, int32_t layer, const qlinear **out, int32_t cap) {
    int32_t k = 0;
    for (int32_t i = 0; i < n; i++)
        if (all[i].layer == layer && k < cap) out[k++] = &all[i];
    return k;
}

float *q_weight_f32(const mopt_host_api *h, mopt_graph *g, const qlinear *l, mopt_error *err) {
    mopt_tensor *t = h->graph_find_tensor(g, l->wname);
    float *w = malloc((size_t)(l->out * l->in) * sizeof *w);
    if (!t || !w) {
        free(w);
        h->error_set(err, MOPT_E_NOMEM, "quant", "cannot read %s", l->wname);
        return NULL;
    }
    for (int64_t r = 0; r < l->out; r++)
        if (h->weight_row_f32(t, r, w + r * l->in, err)) {
            free(w);
            return NULL;
        }
    return w;
}

void q_grid(const mopt_host_api *h, const float *w, int64_t n, int64_t stride, qspec sp, float *scale, uint8_t *zero) {
    const int32_t maxq = (1 << sp.bits) - 1;
    float mn = INFINITY, mx = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        float v = w[i * stride];
        mn = fminf(mn, v);
        mx = fmaxf(mx, v);
    }
    float s;
    int32_t z;
    if (sp.sym) {
        float a = fmaxf(fabsf(mn), fabsf(mx));
        if (sp.bits == 8) {
            s = a / 127.0f;
            z = 128;
        } else {
            s = 2.0f * a / (float)maxq;
            z = (maxq + 1) / 2;
        }
        if (!(s > 0)) s = 1.0f;
        s = h->f16_round(s);
        if (!(s > 0)) s = 6.0e-8f;
    } else {
        s = fmaxf(mx - mn, 1e-5f) / (float)maxq;
        s = h->f16_round(s);
        if (!(s > 0)) s = 6.0e-8f;
        float zf = nearbyintf(-mn / s);
        z = (int32_t)(zf < 0 ? 0 : zf > maxq ? maxq : zf);
    }
    *scale = s;
    *zero = (uint8_t)z;
}

void q_int8_rows(const float *W, int64_t out, int64_t in, int8_t *q, float *s) {
    for (int64_t r = 0; r < out; r++) {
        float mx = 0;
        for (int64_t j = 0; j < in; j++) mx = fmaxf(mx, fabsf(W[r * in + j]));
        s[r] = mx > 0 ? mx / 127.0f : 1.0f;
        for (int64_t j = 0; j < in; j++) {
            const float v = nearbyintf(W[r * in + j] / s[r]);
            q[r * in + j] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
        }
    }
}

void q_rtn(const mopt_host_api *h, const float *W, int64_t out, int64_t in, qspec sp, uint8_t *q, float *scales,
           uint8_t *zeros) {
    const int64_t gs = sp.group > 0 ? sp.group : in, ng = (in + gs - 1) / gs;
    for (int64_t r = 0; r < out; r++)
        for (int64_t g = 0; g < ng; g++) {
            int64_t c0 = g * gs, c1 = c0 + gs < in ? c0 + gs : in;
            float s;
            uint8_t z;
            q_grid(h, W + r * in + c0, c1 - c0, 1, sp, &s, &z);
            scales[r * ng + g] = s;
            zeros[r * ng + g] = z;
            for (int64_t c = c0; c < c1; c++) q[r * in + c] = q_level(W[r * in + c], s, z, sp.bits);
        }
}

void q_fp8_rows(const mopt_host_api *h, const float *W, int64_t out, int64_t in, int per_tensor, uint8_t *q, float *scales) {
    float all = 0;
    for (int64_t r = 0; r < out; r++) {
        float mx = 0;
        for (int64_t j = 0; j < in; j++) mx = fmaxf(mx, fabsf(W[r * in + j]));
        scales[r] = mx > 0 ? mx / 448.0f : 1.0f;
        all = fmaxf(all, mx);
    }
    if (per_tensor) scales[0] = all > 0 ? all / 448.0f : 1.0f;
    for (int64_t r = 0; r < out; r++)
        for (int64_t j = 0; j < in; j++) q[r * in + j] = h->f32_to_e4m3(W[r * in + j] / scales[per_tensor ? 0 : r]);
}

void q_fake_quant(const mopt_host_api *h, float *W, int64_t out, int64_t in, qspec sp) {
    const int64_t gs = sp.group > 0 ? sp.group : in;
    for (int64_t r = 0; r < out; r++)
        for (int64_t c0 = 0; c0 < in; c0 += gs) {
            int64_t c1 = c0 + gs < in ? c0 + gs : in;
            float s;
            uint8_t z;
            q_grid(h, W + r * in + c0, c1 - c0, 1, sp, &s, &z);
            for (int64_t c = c0; c < c1; c++) W[r * in + c] = q_deq(q_level(W[r * in + c], s, z, sp.bits), s, z);
        }
}

mopt_status q_replace(const mopt_host_api *h, mopt_graph *g, mopt_tensor *t, mopt_error *err) {
    if (!t) return err && err->code ? (mopt_status)err->code : MOPT_E_NOMEM;
    mopt_status st = h->graph_replace_tensor(g, t, err);
    if (st) h->tensor_free(t);
    return st;
}

mopt_status q_rtn_install(const mopt_host_api *h, mopt_graph *g, const qlinear *l, qspec sp, const float *W, const char *pass,
                          mopt_error *err) {
    const int64_t gs = sp.group > 0 ? sp.group : l->in, ng = (l->in + gs - 1) / gs;
    uint8_t *q = malloc((size_t)(l->out * l->in)), *z = malloc((size_t)(l->out * ng));
    float *s = malloc((size_t)(l->out * ng) * sizeof *s);
    mopt_status st = q && z && s ? MOPT_OK : h->error_set(err, MOPT_E_NOMEM, pass, "out of memory");
    if (!st) {
        q_rtn(h, W, l->out, l->in, sp, q, s, z);
        st = q_install(h, g, l, sp, q, s, z, NULL, err);
    }
    free(q);
    free(z);
    free(s);
    return st;
}

mopt_status q_install(const mopt_host_api *h, mopt_graph *g, const qlinear *l, qspec sp, const uint8_t *q,
                      const float *scales, const uint8_t *zeros, const int32_t *g_idx, mopt_error *err) {
    return q_replace(h, g, h->qint_pack(l->wname, l->out, l->in, sp.bits, sp.group, q, scales, sp.sym ? NULL : zeros, g_idx, err),
                     err);
}

mopt_status q_install_f32(const mopt_host_api *h, mopt_graph *g, const char *name, int32_t ndim, const int64_t *dims,
                          const float *data, mopt_error *err) {
    mopt_tensor *t = h->tensor_new(name, MOPT_DTYPE_F32, ndim, dims, err);
    if (t) memcpy(t->data, data, (size_t)h->tensor_nelements(t) * sizeof(float));
    return q_replace(h, g, t, err);
}

void q_measure(const mopt_host_api *h, mopt_graph *g, const qlinear *ls, int32_t n, int64_t *bytes, int64_t *weights) {
    *bytes = *weights = 0;
    for (int32_t i = 0; i < n; i++) {
        mopt_tensor *t = h->graph_find_tensor(g, ls[i].wname);
        if (!t) continue;
        *bytes += h->weight_storage_bytes(t);
        *weights += ls[i].out * ls[i].in;
    }
}

void q_report(const mopt_host_api *h, mopt_report *r, const char *method, qspec sp, int64_t bytes_before,
              int64_t bytes_after, int64_t weights, int32_t n_linear) {
    h->report_string(r, "method", method);
    h->report_metric(r, "bits", sp.bits);
    h->report_metric(r, "group_size", sp.group);
    h->report_metric(r, "sym", sp.sym);
    h->report_metric(r, "weight_bytes_baseline", (double)bytes_before);
    h->report_metric(r, "weight_bytes", (double)bytes_after);
    h->report_metric(r, "bits_per_weight", weights ? 8.0 * (double)bytes_after / (double)weights : 0);
    h->report_metric(r, "bits_per_weight_baseline", weights ? 8.0 * (double)bytes_before / (double)weights : 0);
    h->report_metric(r, "linear_layers", n_linear);
}
