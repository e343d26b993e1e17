/* s-timer-storm: S-mode with labvmm as firmware sets the SBI timer to time 0
   (SBI v2.0, 6.1) and returns from its supervisor timer handler without
   re-arming it, so the interrupt stays pending: an endless storm that the
   CPU takes by itself (mip.STIP, delegated through mideleg).
   The VMM must keep the storm inside this VM's share of the CPU, raise no
   isolation event, and never mistake the always-pending deadline for a
   future event to skip time to. Bounded by max_insns in the tests. */
#include "sbi_guest.h"

static volatile uint64_t storms;

__attribute__((interrupt("supervisor"), aligned(4))) static void storm_handler(void)
{
    storms++;
}

int main(void)
{
    sbi_say("s-timer-storm: SBI set_timer(0), taking the supervisor timer interrupt forever");
    csr_write(stvec, (uint64_t)(uintptr_t)storm_handler);
    sbi_call(SBI_EXT_TIME, 0, 0, 0, 0, 0, 0, 0);
    csr_set(sie, SIE_STIE);
    csr_set(sstatus, SSTATUS_SIE);
    for (;;)
        __asm__ volatile("" : : : "memory");
}
