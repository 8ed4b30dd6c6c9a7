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
#include "hf_quant.h"
#include "model_impl.h"
#include "safetensors.h"

/* --- config.json ------------------------------------------------------------ */

static mopt_status arch_from_config(const char *file, mopt_arch *a, const mopt_family **family, mopt_error *err) {
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
    } else if (!(*family = mopt_family_of_hf(mt))) {
        char known[256];
        st = MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: model_type \"%s\" is not supported (%s)", file, mt,
                       mopt_family_list(MOPT_NAMING_HF, known, sizeof known));
    } else {
        *a = (*family)->shape;
        snprintf(a->family, sizeof a->family, "%s", (*family)->name);
        st = (*family)->hf_read(cfg, file, a, err);
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

/* the shards in dir, in sorted order (a checkpoint's tensors come out the same whatever readdir says) */
static mopt_status add_files(mopt_graph *g, const char *dir, const char **names, size_t n, mopt_error *err) {
    qsort(names, n, sizeof *names, cmp_str);
    char path[4096];
    mopt_status st = MOPT_OK;
    for (size_t i = 0; i < n && st == MOPT_OK; i++) {
        if (!mopt_path_join(path, sizeof path, dir, names[i]))
            st = MOPT_FAIL(err, MOPT_E_IO, "%s: path too long", dir);
        else
            st = add_file(g, path, err);
    }
    return st;
}

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
    if (st == MOPT_OK) st = add_files(g, dir, files, n, err);
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
        if (!mopt_grow((void **)&names, &cap, n + 1, sizeof *names)) {
            st = MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
            break;
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
    if (st == MOPT_OK) st = add_files(g, dir, (const char **)names, n, err);
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    return st;
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
    const mopt_family *family = NULL;
    mopt_status st = arch_from_config(path, &arch, &family, err);
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

    mopt_hf_kv kv = {0};
    if (st == MOPT_OK) st = mopt_import_hf_quant(g, path, &kv, err);
    if (st == MOPT_OK && family->hf_fixup) st = family->hf_fixup(g, err);
    if (st == MOPT_OK) st = mopt_family_adopt_names(g, family, MOPT_NAMING_HF, "config.json", err);
    const mopt_build_src src = {"config.json", MOPT_NAMING_HF};
    if (st == MOPT_OK) st = mopt_arch_build(g, &src, err);
    if (st == MOPT_OK) st = mopt_hf_kv_apply(g, &kv, path, err);
    mopt_hf_kv_free(&kv);
    if (st) {
        mopt_graph_free(g);
        return st;
    }
    *out = g;
    return MOPT_OK;
}

/* --- config.json for an export ------------------------------------------------------- */

char *mopt_hf_config_json(const mopt_graph *g, const char *torch_dtype, mopt_hf_layout layout, const mopt_quant_scheme *s,
                          mopt_error *err) {
    const mopt_arch *a = mopt_graph_arch(g);
    const mopt_family *f = mopt_family_find(a->family);
    json_t *c = f ? f->hf_write(a) : NULL;
    if (!c) {
        MOPT_FAIL(err, f ? MOPT_E_NOMEM : MOPT_E_UNSUPPORTED, "architecture family \"%s\" has no config.json form", a->family);
        return NULL;
    }
    json_object_set_new(c, "torch_dtype", json_string(torch_dtype));
    if (a->bos_id >= 0) json_object_set_new(c, "bos_token_id", json_integer(a->bos_id));
    if (a->eos_id >= 0) json_object_set_new(c, "eos_token_id", json_integer(a->eos_id));
    if (layout != MOPT_HF_DENSE) json_object_set_new(c, "quantization_config", mopt_hfq_config(g, layout, s));
    char *text = mopt_json_dump_text(c, 1);
    json_decref(c);
    if (!text) MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    return text;
}

char *mopt_modelopt_quant_json(const mopt_graph *g, const mopt_quant_scheme *s, mopt_error *err) {
    json_t *j = mopt_hfq_modelopt_file(g, s);
    char *text = j ? mopt_json_dump_text(j, 1) : NULL;
    json_decref(j);
    if (!text) MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    return text;
}
