/* A small virtio driver library: virtio over MMIO, version 2 and the legacy
   version 1, with split virtqueues. Section numbers are those of the Virtual
   I/O Device (VIRTIO) Version 1.2 specification (OASIS, 2022):
     2.1 Device Status Field      2.2 Feature Bits     2.5 Device Configuration Space
     2.7 Split Virtqueues         3.1 Device Initialization
     4.2 Virtio Over MMIO (4.2.2 register layout, 4.2.3 initialization and
         operation, 4.2.4 the legacy interface)       6 Reserved Feature Bits

   How a driver uses it:
     struct virtio_dev dev;                    find the device (device tree + probe)
     virtio_find(dtb, VIRTIO_ID_BLOCK, &dev);
     virtio_init(&dev, wanted_features);       reset, ACKNOWLEDGE, DRIVER, features
     virtq_init(&q, &dev, 0);                  each queue the driver uses
     virtio_driver_ok(&dev);                   the device may now use the queues
     virtq_add(&q, head, bufs, n);             a chain of n buffers in descriptors head..head+n-1
     virtq_notify(&q);                         "look at queue q"
     virtq_poll(&q, &id, &len) / virtq_wait    the chain came back in the used ring
   Functions that can fail return NULL on success or a message saying what
   went wrong, for the guest to print.

   Only what these guests need: one device of a kind, queues of at most
   VIRTQ_MAX_SIZE descriptors handed out by the caller, no indirect
   descriptors, no event index. */
#ifndef VIRTIO_H
#define VIRTIO_H

#include <stdint.h>

/* 4.2.2 MMIO Device Register Layout: byte offsets of the 32-bit registers. */
#define VIRTIO_MMIO_MAGIC_VALUE 0x000 /* 0x74726976, "virt" in little-endian */
#define VIRTIO_MMIO_VERSION 0x004     /* 2; 1 for the legacy interface (4.2.4) */
#define VIRTIO_MMIO_DEVICE_ID 0x008   /* 0: an empty slot */
#define VIRTIO_MMIO_VENDOR_ID 0x00c
#define VIRTIO_MMIO_DEVICE_FEATURES 0x010 /* 32 feature bits, the word ..._SEL selects */
#define VIRTIO_MMIO_DEVICE_FEATURES_SEL 0x014
#define VIRTIO_MMIO_DRIVER_FEATURES 0x020
#define VIRTIO_MMIO_DRIVER_FEATURES_SEL 0x024
#define VIRTIO_MMIO_GUEST_PAGE_SIZE 0x028 /* legacy only */
#define VIRTIO_MMIO_QUEUE_SEL 0x030       /* the queue the next six registers mean */
#define VIRTIO_MMIO_QUEUE_NUM_MAX 0x034
#define VIRTIO_MMIO_QUEUE_NUM 0x038
#define VIRTIO_MMIO_QUEUE_ALIGN 0x03c /* legacy only */
#define VIRTIO_MMIO_QUEUE_PFN 0x040   /* legacy only */
#define VIRTIO_MMIO_QUEUE_READY 0x044
#define VIRTIO_MMIO_QUEUE_NOTIFY 0x050
#define VIRTIO_MMIO_INTERRUPT_STATUS 0x060
#define VIRTIO_MMIO_INTERRUPT_ACK 0x064
#define VIRTIO_MMIO_STATUS 0x070
#define VIRTIO_MMIO_QUEUE_DESC_LOW 0x080 /* the three rings' addresses, 64 bits each */
#define VIRTIO_MMIO_QUEUE_DESC_HIGH 0x084
#define VIRTIO_MMIO_QUEUE_DRIVER_LOW 0x090
#define VIRTIO_MMIO_QUEUE_DRIVER_HIGH 0x094
#define VIRTIO_MMIO_QUEUE_DEVICE_LOW 0x0a0
#define VIRTIO_MMIO_QUEUE_DEVICE_HIGH 0x0a4
#define VIRTIO_MMIO_CONFIG_GENERATION 0x0fc
#define VIRTIO_MMIO_CONFIG 0x100 /* the device-specific configuration space */

#define VIRTIO_MMIO_MAGIC 0x74726976u

/* InterruptStatus bits (4.2.2). */
#define VIRTIO_INT_USED_BUFFER 1u
#define VIRTIO_INT_CONFIG_CHANGE 2u

/* 2.1 Device Status Field. */
#define VIRTIO_STATUS_ACKNOWLEDGE 1u
#define VIRTIO_STATUS_DRIVER 2u
#define VIRTIO_STATUS_DRIVER_OK 4u
#define VIRTIO_STATUS_FEATURES_OK 8u
#define VIRTIO_STATUS_NEEDS_RESET 64u
#define VIRTIO_STATUS_FAILED 128u

/* 6 Reserved Feature Bits: a version 2 device must offer it and the driver
   must accept it; the legacy interface has no such bit. */
#define VIRTIO_F_VERSION_1 (1ull << 32)

/* 5 Device Types: the DeviceID of each kind these guests drive. */
#define VIRTIO_ID_NET 1
#define VIRTIO_ID_BLOCK 2
#define VIRTIO_ID_ENTROPY 4

