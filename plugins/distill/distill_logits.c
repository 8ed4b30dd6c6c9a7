/* distill.logits: knowledge distillation (Hinton et al., 2015). The pipeline's
 * model is the student; the teacher runs alongside on the same windows (the
 * loop and the loss: kd_train.c). */
#include "distill_plugin.h"
#include "kd_train.h"

static mopt_status run(const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *graph, const mopt_options *o, mopt_report *report,
                       mopt_error *err) {
    mopt_status st = kd_refuse_packed(h, graph, "distill.logits", err);
    return st ? st : kd_train(h, ctx, graph, o, report, "distill.logits", h->opt_string(o, "teacher"), NULL, err);
}

static const mopt_opt_spec opts[] = {
    {"teacher", MOPT_OPT_MODEL, MOPT_OPT_REQUIRED, "the teacher model (same tokenizer and vocabulary as the student)", NULL, 0, -1, NULL},
    KD_TRAIN_OPTS("200000", "0.0003"),
};

MOPT_PASS_DEFINE(distill_logits_pass, MOPT_PASS_TRANSFORM, "distill.logits",
                 "knowledge distillation from a teacher's logits: KL (forward, reverse, top-k) at temperature tau + hard CE, AdamW",
                 opts, run);
