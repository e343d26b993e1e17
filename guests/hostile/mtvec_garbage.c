/* mtvec-garbage: points mtvec at garbage outside RAM (vectored mode bits
   set), then executes an illegal instruction, so the trap must enter a
   handler that does not exist (privileged spec 3.1.7).
   The VMM must not jump into nowhere or loop: a "no-trap-handler" event at
   attack_pc (the illegal instruction) and the VM stopped. */
#include "hostile.h"

int main(void)
{
    hostile_say("mtvec-garbage: mtvec = garbage, then an illegal instruction");
    csr_write(mtvec, 0xdeadbeef00000001ull);
    __asm__ volatile(ATTACK_PC ".4byte 0x00000000\n" : : : "memory"); /* all-zero: illegal */
    hostile_say("mtvec-garbage: NOT CONTAINED, came back");
    power_off();
}
