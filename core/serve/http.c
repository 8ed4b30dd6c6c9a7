/* The HTTP side of mopt serve, on libmicrohttpd: epoll with a small thread
 * pool, connections suspended while their request waits for the engine and
 * resumed by the engine's notification, so a thousand idle clients cost no
 * threads. Every error is an OpenAI-style JSON body with the right status. */
#include <arpa/inet.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "serve.h"

struct srv_server {
    struct MHD_Daemon *d;
    srv_engine *eng[SRV_ARMS];
    const char *names[SRV_ARMS];
    srv_router *router;
    srv_metrics *met;
    srv_server_opts o;
    int port;
    atomic_bool draining;
    atomic_int in_flight; /* generation requests not yet answered */
    atomic_ullong next_id;
};

typedef struct conn_ctx {
    srv_server *srv;
    struct MHD_Connection *conn;
    sbuf body;
    bool too_large, routed, answered; /* answered: a response is queued */
    srv_request *r;
    srv_params p;
    int arm;
    char id[48];
    long long created;
    bool suspended; /* guarded by r->mu */
    /* a stream's state */
    sbuf out;
    size_t out_off, sent_text;
    int32_t sent_lp; /* logprobs entries sent */
    bool sent_role, sent_final, ended;
} conn_ctx;

/* ---- plain responses ---------------------------------------------------- */

static enum MHD_Result respond(struct MHD_Connection *c, unsigned status, const char *type, char *body, int arm,
                               const char *names[SRV_ARMS]) {
    if (!body) body = strdup("{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\"}}");
    struct MHD_Response *rs = MHD_create_response_from_buffer(body ? strlen(body) : 0, body, MHD_RESPMEM_MUST_FREE);
    if (!rs) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(rs, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (arm >= 0 && names) MHD_add_response_header(rs, "X-Mopt-Arm", arm == SRV_CANDIDATE ? "candidate" : "baseline");
    if (status == MHD_HTTP_TOO_MANY_REQUESTS || status == MHD_HTTP_SERVICE_UNAVAILABLE)
        MHD_add_response_header(rs, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    const enum MHD_Result res = MHD_queue_response(c, status, rs);
    MHD_destroy_response(rs);
    return res;
}

static enum MHD_Result error(srv_server *s, struct MHD_Connection *c, unsigned status, srv_error_kind kind,
                             const char *msg) {
    srv_metrics_error(s->met, kind);
    const char *type = status >= 500 || status == 429 ? "server_error" : "invalid_request_error";
    return respond(c, status, "application/json", srv_json_error(msg, type), -1, NULL);
}

static char *models_json(srv_server *s) {
    json_t *data = json_array();
    for (int a = 0; a < SRV_ARMS; a++)
        if (s->eng[a])
            json_array_append_new(data, json_pack("{s:s,s:s,s:I,s:s,s:s}", "id", s->names[a], "object", "model", "created",
                                                  (json_int_t)time(NULL), "owned_by", "mopt", "arm",
                                                  a == SRV_CANDIDATE ? "candidate" : "baseline"));
    json_t *j = json_pack("{s:s,s:o}", "object", "list", "data", data);
    char *out = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return out;
}

static bool loopback(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!ci || !ci->client_addr) return false;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(a6) ||
               (IN6_IS_ADDR_V4MAPPED(a6) && a6->s6_addr[12] == 127);
    }
    return false;
}

static enum MHD_Result admin_split(srv_server *s, conn_ctx *x) {
    if (!loopback(x->conn)) return error(s, x->conn, MHD_HTTP_FORBIDDEN, SRV_ERR_FORBIDDEN, "/admin is served to loopback clients only");
    json_error_t je;
    json_t *o = json_loadb(x->body.s ? x->body.s : "", x->body.n, 0, &je);
    json_t *v = json_object_get(o, "split");
    if (!json_is_number(v) || json_number_value(v) < 0 || json_number_value(v) > 1) {
        json_decref(o);
        return error(s, x->conn, MHD_HTTP_BAD_REQUEST, SRV_ERR_BAD_REQUEST, "expected {\"split\": a number in [0, 1]}");
    }
    const double split = json_number_value(v);
    json_decref(o);
    if (split > 0 && !s->eng[SRV_CANDIDATE])
        return error(s, x->conn, MHD_HTTP_BAD_REQUEST, SRV_ERR_BAD_REQUEST, "there is no candidate to split traffic to");
    srv_router_set_split(s->router, split);
    if (s->o.monitor) srv_monitor_reset(s->o.monitor);
    pthread_mutex_lock(&s->met->mu);
    s->met->split = split;
    pthread_mutex_unlock(&s->met->mu);
    srv_log(false, "split set to %g", split);
    char *body = NULL;
    if (asprintf(&body, "{\"split\":%.17g}", split) < 0) body = NULL;
    return respond(x->conn, MHD_HTTP_OK, "application/json", body, -1, NULL);
}

