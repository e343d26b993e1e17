/* clint-garbage: writes garbage to msip, mtimecmp and mtime and to every
   8-byte slot of the CLINT's 64 KiB window (SiFive CLINT layout, as virt has
   it), with interrupts disabled (mie = 0), reading each back.
   The guest may ruin its own timer, never another VM's: the VMM must keep
   running it with no isolation event; other VMs' mtime is untouched. */
#include "hostile.h"

#define CLINT_BASE 0x02000000ul
#define CLINT_WINDOW 0x10000ul

int main(void)
{
    hostile_say("clint-garbage: writing garbage to every CLINT register");
    csr_write(mie, 0);
    csr_clear(mstatus, MSTATUS_MIE);
    uint64_t sum = 0;
    for (uint64_t off = 0; off < CLINT_WINDOW; off += 8) {
        uintptr_t reg = CLINT_BASE + off;
        uint64_t g = hostile_garbage();
        *(volatile uint64_t *)reg = g;
        sum += *(volatile uint64_t *)reg;
        *(volatile uint32_t *)(reg + 4) = (uint32_t)(g >> 17);
        sum += *(volatile uint32_t *)(reg + 4);
        *(volatile uint8_t *)(reg + 3) = (uint8_t)(g >> 40);
    }
    (void)sum;
    hostile_say("clint-garbage: still running");
    power_off();
}
