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

#endif
