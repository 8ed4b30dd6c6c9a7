/* mopt serve's parts without the network: stop strings and UTF-8 hold-back
 * in a request's text, the A/B router's split and stickiness, request
 * checking, the Prometheus text, and the engine's continuous batching, whose
 * requests must each get exactly the greedy text of their sequence run alone. */
#include <jansson.h>
#include <math.h>
#include <sys/socket.h>
#include <unistd.h>

#include "jinja.h"
#include "serve.h"
#include "testutil.h"

static srv_request *with_stops(const char *a, const char *b) {
    srv_request *r = srv_request_new();
    assert_non_null(r);
    if (a) r->stop[r->n_stop++] = strdup(a);
    if (b) r->stop[r->n_stop++] = strdup(b);
    return r;
}

static void test_a_stop_string_is_cut_even_across_pieces_and_held_back_while_partial(void **state) {
    (void)state;
    srv_request *r = with_stops("\n\nEND", "xyz");
    assert_false(srv_request_append(r, "Hello", 5));
    assert_int_equal(r->visible, 5);
    assert_false(srv_request_append(r, " world\n", 7)); /* "\n" may begin the stop string: held back */
    assert_int_equal(r->visible, 11);
    assert_false(srv_request_append(r, "\nE", 2));
    assert_int_equal(r->visible, 11);
    assert_true(srv_request_append(r, "ND and more", 11)); /* the stop string completes: cut, finished */
    assert_int_equal(r->finish, SRV_STOP);
    assert_string_equal(r->text.s, "Hello world");
    assert_int_equal(r->visible, 11);
    srv_request_unref(r);
    /* the earliest stop string wins, whatever its place in the list (found by fuzzing) */
    r = with_stops("e", "t");
    assert_false(srv_request_append(r, "Sys", 3));
    assert_true(srv_request_append(r, "tem", 3));
    assert_string_equal(r->text.s, "Sys");
    srv_request_unref(r);
    /* a partial match that turns out not to be one is released */
    r = with_stops("xyz", NULL);
    assert_false(srv_request_append(r, "abxy", 4));
    assert_int_equal(r->visible, 2);
    assert_false(srv_request_append(r, "w", 1));
    assert_int_equal(r->visible, 5);
    srv_request_finish(r, SRV_LENGTH, NULL);
    assert_string_equal(r->text.s, "abxyw");
    srv_request_unref(r);
}

static void test_an_unfinished_utf8_character_is_held_back_and_dropped_at_the_end(void **state) {
    (void)state;
    srv_request *r = with_stops(NULL, NULL);
    assert_false(srv_request_append(r, "caf\xC3", 4)); /* first byte of é */
    assert_int_equal(r->visible, 3);
    assert_false(srv_request_append(r, "\xA9 \xE2\x82", 4)); /* é, a space, 2 of the 3 bytes of € */
    assert_int_equal(r->visible, 6);
    srv_request_finish(r, SRV_LENGTH, NULL); /* the half € never becomes text */
    assert_string_equal(r->text.s, "caf\xC3\xA9 ");
    assert_int_equal(r->visible, 6);
    srv_request_unref(r);
}

/* A waiting whole answer's client: gone once the peer closed its socket (what the engine drops), not while it is
 * open, idle or with bytes of a next request pending, nor without a socket; cancelled is gone either way. */
static void test_a_request_is_gone_when_its_waiting_client_closed_the_socket(void **state) {
    (void)state;
    srv_request *r = srv_request_new();
    assert_non_null(r);
    assert_false(srv_request_gone(r)); /* no socket */
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    r->peer_fd = sv[0];
    assert_false(srv_request_gone(r)); /* open, idle */
    assert_int_equal(write(sv[1], "GET", 3), 3);
    assert_false(srv_request_gone(r)); /* a pipelined request pending: the peek leaves it */
    char b[3];
    assert_int_equal(read(sv[0], b, 3), 3);
    close(sv[1]);
    assert_true(srv_request_gone(r)); /* the peer closed */
    r->peer_fd = -1;
    assert_false(srv_request_gone(r));
    r->cancelled = true;
    assert_true(srv_request_gone(r));
    close(sv[0]);
    srv_request_unref(r);
}

static void test_the_router_sends_the_split_and_keeps_keys_on_one_arm(void **state) {
    (void)state;
    srv_router rt;
    srv_router_init(&rt, 0.3, 42);
    int cand = 0;
    for (int i = 0; i < 1000; i++) cand += srv_router_pick(&rt, NULL) == SRV_CANDIDATE;
    assert_in_range(cand, 270, 330); /* 30% +- 3% */
    int keyed = 0;
    char key[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(key, sizeof key, "user-%d", i);
        const int arm = srv_router_pick(&rt, key);
        keyed += arm == SRV_CANDIDATE;
        for (int k = 0; k < 3; k++) assert_int_equal(srv_router_pick(&rt, key), arm); /* sticky */
    }
    assert_in_range(keyed, 250, 350);
    srv_router_set_split(&rt, 0);
    for (int i = 0; i < 100; i++) assert_int_equal(srv_router_pick(&rt, i % 2 ? "k" : NULL), SRV_BASELINE);
    srv_router_set_split(&rt, 1);
    for (int i = 0; i < 100; i++) assert_int_equal(srv_router_pick(&rt, i % 2 ? "k" : NULL), SRV_CANDIDATE);
    pthread_mutex_destroy(&rt.mu);
}

