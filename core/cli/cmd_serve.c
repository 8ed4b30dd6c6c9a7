/* mopt serve MODEL [--candidate MODEL2 --split F] [--host H] [--port P] ...:
 * the OpenAI-compatible server (core/serve). SIGTERM or SIGINT drains: new
 * requests get 503, running ones finish, then the server exits 0. */
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "serve.h"

static void help(void) {
    printf("usage: mopt serve MODEL [options]\n\n"
           "Serves MODEL over HTTP with the OpenAI API and continuous batching:\n"
           "  POST /v1/completions, POST /v1/chat/completions (\"stream\": true for server-sent events),\n"
           "  GET /v1/models, GET /health, GET /metrics (Prometheus), GET / (a status page),\n"
           "  POST /admin/split {\"split\": F} (loopback clients only).\n"
           "Chat messages go through the model's chat template (the Jinja chat_template of its\n"
           "tokenizer_config.json, rendered as transformers' apply_chat_template does); a model without one\n"
           "gets one \"Role: content\" line per message (System, User, Assistant), then \"Assistant:\".\n"
           "Request fields: prompt, or messages (role: system, developer (read as system), user or assistant;\n"
           "content: a string or an array of text parts); max_tokens (or max_completion_tokens), temperature,\n"
           "top_p, seed, stop, presence_penalty, frequency_penalty, stream, stream_options.include_usage, user\n"
           "(the routing key); logprobs (completions: 0-20 alternatives; chat: true, with top_logprobs 0-20):\n"
           "the log-softmax of the model's own logits, before penalties and temperature. Others are ignored.\n"
           "  --host H            IPv4 address to listen on (default 127.0.0.1: this machine only)\n"
           "  --port P            port (default 8080; 0 picks a free one)\n"
           "  --port-file F       write the port there once listening (for scripts)\n"
           "  --candidate MODEL2  A/B test: route a fraction of requests to this model instead\n"
           "  --split F           fraction for the candidate (default 0.1 with --candidate); requests with\n"
           "                      an X-Mopt-Route-Key header (or a \"user\" field) always get the same arm\n"
           "  --ab-seed N         seed of the split and of shadow sampling (default 1)\n"
           "  --shadow F          also run this fraction of requests' prompts greedily on both arms, beside the\n"
           "                      answer, and record their agreement (needs one vocabulary; default 0)\n"
           "  --shadow-tokens N   greedy tokens per shadow comparison (default 16)\n"
           "  --gate SPEC         roll the candidate back (split 0) when it fails, over a sliding window:\n"
           "                      min_top1_agree=F (shadow greedy-token agreement), max_kl_mean=F (shadow\n"
           "                      first-token KL), max_p95_ratio=F (p95 latency per token over the baseline's),\n"
           "                      max_error_rate=F; comma-separated\n"
           "  --gate-window N     samples per window (default 20, at most 1024)\n"
           "  --max-seqs N        sequences generated together per model (default 8)\n"
           "  --max-batch N       tokens per forward pass, prompt chunks included (default 256)\n"
           "  --kv-memory MIB     KV-cache memory per model; fewer sequences when --max-seqs do not fit (default 1024)\n"
           "  --ctx N             positions per sequence (default: the model's context)\n"
           "  --queue N           requests that may wait per model; beyond it: HTTP 429 (default 64)\n"
           "  --max-body BYTES    request body limit; beyond it: HTTP 413 (default 1048576)\n"
           "  --max-conns N       open connections (default 4096, or what the file limit allows)\n"
           "  --drain-timeout S   seconds a SIGTERM waits for running requests (default 30)\n"
           "  --threads N         compute threads per model (default: all cores)\n"
           "  --device D          cpu (default), cuda or cuda:N: the models' linears on that GPU\n"
           "  --kv-cache F        f32 (default) or f16: the KV caches in IEEE halves, so --kv-memory holds\n"
           "                      twice the sequences\n"
           "  --chat-template F   render chat with the Jinja template in file F instead (both arms), or\n"
           "                      'plain' for the plain format\n"
           "  --verbose           log libmicrohttpd's messages too\n");
}

static int parse_count(const char *opt, const char *v, long long lo, long long hi, long long *out) {
    if (!cli_parse_int(v, lo, hi, out))
        return cli_usage_error("serve", "%s expects an integer in [%lld, %lld], got '%s'", opt, lo, hi, v);
    return 0;
}

