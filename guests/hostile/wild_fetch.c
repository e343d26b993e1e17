/* wild-fetch: a jump to an address outside RAM (default 0x0; the tests sweep
   `address`). The fetch itself is the violation, so the event's pc is the
   target address.
   The VMM must refuse it: an "unmapped-fetch" event with pc = address =
   `address`, then stop the VM, or deliver an instruction access fault
   (mcause 1, mtval = address; privileged spec 3.7.1). */
#include "hostile.h"

/* In .data, not .bss: start.S clears .bss after the loader patched the parameter. */
__attribute__((section(".data"))) volatile uint64_t labvmm_param_address = 0x0;

int main(void)
{
    hostile_say("wild-fetch: jumping to an address outside RAM");
    hostile_install_trap();
    uint64_t addr = labvmm_param_address;
    __asm__ volatile(ATTACK_PC "jalr ra, 0(%0)" : : "r"(addr) : "ra", "memory");
    hostile_say("wild-fetch: NOT CONTAINED, came back");
    power_off();
}