static void refused(bool chat, const char *body, const char *expect) {
    srv_params p;
    char msg[512];
    if (srv_parse_request(body, strlen(body), chat, &p, msg, sizeof msg)) {
        fprintf(stderr, "accepted: %s\n", body);
        fail();
    }
    if (!strstr(msg, expect)) {
        fprintf(stderr, "message \"%s\" lacks \"%s\"\n", msg, expect);
        fail();
    }
    assert_null(strchr(msg, '\n')); /* one line, whatever bytes the body held */
}

static void test_requests_are_checked_field_by_field(void **state) {
    (void)state;
    refused(false, "{\"prompt\": \"a\",", "invalid JSON at line 1");
    refused(false, "[1, 2]", "JSON object");
    refused(false, "{\"prompt\": \"a\\\n\n\"}", "invalid JSON"); /* a raw line feed after a backslash (found by fuzzing) */
    refused(false, "{\"max_tokens\": 3}", "'prompt' must be a string");
    refused(false, "{\"prompt\": 7}", "'prompt' must be a string");
    refused(false, "{\"prompt\": \"a\", \"max_tokens\": \"ten\"}", "'max_tokens' must be a positive integer");
    refused(false, "{\"prompt\": \"a\", \"max_tokens\": 0}", "'max_tokens' must be a positive integer");
    refused(false, "{\"prompt\": \"a\", \"temperature\": 3}", "'temperature' must be between 0 and 2");
    refused(false, "{\"prompt\": \"a\", \"temperature\": \"hot\"}", "'temperature' must be a number");
    refused(false, "{\"prompt\": \"a\", \"top_p\": 0}", "'top_p' must be in (0, 1]");
    refused(false, "{\"prompt\": \"a\", \"presence_penalty\": 2.5}", "'presence_penalty' must be between -2 and 2");
    refused(false, "{\"prompt\": \"a\", \"logprobs\": 21}", "'logprobs' must be an integer from 0 to 20");
    refused(false, "{\"prompt\": \"a\", \"logprobs\": true}", "'logprobs' must be an integer");
    refused(true, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}], \"logprobs\": 3}", "'logprobs' must be true or false");
    refused(true, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}], \"top_logprobs\": 2}", "needs 'logprobs': true");
    refused(true, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}], \"logprobs\": true, \"top_logprobs\": -1}",
            "'top_logprobs' must be an integer from 0 to 20");
    refused(false, "{\"prompt\": \"a\", \"frequency_penalty\": \"high\"}", "'frequency_penalty' must be a number");
    refused(false, "{\"prompt\": \"a\", \"seed\": 1.5}", "'seed' must be an integer");
    refused(false, "{\"prompt\": \"a\", \"stop\": [\"a\", 3]}", "'stop' must be a string or an array");
    refused(false, "{\"prompt\": \"a\", \"stop\": [\"a\",\"b\",\"c\",\"d\",\"e\"]}", "at most 4");
    refused(false, "{\"prompt\": \"a\", \"stop\": \"\"}", "1 to 256 bytes");
    refused(false, "{\"prompt\": \"a\", \"stream\": \"yes\"}", "'stream' must be true or false");
    refused(false, "{\"prompt\": \"a\", \"n\": 2}", "'n' must be 1");
    refused(false, "{\"prompt\": \"a\", \"stream_options\": {\"include_usage\": true}}", "only allowed when 'stream' is true");
    refused(false, "{\"prompt\": \"a\", \"stream\": true, \"stream_options\": {\"include_usage\": 1}}", "boolean 'include_usage'");
    refused(false, "{\"prompt\": \"a\", \"stream\": true, \"stream_options\": true}", "'stream_options' must be an object");
    refused(false, "{\"prompt\": \"a\", \"prompt\": \"b\"}", "duplicate");
    refused(true, "{\"messages\": []}", "'messages' must be a non-empty array");
    refused(true, "{\"messages\": [{\"role\": \"robot\", \"content\": \"hi\"}]}", "messages[0].role");
    refused(true, "{\"messages\": [{\"role\": \"user\", \"content\": 5}]}", "messages[0].content must be a string");
    refused(true, "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"a\"}, {\"type\": \"image_url\", "
                  "\"image_url\": {\"url\": \"http://x/y.png\"}}]}]}",
            "messages[0].content[1] must be a {\"type\": \"text\"");
    refused(true, "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\"}]}]}", "messages[0].content[0] must be");
    refused(true, "{\"messages\": [{\"role\": \"user\", \"content\": [\"a\"]}]}", "messages[0].content[0] must be");
    srv_params p;
    char msg[256];
    const char *ok = "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": \"Hi\"}],"
                     " \"max_tokens\": 9, \"temperature\": 0, \"stop\": \"\\n\", \"seed\": 7, \"stream\": true, \"extra\": {}}";
    assert_true(srv_parse_request(ok, strlen(ok), true, &p, msg, sizeof msg));
    assert_string_equal(p.prompt, "System: Be brief.\nUser: Hi\nAssistant:");
    assert_int_equal(p.max_tokens, 9);
    assert_true(p.stream && p.has_seed && p.seed == 7 && p.n_stop == 1 && p.temperature == 0 && !p.stream_usage);
    srv_params_free(&p);
    const char *usage = "{\"prompt\": \"a\", \"stream\": true, \"stream_options\": {\"include_usage\": true}}";
    assert_true(srv_parse_request(usage, strlen(usage), false, &p, msg, sizeof msg));
    assert_true(p.stream && p.stream_usage && p.top_logprobs == -1);
    srv_params_free(&p);
    const char *lp = "{\"prompt\": \"a\", \"logprobs\": 0}";
    assert_true(srv_parse_request(lp, strlen(lp), false, &p, msg, sizeof msg));
    assert_int_equal(p.top_logprobs, 0);
    srv_params_free(&p);
    const char *chat_lp = "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}], \"logprobs\": true, \"top_logprobs\": 20}";
    assert_true(srv_parse_request(chat_lp, strlen(chat_lp), true, &p, msg, sizeof msg));
    assert_int_equal(p.top_logprobs, 20);
    srv_params_free(&p);
    /* content as OpenAI's array of parts: the text parts joined by a line feed, for the template as for the plain format */
    const char *parts = "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"Hi\"}, "
                        "{\"type\": \"text\", \"text\": \"th\\u00e9re\"}]}, {\"role\": \"assistant\", \"content\": []}]}";
    assert_true(srv_parse_request(parts, strlen(parts), true, &p, msg, sizeof msg));
    assert_string_equal(p.prompt, "User: Hi\nth\xc3\xa9re\nAssistant: \nAssistant:");
    assert_string_equal(json_string_value(json_object_get(json_array_get(p.messages, 0), "content")), "Hi\nth\xc3\xa9re");
    srv_params_free(&p);
    /* "developer", OpenAI's newer name for the system message, is the system message */
    const char *dev = "{\"messages\": [{\"role\": \"developer\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": \"Hi\"}]}";
    assert_true(srv_parse_request(dev, strlen(dev), true, &p, msg, sizeof msg));
    assert_string_equal(p.prompt, "System: Be brief.\nUser: Hi\nAssistant:");
    assert_string_equal(json_string_value(json_object_get(json_array_get(p.messages, 0), "role")), "system");
    srv_params_free(&p);
}

