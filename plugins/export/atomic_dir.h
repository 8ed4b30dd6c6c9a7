/* Atomic directory writes: everything goes into a hidden temporary directory
 * beside the target (holding an INCOMPLETE marker), which is renamed into place
 * only when complete. An existing target is replaced only with force. */
#ifndef MOPT_ATOMIC_DIR_H
#define MOPT_ATOMIC_DIR_H

#include "mopt/plugin.h"

typedef struct atomic_dir {
    char target[4096];
    char tmp[4200];
} atomic_dir;

#define MOPT_INCOMPLETE_MARKER "MOPT_EXPORT_INCOMPLETE"

/* Checks the target (refuses an existing one without force), removes stale
 * temporaries of earlier interrupted runs and creates a fresh one. */
mopt_status atomic_dir_begin(const mopt_host_api *h, atomic_dir *d, const char *target, int force, mopt_error *err);
/* Path of a file inside the temporary directory. */
const char *atomic_dir_path(const atomic_dir *d, const char *name, char *buf, size_t cap);
/* Removes the marker and renames the temporary directory into place. */
mopt_status atomic_dir_commit(const mopt_host_api *h, atomic_dir *d, mopt_error *err);
/* For single-file targets: renames the file `name` written inside the temporary
 * directory onto the target (replacing a file there only with force, checked
 * at begin) and removes the temporary directory. */
mopt_status atomic_dir_commit_file(const mopt_host_api *h, atomic_dir *d, const char *name, mopt_error *err);
/* Deletes the temporary directory (after a failure). */
void atomic_dir_abort(atomic_dir *d);
/* Writes a whole file inside the temporary directory. */
mopt_status atomic_dir_write(const mopt_host_api *h, const atomic_dir *d, const char *name, const void *data, size_t n,
                             mopt_error *err);

#endif
