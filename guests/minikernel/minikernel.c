/* minikernel: a small S-mode kernel with virtual memory, booted by SBI firmware.

   labvmm (firmware="labvmm"), or OpenSBI on QEMU, starts it in S-mode at
   0x8020_0000. It turns on Sv39 paging (priv spec v1.12, 4.3) and runs three
   user processes in U-mode, each in its own address space:

     0x0040_0000  the image's code and constants, mapped read+execute+user
     0x1000_0000  a heap of up to HEAP_PAGES pages, mapped on demand: the first
                  touch of a page is a page fault the kernel answers with a
                  fresh zeroed frame (demand-zero paging)
     0x3fff_f000  a one-page stack
     0x8000_0000  the kernel: 1 GiB identity gigapage, not user-accessible

   Processes make system calls with ecall (write, exit, getpid); a timer
   interrupt every `slice` time ticks (SBI set_timer) preempts the running
   one, round robin. A process that touches memory it does not own is killed.
   All output goes through the SBI debug console (DBCN, or legacy putchar when
   the firmware has no DBCN); the kernel shuts the machine down with SRST. */
#include <stdint.h>
#include "csr.h"
#include "sbi.h"
#include "syscall.h"
#include "trapframe.h"

/* Guest parameters: patched by labvmm's ELF loader through the symbol table. */
volatile uint64_t labvmm_param_slice = 10000;  /* time ticks per time slice (1 ms) */
volatile uint64_t labvmm_param_primes = 20000; /* the primes process counts primes below this */

/* The console is sbi.h's. Kernel addresses are identity mapped, so a kernel
   buffer's virtual address is the physical address DBCN wants. */

static __attribute__((noreturn)) void shutdown(void)
{
    sbi_call(SBI_EXT_SRST, 0, 0, 0, 0); /* type 0 shutdown, reason 0 */
    sbi_puts("[minikernel] SRST failed; halting\n");
    for (;;)
        wfi();
}

/* ---- Sv39 page tables (4.3.1, 4.4) ---- */
#define PAGE_SIZE 4096ull
#define PTE_V (1ull << 0)
#define PTE_R (1ull << 1)
#define PTE_W (1ull << 2)
#define PTE_X (1ull << 3)
#define PTE_U (1ull << 4)
#define PTE_G (1ull << 5)
#define PTE_A (1ull << 6) /* set here, so no hart needs to update A and D itself */
#define PTE_D (1ull << 7)
#define SATP_SV39 (8ull << 60)
#define VPN(va, level) (((va) >> (12 + 9 * (level))) & 0x1ff)
#define PTE_PA(pte) (((pte) >> 10) << 12)

#define USER_CODE 0x00400000ull
#define USER_HEAP 0x10000000ull
#define HEAP_PAGES 8ull
#define USER_STACK_TOP 0x40000000ull
#define KERNEL_BASE 0x80000000ull

#define SSTATUS_SPP (1ull << 8)
#define SIE_STIE_BIT (1ull << 5)
#define CAUSE_ECALL_U 8
#define CAUSE_FETCH_PAGE_FAULT 12
#define CAUSE_LOAD_PAGE_FAULT 13
#define CAUSE_STORE_PAGE_FAULT 15

extern char _start[], __image_end[];
extern void mk_trap_entry(void);

/* Physical frames: from the end of the kernel image up to the device tree. */
static uint64_t next_frame, frames_end, frames_used;

static uint64_t *alloc_frame(void)
{
    if (next_frame + PAGE_SIZE > frames_end)
        return 0;
    uint64_t *page = (uint64_t *)(uintptr_t)next_frame;
    next_frame += PAGE_SIZE;
    frames_used++;
    for (uint64_t i = 0; i < PAGE_SIZE / 8; i++)
        page[i] = 0;
    return page;
}

/* The leaf PTE slot for va in the table rooted at root, allocating the
   intermediate tables on the way when asked; 0 when absent or out of frames. */
