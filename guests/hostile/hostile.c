/* The helpers of hostile.h: console lines, a reporting trap handler and a
   garbage generator. Not an attack by itself. */
#include "hostile.h"

void hostile_say(const char *what)
{
    uart_puts(what);
    uart_puts("\n");
}

void hostile_say_hex(const char *label, uint64_t value)
{
    uart_puts(label);
    uart_puts(" ");
    uart_put_hex(value, 1);
    uart_puts("\n");
}

/* Direct-mode mtvec needs a 4-byte aligned handler (priv spec 3.1.7). It
   never returns, so it needs no register saving. */
__attribute__((aligned(4), noreturn)) static void report_trap(void)
{
    uint64_t cause = csr_read(mcause);
    uart_puts("trap: mcause ");
    uart_put_hex(cause, 1);
    uart_puts(" mepc ");
    uart_put_hex(csr_read(mepc), 1);
    uart_puts(" mtval ");
    uart_put_hex(csr_read(mtval), 1);
    uart_puts("\n");
    power_off_fail((uint16_t)(0x40 + (cause & 0x3f)));
}

void hostile_install_trap(void)
{
    csr_write(mtvec, (uint64_t)(uintptr_t)report_trap);
}
