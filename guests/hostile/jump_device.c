/* jump-device: executes device registers, jumping to the UART's receive
   buffer at 0x1000_0000 (default `address`). Fetching from MMIO would read
   (and pop) device state as instructions.
   The VMM must refuse the fetch: an "unmapped-fetch" event with pc = address
   = 0x1000_0000 and the VM stopped (or an instruction access fault, mcause 1,
   as on QEMU, where device memory is not executable). */
#include "hostile.h"

volatile uint64_t labvmm_param_address = 0x10000000;

int main(void)
{
    hostile_say("jump-device: jumping into the UART's registers at 0x10000000");
    hostile_install_trap();
    uint64_t addr = labvmm_param_address;
    __asm__ volatile(ATTACK_PC "jalr ra, 0(%0)" : : "r"(addr) : "ra", "memory");
    hostile_say("jump-device: NOT CONTAINED, came back");
    power_off();
}
