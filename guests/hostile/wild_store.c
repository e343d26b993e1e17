/* wild-store: a store to an address outside the guest's RAM and devices
   (default 0x0; the tests sweep the address space through `address`). In
   labvmm's frame pool another VM's RAM may sit right after this one's, so a
   VMM that forwarded the store anywhere would corrupt a neighbour.
   The VMM must refuse it: an "unmapped-write" event at attack_pc for
   `address`, then stop the VM, or deliver a store access fault (mcause 7). */
#include "hostile.h"

/* In .data, not .bss: start.S clears .bss after the loader patched the parameter. */
__attribute__((section(".data"))) volatile uint64_t labvmm_param_address = 0x0;

int main(void)
{
    hostile_say("wild-store: storing 8 bytes to an address outside RAM and devices");
    hostile_install_trap();
    uint64_t addr = labvmm_param_address;
    __asm__ volatile(ATTACK_PC "sd %0, 0(%1)" : : "r"(0x4841434bull), "r"(addr) : "memory");
    hostile_say("wild-store: NOT CONTAINED, the store went somewhere");
    power_off();
}
