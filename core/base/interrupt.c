/* The stop request (mopt/interrupt.h): one lock-free flag, safe to set from a
 * signal handler and cheap enough to read in inner loops. */
#include <stdatomic.h>

#include "mopt/interrupt.h"

static atomic_int requested;

void mopt_interrupt(int why) {
    int expected = 0;
    atomic_compare_exchange_strong(&requested, &expected, why ? why : -1);
}

int mopt_interrupted(void) { return atomic_load_explicit(&requested, memory_order_relaxed); }

void mopt_interrupt_clear(void) { atomic_store(&requested, 0); }
