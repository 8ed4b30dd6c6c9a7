/* plugins/prune: sparsity (magnitude, Wanda, SparseGPT; unstructured and N:M) and structured pruning (Minitron). */
#include "prune_plugin.h"

MOPT_PLUGIN_DEFINE("prune", "0.1.0", "MIT", "pruning: prune.magnitude, prune.wanda, prune.sparsegpt, prune.minitron",
                   &prune_magnitude_pass, &prune_wanda_pass, &prune_sparsegpt_pass, &prune_minitron_pass)
