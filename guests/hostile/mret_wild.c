/* mret-wild: sets mepc to an address outside RAM (default 0x4000_0000) and
   MPP = U, then executes mret: the first U-mode fetch is the violation.
   The VMM must refuse it: an "unmapped-fetch" event with pc = address =
   `address`, then stop the VM (or an instruction access fault, mcause 1). */
#include "hostile.h"

#define MSTATUS_MPP (3ull << 11)

volatile uint64_t labvmm_param_address = 0x40000000;

int main(void)
{
    hostile_say("mret-wild: mret into U-mode at an address outside RAM");
    hostile_install_trap();
    csr_clear(mstatus, MSTATUS_MPP);
    csr_write(mepc, labvmm_param_address);
    __asm__ volatile(ATTACK_PC "mret" : : : "memory");
    __builtin_unreachable();
}
