/* Updating the parameters: AdamW with decoupled weight decay and bias
 * correction (Loshchilov & Hutter), the global gradient norm for clipping, a
 * warm-up + cosine schedule, and writing the result back into the graph. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "mopt/quant.h"
#include "trainer_impl.h"

void mopt_adamw_opts_default(mopt_adamw_opts *o) {
    memset(o, 0, sizeof *o);
    o->struct_size = sizeof *o;
    o->beta1 = 0.9f;
    o->beta2 = 0.95f;
    o->eps = 1e-8f;
    o->weight_decay = 0.0f;
}

double mopt_trainer_grad_norm(const mopt_trainer *tr) {
    double ss = 0;
    for (int32_t i = 0; i < tr->n_params; i++)
        for (int64_t k = 0; k < tr->params[i].n; k++) ss += (double)tr->params[i].g[k] * tr->params[i].g[k];
    return sqrt(ss);
}

mopt_status mopt_trainer_adamw(mopt_trainer *tr, const mopt_adamw_opts *opts, float lr, float grad_scale, mopt_error *err) {
    mopt_adamw_opts oo;
    mopt_adamw_opts_default(&oo);
    if (!mopt_opts_over(&oo, sizeof oo, opts)) /* a {0} initializer: every field would silently be a default */
        return MOPT_FAIL(err, MOPT_E_INVALID, "mopt_adamw_opts.struct_size is 0: start from mopt_adamw_opts_default()");
    const mopt_adamw_opts *o = &oo;
    if (!(lr > 0) || !isfinite(lr)) return MOPT_FAIL(err, MOPT_E_INVALID, "learning rate %g must be a positive number", lr);
    if (!tr->m) {
        tr->m = calloc((size_t)tr->n_params, sizeof *tr->m);
        tr->v = calloc((size_t)tr->n_params, sizeof *tr->v);
        if (!tr->m || !tr->v) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory for the optimizer state");
        for (int32_t i = 0; i < tr->n_params; i++) {
            tr->m[i] = calloc((size_t)tr->params[i].n, sizeof(float));
            tr->v[i] = calloc((size_t)tr->params[i].n, sizeof(float));
            if (!tr->m[i] || !tr->v[i]) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory for the optimizer state");
        }
    }
    tr->adam_steps++;
    const double c1 = 1.0 - pow(o->beta1, (double)tr->adam_steps), c2 = 1.0 - pow(o->beta2, (double)tr->adam_steps);
    for (int32_t i = 0; i < tr->n_params; i++) {
        param *p = &tr->params[i];
        if (p->frozen) continue;
        const float decay = p->rows > 1 ? o->weight_decay : 0.0f; /* matrices only */
        float *m = tr->m[i], *v = tr->v[i];
        for (int64_t k = 0; k < p->n; k++) {
            const float g = p->g[k] * grad_scale;
            m[k] = o->beta1 * m[k] + (1.0f - o->beta1) * g;
            v[k] = o->beta2 * v[k] + (1.0f - o->beta2) * g * g;
            const float step = (float)((m[k] / c1) / (sqrt(v[k] / c2) + o->eps));
            p->w[k] -= lr * (step + decay * p->w[k]);
        }
    }
    return MOPT_OK;
}

float mopt_lr_cosine(int64_t step, int64_t warmup, int64_t total, float lr, float lr_min) {
    if (warmup > 0 && step < warmup) return lr * (float)(step + 1) / (float)warmup;
    if (total <= warmup || step >= total) return lr_min;
    const double f = (double)(step - warmup) / (double)(total - warmup);
    return lr_min + (float)(0.5 * (1.0 + cos(M_PI * f))) * (lr - lr_min);
}

mopt_status mopt_trainer_write_back(mopt_trainer *tr, mopt_graph *g, mopt_error *err) {
    if (g != tr->g) return MOPT_FAIL(err, MOPT_E_INVALID, "write back goes to the graph the trainer was made from");
    for (int32_t i = 0; i < tr->n_params; i++) { /* all or nothing */
        const mopt_tensor *t = tr->params[i].t;
        if (!t) continue; /* the caller's own */
        if (t->dtype != MOPT_DTYPE_F32 && t->dtype != MOPT_DTYPE_F16 && t->dtype != MOPT_DTYPE_BF16)
            return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: a %s weight is not written back (train a float model)", t->name,
                             mopt_dtype_name(t->dtype));
    }
    for (int32_t i = 0; i < tr->n_params; i++) {
        param *p = &tr->params[i];
        const mopt_tensor *old = p->t;
        if (!old) continue;
        const int64_t dims[2] = {old->ne[1], old->ne[0]};
        const int vec = old->ndim <= 1;
        mopt_tensor *t = mopt_tensor_from_f32(old->name, old->dtype, vec ? 1 : 2, vec ? dims + 1 : dims, p->w, err);
        if (!t) return err && err->code ? (mopt_status)err->code : MOPT_E_NOMEM;
        mopt_status st = mopt_graph_replace_tensor(g, t, err); /* frees the old tensor, retargets its nodes */
        if (st) {
            mopt_tensor_free(t);
            return st;
        }
        p->t = t;
    }
    return MOPT_OK;
}
