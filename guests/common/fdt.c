/* A walk over the structure block of a flattened device tree that collects
   the nodes with a given `compatible` (Devicetree spec v0.4, 5.4 "Structure
   Block"). Every header field and token is a big-endian 32-bit word. */
#include "fdt.h"

#define FDT_MAGIC 0xd00dfeedu
#define FDT_BEGIN_NODE 1 /* followed by the node's name, NUL-terminated, padded to 4 */
#define FDT_END_NODE 2
#define FDT_PROP 3 /* followed by u32 value length, u32 name offset, the value */
#define FDT_NOP 4

#define MAX_DEPTH 8 /* virt's tree is 4 levels deep; deeper nodes are skipped */

/* Header fields (5.2): total size, offsets of the structure and strings blocks. */
#define HDR_TOTALSIZE 4
#define HDR_OFF_DT_STRUCT 8
#define HDR_OFF_DT_STRINGS 12

static uint32_t load_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int same_string(const char *a, const char *b)
{
    for (; *a && *a == *b; a++, b++)
        ;
    return *a == *b;
}

/* Does the string list (2.3.1: NUL-separated strings) of len bytes hold `want`? */
static int list_contains(const char *list, uint32_t len, const char *want)
{
    for (uint32_t at = 0; at < len;) {
        if (same_string(list + at, want))
            return 1;
        while (at < len && list[at])
            at++;
        at++;
    }
    return 0;
}

/* A number of `cells` big-endian 32-bit cells (2.2.4); 1 or 2 on virt. */
static uint64_t load_cells(const uint8_t *p, uint32_t cells)
{
    uint64_t v = 0;
    for (uint32_t i = 0; i < cells; i++)
        v = v << 32 | load_be32(p + 4 * i);
    return v;
}

/* What the walk knows about each open node, indexed by depth (the root is 1). */
struct open_node {
    uint32_t address_cells, size_cells; /* how this node's children write `reg` (2.3.5) */
    int matches, has_reg;
    struct fdt_device dev;
};

int fdt_find_compatible(uint64_t dtb, const char *compatible, struct fdt_device *out, int max)
{
    const uint8_t *fdt = (const uint8_t *)(uintptr_t)dtb;
    if (dtb == 0 || load_be32(fdt) != FDT_MAGIC)
        return -1;
    const uint8_t *end = fdt + load_be32(fdt + HDR_TOTALSIZE);
    const uint8_t *p = fdt + load_be32(fdt + HDR_OFF_DT_STRUCT);
    const char *strings = (const char *)fdt + load_be32(fdt + HDR_OFF_DT_STRINGS);
    struct open_node nodes[MAX_DEPTH + 1];
    int depth = 0, found = 0;
    /* The parent of the root: its cells are the defaults of 2.3.5. */
    nodes[0].address_cells = 2, nodes[0].size_cells = 1;

    while (p + 4 <= end) {
        uint32_t token = load_be32(p);
        p += 4;
        if (token == FDT_BEGIN_NODE) {
            while (p < end && *p)
                p++;
            p = (const uint8_t *)(((uintptr_t)p + 4) & ~(uintptr_t)3); /* NUL, then pad to 4 */
            if (++depth <= MAX_DEPTH)
                nodes[depth] = (struct open_node){.address_cells = 2, .size_cells = 1};
        } else if (token == FDT_END_NODE) {
            /* A node's properties all come before its children (5.4.2), so
               by now everything about it is known. */
            if (depth <= MAX_DEPTH && depth > 0 && nodes[depth].matches && nodes[depth].has_reg
                && found < max)
                out[found++] = nodes[depth].dev;
            if (--depth < 0)
                break;
        } else if (token == FDT_PROP) {
            uint32_t len = load_be32(p);
            const char *name = strings + load_be32(p + 4);
            const uint8_t *value = p + 8;
            p = value + ((len + 3) & ~3u);
            if (depth == 0 || depth > MAX_DEPTH || p > end)
                continue;
            struct open_node *node = &nodes[depth];
            const struct open_node *parent = &nodes[depth - 1];
            uint32_t reg_bytes = 4 * (parent->address_cells + parent->size_cells);
            if (same_string(name, "#address-cells") && len == 4)
                node->address_cells = load_be32(value);
            else if (same_string(name, "#size-cells") && len == 4)
                node->size_cells = load_be32(value);
            else if (same_string(name, "compatible"))
                node->matches = list_contains((const char *)value, len, compatible);
            else if (same_string(name, "interrupts") && len >= 4)
                node->dev.irq = load_be32(value);
            else if (same_string(name, "reg") && len >= reg_bytes && parent->address_cells <= 2
                     && parent->size_cells <= 2) {
                node->dev.base = load_cells(value, parent->address_cells);
                node->dev.size = load_cells(value + 4 * parent->address_cells, parent->size_cells);
                node->has_reg = 1;
            }
        } else if (token != FDT_NOP) {
            break; /* FDT_END, or a token this walk does not know */
        }
    }
    return found;
}
