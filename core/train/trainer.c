/* The trainer: fp32 master parameters with their gradients, every activation
 * of one window kept for the backward, and the cross-entropy loss of the
 * perplexity protocol. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backprop.h"
#include "trainer_impl.h"
#include "base.h"
#include "mopt/quant.h"
#include "mopt/train.h"

static void params_free(mopt_trainer *tr) {
    for (int32_t i = 0; i < tr->n_params; i++) {
        free(tr->params[i].fw);
        free(tr->params[i].gfw);
        free(tr->params[i].w);
        free(tr->params[i].g);
    }
    free(tr->params);
}

void mopt_trainer_free(mopt_trainer *tr) {
    if (!tr) return;
    for (int32_t i = 0; tr->m && i < tr->n_params; i++) {
        free(tr->m[i]);
        free(tr->v[i]);
    }
    free(tr->m);
    free(tr->v);
    free(tr->tokens);
    mopt_pool_free(tr->pool);
    params_free(tr);
    for (int32_t v = 0; tr->act && v < tr->n_values; v++) {
        if (tr->shared_act && tr->shared_act[v]) continue;
        free(tr->act[v]);
        free(tr->dact[v]);
    }
    for (int32_t i = 0; tr->aux && i < tr->n_nodes; i++)
        if (!tr->shared_aux || !tr->shared_aux[i]) free(tr->aux[i]);
    free(tr->shared_act);
    free(tr->shared_aux);
    free(tr->blk_first);
    free(tr->blk_last);
    free(tr->act);
    free(tr->dact);
    free(tr->aux);
    free(tr->wparam);
    free(tr->bparam);
    free(tr);
}

/* The fp32 copy of a weight: float dtypes converted, packed ones dequantized. */
static mopt_status widen(const mopt_tensor *t, param *p, mopt_error *err) {
    if (t->dtype < MOPT_DTYPE_PACKED_FIRST) return mopt_tensor_read_f32(t, 0, p->n, p->w, err);
    for (int64_t r = 0; r < p->rows; r++) {
        mopt_status st = mopt_weight_row_f32(t, r, p->w + r * p->cols, err);
        if (st) return st;
    }
    return MOPT_OK;
}

/* The parameter index of t, adding it on first use. */
static int32_t param_of(mopt_trainer *tr, const mopt_tensor *t, mopt_error *err) {
    if (!t) return -1;
    for (int32_t i = 0; i < tr->n_params; i++)
        if (tr->params[i].t == t) return i;
    param *p = &tr->params[tr->n_params];
    p->t = t;
    snprintf(p->name, sizeof p->name, "%s", t->name);
    p->cols = t->ne[0];
    p->rows = mopt_tensor_nelements(t) / (t->ne[0] ? t->ne[0] : 1);
    p->n = p->rows * p->cols;
    p->w = malloc((size_t)(p->n ? p->n : 1) * sizeof(float));
    p->g = calloc((size_t)(p->n ? p->n : 1), sizeof(float));
    if (!p->w || !p->g) {
        free(p->w);
        free(p->g);
        MOPT_FAIL(err, MOPT_E_NOMEM, "%s: cannot allocate %lld fp32 values and gradients", t->name, (long long)p->n);
        return -2;
    }
    tr->n_params++;
    if (widen(t, p, err)) return -2;
    return tr->n_params - 1;
}

