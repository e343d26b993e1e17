/* rtos trap entry: save the interrupted context, call the C kernel, resume
   whichever context it returns.

   mscratch always holds the address of the running context's frame (struct
   context in rtos.c: x1..x31 at 8*(n-1), then mepc). The frame is the only
   thing trap entry needs, so a trap from a U-mode task and one from the
   kernel's M-mode idle loop are handled by the same code. mstatus.MIE is
   clear from trap entry to mret (priv spec v1.12, 3.1.6.1), so this code is
   never interrupted. */

    .equ FRAME_PC, 31 * 8

    .section .text, "ax"
    .globl rtos_trap_entry
    .balign 4                   /* direct-mode mtvec needs a 4-byte aligned base (3.1.7) */
rtos_trap_entry:
    csrrw   sp, mscratch, sp    /* sp = frame, mscratch = the interrupted sp */
    sd      x1, 0*8(sp)
    sd      x3, 2*8(sp)
    sd      x4, 3*8(sp)
    sd      x5, 4*8(sp)
    sd      x6, 5*8(sp)
    sd      x7, 6*8(sp)
    sd      x8, 7*8(sp)
    sd      x9, 8*8(sp)
    sd      x10, 9*8(sp)
    sd      x11, 10*8(sp)
    sd      x12, 11*8(sp)
    sd      x13, 12*8(sp)
    sd      x14, 13*8(sp)
    sd      x15, 14*8(sp)
    sd      x16, 15*8(sp)
    sd      x17, 16*8(sp)
    sd      x18, 17*8(sp)
    sd      x19, 18*8(sp)
    sd      x20, 19*8(sp)
    sd      x21, 20*8(sp)
    sd      x22, 21*8(sp)
    sd      x23, 22*8(sp)
    sd      x24, 23*8(sp)
    sd      x25, 24*8(sp)
    sd      x26, 25*8(sp)
    sd      x27, 26*8(sp)
    sd      x28, 27*8(sp)
    sd      x29, 28*8(sp)
    sd      x30, 29*8(sp)
    sd      x31, 30*8(sp)
    csrr    t0, mscratch        /* the interrupted sp (x2) */
    sd      t0, 1*8(sp)
    csrr    t0, mepc
    sd      t0, FRAME_PC(sp)

    mv      a0, sp              /* rtos_trap(frame) runs on the kernel's own stack */
    la      sp, __stack_top
    call    rtos_trap           /* returns the frame to resume, its mstatus.MPP already set */

    /* rtos_resume(frame): also how the kernel starts its first task. */
    .globl rtos_resume
rtos_resume:
    csrw    mscratch, a0
    ld      t0, FRAME_PC(a0)
    csrw    mepc, t0
    mv      sp, a0
    ld      x1, 0*8(sp)
    ld      x3, 2*8(sp)
    ld      x4, 3*8(sp)
    ld      x5, 4*8(sp)
    ld      x6, 5*8(sp)
    ld      x7, 6*8(sp)
    ld      x8, 7*8(sp)
    ld      x9, 8*8(sp)
    ld      x10, 9*8(sp)
    ld      x11, 10*8(sp)
    ld      x12, 11*8(sp)
    ld      x13, 12*8(sp)
    ld      x14, 13*8(sp)
    ld      x15, 14*8(sp)
    ld      x16, 15*8(sp)
    ld      x17, 16*8(sp)
    ld      x18, 17*8(sp)
    ld      x19, 18*8(sp)
    ld      x20, 19*8(sp)
    ld      x21, 20*8(sp)
    ld      x22, 21*8(sp)
    ld      x23, 22*8(sp)
    ld      x24, 23*8(sp)
    ld      x25, 24*8(sp)
    ld      x26, 25*8(sp)
    ld      x27, 26*8(sp)
    ld      x28, 27*8(sp)
    ld      x29, 28*8(sp)
    ld      x30, 29*8(sp)
    ld      x31, 30*8(sp)
    ld      sp, 1*8(sp)         /* last: sp was the frame pointer until now */
    mret

    /* The kernel's idle context: runs in M-mode with mstatus.MIE set (mret
       from a frame with MPP = M and MPIE = 1), sleeping until the next
       timer interrupt, which enters rtos_trap_entry like any other trap. */
    .globl rtos_idle
    .balign 4
rtos_idle:
    wfi
    j       rtos_idle
