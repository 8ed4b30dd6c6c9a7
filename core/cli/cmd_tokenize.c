/* mopt tokenize MODEL (--text S | --file F) [--json] [--no-special] */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void help(void) {
    printf("usage: mopt tokenize MODEL (--text S | --file F) [--json] [--no-special] [--tokenizer PATH]\n\n"
           "Prints the token ids of a text, space-separated (or a JSON array with --json).\n"
           "  --text S          the text to encode\n"
           "  --file F          encode the contents of file F\n"
           "  --json            print a JSON array\n"
           "  --no-special      do not add the post-processor's special tokens (BOS)\n"
           "  --tokenizer PATH  tokenizer.json or llama2.c tokenizer file to use instead of the model's\n");
}

int cmd_tokenize(int argc, char **argv) {
    static const struct option opts[] = {{"text", required_argument, 0, 't'},      {"file", required_argument, 0, 'f'},
                                         {"json", no_argument, 0, 'j'},            {"no-special", no_argument, 0, 'n'},
                                         {"tokenizer", required_argument, 0, 'k'}, {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *text = NULL, *file = NULL, *tok_path = NULL;
    int as_json = 0, special = 1, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 't': text = optarg; break;
        case 'f': file = optarg; break;
        case 'j': as_json = 1; break;
        case 'n': special = 0; break;
        case 'k': tok_path = optarg; break;
        case 'h': help(); return EXIT_OK;
        default: return cli_usage_error("tokenize", "unknown option");
        }
    }
    if (optind != argc - 1) return cli_usage_error("tokenize", "expected exactly one MODEL");
    if (!!text == !!file) return cli_usage_error("tokenize", "give exactly one of --text or --file");
    mopt_error err = {0};
    char *data = NULL;
    size_t len = 0;
    if (file && cli_read_text(file, &data, &len, &err)) return cli_fail(&err);
    mopt_model *m = mopt_model_load(argv[optind], tok_path, &err);
    if (!m) {
        free(data);
        return cli_fail(&err);
    }
    int rc = EXIT_OK;
    const mopt_tokenizer *tok = mopt_model_tokenizer(m);
    int32_t *ids = NULL;
    size_t n = 0;
    if (!tok) {
        rc = cli_usage_error("tokenize", "%s has no tokenizer; pass --tokenizer", argv[optind]);
    } else if (mopt_tokenizer_encode(tok, file ? data : text, file ? len : strlen(text),
                                     special ? MOPT_TOK_ADD_SPECIAL : 0, &ids, &n, &err)) {
        rc = cli_fail(&err);
    } else {
        if (as_json) putchar('[');
        for (size_t i = 0; i < n; i++) printf(as_json ? "%s%d" : "%s%d", i ? (as_json ? ", " : " ") : "", ids[i]);
        if (as_json) putchar(']');
        putchar('\n');
    }
    free(ids);
    free(data);
    mopt_model_free(m);
    return rc;
}