static uint64_t *pte_slot(uint64_t *root, uint64_t va, int alloc)
{
    uint64_t *table = root;
    for (int level = 2; level > 0; level--) {
        uint64_t *pte = &table[VPN(va, level)];
        if (!(*pte & PTE_V)) {
            if (!alloc)
                return 0;
            uint64_t *next = alloc_frame();
            if (!next)
                return 0;
            *pte = (((uint64_t)(uintptr_t)next >> 12) << 10) | PTE_V; /* non-leaf: no R/W/X */
        }
        table = (uint64_t *)(uintptr_t)PTE_PA(*pte);
    }
    return &table[VPN(va, 0)];
}

static int map_page(uint64_t *root, uint64_t va, uint64_t pa, uint64_t perm)
{
    uint64_t *pte = pte_slot(root, va, 1);
    if (!pte)
        return 0;
    *pte = ((pa >> 12) << 10) | perm | PTE_A | PTE_D | PTE_V;
    return 1;
}

/* The physical address behind a user virtual address, if the process may
   read (or write) it: what the kernel checks before copying from a user buffer. */
static uint64_t user_pa(uint64_t *root, uint64_t va, int write)
{
    uint64_t *pte = pte_slot(root, va, 0);
    if (!pte || !(*pte & PTE_V) || !(*pte & PTE_U) || !(*pte & (write ? PTE_W : PTE_R)))
        return 0;
    return PTE_PA(*pte) | (va & (PAGE_SIZE - 1));
}

/* ---- processes ---- */
enum pstate { RUNNABLE, EXITED, KILLED };

struct proc {
    struct context ctx; /* first: sscratch points here while it runs */
    uint64_t pid;
    const char *name;
    enum pstate state;
    uint64_t *root;
    int64_t exit_code;
    uint64_t preemptions, syscalls, heap_pages;
};

#define NPROC 3
static struct proc procs[NPROC];
static struct proc *current;
static uint64_t user_code_end; /* the code window maps [_start, user_code_end) */

#define SYS_GETPID 172 /* beside write and exit (syscall.h) */

/* ---- user programs: everything in this section runs in U-mode ---- */

/* A line is built on the process's stack and written with one system call,
   so a preemption can never split it. */
struct line {
    char buf[96];
    uint64_t len;
};

static void l_str(struct line *l, const char *s)
{
    while (*s && l->len < sizeof l->buf)
        l->buf[l->len++] = *s++;
}

static void l_dec(struct line *l, uint64_t v)
{
    char buf[FMT_BUF_SIZE];
    l_str(l, fmt_dec(buf, v));
}

static void l_hex(struct line *l, uint64_t v)
{
    char buf[FMT_BUF_SIZE];
    l_str(l, fmt_hex(buf, v, 1));
}

static void l_end(struct line *l)
{
    l_str(l, "\n");
    syscall3(SYS_WRITE, (uint64_t)(uintptr_t)l->buf, l->len);
    l->len = 0;
}

static __attribute__((noreturn)) void u_exit(int64_t code)
{
    syscall3(SYS_EXIT, (uint64_t)code, 0);
    for (;;)
        ;
}

/* Fills three heap pages (three demand-zero page faults), then sums them. */
static __attribute__((noreturn)) void prog_heap(uint64_t arg)
{
    volatile uint64_t *heap = (volatile uint64_t *)USER_HEAP;
    uint64_t words = 3 * PAGE_SIZE / 8, sum = 0;
    struct line l;
    l.len = 0;
    (void)arg;
    l_str(&l, "heap: I am pid ");
    l_dec(&l, (uint64_t)syscall3(SYS_GETPID, 0, 0));
    l_str(&l, ", filling 3 pages at ");
    l_hex(&l, USER_HEAP);
    l_end(&l);
    for (uint64_t i = 0; i < words; i++)
        heap[i] = i;
    for (uint64_t i = 0; i < words; i++)
        sum += heap[i];
    l_str(&l, "heap: sum of 0..");
    l_dec(&l, words - 1);
    l_str(&l, " = ");
    l_dec(&l, sum);
    l_end(&l);
    u_exit(0);
}

