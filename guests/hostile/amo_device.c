/* amo-device: atomic read-modify-writes (amoadd.w, amoor.d, lr.w/sc.w) on
   device registers: the UART's word at offset 4 (MCR and, above it, LSR) and
   the CLINT's mtimecmp, all naturally aligned (a misaligned AMO raises an
   address-misaligned exception, unprivileged spec "A" extension).
   Whether the access lands or faults, the VMM must stay consistent: no
   exception out of a device model, no event for an access inside a
   device's window, and the guest keeps running to power off. */
#include "hostile.h"

#define UART_WORD1 4
#define CLINT_MTIMECMP0 0x02004000ul

int main(void)
{
    hostile_say("amo-device: atomic operations on device registers");
    hostile_install_trap();
    csr_write(mie, 0);
    uint64_t old;
    __asm__ volatile("amoadd.w %0, %1, (%2)" : "=r"(old) : "r"(5u), "r"(UART_BASE + UART_WORD1) : "memory");
    __asm__ volatile("amoor.d %0, %1, (%2)" : "=r"(old) : "r"(1ull << 62), "r"(CLINT_MTIMECMP0) : "memory");
    uint64_t failed;
    __asm__ volatile("lr.w %0, (%2)\n"
                     "sc.w %0, %1, (%2)\n"
                     : "=&r"(failed) : "r"(3u), "r"(UART_BASE + UART_WORD1) : "memory");
    (void)old;
    (void)failed;
    hostile_say("amo-device: still running");
    power_off();
}
