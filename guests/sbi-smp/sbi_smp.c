/* sbi-smp: an S-mode guest that brings up its machine's other harts through
   SBI (labvmm as its firmware, or OpenSBI on QEMU).

   SBI v2.0: Hart State Management (HSM, chapter 9), IPI (chapter 7) and
   RFENCE (chapter 8), found with Base probe_extension (4.4). The boot hart
   (whichever the firmware booted: hart 0 on labvmm) reads the HSM status
   of every hart the device tree lists, and of one past the last (refused
   with SBI_ERR_INVALID_PARAM); starts each other hart with hart_start(id,
   secondary_entry, opaque), where each checks a0 = its id and a1 = opaque and
   prints one line, in hart order (a ticket under a spinlock); then gives each
   secondary a command through memory and an IPI: the secondary sleeps in
   wfi with sie.SSIE set, takes the supervisor software interrupt, and acts
   only once it has. One secondary runs code the boot hart wrote, twice, with
   remote_fence_i after each rewrite; remote_sfence_vma to every hart
   succeeds; the last secondary stops itself with hart_stop, the boot hart
   sees it STOPPED and starts it again. Then SRST shutdown.

   Every line is printed with the console lock held and in an order fixed by
   the program, never by timing, so every run prints the same bytes. */
#include <stdint.h>
#include "csr.h"
#include "sbi.h"
#include "smp.h"

#define SBI_EXT_HSM 0x48534D     /* "HSM" */
#define SBI_EXT_IPI 0x735049     /* "sPI" */
#define SBI_EXT_RFENCE 0x52464E43 /* "RFNC" */
#define HSM_HART_START 0
#define HSM_HART_STOP 1
#define HSM_HART_GET_STATUS 2
#define HSM_STARTED 0
#define HSM_STOPPED 1
#define RFENCE_FENCE_I 0
#define RFENCE_SFENCE_VMA 1

#define SIE_SSIE (1ull << 1) /* supervisor software interrupt (priv 4.1.3) */
#define SIP_SSIP (1ull << 1)
#define CAUSE_S_SOFT (CAUSE_INTERRUPT | 1)

/* a1 at a secondary's start: this base, the start generation in bits 8-15, the hart id in 0-7. */
#define OPAQUE_BASE 0x5350000000000000ull

enum { CMD_NONE, CMD_REPORT, CMD_RUN_CODE, CMD_STOP };

extern void secondary_entry(void);
uint8_t secondary_stacks[SMP_MAX_HARTS][SMP_STACK_BYTES] __attribute__((aligned(16)));

static spinlock_t console_lock;
static volatile uint32_t turn;                   /* the ticket of the next hart to print its start line */
static volatile uint32_t ticket[SMP_MAX_HARTS];  /* each hart's ticket, set before it is started */
static volatile uint32_t command[SMP_MAX_HARTS]; /* CMD_*; the secondary sets CMD_NONE when done */
static volatile uint32_t ipis[SMP_MAX_HARTS];    /* supervisor software interrupts each hart took */
static volatile uint64_t code_result[SMP_MAX_HARTS];
static uint32_t code_page[1024] __attribute__((aligned(4096)));

static void say(const char *s) { sbi_puts(s); }

static void say_dec(uint64_t v) { sbi_put_dec(v); }

static void say_err(int64_t e)
{
    if (e < 0) {
        say("-");
        say_dec((uint64_t)-e);
    } else {
        say_dec((uint64_t)e);
    }
}

static const char *status_name(int64_t s)
{
    static const char *const names[] = {"started", "stopped", "start pending", "stop pending",
                                        "suspended", "suspend pending", "resume pending"};
    return s >= 0 && s < 7 ? names[s] : "unknown";
}

/* RFENCE function fid (8.1-8.3) for hart_mask, hart_mask_base and the range
   start_addr, size: four arguments, one more than sbi.h's sbi_call passes. */
static struct sbiret sbi_rfence(uint64_t fid, uint64_t mask, uint64_t base, uint64_t start, uint64_t size)
{
    register uint64_t a0 __asm__("a0") = mask, a1 __asm__("a1") = base;
    register uint64_t a2 __asm__("a2") = start, a3 __asm__("a3") = size;
    register uint64_t a6 __asm__("a6") = fid, a7 __asm__("a7") = SBI_EXT_RFENCE;
    __asm__ volatile("ecall" : "+r"(a0), "+r"(a1) : "r"(a2), "r"(a3), "r"(a6), "r"(a7) : "memory");
    return (struct sbiret){.error = (int64_t)a0, .value = (int64_t)a1};
}

