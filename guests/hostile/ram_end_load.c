/* ram-end-load: a misaligned 8-byte load at ram_end - 4, straddling the end
   of RAM (`ram_end` = 0x8100_0000 with 16 MiB). Its upper half would read
   whatever the host keeps after this VM's frames.
   The VMM must refuse it: an "unmapped-read" event at attack_pc, then stop
   the VM (or a load access fault, mcause 5). */
#include "hostile.h"

volatile uint64_t labvmm_param_ram_end = 0x81000000;

int main(void)
{
    hostile_say("ram-end-load: loading 8 bytes across the end of RAM at ram_end - 4");
    hostile_install_trap();
    uint64_t addr = labvmm_param_ram_end - 4, value;
    __asm__ volatile(ATTACK_PC "ld %0, 0(%1)" : "=r"(value) : "r"(addr) : "memory");
    hostile_say_hex("ram-end-load: NOT CONTAINED, read", value);
    power_off();
}
