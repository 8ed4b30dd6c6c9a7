/* A request's life between the HTTP thread that owns its connection and the
 * engine that generates it: reference counted, its text guarded by a mutex,
 * stop strings cut off as soon as they appear. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "serve.h"

double srv_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int srv_verbose;

void srv_log(bool debug, const char *fmt, ...) {
    if (debug && !srv_verbose) return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "mopt serve: %s\n", line);
}

srv_request *srv_request_new(void) {
    srv_request *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->refs = 1;
    r->top_p = 1.0f;
    r->top_logprobs = -1;
    r->t_submit = srv_now();
    r->peer_fd = -1;
    return r;
}

bool srv_request_gone(const srv_request *r) {
    if (r->cancelled) return true;
    if (r->peer_fd < 0) return false;
    char c; /* a peek never takes bytes from libmicrohttpd; 0 is the peer's orderly close */
    const ssize_t n = recv(r->peer_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

void srv_request_ref(srv_request *r) {
    pthread_mutex_lock(&r->mu);
    r->refs++;
    pthread_mutex_unlock(&r->mu);
}

void srv_request_unref(srv_request *r) {
    if (!r) return;
    pthread_mutex_lock(&r->mu);
    const int left = --r->refs;
    pthread_mutex_unlock(&r->mu);
    if (left) return;
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
    free(r->prompt);
    free(r->kept_ids);
    free(r->first_logits);
    json_decref(r->lp);
    free(r->lp_end);
    free(r->text.s);
    free(r);
}

const char *srv_finish_name(srv_finish f) {
    switch (f) {
    case SRV_STOP: return "stop";
    case SRV_LENGTH: return "length";
    case SRV_FAILED: return "error";
    case SRV_CANCELLED: return "cancelled";
    default: return NULL;
    }
}

/* Bytes at the end of s[0..n) that start an unfinished UTF-8 character. */
static size_t utf8_tail(const char *s, size_t n) {
    for (size_t k = 1; k <= 3 && k <= n; k++) {
        const unsigned char c = (unsigned char)s[n - k];
        if ((c & 0xC0) == 0x80) continue; /* continuation byte: look further back */
        const size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        return need > k ? k : 0;
    }
    return 0;
}

static void notify(srv_request *r) {
    pthread_cond_broadcast(&r->cv);
    if (r->notify) r->notify(r->notify_user);
}

bool srv_request_append(srv_request *r, const char *piece, size_t n) {
    const size_t before = r->text.n;
    sb_put(&r->text, piece, n);
    if (r->text.oom) {
        srv_request_finish(r, SRV_FAILED, "out of memory");
        return true;
    }
    /* A stop string may span pieces: search from where it could begin. The
     * text ends at the earliest stop string, whichever of them it is. */
    const char *first = NULL;
    size_t hold = 0;
    for (int i = 0; i < r->n_stop; i++) {
        const size_t L = strlen(r->stop[i]);
        if (!L) continue;
        const size_t from = before >= L ? before - L + 1 : 0;
        const char *hit = memmem(r->text.s + from, r->text.n - from, r->stop[i], L);
        if (hit && (!first || hit < first)) first = hit;
        /* the longest end of the text that is a beginning of this stop string */
        for (size_t k = L - 1; k > hold && k > 0; k--)
            if (k <= r->text.n && !memcmp(r->text.s + r->text.n - k, r->stop[i], k)) {
                hold = k;
                break;
            }
    }
    if (first) {
        r->text.n = (size_t)(first - r->text.s);
        r->text.s[r->text.n] = 0;
        srv_request_finish(r, SRV_STOP, NULL);
        return true;
    }
    size_t vis = r->text.n - hold;
    vis -= utf8_tail(r->text.s, vis);
    if (vis > r->visible) r->visible = vis;
    notify(r);
    return false;
}

void srv_request_finish(srv_request *r, srv_finish why, const char *error) {
    if (r->finish != SRV_RUNNING) return;
    r->finish = why;
    if (error) snprintf(r->error, sizeof r->error, "%s", error);
    r->text.n -= utf8_tail(r->text.s, r->text.n);
    if (r->text.s) r->text.s[r->text.n] = 0;
    r->visible = r->text.n;
    r->t_done = srv_now();
    notify(r);
}
