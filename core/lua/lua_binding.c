/* The `mopt` Lua module: userdata classes Model, Dataset, Pipeline and Report
 * (metatables with __gc, __close, __tostring and a method table as __index),
 * mopt.passes / mopt.describe / mopt.plugins, and the script runner. Errors
 * from C are raised as Lua errors only after C temporaries are freed. */
#include <jansson.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "mopt/lua.h"
#include "mopt/mopt.h"

/* the library's error setter, named for this module (libmopt-lua sees only the public API) */
#define MOPT_FAIL(err, code, ...) mopt_error_set((err), (code), __func__, __VA_ARGS__)

#define CTX_KEY "mopt.ctx"
#define MODEL_MT "mopt.Model"
#define DATASET_MT "mopt.Dataset"
#define PIPELINE_MT "mopt.Pipeline"
#define REPORT_MT "mopt.Report"

typedef struct lua_ctx {
    mopt_registry *reg;
    int32_t quiet, n_threads;
    int32_t gates_failed; /* a pipeline run by the script failed a gate */
    char write_root[4096]; /* sandboxed: the only directory files may be written in; "" otherwise */
} lua_ctx;

typedef struct { mopt_model *m; } model_box;
typedef struct { char *path; int64_t n_tokens; int32_t seq_len, samples; } dataset_box;
typedef struct { mopt_pipeline *p; } pipeline_box;
typedef struct { mopt_report *r; } report_box;

void mopt_lua_set_registry(lua_State *L, mopt_registry *reg, int32_t quiet, int32_t n_threads) {
    lua_ctx *c = lua_newuserdatauv(L, sizeof *c, 0);
    c->reg = reg;
    c->quiet = quiet;
    c->n_threads = n_threads;
    c->gates_failed = 0;
    c->write_root[0] = '\0';
    lua_setfield(L, LUA_REGISTRYINDEX, CTX_KEY);
}

static lua_ctx *get_ctx(lua_State *L) {
    lua_getfield(L, LUA_REGISTRYINDEX, CTX_KEY);
    lua_ctx *c = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (!c || !c->reg) luaL_error(L, "mopt: no plugin registry (mopt_lua_set_registry was not called)");
    return c;
}

/* --- Model ---------------------------------------------------------------------- */

static model_box *check_model(lua_State *L, int i) {
    model_box *b = luaL_checkudata(L, i, MODEL_MT);
    if (!b->m) luaL_error(L, "mopt.Model is closed");
    return b;
}

static int l_load(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    const char *tok = luaL_optstring(L, 2, NULL);
    model_box *b = lua_newuserdatauv(L, sizeof *b, 0); /* closed box first: __gc is safe if loading fails */
    b->m = NULL;
    luaL_setmetatable(L, MODEL_MT);
    mopt_error err = {0};
    b->m = mopt_model_load(path, tok, &err);
    if (!b->m) return luaL_error(L, "mopt.load: %s", err.msg);
    return 1;
}

static int model_gc(lua_State *L) {
    model_box *b = luaL_checkudata(L, 1, MODEL_MT);
    mopt_model_free(b->m);
    b->m = NULL;
    return 0;
}

static int model_tostring(lua_State *L) {
    model_box *b = luaL_checkudata(L, 1, MODEL_MT);
    if (!b->m) return lua_pushliteral(L, "mopt.Model (closed)"), 1;
    const mopt_arch *a = mopt_model_arch(b->m);
    lua_pushfstring(L, "mopt.Model(%s: %s, %d layers, dim %d, %I params)", mopt_model_path(b->m), a->family,
                    (int)a->n_layers, (int)a->dim, (lua_Integer)mopt_graph_n_params(mopt_model_graph(b->m)));
    return 1;
}

