/* Shared pieces of the mopt command-line tool. */
#ifndef MOPT_CLI_H
#define MOPT_CLI_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "mopt/mopt.h"

enum { EXIT_OK = 0, EXIT_RUNTIME = 1, EXIT_USAGE = 2, EXIT_GATE = 3 };

/* Control characters (a newline in a file name or an option's value) as '?', so an error stays one line; cli_fail
 * and cli_usage_error do this to every message. */
void cli_one_line(char *s);
/* Prints "mopt: <msg>" as one line and returns the exit code for the status. */
int cli_fail(const mopt_error *err);
/* Prints "mopt <cmd>: <printf message>" and returns EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int cli_exit_code(mopt_status st);
struct option;
/* getopt_long's '?' as one line naming what it stopped at: an option cmd does not have, an ambiguous abbreviation,
 * one of its options given no value, or a flag given one. main sets opterr = 0, so getopt prints nothing itself.
 * shortopts and opts are the ones getopt_long was given. Returns EXIT_USAGE. */
int cli_bad_option(const char *cmd, char *const argv[], const char *shortopts, const struct option *opts);

/* Strict number parsing for option values; false on garbage or range. */
bool cli_parse_int(const char *s, long long lo, long long hi, long long *out);
bool cli_parse_float(const char *s, double lo, double hi, double *out);
/* --threads N: a positive integer, capped at the online cores with a warning line. */
bool cli_parse_threads(const char *s, long long *out);
/* --device D: where the commands' sessions run, handed to them as $MOPT_DEVICE (mopt_session_opts.device), so the
 * passes a command runs see it too; a bad value fails when the first session opens, naming it. */
#define CLI_OPT_DEVICE 1000
#define CLI_OPT_KV_CACHE 1001
void cli_set_device(const char *d);
/* --kv-cache f32|f16: the sessions' cache of the float layers (read through $MOPT_KV_CACHE, checked there) */
void cli_set_kv_cache(const char *k);

/* Writes a JSON value to path atomically (temp file, then rename). */
mopt_status cli_write_json(const char *path, json_t *j, mopt_error *err);
/* Reads a whole file; fails with a message naming it. */
mopt_status cli_read_text(const char *path, char **data, size_t *len, mopt_error *err);

double cli_now(void);
long cli_peak_rss_bytes(void);

int cmd_info(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_plugins(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_grad(int argc, char **argv);
int cmd_distill(int argc, char **argv);
int cmd_qat(int argc, char **argv);
int cmd_prune(int argc, char **argv);
int cmd_synth(int argc, char **argv);
int cmd_describe(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_loadtest(int argc, char **argv);
int cmd_pipeline(int argc, char **argv);

/* The export formats --format names, for help text. */
#define CLI_EXPORT_FORMATS "hf, dense, awq, gptq, compressed-tensors, modelopt, trtllm, gguf"
/* Sets the options of the export pass for --format F (hf: dense for a float
 * model, compressed-tensors for a quantized one) on o and returns the pass
 * name, or NULL with err set for an unknown format. */
const char *cli_export_pass(const char *format, mopt_options *o, mopt_error *err);

/* Loads the plugin registry, printing load problems as warnings; NULL (and the
 * exit code in *rc) on failure. */
mopt_registry *cli_registry(int *rc);
/* One pipeline run of a command: the registry, a pipeline, the options of its
 * main pass, the report and the model, opened and freed together. */
typedef struct cli_job {
    mopt_registry *r;
    mopt_pipeline *p;
    mopt_options *o;
    mopt_report *rep;
    mopt_model *m;
    mopt_error err;
    mopt_run_opts ro;
    char spill_dir[4096]; /* non-empty: packed weights go to a file there as passes make them (mopt_graph_spill_to) */
} cli_job;

/* Opens the registry (warning about plugins that did not load) and creates the
 * rest; 0, or the exit code to return. */
int cli_job_open(cli_job *j, int quiet, long long threads);
/* Sets option key of the main pass when v is given (non-NULL, non-empty);
 * nonzero with j->err set on a bad value. */
int cli_job_set(cli_job *j, const char *key, const char *v);
/* Appends `pass` with j->o (NULL: the pipeline is complete), loads MODEL
 * (tok_path may be NULL) and runs; 0, or prints the failure and returns the
 * exit code. */
int cli_job_run(cli_job *j, const char *pass, const char *model, const char *tok_path);
/* --stream: packed weights spill to a nameless file in the directory that will
 * hold `out` (the disk that must take the checkpoint anyway). */
void cli_job_spill_beside(cli_job *j, const char *out);
/* Writes the job's report as JSON to path (atomically) when path is set;
 * returns rc, or the failure's exit code when rc was 0. */
int cli_job_write_report(cli_job *j, const char *path, int rc);
void cli_job_close(cli_job *j);

/* MOPT_REGISTRY_ALLOW_OVERRIDE when --allow-override was given. */
extern uint32_t cli_registry_flags;

#endif
