/* The model object: a graph, its tokenizer, and where it came from. */
#include <dirent.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "model_impl.h"

struct mopt_model {
    mopt_graph *graph;
    mopt_tokenizer *tok;
    mopt_model_format format;
    char path[4096];
};

void mopt_model_free(mopt_model *m) {
    if (!m) return;
    mopt_graph_free(m->graph);
    mopt_tokenizer_free(m->tok);
    free(m);
}

mopt_graph *mopt_model_graph(const mopt_model *m) { return m->graph; }
const mopt_arch *mopt_model_arch(const mopt_model *m) { return mopt_graph_arch(m->graph); }
const mopt_tokenizer *mopt_model_tokenizer(const mopt_model *m) { return m->tok; }
mopt_model_format mopt_model_format_of(const mopt_model *m) { return m->format; }
const char *mopt_model_path(const mopt_model *m) { return m->path; }

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* llama2.c convention: tokenizer.bin, else a single tok*.bin, beside the checkpoint. */
static int find_llama2c_tokenizer(const char *model_path, char *out, size_t cap) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", model_path);
    const char *dir = dirname(tmp);
    if (mopt_path_join(out, cap, dir, "tokenizer.bin") && mopt_file_exists(out)) return 1;
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *de;
    int found = 0;
    while ((de = readdir(d))) {
        if (strncmp(de->d_name, "tok", 3) != 0 || !ends_with(de->d_name, ".bin")) continue;
        if (mopt_path_join(out, cap, dir, de->d_name) && mopt_file_exists(out)) {
            found = 1;
            break;
        }
    }
    closedir(d);
    return found;
}

/* a directory's own tokenizer: tokenizer.json, or the tokenizer.bin an export of a llama2.c model keeps */
static int find_dir_tokenizer(const char *dir, char *out, size_t cap) {
    return (mopt_path_join(out, cap, dir, "tokenizer.json") && mopt_file_exists(out)) ||
           (mopt_path_join(out, cap, dir, "tokenizer.bin") && mopt_file_exists(out));
}

static int probe_dir(const char *path) { return mopt_dir_exists(path); }

/* GGUF by its magic, or by its name (the reader then says what is wrong with it) */
static int probe_gguf(const char *path) {
    return mopt_file_exists(path) && (mopt_file_starts_with(path, "GGUF", 4) || ends_with(path, ".gguf"));
}

static int probe_file(const char *path) { return mopt_file_exists(path); }

static mopt_status load_hf(const char *path, mopt_graph **g, mopt_tokenizer **tok, mopt_error *err) {
    (void)tok;
    return mopt_import_hf(path, g, err); /* TensorRT-LLM directories too: config.json says which */
}

static mopt_status load_llama2c(const char *path, mopt_graph **g, mopt_tokenizer **tok, mopt_error *err) {
    (void)tok;
    return mopt_import_llama2c(path, g, err);
}

/* The formats a path may hold, asked in order; the first whose probe accepts
 * the path loads it (a cheap look: a directory, a magic number, a name). */
static const struct {
    mopt_model_format format;
    int (*probe)(const char *path);
    mopt_status (*load)(const char *path, mopt_graph **g, mopt_tokenizer **tok, mopt_error *err);
    int (*find_tokenizer)(const char *path, char *out, size_t cap); /* when none was given; may be NULL */
} readers[] = {
    {MOPT_FORMAT_HF, probe_dir, load_hf, find_dir_tokenizer},
    {MOPT_FORMAT_GGUF, probe_gguf, mopt_import_gguf, NULL},
    {MOPT_FORMAT_LLAMA2C, probe_file, load_llama2c, find_llama2c_tokenizer},
};

static mopt_tokenizer *load_tokenizer(const char *path, int32_t vocab, mopt_error *err) {
    if (ends_with(path, ".json")) return mopt_tokenizer_load_hf(path, err);
    return mopt_tokenizer_load_llama2c(path, vocab, err);
}

mopt_model *mopt_model_load(const char *path, const char *tokenizer_path, mopt_error *err) {
    mopt_model *m = calloc(1, sizeof *m);
    if (!m) {
        MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
        return NULL;
    }
    snprintf(m->path, sizeof m->path, "%s", path);
    mopt_status st = MOPT_OK;
    char tp[4096];
    const char *tok_path = tokenizer_path;
    size_t r = 0;
    while (r < sizeof readers / sizeof *readers && !readers[r].probe(path)) r++;
    if (r == sizeof readers / sizeof *readers) {
        st = MOPT_FAIL(err, MOPT_E_IO, "%s: no such file or directory", path);
    } else {
        m->format = readers[r].format;
        st = readers[r].load(path, &m->graph, &m->tok, err);
        if (!st && tok_path && m->tok) { /* an explicit tokenizer wins over the file's own */
            mopt_tokenizer_free(m->tok);
            m->tok = NULL;
        }
        if (!st && !tok_path && !m->tok && readers[r].find_tokenizer && readers[r].find_tokenizer(path, tp, sizeof tp)) tok_path = tp;
    }
    if (!st && tok_path) {
        m->tok = load_tokenizer(tok_path, mopt_graph_arch(m->graph)->vocab_size, err);
        if (!m->tok) st = err ? (mopt_status)err->code : MOPT_E_FORMAT;
    }
    if (!st && m->tok && mopt_tokenizer_vocab_size(m->tok) > mopt_graph_arch(m->graph)->vocab_size) {
        st = MOPT_FAIL(err, MOPT_E_FORMAT, "%s: tokenizer has %d tokens but the model's vocabulary is %d", tok_path ? tok_path : path,
                       mopt_tokenizer_vocab_size(m->tok), mopt_graph_arch(m->graph)->vocab_size);
    }
    if (st) {
        if (err && (!tok_path || !strstr(err->msg, tok_path))) mopt_error_name_file(err, path);
        mopt_model_free(m);
        return NULL;
    }
    return m;
}