static int model_info(lua_State *L) {
    model_box *b = check_model(L, 1);
    const mopt_arch *a = mopt_model_arch(b->m);
    lua_createtable(L, 0, 16);
    lua_pushstring(L, a->family), lua_setfield(L, -2, "family");
    lua_pushstring(L, mopt_model_path(b->m)), lua_setfield(L, -2, "path");
#define INT_FIELD(f) (lua_pushinteger(L, a->f), lua_setfield(L, -2, #f))
    INT_FIELD(dim), INT_FIELD(n_layers), INT_FIELD(n_heads), INT_FIELD(n_kv_heads), INT_FIELD(head_dim);
    INT_FIELD(ffn_dim), INT_FIELD(vocab_size), INT_FIELD(max_ctx);
#undef INT_FIELD
    lua_pushinteger(L, mopt_graph_n_params(mopt_model_graph(b->m))), lua_setfield(L, -2, "n_params");
    lua_pushinteger(L, mopt_graph_weight_bytes(mopt_model_graph(b->m))), lua_setfield(L, -2, "weight_bytes");
    return 1;
}

/* model:stream_to(dir): packed weights passes install go to a nameless file in dir
 * (mopt_graph_spill_to), so quantizing a large model holds about one block */
static int model_stream_to(lua_State *L) {
    model_box *b = check_model(L, 1);
    const char *dir = luaL_checkstring(L, 2);
    mopt_error err = {0};
    lua_ctx *c = get_ctx(L);
    char file[4200]; /* the file goes inside dir, which may be the root itself */
    snprintf(file, sizeof file, "%s/.mopt-spill", dir);
    if (c->write_root[0] && mopt_path_check_within(c->write_root, file, &err)) return luaL_error(L, "model:stream_to: %s", err.msg);
    if (mopt_graph_spill_to(mopt_model_graph(b->m), dir, &err)) return luaL_error(L, "model:stream_to: %s", err.msg);
    lua_pushvalue(L, 1);
    return 1;
}

static int model_tokenize(lua_State *L) {
    model_box *b = check_model(L, 1);
    size_t len;
    const char *text = luaL_checklstring(L, 2, &len);
    int special = lua_isnoneornil(L, 3) ? 1 : lua_toboolean(L, 3);
    const mopt_tokenizer *tok = mopt_model_tokenizer(b->m);
    if (!tok) return luaL_error(L, "model %s has no tokenizer", mopt_model_path(b->m));
    int32_t *ids;
    size_t n;
    mopt_error err = {0};
    if (mopt_tokenizer_encode(tok, text, len, special ? MOPT_TOK_ADD_SPECIAL : 0, &ids, &n, &err))
        return luaL_error(L, "tokenize: %s", err.msg);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) lua_pushinteger(L, ids[i]), lua_rawseti(L, -2, (lua_Integer)i + 1);
    free(ids);
    return 1;
}

