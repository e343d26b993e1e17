/* stack-runaway: unbounded recursion whose stack runs off the bottom of RAM.
   The recursing routine is copied to the first page after the image
   (__image_end) and starts with sp there, so the stack grows down through the
   whole image to 0x8000_0000 and the next push lands at 0x7fff_fff8, below
   RAM, without the routine overwriting itself.
   The VMM must refuse that push: an "unmapped-write" event at address
   0x7fff_fff8 with pc = __image_end + (recurse_store - recurse), then stop
   the VM. No byte below RAM may be written. */
#include "hostile.h"

extern char __image_end[];
extern const uint32_t recurse[], recurse_store[], recurse_end[];

/* Position-independent: jal is pc-relative, so the copy recurses into itself. */
__asm__(".section .rodata.recurse, \"a\"\n"
        ".balign 4\n"
        ".option push\n"
        ".option norvc\n"
        ".globl recurse, recurse_store, recurse_end\n"
        "recurse:\n"
        "    addi sp, sp, -16\n"
        "recurse_store:\n"
        "    sd ra, 8(sp)\n"
        "    jal ra, recurse\n"
        "recurse_end:\n"
        ".option pop\n"
        ".text\n");

int main(void)
{
    hostile_say("stack-runaway: recursing until the stack runs off the bottom of RAM");
    volatile uint32_t *dst = (volatile uint32_t *)__image_end;
    for (const uint32_t *src = recurse; src < recurse_end; src++)
        *dst++ = *src;
    __asm__ volatile("fence.i\n"
                     "mv sp, %0\n"
                     "jr %0\n"
                     : : "r"(__image_end) : "memory");
    __builtin_unreachable();
}
