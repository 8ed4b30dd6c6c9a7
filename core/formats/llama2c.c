/* llama2.c checkpoints (run.c, version 0): a header of 7 int32
 * {dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len},
 * then fp32 arrays in this order:
 *   token_embedding [vocab, dim]     rms_att [L, dim]
 *   wq [L, dim, dim]  wk [L, kv_dim, dim]  wv [L, kv_dim, dim]  wo [L, dim, dim]
 *   rms_ffn [L, dim]  w1 [L, hidden, dim]  w2 [L, dim, hidden]  w3 [L, hidden, dim]
 *   rms_final [dim]   freq_cis_real/imag [seq_len, head_size/2] each (unused)
 *   wcls [vocab, dim] only when vocab_size < 0 (else the classifier is shared).
 * The tensors become views into the mapping under Hugging Face names, so the
 * LLaMA builder wires them. */
#include <stdio.h>
#include <string.h>

#include "arch_impl.h"
#include "tensor_impl.h"
#include "model_impl.h"

#define L2C_LIMIT (1 << 20) /* any header field above this is not a real model */

typedef struct {
    mopt_graph *g;
    mopt_buffer *buf;
    const float *p; /* cursor */
    mopt_error *err;
    mopt_status st;
} cursor;

static void take(cursor *c, mopt_role role, int32_t layer, int32_t ndim, const int64_t *dims) {
    char buf[MOPT_MAX_NAME];
    const char *name = role < 0 ? NULL : mopt_family_role_name(&mopt_family_llama, role, layer, "weight", buf, sizeof buf);
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= dims[i];
    if (c->st == MOPT_OK && name) {
        mopt_tensor *t = mopt_tensor_view(c->buf, (void *)c->p, name, MOPT_DTYPE_F32, ndim, dims, c->err);
        if (!t)
            c->st = MOPT_E_NOMEM;
        else if ((c->st = mopt_graph_add_tensor(c->g, t, c->err)) != MOPT_OK)
            mopt_tensor_free(t);
    }
    c->p += n;
}

/* a role's weight of every block, as run.c lays them out: all blocks' q, then all k, ... */
static void take_layers(cursor *c, mopt_role role, int32_t L, int64_t rows, int64_t cols) {
    for (int l = 0; l < L; l++) {
        int64_t dims[2] = {rows, cols};
        take(c, role, l, cols ? 2 : 1, dims);
    }
}

