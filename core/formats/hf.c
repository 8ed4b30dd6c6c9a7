/* Hugging Face checkpoint directories: config.json, then model.safetensors,
 * model.safetensors.index.json with its shards, or every *.safetensors. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch_impl.h"
#include "base.h"
#include "json_util.h"
#include "model_impl.h"
#include "safetensors.h"

/* --- config.json ------------------------------------------------------------ */

static mopt_status need_positive(const char *file, const char *key, int64_t v, mopt_error *err) {
    if (v <= 0 || v > (1 << 24))
        return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: key \"%s\" = %lld is not a usable size", file, key, (long long)v);
    return MOPT_OK;
}

#define GET_INT(key, dst)                                                                                          \
    do {                                                                                                           \
        int64_t v_;                                                                                                \
        if (!mopt_json_get_int(cfg, key, &v_, file, err)) return MOPT_E_FORMAT;                                  \
        if (need_positive(file, key, v_, err)) return MOPT_E_FORMAT;                                               \
        dst = (int32_t)v_;                                                                                         \
    } while (0)

static mopt_status rope_from_config(const json_t *cfg, const char *file, mopt_arch *a, mopt_error *err) {
    double theta = 10000.0;
    if (!mopt_json_get_num_opt(cfg, "rope_theta", &theta, file, err)) return MOPT_E_FORMAT;
    /* transformers 5 moves rope settings into rope_parameters; older configs
     * may carry rope_scaling. Only the plain ("default") rotation is supported. */
    const char *keys[] = {"rope_parameters", "rope_scaling"};
    for (int i = 0; i < 2; i++) {
        json_t *rp = json_object_get(cfg, keys[i]);
        if (!rp || json_is_null(rp)) continue;
        if (!json_is_object(rp)) return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: key \"%s\" must be an object", file, keys[i]);
        if (!mopt_json_get_num_opt(rp, "rope_theta", &theta, file, err)) return MOPT_E_FORMAT;
        const char *type = NULL;
        if (!mopt_json_get_str_opt(rp, "rope_type", &type, file, err)) return MOPT_E_FORMAT;
        if (!type && !mopt_json_get_str_opt(rp, "type", &type, file, err)) return MOPT_E_FORMAT;
        if (type && strcmp(type, "default") != 0)
            return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: %s.rope_type \"%s\" is not supported (only \"default\")",
                             file, keys[i], type);
    }
    if (!(theta > 0) || !isfinite(theta))
        return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: rope_theta %g must be positive", file, theta);
    a->rope_theta = (float)theta;
    return MOPT_OK;
}

static mopt_status llama_config(const json_t *cfg, const char *file, mopt_arch *a, mopt_error *err) {
    snprintf(a->family, sizeof a->family, "llama");
    GET_INT("hidden_size", a->dim);
    GET_INT("num_hidden_layers", a->n_layers);
    GET_INT("num_attention_heads", a->n_heads);
    GET_INT("intermediate_size", a->ffn_dim);
    GET_INT("vocab_size", a->vocab_size);
    int64_t v = a->n_heads;
    if (!mopt_json_get_int_opt(cfg, "num_key_value_heads", &v, file, err)) return MOPT_E_FORMAT;
    if (need_positive(file, "num_key_value_heads", v, err)) return MOPT_E_FORMAT;
    a->n_kv_heads = (int32_t)v;
    v = a->dim / a->n_heads;
    if (!mopt_json_get_int_opt(cfg, "head_dim", &v, file, err)) return MOPT_E_FORMAT;
    if (need_positive(file, "head_dim", v, err)) return MOPT_E_FORMAT;
    a->head_dim = (int32_t)v;
    v = 2048;
    if (!mopt_json_get_int_opt(cfg, "max_position_embeddings", &v, file, err)) return MOPT_E_FORMAT;
    if (need_positive(file, "max_position_embeddings", v, err)) return MOPT_E_FORMAT;
    a->max_ctx = (int32_t)v;
    double eps = 1e-6;
    if (!mopt_json_get_num_opt(cfg, "rms_norm_eps", &eps, file, err)) return MOPT_E_FORMAT;
    a->norm_eps = (float)eps;
    if (rope_from_config(cfg, file, a, err)) return MOPT_E_FORMAT;
    a->rope_style = MOPT_ROPE_HALF;
    a->norm = MOPT_NORM_RMS;
    a->mlp = MOPT_MLP_SWIGLU;
    bool tied = false, attn_bias = false, mlp_bias = false;
    if (!mopt_json_get_bool_opt(cfg, "tie_word_embeddings", &tied, file, err) ||
        !mopt_json_get_bool_opt(cfg, "attention_bias", &attn_bias, file, err) ||
        !mopt_json_get_bool_opt(cfg, "mlp_bias", &mlp_bias, file, err))
        return MOPT_E_FORMAT;
    const char *mt = json_string_value(json_object_get(cfg, "model_type"));
    a->tied_embeddings = tied;
    a->qkv_bias = attn_bias || (mt && strcmp(mt, "qwen2") == 0); /* Qwen2 always has q/k/v biases */
    a->o_bias = attn_bias;
    a->mlp_bias = mlp_bias;
    const char *act = NULL;
    if (!mopt_json_get_str_opt(cfg, "hidden_act", &act, file, err)) return MOPT_E_FORMAT;
    if (act && strcmp(act, "silu") != 0)
        return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: hidden_act \"%s\" is not supported (need \"silu\")", file, act);
    if (a->n_heads % a->n_kv_heads != 0)
        return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d",
                         file, a->n_heads, a->n_kv_heads);
    if (a->head_dim % 2 != 0)
        return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: head_dim %d must be even for RoPE", file, a->head_dim);
    return MOPT_OK;
}