/* The last component of a path (a model directory's name), into buf. */
static const char *base_name(const char *path, char *buf, size_t cap) {
    const char *end = path + strlen(path);
    while (end > path && end[-1] == '/') end--;
    const char *b = end;
    while (b > path && b[-1] != '/') b--;
    snprintf(buf, cap, "%.*s", (int)(end - b), b);
    return buf;
}

/* An arm's chat template: --chat-template FILE (a Jinja file) or "plain",
 * else the one its files carry (mopt_tokenizer_chat_template), with the
 * special tokens of its tokenizer_config.json (a GGUF file: the text of its
 * BOS and EOS tokens). *out stays NULL for the plain format. */
static int load_chat_template(const mopt_model *m, const char *name, const char *choice, srv_chat **out) {
    *out = NULL;
    if (choice && !strcmp(choice, "plain")) {
        srv_log(false, "%s: chat requests use the plain \"Role: content\" format", name);
        return EXIT_OK;
    }
    const mopt_tokenizer *tok = mopt_model_tokenizer(m);
    char path[4096], msg[512];
    char *cfg = NULL, *file = NULL;
    size_t ncfg = 0, nfile = 0;
    mopt_error err = {0};
    if (choice && cli_read_text(choice, &file, &nfile, &err)) return cli_fail(&err);
    const char *tmpl = file ? file : tok ? mopt_tokenizer_chat_template(tok) : NULL;
    snprintf(path, sizeof path, "%s/tokenizer_config.json", mopt_model_path(m));
    struct stat st;
    if (!stat(mopt_model_path(m), &st) && S_ISDIR(st.st_mode) && !access(path, F_OK)) {
        if (cli_read_text(path, &cfg, &ncfg, &err)) {
            free(file);
            return cli_fail(&err);
        }
    } else if (tok) { /* no config: the tokens' own text */
        const int32_t bos = mopt_tokenizer_bos_id(tok), eos = mopt_tokenizer_eos_id(tok);
        json_t *o = json_object();
        if (bos >= 0 && mopt_tokenizer_token_str(tok, bos)) json_object_set_new(o, "bos_token", json_string(mopt_tokenizer_token_str(tok, bos)));
        if (eos >= 0 && mopt_tokenizer_token_str(tok, eos)) json_object_set_new(o, "eos_token", json_string(mopt_tokenizer_token_str(tok, eos)));
        cfg = json_dumps(o, 0);
        ncfg = cfg ? strlen(cfg) : 0;
        json_decref(o);
    }
    bool none;
    *out = srv_chat_new(cfg, ncfg, tmpl, tmpl ? strlen(tmpl) : 0, &none, msg, sizeof msg);
    free(cfg);
    free(file);
    if (!*out && !none) {
        mopt_error_set(&err, MOPT_E_FORMAT, "serve", "%s: %s (--chat-template plain serves chat in the plain format)",
                       choice ? choice : mopt_model_path(m), msg);
        return cli_fail(&err);
    }
    srv_log(false, "%s: chat requests use %s", name,
            *out ? (choice ? "the --chat-template file" : "its chat template") : "the plain \"Role: content\" format (it has no chat template)");
    return EXIT_OK;
}