/* CPU-bound: counts primes by trial division, long enough to be preempted. */
static __attribute__((noreturn)) void prog_primes(uint64_t limit)
{
    uint64_t count = 0;
    struct line l;
    l.len = 0;
    l_str(&l, "primes: counting primes below ");
    l_dec(&l, limit);
    l_end(&l);
    for (uint64_t n = 2; n < limit; n++) {
        uint64_t d = 2;
        while (d * d <= n && n % d != 0)
            d++;
        if (d * d > n)
            count++;
    }
    l_str(&l, "primes: ");
    l_dec(&l, count);
    l_str(&l, " primes below ");
    l_dec(&l, limit);
    l_end(&l);
    u_exit(0);
}

/* Reads the kernel's first word: its pages are not user-accessible. */
static __attribute__((noreturn)) void prog_wild(uint64_t kernel)
{
    struct line l;
    l.len = 0;
    l_str(&l, "wild: reading kernel memory at ");
    l_hex(&l, kernel);
    l_end(&l);
    uint64_t v = *(volatile uint64_t *)(uintptr_t)kernel;
    l_str(&l, "wild: read ");
    l_hex(&l, v);
    l_str(&l, " (the kernel is not protected!)");
    l_end(&l);
    u_exit(1);
}

/* ---- kernel ---- */

static uint64_t read_time(void) { return csr_read(time); }

/* Switch to process p: its address space, its time slice, U-mode on sret. */
static struct context *run(struct proc *p)
{
    current = p;
    csr_write(satp, SATP_SV39 | ((uint64_t)(uintptr_t)p->root >> 12));
    __asm__ volatile("sfence.vma zero, zero" : : : "memory"); /* 4.2.1: after changing satp */
    csr_clear(sstatus, SSTATUS_SPP);                           /* sret to U-mode */
    sbi_call(SBI_EXT_TIME, 0, read_time() + labvmm_param_slice, 0, 0);
    return &p->ctx;
}

/* "[minikernel] pid N (name)" */
static void put_pid(const struct proc *p)
{
    sbi_puts("[minikernel] pid ");
    sbi_put_dec(p->pid);
    sbi_puts(" (");
    sbi_puts(p->name);
    sbi_puts(")");
}

static __attribute__((noreturn)) void finish(void)
{
    sbi_puts("[minikernel] all processes finished, ");
    sbi_put_dec(frames_used);
    sbi_puts(" frames used\n");
    for (int i = 0; i < NPROC; i++) {
        struct proc *p = &procs[i];
        put_pid(p);
        sbi_puts(p->state == EXITED ? ": exited with code " : ": killed");
        if (p->state == EXITED)
            sbi_put_dec((uint64_t)p->exit_code);
        sbi_puts(", ");
        sbi_put_dec(p->syscalls);
        sbi_puts(" system calls, ");
        sbi_put_dec(p->heap_pages);
        sbi_puts(" heap pages, preempted ");
        sbi_put_dec(p->preemptions);
        sbi_puts(" times\n");
    }
    sbi_puts("[minikernel] shutting down via SBI SRST\n");
    shutdown();
}

/* Round robin: the next runnable process after the current one (itself last). */
static struct context *schedule(void)
{
    int start = (int)(current - procs);
    for (int i = 1; i <= NPROC; i++) {
        struct proc *p = &procs[(start + i) % NPROC];
        if (p->state == RUNNABLE) {
            if (p != current) {
                sbi_puts("[minikernel] switch to pid ");
                sbi_put_dec(p->pid);
                sbi_puts(" (");
                sbi_puts(p->name);
                sbi_puts("), satp ");
                sbi_put_hex(SATP_SV39 | ((uint64_t)(uintptr_t)p->root >> 12), 1);
                sbi_puts("\n");
            }
            return run(p);
        }
    }
    finish();
}

