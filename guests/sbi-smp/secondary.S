/* Where sbi-smp's secondary harts begin: the start_addr of SBI hart_start.

   SBI v2.0, 9.1: the hart starts in S-mode at start_addr with a0 = its hart
   id, a1 = the opaque value the caller passed, satp = 0 and sstatus.SIE = 0.
   Each gets its own stack by hart id (secondary_stacks, in .bss, which the
   boot hart cleared before it started anyone). */

#define STACK_SHIFT 11       /* SMP_STACK_BYTES = 2048, common/smp.h */

    .section .text, "ax"
    .globl secondary_entry
    .balign 4
secondary_entry:
    la      sp, secondary_stacks
    addi    t0, a0, 1
    slli    t0, t0, STACK_SHIFT
    add     sp, sp, t0
    call    secondary_main
1:  wfi
    j       1b
