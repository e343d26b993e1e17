/* The PLIC (platform-level interrupt controller) of virt, after the RISC-V
   PLIC specification v1.0.0 ("Memory Map", "Interrupt Priorities",
   "Interrupt Enables", "Priority Thresholds", "Interrupt Claim Process",
   "Interrupt Completion"). A context is one hart in one privilege mode; on
   QEMU virt context 2*h is hart h in M-mode and 2*h+1 is hart h in S-mode. */
#ifndef PLIC_H
#define PLIC_H

#include <stdint.h>
#include "mmio.h"

#define PLIC_BASE 0x0C000000ul
#define PLIC_PRIORITY(irq) (PLIC_BASE + 4ul * (irq))
#define PLIC_ENABLE(ctx, irq) (PLIC_BASE + 0x2000 + 0x80ul * (ctx) + 4ul * ((irq) / 32))
#define PLIC_THRESHOLD(ctx) (PLIC_BASE + 0x200000 + 0x1000ul * (ctx))
#define PLIC_CLAIM(ctx) (PLIC_THRESHOLD(ctx) + 4) /* read = claim, write = complete */

#define PLIC_CTX_HART0_M 0
#define PLIC_CTX_HART0_S 1

#define PLIC_IRQ_UART0 10 /* virt wires UART0 to PLIC source 10 */

/* A source with priority 0 never interrupts; 1 is the lowest real priority. */
static inline void plic_set_priority(unsigned irq, uint32_t prio)
{
    mmio_write32(PLIC_PRIORITY(irq), prio);
}

static inline void plic_enable(unsigned ctx, unsigned irq)
{
    uintptr_t reg = PLIC_ENABLE(ctx, irq);
    mmio_write32(reg, mmio_read32(reg) | (1u << (irq % 32)));
}

/* Only sources with priority > threshold reach the context. */
static inline void plic_set_threshold(unsigned ctx, uint32_t threshold)
{
    mmio_write32(PLIC_THRESHOLD(ctx), threshold);
}

/* Returns the highest-priority pending source and marks it in service, or 0
   if nothing is pending (another context may have claimed it first). */
static inline uint32_t plic_claim(unsigned ctx) { return mmio_read32(PLIC_CLAIM(ctx)); }

/* Ends service of irq; the PLIC may then forward it again. */
static inline void plic_complete(unsigned ctx, uint32_t irq) { mmio_write32(PLIC_CLAIM(ctx), irq); }

#endif
