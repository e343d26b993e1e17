/* plic-garbage: writes garbage to the PLIC's priorities, pending bits,
   enables, thresholds and claim/complete registers, for the two contexts
   virt has and for contexts that do not exist, sampling the whole 6 MiB
   window every 0x100 bytes and every register of the first pages
   (RISC-V PLIC spec 1.0.0, chapter 3), and claims whatever it can.
   The VMM must keep running it with no isolation event: the PLIC is this
   VM's own. */
#include "hostile.h"

#define PLIC_BASE 0x0c000000ul
#define PLIC_WINDOW 0x600000ul

static uint64_t poke(uintptr_t reg)
{
    *(volatile uint32_t *)reg = (uint32_t)hostile_garbage();
    return *(volatile uint32_t *)reg;
}

int main(void)
{
    hostile_say("plic-garbage: writing garbage to every kind of PLIC register");
    csr_write(mie, 0);
    uint64_t sum = 0;
    for (uint64_t off = 0; off < 0x3000; off += 4) /* priorities, pending, context 0-31 enables */
        sum += poke(PLIC_BASE + off);
    for (uint64_t ctx = 0; ctx < 4; ctx++)        /* threshold, claim/complete, reserved words */
        for (uint64_t off = 0; off < 0x40; off += 4)
            sum += poke(PLIC_BASE + 0x200000 + 0x1000 * ctx + off);
    for (uint64_t off = 0; off < PLIC_WINDOW; off += 0x100)
        sum += poke(PLIC_BASE + off);
    (void)sum;
    hostile_say("plic-garbage: still running");
    power_off();
}
