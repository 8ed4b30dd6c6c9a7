/* plugins/distill: knowledge distillation on the core's trainer. */
#include "distill_plugin.h"

MOPT_PLUGIN_DEFINE("distill", "0.1.0", "MIT", "knowledge distillation: distill.logits", &distill_logits_pass)
