/* A deterministic generator of garbage values (xorshift64, Marsaglia 2003)
   for the hostile guests: the same garbage on every run and every machine.
   Not an attack by itself. */
#include <stdint.h>

uint64_t hostile_garbage(void);

static uint64_t garbage_state = 0x9e3779b97f4a7c15ull;

uint64_t hostile_garbage(void)
{
    uint64_t x = garbage_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    garbage_state = x;
    return x;
}
