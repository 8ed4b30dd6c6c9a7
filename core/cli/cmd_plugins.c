/* mopt plugins [--json]   and   mopt describe PASS */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int cmd_plugins(int argc, char **argv) {
    int as_json = argc > 1 && !strcmp(argv[1], "--json");
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("usage: mopt plugins [--json]\n\nLists every plugin found (MOPT_PLUGIN_PATH, then the plugin folder beside\n"
               "libmopt) with its file, version and passes.\n");
        return EXIT_OK;
    }
    if (argc > 1 && !as_json) return cli_usage_error("plugins", "unknown argument '%s'", argv[1]);
    int rrc;
    mopt_registry *r = cli_registry(&rrc);
    if (!r) return rrc;
    if (as_json) {
        json_t *root = json_object(), *list = json_array(), *probs = json_array();
        for (int32_t i = 0; i < mopt_registry_n_plugins(r); i++) {
            mopt_plugin_info p = mopt_registry_plugin(r, i);
            json_t *passes = json_array();
            for (int32_t k = 0; k < mopt_registry_n_passes(r); k++) {
                if (strcmp(mopt_registry_pass_plugin(r, k), p.name) != 0) continue;
                const mopt_pass_desc *d = mopt_registry_pass(r, k);
                json_array_append_new(passes, json_pack("{s:s, s:s, s:s}", "name", d->name, "kind",
                                                        mopt_pass_kind_name((mopt_pass_kind)d->kind), "summary",
                                                        d->summary ? d->summary : ""));
            }
            json_array_append_new(list, json_pack("{s:s, s:s, s:s, s:s, s:i, s:o}", "name", p.name, "file", p.path,
                                                  "version", p.version, "description", p.description, "abi",
                                                  (int)p.abi_version, "passes", passes));
        }
        for (int32_t i = 0; i < mopt_registry_n_problems(r); i++)
            json_array_append_new(probs, json_string(mopt_registry_problem(r, i)));
        json_object_set_new(root, "plugins", list);
        json_object_set_new(root, "problems", probs);
        char *s = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        puts(s);
        free(s);
        json_decref(root);
    } else {
        for (int32_t i = 0; i < mopt_registry_n_plugins(r); i++) {
            mopt_plugin_info p = mopt_registry_plugin(r, i);
            printf("%s %s  (%s)\n  %s\n", p.name, p.version, p.path, p.description);
            for (int32_t k = 0; k < mopt_registry_n_passes(r); k++) {
                if (strcmp(mopt_registry_pass_plugin(r, k), p.name) != 0) continue;
                const mopt_pass_desc *d = mopt_registry_pass(r, k);
                printf("    %-24s %-9s %s\n", d->name, mopt_pass_kind_name((mopt_pass_kind)d->kind),
                       d->summary ? d->summary : "");
            }
        }
        if (mopt_registry_n_plugins(r) == 0) printf("no plugins found (set MOPT_PLUGIN_PATH?)\n");
    }
    mopt_registry_free(r);
    return EXIT_OK;
}

int cmd_describe(int argc, char **argv) {
    if (argc != 2) return cli_usage_error("describe", "expected exactly one PASS name");
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        printf("usage: mopt describe PASS\n\nPrints a pass's options with their types, defaults and ranges.\n");
        return EXIT_OK;
    }
    int rrc;
    mopt_registry *r = cli_registry(&rrc);
    if (!r) return rrc;
    mopt_error err = {0};
    char *text = mopt_registry_describe(r, argv[1], &err);
    int rc = text ? EXIT_OK : cli_fail(&err);
    if (text) fputs(text, stdout);
    free(text);
    mopt_registry_free(r);
    return rc;
}
