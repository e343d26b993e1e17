/* virtio over MMIO and split virtqueues (virtio 1.2; see virtio.h). */
#include "virtio.h"
#include "fdt.h"
#include "mmio.h"

#define MAX_SLOTS 8 /* QEMU's virt (and labvmm) have eight virtio-mmio slots */

_Static_assert(16 * VIRTQ_MAX_SIZE + 6 + 2 * VIRTQ_MAX_SIZE <= VIRTQ_PAGE_SIZE,
               "descriptor table and available ring fit in the first page of virtq.mem");

/* The device and the driver share the rings in RAM and talk through device
   registers; RISC-V orders neither against the other by itself (unprivileged
   spec, "RVWMO Memory Consistency Model"). One full fence, I/O included, at
   each point where the spec asks for a memory barrier keeps this simple. */
static inline void virtio_mb(void) { __asm__ volatile("fence iorw, iorw" : : : "memory"); }

static uint32_t reg_read(const struct virtio_dev *dev, uint32_t offset)
{
    return mmio_read32(dev->base + offset);
}

static void reg_write(const struct virtio_dev *dev, uint32_t offset, uint32_t value)
{
    mmio_write32(dev->base + offset, value);
}

/* Status bits are only ever added until the next reset (2.1.1). */
static void status_add(struct virtio_dev *dev, uint32_t bits)
{
    reg_write(dev, VIRTIO_MMIO_STATUS, reg_read(dev, VIRTIO_MMIO_STATUS) | bits);
}

int virtio_find(uint64_t dtb, uint32_t device_id, struct virtio_dev *dev)
{
    struct fdt_device slots[MAX_SLOTS];
    int n = fdt_find_compatible(dtb, "virtio,mmio", slots, MAX_SLOTS);
    int found = 0;
    for (int i = 0; i < n; i++) {
        uintptr_t base = (uintptr_t)slots[i].base;
        /* 4.2.3.1.1: check the magic value and the version; DeviceID 0 is a
           slot with no device behind it, which the driver must ignore. */
        if (mmio_read32(base + VIRTIO_MMIO_MAGIC_VALUE) != VIRTIO_MMIO_MAGIC)
            continue;
        uint32_t version = mmio_read32(base + VIRTIO_MMIO_VERSION);
        if (version != 1 && version != 2)
            continue;
        if (mmio_read32(base + VIRTIO_MMIO_DEVICE_ID) != device_id)
            continue;
        /* QEMU lists the slots from the highest address down: take the lowest,
           so "the first disk" is the same device on every machine. */
        if (found && base > dev->base)
            continue;
        *dev = (struct virtio_dev){.base = base, .irq = slots[i].irq, .version = version,
                                   .device_id = device_id};
        found = 1;
    }
    return found;
}

/* Feature word `sel` (0: bits 0-31, 1: bits 32-63) offered by the device. */
static uint64_t device_features(struct virtio_dev *dev, uint32_t sel)
{
    reg_write(dev, VIRTIO_MMIO_DEVICE_FEATURES_SEL, sel);
    return reg_read(dev, VIRTIO_MMIO_DEVICE_FEATURES);
}

static void driver_features(struct virtio_dev *dev, uint32_t sel, uint32_t bits)
{
    reg_write(dev, VIRTIO_MMIO_DRIVER_FEATURES_SEL, sel);
    reg_write(dev, VIRTIO_MMIO_DRIVER_FEATURES, bits);
}

