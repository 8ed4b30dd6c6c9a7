/* Messages the library emits while it works (progress bars, one line per
 * finished pass, notes from passes). They go to a callback in the run
 * options, so an embedder decides where they land; the CLI writes them to
 * stderr with mopt_log_stderr. */
#ifndef MOPT_LOG_H
#define MOPT_LOG_H

#include "mopt/export.h"

MOPT_EXTERN_C_BEGIN

typedef enum mopt_log_level {
    MOPT_LOG_PROGRESS = 0, /* a progress bar: the text replaces the previous bar of the same run */
    MOPT_LOG_INFO = 1,     /* a line: a pass finished, a pass's note */
    MOPT_LOG_WARN = 2      /* a line that deserves attention */
} mopt_log_level;

/* One message; `text` has no line end and is valid during the call only. */
typedef void (*mopt_log_fn)(void *user, mopt_log_level level, const char *text);

/* Writes to stderr: on a terminal, bars redrawn in place on one line, which a
 * later line (or the program's error) never shares; elsewhere (a log file, a
 * pipe), a bar as a line of its own at most every 10 seconds, and the latest
 * before the next line. */
MOPT_API void mopt_log_stderr(void *user, mopt_log_level level, const char *text);
/* Ends an open progress bar's line on stderr (before printing an error). */
MOPT_API void mopt_log_stderr_flush(void);

MOPT_EXTERN_C_END

#endif
