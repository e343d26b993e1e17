/* reset-loop: asks the test finisher for a machine reset (0x7777) as soon
   as it boots, forever: every boot prints its first line and resets again.
   The VMM must reboot only this VM (fresh hart, cleared RAM, same frames),
   keep the host responsive and its memory bounded (no hart or frame leaks
   across resets), and leave the other VMs alone. */
#include "hostile.h"

int main(void)
{
    hostile_say("reset-loop: resetting the machine through the test finisher, forever");
    for (;;)
        mmio_write32(FINISHER_BASE, 0x7777);
}
