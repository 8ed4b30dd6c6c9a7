/* mopt loadtest URL --concurrency N --requests M --prompts FILE: N client
 * threads send M completion requests in all (prompts taken in turn from the
 * file's lines) to a mopt serve (or any OpenAI-compatible server) on this
 * machine, then print throughput and latency percentiles. Loopback targets
 * only, bounded in count and time: it cannot be pointed at someone else. */
#include <arpa/inet.h>
#include <getopt.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "cli.h"

static void help(void) {
    printf("usage: mopt loadtest URL [options]\n\n"
           "Sends completion requests to a server on this machine (URL http://127.0.0.1:PORT or\n"
           "http://localhost:PORT) and prints requests/s, generated tokens/s and latency percentiles.\n"
           "  --concurrency N   client threads, each with one request in flight (default 8)\n"
           "  --requests M      requests in all (default 100)\n"
           "  --prompts FILE    one prompt per line, used in turn (default: a fixed prompt)\n"
           "  --max-tokens N    max_tokens of each request (default 64)\n"
           "  --temperature T   (default 0: greedy)\n"
           "  --chat            use /v1/chat/completions instead of /v1/completions\n"
           "  --timeout S       stop sending after S seconds (default 600); each request also times out at S\n"
           "  --json OUT        the figures as JSON, written atomically\n");
}

typedef struct load {
    struct sockaddr_in addr;
    char **prompts;
    size_t n_prompts;
    long long requests, max_tokens;
    double temperature, deadline, timeout;
    bool chat;
    atomic_llong next;
    pthread_mutex_t mu;
    double *lat;     /* seconds, per finished request */
    long long n_ok, n_fail, tokens, arm_candidate;
    char first_error[256];
} load;

/* One request over a fresh connection; the HTTP status, or -1 when the connection failed. */
static int post(load *L, const char *path, const char *body, char **resp, size_t *resp_n, bool *candidate) {
    *resp = NULL;
    *resp_n = 0;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct timeval tv = {(time_t)L->timeout, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&L->addr, sizeof L->addr)) {
        close(fd);
        return -1;
    }
    char head[256];
    const int hn = snprintf(head, sizeof head,
                            "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                            "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                            path, strlen(body));
    if (send(fd, head, (size_t)hn, MSG_NOSIGNAL) != hn ||
        send(fd, body, strlen(body), MSG_NOSIGNAL) != (ssize_t)strlen(body)) {
        close(fd);
        return -1;
    }
    size_t cap = 8192, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf) break;
        if (n + 4096 > cap) {
            char *p = cap < ((size_t)64 << 20) ? realloc(buf, cap *= 2) : NULL;
            if (!p) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = p;
        }
        const ssize_t k = recv(fd, buf + n, cap - n - 1, 0);
        if (k <= 0) break;
        n += (size_t)k;
    }
    close(fd);
    if (!buf) return -1;
    buf[n] = 0;
    int status = -1;
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1) status = -1;
    char *sep = strstr(buf, "\r\n\r\n");
    *candidate = sep && memmem(buf, (size_t)(sep - buf), "X-Mopt-Arm: candidate", 21) != NULL;
    if (sep) {
        *resp_n = n - (size_t)(sep + 4 - buf);
        memmove(buf, sep + 4, *resp_n + 1);
    }
    *resp = buf;
    return status;
}

