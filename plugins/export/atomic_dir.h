/* Atomic exports: everything goes into a hidden temporary directory beside
 * the target (.NAME.mopt-tmp-PID, holding an INCOMPLETE marker), which is
 * renamed into place only when complete and flushed. A finished directory
 * export carries a .mopt-export marker.
 *
 * What mopt may delete: only what it created. An existing target is replaced
 * only with force, and then only if it is a previous mopt export (a real
 * directory with the marker) or, for single-file formats, a regular file;
 * symbolic links, other directories, device nodes and FIFOs are refused.
 * Leftover temporaries are swept only when the process that made them is gone.
 * Removal never follows a symbolic link and never crosses into another mount. */
#ifndef MOPT_ATOMIC_DIR_H
#define MOPT_ATOMIC_DIR_H

#include "mopt/plugin.h"

typedef struct atomic_dir {
    char target[4096];
    char tmp[4800];
    int force;
    int single_file; /* the export is one file written inside tmp (GGUF) */
} atomic_dir;

#define MOPT_INCOMPLETE_MARKER "MOPT_EXPORT_INCOMPLETE"
#define MOPT_EXPORT_MARKER ".mopt-export"

/* Checks the target (refuses an existing one without force, and anything but
 * a previous export or, for single_file, a regular file with it), sweeps stale
 * temporaries of dead processes and creates a fresh one. Inside a sandboxed
 * run the target must lie in the run's write_root. */
mopt_status atomic_dir_begin(const mopt_host_api *h, const mopt_pass_ctx *ctx, atomic_dir *d, const char *target, int force,
                             int single_file, mopt_error *err);
/* Path of a file inside the temporary directory. */
const char *atomic_dir_path(const atomic_dir *d, const char *name, char *buf, size_t cap);
/* Writes the export marker, removes the INCOMPLETE one, flushes and renames the
 * temporary directory into place (moving a previous export aside first, so a
 * failure never loses both). */
mopt_status atomic_dir_commit(const mopt_host_api *h, atomic_dir *d, mopt_error *err);
/* For single-file targets: flushes the file `name` written inside the
 * temporary directory and renames it onto the target, then removes the
 * temporary directory. */
mopt_status atomic_dir_commit_file(const mopt_host_api *h, atomic_dir *d, const char *name, mopt_error *err);
/* Deletes the temporary directory (after a failure or an interrupt). */
void atomic_dir_abort(atomic_dir *d);
/* Ends an export whose writing returned st: when st is MOPT_OK commits the
 * directory (or, given file, that single file); on any failure, its own
 * included, removes the temporary directory. Returns the final status. */
mopt_status atomic_dir_end(const mopt_host_api *h, atomic_dir *d, const char *file, mopt_status st, mopt_error *err);
/* Writes and flushes a whole new file inside the temporary directory. */
mopt_status atomic_dir_write(const mopt_host_api *h, const atomic_dir *d, const char *name, const void *data, size_t n,
                             mopt_error *err);

#endif
