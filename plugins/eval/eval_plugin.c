/* plugins/eval: validation passes. */
#include "eval_plugin.h"

MOPT_PLUGIN_DEFINE("eval", "0.1.0", "MIT",
                   "validation and A/B passes: perplexity, compare, generate_match, bench, ab, gate",
                   &eval_perplexity_pass, &eval_compare_pass, &eval_generate_match_pass, &eval_bench_pass, &eval_ab_pass,
                   &eval_gate_pass)