mopt_trainer *mopt_trainer_new(const mopt_graph *g, int32_t max_tokens, mopt_error *err) {
    const mopt_arch *a = mopt_graph_arch(g);
    if (max_tokens < 2 || max_tokens > a->max_ctx) {
        MOPT_FAIL(err, MOPT_E_INVALID, "a window of %d tokens: need 2 to the model's context of %d", max_tokens, a->max_ctx);
        return NULL;
    }
    const int32_t nn = mopt_graph_n_nodes(g);
    if (nn == 0 || mopt_graph_node(g, nn - 1)->op != MOPT_OP_LM_HEAD) {
        MOPT_FAIL(err, MOPT_E_INVALID, "the graph must end with an lm_head node");
        return NULL;
    }
    mopt_trainer *tr = calloc(1, sizeof *tr);
    if (!tr) {
        MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
        return NULL;
    }
    tr->g = g;
    tr->max_T = max_tokens;
    tr->n_nodes = nn;
    tr->n_values = mopt_graph_n_values(g);
    tr->cap_params = nn * 2;
    tr->params = calloc((size_t)tr->cap_params, sizeof *tr->params);
    tr->wparam = malloc((size_t)nn * sizeof *tr->wparam);
    tr->bparam = malloc((size_t)nn * sizeof *tr->bparam);
    tr->aux = calloc((size_t)nn, sizeof *tr->aux);
    tr->act = calloc((size_t)(tr->n_values ? tr->n_values : 1), sizeof *tr->act);
    tr->dact = calloc((size_t)(tr->n_values ? tr->n_values : 1), sizeof *tr->dact);
    tr->tokens = malloc((size_t)max_tokens * sizeof *tr->tokens);
    tr->pool = mopt_pool_new(mopt_cpu_count());
    openblas_set_num_threads(1); /* the pool splits the GEMMs, as the CPU backend does */
    if (!tr->pool || !tr->tokens || !tr->params || !tr->wparam || !tr->bparam || !tr->aux || !tr->act || !tr->dact) goto nomem;
    for (int32_t i = 0; i < nn; i++) {
        const mopt_node *n = mopt_graph_node(g, i);
        if ((tr->wparam[i] = param_of(tr, n->weight, err)) == -2 || (tr->bparam[i] = param_of(tr, n->bias, err)) == -2) goto fail;
        const size_t aux = train_aux_floats(n, max_tokens);
        if (aux && !(tr->aux[i] = malloc(aux * sizeof(float)))) goto nomem;
    }
    for (int32_t v = 0; v < tr->n_values; v++) {
        const size_t n = (size_t)max_tokens * (size_t)mopt_graph_value_width(g, v);
        tr->act[v] = malloc((n ? n : 1) * sizeof(float));
        tr->dact[v] = malloc((n ? n : 1) * sizeof(float));
        if (!tr->act[v] || !tr->dact[v]) goto nomem;
    }
    return tr;
nomem:
    MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory for the activations of a %d-token window", max_tokens);
fail:
    mopt_trainer_free(tr);
    return NULL;
}

mopt_status mopt_trainer_set_transform(mopt_trainer *tr, int32_t i, mopt_weight_fn fn, void *user, mopt_error *err) {
    if (i < 0 || i >= tr->n_params) return MOPT_FAIL(err, MOPT_E_INVALID, "no parameter %d", i);
    param *p = &tr->params[i];
    if (fn && !p->fw && !(p->fw = malloc((size_t)p->n * sizeof(float))))
        return MOPT_FAIL(err, MOPT_E_NOMEM, "%s: out of memory", p->name);
    p->fn = fn;
    p->fn_user = user;
    return MOPT_OK;
}

mopt_status mopt_trainer_set_transform_grad(mopt_trainer *tr, int32_t i, mopt_weight_grad_fn fn, mopt_error *err) {
    if (i < 0 || i >= tr->n_params) return MOPT_FAIL(err, MOPT_E_INVALID, "no parameter %d", i);
    param *p = &tr->params[i];
    if (fn && !p->gfw && !(p->gfw = calloc((size_t)p->n, sizeof(float))))
        return MOPT_FAIL(err, MOPT_E_NOMEM, "%s: out of memory", p->name);
    p->gfn = fn;
    return MOPT_OK;
}

