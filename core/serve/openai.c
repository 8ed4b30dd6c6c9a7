/* The OpenAI completions and chat completions API: request bodies checked
 * field by field (a known field of the wrong type is an error, unknown fields
 * are ignored, as most OpenAI-compatible servers do), and response bodies
 * and stream chunks in OpenAI's shapes. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve.h"

enum { MAX_MESSAGES = 1024, MAX_STOP_BYTES = 256 };

void srv_params_free(srv_params *p) {
    free(p->prompt);
    for (int i = 0; i < p->n_stop; i++) free(p->stop[i]);
    free(p->user);
    json_decref(p->messages);
    memset(p, 0, sizeof *p);
}

static bool fail(char *msg, size_t cap, const char *fmt, const char *field) {
    snprintf(msg, cap, fmt, field);
    return false;
}

static bool number(json_t *o, const char *key, double lo, double hi, double *out, char *msg, size_t cap) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return true;
    if (!json_is_number(v)) return fail(msg, cap, "'%s' must be a number", key);
    const double x = json_number_value(v);
    if (!(x >= lo && x <= hi)) {
        snprintf(msg, cap, "'%s' must be between %g and %g, got %g", key, lo, hi, x);
        return false;
    }
    *out = x;
    return true;
}

static const char *role_label(const char *role) {
    if (!strcmp(role, "system")) return "System";
    if (!strcmp(role, "user")) return "User";
    if (!strcmp(role, "assistant")) return "Assistant";
    return NULL;
}

/* The plain chat format (srv_params.prompt); messages already checked. */
static char *chat_prompt(const json_t *msgs) {
    sbuf b = {0};
    for (size_t i = 0; i < json_array_size(msgs); i++) {
        json_t *m = json_array_get(msgs, i);
        sb_printf(&b, "%s: %s\n", role_label(json_string_value(json_object_get(m, "role"))),
                  json_string_value(json_object_get(m, "content")));
    }
    sb_printf(&b, "Assistant:");
    if (b.oom) {
        free(b.s);
        return NULL;
    }
    return b.s;
}

/* OpenAI's content as an array of parts: the text parts, joined by a line feed as vLLM joins them for a template
 * that takes text, become the message's content string; any other part (an image, audio) is refused, since the
 * models mopt serves read text. */
static bool flatten_parts(json_t *m, json_t *parts, size_t i, char *msg, size_t cap) {
    sbuf b = {0};
    for (size_t k = 0; k < json_array_size(parts); k++) {
        json_t *part = json_array_get(parts, k), *type = json_object_get(part, "type"), *text = json_object_get(part, "text");
        if (!json_is_object(part) || !json_is_string(type) || strcmp(json_string_value(type), "text") || !json_is_string(text)) {
            free(b.s);
            snprintf(msg, cap, "messages[%zu].content[%zu] must be a {\"type\": \"text\", \"text\": string} part (the model reads text)",
                     i, k);
            return false;
        }
        if (k) sb_put(&b, "\n", 1);
        sb_put(&b, json_string_value(text), json_string_length(text));
    }
    json_t *str = b.oom ? NULL : json_stringn_nocheck(b.s ? b.s : "", b.n); /* UTF-8 already: JSON strings joined */
    free(b.s);
    if (!str || json_object_set_new(m, "content", str)) return fail(msg, cap, "out of memory%s", "");
    return true;
}

static bool check_messages(json_t *msgs, char *msg, size_t cap) {
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return fail(msg, cap, "'%s' must be a non-empty array of {role, content} objects", "messages");
    if (json_array_size(msgs) > MAX_MESSAGES) return fail(msg, cap, "'%s' has more than 1024 entries", "messages");
    for (size_t i = 0; i < json_array_size(msgs); i++) {
        json_t *m = json_array_get(msgs, i), *role = json_object_get(m, "role"), *content = json_object_get(m, "content");
        if (!json_is_object(m)) {
            snprintf(msg, cap, "messages[%zu] must be an object", i);
            return false;
        }
        if (json_is_string(role) && !strcmp(json_string_value(role), "developer")) {
            /* OpenAI's newer name for the system message: templates know only "system" */
            if (json_object_set_new(m, "role", json_string("system"))) return fail(msg, cap, "out of memory%s", "");
            role = json_object_get(m, "role");
        }
        if (!json_is_string(role) || !role_label(json_string_value(role))) {
            snprintf(msg, cap, "messages[%zu].role must be \"system\" (or \"developer\"), \"user\" or \"assistant\"", i);
            return false;
        }
        if (json_is_array(content)) {
            if (!flatten_parts(m, content, i, msg, cap)) return false;
        } else if (!json_is_string(content)) {
            snprintf(msg, cap, "messages[%zu].content must be a string or an array of text parts", i);
            return false;
        }
    }
    return true;
}