static void *client(void *p) {
    load *L = p;
    for (;;) {
        const long long i = atomic_fetch_add(&L->next, 1);
        if (i >= L->requests || cli_now() > L->deadline) break;
        json_t *req = L->chat ? json_pack("{s:[{s:s,s:s}],s:I,s:f,s:I}", "messages", "role", "user", "content",
                                          L->prompts[i % (long long)L->n_prompts], "max_tokens", (json_int_t)L->max_tokens,
                                          "temperature", L->temperature, "seed", (json_int_t)i)
                              : json_pack("{s:s,s:I,s:f,s:I}", "prompt", L->prompts[i % (long long)L->n_prompts],
                                          "max_tokens", (json_int_t)L->max_tokens, "temperature", L->temperature, "seed",
                                          (json_int_t)i);
        char *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
        json_decref(req);
        const double t0 = cli_now();
        char *resp = NULL;
        size_t rn = 0;
        bool cand = false;
        const int status = body ? post(L, L->chat ? "/v1/chat/completions" : "/v1/completions", body, &resp, &rn, &cand) : -1;
        const double dt = cli_now() - t0;
        free(body);
        json_t *j = status == 200 && resp ? json_loadb(resp, rn, 0, NULL) : NULL;
        json_t *usage = json_object_get(j, "usage");
        pthread_mutex_lock(&L->mu);
        if (usage) {
            L->lat[L->n_ok++] = dt;
            L->tokens += json_integer_value(json_object_get(usage, "completion_tokens"));
            L->arm_candidate += cand;
        } else {
            if (!L->n_fail)
                snprintf(L->first_error, sizeof L->first_error, "HTTP %d: %.200s", status, resp ? resp : "no response");
            L->n_fail++;
        }
        pthread_mutex_unlock(&L->mu);
        json_decref(j);
        free(resp);
    }
    return NULL;
}

static double pct(const double *v, long long n, double q) { return n ? mopt_quantile(v, n, q) : 0; }

/* http://127.0.0.1:PORT[/] or http://localhost:PORT[/] */
static bool parse_url(const char *url, struct sockaddr_in *sa) {
    const char *p = !strncmp(url, "http://127.0.0.1:", 17) ? url + 17 : !strncmp(url, "http://localhost:", 17) ? url + 17 : NULL;
    if (!p) return false;
    char *end;
    const long port = strtol(p, &end, 10);
    if (end == p || port <= 0 || port > 65535 || (*end && strcmp(end, "/"))) return false;
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return true;
}

