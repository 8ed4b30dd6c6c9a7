/* The eval plugin's passes. */
#ifndef MOPT_EVAL_PLUGIN_H
#define MOPT_EVAL_PLUGIN_H

#include "mopt/plugin_util.h"

extern const mopt_pass_desc eval_perplexity_pass, eval_compare_pass, eval_generate_match_pass, eval_bench_pass,
    eval_ab_pass, eval_gate_pass;

#endif
