/* rtc-test: an S-mode kernel that finds a Goldfish real-time clock in the
   device tree and tests it, as Linux does on QEMU's virt machine. labvmm
   (or OpenSBI) is its SBI firmware: the console is SBI DBCN, shutdown is SRST.

   The RTC is not a built-in labvmm device: attach one with
   Host.create_vm("rtc-test", devices={"rtc": (0x101000, my_rtc, 11)}) and give
   it compatible = "google,goldfish-rtc" (labvmm.attach). Register layout of
   the Goldfish RTC as QEMU's hw/rtc/goldfish_rtc.c has it (all 32-bit):
     0x00 TIME_LOW (read; latches TIME_HIGH)   0x04 TIME_HIGH
     0x08 ALARM_LOW (write; arms the alarm)    0x0c ALARM_HIGH
     0x10 IRQ_ENABLED  0x14 CLEAR_ALARM  0x18 ALARM_STATUS  0x1c CLEAR_INTERRUPT
   Time is in nanoseconds. The guest prints what it reads, so a test can
   compare it with the VM's virtual clock. Exit: SRST shutdown, reason 0 when
   every check passed, reason 1 (system failure) otherwise. */
#include <stdint.h>
#include "csr.h"
#include "fmt.h"
#include "mmio.h"
#include "plic.h"
#include "sbi.h"

volatile uint64_t labvmm_param_spin = 10000;       /* loop rounds between the two reads */
volatile uint64_t labvmm_param_alarm_ns = 2000000; /* alarm this far after the second read (2 ms) */

#define RTC_TIME_LOW 0x00
#define RTC_TIME_HIGH 0x04
#define RTC_ALARM_LOW 0x08
#define RTC_ALARM_HIGH 0x0c
#define RTC_IRQ_ENABLED 0x10
#define RTC_ALARM_STATUS 0x18
#define RTC_CLEAR_INTERRUPT 0x1c

#define SIE_SEIE (1ull << 9) /* supervisor external interrupt (priv spec 4.1.3) */
#define CAUSE_S_EXTERNAL (CAUSE_INTERRUPT | 9)

/* ---- SBI (sbi.h): DBCN console (ch. 12) and SRST shutdown (ch. 10) ----
   Not sbi.h's console, which probes for DBCN first: this one just tries a
   DBCN write (12.1) of the whole string, and when it fails (firmware older
   than SBI 2.0, like QEMU's OpenSBI 1.0, has no DBCN) sends it through the
   legacy console putchar (5.2), one call per byte. */
static void con_puts(const char *s)
{
    uint64_t len = 0;
    while (s[len])
        len++;
    if (sbi_call(SBI_EXT_DBCN, 0, len, (uint64_t)(uintptr_t)s, 0).error == SBI_SUCCESS)
        return;
    while (*s)
        sbi_legacy_putchar(*s++);
}

static void con_dec(uint64_t v) { fmt_put_dec(con_puts, v); }
static void con_hex(uint64_t v) { fmt_put_hex(con_puts, v, 1); }

static __attribute__((noreturn)) void shutdown(uint64_t failure)
{
    sbi_call(SBI_EXT_SRST, 0, 0, failure, 0); /* SRST system_reset(shutdown, reason) */
    for (;;)
        wfi();
}

/* ---- the device tree (Devicetree spec v0.4, chapter 5): find the RTC ---- */
#define FDT_BEGIN_NODE 1
#define FDT_END_NODE 2
#define FDT_PROP 3
#define FDT_NOP 4
#define FDT_END 9

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int str_eq(const char *a, const char *b)
{
    while (*a && *a == *b)
        a++, b++;
    return *a == *b;
}

/* A node under /soc whose compatible is `want`: its first reg address (two
   cells, as /soc's #address-cells says on virt) and its interrupt (0: none). */
static int fdt_find_compatible(const uint8_t *fdt, const char *want, uint64_t *base, uint32_t *irq)
{
    if (be32(fdt) != 0xd00dfeedu)
        return 0;
    const uint8_t *p = fdt + be32(fdt + 8);
    const char *strings = (const char *)fdt + be32(fdt + 12);
    uint64_t reg = 0;
    uint32_t interrupts = 0;
    int match = 0;
    for (;;) {
        uint32_t token = be32(p);
        p += 4;
        if (token == FDT_BEGIN_NODE) {
            while (*p)
                p++;
            p = (const uint8_t *)(((uintptr_t)p + 4) & ~(uintptr_t)3);
            reg = 0, interrupts = 0, match = 0; /* properties come before child nodes */
        } else if (token == FDT_END_NODE) {
            if (match) {
                *base = reg, *irq = interrupts;
                return 1;
            }
            match = 0;
        } else if (token == FDT_PROP) {
            uint32_t len = be32(p);
            const char *name = strings + be32(p + 4);
            const uint8_t *value = p + 8;
            if (str_eq(name, "compatible") && len > 0 && str_eq((const char *)value, want))
                match = 1;
            else if (str_eq(name, "reg") && len >= 8)
                reg = (uint64_t)be32(value) << 32 | be32(value + 4);
            else if (str_eq(name, "interrupts") && len >= 4)
                interrupts = be32(value);
            p = value + ((len + 3) & ~3u);
        } else if (token != FDT_NOP) {
            return 0; /* FDT_END or garbage */
        }
    }
}