static bool stops(json_t *v, srv_params *p, char *msg, size_t cap) {
    if (!v || json_is_null(v)) return true;
    json_t *one = json_is_string(v) ? v : NULL;
    const size_t n = one ? 1 : json_array_size(v);
    if (!one && !json_is_array(v)) return fail(msg, cap, "'%s' must be a string or an array of strings", "stop");
    if (n > SRV_MAX_STOP) return fail(msg, cap, "'%s' takes at most 4 sequences", "stop");
    for (size_t i = 0; i < n; i++) {
        json_t *s = one ? one : json_array_get(v, i);
        if (!json_is_string(s)) return fail(msg, cap, "'%s' must be a string or an array of strings", "stop");
        const size_t L = json_string_length(s);
        if (L == 0 || L > MAX_STOP_BYTES) return fail(msg, cap, "each '%s' sequence must have 1 to 256 bytes", "stop");
        p->stop[p->n_stop] = strdup(json_string_value(s));
        if (!p->stop[p->n_stop]) return fail(msg, cap, "out of memory%s", "");
        p->n_stop++;
    }
    return true;
}

bool srv_parse_request(const char *body, size_t n, bool chat, srv_params *p, char *msg, size_t cap) {
    memset(p, 0, sizeof *p);
    p->chat = chat;
    p->temperature = 1.0;
    p->top_p = 1.0;
    p->top_logprobs = -1;
    json_error_t je;
    json_t *o = json_loadb(body, n, JSON_REJECT_DUPLICATES, &je);
    if (!o) {
        snprintf(msg, cap, "invalid JSON at line %d column %d: %s", je.line, je.column, je.text);
        for (char *c = msg; *c; c++) /* jansson quotes the offending bytes, control characters too: keep one line */
            if ((unsigned char)*c < 0x20) *c = ' ';
        return false;
    }
    bool ok = false;
    json_t *v;
    if (!json_is_object(o)) {
        fail(msg, cap, "the request body must be a JSON object%s", "");
        goto done;
    }
    if (chat) {
        if (!check_messages(json_object_get(o, "messages"), msg, cap)) goto done;
        p->messages = json_incref(json_object_get(o, "messages"));
        p->prompt = chat_prompt(p->messages);
    } else {
        v = json_object_get(o, "prompt");
        if (json_is_array(v) && json_array_size(v) == 1) v = json_array_get(v, 0);
        if (!json_is_string(v)) {
            fail(msg, cap, "'%s' must be a string (or an array of one string)", "prompt");
            goto done;
        }
        p->prompt = strdup(json_string_value(v));
    }
    if (!p->prompt) {
        fail(msg, cap, "out of memory%s", "");
        goto done;
    }
    const char *mt_key = json_object_get(o, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
    v = json_object_get(o, mt_key);
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > (1 << 24)) {
            fail(msg, cap, "'%s' must be a positive integer", mt_key);
            goto done;
        }
        p->max_tokens = (int32_t)json_integer_value(v);
    }
    if (!number(o, "temperature", 0, 2, &p->temperature, msg, cap) || !number(o, "top_p", 0, 1, &p->top_p, msg, cap) ||
        !number(o, "presence_penalty", -2, 2, &p->presence_penalty, msg, cap) ||
        !number(o, "frequency_penalty", -2, 2, &p->frequency_penalty, msg, cap))
        goto done;
    if (p->top_p <= 0) {
        fail(msg, cap, "'%s' must be in (0, 1]", "top_p");
        goto done;
    }
    v = json_object_get(o, "seed");
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v)) {
            fail(msg, cap, "'%s' must be an integer", "seed");
            goto done;
        }
        p->has_seed = true;
        p->seed = (uint64_t)json_integer_value(v);
    }
    if (!stops(json_object_get(o, "stop"), p, msg, cap)) goto done;
    v = json_object_get(o, "stream");
    if (v && !json_is_null(v) && !json_is_boolean(v)) {
        fail(msg, cap, "'%s' must be true or false", "stream");
        goto done;
    }
    p->stream = json_is_true(v);
    v = json_object_get(o, "stream_options");
    if (v && !json_is_null(v)) {
        json_t *u = json_object_get(v, "include_usage");
        if (!json_is_object(v) || (u && !json_is_null(u) && !json_is_boolean(u))) {
            fail(msg, cap, "'%s' must be an object with a boolean 'include_usage'", "stream_options");
            goto done;
        }
        if (!p->stream) {
            fail(msg, cap, "'%s' is only allowed when 'stream' is true", "stream_options");
            goto done;
        }
        p->stream_usage = json_is_true(u);
    }
    /* chat: logprobs (a boolean) and top_logprobs (0-20, with logprobs); completions: logprobs (0-20 alternatives) */
    v = json_object_get(o, "logprobs");
    json_t *top = chat ? json_object_get(o, "top_logprobs") : NULL;
    if (chat && v && !json_is_null(v) && !json_is_boolean(v)) {
        fail(msg, cap, "'%s' must be true or false", "logprobs");
        goto done;
    }
    json_t *count = chat ? top : v;
    if (count && !json_is_null(count) && (!json_is_integer(count) || json_integer_value(count) < 0 || json_integer_value(count) > 20)) {
        fail(msg, cap, "'%s' must be an integer from 0 to 20", chat ? "top_logprobs" : "logprobs");
        goto done;
    }
    if (chat && top && !json_is_null(top) && !json_is_true(v)) {
        fail(msg, cap, "'%s' needs 'logprobs': true", "top_logprobs");
        goto done;
    }
    if (chat ? json_is_true(v) : json_is_integer(v)) p->top_logprobs = json_is_integer(count) ? (int32_t)json_integer_value(count) : 0;
    v = json_object_get(o, "n");
    if (v && !json_is_null(v) && (!json_is_integer(v) || json_integer_value(v) != 1)) {
        fail(msg, cap, "'%s' must be 1: one choice per request", "n");
        goto done;
    }
    v = json_object_get(o, "model");
    if (v && !json_is_null(v) && !json_is_string(v)) {
        fail(msg, cap, "'%s' must be a string", "model");
        goto done;
    }
    v = json_object_get(o, "user");
    if (v && !json_is_null(v)) {
        if (!json_is_string(v)) {
            fail(msg, cap, "'%s' must be a string", "user");
            goto done;
        }
        p->user = strdup(json_string_value(v));
    }
    ok = true;
