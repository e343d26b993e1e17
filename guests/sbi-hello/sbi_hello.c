/* sbi-hello: an S-mode guest that talks only to its SBI firmware (labvmm, or
   OpenSBI on QEMU). Demonstrates the SBI calling convention (ecall with
   a7 = extension id, a6 = function id, a0..a5 arguments; a0 = error and
   a1 = value on return; SBI spec v2.0, chapter 3), extension discovery,
   console output without touching a device, supervisor timer interrupts via
   SBI set_timer, labvmm's own firmware extension, and shutdown via SRST. */
#include <stdint.h>
#include "csr.h"
#include "fmt.h"

/* Guest parameters: patched by labvmm's ELF loader through the symbol table. */
volatile uint64_t labvmm_param_ticks = 3;         /* timer interrupts to take */
volatile uint64_t labvmm_param_interval = 100000; /* time ticks apart (10 ms) */

/* Extension ids (SBI v2.0: Base ch. 4, legacy ch. 5, TIME ch. 6, SRST
   ch. 10, DBCN ch. 12). labvmm's id is in the firmware-specific range
   0x0A000000-0x0AFFFFFF; the low bytes spell "LAB". */
#define SBI_EXT_LEGACY_PUTCHAR 0x01
#define SBI_EXT_BASE 0x10
#define SBI_EXT_TIME 0x54494D45 /* "TIME" */
#define SBI_EXT_SRST 0x53525354 /* "SRST" */
#define SBI_EXT_DBCN 0x4442434E /* "DBCN" */
#define SBI_EXT_LABVMM 0x0A4C4142

#define SBI_BASE_GET_SPEC_VERSION 0
#define SBI_BASE_GET_IMPL_ID 1
#define SBI_BASE_PROBE_EXTENSION 3
#define SBI_LABVMM_YIELD 0
#define SBI_LABVMM_VM_ID 1

#define SBI_SUCCESS 0
#define SBI_ERR_NOT_SUPPORTED (-2)

struct sbiret {
    int64_t error;
    int64_t value;
};

static struct sbiret sbi_call(uint64_t eid, uint64_t fid, uint64_t arg0, uint64_t arg1,
                              uint64_t arg2)
{
    register uint64_t a0 __asm__("a0") = arg0;
    register uint64_t a1 __asm__("a1") = arg1;
    register uint64_t a2 __asm__("a2") = arg2;
    register uint64_t a6 __asm__("a6") = fid;
    register uint64_t a7 __asm__("a7") = eid;
    /* The firmware preserves every register except a0 and a1 (3.1). */
    __asm__ volatile("ecall" : "+r"(a0), "+r"(a1) : "r"(a2), "r"(a6), "r"(a7) : "memory");
    return (struct sbiret){.error = (int64_t)a0, .value = (int64_t)a1};
}

/* ---- console: DBCN when the firmware has it, else legacy putchar ---- */

static int have_dbcn;

static void legacy_putchar(char c)
{
    /* Legacy calls (5.2) return only a0 and take no function id. */
    sbi_call(SBI_EXT_LEGACY_PUTCHAR, 0, (uint8_t)c, 0, 0);
}

static void con_puts(const char *s)
{
    uint64_t len = 0;
    while (s[len])
        len++;
    while (have_dbcn && len > 0) {
        /* DBCN write (12.1) takes a physical address split in lo/hi halves
           (hi is 0 on RV64; we run with satp = Bare so our addresses are
           physical) and may write fewer bytes than asked: loop on the rest. */
        struct sbiret r = sbi_call(SBI_EXT_DBCN, 0, len, (uint64_t)(uintptr_t)s, 0);
        if (r.error != SBI_SUCCESS)
            break; /* fall back to putchar for whatever is left */
        s += r.value;
        len -= (uint64_t)r.value;
    }
    while (len-- > 0)
        legacy_putchar(*s++);
}

static void con_dec(uint64_t v)
{
    char buf[FMT_BUF_SIZE];
    con_puts(fmt_dec(buf, v));
}

static void con_hex(uint64_t v, unsigned min_digits)
{
    char buf[FMT_BUF_SIZE];
    con_puts(fmt_hex(buf, v, min_digits));
}

/* ---- timer: SBI set_timer plus the supervisor timer interrupt ---- */

static volatile uint64_t timer_irqs;

/* The time CSR (unprivileged spec, Zicntr "Counters" chapter) reads the same
   10 MHz clock as the CLINT's mtime; S-mode may read it when the firmware
   sets mcounteren.TM (priv spec v1.12, 3.1.11) or emulates the read. */
static uint64_t read_time(void) { return csr_read(time); }

static void set_timer(uint64_t when)
{
    /* TIME set_timer (6.1): an absolute time; it also clears the pending
       supervisor timer interrupt. */
    sbi_call(SBI_EXT_TIME, 0, when, 0, 0);
}

static __attribute__((noreturn)) void halt(void)
{
    for (;;)
        wfi();
}

/* stvec in direct mode needs a 4-byte aligned base (priv spec 4.1.2); the
   attribute saves the registers it uses and returns with sret. */
