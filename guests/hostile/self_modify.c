/* self-modify: writes instructions into RAM and runs them, rewrites them and
   runs them again, and patches an instruction later in the very block it is
   executing, each time followed by fence.i (unprivileged spec, Zifencei:
   "fence.i" makes stores visible to later instruction fetches).
   Not an attack on the VMM but on its translation cache: the VMM must run the
   new code, not a stale translation, printing 42, 7 and 99, exactly as QEMU
   does (guests/expected/hostile/self-modify.txt); no isolation event. */
#include "hostile.h"

#define ADDI_A0_ZERO(imm) (((uint32_t)(imm) << 20) | (10u << 7) | 0x13u) /* addi a0, x0, imm */
#define RET 0x00008067u                                                /* jalr x0, 0(ra) */

static uint32_t buffer[2] __attribute__((aligned(4)));

static uint64_t run_buffer(void)
{
    uint64_t (*fn)(void) = (uint64_t (*)(void))(uintptr_t)buffer;
    return fn();
}

static uint64_t patch_ahead(void)
{
    uint64_t result;
    __asm__ volatile(".option push\n"
                     ".option norvc\n"
                     "    lla  t0, 1f\n"
                     "    sw   %1, 0(t0)\n"
                     "    fence.i\n"
                     "1:  addi a0, x0, 1\n" /* replaced by "addi a0, x0, 99" before it runs */
                     "    mv   %0, a0\n"
                     ".option pop\n"
                     : "=r"(result)
                     : "r"(ADDI_A0_ZERO(99))
                     : "t0", "a0", "memory");
    return result;
}

int main(void)
{
    hostile_say("self-modify: writing code, running it, rewriting it and running it again");
    buffer[0] = ADDI_A0_ZERO(42);
    buffer[1] = RET;
    __asm__ volatile("fence.i" : : : "memory");
    uart_puts("self-modify: first version returned ");
    uart_put_dec(run_buffer());
    uart_puts("\n");

    buffer[0] = ADDI_A0_ZERO(7);
    __asm__ volatile("fence.i" : : : "memory");
    uart_puts("self-modify: rewritten version returned ");
    uart_put_dec(run_buffer());
    uart_puts("\n");

    uart_puts("self-modify: instruction patched ahead of the pc gave ");
    uart_put_dec(patch_ahead());
    uart_puts("\n");
    power_off();
}
