/* The Lua 5.4 binding: the `mopt` module and a script runner. */
#ifndef MOPT_LUA_H
#define MOPT_LUA_H

#include <stdint.h>

#include "mopt/error.h"
#include "mopt/export.h"
#include "mopt/pipeline.h"

MOPT_EXTERN_C_BEGIN

struct lua_State;

/* Opens the module (require "mopt"). The registry must have been set with
 * mopt_lua_set_registry on this state first. */
MOPT_API int luaopen_mopt(struct lua_State *L);
/* Makes `reg` (borrowed; must outlive the state) the registry the module uses. */
MOPT_API void mopt_lua_set_registry(struct lua_State *L, mopt_registry *reg, int32_t quiet, int32_t n_threads);

/* How a script runs. Scripts are trusted code, like a Makefile or a Python
 * script: they can do anything the user can. The sandbox is for running
 * recipes from others: no os.execute, io.popen, io.tmpfile, package.loadlib,
 * C modules, debug library or binary chunks, and files are written (io.open
 * for writing, io.output, os.remove, os.rename, report:write, exports) only
 * inside write_root. */
typedef struct mopt_lua_opts {
    uint32_t struct_size; /* sizeof(mopt_lua_opts) */
    int32_t quiet;        /* no progress lines */
    int32_t n_threads;    /* <= 0: all cores */
    int32_t sandbox;
    const char *write_root; /* sandbox: where files may be written (NULL: the current directory) */
} mopt_lua_opts;

MOPT_API void mopt_lua_opts_default(mopt_lua_opts *o);

/* Runs a Lua script with `mopt` preloaded and the global table `args` built
 * from "key=value" strings. On a script error err->msg holds "file:line: message"
 * and *traceback (if not NULL) a malloc'd traceback. *gates_failed (if not
 * NULL) tells whether any pipeline the script ran failed a gate. A stop
 * request (mopt_interrupt) ends the script, loops included, with
 * MOPT_E_INTERRUPTED. opts may be NULL (defaults). */
MOPT_API mopt_status mopt_lua_run(const char *path, int n_args, char *const *kv_args, mopt_registry *reg,
                                  const mopt_lua_opts *opts, char **traceback, int32_t *gates_failed, mopt_error *err);
/* mopt_lua_run with quiet and n_threads and no sandbox. */
MOPT_API mopt_status mopt_lua_run_file(const char *path, int n_args, char *const *kv_args, mopt_registry *reg,
                                       int32_t quiet, int32_t n_threads, char **traceback, int32_t *gates_failed,
                                       mopt_error *err);

MOPT_EXTERN_C_END

#endif
