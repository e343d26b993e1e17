/* s-mcsr: an S-mode kernel (labvmm is its firmware) reaches for M-mode
   state: it writes mtvec, which S-mode may not access (privileged spec 2.1,
   CSR address bits 9:8 = 3 need M-mode), hoping to take over machine traps.
   The write must not happen. It is an illegal instruction (cause 2); a
   firmware either redirects it to the kernel's stvec (as OpenSBI does: the
   handler below prints scause and shuts down) or refuses it and stops the VM
   with a "no-trap-handler" event at attack_pc. */
#include "sbi_guest.h"
#include "fmt.h"

__attribute__((aligned(4), noreturn)) static void report_trap(void)
{
    char buf[FMT_BUF_SIZE];
    sbi_puts("s-mcsr: trap, scause ");
    sbi_puts(fmt_hex(buf, csr_read(scause), 1));
    sbi_puts(" stval ");
    sbi_puts(fmt_hex(buf, csr_read(stval), 1));
    sbi_puts("\n");
    sbi_shutdown();
}

int main(void)
{
    sbi_say("s-mcsr: S-mode writing mtvec, a machine-mode CSR");
    csr_write(stvec, (uint64_t)(uintptr_t)report_trap);
    __asm__ volatile(ATTACK_PC "csrw mtvec, %0" : : "r"(0x80200000ull) : "memory");
    sbi_say("s-mcsr: NOT CONTAINED, the write went through");
    sbi_shutdown();
}
