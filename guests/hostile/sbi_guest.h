/* Helpers shared by the hostile S-mode guests, which run with labvmm as
   their SBI firmware (SBI spec v2.0: ecall with a7 = EID, a6 = FID, a0-a5 =
   arguments; a0 = error, a1 = value on return, chapter 3). Console output
   goes through DBCN console_write (12.1). */
#ifndef SBI_GUEST_H
#define SBI_GUEST_H

#include <stdint.h>
#include "csr.h"

#define SBI_EXT_BASE 0x10
#define SBI_EXT_TIME 0x54494D45
#define SBI_EXT_SRST 0x53525354
#define SBI_EXT_DBCN 0x4442434E
#define SBI_EXT_LABVMM 0x0A4C4142

#define ATTACK_PC ".globl attack_pc\nattack_pc:\n"

struct sbiret {
    int64_t error;
    int64_t value;
};

struct sbiret sbi_call(uint64_t eid, uint64_t fid, uint64_t a0, uint64_t a1, uint64_t a2,
                       uint64_t a3, uint64_t a4, uint64_t a5);

/* Console output through DBCN; "<what>\n". */
void sbi_puts(const char *s);
void sbi_say(const char *what);
void sbi_say_dec(const char *label, int64_t value);

/* SRST shutdown (type 0, reason 0); idles if the firmware refuses. */
__attribute__((noreturn)) void sbi_shutdown(void);

uint64_t hostile_garbage(void);

#endif