int32_t mopt_trainer_add_param(mopt_trainer *tr, const char *name, int64_t n, const float *init, mopt_error *err) {
    if (n < 1 || !name || strlen(name) >= MOPT_MAX_NAME) {
        MOPT_FAIL(err, MOPT_E_INVALID, "a parameter needs a name shorter than %d and at least one value", MOPT_MAX_NAME);
        return -1;
    }
    for (int32_t i = 0; i < tr->n_params; i++)
        if (!strcmp(tr->params[i].name, name)) {
            MOPT_FAIL(err, MOPT_E_INVALID, "a parameter named %s exists already", name);
            return -1;
        }
    if (tr->m) {
        MOPT_FAIL(err, MOPT_E_INVALID, "%s: parameters are added before the first update", name);
        return -1;
    }
    if (tr->n_params == tr->cap_params) {
        param *grown = realloc(tr->params, (size_t)(tr->cap_params * 2) * sizeof *grown);
        if (!grown) {
            MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
            return -1;
        }
        memset(grown + tr->cap_params, 0, (size_t)tr->cap_params * sizeof *grown);
        tr->params = grown;
        tr->cap_params *= 2;
    }
    param *p = &tr->params[tr->n_params];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->rows = 1; /* a vector: no weight decay */
    p->cols = p->n = n;
    p->w = malloc((size_t)n * sizeof(float));
    p->g = calloc((size_t)n, sizeof(float));
    if (!p->w || !p->g) {
        free(p->w);
        free(p->g);
        memset(p, 0, sizeof *p);
        MOPT_FAIL(err, MOPT_E_NOMEM, "%s: out of memory", name);
        return -1;
    }
    memcpy(p->w, init, (size_t)n * sizeof(float));
    return tr->n_params++;
}

mopt_status mopt_trainer_set_frozen(mopt_trainer *tr, int32_t i, int32_t frozen, mopt_error *err) {
    if (i < 0 || i >= tr->n_params) return MOPT_FAIL(err, MOPT_E_INVALID, "no parameter %d", i);
    tr->params[i].frozen = frozen != 0;
    memset(tr->params[i].g, 0, (size_t)tr->params[i].n * sizeof(float));
    return MOPT_OK;
}

/* Block ranges: every node with layer L >= 0, which must be contiguous. */
static mopt_status find_blocks(mopt_trainer *tr, mopt_error *err) {
    int32_t nb = 0;
    for (int32_t i = 0; i < tr->n_nodes; i++)
        if (mopt_graph_node(tr->g, i)->layer + 1 > nb) nb = mopt_graph_node(tr->g, i)->layer + 1;
    tr->blk_first = malloc((size_t)(nb ? nb : 1) * sizeof(int32_t));
    tr->blk_last = malloc((size_t)(nb ? nb : 1) * sizeof(int32_t));
    if (!tr->blk_first || !tr->blk_last) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    for (int32_t b = 0; b < nb; b++) tr->blk_first[b] = -1;
    for (int32_t i = 0; i < tr->n_nodes; i++) {
        const int32_t L = mopt_graph_node(tr->g, i)->layer;
        if (L < 0) continue;
        if (tr->blk_first[L] < 0) tr->blk_first[L] = i;
        else if (tr->blk_last[L] != i - 1)
            return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "block %d's nodes are not contiguous: no recomputation", L);
        tr->blk_last[L] = i;
    }
    tr->n_blocks = nb;
    for (int32_t b = 0; b < nb; b++)
        if (tr->blk_first[b] < 0 || tr->blk_last[b] - tr->blk_first[b] != tr->blk_last[0] - tr->blk_first[0])
            return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "block %d differs from block 0: no recomputation", b);
    return MOPT_OK;
}

/* Whether value v (an output of block b, not its last) is read only inside block b. */
static int inner_value(const mopt_trainer *tr, int32_t b, int32_t v) {
    for (int32_t i = 0; i < tr->n_nodes; i++) {
        const mopt_node *n = mopt_graph_node(tr->g, i);
        for (int k = 0; k < n->n_inputs; k++)
            if (n->inputs[k] == v && n->layer != b) return 0;
    }
    return 1;
}

