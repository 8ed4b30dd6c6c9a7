/* The context a pass runs in (core only; plugins see it through the host table). */
#ifndef MOPT_PASS_CTX_H
#define MOPT_PASS_CTX_H

#include "mopt/plugin.h"

struct mopt_pass_ctx {
    mopt_model *model;
    int32_t n_threads;
    int32_t quiet;
    const char *pass;
    double start, last_progress;
    int32_t bar_open; /* a progress bar is drawn without its newline yet */
    const char *write_root; /* NULL, or the only directory passes may write in */
};

extern const mopt_host_api mopt_host;
double mopt_now(void);

#endif