static int model_decode(lua_State *L) {
    model_box *b = check_model(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    const mopt_tokenizer *tok = mopt_model_tokenizer(b->m);
    if (!tok) return luaL_error(L, "model %s has no tokenizer", mopt_model_path(b->m));
    lua_Integer n = luaL_len(L, 2);
    int32_t *ids = malloc((size_t)(n ? n : 1) * sizeof *ids);
    if (!ids) return luaL_error(L, "out of memory");
    for (lua_Integer i = 0; i < n; i++) {
        lua_geti(L, 2, i + 1);
        ids[i] = (int32_t)lua_tointeger(L, -1);
        lua_pop(L, 1);
    }
    char *text;
    size_t len;
    mopt_error err = {0};
    mopt_status st = mopt_tokenizer_decode(tok, ids, (size_t)n, MOPT_TOK_SKIP_SPECIAL, &text, &len, &err);
    free(ids);
    if (st) return luaL_error(L, "decode: %s", err.msg);
    lua_pushlstring(L, text, len);
    free(text);
    return 1;
}

/* --- Dataset ------------------------------------------------------------------- */

static int l_dataset_text(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    int32_t seq_len = 512, samples = 0;
    model_box *mb = NULL;
    if (lua_istable(L, 2)) {
        if (lua_getfield(L, 2, "tokenizer") != LUA_TNIL) mb = check_model(L, -1);
        lua_pop(L, 1);
        if (lua_getfield(L, 2, "seq_len") != LUA_TNIL) seq_len = (int32_t)luaL_checkinteger(L, -1);
        lua_pop(L, 1);
        if (lua_getfield(L, 2, "samples") != LUA_TNIL) samples = (int32_t)luaL_checkinteger(L, -1);
        lua_pop(L, 1);
    }
    luaL_argcheck(L, seq_len >= 2, 2, "seq_len must be at least 2");
    dataset_box *d = lua_newuserdatauv(L, sizeof *d, 0);
    memset(d, 0, sizeof *d);
    luaL_setmetatable(L, DATASET_MT);
    d->seq_len = seq_len;
    d->samples = samples;
    d->n_tokens = -1;
    if (!(d->path = strdup(path))) return luaL_error(L, "out of memory");
    mopt_error err = {0};
    if (mb && mopt_model_tokenizer(mb->m)) {
        int32_t *ids;
        size_t n;
        if (mopt_tokenizer_encode_file(mopt_model_tokenizer(mb->m), path, 0, &ids, &n, &err))
            return luaL_error(L, "mopt.dataset.text: %s", err.msg);
        free(ids);
        d->n_tokens = (int64_t)n;
        if ((int64_t)n < seq_len)
            return luaL_error(L, "mopt.dataset.text: %s has %d tokens, fewer than one window of %d", path, (int)n, (int)seq_len);
    } else {
        struct stat st;
        if (stat(path, &st) != 0) return luaL_error(L, "mopt.dataset.text: %s: cannot open: %s", path, strerror(errno));
        if (!S_ISREG(st.st_mode)) return luaL_error(L, "mopt.dataset.text: %s: not a regular file", path);
        if (st.st_size == 0) return luaL_error(L, "mopt.dataset.text: %s is empty", path);
    }
    return 1;
}

static int dataset_gc(lua_State *L) {
    dataset_box *d = luaL_checkudata(L, 1, DATASET_MT);
    free(d->path);
    d->path = NULL;
    return 0;
}

static int dataset_tostring(lua_State *L) {
    dataset_box *d = luaL_checkudata(L, 1, DATASET_MT);
    lua_pushfstring(L, "mopt.Dataset(%s, seq_len %d, %I tokens)", d->path ? d->path : "closed", (int)d->seq_len,
                    (lua_Integer)d->n_tokens);
    return 1;
}

static int dataset_index(lua_State *L) {
    dataset_box *d = luaL_checkudata(L, 1, DATASET_MT);
    const char *k = luaL_checkstring(L, 2);
    if (!strcmp(k, "path")) lua_pushstring(L, d->path);
    else if (!strcmp(k, "n_tokens")) lua_pushinteger(L, d->n_tokens);
    else if (!strcmp(k, "seq_len")) lua_pushinteger(L, d->seq_len);
    else if (!strcmp(k, "samples")) lua_pushinteger(L, d->samples);
    else lua_pushnil(L);
    return 1;
}

/* --- options from a Lua table ---------------------------------------------------- */

/* Converts the table at index t into raw options; returns NULL and leaves a
 * message in msg on a value that cannot be an option. */
static mopt_options *table_options(lua_State *L, int t, char *msg, size_t cap) {
    mopt_options *o = mopt_options_new();
    if (!o) return snprintf(msg, cap, "out of memory"), NULL;
    mopt_error err = {0};
    lua_pushnil(L);
    while (lua_next(L, t)) {
        mopt_status st = MOPT_OK;
        if (lua_type(L, -2) != LUA_TSTRING) {
            snprintf(msg, cap, "option names must be strings");
            lua_pop(L, 2);
            goto fail;
        }
        const char *key = lua_tostring(L, -2);
        int ty = lua_type(L, -1);
        if (ty == LUA_TBOOLEAN) {
            st = mopt_options_set_typed(o, key, MOPT_OPT_BOOL, lua_toboolean(L, -1), 0, NULL, &err);
        } else if (ty == LUA_TNUMBER) {
            if (lua_isinteger(L, -1)) st = mopt_options_set_typed(o, key, MOPT_OPT_INT, lua_tointeger(L, -1), 0, NULL, &err);
            else st = mopt_options_set_typed(o, key, MOPT_OPT_FLOAT, 0, lua_tonumber(L, -1), NULL, &err);
        } else if (ty == LUA_TSTRING) {
            st = mopt_options_set(o, key, lua_tostring(L, -1), &err);
        } else if (luaL_testudata(L, -1, MODEL_MT)) {
            model_box *b = lua_touserdata(L, -1);
            st = b->m ? mopt_options_set(o, key, mopt_model_path(b->m), &err) : MOPT_E_INVALID;
        } else if (luaL_testudata(L, -1, DATASET_MT)) {
            st = mopt_options_set(o, key, ((dataset_box *)lua_touserdata(L, -1))->path, &err);
        } else if (ty == LUA_TTABLE) { /* a list: joined with commas */
            luaL_Buffer buf;
            lua_Integer n = luaL_len(L, -1);
            int tbl = lua_gettop(L);
            luaL_buffinit(L, &buf);
            for (lua_Integer i = 1; i <= n; i++) {
                lua_geti(L, tbl, i);
                if (i > 1) luaL_addchar(&buf, ',');
                luaL_addvalue(&buf);
            }
            luaL_pushresult(&buf);
            st = mopt_options_set(o, key, lua_tostring(L, -1), &err);
            lua_pop(L, 1);
        } else {
            snprintf(msg, cap, "option '%s': a %s cannot be an option value", key, luaL_typename(L, -1));
            lua_pop(L, 2);
            goto fail;
        }
        if (st) {
            snprintf(msg, cap, "option '%s': %s", key, err.msg[0] ? err.msg : "invalid value");
            lua_pop(L, 2);
            goto fail;
        }
        lua_pop(L, 1);
    }
    return o;
fail:
    mopt_options_free(o);
    return NULL;
}

/* --- Pipeline ------------------------------------------------------------------- */

static int pipeline_gc(lua_State *L) {
    pipeline_box *b = luaL_checkudata(L, 1, PIPELINE_MT);
    mopt_pipeline_free(b->p);
    b->p = NULL;
    return 0;
}

/* mopt.pipeline{ {"pass", {opts}}, "pass<k=v>", ... } or mopt.pipeline("text") */
/* The recipe string of the step table on top of the stack, or NULL (the stack is left as it was; the string stays
 * alive in the table). */
static const char *step_recipe(lua_State *L) {
    const char *r = lua_getfield(L, -1, "recipe") == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    lua_pop(L, 1);
    return r;
}

static int l_pipeline(lua_State *L) {
    lua_ctx *c = get_ctx(L);
    pipeline_box *b = lua_newuserdatauv(L, sizeof *b, 0);
    b->p = NULL;
    luaL_setmetatable(L, PIPELINE_MT);
    b->p = mopt_pipeline_new(c->reg);
    if (!b->p) return luaL_error(L, "out of memory");
    mopt_error err = {0};
    char msg[600];
    if (lua_type(L, 1) == LUA_TSTRING) {
        if (mopt_pipeline_parse(b->p, lua_tostring(L, 1), &err)) return luaL_error(L, "mopt.pipeline: %s", err.msg);
        return 1;
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Integer n = luaL_len(L, 1);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, 1, i);
        mopt_status st;
        if (lua_type(L, -1) == LUA_TSTRING) {
            st = mopt_pipeline_parse(b->p, lua_tostring(L, -1), &err);
        } else if (lua_type(L, -1) == LUA_TTABLE && step_recipe(L)) {
            st = mopt_pipeline_add_recipe(b->p, step_recipe(L), "recipe", &err); /* {recipe = JSON}: per-layer formats */
        } else if (lua_type(L, -1) == LUA_TTABLE) {
            lua_geti(L, -1, 1);
            const char *name = lua_tostring(L, -1);
            if (!name) return luaL_error(L, "mopt.pipeline: step %d needs a pass name first", (int)i);
            mopt_options *raw = NULL;
            if (lua_geti(L, -2, 2) == LUA_TTABLE) {
                raw = table_options(L, lua_gettop(L), msg, sizeof msg);
                if (!raw) return luaL_error(L, "mopt.pipeline: %s: %s", name, msg);
            }
            lua_pop(L, 1);
            st = mopt_pipeline_add(b->p, name, raw, &err);
            mopt_options_free(raw);
            lua_pop(L, 1);
        } else {
            return luaL_error(L, "mopt.pipeline: step %d must be {\"pass\", {options}}, \"pass<k=v>\" or {recipe = JSON}", (int)i);
        }
        lua_pop(L, 1);
        if (st) return luaL_error(L, "mopt.pipeline: %s", err.msg);
    }
    return 1;
}

