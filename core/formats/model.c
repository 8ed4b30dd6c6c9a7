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
    mopt_status st;
    char tp[4096];
    const char *tok_path = tokenizer_path;
    if (mopt_dir_exists(path)) {
        m->format = MOPT_FORMAT_HF;
        st = mopt_import_hf(path, &m->graph, err);
        if (!st && !tok_path && mopt_path_join(tp, sizeof tp, path, "tokenizer.json") && mopt_file_exists(tp))
            tok_path = tp;
        /* an export of a llama2.c model keeps its tokenizer as tokenizer.bin */
        if (!st && !tok_path && mopt_path_join(tp, sizeof tp, path, "tokenizer.bin") && mopt_file_exists(tp))
            tok_path = tp;
    } else if (mopt_file_exists(path) && ends_with(path, ".gguf")) {
        m->format = MOPT_FORMAT_GGUF;
        st = mopt_import_gguf(path, &m->graph, &m->tok, err);
        if (!st && tok_path) { /* an explicit tokenizer wins over the file's own */
            mopt_tokenizer_free(m->tok);
            m->tok = NULL;
        }
    } else if (mopt_file_exists(path)) {
        m->format = MOPT_FORMAT_LLAMA2C;
        st = mopt_import_llama2c(path, &m->graph, err);
        if (!st && !tok_path && find_llama2c_tokenizer(path, tp, sizeof tp)) tok_path = tp;
    } else {
        st = MOPT_FAIL(err, MOPT_E_IO, "%s: no such file or directory", path);
    }
    if (!st && tok_path) {
        m->tok = load_tokenizer(tok_path, mopt_graph_arch(m->graph)->vocab_size, err);
        if (!m->tok) st = err ? (mopt_status)err->code : MOPT_E_FORMAT;
    }
    if (!st && m->tok && mopt_tokenizer_vocab_size(m->tok) > mopt_graph_arch(m->graph)->vocab_size) {
        st = MOPT_FAIL(err, MOPT_E_FORMAT, "%s: tokenizer has %d tokens but the model's vocabulary is %d", tok_path,
                       mopt_tokenizer_vocab_size(m->tok), mopt_graph_arch(m->graph)->vocab_size);
    }
    if (st) {
        if (err && (!tok_path || !strstr(err->msg, tok_path))) mopt_error_name_file(err, path);
        mopt_model_free(m);
        return NULL;
    }
    return m;
}
