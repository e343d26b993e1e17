/* deleg-garbage: sets medeleg and mideleg to all ones (privileged spec
   3.1.8) with stvec = 0, drops to U-mode with mret and executes an illegal
   instruction there, so the trap is delegated to an S-mode handler that
   does not exist.
   The VMM must not loop or enter nowhere: a "no-trap-handler" event at
   attack_pc (the U-mode illegal instruction) and the VM stopped. */
#include "hostile.h"

#define MSTATUS_MPP (3ull << 11)

__asm__(".text\n"
        ".balign 4\n"
        "user_code:\n"
        ".globl attack_pc\n"
        "attack_pc:\n"
        "    .4byte 0x00000000\n" /* all-zero: an illegal instruction */
        "    j user_code\n");
extern const char user_code[];

int main(void)
{
    hostile_say("deleg-garbage: delegating every trap to a missing S-mode handler, then trapping in U-mode");
    csr_write(stvec, 0);
    csr_write(medeleg, ~0ull);
    csr_write(mideleg, ~0ull);
    csr_clear(mstatus, MSTATUS_MPP); /* MPP = U */
    csr_write(mepc, (uint64_t)(uintptr_t)user_code);
    __asm__ volatile("mret" : : : "memory");
    __builtin_unreachable();
}
