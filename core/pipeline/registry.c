/* Plugin discovery and loading. Each libmopt-NAME.so is opened with
 * RTLD_NOW | RTLD_LOCAL; its descriptor's abi_version and struct_size are
 * checked before anything else is read, then every pass schema. A plugin that
 * fails is skipped and the reason kept, so one bad file never stops the
 * others; one that would hide a built-in plugin or pass fails the registry
 * (unless MOPT_REGISTRY_ALLOW_OVERRIDE). */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base.h"
#include "pass_ctx.h"
#include "strbuf.h"
#include "mopt/pipeline.h"

typedef struct plugin {
    void *handle;
    const mopt_plugin_desc *desc;
    char path[4096];
} plugin;

typedef struct pass_entry {
    const mopt_pass_desc *desc;
    int32_t plugin;
} pass_entry;

struct mopt_registry {
    plugin *plugins;
    int32_t n_plugins;
    size_t cap_plugins;
    pass_entry *passes;
    int32_t n_passes;
    size_t cap_passes;
    char **problems;
    int32_t n_problems;
    uint32_t flags;
    int scanning_builtin;  /* loading the plugin folder beside libmopt */
    mopt_error fatal;      /* a plugin clashed with a built-in one */
};

static void problem(mopt_registry *r, const char *msg) {
    char **p = realloc(r->problems, (size_t)(r->n_problems + 1) * sizeof *p);
    if (!p) return;
    r->problems = p;
    r->problems[r->n_problems] = strdup(msg);
    if (r->problems[r->n_problems]) r->n_problems++;
}

/* Expected plugin name from a file name: libmopt-NAME.so -> NAME. */
static int name_from_file(const char *path, char *out, size_t cap) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    if (strncmp(base, "libmopt-", 8) != 0 || n < 12 || strcmp(base + n - 3, ".so") != 0) return 0;
    snprintf(out, cap, "%.*s", (int)(n - 11), base + 8);
    return 1;
}

/* Plugins are native code run with the user's rights, so only a regular file
 * that no one else could have written is opened (as ssh treats keys). The
 * descriptor is opened non-blocking, so a FIFO cannot stall the scan. */
static mopt_status check_file(const char *path, mopt_error *err) {
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return MOPT_FAIL(err, MOPT_E_IO, "plugin %s: cannot open: %s", path, strerror(errno));
    struct stat st;
    int ok = fstat(fd, &st) == 0;
    close(fd);
    if (!ok || !S_ISREG(st.st_mode)) return MOPT_FAIL(err, MOPT_E_IO, "plugin %s: not a regular file; skipped", path);
    if (st.st_mode & S_IWOTH)
        return MOPT_FAIL(err, MOPT_E_INVALID, "plugin %s: refused: it is world-writable (chmod o-w it)", path);
    if (st.st_uid != geteuid() && st.st_uid != 0)
        return MOPT_FAIL(err, MOPT_E_INVALID, "plugin %s: refused: it is owned by uid %u, not by you (uid %u) or root", path,
                         (unsigned)st.st_uid, (unsigned)geteuid());
    return MOPT_OK;
}

static int32_t find_pass(const mopt_registry *r, const char *name) {
    for (int32_t i = 0; i < r->n_passes; i++)
        if (strcmp(r->passes[i].desc->name, name) == 0) return i;
    return -1;
}

/* A built-in plugin or pass that a plugin found earlier (MOPT_PLUGIN_PATH)
 * would hide: an error naming both files, unless overriding was asked for. */
static mopt_status builtin_clash(mopt_registry *r, const char *what, const char *builtin_path, const char *other_path) {
    char msg[9000];
    if (r->flags & MOPT_REGISTRY_ALLOW_OVERRIDE) {
        snprintf(msg, sizeof msg, "%s from %s overrides the built-in one in %s (--allow-override)", what, other_path, builtin_path);
        problem(r, msg);
        return MOPT_E_INVALID; /* the built-in is skipped */
    }
    if (!r->fatal.code)
        MOPT_FAIL(&r->fatal, MOPT_E_INVALID, "%s from %s clashes with the built-in one in %s; remove it or pass --allow-override",
                  what, other_path, builtin_path);
    return MOPT_E_INVALID;
}

/* The leading fields are checked before anything else is read; strings are
 * copied into messages before dlclose (the descriptor lives in the plugin). */
