/* wild-load: a load from an address outside the guest's RAM and devices
   (default 0x0, a null pointer; the tests sweep the whole address space
   through the `address` parameter: below RAM, between devices, above the end
   of RAM, high canonical and non-canonical addresses).
   The VMM must refuse it: an "unmapped-read" isolation event at attack_pc for
   `address`, then stop the VM, or deliver a load access fault (mcause 5,
   mtval = address; privileged spec v1.12, 3.7.1) to the guest's mtvec. */
#include "hostile.h"

/* In .data, not .bss: start.S clears .bss after the loader patched the parameter. */
__attribute__((section(".data"))) volatile uint64_t labvmm_param_address = 0x0;

int main(void)
{
    hostile_say("wild-load: loading 8 bytes from an address outside RAM and devices");
    hostile_install_trap();
    uint64_t addr = labvmm_param_address, value;
    __asm__ volatile(ATTACK_PC "ld %0, 0(%1)" : "=r"(value) : "r"(addr) : "memory");
    hostile_say_hex("wild-load: NOT CONTAINED, read", value);
    power_off();
}