/* OpenAI's formula, mu[t] - c[t] * frequency - (c[t] > 0) * presence, over the generated tokens only; the
 * figures are chosen to be exact in float, so the expected values are the formula's own. */
static void test_penalties_take_each_generated_tokens_count_times_frequency_and_presence_once(void **state) {
    (void)state;
    const float logits[5] = {1, 2, 3, 4, 5};
    const int32_t gen[] = {3, 1, 3, 3, 7, -1}; /* 7 and -1: not tokens of this vocabulary, skipped */
    uint32_t counts[5] = {0};
    float out[5];
    srv_penalize(logits, 5, gen, 6, 0.5f, 0.25f, counts, out);
    const float want[5] = {1, 2 - 0.25f - 0.5f, 3, 4 - 3 * 0.25f - 0.5f, 5};
    for (int i = 0; i < 5; i++) assert_true(out[i] == want[i]);
    for (int i = 0; i < 5; i++) assert_int_equal(counts[i], 0); /* left as found, for the next row */
    srv_penalize(logits, 5, gen, 2, -1.0f, 0, counts, out);    /* negative: the tokens are favoured */
    assert_true(out[1] == 3 && out[3] == 5 && out[0] == 1 && out[4] == 5);
    srv_penalize(logits, 5, gen, 0, 2, 2, counts, out);         /* nothing generated yet: the logits as they are */
    for (int i = 0; i < 5; i++) assert_true(out[i] == logits[i]);
}

