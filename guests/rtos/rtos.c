/* rtos: a tiny preemptive real-time kernel in M-mode.

   Four tasks run in U-mode, each on its own 4 KiB stack, switched
   round-robin on CLINT timer interrupts (one tick = `interval` mtime
   ticks). A task reaches the kernel only through ecall (system calls:
   write, sleep, yield, exit) or by faulting. PMP (priv spec v1.12, 3.7)
   fences each task in: it may execute and read the image's code and
   constants, read and write its own stack, and nothing else, so a task that
   touches kernel memory or another task's stack takes an access fault and is
   killed. The kernel's own idle loop runs in M-mode and sleeps in wfi.

   The printed trace depends only on logical ticks (timer interrupts
   counted), never on mtime values or on how fast the CPU is, so it is the
   same on QEMU virt and on labvmm: tasks print in short bursts right after
   they wake, far shorter than a tick, and the CPU-bound task only runs
   when everyone else sleeps. The kernel powers off through the test
   finisher once every task but the endless `spin` has finished. */
#include <stdint.h>
#include "clint.h"
#include "csr.h"
#include "finisher.h"
#include "fmt.h"
#include "syscall.h"
#include "trapframe.h" /* struct context: what trap.S saves and restores */
#include "uart.h"

/* Guest parameters: patched by labvmm's ELF loader through the symbol table. */
volatile uint64_t labvmm_param_rounds = 3;        /* lines each printing task prints */
volatile uint64_t labvmm_param_interval = 100000; /* mtime ticks per kernel tick (10 ms) */
volatile uint64_t labvmm_param_attack = 1;        /* rogue: 1 store to the kernel, 2 load from ping's stack */

/* rtos's own system calls, beside write and exit (syscall.h). */
#define SYS_SLEEP 101 /* sleep(ticks): wake after that many timer ticks */
#define SYS_YIELD 124 /* yield(): let the next ready task run */

/* mstatus (3.1.6.1): the privilege mret returns to, and the MIE it restores. */
#define MSTATUS_MPP (3ull << 11)
#define MSTATUS_MPP_M (3ull << 11)
#define MSTATUS_MPIE (1ull << 7)

/* Exception causes (table 3.6) a task can raise besides ecall. */
#define CAUSE_ECALL_U 8

/* PMP configuration bits (3.7.1): R, W, X, address matching mode in bits 4:3. */
#define PMP_R 0x01
#define PMP_W 0x02
#define PMP_X 0x04
#define PMP_TOR 0x08 /* top of range: [pmpaddr(i-1), pmpaddr(i)) */

#define NTASKS 4
#define STACK_BYTES 4096

enum state { READY, SLEEPING, EXITED, KILLED };

struct task {
    struct context ctx; /* first: mscratch points here while the task runs */
    const char *name;
    enum state state;
    int endless;          /* the kernel does not wait for it to finish */
    uint64_t wake_tick;   /* while SLEEPING */
    int64_t exit_code;    /* once EXITED */
    uint64_t preemptions; /* timer ticks that took the CPU from it */
    uint64_t syscalls;
};

extern char _start[];
extern void rtos_trap_entry(void);
extern void rtos_idle(void);
extern __attribute__((noreturn)) void rtos_resume(struct context *ctx);

static struct task tasks[NTASKS];
static struct context idle_ctx;
static struct context *current;
static uint64_t ticks;
static uint64_t user_code_end; /* tasks may read and execute [_start, user_code_end) */

/* Each task's stack is one page of its own, page aligned, so PMP can give a
   task exactly its own stack and the translation caches never mix two. */
static uint8_t stacks[NTASKS][STACK_BYTES] __attribute__((aligned(STACK_BYTES)));
static uint8_t idle_stack[256] __attribute__((aligned(16)));

/* ---------------------------------------------------------------- user side */
/* Everything from here to "kernel side" runs in U-mode. */

static uint64_t str_len(const char *s)
{
    uint64_t n = 0;
    while (s[n])
        n++;
    return n;
}

static int64_t u_write(const char *s) { return syscall3(SYS_WRITE, (uint64_t)(uintptr_t)s, str_len(s)); }
static void u_sleep(uint64_t t) { syscall3(SYS_SLEEP, t, 0); }
static __attribute__((noreturn)) void u_exit(int64_t code)
{
    syscall3(SYS_EXIT, (uint64_t)code, 0);
    for (;;) /* not reached: exit never returns */
        ;
}

