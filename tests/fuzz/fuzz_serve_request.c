/* mopt serve's request handling without the network: byte 0 picks the
 * endpoint (even: completions, odd: chat); the rest is the body. A body that
 * parses is rendered to a prompt whose bytes are then fed, in pieces of
 * input-chosen sizes, through a request with its stop strings (cutting,
 * holding back partial stops and unfinished UTF-8), and the final text must
 * be what was fed up to the first stop, minus an unfinished last character,
 * and a valid response body. */
#include <jansson.h>

#include "fuzz_common.h"
#include "serve.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const bool chat = data[0] & 1;
    srv_params p;
    char msg[512];
    if (!srv_parse_request((const char *)data + 1, size - 1, chat, &p, msg, sizeof msg)) {
        if (!msg[0] || strchr(msg, '\n')) __builtin_trap(); /* a refusal is one non-empty line */
        return 0;
    }
    srv_request *r = srv_request_new();
    for (int i = 0; i < p.n_stop; i++) {
        r->stop[i] = p.stop[i];
        p.stop[i] = NULL;
    }
    r->n_stop = p.n_stop;
    const size_t n = strlen(p.prompt);
    /* logprobs asked: an entry per piece fed, as the engine appends one per token */
    if ((r->top_logprobs = p.top_logprobs) >= 0 && (!(r->lp = json_array()) || !(r->lp_end = malloc((n + 1) * sizeof *r->lp_end))))
        __builtin_trap();
    bool stopped = false;
    for (size_t at = 0, k = 1; at < n && !stopped; at += k, k = k % 7 + 1) {
        const size_t len = at + k <= n ? k : n - at;
        const size_t before = r->visible;
        if (r->lp) {
            json_t *tok = json_stringn(p.prompt + at, len);
            r->lp_end[json_array_size(r->lp)] = r->text.n + len;
            json_array_append_new(r->lp, json_pack("{s:o,s:f,s:[],s:[]}", "token", tok ? tok : json_string("?"), "logprob", -1.0,
                                                   "bytes", "top_logprobs"));
        }
        stopped = srv_request_append(r, p.prompt + at, len);
        if (r->visible < before || r->visible > r->text.n) __builtin_trap(); /* sent text is never taken back */
    }
    if (!stopped) srv_request_finish(r, SRV_LENGTH, NULL);
    if (r->visible != r->text.n || r->text.n > n || (r->text.n && memcmp(r->text.s, p.prompt, r->text.n)))
        __builtin_trap(); /* the text is a prefix of what was fed */
    for (int i = 0; i < r->n_stop; i++)
        if (r->text.n && memmem(r->text.s, r->text.n, r->stop[i], strlen(r->stop[i]))) __builtin_trap();
    char *body = srv_json_response(r, chat, "cmpl-0", 0, "m");
    char *chunk = srv_json_chunk(chat, "cmpl-0", 0, "m", r->text.s, r->text.n, NULL, false,
                                 r->lp ? srv_json_logprobs(r, chat, 0, (int32_t)json_array_size(r->lp)) : NULL);
    if (!body || !chunk) __builtin_trap(); /* text that is not UTF-8 becomes U+FFFD, never a missing body */
    free(body);
    free(chunk);
    srv_request_unref(r);
    srv_params_free(&p);
    return 0;
}
