/* Entry point shared by every guest: set up a stack, clear .bss, call main.

   Boot convention (QEMU virt reset ROM, and SBI firmware for S-mode
   kernels): a0 = hart id, a1 = physical address of the device tree blob.
   We leave a0 and a1 untouched so main(hartid, dtb) receives them.
   Only one hart is expected; the images are not written for SMP. */

    .section .text.start, "ax"
    .globl _start
_start:
    /* No gp setup: the images are built with -msmall-data-limit=0 and
       define no __global_pointer$, so nothing is addressed through gp. */
    la      sp, __stack_top

    /* C expects zero-initialised statics; do not trust the loader to have
       cleared memory that is not in the ELF file (NOLOAD .bss). */
    la      t0, __bss_start
    la      t1, __bss_end
1:  bgeu    t0, t1, 2f
    sd      zero, 0(t0)
    addi    t0, t0, 8
    j       1b

2:  call    main

    /* main should never return (guests power off); if it does, idle.
       wfi lets the VMM treat this hart as idle (priv spec v1.12, 3.3.3). */
3:  wfi
    j       3b
