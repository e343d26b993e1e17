/* mailbox: two VMs talking through one page of shared memory. Demonstrates
   inter-VM communication over a page the VMM maps into both (labvmm's
   Host.share_pages, like a Xen grant or QEMU's ivshmem), a publish protocol
   with memory fences (RVWMO: the unprivileged spec, chapter 17), and a bounded
   wait that idles in wfi between polls instead of spinning.

   The writer (role 1) puts a message into the page at `address` and then sets
   the flag; the reader (role 2) polls the flag, prints the message and
   acknowledges it; the writer waits for the acknowledgement. Both give up
   after `timeout_ms` of mtime. Without a shared page each VM only sees its own
   RAM: the reader finds no message and fails with exit code 1. The other
   side is untrusted: the reader bounds the length and prints only printable
   ASCII. Printed text never contains mtime values. */
#include <stdint.h>
#include "clint.h"
#include "csr.h"
#include "finisher.h"
#include "fmt.h"
#include "uart.h"

/* Guest parameters: patched by labvmm's ELF loader through the symbol table. */
volatile uint64_t labvmm_param_role = 1;             /* 1 = writer, 2 = reader */
volatile uint64_t labvmm_param_address = 0x80100000; /* guest-physical mailbox page */
volatile uint64_t labvmm_param_value = 42;           /* the number in the writer's message */
volatile uint64_t labvmm_param_timeout_ms = 100;     /* how long to wait for the other side */

#define ROLE_WRITER 1
#define ROLE_READER 2
#define PAGE_SIZE 0x1000ul
#define POLL_TICKS 10000ul /* poll every 1 ms of mtime (10 MHz) */

/* Flag values: "mailbox1" and "mailbox2" in ASCII, unlikely in fresh RAM. */
#define FLAG_MESSAGE 0x31786f626c69616dull
#define FLAG_ACK 0x32786f626c69616dull

/* The page's layout, the same in both VMs. */
struct mailbox {
    volatile uint64_t flag;
    volatile uint64_t length; /* bytes in text, not counting a NUL */
    volatile char text[PAGE_SIZE - 16];
};

extern char __image_end[];

static uint64_t hart;

/* fence w,w: the message is visible before the flag that announces it;
   fence r,r: the message is read only after the flag that announced it. */
static inline void fence_ww(void) { __asm__ volatile("fence w,w" : : : "memory"); }
static inline void fence_rr(void) { __asm__ volatile("fence r,r" : : : "memory"); }

/* Wait until *flag == want or timeout_ms of mtime have passed; 1 if seen.
   Between polls the hart sleeps in wfi until the next 1 ms deadline: with
   mie.MTIE set and mstatus.MIE clear, wfi returns once the timer is pending
   without taking a trap (privileged spec v1.12, 3.3.3), so no handler is
   needed and a VMM sees the hart as idle. */
static int wait_for(volatile uint64_t *flag, uint64_t want)
{
    uint64_t deadline = clint_mtime() + labvmm_param_timeout_ms * (CLINT_TICKS_PER_SEC / 1000);
    int seen = 0;
    csr_set(mie, MIE_MTIE);
    for (;;) {
        if (*flag == want) {
            seen = 1;
            break;
        }
        uint64_t now = clint_mtime();
        if (now >= deadline)
            break;
        uint64_t next = now + POLL_TICKS;
        clint_set_mtimecmp(hart, next < deadline ? next : deadline);
        wfi();
    }
    csr_clear(mie, MIE_MTIE);
    return seen;
}

static void put_text(const volatile char *text, uint64_t length)
{
    uart_putc('"');
    for (uint64_t i = 0; i < length; i++) {
        char c = text[i];
        uart_putc(c >= 0x20 && c < 0x7f ? c : '.');
    }
    uart_putc('"');
}

__attribute__((noreturn)) static void writer(struct mailbox *box)
{
    static const char greeting[] = "hello from the writer, value ";
    char buf[FMT_BUF_SIZE];
    const char *number = fmt_dec(buf, labvmm_param_value);
    uint64_t n = 0;
    for (const char *s = greeting; *s; s++)
        box->text[n++] = *s;
    for (const char *s = number; *s; s++)
        box->text[n++] = *s;
    box->length = n;
    fence_ww();
    box->flag = FLAG_MESSAGE;

    uart_puts("mailbox: writer posted ");
    uart_put_dec(n);
    uart_puts(" bytes: ");
    put_text(box->text, n);
    uart_puts("\n");
    if (wait_for(&box->flag, FLAG_ACK)) {
        uart_puts("mailbox: writer got the reader's acknowledgement\n");
    } else {
        uart_puts("mailbox: writer saw no acknowledgement within ");
        uart_put_dec(labvmm_param_timeout_ms);
        uart_puts(" ms\n");
    }
    power_off();
}

__attribute__((noreturn)) static void reader(struct mailbox *box)
{
    if (!wait_for(&box->flag, FLAG_MESSAGE)) {
        uart_puts("mailbox: reader found no message within ");
        uart_put_dec(labvmm_param_timeout_ms);
        uart_puts(" ms\n");
        power_off_fail(1);
    }
    fence_rr();
    uint64_t length = box->length;
    if (length > sizeof box->text)
        length = sizeof box->text; /* the writer is not trusted */
    uart_puts("mailbox: reader got ");
    uart_put_dec(length);
    uart_puts(" bytes: ");
    put_text(box->text, length);
    uart_puts("\n");
    box->flag = FLAG_ACK;
    uart_puts("mailbox: reader acknowledged\n");
    power_off();
}

int main(uint64_t hartid)
{
    hart = hartid;
    uint64_t role = labvmm_param_role, address = labvmm_param_address;
    uart_puts("mailbox: ");
    uart_puts(role == ROLE_WRITER ? "writer" : role == ROLE_READER ? "reader" : "no role");
    uart_puts(", mailbox page at ");
    uart_put_hex(address, 8);
    uart_puts("\n");
    if (role != ROLE_WRITER && role != ROLE_READER) {
        uart_puts("mailbox: role must be 1 (writer) or 2 (reader), got ");
        uart_put_dec(role);
        uart_puts("\n");
        power_off_fail(2);
    }
    if (address % PAGE_SIZE || address < (uint64_t)(uintptr_t)__image_end) {
        uart_puts("mailbox: address must be a page-aligned address above the image, at or above ");
        uart_put_hex((uint64_t)(uintptr_t)__image_end, 8);
        uart_puts("\n");
        power_off_fail(2);
    }
    struct mailbox *box = (struct mailbox *)(uintptr_t)address;
    if (role == ROLE_WRITER)
        writer(box);
    reader(box);
}
