/* Stopping long work from a signal handler: a request that every long loop in
 * the library (forward passes, perplexity windows, tokenization, passes,
 * exports, Lua scripts) checks at its next safe point, failing with
 * MOPT_E_INTERRUPTED. Temporary files are removed on the way out, as on any
 * other failure. */
#ifndef MOPT_INTERRUPT_H
#define MOPT_INTERRUPT_H

#include "mopt/export.h"

MOPT_EXTERN_C_BEGIN

/* Requests a stop; `why` (a signal number, non-zero) is kept for the caller.
 * Async-signal-safe: call it from a SIGINT/SIGTERM handler. */
MOPT_API void mopt_interrupt(int why);
/* 0, or the `why` of the first request since the last clear. */
MOPT_API int mopt_interrupted(void);
/* Forgets the request (before starting new work). */
MOPT_API void mopt_interrupt_clear(void);

MOPT_EXTERN_C_END

#endif
