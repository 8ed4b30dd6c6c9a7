/* The export plugin's passes. */
#ifndef MOPT_EXPORT_PLUGIN_H
#define MOPT_EXPORT_PLUGIN_H

#include "mopt/plugin.h"

extern const mopt_pass_desc export_hf_pass;
extern const mopt_pass_desc export_gguf_pass;

#endif
