/* labvmm-calls: labvmm's own SBI extension (EID 0x0A4C4142) with every
   function id 0-255 and huge ones, and arguments that name other VMs (ids
   0-7), this VM, huge quotas and pointers outside RAM, as a guest would to
   reach another VM, grow its memory quota or read the host's state.
   The VMM must answer unknown functions with SBI_ERR_NOT_SUPPORTED (-2) and
   change nothing outside this VM: no other VM's state, memory, quota or CPU
   weight, and no frames change hands. The guest then shuts down normally. */
#include "sbi_guest.h"

int main(void)
{
    sbi_say("labvmm-calls: every labvmm hypercall with arguments naming other VMs and huge quotas");
    uint64_t calls = 0, unsupported = 0;
    for (uint64_t fid = 0; fid < 256 + 4; fid++) {
        uint64_t real_fid = fid < 256 ? fid : (fid == 256 ? 0xffffffff : (fid == 257 ? 1ull << 63 : ~0ull - (fid - 258)));
        for (uint64_t vm = 0; vm < 8; vm++) {
            struct sbiret r = sbi_call(SBI_EXT_LABVMM, real_fid, vm, ~0ull >> vm, 0x80000000ull + (vm << 24),
                                       hostile_garbage(), hostile_garbage(), hostile_garbage());
            calls++;
            unsupported += r.error == -2;
        }
    }
    sbi_say_dec("labvmm-calls: calls made", (int64_t)calls);
    sbi_say_dec("labvmm-calls: refused as not supported", (int64_t)unsupported);
    sbi_say("labvmm-calls: still running");
    sbi_shutdown();
}