const char *virtio_init(struct virtio_dev *dev, uint64_t wanted)
{
    /* 1. Reset the device; it is done when the status reads back as 0
       (2.4 Device Reset). */
    reg_write(dev, VIRTIO_MMIO_STATUS, 0);
    while (reg_read(dev, VIRTIO_MMIO_STATUS) != 0)
        ;
    /* 2, 3. We noticed the device, and we know how to drive it. */
    status_add(dev, VIRTIO_STATUS_ACKNOWLEDGE);
    status_add(dev, VIRTIO_STATUS_DRIVER);

    /* 4. Read the offered features, accept the subset we understand. The
       legacy interface has 32 feature bits only (4.2.4). */
    uint64_t offered = device_features(dev, 0);
    if (dev->version == 2) {
        offered |= device_features(dev, 1) << 32;
        if (!(offered & VIRTIO_F_VERSION_1)) {
            virtio_fail(dev);
            return "a version 2 device that does not offer VIRTIO_F_VERSION_1";
        }
        wanted |= VIRTIO_F_VERSION_1;
    }
    dev->features = offered & wanted;
    driver_features(dev, 0, (uint32_t)dev->features);
    if (dev->version == 1) {
        /* A legacy driver has no FEATURES_OK step (3.1.2), and must say how
           big its pages are before it sets up a queue (4.2.4). */
        reg_write(dev, VIRTIO_MMIO_GUEST_PAGE_SIZE, VIRTQ_PAGE_SIZE);
        return 0;
    }
    driver_features(dev, 1, (uint32_t)(dev->features >> 32));

    /* 5, 6. Features are final; the device may refuse the combination by
       leaving FEATURES_OK clear. */
    status_add(dev, VIRTIO_STATUS_FEATURES_OK);
    if (!(reg_read(dev, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_FEATURES_OK)) {
        virtio_fail(dev);
        return "the device did not accept the features (FEATURES_OK stayed clear)";
    }
    return 0;
}

const char *virtq_init(struct virtq *q, struct virtio_dev *dev, uint16_t index)
{
    /* 4.2.3.2: select the queue, check it is not in use already, read its
       maximum size (0: the device has no such queue). */
    reg_write(dev, VIRTIO_MMIO_QUEUE_SEL, index);
    uint32_t in_use = reg_read(dev, dev->version == 2 ? VIRTIO_MMIO_QUEUE_READY : VIRTIO_MMIO_QUEUE_PFN);
    if (in_use)
        return "the queue is already in use";
    uint32_t max = reg_read(dev, VIRTIO_MMIO_QUEUE_NUM_MAX);
    if (max == 0)
        return "the device has no such queue";

    for (uint32_t i = 0; i < sizeof q->mem; i++) /* fresh, zeroed rings */
        q->mem[i] = 0;
    q->dev = dev;
    q->index = index;
    /* Queue sizes are powers of 2 (2.7), so the smaller of two is one too. */
    q->size = max < VIRTQ_MAX_SIZE ? (uint16_t)max : VIRTQ_MAX_SIZE;
    q->avail_idx = 0;
    q->used_seen = 0;
    q->desc = (volatile struct virtq_desc *)q->mem;
    q->avail = (volatile struct virtq_avail *)(q->mem + 16 * q->size);
    q->used = (volatile struct virtq_used *)(q->mem + VIRTQ_PAGE_SIZE);
    reg_write(dev, VIRTIO_MMIO_QUEUE_NUM, q->size);

    if (dev->version == 1) {
        /* 4.2.4: the device finds all three rings from the page number of the
           first, the queue size and the alignment of the used ring. */
        reg_write(dev, VIRTIO_MMIO_QUEUE_ALIGN, VIRTQ_PAGE_SIZE);
        reg_write(dev, VIRTIO_MMIO_QUEUE_PFN, (uint32_t)((uintptr_t)q->mem / VIRTQ_PAGE_SIZE));
        return 0;
    }
    uint64_t desc = (uintptr_t)q->desc, driver = (uintptr_t)q->avail, device = (uintptr_t)q->used;
    reg_write(dev, VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)desc);
    reg_write(dev, VIRTIO_MMIO_QUEUE_DESC_HIGH, (uint32_t)(desc >> 32));
    reg_write(dev, VIRTIO_MMIO_QUEUE_DRIVER_LOW, (uint32_t)driver);
    reg_write(dev, VIRTIO_MMIO_QUEUE_DRIVER_HIGH, (uint32_t)(driver >> 32));
    reg_write(dev, VIRTIO_MMIO_QUEUE_DEVICE_LOW, (uint32_t)device);
    reg_write(dev, VIRTIO_MMIO_QUEUE_DEVICE_HIGH, (uint32_t)(device >> 32));
    reg_write(dev, VIRTIO_MMIO_QUEUE_READY, 1);
    return 0;
}

