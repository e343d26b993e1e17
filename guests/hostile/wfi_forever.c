/* wfi-forever: waits for an interrupt with every interrupt disabled, so no
   interrupt can ever wake it (privileged spec 3.3.3).
   The VMM must treat it as idle: it costs no CPU, raises no event, and a
   host running only it ends with "all-idle" instead of spinning. */
#include "hostile.h"

int main(void)
{
    hostile_say("wfi-forever: waiting for an interrupt that can never come");
    csr_clear(mstatus, MSTATUS_MIE);
    csr_write(mie, 0);
    for (;;)
        wfi();
}
