/* echo: interrupt-driven UART input through the PLIC. Demonstrates a device
   interrupt end to end: the UART raises its line when a byte arrives
   (IER.ERBFI), the PLIC forwards source 10 to hart 0's M-mode context, the
   hart takes a machine external interrupt, and the handler claims the source,
   drains the receiver and completes the claim. Ctrl-D (0x04) ends the guest. */
#include <stdint.h>
#include "csr.h"
#include "finisher.h"
#include "mmio.h"
#include "plic.h"
#include "uart.h"

#define CTRL_D 0x04

static void unexpected_trap(uint64_t cause)
{
    uart_puts("echo: unexpected trap, mcause ");
    uart_put_hex(cause, 16);
    uart_puts(" mepc ");
    uart_put_hex(csr_read(mepc), 1);
    uart_puts("\n");
    power_off_fail(3);
}

/* Echo one received byte; a terminal's Enter sends CR, which we turn into
   CR LF so the cursor also moves to a new line. */
static void echo_byte(uint8_t c)
{
    if (c == CTRL_D) {
        uart_puts("\necho: got Ctrl-D, goodbye\n");
        power_off();
    }
    uart_putc((char)c);
    if (c == '\r')
        uart_putc('\n');
}

/* Direct-mode trap vector: must be 4-byte aligned (priv spec v1.12, 3.1.7). */
__attribute__((interrupt("machine"), aligned(4))) static void trap_handler(void)
{
    uint64_t cause = csr_read(mcause);
    if (cause != CAUSE_M_EXTERNAL)
        unexpected_trap(cause);

    /* Claim: which source interrupted? 0 means none is pending any more. */
    uint32_t irq = plic_claim(PLIC_CTX_HART0_M);
    if (irq == PLIC_IRQ_UART0) {
        /* Drain every byte that is ready (LSR.DR); the UART keeps its
           interrupt asserted while data remains. */
        while (mmio_read8(UART_BASE + UART_LSR) & UART_LSR_DR)
            echo_byte(mmio_read8(UART_BASE + UART_RBR));
    }
    /* Complete, so the PLIC forwards the next interrupt from this source. */
    if (irq != 0)
        plic_complete(PLIC_CTX_HART0_M, irq);
}

int main(void)
{
    uart_puts("echo: type something; every byte is echoed back, Ctrl-D ends\n");

    csr_write(mtvec, (uint64_t)(uintptr_t)trap_handler);

    /* PLIC: give the UART a non-zero priority, enable it for hart 0 M-mode,
       and let every priority through (threshold 0). */
    plic_set_priority(PLIC_IRQ_UART0, 1);
    plic_enable(PLIC_CTX_HART0_M, PLIC_IRQ_UART0);
    plic_set_threshold(PLIC_CTX_HART0_M, 0);

    /* UART: interrupt when received data is available (PC16550D, IER bit 0). */
    mmio_write8(UART_BASE + UART_IER, UART_IER_ERBFI);

    /* Hart: accept machine external interrupts, then enable globally. */
    csr_set(mie, MIE_MEIE);
    csr_set(mstatus, MSTATUS_MIE);

    /* All work happens in the handler; sleep until the next byte. */
    for (;;)
        wfi();
}
