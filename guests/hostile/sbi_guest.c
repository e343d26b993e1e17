/* The helpers of sbi_guest.h. Not an attack by itself. */
#include "sbi_guest.h"
#include "fmt.h"

struct sbiret sbi_call(uint64_t eid, uint64_t fid, uint64_t arg0, uint64_t arg1, uint64_t arg2,
                       uint64_t arg3, uint64_t arg4, uint64_t arg5)
{
    register uint64_t a0 __asm__("a0") = arg0;
    register uint64_t a1 __asm__("a1") = arg1;
    register uint64_t a2 __asm__("a2") = arg2;
    register uint64_t a3 __asm__("a3") = arg3;
    register uint64_t a4 __asm__("a4") = arg4;
    register uint64_t a5 __asm__("a5") = arg5;
    register uint64_t a6 __asm__("a6") = fid;
    register uint64_t a7 __asm__("a7") = eid;
    __asm__ volatile("ecall"
                     : "+r"(a0), "+r"(a1)
                     : "r"(a2), "r"(a3), "r"(a4), "r"(a5), "r"(a6), "r"(a7)
                     : "memory");
    return (struct sbiret){.error = (int64_t)a0, .value = (int64_t)a1};
}

void sbi_puts(const char *s)
{
    uint64_t len = 0;
    while (s[len])
        len++;
    while (len > 0) {
        struct sbiret r = sbi_call(SBI_EXT_DBCN, 0, len, (uint64_t)(uintptr_t)s, 0, 0, 0, 0);
        if (r.error != 0 || r.value <= 0)
            return;
        s += r.value;
        len -= (uint64_t)r.value;
    }
}

void sbi_say(const char *what)
{
    sbi_puts(what);
    sbi_puts("\n");
}

void sbi_say_dec(const char *label, int64_t value)
{
    char buf[FMT_BUF_SIZE];
    sbi_puts(label);
    sbi_puts(" ");
    if (value < 0) {
        sbi_puts("-");
        value = -value;
    }
    sbi_puts(fmt_dec(buf, (uint64_t)value));
    sbi_puts("\n");
}

void sbi_shutdown(void)
{
    sbi_call(SBI_EXT_SRST, 0, 0, 0, 0, 0, 0, 0);
    for (;;)
        wfi();
}
