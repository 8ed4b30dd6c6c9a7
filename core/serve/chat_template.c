/* A model's chat template (mopt_tokenizer_chat_template, or a file given
 * instead), rendered with the variables transformers' apply_chat_template
 * passes: messages, add_generation_prompt, and the special tokens that
 * tokenizer_config.json names (bos_token, eos_token, ...). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jinja.h"
#include "serve.h"

struct srv_chat {
    jinja_template *t;
    json_t *vars; /* the special tokens; messages are added per request */
};

void srv_chat_free(srv_chat *c) {
    if (!c) return;
    jinja_free(c->t);
    json_decref(c->vars);
    free(c);
}

/* A special token in tokenizer_config.json: a string, or an AddedToken object with "content". */
static json_t *token_text(json_t *v) {
    if (json_is_string(v)) return v;
    json_t *content = json_is_object(v) ? json_object_get(v, "content") : NULL;
    return json_is_string(content) ? content : NULL;
}

srv_chat *srv_chat_new(const char *config, size_t config_n, const char *tmpl, size_t tmpl_n, bool *none, char *msg,
                       size_t cap) {
    *none = false;
    msg[0] = 0;
    json_t *cfg = NULL;
    if (config) {
        json_error_t je;
        /* integers as reals: transformers writes model_max_length as 1e30 spelled out */
        cfg = json_loadb(config, config_n, JSON_DECODE_INT_AS_REAL, &je);
        if (!cfg || !json_is_object(cfg)) {
            if (cfg) snprintf(msg, cap, "not a JSON object");
            else snprintf(msg, cap, "invalid JSON at line %d column %d: %s", je.line, je.column, je.text);
            json_decref(cfg);
            return NULL;
        }
    }
    if (!tmpl) {
        *none = true;
        json_decref(cfg);
        return NULL;
    }
    srv_chat *c = calloc(1, sizeof *c);
    if (!c || !(c->vars = json_object())) {
        snprintf(msg, cap, "out of memory");
        free(c);
        json_decref(cfg);
        return NULL;
    }
    c->t = jinja_parse(tmpl, tmpl_n, msg, cap);
    static const char *const specials[] = {"bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token",
                                           "mask_token"};
    for (size_t i = 0; cfg && i < sizeof specials / sizeof *specials; i++) {
        json_t *v = token_text(json_object_get(cfg, specials[i]));
        if (v) json_object_set(c->vars, specials[i], v);
    }
    json_decref(cfg);
    if (!c->t) {
        srv_chat_free(c);
        return NULL;
    }
    return c;
}

char *srv_chat_render(const srv_chat *c, json_t *messages, char *msg, size_t cap) {
    json_t *vars = json_copy(c->vars);
    if (!vars || json_object_set(vars, "messages", messages) || json_object_set_new(vars, "add_generation_prompt", json_true())) {
        json_decref(vars);
        snprintf(msg, cap, "out of memory");
        return NULL;
    }
    char *out = jinja_render(c->t, vars, msg, cap);
    json_decref(vars);
    return out;
}
