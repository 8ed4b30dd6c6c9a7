/* plugins/distill: knowledge distillation on the core's trainer. */
#include "distill_plugin.h"

MOPT_PLUGIN_DEFINE("distill", "0.2.0", "MIT", "knowledge distillation: distill.logits, distill.hidden", &distill_logits_pass,
                   &distill_hidden_pass)
