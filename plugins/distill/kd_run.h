/* The state of one run of the training loop (kd_train.c), and saving and
 * resuming it (kd_state.c). */
#ifndef MOPT_KD_RUN_H
#define MOPT_KD_RUN_H

#include "mopt/plugin_util.h"

typedef struct {
    int32_t *train, *val;
    size_t n_train, n_val;
    mopt_model *teacher;
    mopt_session *ts;
    mopt_trainer *tr, *ttr; /* the student; the teacher when it runs as a trainer (kd_hooks.step) */
    float *tlogits, **best;
    float **cache;      /* teacher_cache=: the teacher's logits per aligned window, computed on first use */
    int64_t n_cached_windows, teacher_forwards;
    int32_t n_best;
    double *curve, *vcurve, *vstep; /* train loss per step; validation loss at steps vstep */
    /* where the loop stands: what a resume restores */
    int64_t step, steps, nv, vcap;   /* steps done, in all; validations measured, room for them */
    int32_t ctx, batch;
    uint64_t seed;                   /* the window sampler */
    double best_val;
} kd_run;

/* Saves the trainer and the loop (best parameters, curves, counters) to path, atomically. */
mopt_status kd_save(const mopt_host_api *h, const kd_run *k, const char *path, mopt_error *err);
/* Restores a kd_save of the same model and the same run shape (steps, ctx, batch). */
mopt_status kd_resume(const mopt_host_api *h, kd_run *k, const char *path, const char *pass, mopt_error *err);
/* Copies the trainer's parameters into the best-so-far buffers (restore: back out of them); 0 when out of memory. */
int kd_keep_best(const mopt_host_api *h, kd_run *k, int restore);

#endif