static void u_dec(uint64_t v)
{
    char buf[FMT_BUF_SIZE]; /* on the task's own stack */
    u_write(fmt_dec(buf, v));
}

/* Prints "<name>: round i of n" every `period` ticks, then exits with n. */
static __attribute__((noreturn)) void periodic(const char *name, uint64_t rounds, uint64_t period)
{
    for (uint64_t i = 1; i <= rounds; i++) {
        u_write(name);
        u_write(": round ");
        u_dec(i);
        u_write(" of ");
        u_dec(rounds);
        u_write("\n");
        u_sleep(period);
    }
    u_exit((int64_t)rounds);
}

static __attribute__((noreturn)) void task_ping(uint64_t rounds) { periodic("ping", rounds, 2); }
static __attribute__((noreturn)) void task_pong(uint64_t rounds) { periodic("pong", rounds, 3); }

/* CPU-bound and endless: it only runs when every other task sleeps, and the
   timer takes the CPU back from it at every tick. */
static __attribute__((noreturn)) void task_spin(uint64_t rounds)
{
    volatile uint64_t n = rounds;
    u_write("spin: computing forever\n");
    for (;;)
        n = n * 6364136223846793005ull + 1442695040888963407ull;
}

/* Tries to read kernel memory through a system call (refused), then, as
   `attack` says, to write the kernel's tick counter directly (1) or to read
   the top of ping's stack (2): PMP stops either access. */
static __attribute__((noreturn)) void task_rogue(uint64_t attack)
{
    char buf[FMT_BUF_SIZE];
    u_sleep(3);
    int64_t r = syscall3(SYS_WRITE, (uint64_t)(uintptr_t)&ticks, sizeof ticks);
    u_write("rogue: write() of the kernel's tick counter returned ");
    u_write(r < 0 ? "-" : "");
    u_dec((uint64_t)(r < 0 ? -r : r));
    if (attack == 2) {
        volatile uint64_t *victim = (volatile uint64_t *)(uintptr_t)(stacks[0] + STACK_BYTES - 8);
        u_write("\nrogue: reading ping's stack at ");
        u_write(fmt_hex(buf, (uint64_t)(uintptr_t)victim, 1));
        u_write("\n");
        u_write(*victim ? "rogue: read ping's stack!\n" : "rogue: read ping's stack (a zero)!\n");
    } else {
        u_write("\nrogue: storing 0 to the tick counter at ");
        u_write(fmt_hex(buf, (uint64_t)(uintptr_t)&ticks, 1));
        u_write("\n");
        *(volatile uint64_t *)&ticks = 0;
        u_write("rogue: the store went through!\n");
    }
    u_exit(1);
}

/* -------------------------------------------------------------- kernel side */

static const char *task_name(const struct context *ctx)
{
    return ctx == &idle_ctx ? "idle" : ((const struct task *)ctx)->name;
}

static void put_tick(void)
{
    uart_puts("[rtos] tick ");
    uart_put_dec(ticks);
    uart_puts(": ");
}

/* Give the task about to run its PMP window: code and constants (R+X) and
   its own stack (R+W). Entries 0 and 2 only supply the bottoms of the two
   TOR ranges. The sfence.vma drops translations cached under the previous
   task's window (3.7.2). */
static void pmp_enter(const struct task *t)
{
    uint64_t stack = (uint64_t)(uintptr_t)stacks[t - tasks];
    csr_write(pmpaddr0, (uint64_t)(uintptr_t)_start >> 2);
    csr_write(pmpaddr1, user_code_end >> 2);
    csr_write(pmpaddr2, stack >> 2);
    csr_write(pmpaddr3, (stack + STACK_BYTES) >> 2);
    csr_write(pmpcfg0, (uint64_t)(PMP_TOR | PMP_R | PMP_X) << 8 | (uint64_t)(PMP_TOR | PMP_R | PMP_W) << 24);
    __asm__ volatile("sfence.vma zero, zero" : : : "memory");
}

/* Round robin: the first READY task after the current one, wrapping around
   (the current one last); the idle loop when nobody is ready. */
