/* finisher-garbage: writes every 16-bit status that is not a command
   (0x3333 fail, 0x5555 pass, 0x7777 reset; QEMU's sifive_test) to the test
   finisher, with garbage in the upper half, plus garbage at other offsets and
   widths, then powers off properly with 0x5555.
   The VMM must ignore the non-commands (no power-off, no reset, no event) and
   halt the VM with exit code 0 only at the real command. */
#include "hostile.h"

int main(void)
{
    hostile_say("finisher-garbage: writing every non-command value to the test finisher");
    for (uint32_t status = 0; status <= 0xffff; status++) {
        if (status == 0x3333 || status == 0x5555 || status == 0x7777)
            continue;
        uint32_t high = (uint32_t)hostile_garbage() & 0xffff0000u;
        mmio_write32(FINISHER_BASE, high | status);
    }
    for (uint64_t off = 4; off < 0x1000; off += 4)
        mmio_write32(FINISHER_BASE + off, 0x5555); /* a command, but at the wrong offset */
    mmio_write8(FINISHER_BASE + 1, 0x55);
    hostile_say("finisher-garbage: still running");
    power_off();
}
