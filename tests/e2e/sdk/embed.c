/* An embedder of the core alone (built by test_sdk.sh with pkg-config mopt,
 * no Lua): loads a model, runs a forward pass, prints the most likely next
 * token after the prompt. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mopt/mopt.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: embed MODEL PROMPT\n");
        return 2;
    }
    mopt_error err = {0};
    mopt_model *m = mopt_model_load(argv[1], NULL, &err);
    if (!m) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    int32_t *ids;
    size_t n;
    mopt_session *s = NULL;
    const float *logits;
    int rc = 1;
    if (mopt_tokenizer_encode(mopt_model_tokenizer(m), argv[2], strlen(argv[2]), MOPT_TOK_ADD_SPECIAL, &ids, &n, &err) == MOPT_OK) {
        s = mopt_session_new(mopt_model_graph(m), NULL, &err);
        if (s && mopt_session_forward(s, ids, (int32_t)n, false, &logits, &err) == MOPT_OK) {
            printf("%d\n", mopt_argmax(logits, mopt_model_arch(m)->vocab_size));
            rc = 0;
        }
        free(ids);
    }
    if (rc) fprintf(stderr, "%s\n", err.msg);
    mopt_session_free(s);
    mopt_model_free(m);
    return rc;
}