static mopt_status check_desc(const mopt_plugin_desc *d, const char *path, mopt_error *err) {
    char want[256] = "";
    if (d->abi_version != MOPT_PLUGIN_ABI_VERSION)
        return MOPT_FAIL(err, MOPT_E_ABI, "plugin %s: ABI %u, host %u; rebuild it against this mopt", path, d->abi_version,
                         MOPT_PLUGIN_ABI_VERSION);
    if (d->struct_size < offsetof(mopt_plugin_desc, fini))
        return MOPT_FAIL(err, MOPT_E_ABI, "plugin %s: descriptor of %u bytes is too small (need %zu)", path, d->struct_size,
                         offsetof(mopt_plugin_desc, fini));
    if (!d->name || !*d->name || strnlen(d->name, 128) == 128)
        return MOPT_FAIL(err, MOPT_E_ABI, "plugin %s: descriptor has no name (or one over 127 bytes)", path);
    if (name_from_file(path, want, sizeof want) && strcmp(want, d->name) != 0)
        return MOPT_FAIL(err, MOPT_E_ABI, "plugin %s: declares name '%s' but the file is named for '%s'", path, d->name, want);
    return MOPT_OK;
}

mopt_status mopt_registry_load(mopt_registry *r, const char *path, mopt_error *err) {
    mopt_status st = check_file(path, err);
    if (st) return st;
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *why = dlerror();
        return MOPT_FAIL(err, MOPT_E_IO, "plugin %s: cannot load: %s (check its dependencies with 'ldd %s')", path,
                         why ? why : "unknown error", path);
    }
    mopt_plugin_entry_fn entry;
    *(void **)&entry = dlsym(h, MOPT_PLUGIN_ENTRY_SYMBOL);
    if (!entry) {
        dlclose(h);
        return MOPT_FAIL(err, MOPT_E_ABI, "plugin %s: no %s symbol (is it a mopt plugin?)", path,
                         MOPT_PLUGIN_ENTRY_SYMBOL);
    }
    mopt_error perr = {0};
    const mopt_plugin_desc *d = entry(&mopt_host, &perr);
    if (!d) {
        dlclose(h);
        return MOPT_FAIL(err, MOPT_E_RUNTIME, "plugin %s: initialization failed: %s", path,
                         perr.msg[0] ? perr.msg : "no reason given");
    }
    st = check_desc(d, path, err);
    for (int32_t i = 0; st == MOPT_OK && i < r->n_plugins; i++) {
        if (strcmp(r->plugins[i].desc->name, d->name) != 0) continue;
        if (r->plugins[i].handle == h) { /* the very same file again: drop the extra reference */
            dlclose(h);
            return MOPT_OK;
        }
        char what[200];
        snprintf(what, sizeof what, "plugin %s", d->name);
        if (r->scanning_builtin) {
            builtin_clash(r, what, path, r->plugins[i].path);
            dlclose(h);
            return MOPT_OK;
        }
        st = MOPT_FAIL(err, MOPT_E_INVALID, "plugin %s found twice: %s and %s; using the first", d->name,
                       r->plugins[i].path, path);
    }
    /* every pass must be complete and sound; a built-in one hidden by an earlier plugin is a clash */
    int32_t n_desc = 0;
    for (const mopt_pass_desc *const *p = d->passes; st == MOPT_OK && p && *p; p++, n_desc++) {
        const mopt_pass_desc *pd = *p;
        if (n_desc >= 1024) {
            st = MOPT_FAIL(err, MOPT_E_ABI, "plugin %s: more than 1024 passes (is the list NULL-terminated?)", path);
            break;
        }
        if (pd->struct_size < offsetof(mopt_pass_desc, reserved) || !pd->name || !*pd->name || strnlen(pd->name, 128) == 128 ||
            !pd->run)
            continue; /* reported below */
        int32_t other = find_pass(r, pd->name);
        if (other >= 0 && r->scanning_builtin) {
            char what[200];
            snprintf(what, sizeof what, "pass %s", pd->name);
            builtin_clash(r, what, path, r->plugins[r->passes[other].plugin].path);
            dlclose(h);
            return MOPT_OK;
        }
    }
    if (st) {
        dlclose(h);
        return st;
    }
    if (!mopt_grow((void **)&r->plugins, &r->cap_plugins, (size_t)r->n_plugins + 1, sizeof *r->plugins)) {
        dlclose(h);
        return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    }
    int32_t idx = r->n_plugins++;
    r->plugins[idx].handle = h;
    r->plugins[idx].desc = d;
    snprintf(r->plugins[idx].path, sizeof r->plugins[idx].path, "%s", path);
    for (int32_t k = 0; k < n_desc; k++) {
        const mopt_pass_desc *pd = d->passes[k];
        char msg[9000];
        mopt_error e = {0};
        if (pd->struct_size < offsetof(mopt_pass_desc, reserved) || !pd->name || !*pd->name || strnlen(pd->name, 128) == 128 ||
            !pd->run) {
            snprintf(msg, sizeof msg, "plugin %s: pass descriptor %d is incomplete (struct_size, name or run); skipped", path, k);
            problem(r, msg);
            continue;
        }
        if (mopt_pass_desc_check(pd, &e)) {
            snprintf(msg, sizeof msg, "plugin %s: %s; skipped", path, e.msg);
            problem(r, msg);
            continue;
        }
        int32_t other = find_pass(r, pd->name);
        if (other >= 0) {
            snprintf(msg, sizeof msg, "plugin %s: pass %s is already provided by %s; skipped", path, pd->name,
                     r->plugins[r->passes[other].plugin].path);
            problem(r, msg);
            continue;
        }
        if (!mopt_grow((void **)&r->passes, &r->cap_passes, (size_t)r->n_passes + 1, sizeof *r->passes))
            return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
        r->passes[r->n_passes++] = (pass_entry){pd, idx};
    }
    return MOPT_OK;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void scan_dir(mopt_registry *r, const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    char **names = NULL;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        char nm[256];
        if (!name_from_file(de->d_name, nm, sizeof nm)) continue;
        char **nn = realloc(names, (n + 1) * sizeof *nn);
        if (!nn) break;
        names = nn;
        if ((names[n] = strdup(de->d_name))) n++;
    }
    closedir(d);
    if (n) qsort(names, n, sizeof *names, cmp_str); /* names is NULL in a folder without plugins */
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        mopt_error e = {0};
        if (mopt_path_join(path, sizeof path, dir, names[i]) && mopt_registry_load(r, path, &e) != MOPT_OK)
            problem(r, e.msg);
        free(names[i]);
    }
    free(names);
}

