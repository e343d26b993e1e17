/* pmp-lockdown: programs pmpaddr0 to cover the whole address space (NAPOT)
   and locks it with no permissions (pmpcfg0.L = 1, A = NAPOT, R = W = X = 0;
   privileged spec 3.7.1), which binds M-mode too: the next fetch, and the
   fetch of every trap handler after it, raises an instruction access fault.
   On hardware the hart is wedged forever. The VMM must contain it: the VM
   stopped (or left spinning within its own CPU budget), the host and the
   other VMs unaffected. */
#include "hostile.h"

int main(void)
{
    hostile_say("pmp-lockdown: locking every address against M-mode with PMP");
    hostile_install_trap();
    csr_write(pmpaddr0, ~0ull);
    __asm__ volatile(ATTACK_PC "csrw pmpcfg0, %0\n"
                     "nop\n"
                     : : "r"(0x98ull) : "memory");
    hostile_say("pmp-lockdown: NOT CONTAINED, still fetching");
    power_off();
}
