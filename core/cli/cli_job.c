/* The registry and the pipeline runs the commands share. */
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

mopt_registry *cli_registry(int *rc) {
    mopt_error err = {0};
    mopt_registry *r = mopt_registry_open(NULL, cli_registry_flags, &err);
    if (!r) {
        *rc = cli_fail(&err);
        return NULL;
    }
    for (int32_t i = 0; i < mopt_registry_n_problems(r); i++)
        fprintf(stderr, "mopt: warning: %s\n", mopt_registry_problem(r, i));
    return r;
}

int cli_job_open(cli_job *j, int quiet, long long threads) {
    memset(j, 0, sizeof *j);
    int rc;
    if (!(j->r = cli_registry(&rc))) return rc;
    j->p = mopt_pipeline_new(j->r);
    j->o = mopt_options_new();
    j->rep = mopt_report_new();
    mopt_run_opts_default(&j->ro);
    j->ro.quiet = quiet;
    j->ro.n_threads = (int32_t)threads;
    if (j->p && j->o && j->rep) return EXIT_OK;
    mopt_error_set(&j->err, MOPT_E_NOMEM, __func__, "out of memory");
    rc = cli_fail(&j->err);
    cli_job_close(j);
    return rc;
}

int cli_job_set(cli_job *j, const char *key, const char *v) { return v && *v ? mopt_options_set(j->o, key, v, &j->err) : MOPT_OK; }

int cli_job_run(cli_job *j, const char *pass, const char *model, const char *tok_path) {
    if ((pass && mopt_pipeline_add(j->p, pass, j->o, &j->err)) || !(j->m = mopt_model_load(model, tok_path, &j->err)) ||
        (j->spill_dir[0] && mopt_graph_spill_to(mopt_model_graph(j->m), j->spill_dir, &j->err)) ||
        mopt_pipeline_run(j->p, j->m, &j->ro, j->rep, &j->err))
        return cli_fail(&j->err);
    return EXIT_OK;
}

void cli_job_spill_beside(cli_job *j, const char *out) {
    char copy[sizeof j->spill_dir];
    snprintf(copy, sizeof copy, "%s", out);
    snprintf(j->spill_dir, sizeof j->spill_dir, "%s", dirname(copy));
}

int cli_job_write_report(cli_job *j, const char *path, int rc) {
    if (!path || !j->rep) return rc;
    char *text = mopt_report_json(j->rep);
    mopt_status st = text ? mopt_file_write_atomic(path, text, strlen(text), &j->err) : MOPT_E_NOMEM;
    free(text);
    return st && !rc ? cli_fail(&j->err) : rc;
}

void cli_job_close(cli_job *j) {
    mopt_options_free(j->o);
    mopt_report_free(j->rep);
    mopt_pipeline_free(j->p);
    mopt_model_free(j->m);
    mopt_registry_free(j->r);
    memset(j, 0, sizeof *j);
}