/* ---- generation ---------------------------------------------------------- */

/* The engine's notification: wake the connection if it sleeps (r->mu held). */
static void wake(void *user) {
    conn_ctx *x = user;
    if (!x->p.stream && x->r->finish == SRV_RUNNING) return; /* a whole answer waits for the end */
    x->r->peer_fd = -1; /* libmicrohttpd has the socket again */
    if (x->suspended) {
        x->suspended = false;
        MHD_resume_connection(x->conn);
    }
}

static enum MHD_Result final_response(srv_server *s, conn_ctx *x) {
    srv_request *r = x->r;
    if (r->finish == SRV_FAILED) {
        srv_metrics_error(s->met, SRV_ERR_INTERNAL);
        return respond(x->conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "application/json",
                       srv_json_error(r->error[0] ? r->error : "generation failed", "server_error"), x->arm, s->names);
    }
    return respond(x->conn, MHD_HTTP_OK, "application/json",
                   srv_json_response(r, x->p.chat, x->id, x->created, s->names[x->arm]), x->arm, s->names);
}

static void sse(conn_ctx *x, char *json) {
    if (json) sb_printf(&x->out, "data: %s\n\n", json);
    else sb_printf(&x->out, "data: {\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\"}}\n\n");
    free(json);
}

/* The logprobs of the tokens whose text ends by byte `upto` and were not sent yet (NULL: none asked); r->mu held. */
static json_t *chunk_logprobs(conn_ctx *x, size_t upto) {
    const srv_request *r = x->r;
    if (r->top_logprobs < 0) return NULL;
    int32_t k = x->sent_lp;
    while (r->lp && k < (int32_t)json_array_size(r->lp) && r->lp_end[k] <= upto) k++;
    if (k == x->sent_lp) return NULL; /* null, as OpenAI's chunks without tokens have */
    json_t *lp = srv_json_logprobs(r, x->p.chat, x->sent_lp, k);
    x->sent_lp = k;
    return lp;
}

/* libmicrohttpd pulls a stream's bytes from here; with nothing to send yet the
 * connection sleeps until the engine wakes it. */
static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    conn_ctx *x = cls;
    srv_server *s = x->srv;
    srv_request *r = x->r;
    (void)pos;
    if (x->out_off == x->out.n) {
        x->out.n = x->out_off = 0;
        if (x->ended) return MHD_CONTENT_READER_END_OF_STREAM;
        pthread_mutex_lock(&r->mu);
        if (x->p.chat && !x->sent_role) {
            sse(x, srv_json_chunk(true, x->id, x->created, s->names[x->arm], NULL, 0, NULL, true, NULL));
            x->sent_role = true;
        }
        if (r->visible > x->sent_text) {
            sse(x, srv_json_chunk(x->p.chat, x->id, x->created, s->names[x->arm], r->text.s + x->sent_text,
                                  r->visible - x->sent_text, NULL, false, chunk_logprobs(x, r->visible)));
            x->sent_text = r->visible;
        }
        if (r->finish != SRV_RUNNING && x->sent_text == r->visible && !x->sent_final) {
            if (r->finish == SRV_FAILED) {
                char *e = srv_json_error(r->error[0] ? r->error : "generation failed", "server_error");
                sse(x, e);
            } else {
                sse(x, srv_json_chunk(x->p.chat, x->id, x->created, s->names[x->arm], NULL, 0, srv_finish_name(r->finish), false,
                                      chunk_logprobs(x, SIZE_MAX))); /* the rest: tokens a stop string cut off too */
                if (x->p.stream_usage) sse(x, srv_json_usage_chunk(r, x->p.chat, x->id, x->created, s->names[x->arm]));
            }
            sb_printf(&x->out, "data: [DONE]\n\n");
            x->sent_final = x->ended = true;
        }
        if (x->out.n == 0) { /* nothing new: sleep until the engine appends or finishes */
            x->suspended = true;
            MHD_suspend_connection(x->conn);
            pthread_mutex_unlock(&r->mu);
            return 0;
        }
        pthread_mutex_unlock(&r->mu);
        if (x->out.oom) return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t n = x->out.n - x->out_off;
    if (n > max) n = max;
    memcpy(buf, x->out.s + x->out_off, n);
    x->out_off += n;
    return (ssize_t)n;
}

