/* rtos trap entry: save the interrupted context, call the C kernel, resume
   whichever context it returns.

   mscratch always holds the address of the running context's frame (struct
   context in rtos.c: x1..x31 at 8*(n-1), then mepc). The frame is the only
   thing trap entry needs, so a trap from a U-mode task and one from the
   kernel's M-mode idle loop are handled by the same code. mstatus.MIE is
   clear from trap entry to mret (priv spec v1.12, 3.1.6.1), so this code is
   never interrupted. */

#include "trapframe.h"

/* rtos_trap_entry saves the frame and calls rtos_trap(frame), which returns
   the frame to resume with its mstatus.MPP already set; rtos_resume(frame)
   restores it and mrets, and is also how the kernel starts its first task. */
    TRAP_VECTOR rtos_trap_entry, rtos_trap, rtos_resume, mscratch, mepc, mret

    /* The kernel's idle context: runs in M-mode with mstatus.MIE set (mret
       from a frame with MPP = M and MPIE = 1), sleeping until the next
       timer interrupt, which enters rtos_trap_entry like any other trap. */
    .globl rtos_idle
    .balign 4
rtos_idle:
    wfi
    j       rtos_idle
