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

const char *const q_act_modes[] = {"none", "fp8", "fp8_static", NULL};

qspec q_spec_from(const mopt_host_api *h, const mopt_options *o) {
    const char *act = h->opt_string(o, "activations"); /* NULL for a pass without the option (QAT) */
    qspec sp = {(int32_t)h->opt_int(o, "bits"), (int32_t)h->opt_int(o, "group_size"), h->opt_bool(o, "sym"),
                act && !strcmp(act, "fp8") ? MOPT_QUANT_ACT_PER_TOKEN : 0, 0, act && !strcmp(act, "fp8_static")};
    return sp;
}

/* NULL when the pass takes linear node `node` (a decoder linear that matches
 * `only`, when given, and no `exclude` glob, by node or weight name); else
 * why it leaves it, in buf. */
static const char *left_reason(const mopt_host_api *h, const mopt_options *o, const mopt_node *node, char *buf, size_t cap) {
    const int lm = node->op == MOPT_OP_LM_HEAD && h->opt_bool(o, "lm_head");
    if (!lm && (node->op != MOPT_OP_LINEAR || node->layer < 0)) {
        snprintf(buf, cap, "%s", node->role == MOPT_ROLE_LM_HEAD ? "kept: lm_head=true quantizes it (rtn, fp8, nvfp4, mxfp4, mxfp8)"
                                                                  : "not a decoder linear");
        return buf;
    }
    for (int32_t i = 0; i < h->opt_list_len(o, "exclude"); i++) {
        const char *pat = h->opt_list_item(o, "exclude", i);
        if (fnmatch(pat, node->name, 0) == 0 || fnmatch(pat, node->weight->name, 0) == 0) {
            snprintf(buf, cap, "excluded by '%s'", pat);
            return buf;
        }
    }
    const int32_t n_only = h->opt_list_len(o, "only");
    for (int32_t i = 0; i < n_only; i++) {
        const char *pat = h->opt_list_item(o, "only", i);
        if (fnmatch(pat, node->name, 0) == 0 || fnmatch(pat, node->weight->name, 0) == 0) return NULL;
    }
    if (n_only) {
        snprintf(buf, cap, "not in only");
        return buf;
    }
    return NULL;
}

/* The names a glob could have matched, for an error: the first decoder linears' node and weight names. */
static void linear_names(const mopt_host_api *h, mopt_graph *g, char *buf, size_t cap) {
    int32_t shown = 0, total = 0;
    buf[0] = 0;
    for (int32_t i = 0; i < h->graph_n_nodes(g); i++) {
        const mopt_node *node = h->graph_node(g, i);
        if (node->op != MOPT_OP_LINEAR || node->layer < 0 || !node->weight) continue;
        if (total++ < 4)
            snprintf(buf + strlen(buf), cap - strlen(buf), "%s%s (%s)", shown++ ? ", " : "", node->name, node->weight->name);
    }
    if (total > 4) snprintf(buf + strlen(buf), cap - strlen(buf), ", ... (%d decoder linears)", total);
}

mopt_status q_collect(const mopt_host_api *h, mopt_graph *g, const mopt_options *o, qlinear **out, int32_t *n,
                      mopt_error *err) {
    int32_t nn = h->graph_n_nodes(g), cnt = 0;
    qlinear *ls = calloc((size_t)(nn ? nn : 1), sizeof *ls);
    if (!ls) return h->error_set(err, MOPT_E_NOMEM, "quant", "out of memory");
    char why[160];
    for (int32_t i = 0; i < nn; i++) {
        const mopt_node *node = h->graph_node(g, i);
        if (!node->weight || left_reason(h, o, node, why, sizeof why)) continue;
        if (node->op == MOPT_OP_LM_HEAD && h->graph_arch(g)->tied_embeddings) {
            free(ls);
            return h->error_set(err, MOPT_E_UNSUPPORTED, "quant",
                                "lm_head=true: %s is tied to the embeddings, whose lookup would change too; the tied table stays "
                                "in float (drop lm_head=true)",
                                node->weight->name);
        }
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
        char names[600];
        linear_names(h, g, names, sizeof names);
        free(ls);
        if (h->opt_list_len(o, "only"))
            return h->error_set(err, MOPT_E_INVALID, "quant", "only=%s matches no decoder linear%s%s%s; the linears are %s",
                                h->opt_string(o, "only"), h->opt_list_len(o, "exclude") ? " left by exclude=" : "",
                                h->opt_string(o, "exclude"), h->opt_list_len(o, "exclude") ? " (in a recipe: the later globs)" : "", names);
        return h->error_set(err, MOPT_E_INVALID, "quant", "no linear layer left to quantize (check exclude); the linears are %s", names);
    }
    *out = ls;
    *n = cnt;
    return MOPT_OK;
}