static int run_pipeline(lua_State *L, int raise) {
    lua_ctx *c = get_ctx(L);
    pipeline_box *b = luaL_checkudata(L, 1, PIPELINE_MT);
    model_box *m = check_model(L, 2);
    report_box *r = lua_newuserdatauv(L, sizeof *r, 1);
    r->r = mopt_report_new();
    luaL_setmetatable(L, REPORT_MT);
    if (!r->r) return luaL_error(L, "out of memory");
    lua_pushvalue(L, 2);
    lua_setiuservalue(L, -2, 1); /* the report keeps its model alive */
    mopt_run_opts o;
    mopt_run_opts_default(&o);
    o.quiet = c->quiet;
    o.n_threads = c->n_threads;
    o.write_root = c->write_root[0] ? c->write_root : NULL;
    mopt_error err = {0};
    mopt_status st = mopt_pipeline_run(b->p, m->m, &o, r->r, &err);
    if (!mopt_report_gates_ok(r->r)) c->gates_failed = 1;
    if (st != MOPT_OK) {
        if (raise) return luaL_error(L, "%s", err.msg);
        lua_pushnil(L);
        lua_pushstring(L, err.msg);
        lua_pushvalue(L, -3); /* the failed report, for inspection */
        return 3;
    }
    return 1;
}

