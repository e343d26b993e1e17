/* The CLINT (core-local interruptor) of virt: software interrupt and timer
   registers per hart. mtime and mtimecmp are the machine timer registers of
   the RISC-V privileged spec v1.12, 3.2.1: the timer interrupt (mip.MTIP) is
   pending while mtime >= mtimecmp; writing mtimecmp is how software clears it. */
#ifndef CLINT_H
#define CLINT_H

#include <stdint.h>
#include "mmio.h"

#define CLINT_BASE 0x02000000ul
#define CLINT_MSIP(hart) (CLINT_BASE + 0x0000 + 4ul * (hart))     /* 32-bit */
#define CLINT_MTIMECMP(hart) (CLINT_BASE + 0x4000 + 8ul * (hart)) /* 64-bit */
#define CLINT_MTIME (CLINT_BASE + 0xBFF8)                         /* 64-bit */

/* virt's timebase-frequency: mtime counts 10 million ticks per second. */
#define CLINT_TICKS_PER_SEC 10000000ul

static inline uint64_t clint_mtime(void) { return mmio_read64(CLINT_MTIME); }

static inline void clint_set_mtimecmp(unsigned hart, uint64_t when)
{
    /* rv64 writes all 64 bits in one store, so there is no window in which a
       half-updated compare value could fire early. */
    mmio_write64(CLINT_MTIMECMP(hart), when);
}

#endif
