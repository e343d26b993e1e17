/* The frame a kernel's trap entry saves the interrupted context in, shared
   by rtos (M-mode: mscratch, mepc, mret) and minikernel (S-mode: sscratch,
   sepc, sret).

   Layout: x1..x31 at 8*(n-1), then the interrupted pc at FRAME_PC. The
   scratch CSR always holds the address of the running context's frame, so
   trap entry needs no other register to find it (priv spec v1.12, 3.1.14
   mscratch, 4.1.6 sscratch). C code sees the frame as struct context; the
   trap.S files include this header too (they are preprocessed) and build
   their trap path with TRAP_VECTOR and their own CSRs. */
#ifndef TRAPFRAME_H
#define TRAPFRAME_H

#define FRAME_PC (31 * 8)

#ifdef __ASSEMBLER__

/* TRAP_VECTOR entry, handler, resume, scratch, epc, xret: a kernel's whole
   trap path, in .text.

   entry (for xtvec, direct mode, so 4-byte aligned: 3.1.7, 4.1.2) swaps sp
   with the scratch CSR, so sp is the frame and the CSR holds the
   interrupted sp; stores x1 and x3..x31, then the interrupted sp (x2) and
   the epc CSR, into the frame; and calls handler(frame) on the kernel's own
   stack (__stack_top). The handler returns the frame to resume in a0.

   resume(frame), where the handler returns to (and how a kernel starts its
   first context): points the scratch CSR at the frame again for the next
   trap, loads the epc CSR with its pc and every register with its value, sp
   last (it addresses the frame until then), and returns with xret. */
.macro TRAP_VECTOR entry, handler, resume, scratch, epc, xret
    .section .text, "ax"
    .globl \entry
    .balign 4
\entry:
    csrrw   sp, \scratch, sp
    .irp n, 1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31
    sd      x\n, (\n - 1) * 8(sp)
    .endr
    csrr    t0, \scratch
    sd      t0, 1*8(sp)
    csrr    t0, \epc
    sd      t0, FRAME_PC(sp)
    mv      a0, sp
    la      sp, __stack_top
    call    \handler

    .globl \resume
\resume:
    csrw    \scratch, a0
    ld      t0, FRAME_PC(a0)
    csrw    \epc, t0
    mv      sp, a0
    .irp n, 1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31
    ld      x\n, (\n - 1) * 8(sp)
    .endr
    ld      sp, 1*8(sp)
    \xret
.endm

#else

#include <stdint.h>

/* The registers of a stopped context: x[n - 1] is register xn. */
struct context {
    uint64_t x[31];
    uint64_t pc;
};
_Static_assert(__builtin_offsetof(struct context, pc) == FRAME_PC, "trap.S stores the pc at FRAME_PC");

#define REG_SP 1  /* x2 */
#define REG_A0 9  /* x10 */
#define REG_A1 10 /* x11 */
#define REG_A7 16 /* x17 */

#endif
#endif
