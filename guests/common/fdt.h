/* Finding devices in the flattened device tree the VMM (or QEMU) hands a
   guest in a1 at entry (Devicetree Specification v0.4, chapter 5 "Flattened
   Devicetree (DTB) Format"; the bindings are chapter 2 "The Devicetree").

   A driver should not poke at addresses where nothing may be: the device tree
   says which device slots the machine has, where their registers are and
   which interrupt each one raises. */
#ifndef FDT_H
#define FDT_H

#include <stdint.h>

/* One node's first `reg` entry and its first `interrupts` cell (0: none). */
struct fdt_device {
    uint64_t base;
    uint64_t size;
    uint32_t irq;
};

/* Fills out[0..max) with the nodes whose `compatible` string list contains
   `compatible`, in the order the tree lists them. Returns how many it found
   (at most max), or -1 when dtb does not point at a device tree. */
int fdt_find_compatible(uint64_t dtb, const char *compatible, struct fdt_device *out, int max);

#endif
