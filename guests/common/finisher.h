/* The SiFive test finisher at 0x0010_0000 on virt: one 32-bit write ends the
   machine. QEMU exits with status 0 for PASS and with the given code for FAIL
   (the encoding is QEMU's sifive_test device; labvmm implements the same). */
#ifndef FINISHER_H
#define FINISHER_H

#include <stdint.h>
#include "csr.h"
#include "mmio.h"

#define FINISHER_BASE 0x00100000ul
#define FINISHER_PASS 0x5555u /* power off, success */
#define FINISHER_FAIL 0x3333u /* power off, failure; exit code in bits 31:16 */

static inline __attribute__((noreturn)) void power_off(void)
{
    mmio_write32(FINISHER_BASE, FINISHER_PASS);
    for (;;) /* not reached on a machine that has the finisher */
        wfi();
}

static inline __attribute__((noreturn)) void power_off_fail(uint16_t code)
{
    mmio_write32(FINISHER_BASE, ((uint32_t)code << 16) | FINISHER_FAIL);
    for (;;)
        wfi();
}

#endif
