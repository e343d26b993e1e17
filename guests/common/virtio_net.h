/* A virtio network device driver (virtio 1.2, 5.1 Network Device) on
   virtio.h: one receive and one transmit queue, no offloads. One device per
   guest: its buffers are static in virtio_net.c. */
#ifndef VIRTIO_NET_H
#define VIRTIO_NET_H

#include <stdint.h>
#include "inet.h"
#include "virtio.h"

/* 5.1.3 Feature bits: the device has a MAC address in its configuration. */
#define VIRTIO_NET_F_MAC (1ull << 5)

struct vnet {
    struct virtio_dev dev;
    struct virtq rx, tx; /* 5.1.2 Virtqueues: receiveq1 is 0, transmitq1 is 1 */
    uint8_t mac[ETH_ADDR_BYTES];
    uint32_t header_bytes; /* the struct virtio_net_hdr before every frame (5.1.6) */
};

/* Initializes the device in net->dev (found with virtio_find): features,
   both queues, the MAC from the configuration space (5.1.4), receive buffers
   (5.1.6.3), DRIVER_OK. Returns NULL or what went wrong. */
const char *vnet_init(struct vnet *net);

/* Sends one Ethernet frame of len bytes (at most ETH_FRAME_MAX) and polls
   until the device has taken it (5.1.6.2 Packet Transmission). */
void vnet_send(struct vnet *net, const uint8_t *frame, uint32_t len);

/* Copies the next received frame into `frame` (room for ETH_FRAME_MAX bytes)
   and gives its buffer back to the device (5.1.6.4 Processing of Incoming
   Packets). Returns the frame's length, or 0 when nothing has arrived. */
uint32_t vnet_receive(struct vnet *net, uint8_t *frame);

#endif
