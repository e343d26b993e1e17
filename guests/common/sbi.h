/* Calls from an S-mode guest to its SBI firmware (labvmm, or OpenSBI on
   QEMU), and a console on top of them.

   Calling convention (SBI spec v2.0, chapter 3): ecall with a7 = extension
   id, a6 = function id, a0..a5 = arguments; a0 = error and a1 = value on
   return; the firmware preserves every other register. Extensions: Base
   ch. 4, legacy ch. 5, TIME ch. 6, SRST ch. 10, DBCN ch. 12. labvmm's own
   id is in the firmware-specific range 0x0A000000-0x0AFFFFFF; the low bytes
   spell "LAB".

   Everything here is static inline: each guest is one C file, gets its own
   copy of the console state, and compiles to what it would if the code
   were its own (the compiler keeps one out-of-line copy of sbi_puts,
   sbi_put_dec and sbi_put_hex for their many callers). */
#ifndef SBI_H
#define SBI_H

#include <stdint.h>
#include "fmt.h"

#define SBI_EXT_LEGACY_PUTCHAR 0x01
#define SBI_EXT_BASE 0x10
#define SBI_EXT_TIME 0x54494D45 /* "TIME" */
#define SBI_EXT_SRST 0x53525354 /* "SRST" */
#define SBI_EXT_DBCN 0x4442434E /* "DBCN" */
#define SBI_EXT_LABVMM 0x0A4C4142

#define SBI_BASE_GET_SPEC_VERSION 0
#define SBI_BASE_GET_IMPL_ID 1
#define SBI_BASE_PROBE_EXTENSION 3

#define SBI_SUCCESS 0
#define SBI_ERR_NOT_SUPPORTED (-2)

struct sbiret {
    int64_t error;
    int64_t value;
};

/* Function fid of extension eid with three arguments (a3..a5 unused). */
static inline struct sbiret sbi_call(uint64_t eid, uint64_t fid, uint64_t arg0, uint64_t arg1,
                                     uint64_t arg2)
{
    register uint64_t a0 __asm__("a0") = arg0;
    register uint64_t a1 __asm__("a1") = arg1;
    register uint64_t a2 __asm__("a2") = arg2;
    register uint64_t a6 __asm__("a6") = fid;
    register uint64_t a7 __asm__("a7") = eid;
    __asm__ volatile("ecall" : "+r"(a0), "+r"(a1) : "r"(a2), "r"(a6), "r"(a7) : "memory");
    return (struct sbiret){.error = (int64_t)a0, .value = (int64_t)a1};
}

/* Legacy console putchar (5.2): one byte; legacy calls return only a0 and
   take no function id. */
static inline void sbi_legacy_putchar(char c)
{
    sbi_call(SBI_EXT_LEGACY_PUTCHAR, 0, (uint8_t)c, 0, 0);
}

/* ---- console: DBCN when the firmware has it, else legacy putchar ---- */

/* Set by sbi_console_init() from Base probe_extension (FID 3); until then the
   console uses legacy putchar. */
static int sbi_have_dbcn;

/* Call first. Always inline: the probe belongs in the guest's main, where
   the compiler may otherwise keep it out of line. */
static inline __attribute__((always_inline)) void sbi_console_init(void)
{
    sbi_have_dbcn = sbi_call(SBI_EXT_BASE, SBI_BASE_PROBE_EXTENSION, SBI_EXT_DBCN, 0, 0).value != 0;
}

/* Writes len bytes at s. DBCN write (12.1) takes a physical address split
   in lo/hi halves (hi is 0 on RV64), so s must be identity mapped (satp =
   Bare, or a kernel's identity mapping), and may write fewer bytes than
   asked: loop on the rest, and fall back to putchar for whatever is left
   after an error. */
static inline void sbi_write(const char *s, uint64_t len)
{
    while (sbi_have_dbcn && len > 0) {
        struct sbiret r = sbi_call(SBI_EXT_DBCN, 0, len, (uint64_t)(uintptr_t)s, 0);
        if (r.error != SBI_SUCCESS)
            break;
        s += r.value;
        len -= (uint64_t)r.value;
    }
    while (len-- > 0)
        sbi_legacy_putchar(*s++);
}

static inline void sbi_puts(const char *s)
{
    uint64_t len = 0;
    while (s[len])
        len++;
    sbi_write(s, len);
}

static inline void sbi_put_dec(uint64_t v) { fmt_put_dec(sbi_puts, v); }

/* "0x" and lower-case hex, at least min_digits digits. */
static inline void sbi_put_hex(uint64_t v, unsigned min_digits) { fmt_put_hex(sbi_puts, v, min_digits); }

#endif
