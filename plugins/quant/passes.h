/* The quant plugin's passes. */
#ifndef MOPT_QUANT_PASSES_H
#define MOPT_QUANT_PASSES_H

#include "mopt/plugin_util.h"

extern const mopt_pass_desc quant_rtn_pass, quant_gptq_pass, quant_awq_pass, quant_smoothquant_pass, quant_fp8_pass, quant_qat_pass,
    quant_nvfp4_pass, quant_mxfp4_pass, quant_mxfp8_pass, quant_auto_pass, quant_kv_pass, quant_imatrix_pass;

/* Option specs every integer method shares. */
#define Q_INT_OPTS(default_bits, default_group)                                                                    \
    {"bits", MOPT_OPT_INT, 0, "weight bits (2, 3, 4 or 8)", default_bits, 1, 16, NULL},                         \
    {"group_size", MOPT_OPT_INT, 0, "columns sharing a scale (multiple of 32, or -1 for a whole row)",          \
     default_group, -1, 1 << 20, NULL},                                                                          \
    {"sym", MOPT_OPT_BOOL, 0, "symmetric grid (no zero-points)", "false", 0, -1, NULL},                         \
    Q_SELECT_OPTS

/* The activations of the integer methods: float (W4A16, W8A16), FP8 per token (W4A8), or FP8 with a calibrated
 * scale and the weights widened to FP8 (ModelOpt's W4A8_AWQ). */
#define Q_ACT_OPT                                                                                                  \
    {"activations", MOPT_OPT_ENUM, 0,                                                                              \
     "none: activations in float (W4A16); fp8: rounded to E4M3 per token at run time (W4A8); fp8_static: E4M3 with a "  \
     "calibrated per-tensor scale, and the int values widened to E4M3 per tensor (ModelOpt's W4A8_AWQ; needs calib)", \
     "none", 0, -1, q_act_modes}

/* lm_head as one more linear, on request (the passes that need no per-layer calibration for it) */
#define Q_LM_HEAD_OPT                                                                                              \
    {"lm_head", MOPT_OPT_BOOL, 0, "quantize lm_head too, in the same format (an untied one; vLLM loads it packed)", "false", 0, -1, NULL}

/* Which decoder linears a quant pass takes: `only` (when given) minus `exclude`. */
#define Q_SELECT_OPTS                                                                                              \
    {"exclude", MOPT_OPT_LIST, 0, "globs of linears to keep (node or tensor names); embeddings only with quant.rtn's embeddings=true, lm_head only with lm_head=true", \
     "", 0, -1, NULL},                                                                                             \
    {"only", MOPT_OPT_LIST, 0, "globs of the linears to quantize (node or tensor names; default: every decoder linear)", "", 0, -1, \
     NULL}

#endif
