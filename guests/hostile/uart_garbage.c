/* uart-garbage: writes garbage of every width (1, 2, 4, 8 bytes) to every
   offset of the 16550's 0x100-byte window, reads each back, and then puts
   LCR back to 8N1 (DLAB clear; PC16550D section 8) to print its last line.
   Garbage in a device register is the guest's own business: the VMM must
   keep running it, with no isolation event and no exception out of the
   device model, and it powers off normally. */
#include "hostile.h"

#define UART_WINDOW 0x100
#define UART_LCR 3

int main(void)
{
    hostile_say("uart-garbage: writing garbage to every UART register");
    uint64_t sum = 0;
    for (uint64_t off = 0; off < UART_WINDOW; off++) {
        uintptr_t reg = UART_BASE + off;
        uint64_t g = hostile_garbage();
        *(volatile uint8_t *)reg = (uint8_t)g;
        sum += *(volatile uint8_t *)reg;
        if (off % 2 == 0) {
            *(volatile uint16_t *)reg = (uint16_t)g;
            sum += *(volatile uint16_t *)reg;
        }
        if (off % 4 == 0) {
            *(volatile uint32_t *)reg = (uint32_t)g;
            sum += *(volatile uint32_t *)reg;
        }
        if (off % 8 == 0) {
            *(volatile uint64_t *)reg = g;
            sum += *(volatile uint64_t *)reg;
        }
    }
    mmio_write8(UART_BASE + UART_LCR, 0x03); /* 8 data bits, no parity, DLAB clear */
    mmio_write8(UART_BASE + UART_IER, 0);
    (void)sum; /* register values are model-specific: not printed */
    hostile_say("\nuart-garbage: still running");
    power_off();
}
