/* Memory for large arrays that are streamed front to back, every decode step: packed weights and the read
 * bandwidth probe. On 4 KiB pages such a stream takes a TLB miss every 4 KiB and the hardware prefetchers stop at
 * each page's end; on 2 MiB pages neither happens (the Zen 5 host: the int4 g128 GEMV from DRAM and the probe both
 * 4-6% faster, docs/BENCHMARKS.md). The kernel gives transparent huge pages to anonymous memory only where asked
 * when it is set to "madvise", as Debian's is. */
#include <stdlib.h>
#include <sys/mman.h>

#include "base.h"

#define HUGE_PAGE ((size_t)2 << 20)

void *mopt_alloc_streamed(size_t bytes) {
    if (bytes < HUGE_PAGE) return aligned_alloc(64, (bytes + 63) & ~(size_t)63);
    void *p = NULL;
    if (posix_memalign(&p, HUGE_PAGE, bytes)) return NULL;
    /* only the whole huge pages inside the array: the tail's memory may be handed out to others */
    (void)madvise(p, bytes & ~(HUGE_PAGE - 1), MADV_HUGEPAGE); /* advice: where refused, 4 KiB pages serve */
    return p;
}
