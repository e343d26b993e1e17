/* sbi-flood: writes a 4 KiB buffer through SBI DBCN console_write (SBI v2.0,
   12.1) forever: about 100 times more console bytes per instruction than a
   UART flood.
   The VMM must keep the console buffer bounded (labvmm.vm.CONSOLE_LIMIT_BYTES;
   the oldest bytes dropped and counted in console.dropped) and host memory
   with it. Bounded by max_insns in the tests. */
#include "sbi_guest.h"

static char buffer[4096];

int main(void)
{
    sbi_say("sbi-flood: writing 4 KiB to the SBI console forever");
    for (uint64_t i = 0; i < sizeof buffer; i++)
        buffer[i] = (i % 64 == 63) ? '\n' : (char)('a' + i % 26);
    for (;;)
        sbi_call(SBI_EXT_DBCN, 0, sizeof buffer, (uint64_t)(uintptr_t)buffer, 0, 0, 0, 0);
}
