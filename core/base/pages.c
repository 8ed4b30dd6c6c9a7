/* Memory for large arrays: weights, streamed front to back every decode step; KV caches, read over and over; the
 * read bandwidth probe. On 4 KiB pages such a stream takes a TLB miss every 4 KiB and the hardware prefetchers stop
 * at each page's end; on 2 MiB pages neither happens (the Zen 5 host: the int4 g128 GEMV from DRAM and the probe both
 * 4-6% faster, docs/BENCHMARKS.md). The kernel gives transparent huge pages to anonymous memory only where asked when
 * it is set to "madvise", as Debian's is, and only to pages first touched after the advice: memory malloc hands back
 * after another array used it (a loader's scratch) already sits on 4 KiB pages, so arrays from 2 MiB up get a
 * mapping of their own. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "base.h"

#define HUGE_PAGE ((size_t)2 << 20)

static size_t whole_pages(size_t bytes) {
    const long ps = sysconf(_SC_PAGESIZE);
    const size_t page = ps > 0 ? (size_t)ps : 4096;
    return (bytes + page - 1) / page * page;
}

void *mopt_alloc_zeroed(size_t bytes) {
    if (bytes < HUGE_PAGE) { /* 64-byte aligned: no vector load split across two cache lines */
        const size_t n = bytes ? (bytes + 63) & ~(size_t)63 : 64;
        void *p = aligned_alloc(64, n);
        return p ? memset(p, 0, n) : NULL;
    }
    const size_t len = whole_pages(bytes), span = len + HUGE_PAGE;
    uint8_t *m = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return NULL;
    uint8_t *p = (uint8_t *)(((uintptr_t)m + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1)); /* 2 MiB-aligned inside */
    if (p > m) munmap(m, (size_t)(p - m));
    if (m + span > p + len) munmap(p + len, (size_t)(m + span - (p + len)));
    (void)madvise(p, bytes & ~(HUGE_PAGE - 1), MADV_HUGEPAGE); /* advice: where refused, 4 KiB pages serve */
    return p;
}

void mopt_free_zeroed(void *p, size_t bytes) {
    if (!p) return;
    if (bytes < HUGE_PAGE) free(p);
    else munmap(p, whole_pages(bytes));
}
