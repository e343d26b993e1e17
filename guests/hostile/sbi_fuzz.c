/* sbi-fuzz: calls every SBI extension id the spec defines (SBI v2.0 table
   of extensions, legacy 0x00-0x0F, the firmware and vendor ranges, and
   ids no one defines) with function ids 0-7 and a few huge ones, and
   garbage in every argument register. Calls that would legitimately end the
   guest (legacy shutdown 0x08, SRST with a valid type) and byte output
   calls are left out, so the run ends with its own SRST shutdown.
   The VMM must answer each with an SBI error or a value, never raise
   anything on the host, never touch memory outside this guest's RAM, and
   keep the guest running (a refused call may be logged as a
   "bad-hypercall" event with action "call-refused"). */
#include "sbi_guest.h"

static const uint64_t extensions[] = {
    0x00, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x09, 0x0a, 0x0f,   /* legacy (ch. 5) and beyond */
    SBI_EXT_BASE, SBI_EXT_TIME, 0x735049 /* IPI */, 0x52464E43 /* RFNC */, 0x48534D /* HSM */,
    SBI_EXT_SRST, 0x504D55 /* PMU */, SBI_EXT_DBCN, 0x53555350 /* SUSP */, 0x43505043 /* CPPC */,
    0x4E41434C /* NACL */, 0x535441 /* STA */,
    0x08000000, 0x08FFFFFF,              /* experimental range */
    0x09000000, 0x09FFFFFF,              /* vendor range */
    0x0A000000, 0x0AFFFFFF,              /* firmware range */
    SBI_EXT_LABVMM,
    0xFFFFFFFF, 0x8000000000000000ull, ~0ull,
};

static const uint64_t functions[] = {0, 1, 2, 3, 4, 5, 6, 7, 0xff, 0xffffffff, 1ull << 63, ~0ull};

int main(void)
{
    sbi_say("sbi-fuzz: every SBI extension and function id with garbage arguments");
    uint64_t calls = 0;
    for (uint64_t e = 0; e < sizeof extensions / sizeof extensions[0]; e++) {
        for (uint64_t f = 0; f < sizeof functions / sizeof functions[0]; f++) {
            uint64_t eid = extensions[e], fid = functions[f];
            uint64_t a0 = hostile_garbage();
            if (eid == SBI_EXT_SRST)
                a0 |= 0x100; /* a reserved reset type: no real reset */
            if (eid == SBI_EXT_DBCN && fid == 2)
                continue;    /* write_byte would print garbage */
            sbi_call(eid, fid, a0, hostile_garbage(), hostile_garbage(), hostile_garbage(),
                     hostile_garbage(), hostile_garbage());
            calls++;
        }
    }
    sbi_say_dec("sbi-fuzz: calls made", (int64_t)calls);
    sbi_say("sbi-fuzz: still running");
    sbi_shutdown();
}