static void test_metrics_are_prometheus_text_with_cumulative_buckets(void **state) {
    (void)state;
    srv_metrics m;
    srv_metrics_init(&m);
    srv_hist_add(&m.arm[0].latency, 0.003);
    srv_hist_add(&m.arm[0].latency, 0.2);
    srv_hist_add(&m.arm[0].latency, 1e6);
    m.arm[0].requests_ok = 3;
    srv_metrics_error(&m, SRV_ERR_TOO_LARGE);
    sbuf b = {0};
    const char *names[SRV_ARMS] = {"base", NULL};
    srv_metrics_render(&m, names, &b);
    assert_non_null(strstr(b.s, "# TYPE mopt_request_duration_seconds histogram\n"));
    assert_non_null(strstr(b.s, "mopt_request_duration_seconds_bucket{arm=\"base\",le=\"0.005\"} 1\n"));
    assert_non_null(strstr(b.s, "mopt_request_duration_seconds_bucket{arm=\"base\",le=\"0.25\"} 2\n"));
    assert_non_null(strstr(b.s, "mopt_request_duration_seconds_bucket{arm=\"base\",le=\"300\"} 2\n"));
    assert_non_null(strstr(b.s, "mopt_request_duration_seconds_bucket{arm=\"base\",le=\"+Inf\"} 3\n"));
    assert_non_null(strstr(b.s, "mopt_request_duration_seconds_count{arm=\"base\"} 3\n"));
    assert_non_null(strstr(b.s, "mopt_requests_total{arm=\"base\",outcome=\"ok\"} 3\n"));
    assert_non_null(strstr(b.s, "mopt_errors_total{kind=\"too_large\"} 1\n"));
    for (const char *a = strstr(b.s, "arm=\""); a; a = strstr(a + 1, "arm=\"")) /* no second arm, no lines for it */
        assert_memory_equal(a, "arm=\"base\"", 10);
    for (char *line = b.s; *line; line = strchr(line, '\n') + 1) /* every sample line: name{labels} value */
        if (*line != '#') assert_non_null(memchr(line, ' ', (size_t)(strchr(line, '\n') - line)));
    free(b.s);
    srv_metrics_free(&m);
}

/* Greedy continuation of ids by one sequence alone, token by token after the prompt. */
/* The greedy continuation of ids computed alone; with OpenAI's penalties, each step's logits less count x
 * frequency and presence for every token generated before it. */
static void alone(mopt_model *m, const int32_t *ids, int32_t n, int32_t gen, float presence, float frequency, int32_t *out) {
    mopt_session *s = mopt_session_new(mopt_model_graph(m), NULL, NULL);
    assert_non_null(s);
    const float *logits;
    const int32_t V = mopt_session_vocab_size(s);
    float *pen = malloc((size_t)V * sizeof *pen);
    assert_non_null(pen);
    assert_int_equal(mopt_session_forward(s, ids, n, false, &logits, NULL), MOPT_OK);
    for (int32_t i = 0; i < gen; i++) {
        memcpy(pen, logits, (size_t)V * sizeof *pen);
        for (int32_t t = 0; t < V; t++) {
            int32_t c = 0;
            for (int32_t k = 0; k < i; k++) c += out[k] == t;
            if (c) pen[t] = logits[t] - (float)c * frequency - presence;
        }
        out[i] = mopt_argmax(pen, V);
        if (i + 1 < gen) assert_int_equal(mopt_session_forward(s, &out[i], 1, false, &logits, NULL), MOPT_OK);
    }
    free(pen);
    mopt_session_free(s);
}

static void wait_done(srv_request *r) {
    pthread_mutex_lock(&r->mu);
    while (r->finish == SRV_RUNNING) pthread_cond_wait(&r->cv, &r->mu);
    pthread_mutex_unlock(&r->mu);
}

/* Four requests share an engine of three sequence slots and batches of 7
 * tokens: prompts are fed in chunks beside other sequences' decode steps, the
 * fourth waits for a free slot. Every batch stays under 8 rows, where the
 * kernels give each row the bits it would get alone, so each text must equal
 * its greedy continuation computed alone, token for token. */
