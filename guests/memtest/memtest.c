/* memtest: find the RAM in the device tree, then test it. Demonstrates the
   boot-time handoff of a device tree blob (a1 at entry), reading the
   flattened device tree format (Devicetree Specification v0.4, chapter 5),
   and a write-then-verify pass over every free 8-byte word of RAM. */
#include <stdint.h>
#include "finisher.h"
#include "uart.h"

#define PAGE_SIZE 0x1000ul

/* Flattened device tree constants (devicetree spec v0.4, 5.2 and 5.4.1).
   All header fields and tokens are big-endian 32-bit words. */
#define FDT_MAGIC 0xd00dfeedu
#define FDT_BEGIN_NODE 1
#define FDT_END_NODE 2
#define FDT_PROP 3
#define FDT_NOP 4
#define FDT_END 9

/* Byte offsets of the header fields we use (5.2). */
#define FDT_OFF_MAGIC 0
#define FDT_OFF_DT_STRUCT 8
#define FDT_OFF_DT_STRINGS 12

/* Provided by the linker script: first page after this image and its stack. */
extern char __image_end[];

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* A number stored as `cells` big-endian 32-bit cells (spec 2.2.4). */
static uint64_t read_cells(const uint8_t *p, uint32_t cells)
{
    uint64_t v = 0;
    for (uint32_t i = 0; i < cells; i++)
        v = v << 32 | be32(p + 4 * i);
    return v;
}

static int str_eq(const char *a, const char *b)
{
    while (*a && *a == *b)
        a++, b++;
    return *a == *b;
}

/* The memory node is "/memory" or "/memory@<unit-address>" (spec 3.4). */
static int is_memory_node(const char *name)
{
    const char *m = "memory";
    while (*m && *name == *m)
        name++, m++;
    return *m == '\0' && (*name == '\0' || *name == '@');
}

static uint32_t align4(uint32_t n) { return (n + 3) & ~3u; }

/* Walk the structure block (5.4) for the first reg of a top-level memory
   node. Returns 1 and fills base/size on success, 0 otherwise. */
static int fdt_find_memory(const uint8_t *fdt, uint64_t *base, uint64_t *size)
{
    const uint8_t *p = fdt + be32(fdt + FDT_OFF_DT_STRUCT);
    const char *strings = (const char *)fdt + be32(fdt + FDT_OFF_DT_STRINGS);
    /* Defaults when the root does not say (spec 2.3.5); virt says 2 and 2. */
    uint32_t address_cells = 2, size_cells = 1;
    int depth = 0, in_memory = 0;

    for (;;) {
        uint32_t token = be32(p);
        p += 4;
        switch (token) {
        case FDT_BEGIN_NODE: { /* followed by the NUL-terminated node name */
            const char *name = (const char *)p;
            uint32_t len = 0;
            while (name[len])
                len++;
            depth++;
            in_memory = depth == 2 && is_memory_node(name);
            p += align4(len + 1);
            break;
        }
        case FDT_END_NODE:
            depth--;
            in_memory = 0;
            break;
        case FDT_PROP: { /* u32 value length, u32 name offset, value */
            uint32_t len = be32(p);
            const char *name = strings + be32(p + 4);
            const uint8_t *value = p + 8;
            if (depth == 1 && str_eq(name, "#address-cells"))
                address_cells = be32(value);
            if (depth == 1 && str_eq(name, "#size-cells"))
                size_cells = be32(value);
            if (in_memory && str_eq(name, "reg") && len >= 4 * (address_cells + size_cells)) {
                *base = read_cells(value, address_cells);
                *size = read_cells(value + 4 * address_cells, size_cells);
                return 1;
            }
            p += 8 + align4(len);
            break;
        }
        case FDT_NOP:
            break;
        default: /* FDT_END, or a token we do not know: give up */
            return 0;
        }
    }
}

/* The value stored at each address: an odd-constant multiply is a bijection
   on 64-bit words, so every word gets a different pattern and every bit is
   written both 0 and 1 across the range (address bugs show up as mismatches). */
static uint64_t pattern(uint64_t addr) { return addr * 0x9e3779b97f4a7c15ull; }

static __attribute__((noreturn)) void fail(const char *why)
{
    uart_puts("memtest: ");
    uart_puts(why);
    uart_puts("\n");
    power_off_fail(2);
}

int main(uint64_t hartid, uint64_t dtb)
{
    (void)hartid;
    const uint8_t *fdt = (const uint8_t *)(uintptr_t)dtb;
    uint64_t ram_base, ram_size;

    uart_puts("memtest: device tree at ");
    uart_put_hex(dtb, 1);
    uart_puts("\n");
    if (dtb == 0 || be32(fdt + FDT_OFF_MAGIC) != FDT_MAGIC)
        fail("no device tree (bad magic)");
    if (!fdt_find_memory(fdt, &ram_base, &ram_size))
        fail("no /memory node with a reg property");
    uart_puts("memtest: RAM at ");
    uart_put_hex(ram_base, 1);
    uart_puts(", ");
    uart_put_dec(ram_size / 1024);
    uart_puts(" KiB\n");

    /* Test from the end of our image up to the page holding the device
       tree, which the VMM (like QEMU) puts near the end of RAM. If the tree
       is somewhere else, test up to the end of RAM. */
    uint64_t start = (uint64_t)(uintptr_t)__image_end;
    uint64_t end = ram_base + ram_size;
    if (dtb >= start && dtb < end)
        end = dtb & ~(PAGE_SIZE - 1);
    if (end <= start)
        fail("no free RAM to test");
    uart_puts("memtest: testing ");
    uart_put_hex(start, 1);
    uart_puts(" - ");
    uart_put_hex(end, 1);
    uart_puts("\n");

    /* Pass 1: write every word. Pass 2: read back, verify, checksum. Two
       separate passes so that a write that lands at the wrong address is
       caught when the right address is read. */
    for (uint64_t a = start; a < end; a += 8)
        *(volatile uint64_t *)(uintptr_t)a = pattern(a);

    uint64_t checksum = 0;
    for (uint64_t a = start; a < end; a += 8) {
        uint64_t v = *(volatile uint64_t *)(uintptr_t)a;
        if (v != pattern(a)) {
            uart_puts("memtest: FAILED at ");
            uart_put_hex(a, 1);
            uart_puts(": read ");
            uart_put_hex(v, 16);
            uart_puts(", expected ");
            uart_put_hex(pattern(a), 16);
            uart_puts("\n");
            power_off_fail(1);
        }
        checksum = (checksum << 5 | checksum >> 59) ^ v; /* rotate-xor */
    }

    uart_puts("memtest: tested ");
    uart_put_dec((end - start) / 1024);
    uart_puts(" KiB, checksum ");
    uart_put_hex(checksum, 16);
    uart_puts("\nmemtest OK\n");
    power_off();
}
