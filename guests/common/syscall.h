/* System calls from U-mode to the two small kernels among the guests (rtos
   in M-mode, minikernel in S-mode): ecall with the call number in a7 and its
   arguments in a0 and a1; the result comes back in a0, a negative errno on
   failure. Numbers are borrowed from Linux's RISC-V table where one fits;
   each kernel adds its own calls beside these. */
#ifndef SYSCALL_H
#define SYSCALL_H

#include <stdint.h>

#define SYS_WRITE 64 /* write(buf, len) -> bytes written or -EFAULT */
#define SYS_EXIT 93  /* exit(code), does not return */
#define EFAULT 14
#define ENOSYS 38

/* The call n(a0, a1): an ecall from U-mode, which traps to the kernel
   (priv spec v1.12, table 3.6: environment call from U-mode). */
static inline int64_t syscall3(uint64_t n, uint64_t a0, uint64_t a1)
{
    register uint64_t r0 __asm__("a0") = a0;
    register uint64_t r1 __asm__("a1") = a1;
    register uint64_t r7 __asm__("a7") = n;
    __asm__ volatile("ecall" : "+r"(r0) : "r"(r1), "r"(r7) : "memory");
    return (int64_t)r0;
}

#endif
