/* What every plugin writes the same way: its descriptors and entry point, and
 * a small seeded random generator (calibration windows, bootstrap resampling,
 * A/B routing, speculative sampling). Header-only: plugins link no core symbols. */
#ifndef MOPT_PLUGIN_UTIL_H
#define MOPT_PLUGIN_UTIL_H

#include <stdint.h>

#include "mopt/plugin.h"

/* Defines the plugin's descriptor and its entry point, which returns it. The
 * passes are listed after the description:
 *   MOPT_PLUGIN_DEFINE("quant", "0.1.0", "MIT", "post-training quantization", &rtn_pass, &gptq_pass); */
#define MOPT_PLUGIN_DEFINE(NAME, VERSION, LICENSE, DESCRIPTION, ...)                                           \
    static const mopt_pass_desc *const mopt_plugin_passes_[] = {__VA_ARGS__, NULL};                            \
    static const mopt_plugin_desc mopt_plugin_desc_ = {                                                        \
        .abi_version = MOPT_PLUGIN_ABI_VERSION,                                                                \
        .struct_size = sizeof(mopt_plugin_desc),                                                               \
        .name = NAME,                                                                                          \
        .version = VERSION,                                                                                    \
        .license = LICENSE,                                                                                    \
        .description = DESCRIPTION,                                                                            \
        .passes = mopt_plugin_passes_,                                                                         \
    };                                                                                                         \
    MOPT_PLUGIN_ENTRY {                                                                                        \
        (void)host;                                                                                            \
        (void)err;                                                                                             \
        return &mopt_plugin_desc_;                                                                             \
    }

/* Defines a pass descriptor with the fields every plain pass sets (prefix
 * `static` for one private to its file; passes that need more, such as a
 * `check` callback, fill the struct themselves):
 *   MOPT_PASS_DEFINE(rtn_pass, MOPT_PASS_TRANSFORM, "quant.rtn", "round to nearest", opts, run); */
#define MOPT_PASS_DEFINE(VAR, KIND, NAME, SUMMARY, OPTS, RUN)                                                    \
    const mopt_pass_desc VAR = {                                                                               \
        .struct_size = sizeof(mopt_pass_desc),                                                                 \
        .kind = KIND,                                                                                          \
        .name = NAME,                                                                                          \
        .summary = SUMMARY,                                                                                    \
        .opts = OPTS,                                                                                          \
        .n_opts = sizeof OPTS / sizeof *OPTS,                                                                  \
        .run = RUN,                                                                                            \
    }

/* xorshift64* (Vigna): the next 64 random bits of state *s (never seed it 0). */
static inline uint64_t mopt_rand(uint64_t *s) {
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* A double in [0, 1) from the top 53 bits. */
static inline double mopt_rand_uniform(uint64_t *s) { return (double)(mopt_rand(s) >> 11) * (1.0 / 9007199254740992.0); }

#endif
