/* Access to control and status registers (CSRs) and the wfi instruction.

   Bit positions are from the RISC-V privileged spec v1.12 (section numbers
   given per register). csr_read(mstatus) expands to "csrr %0, mstatus". */
#ifndef CSR_H
#define CSR_H

#include <stdint.h>

#define csr_read(csr) ({ uint64_t v_; __asm__ volatile("csrr %0, " #csr : "=r"(v_)); v_; })
#define csr_write(csr, v) __asm__ volatile("csrw " #csr ", %0" : : "r"((uint64_t)(v)) : "memory")
#define csr_set(csr, bits) __asm__ volatile("csrs " #csr ", %0" : : "r"((uint64_t)(bits)) : "memory")
#define csr_clear(csr, bits) __asm__ volatile("csrc " #csr ", %0" : : "r"((uint64_t)(bits)) : "memory")

/* Sleep until an interrupt is pending (priv spec 3.3.3). A VMM sees a hart
   in wfi as idle and may skip virtual time forward to its next timer event. */
static inline void wfi(void) { __asm__ volatile("wfi" : : : "memory"); }

/* mstatus (3.1.6) and sstatus (4.1.1): global interrupt enables. */
#define MSTATUS_MIE (1ull << 3)
#define SSTATUS_SIE (1ull << 1)

/* mie / sie (3.1.9, 4.1.3): per-source enables; bit n is interrupt cause n. */
#define MIE_MTIE (1ull << 7)  /* machine timer */
#define MIE_MEIE (1ull << 11) /* machine external (from the PLIC) */
#define SIE_STIE (1ull << 5)  /* supervisor timer */

/* mcause / scause (3.1.15, 4.1.8): the top bit says "interrupt", the rest is
   the cause number (table 3.6). */
#define CAUSE_INTERRUPT (1ull << 63)
#define CAUSE_S_TIMER (CAUSE_INTERRUPT | 5)
#define CAUSE_M_TIMER (CAUSE_INTERRUPT | 7)
#define CAUSE_M_EXTERNAL (CAUSE_INTERRUPT | 11)

#endif
