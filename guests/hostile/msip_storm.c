/* msip-storm: a software-interrupt storm. The handler sets the CLINT's msip
   again instead of clearing it, so the machine software interrupt (mcause
   0x8000000000000003) is pending again the moment it returns, forever.
   The VMM must deliver the storm to this VM only, charge it to this VM's
   share of the CPU, raise no isolation event, and keep the other VMs on
   time. Bounded by max_insns in the tests. */
#include "hostile.h"

#define CLINT_MSIP0 0x02000000ul
#define MIE_MSIE (1ull << 3)

static volatile uint64_t storms;

__attribute__((interrupt("machine"), aligned(4))) static void storm_handler(void)
{
    storms++;
    mmio_write32(CLINT_MSIP0, 1); /* re-raise instead of acknowledging */
}

int main(void)
{
    hostile_say("msip-storm: raising a machine software interrupt from its own handler, forever");
    csr_write(mtvec, (uint64_t)(uintptr_t)storm_handler);
    mmio_write32(CLINT_MSIP0, 1);
    csr_set(mie, MIE_MSIE);
    csr_set(mstatus, MSTATUS_MIE);
    for (;;)
        __asm__ volatile("" : : : "memory");
}
