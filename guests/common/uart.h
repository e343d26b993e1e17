/* Polled output on the ns16550a UART of QEMU's virt machine (and labvmm's).

   Register offsets and bits are from the PC16550D datasheet (section 8,
   "Registers"); on virt each register is one byte wide at base + offset. */
#ifndef UART_H
#define UART_H

#include <stdint.h>

#define UART_BASE 0x10000000ul

#define UART_RBR 0 /* receiver buffer (read) */
#define UART_THR 0 /* transmitter holding register (write) */
#define UART_IER 1 /* interrupt enable */
#define UART_LSR 5 /* line status */

#define UART_IER_ERBFI (1u << 0) /* interrupt when received data is available */
#define UART_LSR_DR (1u << 0)    /* data ready: RBR holds a byte */
#define UART_LSR_THRE (1u << 5)  /* THR empty: safe to write the next byte */

/* Bytes are sent as they are: "\n" is a single LF, no CR is added. */
void uart_putc(char c);
void uart_puts(const char *s);
void uart_put_dec(uint64_t v);
void uart_put_hex(uint64_t v, unsigned min_digits);

#endif