/* One virtio-mmio device the driver found. */
struct virtio_dev {
    uintptr_t base;     /* its registers */
    uint32_t irq;       /* its PLIC source */
    uint32_t version;   /* 2, or 1: the legacy interface */
    uint32_t device_id; /* VIRTIO_ID_... */
    uint64_t features;  /* the features both sides agreed on */
};

/* 2.7.5 The Virtqueue Descriptor Table: one buffer of guest memory. */
struct virtq_desc {
    uint64_t addr; /* guest-physical */
    uint32_t len;
    uint16_t flags;
    uint16_t next; /* the next descriptor of the chain, if flags has NEXT */
};
#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2 /* the device writes this buffer (else it reads it) */

/* 2.7.6 The Virtqueue Available Ring: chains the driver offers the device. */
struct virtq_avail {
    uint16_t flags;
    uint16_t idx;    /* where the driver puts the next entry, free-running */
    uint16_t ring[]; /* head descriptor of each chain */
};

/* 2.7.8 The Virtqueue Used Ring: chains the device is done with. */
struct virtq_used_elem {
    uint32_t id;  /* head descriptor of the chain */
    uint32_t len; /* bytes the device wrote into it */
};
struct virtq_used {
    uint16_t flags;
    uint16_t idx; /* where the device puts the next entry, free-running */
    struct virtq_used_elem ring[];
};

#define VIRTQ_MAX_SIZE 16
#define VIRTQ_PAGE_SIZE 4096

/* One split virtqueue, its rings included. The rings sit in `mem` as the
   legacy interface requires (2.7.2 "Legacy Interfaces: A Note on Virtqueue
   Layout"): descriptor table at the start of a page, available ring right
   after it, used ring at the next page boundary. That placement also meets
   the alignments version 2 asks for (2.7: 16, 2 and 4 bytes). */
struct virtq {
    uint8_t mem[2 * VIRTQ_PAGE_SIZE] __attribute__((aligned(VIRTQ_PAGE_SIZE)));
    struct virtio_dev *dev;
    volatile struct virtq_desc *desc;
    volatile struct virtq_avail *avail;
    volatile struct virtq_used *used;
    uint16_t index;     /* its number on the device */
    uint16_t size;      /* descriptors: min(QueueNumMax, VIRTQ_MAX_SIZE) */
    uint16_t avail_idx; /* our copy of avail->idx */
    uint16_t used_seen; /* used ring entries consumed so far, free-running */
};

/* One buffer of a chain handed to the device. */
struct virtq_buf {
    const void *addr;
    uint32_t len;
    int device_writes; /* 1: the device fills it; 0: the device reads it */
};

/* The virtio-mmio device with DeviceID device_id at the lowest address among
   the device tree's "virtio,mmio" nodes (4.2.1 MMIO Device Discovery): its
   magic value must be right and its version 1 or 2 (4.2.3.1.1). Returns 1 and
   fills *dev, or 0 when there is none. */
int virtio_find(uint64_t dtb, uint32_t device_id, struct virtio_dev *dev);

/* Steps 1 to 6 of 3.1.1 (and 3.1.2 for the legacy interface): reset the
   device, set ACKNOWLEDGE and DRIVER, accept the offered subset of `wanted`
   (plus VIRTIO_F_VERSION_1 on version 2), and set FEATURES_OK and check that
   the device kept it. dev->features is then what was agreed. */
const char *virtio_init(struct virtio_dev *dev, uint64_t wanted);

/* Sets up queue `index` (4.2.3.2 Virtqueue Configuration; 4.2.4 for legacy). */
const char *virtq_init(struct virtq *q, struct virtio_dev *dev, uint16_t index);

/* Step 8 of 3.1.1: the driver is ready; the device may use its queues. */
void virtio_driver_ok(struct virtio_dev *dev);

/* Gives up on the device: sets FAILED (2.1). */
void virtio_fail(struct virtio_dev *dev);

/* Copies len bytes of configuration space from `offset`, reading fields of
   `width` bytes (1, 2 or 4) with accesses of that width (4.2.2), again until
   the configuration did not change meanwhile (2.5 Device Configuration
   Space: ConfigGeneration is the same before and after; the legacy interface
   has no generation, so two equal copies). len is at most 16. */
void virtio_config_read(const struct virtio_dev *dev, uint32_t offset, void *buf, uint32_t len,
                        uint32_t width);

/* Puts the chain bufs[0..n) into descriptors head..head+n-1 and offers it in
   the available ring (2.7.13 Supplying Buffers to The Device); head + n must
   not exceed q->size. The caller owns the descriptors: it must not reuse them
   before the chain comes back. */
void virtq_add(struct virtq *q, uint16_t head, const struct virtq_buf *bufs, unsigned n);

/* Tells the device the queue has new chains (2.7.13 step 4, 4.2.3.3). */
void virtq_notify(struct virtq *q);

/* Takes the next entry of the used ring (2.7.14 Receiving Used Buffers From
   The Device): returns 1 with the chain's head in *id and the bytes written in
   *len, or 0 when the device has returned nothing new. */
int virtq_poll(struct virtq *q, uint32_t *id, uint32_t *len);

/* Polls until a chain comes back. */
void virtq_wait(struct virtq *q, uint32_t *id, uint32_t *len);

/* Reads InterruptStatus and acknowledges what it says (4.2.3.4), which lowers
   the device's interrupt line; returns the status bits. */
uint32_t virtio_ack_interrupt(struct virtio_dev *dev);

#endif
