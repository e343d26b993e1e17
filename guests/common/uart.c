/* Polled UART output: wait for THR empty, then write the byte. */
#include "uart.h"
#include "fmt.h"
#include "mmio.h"

void uart_putc(char c)
{
    /* Poll LSR.THRE (bit 5) before each write so no byte is overwritten
       while the transmitter is still busy (PC16550D, Line Status Register). */
    while ((mmio_read8(UART_BASE + UART_LSR) & UART_LSR_THRE) == 0)
        ;
    mmio_write8(UART_BASE + UART_THR, (uint8_t)c);
}

void uart_puts(const char *s)
{
    while (*s)
        uart_putc(*s++);
}

void uart_put_dec(uint64_t v) { fmt_put_dec(uart_puts, v); }

void uart_put_hex(uint64_t v, unsigned min_digits) { fmt_put_hex(uart_puts, v, min_digits); }