int cmd_serve(int argc, char **argv) {
    static const struct option opts[] = {
        {"host", required_argument, 0, 'H'},      {"port", required_argument, 0, 'p'},
        {"port-file", required_argument, 0, 'F'}, {"candidate", required_argument, 0, 'c'},
        {"split", required_argument, 0, 's'},     {"ab-seed", required_argument, 0, 'S'},
        {"max-seqs", required_argument, 0, 'q'},  {"max-batch", required_argument, 0, 'b'},
        {"ctx", required_argument, 0, 'x'},       {"queue", required_argument, 0, 'Q'},
        {"max-body", required_argument, 0, 'B'},  {"kv-memory", required_argument, 0, 'M'},  {"max-conns", required_argument, 0, 'C'},
        {"drain-timeout", required_argument, 0, 'D'}, {"threads", required_argument, 0, 'T'}, {"device", required_argument, 0, CLI_OPT_DEVICE}, {"kv-cache", required_argument, 0, CLI_OPT_KV_CACHE},
        {"shadow", required_argument, 0, 'w'},   {"shadow-tokens", required_argument, 0, 'k'},
        {"gate", required_argument, 0, 'g'},     {"gate-window", required_argument, 0, 'W'},
        {"chat-template", required_argument, 0, 't'}, {"verbose", no_argument, 0, 'v'},         {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *host = "127.0.0.1", *port_file = NULL, *candidate = NULL, *chat_template = NULL;
    long long port = 8080, seed = 1, max_seqs = 8, max_batch = 256, ctx = 0, queue = 64, max_body = 1 << 20,
              max_conns = 4096, threads = 0, kv_mib = 1024;
    double split = -1, drain = 30, shadow = 0;
    long long shadow_tokens = 16, gate_window = 20;
    srv_gate gate = {-1, -1, -1, -1, 20};
    bool gated = false;
    char msg[512];
    int c, rc;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'H': host = optarg; break;
        case 'p': if ((rc = parse_count("--port", optarg, 0, 65535, &port))) return rc; break;
        case 'F': port_file = optarg; break;
        case 'c': candidate = optarg; break;
        case 's':
            if (!cli_parse_float(optarg, 0, 1, &split))
                return cli_usage_error("serve", "--split expects a fraction in [0, 1], got '%s'", optarg);
            break;
        case 'S': if ((rc = parse_count("--ab-seed", optarg, 0, (long long)9e18, &seed))) return rc; break;
        case 'q': if ((rc = parse_count("--max-seqs", optarg, 1, 256, &max_seqs))) return rc; break;
        case 'b': if ((rc = parse_count("--max-batch", optarg, 1, 1 << 16, &max_batch))) return rc; break;
        case 'x': if ((rc = parse_count("--ctx", optarg, 2, 1 << 24, &ctx))) return rc; break;
        case 'Q': if ((rc = parse_count("--queue", optarg, 1, 1 << 20, &queue))) return rc; break;
        case 'M': if ((rc = parse_count("--kv-memory", optarg, 1, 1 << 24, &kv_mib))) return rc; break;
        case 'B': if ((rc = parse_count("--max-body", optarg, 1024, 1 << 30, &max_body))) return rc; break;
        case 'C': if ((rc = parse_count("--max-conns", optarg, 16, 1 << 20, &max_conns))) return rc; break;
        case 'D':
            if (!cli_parse_float(optarg, 0, 3600, &drain))
                return cli_usage_error("serve", "--drain-timeout expects seconds in [0, 3600], got '%s'", optarg);
            break;
        case CLI_OPT_DEVICE: cli_set_device(optarg); break;
        case CLI_OPT_KV_CACHE: cli_set_kv_cache(optarg); break;
        case 'T':
            if (!cli_parse_threads(optarg, &threads))
                return cli_usage_error("serve", "--threads expects a positive integer, got '%s'", optarg);
            break;
        case 'w':
            if (!cli_parse_float(optarg, 0, 1, &shadow))
                return cli_usage_error("serve", "--shadow expects a fraction in [0, 1], got '%s'", optarg);
            break;
        case 'k': if ((rc = parse_count("--shadow-tokens", optarg, 1, 4096, &shadow_tokens))) return rc; break;
        case 'W': if ((rc = parse_count("--gate-window", optarg, 1, 1024, &gate_window))) return rc; break;
        case 'g':
            if (!srv_gate_parse(optarg, &gate, msg, sizeof msg)) return cli_usage_error("serve", "%s", msg);
            gated = true;
            break;
        case 't': chat_template = optarg; break;
        case 'v': srv_verbose = 1; break;
        case 'h': help(); return EXIT_OK;
        default: return cli_bad_option("serve", argv, "h", opts);
        }
    }
    if (optind != argc - 1) return cli_usage_error("serve", "expected exactly one MODEL");
    if (split >= 0 && !candidate) return cli_usage_error("serve", "--split needs --candidate");
    if (max_batch < max_seqs)
        return cli_usage_error("serve", "--max-batch %lld is smaller than --max-seqs %lld: every sequence needs a row",
                               max_batch, max_seqs);
    if ((shadow > 0 || gated) && !candidate) return cli_usage_error("serve", "--shadow and --gate need --candidate");
    if ((gate.min_top1_agree >= 0 || gate.max_kl_mean >= 0) && shadow <= 0)
        return cli_usage_error("serve", "min_top1_agree and max_kl_mean are measured in shadow mode: give --shadow F");
    gate.window = (int)gate_window;
    if (split < 0) split = candidate ? 0.1 : 0.0;

    /* Many idle connections need descriptors: raise the soft limit to the hard one. */
    struct rlimit rl;
    if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur != RLIM_INFINITY && (long long)rl.rlim_cur - 64 < max_conns)
        max_conns = (long long)rl.rlim_cur - 64 > 16 ? (long long)rl.rlim_cur - 64 : 16;

    mopt_error err = {0};
    mopt_model *models[SRV_ARMS] = {0};
    srv_engine *eng[SRV_ARMS] = {0};
    srv_chat *chat[SRV_ARMS] = {0};
    char name_buf[SRV_ARMS][256];
    const char *names[SRV_ARMS] = {base_name(argv[optind], name_buf[0], sizeof name_buf[0]),
                                   candidate ? base_name(candidate, name_buf[1], sizeof name_buf[1]) : NULL};
    if (candidate && !strcmp(names[0], names[1])) names[1] = "candidate";
    srv_metrics met;
    srv_metrics_init(&met);
    met.split = split;
    srv_router router;
    srv_router_init(&router, split, (uint64_t)seed);
    srv_monitor mon;
    srv_monitor_init(&mon, &gate, &router, &met);
    srv_server *srv = NULL;
    rc = EXIT_OK;
    const char *paths[SRV_ARMS] = {argv[optind], candidate};
    for (int a = 0; a < SRV_ARMS && paths[a]; a++) {
        models[a] = mopt_model_load(paths[a], NULL, &err);
        if (!models[a]) {
            rc = cli_fail(&err);
            goto done;
        }
    }
    if (mopt_interrupted()) goto done; /* a signal during loading: main turns it into 130/143 */
    for (int a = 0; a < SRV_ARMS && paths[a]; a++)
        if ((rc = load_chat_template(models[a], names[a], chat_template, &chat[a]))) goto done;
    int32_t diff = -1;
    if (shadow > 0 &&
        !mopt_tokenizer_same_vocab(mopt_model_tokenizer(models[0]), mopt_model_tokenizer(models[1]), &diff)) {
        char where[64] = "different sizes";
        if (diff >= 0) snprintf(where, sizeof where, "first difference at id %d", diff);
        rc = cli_usage_error("serve", "--shadow compares tokens, but %s and %s have different vocabularies (%s)", names[0],
                             names[1], where);
        goto done;
    }
    /* From here signals are taken by sigwait below, never by a handler: the
     * engines' forward passes must not see an interrupt while they drain. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    srv_engine_opts eo = {(int32_t)max_seqs, (int32_t)ctx, (int32_t)max_batch, (int32_t)queue, (int32_t)threads,
                          kv_mib << 20};
    for (int a = 0; a < SRV_ARMS && models[a]; a++) {
        eng[a] = srv_engine_new(models[a], a, &eo, &met, candidate ? &mon : NULL, &err);
        if (!eng[a]) {
            rc = cli_fail(&err);
            goto done;
        }
    }
    srv_server_opts so = {host, (int)port, (size_t)max_body, (int)max_conns, 4, drain, shadow, (int32_t)shadow_tokens, &mon,
                          {chat[0], chat[1]}};
    srv = srv_server_start(eng, names, &router, &met, &so, &err);
    if (!srv) {
        rc = cli_fail(&err);
        goto done;
    }
    srv_log(false, "%s%s%s on http://%s:%d (%d sequences per model, batch %lld tokens, queue %lld)", names[0],
            candidate ? " with candidate " : "", candidate ? names[1] : "", host, srv_server_port(srv),
            srv_engine_slots(eng[0]), max_batch, queue);
    if (candidate) srv_log(false, "A/B split: %.3g of requests to %s (seed %lld)%s", split, names[1], seed,
                           gated ? "; gates on" : "");
    if (shadow > 0) srv_log(false, "shadow: %.3g of requests compared on both arms over %lld greedy tokens", shadow, shadow_tokens);
    if (port_file) { /* atomically, never through a link: a script polling for it sees the whole number */
        char line[16];
        const int len = snprintf(line, sizeof line, "%d\n", srv_server_port(srv));
        if (mopt_file_write_atomic(port_file, line, (size_t)len, &err)) {
            rc = cli_fail(&err);
            goto done;
        }
    }
    int sig = 0;
    sigwait(&sigs, &sig);
    srv_log(false, "%s: draining (new requests get 503; up to %.0f s)", sig == SIGINT ? "SIGINT" : "SIGTERM", drain);
    if (!srv_server_drain(srv)) srv_log(false, "drain timeout: stopping the requests still running");
done:
    for (int a = 0; a < SRV_ARMS; a++) srv_engine_stop(eng[a]);
    srv_server_stop(srv);
    for (int a = 0; a < SRV_ARMS; a++) {
        srv_engine_free(eng[a]);
        mopt_model_free(models[a]);
        srv_chat_free(chat[a]);
    }
    srv_monitor_free(&mon);
    srv_metrics_free(&met);
    if (rc == EXIT_OK && srv) srv_log(false, "stopped");
    return rc;
}
