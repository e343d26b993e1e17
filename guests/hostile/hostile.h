/* Helpers shared by the hostile M-mode guests (guests/hostile/). Every hostile
   guest prints one first line saying what it is about to try, then tries it.

   A VMM that stops the guest at the isolation boundary never lets it print
   more. A VMM that delivers the fault as hardware would (an access fault,
   RISC-V privileged spec v1.12, 3.7.1 and table 3.6) lands in the handler
   installed by hostile_install_trap(), which reports mcause, mepc and mtval
   and powers off: the same line QEMU's virt machine prints. */
#ifndef HOSTILE_H
#define HOSTILE_H

#include <stdint.h>
#include "csr.h"
#include "finisher.h"
#include "mmio.h"
#include "uart.h"

/* Defines the global symbol attack_pc at the next instruction, so the tests
   can read from the ELF symbol table the pc an isolation event must carry. */
#define ATTACK_PC ".globl attack_pc\nattack_pc:\n"

/* Prints "<what>\n" as the guest's first line. */
void hostile_say(const char *what);

/* Prints "<label> 0x<hex>\n". */
void hostile_say_hex(const char *label, uint64_t value);

/* Points mtvec at a handler that prints "trap: mcause .. mepc .. mtval .."
   and powers off with exit code 0x40 + mcause (so a delivered fault is
   visible in the exit code). */
void hostile_install_trap(void);

/* A small deterministic generator for garbage values (xorshift64). */
uint64_t hostile_garbage(void);

#endif
