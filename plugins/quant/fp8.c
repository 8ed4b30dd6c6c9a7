#include "passes.h"
static mopt_status run(const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *g, const mopt_options *o, mopt_report *r, mopt_error *err) { return h->error_set(err, MOPT_E_UNSUPPORTED, "quant.fp8", "not yet"); }
const mopt_pass_desc quant_fp8_pass = {.struct_size = sizeof(mopt_pass_desc), .kind = MOPT_PASS_TRANSFORM, .name = "quant.fp8", .summary = "FP8", .run = run};
