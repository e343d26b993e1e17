/* amo-wild: an atomic read-modify-write (amoswap.d; unprivileged spec, "A"
   extension) on an address outside RAM and devices (default 0x0).
   The VMM must refuse it like any store: an isolation event ("unmapped-read"
   or "unmapped-write", whichever half the CPU attempts first) at attack_pc for
   `address`, then stop the VM (or a store/AMO access fault, mcause 7). */
#include "hostile.h"

/* In .data, not .bss: start.S clears .bss after the loader patched the parameter. */
__attribute__((section(".data"))) volatile uint64_t labvmm_param_address = 0x0;

int main(void)
{
    hostile_say("amo-wild: amoswap.d on an address outside RAM and devices");
    hostile_install_trap();
    uint64_t addr = labvmm_param_address, old;
    __asm__ volatile(ATTACK_PC "amoswap.d %0, %1, (%2)" : "=r"(old) : "r"(1ull), "r"(addr) : "memory");
    hostile_say_hex("amo-wild: NOT CONTAINED, old value", old);
    power_off();
}