static struct context *kill(struct proc *p, const char *why, uint64_t stval)
{
    put_pid(p);
    sbi_puts(" killed: ");
    sbi_puts(why);
    sbi_puts(" at ");
    sbi_put_hex(stval, 1);
    sbi_puts(", pc ");
    sbi_put_hex(p->ctx.pc, 1);
    sbi_puts("\n");
    p->state = KILLED;
    return schedule();
}

static struct context *do_syscall(struct proc *p)
{
    uint64_t *x = p->ctx.x;
    uint64_t a0 = x[REG_A0], a1 = x[REG_A1];
    char buf[128];
    p->ctx.pc += 4;
    p->syscalls++;
    switch (x[REG_A7]) {
    case SYS_WRITE:
        /* Copy through the process's own page table, so a bad pointer is an
           error for the caller instead of a fault in the kernel. */
        for (uint64_t done = 0; done < a1;) {
            uint64_t n = 0;
            for (; n < sizeof buf && done + n < a1; n++) {
                uint64_t pa = user_pa(p->root, a0 + done + n, 0);
                if (!pa) {
                    x[REG_A0] = (uint64_t)-EFAULT;
                    return &p->ctx;
                }
                buf[n] = *(const char *)(uintptr_t)pa;
            }
            sbi_write(buf, n);
            done += n;
        }
        x[REG_A0] = a1;
        return &p->ctx;
    case SYS_GETPID:
        x[REG_A0] = p->pid;
        return &p->ctx;
    case SYS_EXIT:
        p->state = EXITED;
        p->exit_code = (int64_t)a0;
        put_pid(p);
        sbi_puts(" exited with code ");
        sbi_put_dec(a0);
        sbi_puts("\n");
        return schedule();
    default:
        x[REG_A0] = (uint64_t)-ENOSYS;
        return &p->ctx;
    }
}

/* Demand-zero heap: a fault inside the heap window maps a fresh zeroed
   frame and retries the instruction; anywhere else the process dies. */
static struct context *page_fault(struct proc *p, uint64_t cause, uint64_t stval)
{
    const char *what = cause == CAUSE_FETCH_PAGE_FAULT  ? "fetch page fault"
                       : cause == CAUSE_LOAD_PAGE_FAULT ? "load page fault"
                                                        : "store page fault";
    uint64_t page = stval & ~(PAGE_SIZE - 1);
    if (cause == CAUSE_FETCH_PAGE_FAULT || page < USER_HEAP || page >= USER_HEAP + HEAP_PAGES * PAGE_SIZE)
        return kill(p, what, stval);
    uint64_t *frame = alloc_frame();
    if (!frame || !map_page(p->root, page, (uint64_t)(uintptr_t)frame, PTE_R | PTE_W | PTE_U))
        return kill(p, "out of memory", stval);
    __asm__ volatile("sfence.vma %0, zero" : : "r"(page) : "memory");
    p->heap_pages++;
    put_pid(p);
    sbi_puts(": ");
    sbi_puts(what);
    sbi_puts(" at ");
    sbi_put_hex(stval, 1);
    sbi_puts(", mapped zeroed frame ");
    sbi_put_hex((uint64_t)(uintptr_t)frame, 1);
    sbi_puts("\n");
    return &p->ctx; /* sepc is the faulting instruction: it runs again */
}

struct context *mk_trap(struct context *ctx)
{
    struct proc *p = (struct proc *)ctx;
    uint64_t cause = csr_read(scause), stval = csr_read(stval);
    if (csr_read(sstatus) & SSTATUS_SPP) {
        sbi_puts("[minikernel] panic: trap from S-mode, scause ");
        sbi_put_hex(cause, 1);
        sbi_puts(" sepc ");
        sbi_put_hex(csr_read(sepc), 1);
        sbi_puts("\n");
        shutdown();
    }
    if (cause == CAUSE_S_TIMER) {
        p->preemptions++;
        return schedule();
    }
    if (cause == CAUSE_ECALL_U)
        return do_syscall(p);
    if (cause == CAUSE_FETCH_PAGE_FAULT || cause == CAUSE_LOAD_PAGE_FAULT || cause == CAUSE_STORE_PAGE_FAULT)
        return page_fault(p, cause, stval);
    return kill(p, cause == 2 ? "illegal instruction" : "exception", stval);
}

