/* ram-end-fetch: executes a 4-byte instruction whose first half is the last
   halfword of RAM (at ram_end - 2) and whose second half lies past the end.
   The VMM must refuse the fetch of the second half: an "unmapped-fetch"
   event, then stop the VM (or an instruction access fault, mcause 1). */
#include "hostile.h"

volatile uint64_t labvmm_param_ram_end = 0x81000000;

int main(void)
{
    hostile_say("ram-end-fetch: executing an instruction that straddles the end of RAM");
    hostile_install_trap();
    volatile uint16_t *last = (volatile uint16_t *)(uintptr_t)(labvmm_param_ram_end - 2);
    *last = 0x0513; /* low half of "addi a0, x0, imm": a 32-bit encoding (bits 1:0 = 11) */
    __asm__ volatile("fence.i" : : : "memory");
    __asm__ volatile(ATTACK_PC "jalr ra, 0(%0)" : : "r"(last) : "ra", "memory");
    hostile_say("ram-end-fetch: NOT CONTAINED, came back");
    power_off();
}