void virtio_driver_ok(struct virtio_dev *dev) { status_add(dev, VIRTIO_STATUS_DRIVER_OK); }

void virtio_fail(struct virtio_dev *dev) { status_add(dev, VIRTIO_STATUS_FAILED); }

static void config_copy(const struct virtio_dev *dev, uint32_t offset, uint8_t *out, uint32_t len,
                        uint32_t width)
{
    uintptr_t at = dev->base + VIRTIO_MMIO_CONFIG + offset;
    for (uint32_t i = 0; i < len; i += width) {
        uint32_t v = width == 1 ? mmio_read8(at + i)
                   : width == 2 ? *(volatile uint16_t *)(at + i)
                                : mmio_read32(at + i);
        for (uint32_t b = 0; b < width && i + b < len; b++)
            out[i + b] = (uint8_t)(v >> (8 * b)); /* little-endian (2.5) */
    }
}

void virtio_config_read(const struct virtio_dev *dev, uint32_t offset, void *buf, uint32_t len,
                        uint32_t width)
{
    uint8_t *out = buf;
    if (dev->version == 1) {
        uint8_t again[16]; /* these guests read at most 8 bytes at once */
        if (len > sizeof again)
            len = sizeof again;
        int same;
        do {
            config_copy(dev, offset, out, len, width);
            config_copy(dev, offset, again, len, width);
            same = 1;
            for (uint32_t i = 0; i < len; i++)
                same &= out[i] == again[i];
        } while (!same);
        return;
    }
    uint32_t before, after;
    do {
        before = reg_read(dev, VIRTIO_MMIO_CONFIG_GENERATION);
        config_copy(dev, offset, out, len, width);
        after = reg_read(dev, VIRTIO_MMIO_CONFIG_GENERATION);
    } while (before != after);
}

void virtq_add(struct virtq *q, uint16_t head, const struct virtq_buf *bufs, unsigned n)
{
    /* 2.7.13 steps 1-2: the buffers go into the descriptor table, chained
       through `next`; the head goes into the next free slot of the ring. */
    for (unsigned i = 0; i < n; i++) {
        volatile struct virtq_desc *d = &q->desc[head + i];
        d->addr = (uint64_t)(uintptr_t)bufs[i].addr;
        d->len = bufs[i].len;
        d->flags = (uint16_t)((bufs[i].device_writes ? VIRTQ_DESC_F_WRITE : 0)
                              | (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0));
        d->next = (uint16_t)(i + 1 < n ? head + i + 1 : 0);
    }
    q->avail->ring[q->avail_idx % q->size] = head;
    /* Step 3: the device must see the descriptors and the ring entry before
       the index that publishes them (2.7.13.3 "Updating idx"). */
    virtio_mb();
    q->avail_idx++;
    q->avail->idx = q->avail_idx;
}

void virtq_notify(struct virtq *q)
{
    virtio_mb(); /* the new idx reaches memory before the device looks */
    reg_write(q->dev, VIRTIO_MMIO_QUEUE_NOTIFY, q->index);
}

int virtq_poll(struct virtq *q, uint32_t *id, uint32_t *len)
{
    if (q->used->idx == q->used_seen)
        return 0;
    /* Read the entry only after the index that says it is there. */
    virtio_mb();
    volatile struct virtq_used_elem *e = &q->used->ring[q->used_seen % q->size];
    *id = e->id;
    *len = e->len;
    q->used_seen++;
    return 1;
}

void virtq_wait(struct virtq *q, uint32_t *id, uint32_t *len)
{
    while (!virtq_poll(q, id, len))
        ;
}

uint32_t virtio_ack_interrupt(struct virtio_dev *dev)
{
    uint32_t status = reg_read(dev, VIRTIO_MMIO_INTERRUPT_STATUS);
    reg_write(dev, VIRTIO_MMIO_INTERRUPT_ACK, status);
    return status;
}