static struct context *pick_next(void)
{
    int start = current == &idle_ctx ? NTASKS - 1 : (int)((struct task *)current - tasks);
    for (int i = 1; i <= NTASKS; i++) {
        struct task *t = &tasks[(start + i) % NTASKS];
        if (t->state == READY)
            return &t->ctx;
    }
    return &idle_ctx;
}

static int all_finished(void)
{
    for (int i = 0; i < NTASKS; i++)
        if (!tasks[i].endless && (tasks[i].state == READY || tasks[i].state == SLEEPING))
            return 0;
    return 1;
}

static __attribute__((noreturn)) void shutdown(void)
{
    uart_puts("[rtos] every task has finished at tick ");
    uart_put_dec(ticks);
    uart_puts("\n");
    for (int i = 0; i < NTASKS; i++) {
        struct task *t = &tasks[i];
        uart_puts("[rtos]   ");
        uart_puts(t->name);
        uart_puts(": ");
        if (t->state == EXITED) {
            uart_puts("exited with code ");
            uart_put_dec((uint64_t)t->exit_code);
        } else if (t->state == KILLED) {
            uart_puts("killed");
        } else {
            uart_puts("still running");
        }
        uart_puts(", ");
        uart_put_dec(t->syscalls);
        uart_puts(" system calls, preempted ");
        uart_put_dec(t->preemptions);
        uart_puts(" times\n");
    }
    uart_puts("[rtos] powering off\n");
    power_off();
}

/* Switch to the next context and log why the current one gave up the CPU. */
static struct context *reschedule(const char *why)
{
    struct context *prev = current;
    if (all_finished())
        shutdown();
    current = pick_next();
    if (current != prev) {
        put_tick();
        uart_puts(task_name(prev));
        uart_puts(" -> ");
        uart_puts(task_name(current));
        uart_puts(" (");
        uart_puts(why);
        uart_puts(")\n");
    }
    if (current == &idle_ctx) {
        csr_set(mstatus, MSTATUS_MPP_M | MSTATUS_MPIE); /* idle: M-mode, interrupts on */
    } else {
        csr_clear(mstatus, MSTATUS_MPP); /* tasks: U-mode */
        csr_set(mstatus, MSTATUS_MPIE);
        pmp_enter((struct task *)current);
    }
    return current;
}

/* [buf, buf + len) lies inside memory the task may read. */
static int user_readable(const struct task *t, uint64_t buf, uint64_t len)
{
    uint64_t stack = (uint64_t)(uintptr_t)stacks[t - tasks];
    uint64_t code = (uint64_t)(uintptr_t)_start;
    if (buf + len < buf)
        return 0;
    return (buf >= code && buf + len <= user_code_end) || (buf >= stack && buf + len <= stack + STACK_BYTES);
}

static struct context *do_syscall(struct task *t)
{
    uint64_t *x = t->ctx.x;
    uint64_t n = x[REG_A7], a0 = x[REG_A0], a1 = x[REG_A1];
    t->ctx.pc += 4; /* resume after the ecall */
    t->syscalls++;
    switch (n) {
    case SYS_WRITE:
        if (!user_readable(t, a0, a1)) {
            x[REG_A0] = (uint64_t)-EFAULT;
            return &t->ctx;
        }
        for (uint64_t i = 0; i < a1; i++)
            uart_putc(((const char *)(uintptr_t)a0)[i]);
        x[REG_A0] = a1;
        return &t->ctx;
    case SYS_SLEEP:
        t->state = SLEEPING;
        t->wake_tick = ticks + (a0 ? a0 : 1);
        return reschedule("sleep");
    case SYS_YIELD:
        x[REG_A0] = 0;
        return reschedule("yield");
    case SYS_EXIT:
        t->state = EXITED;
        t->exit_code = (int64_t)a0;
        return reschedule("exit");
    default:
        x[REG_A0] = (uint64_t)-ENOSYS;
        return &t->ctx;
    }
}

static const char *fault_name(uint64_t cause)
{
    switch (cause) {
    case 0: return "misaligned fetch";
    case 1: return "fetch access fault";
    case 2: return "illegal instruction";
    case 3: return "breakpoint";
    case 4: return "misaligned load";
    case 5: return "load access fault";
    case 6: return "misaligned store";
    case 7: return "store access fault";
    default: return "exception";
    }
}

