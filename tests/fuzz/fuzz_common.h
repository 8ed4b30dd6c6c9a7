/* Shared pieces of the libFuzzer harnesses (tests/fuzz/run.sh builds and runs
 * them with clang -fsanitize=fuzzer,address,undefined). Parsers take paths, so
 * each input is written to a file in a private directory under /dev/shm (or
 * $TMPDIR); a model that loads runs a short forward pass and its tokenizer. */
#ifndef MOPT_FUZZ_COMMON_H
#define MOPT_FUZZ_COMMON_H

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model_exercise.h"
#include "mopt/mopt.h"

/* Any failure must be one non-empty line: a broken message is a bug too. */
static inline void fuzz_check_error(const mopt_error *err) {
    if (err->code == MOPT_OK || !err->msg[0] || strchr(err->msg, '\n')) __builtin_trap();
}

static char fuzz_dir[512];

/* A private directory for this process's inputs. */
static inline const char *fuzz_workdir(void) {
    if (fuzz_dir[0]) return fuzz_dir;
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(fuzz_dir, sizeof fuzz_dir, "%s/mopt-fuzz-XXXXXX", base);
    if (!mkdtemp(fuzz_dir)) abort();
    return fuzz_dir;
}

/* Writes data to WORKDIR/name; returns the path (static buffer). */
static inline const char *fuzz_write(const char *name, const uint8_t *data, size_t n) {
    static char path[1024];
    snprintf(path, sizeof path, "%s/%s", fuzz_workdir(), name);
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (n && fwrite(data, 1, n, f) != n) abort();
    fclose(f);
    return path;
}

static inline void fuzz_load(const char *path) {
    mopt_error err = {0};
    mopt_model *m = mopt_model_load(path, NULL, &err);
    if (!m) {
        fuzz_check_error(&err);
        return;
    }
    exercise_model(m, 4, fuzz_check_error);
    mopt_model_free(m);
}

#endif
