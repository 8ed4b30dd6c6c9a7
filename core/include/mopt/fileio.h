/* Files the library writes on the caller's behalf. */
#ifndef MOPT_FILEIO_H
#define MOPT_FILEIO_H

#include <stddef.h>

#include "mopt/error.h"
#include "mopt/export.h"

MOPT_EXTERN_C_BEGIN

/* Writes n bytes to path so that readers see the old contents or the new ones,
 * never a part: a temporary file beside it (created exclusively, never through
 * a link), flushed, renamed over path, and the directory flushed. A character
 * device or FIFO at path (/dev/stdout) is written to directly, never
 * replaced; a symbolic link, directory or other special file is refused.
 * Errors name the file and the system's reason ("No space left on device"). */
MOPT_API mopt_status mopt_file_write_atomic(const char *path, const void *data, size_t n, mopt_error *err);

/* OK when writing `path` stays inside the directory `root`: its parent
 * resolves (links included) to root or below, and path is not a link itself. */
MOPT_API mopt_status mopt_path_check_within(const char *root, const char *path, mopt_error *err);

MOPT_EXTERN_C_END

#endif