static void test_the_engine_batches_requests_and_each_gets_its_own_greedy_text(void **state) {
    (void)state;
    REQUIRE_SHARED();
    mopt_model *m = test_load_model("models/lit-llama-7m");
    const mopt_tokenizer *tok = mopt_model_tokenizer(m);
    srv_metrics met;
    srv_metrics_init(&met);
    srv_engine_opts o = {3, 128, 7, 8, 2, 0};
    mopt_error err = {0};
    srv_engine *e = srv_engine_new(m, SRV_BASELINE, &o, &met, NULL, &err);
    assert_non_null(e);
    const char *prompts[4] = {"ROMEO:", "KING HENRY:\nWhat", "First Citizen:", "JULIET:\nO"};
    const int32_t gen = 24;
    srv_request *r[4];
    for (int i = 0; i < 4; i++) {
        r[i] = srv_request_new();
        size_t n = 0;
        assert_int_equal(mopt_tokenizer_encode(tok, prompts[i], strlen(prompts[i]), MOPT_TOK_ADD_SPECIAL, &r[i]->prompt, &n, NULL),
                         MOPT_OK);
        assert_true(n < 8);
        r[i]->n_prompt = (int32_t)n;
        r[i]->max_tokens = gen;
        r[i]->temperature = 0;
        if (i == 2) r[i]->presence_penalty = 0.5f, r[i]->frequency_penalty = 0.75f; /* one with penalties among them */
        assert_int_equal(srv_engine_submit(e, r[i]), SRV_QUEUED);
    }
    for (int i = 0; i < 4; i++) {
        wait_done(r[i]);
        int32_t want[24], *ids = malloc((size_t)(r[i]->n_prompt + gen) * sizeof *ids);
        alone(m, r[i]->prompt, r[i]->n_prompt, gen, r[i]->presence_penalty, r[i]->frequency_penalty, want);
        if (i == 2) { /* the penalties must matter here, or the check above would not see them */
            int32_t plain[24];
            alone(m, r[i]->prompt, r[i]->n_prompt, gen, 0, 0, plain);
            assert_true(memcmp(plain, want, sizeof want) != 0);
        }
        memcpy(ids, r[i]->prompt, (size_t)r[i]->n_prompt * sizeof *ids);
        memcpy(ids + r[i]->n_prompt, want, sizeof want);
        int32_t n_want = gen;
        for (int32_t k = 0; k < gen; k++)
            if (want[k] == mopt_model_arch(m)->eos_id) n_want = k;
        char *full = NULL, *head = NULL;
        size_t fn = 0, hn = 0; /* the prompt's text, then what the tokens add to it */
        assert_int_equal(mopt_tokenizer_decode(tok, ids, (size_t)(r[i]->n_prompt + n_want), 0, &full, &fn, NULL), MOPT_OK);
        assert_int_equal(mopt_tokenizer_decode(tok, ids, (size_t)r[i]->n_prompt, 0, &head, &hn, NULL), MOPT_OK);
        assert_true(fn >= hn && !memcmp(full, head, hn));
        if (strcmp(r[i]->text.s ? r[i]->text.s : "", full + hn)) {
            fprintf(stderr, "request %d: batched \"%s\", alone \"%s\"\n", i, r[i]->text.s, full + hn);
            fail();
        }
        free(full);
        free(head);
        assert_int_equal(r[i]->n_generated, n_want);
        free(ids);
    }
    pthread_mutex_lock(&met.mu);
    assert_int_equal(met.arm[0].requests_ok, 4);
    assert_true(met.arm[0].batch_seqs.sum > met.arm[0].batch_seqs.n); /* some steps carried several sequences */
    assert_true(met.arm[0].batch_tokens.sum <= 7.0 * (double)met.arm[0].batch_tokens.n);
    pthread_mutex_unlock(&met.mu);
    for (int i = 0; i < 4; i++) srv_request_unref(r[i]);
    srv_engine_free(e);
    srv_metrics_free(&met);
    mopt_model_free(m);
}

/* A full queue refuses; stopping fails what is queued and running, with a reason, and refuses later requests. */
static void test_a_full_queue_refuses_and_a_stopped_engine_fails_its_requests(void **state) {
    (void)state;
    REQUIRE_SHARED();
    mopt_model *m = test_load_model("models/lit-llama-7m");
    srv_metrics met;
    srv_metrics_init(&met);
    srv_engine_opts o = {1, 512, 16, 2, 1, 0};
    srv_engine *e = srv_engine_new(m, SRV_BASELINE, &o, &met, NULL, NULL);
    assert_non_null(e);
    srv_request *r[6];
    int queued = 0, full = 0;
    for (int i = 0; i < 6; i++) {
        r[i] = srv_request_new();
        r[i]->prompt = malloc(sizeof(int32_t));
        r[i]->prompt[0] = 1;
        r[i]->n_prompt = 1;
        r[i]->max_tokens = 400; /* long enough to still run when the engine stops */
        r[i]->temperature = 1.0f;
        r[i]->top_p = 1.0f;
        const srv_submit st = srv_engine_submit(e, r[i]);
        queued += st == SRV_QUEUED;
        full += st == SRV_QUEUE_FULL;
    }
    assert_true(full >= 1); /* one running and two waiting at most */
    assert_true(queued <= 3);
    srv_engine_stop(e);
    for (int i = 0; i < 6; i++) {
        pthread_mutex_lock(&r[i]->mu);
        if (r[i]->finish == SRV_FAILED) assert_non_null(strstr(r[i]->error, "stopping"));
        pthread_mutex_unlock(&r[i]->mu);
    }
    srv_request *late = srv_request_new();
    assert_int_equal(srv_engine_submit(e, late), SRV_STOPPING);
    srv_request_unref(late);
    for (int i = 0; i < 6; i++) srv_request_unref(r[i]);
    srv_engine_free(e);
    srv_metrics_free(&met);
    mopt_model_free(m);
}

