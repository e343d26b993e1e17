/* virtio-net: one receive queue kept full of buffers, one transmit queue
   used one frame at a time (see virtio_net.h). */
#include "virtio_net.h"

#define RX_BUFFERS 8
#define HEADER_MAX_BYTES 12

/* Every frame is preceded by a struct virtio_net_hdr (5.1.6): 12 bytes with
   VIRTIO_F_VERSION_1, 10 for a legacy device without VIRTIO_NET_F_MRG_RXBUF
   (5.1.6.1 "Legacy Interface: Device Operation"). Here the header and the
   frame are always separate descriptors, which the legacy interface requires
   unless VIRTIO_F_ANY_LAYOUT is agreed. A zero header asks for no checksum
   offload and no segmentation (5.1.6.2). */
static uint8_t rx_headers[RX_BUFFERS][HEADER_MAX_BYTES];
static uint8_t rx_frames[RX_BUFFERS][ETH_FRAME_MAX];
static const uint8_t tx_header[HEADER_MAX_BYTES];
static uint16_t rx_count; /* receive buffers in use: two descriptors each */

/* Offers receive buffer i to the device, in descriptors 2i and 2i+1. */
static void post_rx(struct vnet *net, uint16_t i)
{
    struct virtq_buf chain[2] = {
        {rx_headers[i], net->header_bytes, 1},
        {rx_frames[i], ETH_FRAME_MAX, 1},
    };
    virtq_add(&net->rx, (uint16_t)(2 * i), chain, 2);
}

const char *vnet_init(struct vnet *net)
{
    const char *err = virtio_init(&net->dev, VIRTIO_NET_F_MAC);
    if (!err)
        err = virtq_init(&net->rx, &net->dev, 0);
    if (!err)
        err = virtq_init(&net->tx, &net->dev, 1);
    if (err)
        return err;
    if (!(net->dev.features & VIRTIO_NET_F_MAC)) {
        virtio_fail(&net->dev);
        return "the device has no MAC address (VIRTIO_NET_F_MAC not offered)";
    }
    if (net->rx.size < 2 || net->tx.size < 2) {
        virtio_fail(&net->dev);
        return "a queue too small for a two-descriptor chain";
    }
    net->header_bytes = net->dev.version == 2 ? 12 : 10;
    virtio_config_read(&net->dev, 0, net->mac, ETH_ADDR_BYTES, 1); /* 5.1.4: mac[6] first */

    /* 5.1.6.3 Setting Up Receive Buffers: fill the receive queue before
       DRIVER_OK, tell the device after it (3.1.1: no notification before). */
    rx_count = net->rx.size / 2 < RX_BUFFERS ? net->rx.size / 2 : RX_BUFFERS;
    for (uint16_t i = 0; i < rx_count; i++)
        post_rx(net, i);
    virtio_driver_ok(&net->dev);
    virtq_notify(&net->rx);
    return 0;
}

void vnet_send(struct vnet *net, const uint8_t *frame, uint32_t len)
{
    struct virtq_buf chain[2] = {
        {tx_header, net->header_bytes, 0},
        {frame, len, 0},
    };
    virtq_add(&net->tx, 0, chain, 2);
    virtq_notify(&net->tx);
    uint32_t id, written;
    virtq_wait(&net->tx, &id, &written);
}

uint32_t vnet_receive(struct vnet *net, uint8_t *frame)
{
    uint32_t id, len;
    while (virtq_poll(&net->rx, &id, &len)) {
        uint16_t i = (uint16_t)(id / 2);
        if (id % 2 != 0 || i >= rx_count)
            continue; /* not a chain we offered: nothing to give back */
        /* len counts the header too; a frame that does not fit is dropped. */
        uint32_t frame_len = len > net->header_bytes ? len - net->header_bytes : 0;
        if (frame_len > ETH_FRAME_MAX)
            frame_len = 0;
        for (uint32_t b = 0; b < frame_len; b++)
            frame[b] = rx_frames[i][b];
        post_rx(net, i);
        virtq_notify(&net->rx);
        if (frame_len > 0)
            return frame_len;
    }
    return 0;
}
