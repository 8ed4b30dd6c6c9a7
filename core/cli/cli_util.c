/* Error reporting, option parsing, atomic JSON output and progress lines. */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

int cli_exit_code(mopt_status st) {
    switch (st) {
    case MOPT_OK: return EXIT_OK;
    case MOPT_E_INVALID:
    case MOPT_E_IO:
    case MOPT_E_FORMAT:
    case MOPT_E_UNSUPPORTED:
    case MOPT_E_ABI: return EXIT_USAGE;
    default: return EXIT_RUNTIME;
    }
}

void cli_one_line(char *s) {
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f) *s = '?';
}

int cli_fail(const mopt_error *err) {
    mopt_log_stderr_flush(); /* never on a progress bar's line */
    char msg[sizeof err->msg];
    snprintf(msg, sizeof msg, "%s", err->msg[0] ? err->msg : mopt_status_str((mopt_status)err->code));
    cli_one_line(msg);
    fprintf(stderr, "mopt: %s\n", msg);
    return cli_exit_code((mopt_status)err->code);
}

int cli_usage_error(const char *cmd, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cli_one_line(msg);
    fprintf(stderr, "mopt %s: %s (see 'mopt %s --help')\n", cmd, msg, cmd);
    return EXIT_USAGE;
}

int cli_bad_option(const char *cmd, char *const argv[], const char *shortopts, const struct option *opts) {
    const char *tok = optind > 0 ? argv[optind - 1] : NULL;
    if (tok && !strncmp(tok, "--", 2)) { /* getopt_long takes unambiguous abbreviations: find what this one names */
        size_t len = 0; /* the name: up to '=' or anything that would not print on one line */
        while (isgraph((unsigned char)tok[2 + len]) && tok[2 + len] != '=') len++;
        const struct option *hit = NULL;
        int n = 0;
        for (const struct option *o = opts; o && o->name; o++)
            if (!strncmp(o->name, tok + 2, len)) {
                if (strlen(o->name) == len) { /* exact: the one meant */
                    hit = o, n = 1;
                    break;
                }
                hit = o, n++;
            }
        const int shown = (int)(len + 2 < 64 ? len + 2 : 64);
        if (n > 1) return cli_usage_error(cmd, "'%.*s' is ambiguous: spell the option out", shown, tok);
        if (n == 1 && hit->has_arg == required_argument) return cli_usage_error(cmd, "--%s needs a value", hit->name);
        if (n == 1 && hit->has_arg == no_argument && tok[2 + len] == '=') return cli_usage_error(cmd, "--%s takes no value", hit->name);
        return cli_usage_error(cmd, "unknown option '%.*s'", shown, tok);
    }
    if (optopt > 0 && optopt < 128 && isgraph(optopt)) {
        const char *at = optopt != ':' ? strchr(shortopts, optopt) : NULL;
        if (at && at[1] == ':') return cli_usage_error(cmd, "-%c needs a value", optopt);
        return cli_usage_error(cmd, "unknown option '-%c'", optopt);
    }
    return cli_usage_error(cmd, "unknown option");
}

bool cli_parse_int(const char *s, long long lo, long long hi, long long *out) {
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

bool cli_parse_threads(const char *s, long long *out) {
    if (!cli_parse_int(s, 1, 1 << 20, out)) return false;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores > 0 && *out > cores) { /* more threads than cores only spin against each other */
        fprintf(stderr, "mopt: warning: --threads %lld exceeds the %ld cores; using %ld\n", *out, cores, cores);
        *out = cores;
    }
    return true;
}

bool cli_parse_float(const char *s, double lo, double hi, double *out) {
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v) || v < lo || v > hi) return false;
    *out = v;
    return true;
}

mopt_status cli_write_json(const char *path, json_t *j, mopt_error *err) {
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(10));
    if (!text) return mopt_error_set(err, MOPT_E_NOMEM, __func__, "%s: out of memory", path);
    mopt_status st = mopt_file_write_atomic(path, text, strlen(text), err);
    free(text);
    return st;
}

mopt_status cli_read_text(const char *path, char **data, size_t *len, mopt_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return mopt_error_set(err, MOPT_E_IO, __func__, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n + 1 >= cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf) return mopt_error_set(err, MOPT_E_NOMEM, __func__, "%s: out of memory", path);
    if (bad) {
        free(buf);
        return mopt_error_set(err, MOPT_E_IO, __func__, "%s: read error", path);
    }
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return MOPT_OK;
}

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

long cli_peak_rss_bytes(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss * 1024L;
}

const char *cli_export_pass(const char *format, mopt_options *o, mopt_error *err) {
    static const struct {
        const char *flag, *pass, *format;
    } table[] = {{"hf", "export.hf", "auto"},
                 {"dense", "export.hf", "dense"},
                 {"awq", "export.hf", "awq"},
                 {"gptq", "export.hf", "gptq"},
                 {"compressed-tensors", "export.hf", "compressed-tensors"},
                 {"modelopt", "export.hf", "modelopt"},
                 {"trtllm", "export.trtllm", NULL},
                 {"gguf", "export.gguf", NULL}};
    for (size_t i = 0; i < sizeof table / sizeof *table; i++) {
        if (strcmp(format, table[i].flag)) continue;
        if (table[i].format && mopt_options_set(o, "format", table[i].format, err)) return NULL;
        return table[i].pass;
    }
    if (err) {
        err->code = MOPT_E_INVALID;
        snprintf(err->msg, sizeof err->msg, "--format %s is not known (%s)", format, CLI_EXPORT_FORMATS);
    }
    return NULL;
}

void cli_set_device(const char *d) { setenv("MOPT_DEVICE", d, 1); }
void cli_set_kv_cache(const char *k) { setenv("MOPT_KV_CACHE", k, 1); }
