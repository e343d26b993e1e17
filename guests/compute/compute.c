/* compute: a CPU-bound M-mode guest. Demonstrates a deterministic integer
   workload (no memory traffic to speak of, no floating point) whose result is
   the same on every correct RV64 machine, so a VMM can be checked and timed
   with it. The iteration count is a guest parameter the VMM may patch. */
#include <stdint.h>
#include "finisher.h"
#include "uart.h"

/* Guest parameter: patched by labvmm's ELF loader through the symbol table. */
volatile uint64_t labvmm_param_iterations = 1000000;

#define FNV_OFFSET_BASIS 0xcbf29ce484222325ull /* FNV-1a, 64-bit */
#define FNV_PRIME 0x00000100000001b3ull

int main(void)
{
    uint64_t n = labvmm_param_iterations;
    uint64_t x = 0x9e3779b97f4a7c15ull; /* xorshift state, must be non-zero */
    uint64_t y = 1;                     /* LCG state */
    uint64_t h = FNV_OFFSET_BASIS;

    uart_puts("compute: xorshift64 + LCG, folded with FNV-1a\n");
    for (uint64_t i = 0; i < n; i++) {
        /* xorshift64 (Marsaglia 2003, shifts 13/7/17). */
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        /* 64-bit LCG with Knuth's MMIX constants. */
        y = y * 6364136223846793005ull + 1442695040888963407ull;
        /* One FNV-1a step on the combined word. */
        h = (h ^ (x + y)) * FNV_PRIME;
    }
    uart_puts("compute: iterations ");
    uart_put_dec(n);
    uart_puts("\ncompute: checksum ");
    uart_put_hex(h, 16);
    uart_puts("\n");
    power_off();
}
