/* mmio-straddle: a misaligned 8-byte store at 0x0200_fffc, whose first half
   is the last word of the CLINT's 64 KiB window and whose second half is
   0x0201_0000, where no device is.
   The VMM must not hand a device bytes outside its window or let the upper
   half land anywhere: the part past the window is an isolation event
   ("unmapped-write" or "no-device") and the VM is stopped (or faulted). */
#include "hostile.h"

volatile uint64_t labvmm_param_address = 0x0200fffc;

int main(void)
{
    hostile_say("mmio-straddle: an 8-byte store across the end of the CLINT's window");
    hostile_install_trap();
    csr_write(mie, 0);
    uint64_t addr = labvmm_param_address;
    __asm__ volatile(ATTACK_PC "sd %0, 0(%1)" : : "r"(0x1122334455667788ull), "r"(addr) : "memory");
    hostile_say("mmio-straddle: NOT CONTAINED, the store completed");
    power_off();
}
