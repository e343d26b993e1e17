/* uart-flood: prints through the UART forever, as fast as LSR.THRE allows.
   The VMM must keep the console buffer bounded (labvmm.vm.CONSOLE_LIMIT_BYTES:
   the oldest output is dropped and counted in console.dropped), give the
   guest only its share of the CPU, and keep every other VM's console its
   own. It never stops by itself: the tests bound it with max_insns. */
#include "hostile.h"

int main(void)
{
    hostile_say("uart-flood: printing forever");
    for (uint64_t n = 0;; n++) {
        uart_puts("uart-flood: line ");
        uart_put_dec(n);
        uart_puts(" of an endless flood\n");
    }
}
