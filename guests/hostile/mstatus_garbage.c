/* mstatus-garbage: writes all ones to mstatus (MPRV, SUM, MXR, TVM, TW,
   TSR, FS, XS, the endianness bits, ...; a WARL register, privileged spec
   3.1.6), reads back what stuck, then restores a sane value and prints.
   The VMM must let the guest do this to its own hart (no isolation event, no
   host error from a value it did not expect) and keep running it. */
#include "hostile.h"

int main(void)
{
    hostile_say("mstatus-garbage: writing all ones to mstatus");
    uint64_t saved = csr_read(mstatus);
    csr_write(mstatus, ~0ull);
    uint64_t stuck = csr_read(mstatus);
    csr_write(mstatus, saved);
    (void)stuck; /* WARL results differ between implementations: not printed */
    hostile_say("mstatus-garbage: still running");
    power_off();
}
