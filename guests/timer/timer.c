/* timer: M-mode timer interrupts. Demonstrates a direct-mode trap vector
   (mtvec), the CLINT's mtime/mtimecmp, enabling an interrupt (mie.MTIE and
   mstatus.MIE), and idling in wfi between interrupts. The printed text never
   contains mtime values, so it is the same on any correct machine. */
#include <stdint.h>
#include "clint.h"
#include "csr.h"
#include "finisher.h"
#include "uart.h"

/* Guest parameters: patched by labvmm's ELF loader through the symbol table. */
volatile uint64_t labvmm_param_ticks = 5;         /* interrupts to take */
volatile uint64_t labvmm_param_interval = 100000; /* mtime ticks apart (10 ms) */

static uint64_t hart;
static uint64_t ticks_seen;
static uint64_t start_time;

static void unexpected_trap(uint64_t cause)
{
    uart_puts("timer: unexpected trap, mcause ");
    uart_put_hex(cause, 16);
    uart_puts(" mepc ");
    uart_put_hex(csr_read(mepc), 1);
    uart_puts("\n");
    power_off_fail(3);
}

/* The "interrupt" attribute makes the compiler save every register it
   touches and return with mret. In direct mode every trap enters at the
   mtvec base, which must be 4-byte aligned (priv spec v1.12, 3.1.7). */
__attribute__((interrupt("machine"), aligned(4))) static void trap_handler(void)
{
    uint64_t cause = csr_read(mcause);
    if (cause != CAUSE_M_TIMER)
        unexpected_trap(cause);

    ticks_seen++;
    uart_puts("tick ");
    uart_put_dec(ticks_seen);
    uart_puts("\n");

    if (ticks_seen >= labvmm_param_ticks) {
        /* mtime only moves forward and each deadline was set one interval
           after "now", so at least ticks * interval must have passed: a
           yes/no check that does not print machine-dependent numbers. */
        uint64_t elapsed = clint_mtime() - start_time;
        int ok = elapsed >= ticks_seen * labvmm_param_interval;
        uart_puts("timer: done, elapsed >= ticks * interval: ");
        uart_puts(ok ? "yes\n" : "NO\n");
        if (!ok)
            power_off_fail(1);
        power_off();
    }
    /* Writing a new compare value also clears mip.MTIP (3.2.1); without it
       the interrupt would be taken again right after mret. */
    clint_set_mtimecmp(hart, clint_mtime() + labvmm_param_interval);
}

int main(uint64_t hartid)
{
    hart = hartid;
    uart_puts("timer: ");
    uart_put_dec(labvmm_param_ticks);
    uart_puts(" interrupts, ");
    uart_put_dec(labvmm_param_interval);
    uart_puts(" mtime ticks apart (");
    uart_put_dec(labvmm_param_interval / (CLINT_TICKS_PER_SEC / 1000000));
    uart_puts(" us at 10 MHz)\n");

    /* Direct mode: MODE bits 1:0 = 0, all traps go to the base address. */
    csr_write(mtvec, (uint64_t)(uintptr_t)trap_handler);

    start_time = clint_mtime();
    clint_set_mtimecmp(hart, start_time + labvmm_param_interval);
    csr_set(mie, MIE_MTIE);
    csr_set(mstatus, MSTATUS_MIE);

    /* Everything else happens in the handler, which powers off after the
       last tick. Interrupts stay enabled, so wfi wakes into the handler. */
    for (;;)
        wfi();
}
