/* The stderr log writer and the monotonic clock. */
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "base.h"

double mopt_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int bar_open;           /* a terminal: stderr holds a bar without its line end */
static char held[512];         /* not a terminal: the latest bar, not yet written */
static double bar_line_at = -1e9; /* not a terminal: when a bar was last written as a line */
#define BAR_LINE_SECONDS 10.0  /* a log file gets a bar line at most this often, and the last before the next line */

void mopt_log_stderr_flush(void) {
    if (bar_open) fputc('\n', stderr);
    if (held[0]) fprintf(stderr, "%s\n", held);
    bar_open = 0, held[0] = 0;
    fflush(stderr);
}

void mopt_log_stderr(void *user, mopt_log_level level, const char *text) {
    (void)user;
    if (level == MOPT_LOG_PROGRESS && isatty(fileno(stderr))) { /* redrawn in place */
        fprintf(stderr, "\r%s", text);
        bar_open = 1;
        fflush(stderr);
        return;
    }
    if (level == MOPT_LOG_PROGRESS) { /* a log file or a pipe: whole lines, not a line of carriage returns */
        const double now = mopt_now();
        if (now - bar_line_at >= BAR_LINE_SECONDS) {
            fprintf(stderr, "%s\n", text);
            bar_line_at = now, held[0] = 0;
            fflush(stderr);
        } else {
            snprintf(held, sizeof held, "%s", text);
        }
        return;
    }
    mopt_log_stderr_flush();
    fprintf(stderr, "%s%s\n", level == MOPT_LOG_WARN ? "warning: " : "", text);
}