/* A whole (not streamed) answer: queued now if the request finished, else the
 * connection sleeps until the engine's last notification resumes it and
 * on_request comes back here. */
static enum MHD_Result answer_when_done(srv_server *s, conn_ctx *x) {
    pthread_mutex_lock(&x->r->mu);
    const bool done = x->r->finish != SRV_RUNNING;
    if (!done) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(x->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        x->r->peer_fd = ci ? ci->connect_fd : -1;
        x->suspended = true;
        MHD_suspend_connection(x->conn);
    }
    pthread_mutex_unlock(&x->r->mu);
    if (!done) return MHD_YES;
    x->answered = true;
    return final_response(s, x);
}

static enum MHD_Result start_generation(srv_server *s, conn_ctx *x, bool chat) {
    char msg[512];
    if (atomic_load(&s->draining))
        return error(s, x->conn, MHD_HTTP_SERVICE_UNAVAILABLE, SRV_ERR_UNAVAILABLE, "the server is shutting down");
    if (!srv_parse_request(x->body.s ? x->body.s : "", x->body.n, chat, &x->p, msg, sizeof msg))
        return error(s, x->conn, MHD_HTTP_BAD_REQUEST, SRV_ERR_BAD_REQUEST, msg);
    const char *key = MHD_lookup_connection_value(x->conn, MHD_HEADER_KIND, "X-Mopt-Route-Key");
    x->arm = s->eng[SRV_CANDIDATE] ? srv_router_pick(s->router, key && *key ? key : x->p.user) : SRV_BASELINE;
    srv_engine *e = s->eng[x->arm];
    srv_request *r = x->r = srv_request_new();
    if (!r) return error(s, x->conn, MHD_HTTP_INTERNAL_SERVER_ERROR, SRV_ERR_INTERNAL, "out of memory");
    const srv_chat *tmpl = chat ? s->o.chat[x->arm] : NULL;
    if (tmpl) { /* the arm's own template; it writes the special tokens itself, as apply_chat_template does */
        char *text = srv_chat_render(tmpl, x->p.messages, msg, sizeof msg);
        if (!text) return error(s, x->conn, MHD_HTTP_BAD_REQUEST, SRV_ERR_BAD_REQUEST, msg);
        free(x->p.prompt);
        x->p.prompt = text;
    }
    mopt_error err = {0};
    size_t n_ids = 0;
    if (mopt_tokenizer_encode(srv_engine_tokenizer(e), x->p.prompt, strlen(x->p.prompt), tmpl ? 0 : MOPT_TOK_ADD_SPECIAL,
                              &r->prompt, &n_ids, &err))
        return error(s, x->conn, MHD_HTTP_BAD_REQUEST, SRV_ERR_BAD_REQUEST, err.msg);
    const int32_t ctx = srv_engine_ctx(e);
    if (n_ids == 0)
        return error(s, x->conn, MHD_HTTP_BAD_REQUEST, SRV_ERR_BAD_REQUEST,
                     "the prompt is empty and the tokenizer adds no BOS token");
    if ((int64_t)n_ids >= ctx) {
        snprintf(msg, sizeof msg, "the prompt has %zu tokens; the context holds %d", n_ids, ctx);
        return error(s, x->conn, MHD_HTTP_BAD_REQUEST, SRV_ERR_BAD_REQUEST, msg);
    }
    r->n_prompt = (int32_t)n_ids;
    int32_t room = ctx - r->n_prompt;
    if (x->p.max_tokens > room) {
        snprintf(msg, sizeof msg, "max_tokens %d and the prompt's %d tokens exceed the context of %d tokens",
                 x->p.max_tokens, r->n_prompt, ctx);
        return error(s, x->conn, MHD_HTTP_BAD_REQUEST, SRV_ERR_BAD_REQUEST, msg);
    }
    r->max_tokens = x->p.max_tokens ? x->p.max_tokens : chat ? room : (room < 16 ? room : 16);
    r->temperature = (float)x->p.temperature;
    r->top_p = (float)x->p.top_p;
    r->presence_penalty = (float)x->p.presence_penalty;
    r->frequency_penalty = (float)x->p.frequency_penalty;
    if ((r->top_logprobs = x->p.top_logprobs) >= 0 &&
        (!(r->lp = json_array()) || !(r->lp_end = malloc((size_t)r->max_tokens * sizeof *r->lp_end))))
        return error(s, x->conn, MHD_HTTP_INTERNAL_SERVER_ERROR, SRV_ERR_INTERNAL, "out of memory");
    const unsigned long long id = atomic_fetch_add(&s->next_id, 1);
    r->seed = x->p.has_seed ? x->p.seed : (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ULL + id;
    for (int i = 0; i < x->p.n_stop; i++) {
        r->stop[i] = x->p.stop[i];
        x->p.stop[i] = NULL;
    }
    r->n_stop = x->p.n_stop;
    r->notify = wake;
    r->notify_user = x;
    snprintf(x->id, sizeof x->id, "%s-%llx", chat ? "chatcmpl" : "cmpl", id);
    x->created = (long long)time(NULL);
    pthread_mutex_lock(&s->met->mu);
    s->met->arm[x->arm].routed++;
    pthread_mutex_unlock(&s->met->mu);
    switch (srv_engine_submit(e, r)) {
    case SRV_QUEUE_FULL:
        return error(s, x->conn, MHD_HTTP_TOO_MANY_REQUESTS, SRV_ERR_OVERLOADED,
                     "the server is overloaded (its queue is full); retry later");
    case SRV_STOPPING:
        return error(s, x->conn, MHD_HTTP_SERVICE_UNAVAILABLE, SRV_ERR_UNAVAILABLE, "the server is shutting down");
    case SRV_QUEUED: break;
    }
    atomic_fetch_add(&s->in_flight, 1);
    if (s->o.shadow > 0 && s->eng[SRV_CANDIDATE] && srv_router_draw(s->router) < s->o.shadow) {
        const int32_t n = s->o.shadow_tokens < ctx - r->n_prompt ? s->o.shadow_tokens : ctx - r->n_prompt;
        srv_shadow_start(s->eng, r->prompt, r->n_prompt, n, s->o.monitor, s->met);
    }
    if (x->p.stream) {
        struct MHD_Response *rs = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_reader, x, NULL);
        if (!rs) return MHD_NO;
        MHD_add_response_header(rs, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
        MHD_add_response_header(rs, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
        MHD_add_response_header(rs, "X-Mopt-Arm", x->arm == SRV_CANDIDATE ? "candidate" : "baseline");
        const enum MHD_Result res = MHD_queue_response(x->conn, MHD_HTTP_OK, rs);
        MHD_destroy_response(rs);
        x->answered = true;
        return res;
    }
    return answer_when_done(s, x);
}

/* ---- dispatch ------------------------------------------------------------ */

static const char STATUS_PAGE[] =
#include "status_page.inc"
    ;

static enum MHD_Result route(srv_server *s, conn_ctx *x, const char *url, const char *method) {
    const bool get = !strcmp(method, "GET") || !strcmp(method, "HEAD"), post = !strcmp(method, "POST");
    struct MHD_Connection *c = x->conn;
    if (!strcmp(url, "/v1/completions") || !strcmp(url, "/v1/chat/completions")) {
        if (!post) return error(s, c, MHD_HTTP_METHOD_NOT_ALLOWED, SRV_ERR_METHOD, "use POST");
        if (x->too_large) {
            char msg[128];
            snprintf(msg, sizeof msg, "the request body exceeds %zu bytes", s->o.max_body);
            return error(s, c, MHD_HTTP_CONTENT_TOO_LARGE, SRV_ERR_TOO_LARGE, msg);
        }
        return start_generation(s, x, !strcmp(url, "/v1/chat/completions"));
    }
    if (!strcmp(url, "/admin/split")) {
        if (!post) return error(s, c, MHD_HTTP_METHOD_NOT_ALLOWED, SRV_ERR_METHOD, "use POST");
        return admin_split(s, x);
    }
    if (!get) return error(s, c, MHD_HTTP_METHOD_NOT_ALLOWED, SRV_ERR_METHOD, "use GET");
    if (!strcmp(url, "/health"))
        return atomic_load(&s->draining)
                   ? respond(c, MHD_HTTP_SERVICE_UNAVAILABLE, "application/json", strdup("{\"status\":\"draining\"}"), -1, NULL)
                   : respond(c, MHD_HTTP_OK, "application/json", strdup("{\"status\":\"ok\"}"), -1, NULL);
    if (!strcmp(url, "/v1/models")) return respond(c, MHD_HTTP_OK, "application/json", models_json(s), -1, NULL);
    if (!strcmp(url, "/metrics")) {
        sbuf b = {0};
        srv_metrics_render(s->met, s->names, &b);
        return respond(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", b.oom ? NULL : b.s, -1, NULL);
    }
    if (!strcmp(url, "/")) return respond(c, MHD_HTTP_OK, "text/html; charset=utf-8", strdup(STATUS_PAGE), -1, NULL);
    return error(s, c, MHD_HTTP_NOT_FOUND, SRV_ERR_NOT_FOUND, "no such endpoint");
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    srv_server *s = cls;
    conn_ctx *x = *con_cls;
    (void)version;
    if (!x) { /* headers are in; the body follows */
        x = calloc(1, sizeof *x);
        if (!x) return MHD_NO;
        x->srv = s;
        x->conn = c;
        x->arm = -1;
        *con_cls = x;
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > s->o.max_body) x->too_large = true;
        return MHD_YES;
    }
    if (*upload_size) {
        if (!x->too_large && x->body.n + *upload_size <= s->o.max_body) sb_put(&x->body, upload, *upload_size);
        else x->too_large = true;
        if (x->body.oom) x->too_large = true;
        *upload_size = 0;
        return MHD_YES;
    }
    if (x->r) /* resumed (a stream's response is already queued) */
        return x->answered ? MHD_YES : answer_when_done(s, x);
    if (x->routed) return MHD_YES;
    x->routed = true;
    return route(s, x, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode why) {
    srv_server *s = cls;
    conn_ctx *x = *con_cls;
    (void)c;
    (void)why;
    if (!x) return;
    if (x->r) {
        pthread_mutex_lock(&x->r->mu);
        x->r->notify = NULL;
        x->r->peer_fd = -1;
        x->r->cancelled = true; /* finished ones ignore it; running ones stop at the next step */
        pthread_mutex_unlock(&x->r->mu);
        srv_request_unref(x->r);
        atomic_fetch_sub(&s->in_flight, 1);
    }
    srv_params_free(&x->p);
    free(x->body.s);
    free(x->out.s);
    free(x);
    *con_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && line[n - 1] == '\n') line[--n] = 0;
    srv_log(true, "http: %s", line);
}

srv_server *srv_server_start(srv_engine *const eng[SRV_ARMS], const char *const names[SRV_ARMS], srv_router *router,
                             srv_metrics *metrics, const srv_server_opts *o, mopt_error *err) {
    srv_server *s = calloc(1, sizeof *s);
    if (!s) {
        mopt_error_set(err, MOPT_E_NOMEM, "serve", "out of memory");
        return NULL;
    }
    for (int a = 0; a < SRV_ARMS; a++) {
        s->eng[a] = eng[a];
        s->names[a] = eng[a] ? names[a] : NULL;
    }
    s->router = router;
    s->met = metrics;
    s->o = *o;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)o->port);
    const char *host = !strcmp(o->host, "localhost") ? "127.0.0.1" : o->host;
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        mopt_error_set(err, MOPT_E_INVALID, "serve", "--host '%s' is not an IPv4 address", o->host);
        free(s);
        return NULL;
    }
    s->d = MHD_start_daemon(MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG, (uint16_t)o->port,
                            NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_CONNECTION_LIMIT,
                            (unsigned)o->conn_limit, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60,
                            MHD_OPTION_THREAD_POOL_SIZE, (unsigned)o->pool_threads, MHD_OPTION_EXTERNAL_LOGGER, mhd_log,
                            NULL, MHD_OPTION_END);
    if (!s->d) {
        mopt_error_set(err, MOPT_E_IO, "serve", "cannot listen on %s:%d (in use, or not an address of this machine)",
                       o->host, o->port);
        free(s);
        return NULL;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : o->port;
    return s;
}

int srv_server_port(const srv_server *s) { return s->port; }

bool srv_server_drain(srv_server *s) {
    atomic_store(&s->draining, true);
    const double until = srv_now() + s->o.drain_timeout;
    while (atomic_load(&s->in_flight) > 0 && srv_now() < until) usleep(10000);
    return atomic_load(&s->in_flight) == 0;
}

void srv_server_stop(srv_server *s) {
    if (!s) return;
    atomic_store(&s->draining, true);
    /* the engines stopped, so every request finished and woke its connection;
     * give the last answers a moment to leave */
    const double until = srv_now() + 2.0;
    while (atomic_load(&s->in_flight) > 0 && srv_now() < until) usleep(10000);
    MHD_stop_daemon(s->d);
    free(s);
}