static void scan_list(mopt_registry *r, const char *list) {
    if (!list) return;
    char *copy = strdup(list), *save = NULL;
    for (char *tok = copy ? strtok_r(copy, ":", &save) : NULL; tok; tok = strtok_r(NULL, ":", &save))
        if (*tok) scan_dir(r, tok);
    free(copy);
}

/* build/lib/libmopt.so -> build/lib/mopt; <prefix>/lib -> <prefix>/lib/mopt;
 * a statically linked program in build/bin -> build/lib/mopt. */
static void default_dir(char *out, size_t cap) {
    Dl_info info;
    out[0] = '\0';
    if (!dladdr((void *)&mopt_registry_new, &info) || !info.dli_fname) return;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", info.dli_fname);
    char *dir = dirname(tmp);
    const char *base = strrchr(dir, '/');
    base = base ? base + 1 : dir;
    if (strcmp(base, "bin") == 0)
        snprintf(out, cap, "%s/../lib/mopt", dir);
    else
        snprintf(out, cap, "%s/mopt", dir);
}

mopt_registry *mopt_registry_open(const char *extra_dirs, uint32_t flags, mopt_error *err) {
    mopt_registry *r = calloc(1, sizeof *r);
    if (!r) {
        MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
        return NULL;
    }
    r->flags = flags;
    scan_list(r, extra_dirs);
    scan_list(r, getenv("MOPT_PLUGIN_PATH"));
    /* built-ins last, so that a clash with one found above is seen and refused */
    char dir[4200];
    default_dir(dir, sizeof dir);
    r->scanning_builtin = 1;
    if (dir[0]) scan_dir(r, dir);
    r->scanning_builtin = 0;
    if (r->fatal.code) {
        if (err) *err = r->fatal;
        mopt_registry_free(r);
        return NULL;
    }
    return r;
}

mopt_registry *mopt_registry_new(const char *extra_dirs, mopt_error *err) { return mopt_registry_open(extra_dirs, 0, err); }