static mopt_status gpt2_config(const json_t *cfg, const char *file, mopt_arch *a, mopt_error *err) {
    snprintf(a->family, sizeof a->family, "gpt2");
    GET_INT("n_embd", a->dim);
    GET_INT("n_layer", a->n_layers);
    GET_INT("n_head", a->n_heads);
    GET_INT("vocab_size", a->vocab_size);
    GET_INT("n_positions", a->max_ctx);
    int64_t inner = 4 * (int64_t)a->dim;
    if (!mopt_json_get_int_opt(cfg, "n_inner", &inner, file, err)) return MOPT_E_FORMAT;
    if (need_positive(file, "n_inner", inner, err)) return MOPT_E_FORMAT;
    a->ffn_dim = (int32_t)inner;
    if (a->dim % a->n_heads != 0)
        return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: n_embd %d is not a multiple of n_head %d", file, a->dim, a->n_heads);
    a->n_kv_heads = a->n_heads;
    a->head_dim = a->dim / a->n_heads;
    double eps = 1e-5;
    if (!mopt_json_get_num_opt(cfg, "layer_norm_epsilon", &eps, file, err)) return MOPT_E_FORMAT;
    a->norm_eps = (float)eps;
    const char *act = NULL;
    if (!mopt_json_get_str_opt(cfg, "activation_function", &act, file, err)) return MOPT_E_FORMAT;
    if (act && strcmp(act, "gelu_new") != 0 && strcmp(act, "gelu_pytorch_tanh") != 0)
        return MOPT_FAIL(err, MOPT_E_UNSUPPORTED,
                         "%s: activation_function \"%s\" is not supported (need \"gelu_new\")", file, act);
    bool tied = true;
    if (!mopt_json_get_bool_opt(cfg, "tie_word_embeddings", &tied, file, err)) return MOPT_E_FORMAT;
    a->tied_embeddings = tied;
    a->norm = MOPT_NORM_LAYER;
    a->mlp = MOPT_MLP_GELU;
    a->qkv_bias = a->o_bias = a->mlp_bias = 1;
    return MOPT_OK;
}

static mopt_status arch_from_config(const char *file, mopt_arch *a, mopt_error *err) {
    json_t *cfg = mopt_json_load_file(file, err);
    if (!cfg) return err ? (mopt_status)err->code : MOPT_E_FORMAT;
    mopt_status st;
    memset(a, 0, sizeof *a);
    a->bos_id = a->eos_id = -1;
    const char *mt = NULL;
    if (!json_is_object(cfg)) {
        st = MOPT_FAIL(err, MOPT_E_FORMAT, "%s: top level is not a JSON object", file);
    } else if (!mopt_json_get_str_opt(cfg, "model_type", &mt, file, err)) {
        st = MOPT_E_FORMAT;
    } else if (!mt) {
        st = MOPT_FAIL(err, MOPT_E_FORMAT, "%s: missing key \"model_type\"", file);
    } else if (!strcmp(mt, "llama") || !strcmp(mt, "mistral") || !strcmp(mt, "qwen2")) {
        st = llama_config(cfg, file, a, err);
    } else if (!strcmp(mt, "gpt2")) {
        st = gpt2_config(cfg, file, a, err);
    } else {
        st = MOPT_FAIL(err, MOPT_E_UNSUPPORTED,
                       "%s: model_type \"%s\" is not supported (llama, mistral, qwen2, gpt2)", file, mt);
    }
    if (st == MOPT_OK) {
        int64_t id = -1;
        json_t *e = json_object_get(cfg, "eos_token_id");
        if (json_is_integer(e)) a->eos_id = (int32_t)json_integer_value(e);
        if (json_is_array(e) && json_is_integer(json_array_get(e, 0)))
            a->eos_id = (int32_t)json_integer_value(json_array_get(e, 0));
        if (json_is_integer(json_object_get(cfg, "bos_token_id")))
            id = json_integer_value(json_object_get(cfg, "bos_token_id"));
        a->bos_id = (int32_t)id;
    }
    json_decref(cfg);
    return st;
}