/* The KV budget decides how many sequences run together: 2.5 caches' worth
 * gives two slots, less than one is refused with what to change. */
static void test_the_kv_budget_caps_the_sequences_and_refuses_a_budget_below_one(void **state) {
    (void)state;
    REQUIRE_SHARED();
    mopt_model *m = test_load_model("models/lit-llama-7m");
    srv_metrics met;
    srv_metrics_init(&met);
    const int64_t per_seq = mopt_graph_kv_bytes_per_token(mopt_model_graph(m)) * 128;
    assert_true(per_seq > 0);
    srv_engine_opts o = {5, 128, 16, 4, 1, per_seq * 5 / 2};
    srv_engine *e = srv_engine_new(m, SRV_BASELINE, &o, &met, NULL, NULL);
    assert_non_null(e);
    assert_int_equal(srv_engine_slots(e), 2);
    assert_int_equal(met.arm[0].kv_bytes, 2 * per_seq);
    srv_engine_free(e);
    o.kv_budget = per_seq - 1;
    mopt_error err = {0};
    assert_null(srv_engine_new(m, SRV_BASELINE, &o, &met, NULL, &err));
    CHECK_ERR(err, MOPT_E_INVALID, "raise --kv-memory or lower --ctx");
    srv_metrics_free(&met);
    mopt_model_free(m);
}

/* ---- chat templates ------------------------------------------------------ */

/* Every template and conversation of tests/fixtures/chat_templates.json
 * renders to the text jinja2 rendered (make_chat_templates.py), byte for
 * byte, or fails with the message the template raised. */
static void test_chat_templates_render_what_jinja2_renders(void **state) {
    (void)state;
    json_error_t je;
    json_t *fx = json_load_file(MOPT_SOURCE_DIR "/tests/fixtures/chat_templates.json", 0, &je);
    assert_non_null(fx);
    json_t *templates = json_object_get(fx, "templates"), *cases = json_object_get(fx, "cases");
    assert_true(json_array_size(cases) >= 60);
    size_t i, same = 0, raised = 0;
    json_t *c;
    json_array_foreach(cases, i, c) {
        const char *name = json_string_value(json_object_get(c, "template"));
        json_t *src = json_object_get(templates, name);
        char msg[512] = "";
        jinja_template *t = jinja_parse(json_string_value(src), json_string_length(src), msg, sizeof msg);
        if (!t) fprintf(stderr, "%s: %s\n", name, msg);
        assert_non_null(t);
        char *out = jinja_render(t, json_object_get(c, "variables"), msg, sizeof msg);
        json_t *want = json_object_get(c, "expected"), *error = json_object_get(c, "error");
        if (want) {
            if (!out || strcmp(out, json_string_value(want)))
                fprintf(stderr, "%s / %s:\n--- jinja2\n%s\n--- mopt\n%s\n", name,
                        json_string_value(json_object_get(c, "conversation")), json_string_value(want), out ? out : msg);
            assert_non_null(out);
            assert_string_equal(out, json_string_value(want));
            same++;
        } else {
            assert_null(out);
            if (!strstr(msg, json_string_value(error))) fprintf(stderr, "%s: '%s' lacks '%s'\n", name, msg, json_string_value(error));
            assert_non_null(strstr(msg, json_string_value(error)));
            assert_null(strchr(msg, '\n'));
            raised++;
        }
        free(out);
        jinja_free(t);
    }
    printf("%zu renderings equal jinja2's, %zu raised its message\n", same, raised);
    assert_true(raised >= 5);
    /* one construct at a time: whitespace control, scoping, operators, filters, tests */
    json_t *vars = json_object_get(fx, "snippet_variables"), *snippets = json_object_get(fx, "snippets");
    assert_true(json_array_size(snippets) >= 60);
    size_t failed = 0;
    json_array_foreach(snippets, i, c) {
        json_t *src = json_object_get(c, "template"), *want = json_object_get(c, "expected");
        char msg[512] = "";
        jinja_template *t = jinja_parse(json_string_value(src), json_string_length(src), msg, sizeof msg);
        char *out = t ? jinja_render(t, vars, msg, sizeof msg) : NULL;
        if (want ? !out || strcmp(out, json_string_value(want)) : out != NULL) {
            fprintf(stderr, "snippet %s\n--- jinja2\n%s\n--- mopt\n%s\n", json_string_value(src),
                    want ? json_string_value(want) : "(an error)", out ? out : msg);
            failed++;
        }
        free(out);
        jinja_free(t);
    }
    printf("%zu snippets: %zu differ from jinja2\n", json_array_size(snippets), failed);
    assert_int_equal(failed, 0);
    json_decref(fx);
}

/* A template that is wrong, or that runs away, gets a one-line message
 * naming the line, never a crash or a hang: templates come from checkpoints. */
