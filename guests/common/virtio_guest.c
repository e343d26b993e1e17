/* The first steps and the failure path of the virtio guests (see virtio_guest.h). */
#include "virtio_guest.h"
#include "finisher.h"
#include "uart.h"

void virtio_guest_find(const char *guest, uint64_t dtb, uint32_t device_id, struct virtio_dev *dev)
{
    /* Linux's names for the drivers, and the spec's for the device types (5.1, 5.2, 5.4). */
    const char *driver = device_id == VIRTIO_ID_NET     ? "virtio-net"
                       : device_id == VIRTIO_ID_BLOCK   ? "virtio-blk"
                       : device_id == VIRTIO_ID_ENTROPY ? "virtio-rng"
                                                        : "virtio";
    const char *kind = device_id == VIRTIO_ID_NET     ? "network"
                     : device_id == VIRTIO_ID_BLOCK   ? "block"
                     : device_id == VIRTIO_ID_ENTROPY ? "entropy"
                                                      : "such";
    uart_puts(guest);
    if (!virtio_find(dtb, device_id, dev)) {
        uart_puts(": no virtio ");
        uart_puts(kind);
        uart_puts(" device\n");
        power_off();
    }
    uart_puts(": ");
    uart_puts(driver);
    uart_puts(" at ");
    uart_put_hex(dev->base, 1);
    uart_puts(", irq ");
    uart_put_dec(dev->irq);
    uart_puts(", version ");
    uart_put_dec(dev->version);
    uart_puts("\n");
}

void virtio_guest_fail(const char *guest, const char *why, uint16_t code)
{
    uart_puts(guest);
    uart_puts(": ");
    uart_puts(why);
    uart_puts("\n");
    power_off_fail(code);
}