mopt_status q_check_whole_blocks(const mopt_host_api *h, const char *pass, const qlinear *ls, int32_t n, mopt_error *err) {
    for (int32_t i = 0; i < n; i++)
        if (ls[i].in % 32)
            return h->error_set(err, MOPT_E_UNSUPPORTED, pass, "%s has %lld inputs, not a multiple of 32; keep it with exclude=%s",
                                ls[i].nname, (long long)ls[i].in, ls[i].nname);
    return MOPT_OK;
}

int32_t q_layer_linears(const qlinear *all, int32_t n, int32_t layer, const qlinear **out, int32_t cap) {
    int32_t k = 0;
    for (int32_t i = 0; i < n; i++)
        if (all[i].layer == layer && k < cap) out[k++] = &all[i];
    return k;
}

mopt_status q_weight_amax(const mopt_host_api *h, mopt_graph *g, const qlinear *l, float *amax, mopt_error *err) {
    mopt_tensor *t = h->graph_find_tensor(g, l->wname);
    float *row = malloc((size_t)l->in * sizeof *row);
    mopt_status st = !t || !row ? h->error_set(err, MOPT_E_NOMEM, "quant", "cannot read %s", l->wname) : MOPT_OK;
    *amax = 0;
    for (int64_t r = 0; r < l->out && !st; r++) {
        st = h->weight_row_f32(t, r, row, err);
        for (int64_t j = 0; j < l->in && !st; j++) *amax = fmaxf(*amax, fabsf(row[j]));
    }
    free(row);
    return st;
}