static struct sbiret hart_status(uint64_t hart) { return sbi_call(SBI_EXT_HSM, HSM_HART_GET_STATUS, hart, 0, 0); }

/* The hart_mask of one hart: mask 1 at base hart (3.1). */
static struct sbiret send_ipi(uint64_t hart) { return sbi_call(SBI_EXT_IPI, 0, 1, hart, 0); }

__attribute__((interrupt("supervisor"), aligned(4))) static void trap_handler(void)
{
    uint64_t me = csr_read(sscratch); /* the hart id, put there at its start */
    uint64_t cause = csr_read(scause);
    if (cause == CAUSE_S_SOFT) {
        csr_clear(sip, SIP_SSIP); /* the IPI is ours to acknowledge (7.1) */
        ipis[me]++;
        return;
    }
    spin_lock(&console_lock);
    say("sbi-smp: unexpected trap on hart ");
    say_dec(me);
    say(", scause ");
    sbi_put_hex(cause, 16);
    say("\n");
    spin_unlock(&console_lock);
    sbi_call(0x53525354, 0, 0, 1, 0); /* SRST shutdown, reason: failure */
    for (;;)
        wfi();
}

/* The check-then-sleep of sbi-hello: wfi with SIE clear wakes on a pending
   enabled interrupt (priv 3.3.3); setting SIE then takes it. */
static void wait_for_ipi(uint64_t me, uint32_t count)
{
    while (ipis[me] < count) {
        wfi();
        csr_set(sstatus, SSTATUS_SIE);
        csr_clear(sstatus, SSTATUS_SIE);
    }
}

void secondary_main(uint64_t a0, uint64_t a1)
{
    uint64_t me = a0;
    csr_write(sscratch, me);
    csr_write(stvec, (uint64_t)(uintptr_t)trap_handler);
    int opaque_ok = (a1 & ~0xFFFFull) == OPAQUE_BASE && (a1 & 0xFF) == me;
    uint64_t generation = (a1 >> 8) & 0xFF;
    uint64_t satp = csr_read(satp), sie = (csr_read(sstatus) & SSTATUS_SIE) != 0;

    for (int printed = 0; !printed;) {
        spin_lock(&console_lock);
        if (turn == ticket[me]) {
            say("sbi-smp: hart ");
            say_dec(me);
            say(generation ? " started again" : " started");
            say(": a0 = ");
            say_dec(a0);
            say(", a1 = ");
            sbi_put_hex(a1, 16);
            say(opaque_ok ? " (the opaque value)" : " (NOT the opaque value)");
            say(", satp = ");
            say_dec(satp);
            say(", sstatus.SIE = ");
            say_dec(sie);
            say("\n");
            turn = turn + 1;
            printed = 1;
        }
        spin_unlock(&console_lock);
    }

    /* Commands: each comes with exactly one IPI, and is carried out only once
       that IPI was taken, so what a secondary reports never depends on when
       it happened to look. */
    csr_set(sie, SIE_SSIE);
    uint32_t seen = ipis[me];
    for (;;) {
        uint32_t cmd;
        while ((cmd = load_acquire32(&command[me])) == CMD_NONE)
            wfi();
        wait_for_ipi(me, ++seen);
        if (cmd == CMD_REPORT) {
            spin_lock(&console_lock);
            say("sbi-smp: hart ");
            say_dec(me);
            say(" woke from wfi and took supervisor software interrupt number ");
            say_dec(ipis[me]);
            say("\n");
            spin_unlock(&console_lock);
        } else if (cmd == CMD_RUN_CODE) {
            code_result[me] = ((uint64_t(*)(void))(uintptr_t)code_page)();
        } else if (cmd == CMD_STOP) {
            spin_lock(&console_lock);
            say("sbi-smp: hart ");
            say_dec(me);
            say(" stops itself with hart_stop\n");
            spin_unlock(&console_lock);
            csr_clear(sie, SIE_SSIE);
            store_release32(&command[me], CMD_NONE);
            struct sbiret r = sbi_call(SBI_EXT_HSM, HSM_HART_STOP, 0, 0, 0);
            spin_lock(&console_lock); /* hart_stop returns only on failure (9.2) */
            say("sbi-smp: hart_stop failed with error ");
            say_err(r.error);
            say("\n");
            spin_unlock(&console_lock);
            for (;;)
                wfi();
        }
        store_release32(&command[me], CMD_NONE);
    }
}