int cmd_loadtest(int argc, char **argv) {
    static const struct option opts[] = {
        {"concurrency", required_argument, 0, 'c'}, {"requests", required_argument, 0, 'n'},
        {"prompts", required_argument, 0, 'p'},     {"max-tokens", required_argument, 0, 'm'},
        {"temperature", required_argument, 0, 't'}, {"chat", no_argument, 0, 'C'},
        {"timeout", required_argument, 0, 'T'},     {"json", required_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},              {0, 0, 0, 0}};
    long long conc = 8, requests = 100, max_tokens = 64;
    double temperature = 0, timeout = 600;
    const char *prompts_path = NULL, *json_out = NULL;
    bool chat = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            if (!cli_parse_int(optarg, 1, 1024, &conc)) return cli_usage_error("loadtest", "--concurrency expects 1..1024, got '%s'", optarg);
            break;
        case 'n':
            if (!cli_parse_int(optarg, 1, 10000000, &requests)) return cli_usage_error("loadtest", "--requests expects 1..10000000, got '%s'", optarg);
            break;
        case 'm':
            if (!cli_parse_int(optarg, 1, 1 << 20, &max_tokens)) return cli_usage_error("loadtest", "--max-tokens expects a positive integer, got '%s'", optarg);
            break;
        case 't':
            if (!cli_parse_float(optarg, 0, 2, &temperature)) return cli_usage_error("loadtest", "--temperature expects 0..2, got '%s'", optarg);
            break;
        case 'T':
            if (!cli_parse_float(optarg, 1, 86400, &timeout)) return cli_usage_error("loadtest", "--timeout expects 1..86400 seconds, got '%s'", optarg);
            break;
        case 'p': prompts_path = optarg; break;
        case 'j': json_out = optarg; break;
        case 'C': chat = true; break;
        case 'h': help(); return EXIT_OK;
        default: return cli_bad_option("loadtest", argv, "h", opts);
        }
    }
    if (optind != argc - 1) return cli_usage_error("loadtest", "expected exactly one URL");
    load L = {0};
    if (!parse_url(argv[optind], &L.addr))
        return cli_usage_error("loadtest", "'%s' is not http://127.0.0.1:PORT or http://localhost:PORT (loopback targets only)",
                               argv[optind]);
    char *text = NULL;
    size_t text_n = 0;
    static char fixed[] = "KING HENRY:\nWhat news";
    static char *fixed_list[] = {fixed};
    if (prompts_path) {
        mopt_error err = {0};
        if (cli_read_text(prompts_path, &text, &text_n, &err)) return cli_fail(&err);
        L.prompts = malloc((text_n / 2 + 2) * sizeof *L.prompts);
        for (char *line = text, *end; L.prompts && line < text + text_n; line = end + 1) {
            end = memchr(line, '\n', (size_t)(text + text_n - line));
            if (!end) end = text + text_n;
            *end = 0;
            if (*line) L.prompts[L.n_prompts++] = line;
        }
        if (!L.n_prompts) {
            free(L.prompts);
            free(text);
            return cli_usage_error("loadtest", "%s has no non-empty line", prompts_path);
        }
    } else {
        L.prompts = fixed_list;
        L.n_prompts = 1;
    }
    L.requests = requests;
    L.max_tokens = max_tokens;
    L.temperature = temperature;
    L.timeout = timeout;
    L.chat = chat;
    L.lat = malloc((size_t)requests * sizeof *L.lat);
    pthread_mutex_init(&L.mu, NULL);
    pthread_t *th = malloc((size_t)conc * sizeof *th);
    int rc = EXIT_OK;
    if (!L.lat || !th) {
        fprintf(stderr, "mopt loadtest: out of memory\n");
        rc = EXIT_RUNTIME;
        goto done;
    }
    const double t0 = cli_now();
    L.deadline = t0 + timeout;
    long long started = 0;
    for (; started < conc; started++)
        if (pthread_create(&th[started], NULL, client, &L)) break;
    for (long long i = 0; i < started; i++) pthread_join(th[i], NULL);
    const double wall = cli_now() - t0;
    printf("%lld requests (%lld ok, %lld failed) in %.2f s with %lld clients: %.2f requests/s, %.1f generated tokens/s\n",
           L.n_ok + L.n_fail, L.n_ok, L.n_fail, wall, conc, L.n_ok / wall, L.tokens / wall);
    printf("latency p50 %.4f s, p95 %.4f s, p99 %.4f s; %lld answered by a candidate arm\n", pct(L.lat, L.n_ok, 0.5),
           pct(L.lat, L.n_ok, 0.95), pct(L.lat, L.n_ok, 0.99), L.arm_candidate);
    if (L.n_fail) printf("first failure: %s\n", L.first_error);
    if (json_out) {
        json_t *j = json_pack("{s:I,s:I,s:I,s:f,s:f,s:f,s:f,s:f,s:f,s:I,s:I}", "concurrency", (json_int_t)conc, "ok",
                              (json_int_t)L.n_ok, "failed", (json_int_t)L.n_fail, "seconds", wall, "requests_per_s",
                              L.n_ok / wall, "tokens_per_s", L.tokens / wall, "p50_s", pct(L.lat, L.n_ok, 0.5), "p95_s",
                              pct(L.lat, L.n_ok, 0.95), "p99_s", pct(L.lat, L.n_ok, 0.99), "candidate",
                              (json_int_t)L.arm_candidate, "tokens", (json_int_t)L.tokens);
        mopt_error err = {0};
        if (!j || cli_write_json(json_out, j, &err)) rc = cli_fail(&err);
        json_decref(j);
    }
    if (!rc && L.n_fail) rc = EXIT_RUNTIME;
done:
    pthread_mutex_destroy(&L.mu);
    free(th);
    free(L.lat);
    if (L.prompts != fixed_list) free(L.prompts);
    free(text);
    return rc;
}
