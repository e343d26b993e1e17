/* What each virtio guest (disk, net-ping, net-echo, rng) does first, and
   when it gives up, on the UART. */
#ifndef VIRTIO_GUEST_H
#define VIRTIO_GUEST_H

#include <stdint.h>
#include "virtio.h"

/* Finds the first device with DeviceID device_id (virtio_find) and prints
   "<guest>: virtio-blk at 0x10001000, irq 1, version 2". Without one it
   prints "<guest>: no virtio block device" and powers off with exit code 0:
   with nothing to drive, there is nothing to do. */
void virtio_guest_find(const char *guest, uint64_t dtb, uint32_t device_id, struct virtio_dev *dev);

/* Prints "<guest>: <why>" and powers off with exit code `code`. */
__attribute__((noreturn)) void virtio_guest_fail(const char *guest, const char *why, uint16_t code);

#endif