__attribute__((interrupt("supervisor"), aligned(4))) static void trap_handler(void)
{
    uint64_t cause = csr_read(scause);
    if (cause != CAUSE_S_TIMER) {
        con_puts("sbi-hello: unexpected trap, scause ");
        con_hex(cause, 16);
        con_puts(" sepc ");
        con_hex(csr_read(sepc), 1);
        con_puts("\n");
        halt();
    }
    timer_irqs++;
    con_puts("sbi-hello: timer interrupt ");
    con_dec(timer_irqs);
    con_puts(", scause ");
    con_hex(cause, 16);
    con_puts("\n");
    /* Re-arm for the next tick, or push the deadline to the far future
       ((uint64_t)-1, 6.1) which clears the interrupt without another one. */
    if (timer_irqs < labvmm_param_ticks)
        set_timer(read_time() + labvmm_param_interval);
    else
        set_timer(UINT64_MAX);
}

static const char *yes_no(int64_t v) { return v ? "yes" : "no"; }

int main(uint64_t hartid, uint64_t dtb)
{
    struct sbiret r;

    /* Discovery first, so the console knows whether DBCN is there. */
    have_dbcn = sbi_call(SBI_EXT_BASE, SBI_BASE_PROBE_EXTENSION, SBI_EXT_DBCN, 0, 0).value != 0;

    con_puts("sbi-hello: S-mode on hart ");
    con_dec(hartid);
    con_puts(", device tree at ");
    con_hex(dtb, 1);
    con_puts("\n");

    /* Base (ch. 4): spec version is major in bits 30:24, minor in 23:0. */
    r = sbi_call(SBI_EXT_BASE, SBI_BASE_GET_SPEC_VERSION, 0, 0, 0);
    con_puts("sbi-hello: SBI spec version ");
    con_dec(((uint64_t)r.value >> 24) & 0x7f);
    con_puts(".");
    con_dec((uint64_t)r.value & 0xffffff);
    r = sbi_call(SBI_EXT_BASE, SBI_BASE_GET_IMPL_ID, 0, 0, 0);
    con_puts(", implementation id ");
    con_dec((uint64_t)r.value);
    con_puts("\n");

    con_puts("sbi-hello: extensions: TIME ");
    con_puts(yes_no(sbi_call(SBI_EXT_BASE, SBI_BASE_PROBE_EXTENSION, SBI_EXT_TIME, 0, 0).value));
    con_puts(", DBCN ");
    con_puts(yes_no(have_dbcn));
    con_puts(", SRST ");
    con_puts(yes_no(sbi_call(SBI_EXT_BASE, SBI_BASE_PROBE_EXTENSION, SBI_EXT_SRST, 0, 0).value));
    con_puts("\n");

    /* One line through the legacy console putchar (5.2), one call per byte. */
    for (const char *s = "sbi-hello: this line came through legacy putchar\n"; *s; s++)
        legacy_putchar(*s);

    /* Timer: vector, per-source enable (sie.STIE), global enable (SIE). */
    con_puts("sbi-hello: waiting for ");
    con_dec(labvmm_param_ticks);
    con_puts(" timer interrupts\n");
    csr_write(stvec, (uint64_t)(uintptr_t)trap_handler);
    csr_set(sie, SIE_STIE);
    set_timer(read_time() + labvmm_param_interval);

    /* Check-then-sleep with SIE clear: wfi still wakes on a pending enabled
       interrupt whatever SIE says (priv spec 3.3.3), so a tick that lands
       between the check and the wfi is not lost. Setting SIE then lets the
       pending interrupt in, and we mask again before the next check. */
    while (timer_irqs < labvmm_param_ticks) {
        wfi();
        csr_set(sstatus, SSTATUS_SIE);
        csr_clear(sstatus, SSTATUS_SIE);
    }
    csr_clear(sie, SIE_STIE);

    /* labvmm's own extension: yield (fid 0), then "which VM am I" (fid 1). */
    r = sbi_call(SBI_EXT_LABVMM, SBI_LABVMM_YIELD, 0, 0, 0);
    if (r.error == SBI_SUCCESS) {
        con_puts("sbi-hello: labvmm yield returned\n");
        r = sbi_call(SBI_EXT_LABVMM, SBI_LABVMM_VM_ID, 0, 0, 0);
        if (r.error == SBI_SUCCESS) {
            con_puts("sbi-hello: labvmm says this is VM ");
            con_dec((uint64_t)r.value);
            con_puts("\n");
        }
    } else {
        con_puts("sbi-hello: no labvmm extension (error ");
        con_puts(r.error == SBI_ERR_NOT_SUPPORTED ? "not supported" : "other");
        con_puts(")\n");
    }

    /* SRST system_reset (10.1): type 0 = shutdown, reason 0 = no reason. */
    con_puts("sbi-hello: shutting down via SRST\n");
    r = sbi_call(SBI_EXT_SRST, 0, 0, 0, 0);
    con_puts("sbi-hello: SRST failed with error -"); /* SBI errors are negative */
    con_dec((uint64_t)-r.error);
    con_puts("\n");
    halt();
}
