/* ecall-storm: an endless stream of SBI calls (Base get_spec_version) from
   M-mode with no trap vector installed, which labvmm answers as SBI calls
   (README, "Firmware"). Each one costs the host far more than an ordinary
   instruction.
   The VMM must answer every one, raise no isolation event, and bound the
   guest by its instruction budget like any other. Bounded by max_insns. */
#include "hostile.h"

int main(void)
{
    hostile_say("ecall-storm: making SBI calls forever");
    csr_write(mtvec, 0);
    for (;;) {
        register uint64_t a0 __asm__("a0") = 0;
        register uint64_t a1 __asm__("a1") = 0;
        register uint64_t a6 __asm__("a6") = 0;    /* get_spec_version */
        register uint64_t a7 __asm__("a7") = 0x10; /* Base extension (SBI v2.0, ch. 4) */
        __asm__ volatile("ecall" : "+r"(a0), "+r"(a1) : "r"(a6), "r"(a7) : "memory");
    }
}
