/* The prune plugin's passes. */
#ifndef MOPT_PRUNE_PLUGIN_H
#define MOPT_PRUNE_PLUGIN_H

#include "prune_common.h"

extern const mopt_pass_desc prune_magnitude_pass;
extern const mopt_pass_desc prune_wanda_pass;
extern const mopt_pass_desc prune_sparsegpt_pass;
extern const mopt_pass_desc prune_minitron_pass;

#endif