static int pipeline_run(lua_State *L) { return run_pipeline(L, 1); }
static int pipeline_try_run(lua_State *L) { return run_pipeline(L, 0); }

static int pipeline_tostring(lua_State *L) {
    pipeline_box *b = luaL_checkudata(L, 1, PIPELINE_MT);
    lua_pushfstring(L, "mopt.Pipeline(%d passes)", b->p ? (int)mopt_pipeline_length(b->p) : 0);
    return 1;
}

/* --- Report -------------------------------------------------------------------- */

static int report_gc(lua_State *L) {
    report_box *b = luaL_checkudata(L, 1, REPORT_MT);
    mopt_report_free(b->r);
    b->r = NULL;
    return 0;
}

static void push_json(lua_State *L, json_t *v) {
    if (json_is_object(v)) {
        lua_createtable(L, 0, (int)json_object_size(v));
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x) {
            push_json(L, x);
            lua_setfield(L, -2, k);
        }
    } else if (json_is_array(v)) {
        lua_createtable(L, (int)json_array_size(v), 0);
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) {
            push_json(L, x);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
    } else if (json_is_integer(v)) lua_pushinteger(L, json_integer_value(v));
    else if (json_is_real(v)) lua_pushnumber(L, json_real_value(v));
    else if (json_is_string(v)) lua_pushstring(L, json_string_value(v));
    else if (json_is_boolean(v)) lua_pushboolean(L, json_is_true(v));
    else lua_pushnil(L);
}

static int report_index(lua_State *L) {
    report_box *b = luaL_checkudata(L, 1, REPORT_MT);
    const char *k = luaL_checkstring(L, 2);
    if (!b->r) return luaL_error(L, "mopt.Report is closed");
    if (!strcmp(k, "json")) {
        lua_getmetatable(L, 1);
        lua_getfield(L, -1, "json_method");
        return 1;
    }
    if (!strcmp(k, "ok")) return lua_pushboolean(L, mopt_report_ok(b->r)), 1;
    if (!strcmp(k, "gates_ok")) return lua_pushboolean(L, mopt_report_gates_ok(b->r)), 1;
    if (!strcmp(k, "write")) {
        lua_getmetatable(L, 1);
        lua_getfield(L, -1, "write_method");
        return 1;
    }
    /* read in place, no JSON text round trip (jansson's iterators take non-const; nothing is changed) */
    json_t *root = (json_t *)mopt_report_tree(b->r);
    if (!strcmp(k, "metrics") || !strcmp(k, "strings")) {
        /* merged over successful passes, later passes win */
        lua_newtable(L);
        size_t i;
        json_t *s;
        json_array_foreach(json_object_get(root, "passes"), i, s) {
            if (strcmp(json_string_value(json_object_get(s, "status")), "ok") != 0) continue;
            const char *mk;
            json_t *mv;
            json_object_foreach(json_object_get(s, k), mk, mv) {
                push_json(L, mv);
                lua_setfield(L, -2, mk);
            }
        }
    } else if (!strcmp(k, "passes")) {
        push_json(L, json_object_get(root, "passes"));
    } else if (!strcmp(k, "status") || !strcmp(k, "failed_pass") || !strcmp(k, "error")) {
        push_json(L, json_object_get(root, k));
    } else {
        lua_pushnil(L);
    }
    return 1;
}