static void test_bad_or_runaway_templates_fail_with_the_line(void **state) {
    (void)state;
    static const struct {
        const char *src, *want;
    } bad[] = {
        {"{{ messages", "line 1: a tag is not closed"},
        {"a\n{% if x %}b", "line 2: the template ended inside a block (missing '{% endif %}')"},
        {"{% for %}", "expected one or two loop variable names"},
        {"{% call m() %}{% endcall %}", "'call' is not a statement"},
        {"{% macro m(a, a) %}{% endmacro %}", "names a parameter twice"},
        {"{% macro m(a.b) %}{% endmacro %}", "parameters must be names"},
        {"{% for i in x %}{% macro m() %}{% break %}{% endmacro %}{% endfor %}", "'break' outside a loop"},
        {"{% macro m() %}", "missing '{% endmacro %}'"},
        {"x\n\n{{ 'abc }}", "line 3: a string is not closed"},
        {"{# open", "a comment is not closed"},
        {"{{ a $ b }}", "unexpected character '$'"},
        {"{{ 99999999999999999999 }}", "does not fit in 64 bits"},
        {"{% break %}", "'break' outside a loop"},
        {"{{ [1, 2 3] }}", "expected ','"},
        {"{{ [1, 2 }}", "a tag is not closed"},
        {"{% endfor %}", "'endfor' is not a statement"},
    };
    char msg[512];
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        msg[0] = 0;
        jinja_template *t = jinja_parse(bad[i].src, strlen(bad[i].src), msg, sizeof msg);
        if (t || !strstr(msg, bad[i].want)) fprintf(stderr, "%s: '%s' lacks '%s'\n", bad[i].src, msg, bad[i].want);
        assert_null(t);
        assert_non_null(strstr(msg, bad[i].want));
    }
    /* nesting beyond the limit is refused, not a stack overflow */
    char deep[4096];
    size_t k = (size_t)snprintf(deep, sizeof deep, "{{ ");
    for (int i = 0; i < 1000; i++) deep[k++] = '(';
    deep[k++] = '1';
    for (int i = 0; i < 1000; i++) deep[k++] = ')';
    strcpy(deep + k, " }}");
    assert_null(jinja_parse(deep, strlen(deep), msg, sizeof msg));
    assert_non_null(strstr(msg, "nested too deeply"));
    /* errors at render time */
    static const struct {
        const char *src, *want;
    } fail[] = {
        {"{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "ran for too long"},
        {"{{ range(10000000) }}", "range of more than"},
        {"{{ x.y }}", "'y' of an undefined value"},
        {"{{ 1 + 'a' }}", "unsupported operand types for +: 'int' and 'str'"},
        {"{{ 'abc'['b'] }}", "str indices must be integers"},
        {"{{ 1 // 0 }}", "division by zero"},
        {"{% set m = {} %}{% set m.x = 1 %}", "'m' is not a namespace()"},
        {"{% set a = namespace() %}{% set b = namespace(a=a) %}{% set a.b = [b] %}", "would make the namespace hold itself"},
        {"x\n{{ raise_exception('no\nway') }}", "line 2: no way"},
        {"{{ messages | bogus }}", "filter 'bogus'"},
        /* values that grow in a loop */
        {"{% set ns = namespace(s='x') %}{% for i in range(100) %}{% set ns.s = ns.s + ns.s %}{% endfor %}", "longer than 16 MiB"},
        {"{% set ns = namespace(s='x') %}{% for i in range(100) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", "longer than 16 MiB"},
        {"{% set ns = namespace(l=[]) %}{% for i in range(100) %}{% set ns.l = [ns.l] %}{% endfor %}", "nested too deeply"},
        {"{% set ns = namespace(l=[1]) %}{% for i in range(40) %}{% set ns.l = ns.l + ns.l %}{% endfor %}", "ran for too long"},
        {"{% set ns = namespace(l=['x' * 1]) %}", "unsupported operand types for *: 'str' and 'int'"},
        /* macros that never return, or whose calls multiply */
        {"{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", "macro calls nested too deeply"},
        {"{% macro m(n) %}{% if n %}{{ m(n - 1) }}{{ m(n - 1) }}{% endif %}{% endmacro %}{{ m(60) }}", "ran for too long"},
        {"{% for i in range(3) %}{% macro m() %}{% endmacro %}{% endfor %}{{ m() }}", "'m' is not a function"},
        /* 64-bit integers that would overflow (Python's would not) */
        {"{{ -3 - 9223372036854775807 - 1 }}", "integer overflow in -"},
        {"{{ 3037000500 * 3037000500 }}", "integer overflow in *"},
        {"{{ 2 ** 63 }}", "integer overflow in **"},
        {"{{ (-9223372036854775807 - 1) // -1 }}", "integer overflow in //"},
        {"{{ -(-9223372036854775807 - 1) }}", "integer overflow in -"},
        {"{{ range(0, 9223372036854775807, 9223372036854775807) | length }}{{ x.y }}", "'y' of an undefined value"},
    };
    json_t *vars = json_pack("{s[]}", "messages");
    for (size_t i = 0; i < sizeof fail / sizeof *fail; i++) {
        jinja_template *t = jinja_parse(fail[i].src, strlen(fail[i].src), msg, sizeof msg);
        assert_non_null(t);
        msg[0] = 0;
        char *out = jinja_render(t, vars, msg, sizeof msg);
        if (out || !strstr(msg, fail[i].want)) fprintf(stderr, "%s: '%s' lacks '%s'\n", fail[i].src, msg, fail[i].want);
        assert_null(out);
        assert_non_null(strstr(msg, fail[i].want));
        assert_null(strchr(msg, '\n'));
        jinja_free(t);
    }
    /* more macros than a rendering keeps */
    char many[4096];
    size_t n = 0;
    for (int i = 0; i < 65; i++) n += (size_t)snprintf(many + n, sizeof many - n, "{%% macro m%d() %%}{%% endmacro %%}", i);
    jinja_template *t = jinja_parse(many, n, msg, sizeof msg);
    assert_non_null(t);
    assert_null(jinja_render(t, vars, msg, sizeof msg));
    assert_non_null(strstr(msg, "more than 64 macros"));
    jinja_free(t);
    json_decref(vars);
}

