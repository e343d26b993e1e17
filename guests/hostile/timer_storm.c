/* timer-storm: sets mtimecmp to 0, so the machine timer interrupt is
   pending at every instant (mtime >= mtimecmp; privileged spec 3.2.1), and
   returns from its handler without moving mtimecmp: an endless storm.
   The VMM must deliver it to this VM only, raise no isolation event, not
   treat the always-pending timer as a future event to skip time to, and
   keep the other VMs on time. Bounded by max_insns in the tests. */
#include "hostile.h"
#include "clint.h"

static volatile uint64_t storms;

__attribute__((interrupt("machine"), aligned(4))) static void storm_handler(void)
{
    storms++;
}

int main(void)
{
    hostile_say("timer-storm: mtimecmp = 0, taking the timer interrupt forever");
    csr_write(mtvec, (uint64_t)(uintptr_t)storm_handler);
    clint_set_mtimecmp(0, 0);
    csr_set(mie, MIE_MTIE);
    csr_set(mstatus, MSTATUS_MIE);
    for (;;)
        wfi();
}
