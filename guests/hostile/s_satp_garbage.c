/* s-satp-garbage: an S-mode kernel turns on Sv39 paging (privileged spec
   4.1.11, 4.3.2) with its root page table at physical 0x0, outside RAM, so
   the hardware page-table walk for the very next fetch reads outside the
   guest's memory.
   The VMM must not read host memory for that walk: the walk fails, which is
   an isolation event or a fetch fault the guest has no handler for (stvec =
   0), and the VM is stopped. */
#include "sbi_guest.h"

#define SATP_MODE_SV39 (8ull << 60)

int main(void)
{
    sbi_say("s-satp-garbage: Sv39 paging with the root page table outside RAM");
    csr_write(stvec, 0);
    __asm__ volatile(ATTACK_PC "csrw satp, %0\n"
                     "sfence.vma\n"
                     "nop\n"
                     : : "r"(SATP_MODE_SV39) : "memory");
    sbi_say("s-satp-garbage: NOT CONTAINED, still running");
    sbi_shutdown();
}
