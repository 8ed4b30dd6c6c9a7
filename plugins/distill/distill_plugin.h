/* The distill plugin's passes. */
#ifndef MOPT_DISTILL_PLUGIN_H
#define MOPT_DISTILL_PLUGIN_H

#include "mopt/plugin_util.h"

extern const mopt_pass_desc distill_logits_pass;
extern const mopt_pass_desc distill_hidden_pass;

#endif
