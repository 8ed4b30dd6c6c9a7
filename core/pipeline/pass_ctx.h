/* The pipeline layer's internals: the context a pass runs in (plugins see it
 * through the host table) and the checks on plugin descriptors. */
#ifndef MOPT_PASS_CTX_H
#define MOPT_PASS_CTX_H

#include "base.h"
#include "mopt/plugin.h"

struct mopt_pass_ctx {
    mopt_model *model;
    int32_t n_threads;
    int32_t quiet;
    const char *pass;
    double start, last_progress;
    const char *write_root; /* NULL, or the only directory passes may write in */
    mopt_log_fn log;        /* where messages go (never NULL) */
    void *log_user;
};

extern const mopt_host_api mopt_host;

#define MOPT_MAX_PASS_OPTS 256
/* Checks a pass descriptor's kind and option schema (names, types, choices,
 * defaults) before anything uses it. */
mopt_status mopt_pass_desc_check(const mopt_pass_desc *pass, mopt_error *err);

#endif