static void proc_init(int i, const char *name, void (*entry)(uint64_t), uint64_t arg, uint64_t *kernel_root)
{
    struct proc *p = &procs[i];
    p->pid = (uint64_t)i + 1;
    p->name = name;
    p->state = RUNNABLE;
    p->root = alloc_frame();
    uint64_t *stack = alloc_frame();
    if (!p->root || !stack) {
        sbi_puts("[minikernel] out of memory\n");
        shutdown();
    }
    p->root[VPN(KERNEL_BASE, 2)] = kernel_root[VPN(KERNEL_BASE, 2)]; /* the kernel, in every space */
    uint64_t code = (uint64_t)(uintptr_t)_start;
    for (uint64_t pa = code; pa < user_code_end; pa += PAGE_SIZE)
        map_page(p->root, USER_CODE + (pa - code), pa, PTE_R | PTE_X | PTE_U);
    map_page(p->root, USER_STACK_TOP - PAGE_SIZE, (uint64_t)(uintptr_t)stack, PTE_R | PTE_W | PTE_U);
    /* Code is position independent (-mcmodel=medany: pc-relative), so it runs
       at USER_CODE + its offset in the image. */
    p->ctx.pc = USER_CODE + ((uint64_t)(uintptr_t)entry - code);
    p->ctx.x[REG_SP] = USER_STACK_TOP;
    p->ctx.x[REG_A0] = arg;
    put_pid(p);
    sbi_puts(": page table at ");
    sbi_put_hex((uint64_t)(uintptr_t)p->root, 1);
    sbi_puts(", entry ");
    sbi_put_hex(p->ctx.pc, 1);
    sbi_puts("\n");
}

extern __attribute__((noreturn)) void mk_resume(struct context *ctx);

int main(uint64_t hartid, uint64_t dtb)
{
    sbi_console_init();
    sbi_puts("[minikernel] S-mode kernel on hart ");
    sbi_put_dec(hartid);
    sbi_puts(", console via SBI ");
    sbi_puts(sbi_have_dbcn ? "DBCN" : "legacy putchar");
    sbi_puts("\n");

    /* Free frames: the 1 MiB after the end of the image, or up to the device
       tree if that comes sooner (the firmware put it in RAM too). */
    next_frame = (uint64_t)(uintptr_t)__image_end;
    frames_end = dtb > next_frame && dtb - next_frame < (1ull << 20) ? dtb & ~(PAGE_SIZE - 1) : next_frame + (1ull << 20);
    /* Constants end where .data starts, on the page holding the parameters. */
    user_code_end = (uint64_t)(uintptr_t)&labvmm_param_slice & ~(PAGE_SIZE - 1);

    /* The kernel's own space: one 1 GiB gigapage, identity, kernel only. */
    uint64_t *kernel_root = alloc_frame();
    kernel_root[VPN(KERNEL_BASE, 2)] = ((KERNEL_BASE >> 12) << 10) | PTE_R | PTE_W | PTE_X | PTE_G | PTE_A | PTE_D | PTE_V;
    csr_write(satp, SATP_SV39 | ((uint64_t)(uintptr_t)kernel_root >> 12));
    __asm__ volatile("sfence.vma zero, zero" : : : "memory");
    sbi_puts("[minikernel] Sv39 paging on, satp ");
    sbi_put_hex(csr_read(satp), 1);
    sbi_puts("\n");

    proc_init(0, "heap", prog_heap, 0, kernel_root);
    proc_init(1, "primes", prog_primes, labvmm_param_primes, kernel_root);
    proc_init(2, "wild", prog_wild, (uint64_t)(uintptr_t)_start, kernel_root);

    csr_write(stvec, (uint64_t)(uintptr_t)mk_trap_entry);
    csr_set(sie, SIE_STIE_BIT); /* taken in U-mode whatever sstatus.SIE says (4.1.3) */
    current = &procs[NPROC - 1];
    mk_resume(schedule());
}