static int report_json(lua_State *L) {
    report_box *b = luaL_checkudata(L, 1, REPORT_MT);
    if (!b->r) return luaL_error(L, "mopt.Report is closed");
    char *text = mopt_report_json(b->r);
    if (!text) return luaL_error(L, "report: cannot serialize");
    lua_pushstring(L, text);
    free(text);
    return 1;
}

/* report:write(dir [, title]): report.json, report.md, report.html */
static int report_write(lua_State *L) {
    report_box *b = luaL_checkudata(L, 1, REPORT_MT);
    const char *dir = luaL_checkstring(L, 2), *title = luaL_optstring(L, 3, "mopt report");
    if (!b->r) return luaL_error(L, "mopt.Report is closed");
    mopt_error err = {0};
    lua_ctx *c = get_ctx(L);
    if (c->write_root[0] && mopt_path_check_within(c->write_root, dir, &err)) return luaL_error(L, "report:write: %s", err.msg);
    if (mopt_report_write(b->r, dir, title, &err)) return luaL_error(L, "report:write: %s", err.msg);
    lua_pushvalue(L, 1);
    return 1;
}

static int report_tostring(lua_State *L) {
    report_box *b = luaL_checkudata(L, 1, REPORT_MT);
    lua_pushfstring(L, "mopt.Report(%s)", b->r ? (mopt_report_ok(b->r) ? "ok" : "failed") : "closed");
    return 1;
}

/* --- module functions ------------------------------------------------------------- */