/* Give `hart` a command and its IPI, and wait until it is done. */
static int64_t order(uint64_t hart, uint32_t cmd)
{
    store_release32(&command[hart], cmd);
    struct sbiret r = send_ipi(hart);
    if (r.error == SBI_SUCCESS)
        while (load_acquire32(&command[hart]) != CMD_NONE)
            ;
    return r.error;
}

/* `li a0, value; ret` at code_page (addi a0, zero, value; jalr zero, 0(ra)). */
static void write_code(uint32_t value)
{
    volatile uint32_t *page = code_page;
    page[0] = (value << 20) | (10u << 7) | 0x13;
    page[1] = 0x00008067;
    __asm__ volatile("fence.i" : : : "memory"); /* this hart's own fetches (Zifencei) */
}

static void say_result(const char *what, int64_t error)
{
    say("sbi-smp: ");
    say(what);
    say(error == SBI_SUCCESS ? ": ok\n" : ": error ");
    if (error != SBI_SUCCESS) {
        say_err(error);
        say("\n");
    }
}

static __attribute__((noreturn)) void shutdown(int failed)
{
    say(failed ? "sbi-smp: FAILED, shutting down via SRST\n" : "sbi-smp: shutting down via SRST\n");
    sbi_call(0x53525354, 0, 0, failed ? 1 : 0, 0);
    for (;;)
        wfi();
}