/* --- safetensors files ------------------------------------------------------ */

static mopt_status add_file(mopt_graph *g, const char *path, mopt_error *err) {
    mopt_tensor **list;
    int32_t n;
    mopt_status st = mopt_safetensors_read(path, &list, &n, err);
    if (st) return st;
    int32_t i = 0;
    for (; i < n && st == MOPT_OK; i++) {
        st = mopt_graph_add_tensor(g, list[i], err);
        if (st) mopt_tensor_free(list[i]);
    }
    for (; i < n; i++) mopt_tensor_free(list[i]);
    free(list);
    return st;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static mopt_status load_index(mopt_graph *g, const char *dir, const char *index, mopt_error *err) {
    json_t *j = mopt_json_load_file(index, err);
    if (!j) return MOPT_E_FORMAT;
    json_t *map = json_object_get(j, "weight_map");
    mopt_status st = MOPT_OK;
    if (!json_is_object(map)) {
        st = MOPT_FAIL(err, MOPT_E_FORMAT, "%s: missing object \"weight_map\"", index);
        goto done;
    }
    /* Distinct shard names, in sorted order. */
    size_t n = 0, cap = json_object_size(map);
    const char **files = calloc(cap ? cap : 1, sizeof *files);
    if (!files) {
        st = MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
        goto done;
    }
    const char *key;
    json_t *val;
    json_object_foreach(map, key, val) {
        if (!json_is_string(val)) {
            st = MOPT_FAIL(err, MOPT_E_FORMAT, "%s: weight_map[\"%s\"] is not a file name", index, key);
            break;
        }
        const char *f = json_string_value(val);
        if (strchr(f, '/') || f[0] == '.') {
            st = MOPT_FAIL(err, MOPT_E_FORMAT, "%s: shard name \"%s\" must be a plain file name", index, f);
            break;
        }
        size_t k = 0;
        while (k < n && strcmp(files[k], f)) k++;
        if (k == n) files[n++] = f;
    }
    qsort(files, n, sizeof *files, cmp_str);
    char path[4096];
    for (size_t i = 0; i < n && st == MOPT_OK; i++) {
        if (!mopt_path_join(path, sizeof path, dir, files[i]))
            st = MOPT_FAIL(err, MOPT_E_IO, "%s: path too long", dir);
        else
            st = add_file(g, path, err);
    }
    free(files);
    if (st == MOPT_OK) {
        json_object_foreach(map, key, val) {
            if (!mopt_graph_find_tensor(g, key)) {
                st = MOPT_FAIL(err, MOPT_E_FORMAT, "%s: tensor %s listed in weight_map is not in %s", index, key,
                               json_string_value(val));
                break;
            }
        }
    }
done:
    json_decref(j);
    return st;
}

static mopt_status load_all_safetensors(mopt_graph *g, const char *dir, mopt_error *err) {
    DIR *d = opendir(dir);
    if (!d) return MOPT_FAIL(err, MOPT_E_IO, "%s: cannot open directory", dir);
    char **names = NULL;
    size_t n = 0, cap = 0;
    mopt_status st = MOPT_OK;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name);
        if (len < 12 || strcmp(de->d_name + len - 12, ".safetensors") != 0) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            char **nn = realloc(names, cap * sizeof *names);
            if (!nn) {
                st = MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
                break;
            }
            names = nn;
        }
        names[n] = strdup(de->d_name);
        if (!names[n]) {
            st = MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
            break;
        }
        n++;
    }
    closedir(d);
    if (st == MOPT_OK && n == 0) st = MOPT_FAIL(err, MOPT_E_FORMAT, "%s: no *.safetensors file", dir);
    if (st == MOPT_OK) qsort(names, n, sizeof *names, cmp_str);
    char path[4096];
    for (size_t i = 0; i < n && st == MOPT_OK; i++) {
        if (!mopt_path_join(path, sizeof path, dir, names[i]))
            st = MOPT_FAIL(err, MOPT_E_IO, "%s: path too long", dir);
        else
            st = add_file(g, path, err);
    }
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    return st;
}

