/* Status strings and the error record. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "mopt/error.h"

const char *mopt_status_str(mopt_status s) {
    switch (s) {
    case MOPT_OK: return "ok";
    case MOPT_E_NOMEM: return "out of memory";
    case MOPT_E_INVALID: return "invalid argument";
    case MOPT_E_IO: return "i/o error";
    case MOPT_E_FORMAT: return "malformed input";
    case MOPT_E_UNSUPPORTED: return "unsupported";
    case MOPT_E_ABI: return "ABI mismatch";
    case MOPT_E_BACKEND: return "backend failure";
    case MOPT_E_RUNTIME: return "runtime failure";
    case MOPT_E_INTERRUPTED: return "interrupted";
    }
    return "unknown status";
}

mopt_status mopt_error_set(mopt_error *err, mopt_status code, const char *where, const char *fmt, ...) {
    if (!err) return code;
    err->code = code;
    snprintf(err->where, sizeof err->where, "%s", where ? where : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    /* One line, always: a message built from file contents must not break it. */
    for (char *p = err->msg; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    return code;
}

void mopt_error_clear(mopt_error *err) {
    if (!err) return;
    err->code = MOPT_OK;
    err->msg[0] = '\0';
    err->where[0] = '\0';
}

void mopt_error_name_file(mopt_error *err, const char *path) {
    if (!err || !err->code || !path || !*path || strstr(err->msg, path)) return;
    char msg[sizeof err->msg];
    if (snprintf(msg, sizeof msg, "%s: %s", path, err->msg) > 0) memcpy(err->msg, msg, sizeof msg);
}
