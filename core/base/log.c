/* The stderr log writer and the monotonic clock. */
#include <stdio.h>
#include <time.h>

#include "base.h"

double mopt_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int bar_open; /* stderr holds a bar without its line end */

void mopt_log_stderr_flush(void) {
    if (bar_open) fputc('\n', stderr);
    bar_open = 0;
    fflush(stderr);
}

void mopt_log_stderr(void *user, mopt_log_level level, const char *text) {
    (void)user;
    if (level == MOPT_LOG_PROGRESS) {
        fprintf(stderr, "\r%s", text);
        bar_open = 1;
        fflush(stderr);
        return;
    }
    mopt_log_stderr_flush();
    fprintf(stderr, "%s%s\n", level == MOPT_LOG_WARN ? "warning: " : "", text);
}
