/* plugins/eval: validation passes. */
#include "eval_plugin.h"

static const mopt_pass_desc *const passes[] = {&eval_perplexity_pass, &eval_compare_pass, &eval_generate_match_pass,
                                               &eval_bench_pass, &eval_ab_pass, &eval_gate_pass, NULL};

static const mopt_plugin_desc desc = {
    .abi_version = MOPT_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(mopt_plugin_desc),
    .name = "eval",
    .version = "0.1.0",
    .license = "MIT",
    .description = "validation and A/B passes: perplexity, compare, generate_match, bench, ab, gate",
    .passes = passes,
};

/* The host checks abi_version/struct_size of what we return before reading more. */
MOPT_PLUGIN_ENTRY {
    (void)host;
    (void)err;
    return &desc;
}
