/* mopt tokenize MODEL (--text S | --file F) [--json] [--no-special] */
#include <getopt.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void help(void) {
    printf("usage: mopt tokenize MODEL|TOKENIZER (--text S | --file F) [--json] [--no-special] [--tokenizer PATH]\n\n"
           "Prints the token ids of a text, space-separated (or a JSON array with --json). Instead of a\n"
           "model, a tokenizer.json or a folder holding only tokenizer files will do.\n"
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
        default: return cli_bad_option("tokenize", argv, "h", opts);
        }
    }
    if (optind != argc - 1) return cli_usage_error("tokenize", "expected exactly one MODEL");
    if (!!text == !!file) return cli_usage_error("tokenize", "give exactly one of --text or --file");
    mopt_error err = {0};
    char *data = NULL;
    size_t len = 0;
    if (file && cli_read_text(file, &data, &len, &err)) return cli_fail(&err);
    /* as AutoTokenizer: a tokenizer.json, or a folder holding only tokenizer files, is enough */
    const char *src = argv[optind];
    char cfg[4200], tj[4200];
    struct stat st;
    snprintf(cfg, sizeof cfg, "%s/config.json", src);
    snprintf(tj, sizeof tj, "%s/tokenizer.json", src);
    const int is_dir = stat(src, &st) == 0 && S_ISDIR(st.st_mode);
    const size_t sl = strlen(src);
    const char *tok_only = NULL;
    if (!tok_path && !is_dir && sl >= 5 && !strcmp(src + sl - 5, ".json")) tok_only = src;
    if (!tok_path && is_dir && access(cfg, F_OK) != 0 && access(tj, F_OK) == 0) tok_only = tj;
    mopt_model *m = NULL;
    mopt_tokenizer *own = NULL;
    if (tok_only) own = mopt_tokenizer_load_hf(tok_only, &err);
    else m = mopt_model_load(src, tok_path, &err);
    if (!m && !own) {
        free(data);
        return cli_fail(&err);
    }
    int rc = EXIT_OK;
    const mopt_tokenizer *tok = own ? own : mopt_model_tokenizer(m);
    int32_t *ids = NULL;
    size_t n = 0;
    if (!tok) {
        rc = cli_usage_error("tokenize", "%s has no tokenizer; pass --tokenizer", argv[optind]);
    } else if (mopt_tokenizer_encode(tok, file ? data : text, file ? len : strlen(text),
                                     special ? MOPT_TOK_ADD_SPECIAL : 0, &ids, &n, &err)) {
        char why[sizeof err.msg];
        snprintf(why, sizeof why, "%s", err.msg);
        if (file) mopt_error_set(&err, (mopt_status)err.code, "tokenize", "%s: %s", file, why);
        rc = cli_fail(&err);
    } else {
        if (as_json) putchar('[');
        for (size_t i = 0; i < n; i++) printf(as_json ? "%s%d" : "%s%d", i ? (as_json ? ", " : " ") : "", ids[i]);
        if (as_json) putchar(']');
        putchar('\n');
    }
    free(ids);
    free(data);
    mopt_tokenizer_free(own);
    mopt_model_free(m);
    return rc;
}
