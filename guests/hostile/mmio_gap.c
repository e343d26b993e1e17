/* mmio-gap: a load and then a store in the MMIO page of the UART but past the
   16550's 0x100-byte window (default `address` 0x1000_0800), where the page
   is mapped for the device but no device register exists.
   The VMM must refuse it: a "no-device" event at attack_pc for `address`,
   then stop the VM (or deliver a load access fault, mcause 5). */
#include "hostile.h"

volatile uint64_t labvmm_param_address = 0x10000800;

int main(void)
{
    hostile_say("mmio-gap: reading a device page where no device register is");
    hostile_install_trap();
    uint64_t addr = labvmm_param_address, value;
    __asm__ volatile(ATTACK_PC "lw %0, 0(%1)" : "=r"(value) : "r"(addr) : "memory");
    hostile_say_hex("mmio-gap: NOT CONTAINED, read", value);
    mmio_write32(addr, 0xbad);
    hostile_say("mmio-gap: NOT CONTAINED, stored too");
    power_off();
}