mopt_status mopt_trainer_set_recompute(mopt_trainer *tr, int32_t on, mopt_error *err) {
    if (!on || tr->recompute) {
        if (!on && tr->recompute) return MOPT_FAIL(err, MOPT_E_INVALID, "recomputation cannot be turned off again");
        return MOPT_OK;
    }
    tr->T = 0;
    mopt_status st = find_blocks(tr, err);
    if (st) return st;
    tr->shared_act = calloc((size_t)(tr->n_values ? tr->n_values : 1), 1);
    tr->shared_aux = calloc((size_t)tr->n_nodes, 1);
    if (!tr->shared_act || !tr->shared_aux) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    for (int32_t b = 1; b < tr->n_blocks; b++) /* check every block before changing any buffer */
        for (int32_t i = tr->blk_first[b]; i < tr->blk_last[b]; i++) {
            const mopt_node *n = mopt_graph_node(tr->g, i), *n0 = mopt_graph_node(tr->g, i - tr->blk_first[b] + tr->blk_first[0]);
            if (n->op != n0->op || mopt_graph_value_width(tr->g, n->output) != mopt_graph_value_width(tr->g, n0->output) ||
                train_aux_floats(n, tr->max_T) != train_aux_floats(n0, tr->max_T) || !inner_value(tr, b, n->output) ||
                !inner_value(tr, 0, n0->output))
                return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: block %d's values do not mirror block 0's: no recomputation", n->name, b);
        }
    for (int32_t b = 1; b < tr->n_blocks; b++)
        for (int32_t i = tr->blk_first[b]; i <= tr->blk_last[b]; i++) {
            const int32_t i0 = i - tr->blk_first[b] + tr->blk_first[0];
            const mopt_node *n = mopt_graph_node(tr->g, i), *n0 = mopt_graph_node(tr->g, i0);
            if (tr->aux[i]) {
                free(tr->aux[i]);
                tr->aux[i] = tr->aux[i0];
                tr->shared_aux[i] = 1;
            }
            if (i == tr->blk_last[b]) continue; /* the block's output is kept */
            free(tr->act[n->output]);
            free(tr->dact[n->output]);
            tr->act[n->output] = tr->act[n0->output];
            tr->dact[n->output] = tr->dact[n0->output];
            tr->shared_act[n->output] = 1;
        }
    tr->recompute = 1;
    return MOPT_OK;
}

int64_t mopt_trainer_activation_bytes(const mopt_trainer *tr) {
    int64_t n = 0;
    for (int32_t v = 0; v < tr->n_values; v++)
        if (!tr->shared_act || !tr->shared_act[v]) n += 2 * (int64_t)tr->max_T * mopt_graph_value_width(tr->g, v); /* value and gradient */
    for (int32_t i = 0; i < tr->n_nodes; i++)
        if (tr->aux[i] && (!tr->shared_aux || !tr->shared_aux[i])) n += (int64_t)train_aux_floats(mopt_graph_node(tr->g, i), tr->max_T);
    return n * (int64_t)sizeof(float);
}

mopt_status mopt_trainer_set_threads(mopt_trainer *tr, int32_t n, mopt_error *err) {
    mopt_pool *p = mopt_pool_new(n > 0 ? n : mopt_cpu_count());
    if (!p) return MOPT_FAIL(err, MOPT_E_NOMEM, "cannot start %d threads", n);
    mopt_pool_free(tr->pool);
    tr->pool = p;
    return MOPT_OK;
}

void mopt_trainer_zero_grad(mopt_trainer *tr) {
    for (int32_t i = 0; i < tr->n_params; i++) memset(tr->params[i].g, 0, (size_t)tr->params[i].n * sizeof(float));
}

