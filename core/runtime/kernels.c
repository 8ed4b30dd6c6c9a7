/* Runtime choice of the kernel set. */
#include <stdlib.h>
#include <string.h>

#include <cpuid.h>

#include "kernels.h"

/* F16C from CPUID leaf 1 (ECX bit 29): clang before 15 has no "f16c" for __builtin_cpu_supports. */
static int has_f16c(void) {
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
}

int mopt_kernels_supported(const mopt_kernels *k) {
    __builtin_cpu_init();
    if (k == &mopt_kernels_avx512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512vnni");
    if (k == &mopt_kernels_avx2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c();
    return 1;
}

const mopt_kernels *mopt_kernels_get(void) {
    static const mopt_kernels *chosen = NULL;
    if (chosen) return chosen;
    const mopt_kernels *order[] = {&mopt_kernels_avx512, &mopt_kernels_avx2, &mopt_kernels_ref};
    const char *force = getenv("MOPT_KERNELS");
    const mopt_kernels *pick = NULL;
    for (int i = 0; i < 3 && force; i++)
        if (strcmp(force, order[i]->name) == 0 && mopt_kernels_supported(order[i])) pick = order[i];
    for (int i = 0; i < 3 && !pick; i++)
        if (mopt_kernels_supported(order[i])) pick = order[i];
    chosen = pick;
    return chosen;
}
