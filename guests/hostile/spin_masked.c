/* spin-masked: an endless loop with every interrupt disabled (mstatus.MIE
   and mie cleared), which on real hardware would own the hart forever.
   The VMM must preempt it at the end of its quantum (virtual time is counted
   in instructions, so masking interrupts changes nothing), give the other
   VMs their share, and raise no isolation event. Bounded by max_insns. */
#include "hostile.h"

int main(void)
{
    hostile_say("spin-masked: spinning forever with interrupts disabled");
    csr_clear(mstatus, MSTATUS_MIE);
    csr_write(mie, 0);
    for (;;)
        __asm__ volatile("" : : : "memory");
}
