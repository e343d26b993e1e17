/* minikernel trap entry (stvec): save the interrupted process, call the C
   kernel, resume whichever process it returns.

   sscratch always holds the address of the running process's frame (struct
   context in minikernel.c: x1..x31 at 8*(n-1), then sepc). Every process's
   page table maps the kernel (identity, not user-accessible), so this code,
   the frame and the kernel stack are reachable whichever satp is loaded.
   Traps only come from U-mode: the kernel runs with sstatus.SIE clear and
   never faults, so this code is never re-entered (priv spec v1.12, 4.1.1). */

#include "trapframe.h"

/* mk_trap_entry saves the frame and calls mk_trap(frame), which returns the
   frame to resume with satp already switched; mk_resume(frame) restores it
   and srets, and is also how the kernel starts its first process. */
    TRAP_VECTOR mk_trap_entry, mk_trap, mk_resume, sscratch, sepc, sret
