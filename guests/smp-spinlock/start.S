/* Entry point of smp-spinlock, run by every hart at once.

   With -bios none QEMU's virt starts every hart at the image's entry with
   a0 = mhartid and a1 = the device tree (labvmm does the same for a guest
   that is its own firmware). common/start.S assumes one hart; here each
   hart takes its own SMP_STACK_BYTES slice of the image's 16 KiB stack by
   mhartid (hart h: top - h * 2 KiB), hart 0 alone clears .bss, and the
   others wait in smp_spinlock.c until hart 0 lets them go, so nothing in
   .bss is used before it is cleared. */

#include "bss.h"

#define MAX_HARTS 8          /* SMP_MAX_HARTS in common/smp.h */
#define STACK_SHIFT 11       /* SMP_STACK_BYTES = 2048 */

    .section .text.start, "ax"
    .globl _start
_start:
    csrr    t0, mhartid
    li      t1, MAX_HARTS
    bgeu    t0, t1, park          /* no stack for it: it sits this one out */
    la      sp, __stack_top
    slli    t1, t0, STACK_SHIFT
    sub     sp, sp, t1
    mv      a0, t0                /* main(hartid, dtb): a1 is the boot ROM's */
    bnez    t0, 3f

    clear_bss
    call    boot_main
    j       park

3:  call    secondary_main

    /* Nothing left to do: wait with every interrupt disabled, which a VMM
       (and QEMU) sees as a hart that needs no CPU (priv spec 3.3.3). */
park:
    csrw    mie, zero
4:  wfi
    j       4b
