/* Entry point shared by every guest: set up a stack, clear .bss, call main.

   Boot convention (QEMU virt reset ROM, and SBI firmware for S-mode
   kernels): a0 = hart id, a1 = physical address of the device tree blob.
   We leave a0 and a1 untouched so main(hartid, dtb) receives them.
   Only one hart is expected: an SMP guest brings its own (smp-spinlock/start.S);
   under SBI only the boot hart enters here (sbi-smp starts the others elsewhere). */

#include "bss.h"

    .section .text.start, "ax"
    .globl _start
_start:
    /* No gp setup: the images are built with -msmall-data-limit=0 and
       define no __global_pointer$, so nothing is addressed through gp. */
    la      sp, __stack_top
    clear_bss
    call    main

    /* main should never return (guests power off); if it does, idle.
       wfi lets the VMM treat this hart as idle (priv spec v1.12, 3.3.3). */
3:  wfi
    j       3b