void q_shared_input_amax(const mopt_host_api *h, mopt_graph *g, const qlinear *ls, int32_t n, const float *own, float *shared) {
    for (int32_t i = 0; i < n; i++) {
        const int32_t in = h->graph_node(g, ls[i].node)->inputs[0];
        shared[i] = own[i];
        for (int32_t j = 0; j < n; j++)
            if (h->graph_node(g, ls[j].node)->inputs[0] == in) shared[i] = fmaxf(shared[i], own[j]);
    }
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
        mn = q_min(mn, v);
        mx = q_max(mx, v);
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
        for (int64_t j = 0; j < in; j++) mx = q_max(mx, fabsf(W[r * in + j]));
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

void q_fp8_rows(const mopt_host_api *h, const float *W, int64_t out, int64_t in, int per_tensor, float shared_amax, uint8_t *q,
                float *scales) {
    float all = shared_amax;
    for (int64_t r = 0; r < out; r++) {
        float mx = 0;
        for (int64_t j = 0; j < in; j++) mx = q_max(mx, fabsf(W[r * in + j]));
        scales[r] = mx > 0 ? mx / 448.0f : 1.0f;
        all = fmaxf(all, mx);
    }
    if (per_tensor) scales[0] = all > 0 ? all / 448.0f : 1.0f;
    for (int64_t r = 0; r < out; r++)
        for (int64_t j = 0; j < in; j++) q[r * in + j] = h->f32_to_e4m3(W[r * in + j] / scales[per_tensor ? 0 : r]);
}

void q_fake_quant(const mopt_host_api *h, float *W, int64_t out, int64_t in, qspec sp) {
    if (sp.nvfp4) { /* ModelOpt's global scale max|W| / (6 * 448) over the matrix, then each row's blocks of 16 */
        float amax = 0;
        for (int64_t i = 0; i < out * in; i++) amax = fmaxf(amax, fabsf(W[i]));
        if (amax > 0 && isfinite(amax))
            for (int64_t r = 0; r < out; r++) h->mxfp_round(MOPT_MXFP_NVFP4, W + r * in, in, amax / (6.0f * 448.0f));
        return;
    }
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

const char *const q_gguf_types[] = {"",       "q4_0",   "q8_0",   "q2_k",   "q2_k_s", "q3_k",   "q3_k_s", "q3_k_m", "q3_k_l", "q4_k",
                                     "q5_k",   "q6_k",   "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", NULL};

int q_gguf_grid(int32_t ty) { return ty == 2 || ty == 8 || (ty >= 10 && ty <= 14); }

mopt_status q_gguf_quantize(const mopt_host_api *h, int32_t ty, float *W, int64_t out, int64_t in, const float *imp, uint8_t *blocks,
                            int decode, mopt_error *err) {
    const int64_t B = h->ggml_type_block(ty), bytes = h->ggml_type_block_bytes(ty);
    if (!q_gguf_grid(ty) || B <= 0 || in % B)
        return h->error_set(err, MOPT_E_INVALID, "quant", "ggml type %d: not a block grid for rows of %lld", (int)ty, (long long)in);
    uint8_t one[256];
    float per_d[256], per_dmin[256], sc[2];
    for (int64_t r = 0; r < out; r++)
        for (int64_t b = 0; b < in / B; b++) {
            float *x = W + r * in + b * B;
            uint8_t *blk = blocks ? blocks + (r * (in / B) + b) * bytes : one;
            mopt_status st = h->ggml_quantize_block(ty, x, imp ? imp + b * B : NULL, blk, err);
            if (st) return st;
            if (!decode) continue;
            const int P = h->ggml_block_basis(ty, blk, per_d, per_dmin, sc); /* decodes to d * per_d + dmin * per_dmin */
            for (int64_t j = 0; j < B; j++) x[j] = sc[0] * per_d[j] + (P > 1 ? sc[1] * per_dmin[j] : 0.0f);
        }
    return MOPT_OK;
}

mopt_status q_replace(const mopt_host_api *h, mopt_graph *g, mopt_tensor *t, mopt_error *err) {
    if (!t) return err && err->code ? (mopt_status)err->code : MOPT_E_NOMEM;
    mopt_status st = h->graph_replace_tensor(g, t, err);
    if (st) h->tensor_free(t);
    return st;
}

/* The packed QINT tensor of l's levels (sp.act's activation flags set). */
static mopt_tensor *qint_tensor(const mopt_host_api *h, const qlinear *l, qspec sp, const uint8_t *q, const float *scales,
                                const uint8_t *zeros, const int32_t *g_idx, mopt_error *err) {
    mopt_tensor *t = h->qint_pack(l->wname, l->out, l->in, sp.bits, sp.group, q, scales, sp.sym ? NULL : zeros, g_idx, err);
    if (t) t->quant->flags |= sp.act; /* W4A8: the kernels round activations to E4M3 per token */
    return t;
}

mopt_tensor *q_rtn_tensor(const mopt_host_api *h, const qlinear *l, qspec sp, const float *W, const char *pass, mopt_error *err) {
    const int64_t gs = sp.group > 0 ? sp.group : l->in, ng = (l->in + gs - 1) / gs;
    uint8_t *q = malloc((size_t)(l->out * l->in)), *z = malloc((size_t)(l->out * ng));
    float *s = malloc((size_t)(l->out * ng) * sizeof *s);
    mopt_tensor *t = NULL;
    if (q && z && s) {
        q_rtn(h, W, l->out, l->in, sp, q, s, z);
        t = qint_tensor(h, l, sp, q, s, z, NULL, err);
    } else {
        h->error_set(err, MOPT_E_NOMEM, pass, "out of memory");
    }
    free(q);
    free(z);
    free(s);
    return t;
}

mopt_status q_rtn_install(const mopt_host_api *h, mopt_graph *g, const qlinear *l, qspec sp, const float *W, const char *pass,
                          mopt_error *err) {
    return q_replace(h, g, q_rtn_tensor(h, l, sp, W, pass, err), err);
}

mopt_status q_install(const mopt_host_api *h, mopt_graph *g, const qlinear *l, qspec sp, const uint8_t *q,
                      const float *scales, const uint8_t *zeros, const int32_t *g_idx, mopt_error *err) {
    return q_replace(h, g, qint_tensor(h, l, sp, q, scales, zeros, g_idx, err), err);
}

mopt_status q_install_f32(const mopt_host_api *h, mopt_graph *g, const char *name, int32_t ndim, const int64_t *dims,
                          const float *data, mopt_error *err) {
    mopt_tensor *t = h->tensor_new(name, MOPT_DTYPE_F32, ndim, dims, err);
    if (t) memcpy(t->data, data, (size_t)h->tensor_nelements(t) * sizeof(float));
    return q_replace(h, g, t, err);
}

/* the token embedding lookup's node, or NULL */
static const mopt_node *embedding_node(const mopt_host_api *h, mopt_graph *g) {
    const int32_t i = h->graph_find_node(g, MOPT_ROLE_EMBED, -1);
    const mopt_node *n = i >= 0 ? h->graph_node(g, i) : NULL;
    return n && n->op == MOPT_OP_EMBEDDING && n->weight && n->weight->ndim == 2 ? n : NULL;
}

mopt_status q_embeddings_check(const mopt_host_api *h, mopt_graph *g, const char *pass, mopt_error *err) {
    const mopt_node *n = embedding_node(h, g);
    if (!n) return h->error_set(err, MOPT_E_UNSUPPORTED, pass, "embeddings=true: the model has no token embedding table to quantize");
    if (h->graph_arch(g)->tied_embeddings)
        return h->error_set(err, MOPT_E_UNSUPPORTED, pass,
                            "embeddings=true: %s is tied to lm_head, which would change with it; a tied table stays in float "
                            "(drop embeddings=true)",
                            n->weight->name);
    if (n->weight->dtype >= MOPT_DTYPE_PACKED_FIRST)
        return h->error_set(err, MOPT_E_INVALID, pass, "embeddings=true: %s is already packed", n->weight->name);
    return MOPT_OK;
}

mopt_status q_embeddings(const mopt_host_api *h, mopt_graph *g, qspec sp, const char *pass, mopt_report *report, mopt_error *err) {
    const mopt_node *n = embedding_node(h, g);
    if (!n) return h->error_set(err, MOPT_E_UNSUPPORTED, pass, "embeddings=true: the model has no token embedding table to quantize");
    qlinear l = {.node = -1, .layer = -1, .role = MOPT_ROLE_EMBED, .out = n->weight->ne[1], .in = n->weight->ne[0]};
    snprintf(l.wname, sizeof l.wname, "%s", n->weight->name);
    snprintf(l.nname, sizeof l.nname, "%s", n->name);
    const int64_t before = h->weight_storage_bytes(n->weight);
    sp.act = 0, sp.w4a8_static = 0; /* a lookup has no activations to round */
    float *W = q_weight_f32(h, g, &l, err);
    mopt_status st = W ? q_rtn_install(h, g, &l, sp, W, pass, err) : err && err->code ? (mopt_status)err->code : MOPT_E_NOMEM;
    free(W);
    if (st) return st;
    const mopt_tensor *t = h->graph_find_tensor(g, l.wname);
    h->report_string(report, "embeddings", l.wname);
    h->report_metric(report, "embedding_bytes_baseline", (double)before);
    h->report_metric(report, "embedding_bytes", t ? (double)h->weight_storage_bytes(t) : 0);
    return MOPT_OK;
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

/* Short names of the linear roles for the coverage line. */
static const char *kind_of(int32_t role) {
    switch (role) {
    case MOPT_ROLE_ATTN_Q: return "q";
    case MOPT_ROLE_ATTN_K: return "k";
    case MOPT_ROLE_ATTN_V: return "v";
    case MOPT_ROLE_ATTN_O: return "o";
    case MOPT_ROLE_MLP_GATE: return "gate";
    case MOPT_ROLE_MLP_UP: return "up";
    case MOPT_ROLE_MLP_DOWN: return "down";
    case MOPT_ROLE_LM_HEAD: return "lm_head";
    default: return "other";
    }
}

/* Coverage: how many linears of each kind the pass changed (now packed), and which it left and why. */
static mopt_status coverage(const mopt_host_api *h, mopt_report *r, mopt_graph *g, const mopt_options *o, const char *method,
                            mopt_error *err) {
    static const char *const kinds[] = {"q", "k", "v", "o", "gate", "up", "down", "lm_head", "other"};
    int32_t changed[9] = {0}, n_changed = 0, n_left = 0, n_not_only = 0;
    char left[700] = "", why[160];
    for (int32_t i = 0; i < h->graph_n_nodes(g); i++) {
        const mopt_node *node = h->graph_node(g, i);
        if ((node->op != MOPT_OP_LINEAR && node->op != MOPT_OP_LM_HEAD) || !node->weight) continue;
        const char *reason = left_reason(h, o, node, why, sizeof why);
        if (!reason && node->weight->dtype >= MOPT_DTYPE_PACKED_FIRST) {
            const char *k = kind_of(node->role);
            for (int j = 0; j < 9; j++) changed[j] += !strcmp(kinds[j], k);
            n_changed++;
            continue;
        }
        n_left++;
        if (reason && !strcmp(reason, "not in only")) {
            n_not_only++;
            continue;
        }
        if (!reason) reason = "the pass left it in float";
        if (strlen(left) < sizeof left - 200)
            snprintf(left + strlen(left), sizeof left - strlen(left), "%s%s (%s)", left[0] ? ", " : "", node->name, reason);
        else if (!strstr(left, ", ..."))
            snprintf(left + strlen(left), sizeof left - strlen(left), ", ...");
    }
    char line[1200];
    snprintf(line, sizeof line, "changed %d linears (", n_changed);
    for (int j = 0, first = 1; j < 9; j++)
        if (changed[j]) {
            snprintf(line + strlen(line), sizeof line - strlen(line), "%s%s %d", first ? "" : ", ", kinds[j], changed[j]);
            first = 0;
        }
    snprintf(line + strlen(line), sizeof line - strlen(line), "); left %d", n_left);
    if (n_not_only) snprintf(line + strlen(line), sizeof line - strlen(line), ", %d of them not in only", n_not_only);
    if (left[0]) snprintf(line + strlen(line), sizeof line - strlen(line), ": %s", left);
    h->report_string(r, "coverage", line);
    h->report_metric(r, "linears_changed", n_changed);
    h->report_metric(r, "linears_left", n_left);
    if (!n_changed) return h->error_set(err, MOPT_E_INVALID, method, "changed no linear: %s", line);
    return MOPT_OK;
}

mopt_status q_report(const mopt_host_api *h, mopt_report *r, mopt_graph *g, const mopt_options *o, const char *method, qspec sp,
                     int64_t bytes_before, int64_t bytes_after, int64_t weights, int32_t n_linear, mopt_error *err) {
    h->report_string(r, "method", method);
    h->report_metric(r, "bits", sp.bits);
    h->report_metric(r, "group_size", sp.group);
    h->report_metric(r, "sym", sp.sym);
    if (sp.act || sp.w4a8_static) h->report_string(r, "activations", sp.w4a8_static ? "fp8_static" : "fp8");
    h->report_metric(r, "weight_bytes_baseline", (double)bytes_before);
    h->report_metric(r, "weight_bytes", (double)bytes_after);
    h->report_metric(r, "bits_per_weight", weights ? 8.0 * (double)bytes_after / (double)weights : 0);
    h->report_metric(r, "bits_per_weight_baseline", weights ? 8.0 * (double)bytes_before / (double)weights : 0);
    h->report_metric(r, "linear_layers", n_linear);
    return coverage(h, r, g, o, method, err);
}
