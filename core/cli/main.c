/* mopt: command-line entry. Each subcommand lives in its own cmd_*.c. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *summary;
} commands[] = {
    {"info", cmd_info, "architecture, parameter count, dtypes and bytes of a model"},
    {"tokenize", cmd_tokenize, "token ids of a text with the model's tokenizer"},
    {"generate", cmd_generate, "generate text (greedy, temperature, top-p)"},
    {"eval", cmd_eval, "perplexity on a text file (the eval.perplexity pass)"},
    {"quantize", cmd_quantize, "quantize a model (rtn, awq, gptq, smoothquant, fp8, nvfp4, mxfp4, mxfp8) and measure it"},
    {"export", cmd_export, "write a checkpoint (dense Hugging Face), atomically"},
    {"distill", cmd_distill, "train a student on a teacher's distributions (distill.logits)"},
    {"qat", cmd_qat, "quantization-aware training, or with --teacher QAD (quant.qat)"},
    {"prune", cmd_prune, "sparsity (magnitude, Wanda, SparseGPT; N:M) or a smaller model (Minitron)"},
    {"synth", cmd_synth, "a random-weight checkpoint of a real model's shape (llama-1b ... llama-8b), for speed work"},
    {"grad", cmd_grad, "gradient of one window's loss for every weight (checks the backward)"},
    {"bench", cmd_bench, "prefill/decode speed, latency percentiles, peak memory (eval.bench)"},
    {"serve", cmd_serve, "OpenAI-compatible HTTP server: continuous batching, A/B split, Prometheus metrics"},
    {"loadtest", cmd_loadtest, "load a local server: throughput and latency percentiles"},
    {"run", cmd_run, "run a Lua pipeline script"},
    {"pipeline", cmd_pipeline, "run a pipeline written as text: 'pass<k=v>,pass'"},
    {"plugins", cmd_plugins, "list plugins and their passes"},
    {"describe", cmd_describe, "show a pass's options"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: mopt <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\nMODEL is a Hugging Face or TensorRT-LLM directory, a GGUF file or a llama2.c .bin.\n"
               "Run 'mopt <command> --help' for a command's options.\n"
               "--allow-override (any command) lets a plugin on MOPT_PLUGIN_PATH replace a built-in one.\n"
               "Exit status: 0 success, 1 runtime failure, 2 bad usage or bad input, 3 a gate failed,\n"
               "130/143 stopped by SIGINT/SIGTERM (temporary files removed; a second signal exits at once),\n"
               "124 a --timeout ran out.\n");
}

uint32_t cli_registry_flags;

/* The first SIGINT/SIGTERM (or the --timeout alarm) asks the work to stop at
 * its next safe point, so temporary files go with it; a second one leaves at
 * once. */
static volatile sig_atomic_t signals_seen;

static void on_signal(int sig) {
    if (signals_seen++) _exit(sig == SIGALRM ? 124 : 128 + sig);
    mopt_interrupt(sig);
}

static void catch_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGALRM, &sa, NULL);
}

/* 130 / 143 after SIGINT / SIGTERM, 124 after a timeout, as shells and timeout(1) report them */
static int exit_code(int rc) {
    const int why = mopt_interrupted();
    return why > 0 ? (why == SIGALRM ? 124 : 128 + why) : rc;
}

int main(int argc, char **argv) {
    catch_signals();
    /* --allow-override may stand anywhere: it only changes how plugins load */
    int kept = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--allow-override")) cli_registry_flags |= MOPT_REGISTRY_ALLOW_OVERRIDE;
        else argv[kept++] = argv[i];
    }
    argc = kept;
    argv[argc] = NULL;
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return EXIT_OK;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("mopt %s (kernels: %s; GEMM: %s)\n", MOPT_VERSION_STRING, mopt_cpu_kernels_name(), mopt_cpu_gemm_name());
        return EXIT_OK;
    }
    opterr = 0; /* the commands name a bad option themselves, in one line (cli_bad_option) */
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (!strcmp(argv[1], commands[i].name)) return exit_code(commands[i].fn(argc - 1, argv + 1));
    char name[64];
    snprintf(name, sizeof name, "%s", argv[1]);
    cli_one_line(name);
    fprintf(stderr, "mopt: unknown command '%s' (try 'mopt --help')\n", name);
    return EXIT_USAGE;
}
