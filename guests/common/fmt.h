/* Number formatting into a caller's buffer, shared by the UART and SBI
   consoles so both print numbers the same way. No libc in these guests. */
#ifndef FMT_H
#define FMT_H

#include <stdint.h>

/* Big enough for 2^64-1 in decimal (20 digits) or "0x" + 16 hex digits,
   plus the terminating NUL. */
#define FMT_BUF_SIZE 24

/* Format v in decimal; returns a pointer into buf to the NUL-terminated text. */
char *fmt_dec(char buf[FMT_BUF_SIZE], uint64_t v);

/* Format v as "0x" and lower-case hex, zero-padded to at least min_digits
   digits (1..16); returns a pointer into buf. */
char *fmt_hex(char buf[FMT_BUF_SIZE], uint64_t v, unsigned min_digits);

/* Print v through a console's puts, in decimal or as fmt_hex does: every
   console's put_dec and put_hex. Inline, so the call through `puts` is a
   direct call to the console's own function. */
static inline void fmt_put_dec(void (*puts)(const char *), uint64_t v)
{
    char buf[FMT_BUF_SIZE];
    puts(fmt_dec(buf, v));
}

static inline void fmt_put_hex(void (*puts)(const char *), uint64_t v, unsigned min_digits)
{
    char buf[FMT_BUF_SIZE];
    puts(fmt_hex(buf, v, min_digits));
}

#endif
