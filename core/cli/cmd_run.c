/* mopt run SCRIPT.lua [key=value ...]   and   mopt pipeline 'TEXT' MODEL */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "mopt/lua.h"

static void run_help(void) {
    printf("usage: mopt run [--sandbox] [--output-dir DIR] [--timeout SECONDS] SCRIPT.lua [key=value ...]\n\n"
           "Runs a Lua 5.4 pipeline script. The module `mopt` is loaded (mopt.load, mopt.pipeline,\n"
           "mopt.dataset.text, mopt.passes, mopt.describe) and key=value arguments arrive in the\n"
           "global table `args`. Set MOPT_QUIET=1 to silence progress lines.\n"
           "Scripts are trusted code, like a Makefile: they can do what you can.\n"
           "  --sandbox          for scripts from others: no os.execute, io.popen, package.loadlib, C modules,\n"
           "                     debug library or binary chunks; files are written only inside the output\n"
           "                     directory (io.open for writing, os.remove/rename, report:write, exports)\n"
           "  --output-dir DIR   the sandbox's output directory (default: the current directory)\n"
           "  --timeout SECONDS  stop the script after this long (exit 124, temporary files removed)\n"
           "Exit status 3 when a pipeline the script ran failed a gate (eval.gate); 130 on Ctrl-C.\n");
}

int cmd_run(int argc, char **argv) {
    static const struct option opts[] = {{"sandbox", no_argument, 0, 's'},          {"output-dir", required_argument, 0, 'o'},
                                         {"timeout", required_argument, 0, 't'},    {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    int sandbox = 0, c;
    const char *out_dir = NULL;
    long long timeout = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) { /* options stop at the script */
        switch (c) {
        case 's': sandbox = 1; break;
        case 'o': out_dir = optarg; break;
        case 't':
            if (!cli_parse_int(optarg, 1, 1 << 30, &timeout)) return cli_usage_error("run", "--timeout expects seconds (a positive integer), got '%s'", optarg);
            break;
        case 'h': run_help(); return EXIT_OK;
        default: return cli_bad_option("run", argv, "+h", opts);
        }
    }
    if (optind >= argc) return cli_usage_error("run", "expected SCRIPT.lua");
    if (out_dir && !sandbox) return cli_usage_error("run", "--output-dir goes with --sandbox");
    int rrc;
    mopt_registry *r = cli_registry(&rrc);
    if (!r) return rrc;
    const char *q = getenv("MOPT_QUIET");
    char *tb = NULL;
    int32_t gates_failed = 0;
    mopt_error err = {0};
    mopt_lua_opts lo;
    mopt_lua_opts_default(&lo);
    lo.quiet = q && *q && strcmp(q, "0");
    lo.sandbox = sandbox;
    lo.write_root = out_dir;
    if (timeout) alarm((unsigned)timeout);
    mopt_status st = mopt_lua_run(argv[optind], argc - optind - 1, argv + optind + 1, r, &lo, &tb, &gates_failed, &err);
    alarm(0);
    int rc = EXIT_OK;
    if (st == MOPT_E_INTERRUPTED && mopt_interrupted() == SIGALRM) {
        fprintf(stderr, "mopt: %s: timed out after %lld s\n", argv[optind], timeout);
        rc = EXIT_RUNTIME;
    } else if (st) {
        rc = cli_fail(&err);
        if (tb) fprintf(stderr, "%s\n", tb);
    } else if (gates_failed) {
        fprintf(stderr, "mopt: a gate failed (see the report)\n");
        rc = EXIT_GATE;
    }
    free(tb);
    mopt_registry_free(r);
    return rc;
}

int cmd_pipeline(int argc, char **argv) {
    static const struct option opts[] = {{"json", required_argument, 0, 'j'}, {"threads", required_argument, 0, 'T'}, {"device", required_argument, 0, CLI_OPT_DEVICE}, {"kv-cache", required_argument, 0, CLI_OPT_KV_CACHE},
                                         {"quiet", no_argument, 0, 'q'},       {"report-dir", required_argument, 0, 'R'},
                                         {"help", no_argument, 0, 'h'},        {0, 0, 0, 0}};
    const char *json_path = NULL, *report_dir = NULL;
    long long threads = 0;
    int quiet = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'j': json_path = optarg; break;
        case CLI_OPT_DEVICE: cli_set_device(optarg); break;
        case CLI_OPT_KV_CACHE: cli_set_kv_cache(optarg); break;
        case 'T':
            if (!cli_parse_threads(optarg, &threads))
                return cli_usage_error("pipeline", "--threads expects a positive integer, got '%s'", optarg);
            break;
        case 'q': quiet = 1; break;
        case 'R': report_dir = optarg; break;
        case 'h':
            printf("usage: mopt pipeline 'PASS<k=v;k=v>,PASS...' MODEL [--json OUT] [--report-dir DIR] [--threads N] [--device D] [--kv-cache f32|f16] [--quiet]\n\n"
                   "Runs the passes in order on MODEL and prints the report (JSON) on stdout.\n"
                   "--report-dir writes report.json, report.md and report.html there (also when a pass fails).\n"
                   "Exit status 3 when a gate (eval.gate) failed.\n");
            return EXIT_OK;
        default: return cli_bad_option("pipeline", argv, "h", opts);
        }
    }
    if (optind != argc - 2) return cli_usage_error("pipeline", "expected a pipeline text and a MODEL");
    cli_job j;
    int rc = cli_job_open(&j, quiet, threads);
    if (rc) return rc;
    if (mopt_pipeline_parse(j.p, argv[optind], &j.err)) {
        rc = cli_fail(&j.err);
        cli_job_close(&j);
        return rc;
    }
    rc = cli_job_run(&j, NULL, argv[optind + 1], NULL);
    if (!j.m) { /* nothing ran: no report */
        cli_job_close(&j);
        return rc;
    }
    mopt_report *rep = j.rep;
    if (report_dir) {
        mopt_error werr = {0};
        if (mopt_report_write(rep, report_dir, argv[optind], &werr) && rc == EXIT_OK) rc = cli_fail(&werr);
    }
    if (rc == EXIT_OK && !mopt_report_gates_ok(rep)) {
        fprintf(stderr, "mopt: a gate failed (see the report)\n");
        rc = EXIT_GATE;
    }
    char *text = mopt_report_json(rep);
    if (text) {
        puts(text);
        if (json_path) {
            json_error_t je;
            json_t *js = json_loads(text, 0, &je);
            mopt_error werr = {0};
            if (js && cli_write_json(json_path, js, &werr) && rc == EXIT_OK) rc = cli_fail(&werr);
            json_decref(js);
        }
    }
    free(text);
    cli_job_close(&j);
    return rc;
}