int main(uint64_t boot, uint64_t dtb)
{
    sbi_console_init();
    struct fdt_device cpus[SMP_MAX_HARTS + 1];
    int harts = smp_find_harts(dtb, cpus);
    int failed = 0;
    if (harts < 0) {
        say("sbi-smp: the device tree lists no harts, more than 8, or a hart id above 7\n");
        shutdown(1);
    }
    say("sbi-smp: ");
    say_dec((uint64_t)harts);
    say(harts == 1 ? " hart" : " harts");
    say(", booted on hart ");
    say_dec(boot);
    say("\n");

    int64_t hsm = sbi_call(SBI_EXT_BASE, SBI_BASE_PROBE_EXTENSION, SBI_EXT_HSM, 0, 0).value;
    int64_t ipi = sbi_call(SBI_EXT_BASE, SBI_BASE_PROBE_EXTENSION, SBI_EXT_IPI, 0, 0).value;
    int64_t rfence = sbi_call(SBI_EXT_BASE, SBI_BASE_PROBE_EXTENSION, SBI_EXT_RFENCE, 0, 0).value;
    say("sbi-smp: extensions: HSM ");
    say(hsm ? "yes" : "no");
    say(", IPI ");
    say(ipi ? "yes" : "no");
    say(", RFENCE ");
    say(rfence ? "yes" : "no");
    say("\n");
    if (!hsm || !ipi || !rfence)
        shutdown(1);

    for (int i = 0; i < harts; i++) {
        struct sbiret r = hart_status(cpus[i].base);
        say("sbi-smp: hart ");
        say_dec(cpus[i].base);
        say(": ");
        say(r.error ? "error" : status_name(r.value));
        say("\n");
        int64_t want = cpus[i].base == boot ? HSM_STARTED : HSM_STOPPED;
        failed |= r.error != SBI_SUCCESS || r.value != want;
    }
    struct sbiret r = hart_status((uint64_t)harts);
    say("sbi-smp: hart_get_status of hart ");
    say_dec((uint64_t)harts);
    say(" (there is none): error ");
    say_err(r.error);
    say("\n");
    failed |= r.error != -3; /* SBI_ERR_INVALID_PARAM */
    r = sbi_call(SBI_EXT_HSM, HSM_HART_START, boot, (uint64_t)(uintptr_t)secondary_entry, 0);
    say("sbi-smp: hart_start of the running boot hart: error ");
    say_err(r.error);
    say("\n");
    failed |= r.error != -6; /* SBI_ERR_ALREADY_AVAILABLE */

    /* Tickets in hart order, then start them all: each prints when its ticket comes up. */
    uint64_t secondaries[SMP_MAX_HARTS];
    int count = 0;
    for (int i = 0; i < harts; i++)
        if (cpus[i].base != boot) {
            ticket[cpus[i].base] = (uint32_t)count;
            secondaries[count++] = cpus[i].base;
        }
    int64_t start_error[SMP_MAX_HARTS];
    for (int i = 0; i < count; i++)
        start_error[i] = sbi_call(SBI_EXT_HSM, HSM_HART_START, secondaries[i],
                                  (uint64_t)(uintptr_t)secondary_entry, OPAQUE_BASE | secondaries[i]).error;
    for (int i = 0; i < count; i++)
        if (start_error[i] != SBI_SUCCESS) {
            spin_lock(&console_lock);
            say("sbi-smp: hart_start of hart ");
            say_dec(secondaries[i]);
            say(" failed: error ");
            say_err(start_error[i]);
            say("\n");
            spin_unlock(&console_lock);
            shutdown(1);
        }
    while (load_acquire32(&turn) != (uint32_t)count)
        ;

    /* From here a secondary prints only when told to, and the boot hart only
       while none is busy: no lock needed on this side. */
    if (count == 0)
        say("sbi-smp: no other hart to start\n");
    for (int i = 0; i < count; i++) {
        failed |= order(secondaries[i], CMD_REPORT) != SBI_SUCCESS;
    }

    uint64_t mask_all = 0;
    for (int i = 0; i < harts; i++)
        mask_all |= 1ull << cpus[i].base;
    r = sbi_rfence(RFENCE_FENCE_I, mask_all, 0, 0, 0);
    say_result("remote_fence_i to every hart", r.error);
    failed |= r.error != SBI_SUCCESS;
    /* start_addr 0 and size 0: the whole address space (8.3). */
    r = sbi_rfence(RFENCE_SFENCE_VMA, mask_all, 0, 0, 0);
    say_result("remote_sfence_vma to every hart", r.error);
    failed |= r.error != SBI_SUCCESS;

    if (count > 0) {
        uint64_t runner = secondaries[0];
        uint64_t got[2];
        for (int round = 0; round < 2; round++) {
            write_code(42 + (uint32_t)round);
            r = sbi_rfence(RFENCE_FENCE_I, 1, runner, 0, 0);
            failed |= r.error != SBI_SUCCESS || order(runner, CMD_RUN_CODE) != SBI_SUCCESS;
            got[round] = code_result[runner];
        }
        say("sbi-smp: hart ");
        say_dec(runner);
        say(" ran code hart ");
        say_dec(boot);
        say(" wrote: ");
        say_dec(got[0]);
        say(", and after a rewrite and remote_fence_i: ");
        say_dec(got[1]);
        say("\n");
        failed |= got[0] != 42 || got[1] != 43;

        uint64_t last = secondaries[count - 1];
        failed |= order(last, CMD_STOP) != SBI_SUCCESS;
        int64_t status = -1;
        for (uint64_t tries = 0; tries < 1000000 && status != HSM_STOPPED; tries++) {
            r = hart_status(last);
            status = r.error ? -1 : r.value;
        }
        say("sbi-smp: hart_get_status of hart ");
        say_dec(last);
        say(": ");
        say(status_name(status));
        say("\n");
        failed |= status != HSM_STOPPED;

        uint32_t now = turn;
        ticket[last] = now;
        r = sbi_call(SBI_EXT_HSM, HSM_HART_START, last, (uint64_t)(uintptr_t)secondary_entry,
                     OPAQUE_BASE | (1u << 8) | last);
        failed |= r.error != SBI_SUCCESS;
        while (r.error == SBI_SUCCESS && load_acquire32(&turn) != now + 1)
            ;
    }
    for (int i = 0; i < harts; i++) {
        r = hart_status(cpus[i].base);
        say("sbi-smp: hart ");
        say_dec(cpus[i].base);
        say(" at the end: ");
        say(r.error ? "error" : status_name(r.value));
        say("\n");
        failed |= r.error != SBI_SUCCESS || r.value != HSM_STARTED;
    }
    shutdown(failed);
}