/* --- GPT-2 Conv1D ----------------------------------------------------------- */

/* GPT-2 stores its linears as Conv1D weights [in, out] and fuses q/k/v into
 * c_attn. mopt keeps every linear as [out, in], so transpose them here and
 * split c_attn into attn.{q,k,v}_proj; exporters undo both. */
static mopt_status gpt2_normalize(mopt_graph *g, mopt_error *err) {
    const mopt_arch *a = mopt_graph_arch(g);
    /* Older checkpoints lack the "transformer." prefix. */
    if (!mopt_graph_find_tensor(g, "transformer.wte.weight")) {
        for (int32_t i = 0; i < mopt_graph_n_tensors(g); i++) {
            mopt_tensor *t = mopt_graph_tensor(g, i);
            if (strncmp(t->name, "lm_head.", 8) == 0) continue;
            char nn[MOPT_MAX_NAME];
            if (snprintf(nn, sizeof nn, "transformer.%s", t->name) >= (int)sizeof nn)
                return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "tensor name too long: %s", t->name);
            memcpy(t->name, nn, sizeof nn);
        }
    }
    const int64_t D = a->dim;
    for (int l = 0; l < a->n_layers; l++) {
        char name[128], out[128];
        snprintf(name, sizeof name, "transformer.h.%d.attn.c_attn.weight", l);
        mopt_tensor *w = mopt_graph_find_tensor(g, name);
        if (!w) return MOPT_FAIL(err, MOPT_E_FORMAT, "missing tensor %s", name);
        if (w->ndim != 2 || w->ne[1] != D || w->ne[0] != 3 * D) {
            char s[64];
            return MOPT_FAIL(err, MOPT_E_FORMAT, "tensor %s has shape %s but config.json implies [%lld, %lld]", name,
                             mopt_tensor_shape_str(w, s, sizeof s), (long long)D, (long long)(3 * D));
        }
        snprintf(name, sizeof name, "transformer.h.%d.attn.c_attn.bias", l);
        mopt_tensor *b = mopt_graph_find_tensor(g, name);
        if (!b) return MOPT_FAIL(err, MOPT_E_FORMAT, "missing tensor %s", name);
        if (b->ndim != 1 || b->ne[0] != 3 * D) {
            char s[64];
            return MOPT_FAIL(err, MOPT_E_FORMAT, "tensor %s has shape %s but config.json implies [%lld]", name,
                             mopt_tensor_shape_str(b, s, sizeof s), (long long)(3 * D));
        }
        static const char *const qkv[3] = {"q_proj", "k_proj", "v_proj"};
        for (int p = 0; p < 3; p++) {
            /* Conv1D [in, 3D]: columns p*D..p*D+D-1 are this projection's outputs. */
            snprintf(out, sizeof out, "transformer.h.%d.attn.%s.weight", l, qkv[p]);
            mopt_tensor *t = mopt_tensor_transpose2d(w, out, p * D, D, err);
            if (!t) return MOPT_E_NOMEM;
            mopt_status st = mopt_graph_add_tensor(g, t, err);
            if (st) {
                mopt_tensor_free(t);
                return st;
            }
            snprintf(out, sizeof out, "transformer.h.%d.attn.%s.bias", l, qkv[p]);
            int64_t dims[1] = {D};
            mopt_tensor *tb = mopt_tensor_new(out, b->dtype, 1, dims, err);
            if (!tb) return MOPT_E_NOMEM;
            size_t es = mopt_dtype_size(b->dtype);
            memcpy(tb->data, (const char *)b->data + (size_t)(p * D) * es, (size_t)D * es);
            st = mopt_graph_add_tensor(g, tb, err);
            if (st) {
                mopt_tensor_free(tb);
                return st;
            }
        }
        mopt_graph_remove_tensor(g, name);
        snprintf(name, sizeof name, "transformer.h.%d.attn.c_attn.weight", l);
        mopt_graph_remove_tensor(g, name);
        /* c_proj [in, out] and the MLP's c_fc / c_proj */
        static const char *const conv[3] = {"attn.c_proj", "mlp.c_fc", "mlp.c_proj"};
        for (int c = 0; c < 3; c++) {
            snprintf(name, sizeof name, "transformer.h.%d.%s.weight", l, conv[c]);
            mopt_tensor *cw = mopt_graph_find_tensor(g, name);
            if (!cw) return MOPT_FAIL(err, MOPT_E_FORMAT, "missing tensor %s", name);
            if (cw->ndim != 2) return MOPT_FAIL(err, MOPT_E_FORMAT, "tensor %s must be 2-D", name);
            /* transposing [in, out] gives [out, in]; keep the name */
            mopt_tensor *t = mopt_tensor_transpose2d(cw, name, 0, cw->ne[0], err);
            if (!t) return MOPT_E_NOMEM;
            mopt_status st = mopt_graph_replace_tensor(g, t, err);
            if (st) {
                mopt_tensor_free(t);
                return st;
            }
        }
    }
    /* GPT-2 checkpoints may carry the causal-mask buffers; they are not weights. */
    for (int l = 0; l < a->n_layers; l++) {
        char name[128];
        snprintf(name, sizeof name, "transformer.h.%d.attn.bias", l);
        mopt_graph_remove_tensor(g, name);
        snprintf(name, sizeof name, "transformer.h.%d.attn.masked_bias", l);
        mopt_graph_remove_tensor(g, name);
    }
    return MOPT_OK;
}

