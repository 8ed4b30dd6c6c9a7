/* Status codes and the error record every fallible call fills. */
#ifndef MOPT_ERROR_H
#define MOPT_ERROR_H

#include <stddef.h>
#include <stdint.h>

#include "mopt/export.h"

MOPT_EXTERN_C_BEGIN

typedef enum mopt_status {
    MOPT_OK = 0,
    MOPT_E_NOMEM = -1,       /* allocation failed */
    MOPT_E_INVALID = -2,     /* bad argument or option from the caller */
    MOPT_E_IO = -3,          /* a file could not be opened, read or written */
    MOPT_E_FORMAT = -4,      /* a file's contents are malformed or inconsistent */
    MOPT_E_UNSUPPORTED = -5, /* well-formed but not something we can run */
    MOPT_E_ABI = -6,         /* plugin ABI mismatch */
    MOPT_E_BACKEND = -7,     /* a compute backend failed */
    MOPT_E_RUNTIME = -8,     /* any other failure while running */
    MOPT_E_INTERRUPTED = -9  /* stopped on request (mopt_interrupt: SIGINT, SIGTERM, a timeout) */
} mopt_status;

/* Filled by the callee on failure; `msg` is one line that names what was wrong
 * (file, tensor, key, expected vs found). Pass NULL when you do not care. */
typedef struct mopt_error {
    int32_t code;
    char msg[512];
    char where[64];
} mopt_error;

MOPT_API const char *mopt_status_str(mopt_status s);

/* Records `code` and a printf-style message into err (if not NULL); returns code. */
MOPT_API mopt_status mopt_error_set(mopt_error *err, mopt_status code, const char *where, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Clears err to MOPT_OK with an empty message. */
MOPT_API void mopt_error_clear(mopt_error *err);

MOPT_EXTERN_C_END

#endif
