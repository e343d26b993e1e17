/* ram-end-store: a misaligned 8-byte store at ram_end - 4, half inside the
   guest's RAM and half past its end (`ram_end` is 0x8100_0000 for the 16 MiB
   the tests give it). Past the end lies, in the host's frame pool, whatever
   frame comes next: another VM's RAM.
   The VMM must refuse the part past the end: an "unmapped-write" event at
   attack_pc, then stop the VM (or a store access fault, mcause 7). No byte
   may land past ram_end. */
#include "hostile.h"

volatile uint64_t labvmm_param_ram_end = 0x81000000;

int main(void)
{
    hostile_say("ram-end-store: storing 8 bytes across the end of RAM at ram_end - 4");
    hostile_install_trap();
    uint64_t addr = labvmm_param_ram_end - 4;
    __asm__ volatile(ATTACK_PC "sd %0, 0(%1)" : : "r"(0x5a5a5a5a5a5a5a5aull), "r"(addr) : "memory");
    hostile_say("ram-end-store: NOT CONTAINED, the store completed");
    power_off();
}
