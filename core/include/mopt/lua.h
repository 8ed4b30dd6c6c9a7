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

/* Runs a Lua script with `mopt` preloaded and the global table `args` built
 * from "key=value" strings. On a script error err->msg holds "file:line: message"
 * and *traceback (if not NULL) a malloc'd traceback. *gates_failed (if not
 * NULL) tells whether any pipeline the script ran failed a gate. */
MOPT_API mopt_status mopt_lua_run_file(const char *path, int n_args, char *const *kv_args, mopt_registry *reg,
                                       int32_t quiet, int32_t n_threads, char **traceback, int32_t *gates_failed,
                                       mopt_error *err);

MOPT_EXTERN_C_END

#endif