static struct context *timer_tick(void)
{
    ticks++;
    /* The next tick is one whole interval after now, not after the previous
       deadline: a tick taken late (a busy host under QEMU) must not be
       followed by catch-up ticks that leave tasks no time to run. Writing
       mtimecmp clears mip.MTIP (3.2.1). */
    clint_set_mtimecmp(0, clint_mtime() + labvmm_param_interval);
    for (int i = 0; i < NTASKS; i++)
        if (tasks[i].state == SLEEPING && tasks[i].wake_tick <= ticks)
            tasks[i].state = READY;
    if (current != &idle_ctx)
        ((struct task *)current)->preemptions++;
    return reschedule("preempted");
}

/* Called from trap.S with the interrupted context saved in *ctx (== current);
   returns the context to resume. */
struct context *rtos_trap(struct context *ctx)
{
    uint64_t cause = csr_read(mcause);
    if (cause == CAUSE_M_TIMER)
        return timer_tick();
    if (ctx != &idle_ctx && cause == CAUSE_ECALL_U)
        return do_syscall((struct task *)ctx);
    if (ctx == &idle_ctx || (csr_read(mstatus) & MSTATUS_MPP) != 0) {
        uart_puts("[rtos] panic: kernel trap, mcause ");
        uart_put_hex(cause, 16);
        uart_puts(" mepc ");
        uart_put_hex(csr_read(mepc), 1);
        uart_puts("\n");
        power_off_fail(3);
    }
    struct task *t = (struct task *)ctx;
    put_tick();
    uart_puts(t->name);
    uart_puts(" killed: ");
    uart_puts(fault_name(cause));
    uart_puts(" at ");
    uart_put_hex(csr_read(mtval), 1);
    uart_puts(", pc ");
    uart_put_hex(ctx->pc, 1);
    uart_puts("\n");
    t->state = KILLED;
    return reschedule("killed");
}

static void task_init(int i, const char *name, void (*entry)(uint64_t), uint64_t arg, int endless)
{
    struct task *t = &tasks[i];
    t->name = name;
    t->state = READY;
    t->endless = endless;
    t->ctx.pc = (uint64_t)(uintptr_t)entry;
    t->ctx.x[REG_SP] = (uint64_t)(uintptr_t)(stacks[i] + STACK_BYTES);
    t->ctx.x[REG_A0] = arg;
    uart_puts("[rtos] task ");
    uart_puts(name);
    uart_puts(": stack ");
    uart_put_hex((uint64_t)(uintptr_t)stacks[i], 1);
    uart_puts("-");
    uart_put_hex((uint64_t)(uintptr_t)(stacks[i] + STACK_BYTES), 1);
    uart_puts("\n");
}

int main(void)
{
    /* .data starts on a page boundary right after the constants; the
       parameters are its first variables, so this is where tasks' read
       access ends. Kernel variables live in .bss, above it. */
    user_code_end = (uint64_t)(uintptr_t)&labvmm_param_rounds & ~(uint64_t)0xfff;

    uart_puts("[rtos] M-mode kernel: ");
    uart_put_dec(NTASKS);
    uart_puts(" U-mode tasks behind PMP, round robin, one tick = ");
    uart_put_dec(labvmm_param_interval);
    uart_puts(" mtime ticks\n");
    task_init(0, "ping", task_ping, labvmm_param_rounds, 0);
    task_init(1, "pong", task_pong, labvmm_param_rounds, 0);
    task_init(2, "spin", task_spin, labvmm_param_rounds, 1);
    task_init(3, "rogue", task_rogue, labvmm_param_attack, 0);
    idle_ctx.pc = (uint64_t)(uintptr_t)rtos_idle;
    idle_ctx.x[REG_SP] = (uint64_t)(uintptr_t)(idle_stack + sizeof idle_stack);

    csr_write(mtvec, (uint64_t)(uintptr_t)rtos_trap_entry);
    clint_set_mtimecmp(0, clint_mtime() + labvmm_param_interval);
    csr_set(mie, MIE_MTIE);

    current = &tasks[0].ctx;
    put_tick();
    uart_puts("start ");
    uart_puts(tasks[0].name);
    uart_puts("\n");
    csr_clear(mstatus, MSTATUS_MPP); /* mret to U-mode ... */
    csr_set(mstatus, MSTATUS_MPIE);  /* ... where the timer interrupt is always enabled */
    pmp_enter(&tasks[0]);
    rtos_resume(current);
}