done:
    json_decref(o);
    if (!ok) srv_params_free(p);
    return ok;
}

static char *dump(json_t *j) {
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return s;
}

char *srv_json_error(const char *message, const char *type) {
    return dump(json_pack("{s:{s:s,s:s,s:n,s:n}}", "error", "message", message, "type", type, "param", "code"));
}

json_t *srv_json_text(const char *s, size_t n) {
    json_t *t = json_stringn(s ? s : "", s ? n : 0);
    return t ? t : json_string("\xEF\xBF\xBD"); /* bytes that are not UTF-8 (a mangled tokenizer): U+FFFD */
}

/* A chat entry's {token, logprob} pairs as completions' {token: logprob} (a repeated text keeps its first). */
static json_t *top_dict(json_t *entry) {
    json_t *d = json_object(), *t;
    size_t i;
    json_array_foreach(json_object_get(entry, "top_logprobs"), i, t) {
        const char *k = json_string_value(json_object_get(t, "token"));
        if (d && k && !json_object_get(d, k)) json_object_set(d, k, json_object_get(t, "logprob"));
    }
    return d;
}

json_t *srv_json_logprobs(const srv_request *r, bool chat, int32_t from, int32_t to) {
    const int32_t n = r->lp ? (int32_t)json_array_size(r->lp) : 0;
    if (to > n) to = n;
    json_t *content = json_array(), *tokens = json_array(), *lps = json_array(), *tops = json_array(), *offs = json_array();
    for (int32_t i = from; i < to && content; i++) {
        json_t *e = json_array_get(r->lp, (size_t)i);
        if (chat) {
            json_array_append(content, e);
            continue;
        }
        const size_t len = json_array_size(json_object_get(e, "bytes"));
        json_array_append(tokens, json_object_get(e, "token"));
        json_array_append(lps, json_object_get(e, "logprob"));
        json_array_append_new(tops, top_dict(e));
        json_array_append_new(offs, json_integer((json_int_t)(r->lp_end[i] - len)));
    }
    json_t *out = !content || !tokens || !lps || !tops || !offs ? NULL
                  : chat ? json_pack("{s:O}", "content", content)
                         : json_pack("{s:O,s:O,s:O,s:O}", "tokens", tokens, "token_logprobs", lps, "top_logprobs", tops, "text_offset", offs);
    json_decref(content), json_decref(tokens), json_decref(lps), json_decref(tops), json_decref(offs);
    return out;
}

