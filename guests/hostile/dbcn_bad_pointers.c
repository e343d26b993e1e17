/* dbcn-bad-pointers: SBI debug console calls (DBCN console_write and
   console_read, SBI v2.0 section 12.1) whose buffers are not the guest's
   memory: past the end of RAM, straddling it, in device space, at 0x0,
   lengths that wrap around 2^64, a non-zero base_addr_hi, huge lengths, and
   zero lengths. A firmware that trusted them would read or write host memory
   (in labvmm's frame pool, another VM's RAM).
   The VMM must refuse every bad one with SBI_ERR_INVALID_PARAM (-3) and touch
   nothing, log a "bad-hypercall" event with action "call-refused", answer a
   zero length with success and 0 bytes, and keep the guest running. */
#include "sbi_guest.h"

volatile uint64_t labvmm_param_ram_end = 0x81000000;

#define RAM_BASE 0x80000000ull

struct bad_buffer {
    uint64_t num_bytes, base_lo, base_hi;
};

int main(void)
{
    sbi_say("dbcn-bad-pointers: DBCN console write and read with buffers outside RAM");
    uint64_t end = labvmm_param_ram_end;
    const struct bad_buffer cases[] = {
        {16, end - 8, 0},                       /* straddles the end of RAM */
        {1, end, 0},                            /* first byte past RAM */
        {0x1000, end + 0x1000, 0},              /* well past RAM: the next VM's frames */
        {~0ull, RAM_BASE + 0x1000, 0},          /* length wraps around 2^64 */
        {0x100, ~0ull - 0x7f, 0},               /* address + length wraps around 2^64 */
        {8, 0x10000000, 0},                     /* the UART's registers */
        {8, 0x0, 0},                            /* null */
        {8, RAM_BASE, 1},                       /* base_addr_hi must be 0 on RV64 */
        {1ull << 63, RAM_BASE, 0},              /* huge */
        {end - RAM_BASE + 1, RAM_BASE, 0},      /* all of RAM plus one byte */
        {8, RAM_BASE - 8, 0},                   /* just below RAM */
    };
    const uint64_t n = sizeof cases / sizeof cases[0];
    for (uint64_t fid = 0; fid <= 1; fid++) { /* 0 = console_write, 1 = console_read */
        for (uint64_t i = 0; i < n; i++) {
            struct sbiret r = sbi_call(SBI_EXT_DBCN, fid, cases[i].num_bytes, cases[i].base_lo,
                                       cases[i].base_hi, 0, 0, 0);
            sbi_puts(fid ? "dbcn-bad-pointers: read" : "dbcn-bad-pointers: write");
            sbi_say_dec(" case error", r.error);
        }
        struct sbiret z = sbi_call(SBI_EXT_DBCN, fid, 0, 0, 0, 0, 0, 0);
        sbi_say_dec("dbcn-bad-pointers: zero length, error", z.error);
        sbi_say_dec("dbcn-bad-pointers: zero length, bytes", z.value);
    }
    sbi_say("dbcn-bad-pointers: still running");
    sbi_shutdown();
}