mopt_tensor *mopt_tensor_transpose2d(const mopt_tensor *t, const char *name, int64_t row0, int64_t rows,
                                     mopt_error *err) {
    /* t: PyTorch [R, C] (ne[1] = R, ne[0] = C). Result: [rows, R] holding
     * columns row0..row0+rows-1 of t, i.e. out[i][j] = t[j][row0 + i]. */
    const int64_t R = t->ne[1], C = t->ne[0];
    int64_t dims[2] = {rows, R};
    mopt_tensor *o = mopt_tensor_new(name, t->dtype, 2, dims, err);
    if (!o) return NULL;
    size_t es = mopt_dtype_size(t->dtype);
    const char *src = t->data;
    char *dst = o->data;
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < R; j++) memcpy(dst + (size_t)(i * R + j) * es, src + (size_t)(j * C + row0 + i) * es, es);
    return o;
}

/* --- entry ------------------------------------------------------------------ */

mopt_status mopt_import_hf(const char *dir, mopt_graph **out, mopt_error *err) {
    *out = NULL;
    char path[4096];
    if (!mopt_path_join(path, sizeof path, dir, "config.json")) return MOPT_FAIL(err, MOPT_E_IO, "%s: path too long", dir);
    char marker[4096];
    if (mopt_path_join(marker, sizeof marker, dir, "MOPT_EXPORT_INCOMPLETE") && mopt_file_exists(marker))
        return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: an interrupted export (MOPT_EXPORT_INCOMPLETE is present); delete it", dir);
    if (!mopt_file_exists(path)) return MOPT_FAIL(err, MOPT_E_IO, "%s: no config.json in this directory", dir);
    if (mopt_is_trtllm_config(path)) return mopt_import_trtllm(dir, out, err);
    mopt_arch arch;
    mopt_status st = arch_from_config(path, &arch, err);
    if (st) return st;
    mopt_graph *g = mopt_graph_new(&arch, err);
    if (!g) return MOPT_E_NOMEM;

    char index[4096], single[4096];
    mopt_path_join(index, sizeof index, dir, "model.safetensors.index.json");
    mopt_path_join(single, sizeof single, dir, "model.safetensors");
    if (mopt_file_exists(index))
        st = load_index(g, dir, index, err);
    else if (mopt_file_exists(single))
        st = add_file(g, single, err);
    else
        st = load_all_safetensors(g, dir, err);

    if (st == MOPT_OK) st = mopt_import_hf_quant(g, path, err);
    if (st == MOPT_OK && strcmp(arch.family, "gpt2") == 0) st = gpt2_normalize(g, err);
    if (st == MOPT_OK) st = mopt_arch_build(g, NULL, err);
    if (st) {
        mopt_graph_free(g);
        return st;
    }
    *out = g;
    return MOPT_OK;
}