int32_t mopt_trainer_n_params(const mopt_trainer *tr) { return tr->n_params; }
const mopt_tensor *mopt_trainer_param_tensor(const mopt_trainer *tr, int32_t i) {
    return i >= 0 && i < tr->n_params ? tr->params[i].t : NULL;
}
const char *mopt_trainer_param_name(const mopt_trainer *tr, int32_t i) { return i >= 0 && i < tr->n_params ? tr->params[i].name : NULL; }
int64_t mopt_trainer_param_size(const mopt_trainer *tr, int32_t i) { return i >= 0 && i < tr->n_params ? tr->params[i].n : 0; }
float *mopt_trainer_grad_mut(mopt_trainer *tr, int32_t i) { return i >= 0 && i < tr->n_params ? tr->params[i].g : NULL; }
float *mopt_trainer_param(mopt_trainer *tr, int32_t i) { return i >= 0 && i < tr->n_params ? tr->params[i].w : NULL; }
const float *mopt_trainer_grad(const mopt_trainer *tr, int32_t i) { return i >= 0 && i < tr->n_params ? tr->params[i].g : NULL; }

/* The op view of node i over the trainer's buffers. */
static train_op op_of(mopt_trainer *tr, int32_t i, const int32_t *tokens, int32_t T) {
    const mopt_node *n = mopt_graph_node(tr->g, i);
    train_op o = {0};
    o.pool = tr->pool;
    o.node = n;
    o.T = T;
    o.tokens = tokens;
    for (int k = 0; k < n->n_inputs; k++) {
        o.in[k] = tr->act[n->inputs[k]];
        o.din[k] = tr->dact[n->inputs[k]];
        o.in_w[k] = mopt_graph_value_width(tr->g, n->inputs[k]);
    }
    o.out = tr->act[n->output];
    o.dout = tr->dact[n->output];
    o.out_w = mopt_graph_value_width(tr->g, n->output);
    if (tr->wparam[i] >= 0) {
        const param *p = &tr->params[tr->wparam[i]];
        o.w = p->fn ? p->fw : p->w;
        o.dw = p->gfn ? p->gfw : p->frozen ? NULL : p->g; /* a frozen weight's dfw still feeds its transform's own parameters */
        o.w_rows = p->rows;
        o.w_cols = p->cols;
    }
    if (tr->bparam[i] >= 0) {
        const param *p = &tr->params[tr->bparam[i]];
        o.b = p->w;
        o.db = p->frozen ? NULL : p->g;
        o.b_n = p->n;
    }
    o.aux = tr->aux[i];
    return o;
}

mopt_status mopt_trainer_forward(mopt_trainer *tr, const int32_t *tokens, int32_t T, const float **logits, mopt_error *err) {
    const mopt_arch *a = mopt_graph_arch(tr->g);
    tr->T = 0;
    if (T < 2 || T > tr->max_T)
        return MOPT_FAIL(err, MOPT_E_INVALID, "a window of %d tokens: the trainer takes 2 to %d", T, tr->max_T);
    for (int32_t t = 0; t < T; t++)
        if (tokens[t] < 0 || tokens[t] >= a->vocab_size)
            return MOPT_FAIL(err, MOPT_E_INVALID, "token id %d at position %d is outside the vocabulary (0..%d)", tokens[t], t,
                             a->vocab_size - 1);
    for (int32_t i = 0; i < tr->n_params; i++) { /* the transformed weights this forward and its backward use */
        param *p = &tr->params[i];
        if (p->fn) p->fn(p->fn_user, i, p->w, p->fw, p->rows, p->cols);
    }
    for (int32_t i = 0; i < tr->n_nodes; i++) {
        if (mopt_interrupted()) return MOPT_FAIL(err, MOPT_E_INTERRUPTED, "interrupted");
        train_op o = op_of(tr, i, tokens, T);
        mopt_status st = train_forward(&o, err);
        if (st) return st;
    }
    for (int32_t v = 0; v < tr->n_values; v++)
        memset(tr->dact[v], 0, (size_t)T * (size_t)mopt_graph_value_width(tr->g, v) * sizeof(float));
    tr->T = T;
    memcpy(tr->tokens, tokens, (size_t)T * sizeof *tokens);
    if (logits) *logits = tr->act[mopt_graph_node(tr->g, tr->n_nodes - 1)->output];
    return MOPT_OK;
}

