/* Number formatting (decimal and hex) for guests that have no libc. */
#include "fmt.h"

char *fmt_dec(char buf[FMT_BUF_SIZE], uint64_t v)
{
    /* Fill from the end, least significant digit first. */
    char *p = buf + FMT_BUF_SIZE - 1;
    *p = '\0';
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    return p;
}

char *fmt_hex(char buf[FMT_BUF_SIZE], uint64_t v, unsigned min_digits)
{
    char *p = buf + FMT_BUF_SIZE - 1;
    unsigned digits = 0;
    *p = '\0';
    do {
        *--p = "0123456789abcdef"[v & 0xf];
        v >>= 4;
        digits++;
    } while (v != 0 || digits < min_digits);
    *--p = 'x';
    *--p = '0';
    return p;
}