void mopt_registry_free(mopt_registry *r) {
    if (!r) return;
    for (int32_t i = r->n_plugins; i-- > 0;) {
        const mopt_plugin_desc *d = r->plugins[i].desc;
        if (d->struct_size >= offsetof(mopt_plugin_desc, reserved) && d->fini) d->fini();
        dlclose(r->plugins[i].handle);
    }
    for (int32_t i = 0; i < r->n_problems; i++) free(r->problems[i]);
    free(r->problems);
    free(r->plugins);
    free(r->passes);
    free(r);
}

int32_t mopt_registry_n_plugins(const mopt_registry *r) { return r->n_plugins; }

mopt_plugin_info mopt_registry_plugin(const mopt_registry *r, int32_t i) {
    mopt_plugin_info info = {0};
    if (i < 0 || i >= r->n_plugins) return info;
    const mopt_plugin_desc *d = r->plugins[i].desc;
    info.name = d->name;
    info.version = d->version ? d->version : "";
    info.license = d->license ? d->license : "";
    info.description = d->description ? d->description : "";
    info.path = r->plugins[i].path;
    info.abi_version = d->abi_version;
    for (int32_t k = 0; k < r->n_passes; k++) info.n_passes += r->passes[k].plugin == i;
    return info;
}

int32_t mopt_registry_n_passes(const mopt_registry *r) { return r->n_passes; }
const mopt_pass_desc *mopt_registry_pass(const mopt_registry *r, int32_t i) {
    return i >= 0 && i < r->n_passes ? r->passes[i].desc : NULL;
}
const char *mopt_registry_pass_plugin(const mopt_registry *r, int32_t i) {
    return i >= 0 && i < r->n_passes ? r->plugins[r->passes[i].plugin].desc->name : NULL;
}

const mopt_pass_desc *mopt_registry_find(const mopt_registry *r, const char *name) {
    int32_t i = find_pass(r, name);
    return i >= 0 ? r->passes[i].desc : NULL;
}

int32_t mopt_registry_n_problems(const mopt_registry *r) { return r->n_problems; }
const char *mopt_registry_problem(const mopt_registry *r, int32_t i) {
    return i >= 0 && i < r->n_problems ? r->problems[i] : NULL;
}

char *mopt_registry_describe(const mopt_registry *r, const char *name, mopt_error *err) {
    int32_t idx = -1;
    for (int32_t i = 0; i < r->n_passes; i++)
        if (strcmp(r->passes[i].desc->name, name) == 0) idx = i;
    if (idx < 0) {
        MOPT_FAIL(err, MOPT_E_INVALID, "no pass named '%s' (see 'mopt plugins')", name);
        return NULL;
    }
    const mopt_pass_desc *d = r->passes[idx].desc;
    const plugin *pl = &r->plugins[r->passes[idx].plugin];
    sbuf b = {0};
    sb_printf(&b, "%s (%s): %s\n", d->name, mopt_pass_kind_name((mopt_pass_kind)d->kind), d->summary ? d->summary : "");
    sb_printf(&b, "plugin: %s %s (%s)\n", pl->desc->name, pl->desc->version ? pl->desc->version : "", pl->path);
    sb_printf(&b, "options:%s\n", d->n_opts ? "" : " none");
    for (uint32_t k = 0; k < d->n_opts; k++) {
        const mopt_opt_spec *s = &d->opts[k];
        sb_printf(&b, "  %-16s %-8s ", s->name, mopt_opt_type_name((mopt_opt_type)s->type));
        if (s->flags & MOPT_OPT_REQUIRED) sb_printf(&b, "required");
        else if (s->default_value) sb_printf(&b, "default %s", s->default_value);
        else sb_printf(&b, "optional");
        if (s->type == MOPT_OPT_INT && s->min <= s->max) sb_printf(&b, ", range [%lld, %lld]", (long long)s->min, (long long)s->max);
        if (s->type == MOPT_OPT_FLOAT && s->min <= s->max) sb_printf(&b, ", range [%g, %g]", s->min, s->max);
        if (s->type == MOPT_OPT_ENUM && s->choices) {
            sb_printf(&b, ", one of {");
            for (const char *const *c = s->choices; *c; c++) sb_printf(&b, "%s%s", c == s->choices ? "" : ", ", *c);
            sb_printf(&b, "}");
        }
        sb_printf(&b, "\n      %s\n", s->doc ? s->doc : "");
    }
    if (b.oom || !b.s) {
        free(b.s);
        MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
        return NULL;
    }
    return b.s;
}