char *srv_json_response(const srv_request *r, bool chat, const char *id, long long created, const char *model) {
    json_t *lp = r->top_logprobs >= 0 ? srv_json_logprobs(r, chat, 0, INT32_MAX) : json_null();
    json_t *choice = chat ? json_pack("{s:i,s:{s:s,s:o},s:o,s:s}", "index", 0, "message", "role", "assistant", "content",
                                      srv_json_text(r->text.s, r->text.n), "logprobs", lp, "finish_reason", srv_finish_name(r->finish))
                          : json_pack("{s:i,s:o,s:o,s:s}", "index", 0, "text", srv_json_text(r->text.s, r->text.n),
                                      "logprobs", lp, "finish_reason", srv_finish_name(r->finish));
    return dump(json_pack("{s:s,s:s,s:I,s:s,s:[o],s:{s:i,s:i,s:i}}", "id", id, "object",
                          chat ? "chat.completion" : "text_completion", "created", (json_int_t)created, "model", model,
                          "choices", choice, "usage", "prompt_tokens", r->n_prompt, "completion_tokens", r->n_generated,
                          "total_tokens", r->n_prompt + r->n_generated));
}

char *srv_json_usage_chunk(const srv_request *r, bool chat, const char *id, long long created, const char *model) {
    return dump(json_pack("{s:s,s:s,s:I,s:s,s:[],s:{s:i,s:i,s:i}}", "id", id, "object",
                          chat ? "chat.completion.chunk" : "text_completion", "created", (json_int_t)created, "model", model,
                          "choices", "usage", "prompt_tokens", r->n_prompt, "completion_tokens", r->n_generated, "total_tokens",
                          r->n_prompt + r->n_generated));
}

char *srv_json_chunk(bool chat, const char *id, long long created, const char *model, const char *text, size_t n,
                     const char *finish, bool role_first, json_t *logprobs) {
    json_t *choice;
    if (!logprobs) logprobs = json_null();
    if (chat) {
        json_t *delta = role_first ? json_pack("{s:s}", "role", "assistant")
                        : finish   ? json_object()
                                   : json_pack("{s:o}", "content", srv_json_text(text, n));
        choice = json_pack("{s:i,s:o,s:o,s:o}", "index", 0, "delta", delta, "logprobs", logprobs, "finish_reason",
                           finish ? json_string(finish) : json_null());
    } else {
        choice = json_pack("{s:i,s:o,s:o,s:o}", "index", 0, "text", srv_json_text(finish ? "" : text, finish ? 0 : n),
                           "logprobs", logprobs, "finish_reason", finish ? json_string(finish) : json_null());
    }
    return dump(json_pack("{s:s,s:s,s:I,s:s,s:[o]}", "id", id, "object",
                          chat ? "chat.completion.chunk" : "text_completion", "created", (json_int_t)created, "model",
                          model, "choices", choice));
}
