/* smp-spinlock: every hart of the machine counts under one lock.

   An M-mode guest for any number of harts (1-8; QEMU -smp N -bios none, or
   labvmm with vcpus=N). Hart 0 finds the harts in the device tree, prints
   how many, and releases the others with a machine software interrupt
   (CLINT msip) that wakes them from wfi. Then every hart, hart 0 too:

   - takes a spinlock built on LR/SC `rounds` times, and inside it increments
     a shared counter with a plain load and store (not atomic: only the lock
     keeps two harts from losing each other's increments);
   - does `rounds` amoadd.d on a second counter;
   - stores how often it took the lock and reports done with an amoadd.

   Hart 0 waits for all, prints each hart's count and both totals, and
   powers off with 0 when both totals are harts * rounds, else with 1. Only
   hart 0 prints, and only what does not depend on timing, so every run on
   any machine prints the same bytes. With `lock` = 0 the counter is updated
   without the lock: on several harts that loses increments and fails, which
   shows that the check can fail. */
#include <stdint.h>
#include "clint.h"
#include "csr.h"
#include "finisher.h"
#include "smp.h"
#include "uart.h"

volatile uint64_t labvmm_param_rounds = 1000; /* lock rounds and amoadds per hart */
volatile uint64_t labvmm_param_lock = 1;      /* 0: update the counter without the lock */

#define MIE_MSIE (1ull << 3) /* machine software interrupt enable (priv 3.1.9) */

/* In .data, not .bss: the secondaries read it before hart 0 clears .bss. */
__attribute__((section(".data"))) static volatile uint32_t released;

static spinlock_t counter_lock;
static volatile uint64_t locked_counter; /* only ever updated with counter_lock held */
static volatile uint64_t amo_counter;    /* only ever updated by amoadd.d */
static volatile uint64_t lock_rounds[SMP_MAX_HARTS];
static volatile uint32_t harts_done;

static void count(uint64_t hartid)
{
    uint64_t rounds = labvmm_param_rounds, taken = 0;
    int use_lock = labvmm_param_lock != 0;
    for (uint64_t i = 0; i < rounds; i++) {
        if (use_lock)
            spin_lock(&counter_lock);
        uint64_t v = locked_counter;
        /* A few instructions between the load and the store: a hart switched
           out here by the VMM (or preempted by QEMU) holds the lock meanwhile. */
        __asm__ volatile("nop\n nop\n nop" : : : "memory");
        locked_counter = v + 1;
        taken++;
        if (use_lock)
            spin_unlock(&counter_lock);
    }
    for (uint64_t i = 0; i < rounds; i++)
        atomic_add64(&amo_counter, 1);
    lock_rounds[hartid] = taken;
    atomic_add32_aqrl(&harts_done, 1);
}

/* Harts 1..n-1: wait for hart 0's software interrupt (mstatus.MIE stays clear:
   wfi returns when an interrupt enabled in mie is pending, without a trap). */
void secondary_main(uint64_t hartid)
{
    csr_set(mie, MIE_MSIE);
    while (!load_acquire32(&released))
        wfi();
    mmio_write32(CLINT_MSIP(hartid), 0);
    csr_clear(mie, MIE_MSIE);
    count(hartid);
}

static void put_line_dec(const char *before, uint64_t v, const char *after)
{
    uart_puts(before);
    uart_put_dec(v);
    uart_puts(after);
}

void boot_main(uint64_t hartid, uint64_t dtb)
{
    struct fdt_device cpus[SMP_MAX_HARTS + 1];
    int harts = smp_find_harts(dtb, cpus);
    if (harts < 0) {
        uart_puts("smp-spinlock: the device tree lists no harts, more than 8, or a hart id above 7\n");
        power_off_fail(2);
    }
    uint64_t rounds = labvmm_param_rounds;
    put_line_dec("smp-spinlock: ", (uint64_t)harts, harts == 1 ? " hart, " : " harts, ");
    put_line_dec("", rounds, labvmm_param_lock ? " rounds each under an LR/SC spinlock, then as many amoadds\n"
                                               : " rounds each WITHOUT the lock, then as many amoadds\n");

    store_release32(&released, 1);
    for (int i = 0; i < harts; i++)
        if (cpus[i].base != hartid)
            mmio_write32(CLINT_MSIP(cpus[i].base), 1);

    count(hartid);
    while (load_acquire32(&harts_done) != (uint32_t)harts)
        ;

    uint64_t expected = (uint64_t)harts * rounds;
    int ok = locked_counter == expected && amo_counter == expected;
    for (int i = 0; i < harts; i++) {
        uint64_t id = cpus[i].base;
        put_line_dec("smp-spinlock: hart ", id, "");
        put_line_dec(" counted ", lock_rounds[id], " rounds\n");
        ok = ok && lock_rounds[id] == rounds;
    }
    put_line_dec("smp-spinlock: counter under the lock ", locked_counter, "");
    put_line_dec(", expected ", expected, "\n");
    put_line_dec("smp-spinlock: amoadd counter ", amo_counter, "");
    put_line_dec(", expected ", expected, "\n");
    if (!ok) {
        uart_puts("smp-spinlock: MISMATCH\n");
        power_off_fail(1);
    }
    uart_puts("smp-spinlock: OK\n");
    power_off();
}
