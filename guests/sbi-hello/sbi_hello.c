/* sbi-hello: an S-mode guest that talks only to its SBI firmware (labvmm, or
   OpenSBI on QEMU). Demonstrates the SBI calling convention (ecall with
   a7 = extension id, a6 = function id, a0..a5 arguments; a0 = error and
   a1 = value on return; SBI spec v2.0, chapter 3), extension discovery,
   console output without touching a device, supervisor timer interrupts via
   SBI set_timer, labvmm's own firmware extension, and shutdown via SRST. */
#include <stdint.h>
#include "csr.h"
#include "sbi.h"

/* Guest parameters: patched by labvmm's ELF loader through the symbol table. */
volatile uint64_t labvmm_param_ticks = 3;         /* timer interrupts to take */
volatile uint64_t labvmm_param_interval = 100000; /* time ticks apart (10 ms) */

/* Extension ids, the calling convention and the console: sbi.h. labvmm's
   own extension (SBI_EXT_LABVMM) has these functions: */
#define SBI_LABVMM_YIELD 0
#define SBI_LABVMM_VM_ID 1

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
        sbi_puts("sbi-hello: unexpected trap, scause ");
        sbi_put_hex(cause, 16);
        sbi_puts(" sepc ");
        sbi_put_hex(csr_read(sepc), 1);
        sbi_puts("\n");
        halt();
    }
    timer_irqs++;
    sbi_puts("sbi-hello: timer interrupt ");
    sbi_put_dec(timer_irqs);
    sbi_puts(", scause ");
    sbi_put_hex(cause, 16);
    sbi_puts("\n");
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
    sbi_console_init();

    sbi_puts("sbi-hello: S-mode on hart ");
    sbi_put_dec(hartid);
    sbi_puts(", device tree at ");
    sbi_put_hex(dtb, 1);
    sbi_puts("\n");

    /* Base (ch. 4): spec version is major in bits 30:24, minor in 23:0. */
    r = sbi_call(SBI_EXT_BASE, SBI_BASE_GET_SPEC_VERSION, 0, 0, 0);
    sbi_puts("sbi-hello: SBI spec version ");
    sbi_put_dec(((uint64_t)r.value >> 24) & 0x7f);
    sbi_puts(".");
    sbi_put_dec((uint64_t)r.value & 0xffffff);
    r = sbi_call(SBI_EXT_BASE, SBI_BASE_GET_IMPL_ID, 0, 0, 0);
    sbi_puts(", implementation id ");
    sbi_put_dec((uint64_t)r.value);
    sbi_puts("\n");

    sbi_puts("sbi-hello: extensions: TIME ");
    sbi_puts(yes_no(sbi_call(SBI_EXT_BASE, SBI_BASE_PROBE_EXTENSION, SBI_EXT_TIME, 0, 0).value));
    sbi_puts(", DBCN ");
    sbi_puts(yes_no(sbi_have_dbcn));
    sbi_puts(", SRST ");
    sbi_puts(yes_no(sbi_call(SBI_EXT_BASE, SBI_BASE_PROBE_EXTENSION, SBI_EXT_SRST, 0, 0).value));
    sbi_puts("\n");

    /* One line through the legacy console putchar (5.2), one call per byte. */
    for (const char *s = "sbi-hello: this line came through legacy putchar\n"; *s; s++)
        sbi_legacy_putchar(*s);

    /* Timer: vector, per-source enable (sie.STIE), global enable (SIE). */
    sbi_puts("sbi-hello: waiting for ");
    sbi_put_dec(labvmm_param_ticks);
    sbi_puts(" timer interrupts\n");
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
        sbi_puts("sbi-hello: labvmm yield returned\n");
        r = sbi_call(SBI_EXT_LABVMM, SBI_LABVMM_VM_ID, 0, 0, 0);
        if (r.error == SBI_SUCCESS) {
            sbi_puts("sbi-hello: labvmm says this is VM ");
            sbi_put_dec((uint64_t)r.value);
            sbi_puts("\n");
        }
    } else {
        sbi_puts("sbi-hello: no labvmm extension (error ");
        sbi_puts(r.error == SBI_ERR_NOT_SUPPORTED ? "not supported" : "other");
        sbi_puts(")\n");
    }

    /* SRST system_reset (10.1): type 0 = shutdown, reason 0 = no reason. */
    sbi_puts("sbi-hello: shutting down via SRST\n");
    r = sbi_call(SBI_EXT_SRST, 0, 0, 0, 0);
    sbi_puts("sbi-hello: SRST failed with error -"); /* SBI errors are negative */
    sbi_put_dec((uint64_t)-r.error);
    sbi_puts("\n");
    halt();
}
