/* bad-call-storm: an endless stream of SBI DBCN console_write calls whose
   buffer lies past the end of RAM (SBI v2.0, 12.1), each one refused and
   each one an isolation event: an attack on the VMM's own bookkeeping.
   The VMM must refuse every call (SBI_ERR_INVALID_PARAM), keep the guest
   running, and keep its isolation logs bounded (labvmm.isolation.LOG_LIMIT:
   the oldest events dropped and counted), never growing host memory. */
#include "sbi_guest.h"

volatile uint64_t labvmm_param_ram_end = 0x81000000;

int main(void)
{
    sbi_say("bad-call-storm: refused SBI calls forever, one isolation event each");
    for (;;)
        sbi_call(SBI_EXT_DBCN, 0, 64, labvmm_param_ram_end, 0, 0, 0, 0);
}