const float *mopt_trainer_block_output(mopt_trainer *tr, int32_t layer, int32_t *width, float **grad) {
    for (int32_t i = tr->n_nodes - 1; i >= 0; i--) { /* the block's last residual add */
        const mopt_node *n = mopt_graph_node(tr->g, i);
        if (n->layer != layer || (n->role != MOPT_ROLE_MLP_RESIDUAL && n->role != MOPT_ROLE_ATTN_RESIDUAL)) continue;
        if (width) *width = mopt_graph_value_width(tr->g, n->output);
        if (grad) *grad = tr->dact[n->output];
        return tr->act[n->output];
    }
    return NULL;
}

float *mopt_trainer_dlogits(mopt_trainer *tr) { return tr->dact[mopt_graph_node(tr->g, tr->n_nodes - 1)->output]; }

/* Runs block L's forward again (its input is kept; its inner buffers last held
 * a later block's values) and clears its inner gradients. */
static mopt_status recompute_block(mopt_trainer *tr, int32_t L, mopt_error *err) {
    for (int32_t j = tr->blk_first[L]; j < tr->blk_last[L]; j++) {
        train_op o = op_of(tr, j, tr->tokens, tr->T);
        mopt_status st = train_forward(&o, err);
        if (st) return st;
        memset(tr->dact[mopt_graph_node(tr->g, j)->output], 0, (size_t)tr->T * (size_t)o.out_w * sizeof(float));
    }
    return MOPT_OK;
}

mopt_status mopt_trainer_backward(mopt_trainer *tr, mopt_error *err) {
    if (!tr->T) return MOPT_FAIL(err, MOPT_E_INVALID, "backward without a forward");
    for (int32_t i = tr->n_nodes - 1; i >= 0; i--) {
        if (mopt_interrupted()) return MOPT_FAIL(err, MOPT_E_INTERRUPTED, "interrupted");
        const int32_t L = mopt_graph_node(tr->g, i)->layer;
        if (tr->recompute && L >= 0 && L < tr->n_blocks - 1 && i == tr->blk_last[L]) { /* the last block's values are still there */
            mopt_status st = recompute_block(tr, L, err);
            if (st) return st;
        }
        train_op o = op_of(tr, i, tr->tokens, tr->T);
        mopt_status st = train_backward(&o, err);
        if (st) return st;
    }
    for (int32_t i = 0; i < tr->n_params; i++) { /* the gradient transforms, once the window's gradient is whole */
        param *p = &tr->params[i];
        if (!p->gfn) continue;
        p->gfn(p->fn_user, i, p->w, p->gfw, p->g, p->rows, p->cols);
        memset(p->gfw, 0, (size_t)p->n * sizeof(float));
        if (p->frozen) memset(p->g, 0, (size_t)p->n * sizeof(float));
    }
    tr->T = 0; /* the saved activations are spent */
    return MOPT_OK;
}

mopt_status mopt_trainer_step(mopt_trainer *tr, const int32_t *tokens, int32_t T, double *loss, mopt_error *err) {
    const float *logits;
    mopt_status st = mopt_trainer_forward(tr, tokens, T, &logits, err);
    if (st) return st;
    const int32_t V = mopt_graph_value_width(tr->g, mopt_graph_node(tr->g, tr->n_nodes - 1)->output);
    const double l = mopt_cross_entropy(logits, mopt_trainer_dlogits(tr), tokens, T, V, 1.0);
    if (!isfinite(l)) return MOPT_FAIL(err, MOPT_E_RUNTIME, "the loss is not finite (%g): weights or inputs broke", l);
    st = mopt_trainer_backward(tr, err);
    if (!st && loss) *loss = l;
    return st;
}