/* The template renders with the special tokens of tokenizer_config.json,
 * strings or AddedToken objects; no template means the plain format; a
 * broken template or config is an error, not the plain format. */
static void test_the_chat_template_renders_with_the_configs_special_tokens(void **state) {
    (void)state;
    static const char cfg[] = "{\"bos_token\": {\"content\": \"<s>\", \"lstrip\": false}, \"eos_token\": \"</s>\","
                              " \"model_max_length\": 1000000000000000019884624838656}";
    static const char tmpl[] = "{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}{{ eos_token }}{% endfor %}"
                               "{% if add_generation_prompt %}[assistant]{% endif %}";
    char msg[512];
    bool none;
    srv_chat *c = srv_chat_new(cfg, strlen(cfg), tmpl, strlen(tmpl), &none, msg, sizeof msg);
    if (!c) fprintf(stderr, "%s\n", msg);
    assert_non_null(c);
    json_t *msgs = json_pack("[{ssss}{ssss}]", "role", "system", "content", "Be brief.", "role", "user", "content", "Hi");
    char *out = srv_chat_render(c, msgs, msg, sizeof msg);
    assert_string_equal(out, "<s>[system] Be brief.</s>[user] Hi</s>[assistant]");
    free(out);
    srv_chat_free(c);
    c = srv_chat_new(NULL, 0, "{{ bos_token }}{{ messages | length }}", 38, &none, msg, sizeof msg); /* no config: no tokens */
    assert_non_null(c);
    out = srv_chat_render(c, msgs, msg, sizeof msg);
    assert_string_equal(out, "2");
    free(out);
    srv_chat_free(c);
    assert_null(srv_chat_new(cfg, strlen(cfg), NULL, 0, &none, msg, sizeof msg));
    assert_true(none);
    assert_null(srv_chat_new(cfg, strlen(cfg), "{% if %}", 8, &none, msg, sizeof msg));
    assert_false(none);
    assert_non_null(strstr(msg, "chat template line 1"));
    assert_null(srv_chat_new("{\"chat", 6, tmpl, strlen(tmpl), &none, msg, sizeof msg));
    assert_false(none);
    assert_non_null(strstr(msg, "invalid JSON at line 1"));
    json_decref(msgs);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_stop_string_is_cut_even_across_pieces_and_held_back_while_partial),
        cmocka_unit_test(test_an_unfinished_utf8_character_is_held_back_and_dropped_at_the_end),
        cmocka_unit_test(test_a_request_is_gone_when_its_waiting_client_closed_the_socket),
        cmocka_unit_test(test_the_router_sends_the_split_and_keeps_keys_on_one_arm),
        cmocka_unit_test(test_requests_are_checked_field_by_field),
        cmocka_unit_test(test_metrics_are_prometheus_text_with_cumulative_buckets),
        cmocka_unit_test(test_the_engine_batches_requests_and_each_gets_its_own_greedy_text),
        cmocka_unit_test(test_a_full_queue_refuses_and_a_stopped_engine_fails_its_requests),
        cmocka_unit_test(test_the_kv_budget_caps_the_sequences_and_refuses_a_budget_below_one),
        cmocka_unit_test(test_penalties_take_each_generated_tokens_count_times_frequency_and_presence_once),
        cmocka_unit_test(test_chat_templates_render_what_jinja2_renders),
        cmocka_unit_test(test_bad_or_runaway_templates_fail_with_the_line),
        cmocka_unit_test(test_the_chat_template_renders_with_the_configs_special_tokens),
    };
    return test_run_tests(tests, NULL, NULL);
}
