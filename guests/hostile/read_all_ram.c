/* read-all-ram: reads every byte of its own RAM, from 0x8000_0000 to
   ram_end (0x8100_0000 with the tests' 16 MiB), including the device tree
   blob the VMM placed there (a1 at entry) and the never-written frames.
   This is allowed: the VMM must raise NO isolation event, and the guest must
   see only zeros, its own image and its own device tree, never another VM's
   leftovers (fresh frames are zero). It prints the device tree's magic
   (0xd00dfeed, Devicetree spec v0.4, 5.2) and whether the rest was clean. */
#include "hostile.h"

volatile uint64_t labvmm_param_ram_end = 0x81000000;

extern char __image_end[];

int main(uint64_t hartid, uint64_t dtb)
{
    (void)hartid;
    hostile_say("read-all-ram: reading every byte of its own RAM and the device tree");
    uint64_t sum = 0;
    for (const volatile uint64_t *p = (const uint64_t *)0x80000000ul;
         (uintptr_t)p < labvmm_param_ram_end; p++)
        sum += *p;
    (void)sum;
    /* Between the image and the device tree nothing was ever written. */
    uint64_t dirty = 0;
    for (const volatile uint64_t *p = (const uint64_t *)__image_end; (uintptr_t)p < dtb; p++)
        dirty |= *p;
    const volatile uint8_t *d = (const uint8_t *)(uintptr_t)dtb;
    uint32_t magic = (uint32_t)d[0] << 24 | (uint32_t)d[1] << 16 | (uint32_t)d[2] << 8 | d[3];
    hostile_say_hex("read-all-ram: device tree magic", magic);
    hostile_say(dirty ? "read-all-ram: found non-zero bytes in never-written RAM"
                      : "read-all-ram: never-written RAM is all zero");
    power_off();
}
