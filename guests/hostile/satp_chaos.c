/* satp-chaos: writes satp with every MODE value (0-15, most reserved;
   privileged spec 4.1.11, WARL) and garbage ASID and PPN, then turns on
   mstatus.MPRV with MPP = S so that M-mode loads are translated through an
   Sv39 root page table at physical 0x0, outside RAM (3.1.6.3), and loads.
   The page-table walk itself would read outside the guest's RAM. The VMM
   must refuse it: an isolation event at attack_pc and the VM stopped (or an
   access fault delivered); never a read of host memory. */
#include "hostile.h"

#define MSTATUS_MPRV (1ull << 17)
#define MSTATUS_MPP_S (1ull << 11)
#define MSTATUS_MPP (3ull << 11)
#define SATP_MODE_SV39 (8ull << 60)

int main(void)
{
    hostile_say("satp-chaos: garbage satp modes, then MPRV loads through a page table outside RAM");
    hostile_install_trap();
    for (uint64_t mode = 0; mode < 16; mode++) {
        csr_write(satp, mode << 60 | (hostile_garbage() & 0x0fffffffffffffffull));
        (void)csr_read(satp);
    }
    csr_write(satp, SATP_MODE_SV39); /* root table at physical page 0 */
    csr_clear(mstatus, MSTATUS_MPP);
    csr_set(mstatus, MSTATUS_MPRV | MSTATUS_MPP_S);
    uint64_t value, addr = 0x80000000ul;
    __asm__ volatile(ATTACK_PC "ld %0, 0(%1)" : "=r"(value) : "r"(addr) : "memory");
    csr_clear(mstatus, MSTATUS_MPRV);
    /* Both QEMU 7.2 and labvmm complete this load untranslated, from the guest's own RAM
       at 0x8000_0000 (the first instruction of start.S); the tests check the value. */
    hostile_say_hex("satp-chaos: the load completed and read", value);
    power_off();
}
