/* hello: the smallest M-mode guest. Demonstrates bare-metal console output
   by polling the 16550 UART, the boot registers (a0 = hart id), and ending
   the machine through the test finisher. */
#include <stdint.h>
#include "finisher.h"
#include "uart.h"

/* start.S passes a0 and a1 exactly as the boot ROM (or labvmm) set them. */
int main(uint64_t hartid, uint64_t dtb)
{
    (void)dtb;
    uart_puts("Hello from a labvmm guest!\n");
    uart_puts("hello: running in M-mode on hart ");
    uart_put_dec(hartid);
    uart_puts("\n");
    uart_puts("hello: each byte went out by polling LSR.THRE of the 16550 UART at 0x10000000\n");
    uart_puts("hello: powering off via the test finisher at 0x100000\n");
    power_off();
}