/* ---- the RTC ---- */
static uintptr_t rtc;
static uint32_t rtc_irq;
static volatile uint64_t alarm_time_seen; /* the time read in the interrupt handler */
static volatile uint64_t alarm_status_seen;
static volatile int alarms;

static uint64_t rtc_read_time(void)
{
    /* TIME_LOW first: reading it latches the high half into TIME_HIGH. */
    uint64_t low = mmio_read32(rtc + RTC_TIME_LOW);
    uint64_t high = mmio_read32(rtc + RTC_TIME_HIGH);
    return high << 32 | low;
}

__attribute__((interrupt("supervisor"), aligned(4))) static void trap_handler(void)
{
    uint64_t cause = csr_read(scause);
    if (cause != CAUSE_S_EXTERNAL) {
        con_puts("rtc-test: unexpected trap, scause ");
        con_hex(cause);
        con_puts(" sepc ");
        con_hex(csr_read(sepc));
        con_puts("\n");
        shutdown(1);
    }
    uint32_t source = plic_claim(PLIC_CTX_HART0_S);
    if (source == rtc_irq) {
        alarm_time_seen = rtc_read_time();
        alarm_status_seen = mmio_read32(rtc + RTC_ALARM_STATUS);
        mmio_write32(rtc + RTC_CLEAR_INTERRUPT, 1); /* lower the line before completing */
        alarms++;
    }
    if (source)
        plic_complete(PLIC_CTX_HART0_S, source);
}

int main(uint64_t hartid, uint64_t dtb)
{
    (void)hartid;
    uint64_t base = 0;
    if (!fdt_find_compatible((const uint8_t *)(uintptr_t)dtb, "google,goldfish-rtc", &base, &rtc_irq)) {
        con_puts("rtc-test: no google,goldfish-rtc in the device tree\n");
        shutdown(1);
    }
    rtc = (uintptr_t)base;
    con_puts("rtc-test: goldfish RTC at ");
    con_hex(base);
    con_puts(", irq ");
    con_dec(rtc_irq);
    con_puts("\n");

    uint64_t t1 = rtc_read_time();
    for (volatile uint64_t i = 0; i < labvmm_param_spin; i++)
        ;
    uint64_t t2 = rtc_read_time();
    int ok = t2 > t1;
    con_puts("rtc-test: time ");
    con_dec(t1);
    con_puts(" ns, then ");
    con_dec(t2);
    con_puts(" ns: ");
    con_puts(ok ? "advancing\n" : "NOT ADVANCING\n");

    if (rtc_irq == 0) {
        con_puts("rtc-test: no interrupt in the device tree, alarm not tested\n");
        shutdown(!ok);
    }
    /* The alarm goes off through PLIC source rtc_irq to hart 0's S-mode context. */
    csr_write(stvec, (uint64_t)(uintptr_t)trap_handler);
    plic_set_priority(rtc_irq, 1);
    plic_set_threshold(PLIC_CTX_HART0_S, 0);
    plic_enable(PLIC_CTX_HART0_S, rtc_irq);
    csr_set(sie, SIE_SEIE);

    uint64_t alarm = t2 + labvmm_param_alarm_ns;
    mmio_write32(rtc + RTC_IRQ_ENABLED, 1);
    mmio_write32(rtc + RTC_ALARM_HIGH, (uint32_t)(alarm >> 32));
    mmio_write32(rtc + RTC_ALARM_LOW, (uint32_t)alarm); /* arms it */
    con_puts("rtc-test: alarm set for ");
    con_dec(alarm);
    con_puts(" ns\n");

    /* Sleep with SIE clear, then let a pending interrupt in (as sbi-hello). */
    while (!alarms) {
        wfi();
        csr_set(sstatus, SSTATUS_SIE);
        csr_clear(sstatus, SSTATUS_SIE);
    }
    int on_time = alarm_time_seen >= alarm;
    con_puts("rtc-test: alarm interrupt at ");
    con_dec(alarm_time_seen);
    con_puts(" ns, alarm status ");
    con_dec(alarm_status_seen);
    con_puts(", ");
    con_puts(on_time ? "on time\n" : "TOO EARLY\n");
    ok = ok && on_time;
    con_puts(ok ? "rtc-test: PASS\n" : "rtc-test: FAIL\n");
    shutdown(!ok);
}