mopt_status mopt_import_llama2c(const char *path, mopt_graph **out, mopt_error *err) {
    *out = NULL;
    mopt_buffer *buf = mopt_buffer_mmap(path, err);
    if (!buf) return err ? (mopt_status)err->code : MOPT_E_IO;
    mopt_status st = MOPT_OK;
    mopt_graph *g = NULL;
    int32_t h[7];
    if (buf->size < sizeof h) {
        st = MOPT_FAIL(err, MOPT_E_FORMAT, "%s: %zu bytes is too short for the 28-byte llama2.c header", path, buf->size);
        goto done;
    }
    memcpy(h, buf->base, sizeof h);
    const char *names[7] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"};
    for (int i = 0; i < 7; i++) {
        int64_t v = i == 5 && h[i] < 0 ? -(int64_t)h[i] : h[i]; /* vocab < 0 means an unshared classifier */
        if (v <= 0 || v > L2C_LIMIT) {
            st = MOPT_FAIL(err, MOPT_E_FORMAT, "%s: impossible llama2.c header: %s = %d", path, names[i], h[i]);
            goto done;
        }
    }
    const int32_t dim = h[0], hidden = h[1], L = h[2], nh = h[3], nkv = h[4], seq = h[6];
    const int shared = h[5] > 0;
    const int32_t vocab = shared ? h[5] : -h[5];
    if (dim % nh != 0 || nh % nkv != 0 || (dim / nh) % 2 != 0) {
        st = MOPT_FAIL(err, MOPT_E_FORMAT,
                       "%s: impossible llama2.c header: dim %d, n_heads %d, n_kv_heads %d (need dim %% n_heads == 0, "
                       "n_heads %% n_kv_heads == 0, even head size)",
                       path, dim, nh, nkv);
        goto done;
    }
    const int64_t hs = dim / nh, kvd = (int64_t)nkv * hs;
    /* Count the floats the header promises before touching any of them. */
    uint64_t need = (uint64_t)vocab * dim + (uint64_t)L * (2 * (uint64_t)dim + 2 * (uint64_t)dim * dim +
                                                            2 * (uint64_t)kvd * dim + 3 * (uint64_t)hidden * dim) +
                    dim + (uint64_t)seq * hs + (shared ? 0 : (uint64_t)vocab * dim);
    uint64_t have = (buf->size - sizeof h) / 4;
    if (need != have || (buf->size - sizeof h) % 4) {
        st = MOPT_FAIL(err, MOPT_E_FORMAT,
                       "%s: %s llama2.c checkpoint: the header implies %llu weights (%llu bytes in all), the file holds %zu bytes", path,
                       need > have ? "truncated" : "oversized", (unsigned long long)need,
                       (unsigned long long)(need * 4 + sizeof h), buf->size);
        goto done;
    }

    /* llama2.c holds a LLaMA, its q/k rows in the interleaved RoPE order run.c rotates */
    mopt_arch a = mopt_family_llama.shape;
    snprintf(a.family, sizeof a.family, "%s", mopt_family_llama.name);
    a.dim = dim;
    a.n_layers = L;
    a.n_heads = nh;
    a.n_kv_heads = nkv;
    a.head_dim = (int32_t)hs;
    a.ffn_dim = hidden;
    a.vocab_size = vocab;
    a.max_ctx = seq;
    a.norm_eps = 1e-5f;       /* run.c rmsnorm */
    a.rope_theta = 10000.0f;  /* run.c */
    a.rope_style = MOPT_ROPE_INTERLEAVED;
    a.tied_embeddings = shared;
    a.bos_id = 1;
    a.eos_id = 1; /* run.c stops when BOS comes back: it delimits sequences */
    g = mopt_graph_new(&a, err);
    if (!g) {
        st = MOPT_E_NOMEM;
        goto done;
    }
    cursor c = {g, buf, (const float *)((const char *)buf->base + sizeof h), err, MOPT_OK};
    int64_t emb[2] = {vocab, dim}, fin[1] = {dim};
    take(&c, MOPT_ROLE_EMBED, -1, 2, emb);
    take_layers(&c, MOPT_ROLE_ATTN_NORM, L, dim, 0);
    take_layers(&c, MOPT_ROLE_ATTN_Q, L, dim, dim);
    take_layers(&c, MOPT_ROLE_ATTN_K, L, kvd, dim);
    take_layers(&c, MOPT_ROLE_ATTN_V, L, kvd, dim);
    take_layers(&c, MOPT_ROLE_ATTN_O, L, dim, dim);
    take_layers(&c, MOPT_ROLE_MLP_NORM, L, dim, 0);
    take_layers(&c, MOPT_ROLE_MLP_GATE, L, hidden, dim);
    take_layers(&c, MOPT_ROLE_MLP_DOWN, L, dim, hidden);
    take_layers(&c, MOPT_ROLE_MLP_UP, L, hidden, dim);
    take(&c, MOPT_ROLE_FINAL_NORM, -1, 1, fin);
    int64_t freq[1] = {(int64_t)seq * hs};
    take(&c, (mopt_role)-1, -1, 1, freq); /* freq_cis_real + freq_cis_imag: recomputed by RoPE */
    if (!shared) take(&c, MOPT_ROLE_LM_HEAD, -1, 2, emb);
    st = c.st;
    const mopt_build_src src = {"the llama2.c header", -1};
    if (st == MOPT_OK) st = mopt_arch_build(g, &src, err);
done:
    mopt_buffer_release(buf);
    if (st) {
        mopt_graph_free(g);
        return st;
    }
    *out = g;
    return MOPT_OK;
}
