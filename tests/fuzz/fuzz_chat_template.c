/* A chat template, as a downloaded tokenizer_config.json may carry: the
 * input is the template's source. Parsing either succeeds or gives one
 * non-empty line; a parsed template rendered over a fixed conversation
 * either gives text or one non-empty line, within its step and size bounds. */
#include <jansson.h>

#include "fuzz_common.h"
#include "jinja.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static json_t *vars;
    if (!vars)
        vars = json_pack("{s[{ssss}{ssss}{ssss}]sbssss}", "messages", "role", "system", "content", " Be brief. ", "role", "user",
                         "content", "Où est Roméo? {{ x }}", "role", "assistant", "content", "Gone.\n", "add_generation_prompt", 1,
                         "bos_token", "<s>", "eos_token", "</s>");
    char msg[512] = "";
    jinja_template *t = jinja_parse((const char *)data, size, msg, sizeof msg);
    if (!t) {
        if (!msg[0] || strchr(msg, '\n')) __builtin_trap();
        return 0;
    }
    msg[0] = 0;
    char *out = jinja_render(t, vars, msg, sizeof msg);
    if (!out && (!msg[0] || strchr(msg, '\n'))) __builtin_trap();
    free(out);
    jinja_free(t);
    return 0;
}
