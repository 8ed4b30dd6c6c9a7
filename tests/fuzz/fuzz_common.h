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

/* A model that loaded runs a few tokens and a tokenizer round trip. */
static inline void fuzz_exercise(mopt_model *m) {
    const mopt_arch *a = mopt_model_arch(m);
    mopt_session_opts so;
    mopt_session_opts_default(&so);
    so.n_threads = 1;
    so.max_ctx = a->max_ctx < 4 ? a->max_ctx : 4;
    mopt_error err = {0};
    mopt_session *s = mopt_session_new(mopt_model_graph(m), &so, &err);
    if (s) {
        int32_t ids[4];
        for (int32_t i = 0; i < so.max_ctx; i++) ids[i] = (int32_t)((7u * (uint32_t)i + 1) % (uint32_t)a->vocab_size);
        const float *logits;
        if (mopt_session_forward(s, ids, so.max_ctx, true, &logits, &err)) fuzz_check_error(&err);
        mopt_session_free(s);
    } else {
        fuzz_check_error(&err);
    }
    const mopt_tokenizer *t = mopt_model_tokenizer(m);
    int32_t *ids;
    size_t k;
    if (t && mopt_tokenizer_encode(t, "Once upon a time", 16, MOPT_TOK_ADD_SPECIAL, &ids, &k, &err) == MOPT_OK) {
        char *txt;
        size_t tl;
        if (mopt_tokenizer_decode(t, ids, k, 0, &txt, &tl, &err) == MOPT_OK) free(txt);
        free(ids);
    }
}

static inline void fuzz_load(const char *path) {
    mopt_error err = {0};
    mopt_model *m = mopt_model_load(path, NULL, &err);
    if (!m) {
        fuzz_check_error(&err);
        return;
    }
    fuzz_exercise(m);
    mopt_model_free(m);
}

#endif