static int l_passes(lua_State *L) {
    lua_ctx *c = get_ctx(L);
    int32_t n = mopt_registry_n_passes(c->reg);
    lua_createtable(L, n, 0);
    for (int32_t i = 0; i < n; i++) {
        const mopt_pass_desc *d = mopt_registry_pass(c->reg, i);
        lua_createtable(L, 0, 4);
        lua_pushstring(L, d->name), lua_setfield(L, -2, "name");
        lua_pushstring(L, d->summary ? d->summary : ""), lua_setfield(L, -2, "summary");
        lua_pushstring(L, mopt_pass_kind_name((mopt_pass_kind)d->kind)), lua_setfield(L, -2, "kind");
        lua_pushstring(L, mopt_registry_pass_plugin(c->reg, i)), lua_setfield(L, -2, "plugin");
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int l_describe(lua_State *L) {
    lua_ctx *c = get_ctx(L);
    mopt_error err = {0};
    char *text = mopt_registry_describe(c->reg, luaL_checkstring(L, 1), &err);
    if (!text) return luaL_error(L, "mopt.describe: %s", err.msg);
    lua_pushstring(L, text);
    free(text);
    return 1;
}

static int l_plugins(lua_State *L) {
    lua_ctx *c = get_ctx(L);
    int32_t n = mopt_registry_n_plugins(c->reg);
    lua_createtable(L, n, 0);
    for (int32_t i = 0; i < n; i++) {
        mopt_plugin_info p = mopt_registry_plugin(c->reg, i);
        lua_createtable(L, 0, 4);
        lua_pushstring(L, p.name), lua_setfield(L, -2, "name");
        lua_pushstring(L, p.version), lua_setfield(L, -2, "version");
        lua_pushstring(L, p.path), lua_setfield(L, -2, "path");
        lua_pushinteger(L, p.n_passes), lua_setfield(L, -2, "n_passes");
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static void new_class(lua_State *L, const char *name, const luaL_Reg *meta, const luaL_Reg *methods) {
    luaL_newmetatable(L, name);
    luaL_setfuncs(L, meta, 0);
    if (methods) {
        lua_newtable(L);
        luaL_setfuncs(L, methods, 0);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
}

int luaopen_mopt(lua_State *L) {
    static const luaL_Reg model_meta[] = {{"__gc", model_gc}, {"__close", model_gc}, {"__tostring", model_tostring}, {NULL, NULL}};
    static const luaL_Reg model_methods[] = {{"info", model_info},       {"tokenize", model_tokenize}, {"decode", model_decode},
                                             {"stream_to", model_stream_to}, {"close", model_gc},          {NULL, NULL}};
    static const luaL_Reg dataset_meta[] = {{"__gc", dataset_gc}, {"__close", dataset_gc}, {"__tostring", dataset_tostring},
                                            {"__index", dataset_index}, {NULL, NULL}};
    static const luaL_Reg pipeline_meta[] = {{"__gc", pipeline_gc}, {"__close", pipeline_gc}, {"__tostring", pipeline_tostring}, {NULL, NULL}};
    static const luaL_Reg pipeline_methods[] = {{"run", pipeline_run}, {"try_run", pipeline_try_run}, {NULL, NULL}};
    static const luaL_Reg report_meta[] = {{"__gc", report_gc},         {"__close", report_gc},       {"__tostring", report_tostring},
                                           {"__index", report_index},   {"json_method", report_json}, {"write_method", report_write},
                                           {NULL, NULL}};
    new_class(L, MODEL_MT, model_meta, model_methods);
    new_class(L, DATASET_MT, dataset_meta, NULL);
    new_class(L, PIPELINE_MT, pipeline_meta, pipeline_methods);
    new_class(L, REPORT_MT, report_meta, NULL);
    static const luaL_Reg fns[] = {{"load", l_load},         {"pipeline", l_pipeline}, {"passes", l_passes},
                                   {"describe", l_describe}, {"plugins", l_plugins},   {NULL, NULL}};
    luaL_newlib(L, fns);
    lua_newtable(L);
    lua_pushcfunction(L, l_dataset_text);
    lua_setfield(L, -2, "text");
    lua_setfield(L, -2, "dataset");
    lua_pushstring(L, MOPT_VERSION_STRING);
    lua_setfield(L, -2, "version");
    return 1;
}

/* --- script runner ---------------------------------------------------------------- */

static int traceback_handler(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (!msg) msg = luaL_tolstring(L, 1, NULL);
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* Every few thousand instructions: a stop request ends the script, loops too. */
static void interrupt_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    if (mopt_interrupted()) luaL_error(L, "interrupted");
}

/* sandbox_check(path): raises unless writing path stays inside the run's directory */
static int l_sandbox_check(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    mopt_error err = {0};
    if (!mopt_path_check_within(get_ctx(L)->write_root, path, &err)) return 0;
    luaL_where(L, 2); /* the script's line, not the wrapper's */
    lua_pushstring(L, err.msg);
    lua_concat(L, 2);
    return lua_error(L);
}

/* Lua-level wrappers over the originals, which stay reachable only as upvalues
 * (the debug library is gone). Binary chunks are refused: malformed bytecode
 * can crash the VM. */
static const char sandbox_lua[] =
    "local check = ...\n"
    "local open, output, remove, rename = io.open, io.output, os.remove, os.rename\n"
    "local load0, loadfile0, searchpath, path_of = load, loadfile, package.searchpath, package\n"
    "io.open = function(p, m, ...) if type(m) == 'string' and m:find('[wa+]') then check(p) end return open(p, m, ...) end\n"
    "io.output = function(f, ...) if type(f) == 'string' then check(f) end return output(f, ...) end\n"
    "os.remove = function(p, ...) check(p) return remove(p, ...) end\n"
    "os.rename = function(a, b, ...) check(a) check(b) return rename(a, b, ...) end\n"
    "load = function(chunk, name, mode, env) return load0(chunk, name, 't', env) end\n"
    "loadfile = function(f, mode, env) return loadfile0(f, 't', env) end\n"
    "dofile = function(f) local fn, e = loadfile0(f, 't') if not fn then error(e, 2) end return fn() end\n"
    "os.execute, io.popen, io.tmpfile, package.loadlib, debug, package.loaded.debug = nil\n"
    "package.cpath = ''\n"
    "package.searchers = { package.searchers[1], function(name)\n"
    "  local p, e = searchpath(name, path_of.path)\n"
    "  if not p then return e end\n"
    "  local fn, le = loadfile0(p, 't')\n"
    "  if not fn then error(le, 2) end\n"
    "  return fn, p\n"
    "end }\n";

static mopt_status enter_sandbox(lua_State *L, const char *root, mopt_error *err) {
    lua_ctx *c = get_ctx(L);
    if (!realpath(root ? root : ".", c->write_root))
        return MOPT_FAIL(err, MOPT_E_IO, "%s: the sandbox's output directory cannot be resolved: %s", root ? root : ".",
                         strerror(errno));
    if (luaL_loadbuffer(L, sandbox_lua, sizeof sandbox_lua - 1, "=sandbox") != LUA_OK) {
        mopt_status st = MOPT_FAIL(err, MOPT_E_RUNTIME, "sandbox setup: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return st;
    }
    lua_pushcfunction(L, l_sandbox_check);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        mopt_status st = MOPT_FAIL(err, MOPT_E_RUNTIME, "sandbox setup: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return st;
    }
    return MOPT_OK;
}

void mopt_lua_opts_default(mopt_lua_opts *o) {
    memset(o, 0, sizeof *o);
    o->struct_size = sizeof *o;
}

mopt_status mopt_lua_run(const char *path, int n_args, char *const *kv_args, mopt_registry *reg, const mopt_lua_opts *opts_in,
                         char **traceback, int32_t *gates_failed, mopt_error *err) {
    mopt_lua_opts o;
    mopt_lua_opts_default(&o);
    if (opts_in) memcpy(&o, opts_in, opts_in->struct_size < sizeof o ? opts_in->struct_size : sizeof o);
    if (traceback) *traceback = NULL;
    if (gates_failed) *gates_failed = 0;
    lua_State *L = luaL_newstate();
    if (!L) return MOPT_FAIL(err, MOPT_E_NOMEM, "cannot create a Lua state");
    luaL_openlibs(L);
    mopt_lua_set_registry(L, reg, o.quiet, o.n_threads);
    mopt_status st = o.sandbox ? enter_sandbox(L, o.write_root, err) : MOPT_OK;
    if (st) {
        lua_close(L);
        return st;
    }
    lua_sethook(L, interrupt_hook, LUA_MASKCOUNT, 10000);
    luaL_requiref(L, "mopt", luaopen_mopt, 1);
    lua_pop(L, 1);
    lua_createtable(L, 0, n_args);
    for (int i = 0; i < n_args; i++) {
        const char *eq = strchr(kv_args[i], '=');
        if (!eq || eq == kv_args[i]) {
            lua_close(L);
            return MOPT_FAIL(err, MOPT_E_INVALID, "script argument '%s' is not key=value", kv_args[i]);
        }
        lua_pushlstring(L, kv_args[i], (size_t)(eq - kv_args[i]));
        lua_pushstring(L, eq + 1);
        lua_settable(L, -3);
    }
    lua_setglobal(L, "args");
    lua_pushcfunction(L, traceback_handler);
    if (luaL_loadfilex(L, path, o.sandbox ? "t" : NULL) != LUA_OK) {
        st = MOPT_FAIL(err, MOPT_E_INVALID, "%s", lua_tostring(L, -1));
    } else if (lua_pcall(L, 0, 0, -2) != LUA_OK) {
        const char *full = lua_tostring(L, -1);
        const char *nl = full ? strchr(full, '\n') : NULL;
        if (mopt_interrupted()) {
            st = MOPT_FAIL(err, MOPT_E_INTERRUPTED, "%s: interrupted", path);
        } else {
            st = MOPT_FAIL(err, MOPT_E_RUNTIME, "%.*s", nl ? (int)(nl - full) : (int)strlen(full ? full : ""),
                           full ? full : "error object is not a string");
            if (traceback && full) *traceback = strdup(full);
        }
    }
    lua_getfield(L, LUA_REGISTRYINDEX, CTX_KEY);
    const lua_ctx *c = lua_touserdata(L, -1);
    if (gates_failed && c) *gates_failed = c->gates_failed;
    lua_close(L);
    return st;
}

mopt_status mopt_lua_run_file(const char *path, int n_args, char *const *kv_args, mopt_registry *reg, int32_t quiet,
                              int32_t n_threads, char **traceback, int32_t *gates_failed, mopt_error *err) {
    mopt_lua_opts o;
    mopt_lua_opts_default(&o);
    o.quiet = quiet;
    o.n_threads = n_threads;
    return mopt_lua_run(path, n_args, kv_args, reg, &o, traceback, gates_failed, err);
}
