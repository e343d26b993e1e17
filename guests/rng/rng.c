/* rng: reads bytes from a virtio entropy device (virtio 1.2, 5.4 Entropy
   Device) and prints them in hex, 16 to a line, then how many it read.

   The device has one queue of device-writable buffers and fills each with
   up to its length of random bytes; the used ring says how many it wrote
   (5.4.6 Device Operation), which may be fewer than asked, so the guest asks
   again until it has `bytes` of them.

   On a deterministic machine (labvmm's entropy device is seeded, QEMU's with
   -seed) the bytes are the same on every run with the same seed.

   Exit codes: 0 done (or no entropy device), 1 a line of 16 equal bytes (a
   stuck device), 2 the device misbehaved. */
#include <stdint.h>
#include "finisher.h"
#include "uart.h"
#include "virtio.h"
#include "virtio_guest.h"

volatile uint64_t labvmm_param_bytes = 64;

#define BYTES_PER_LINE 16

static struct virtio_dev dev;
static struct virtq queue;

static __attribute__((noreturn)) void fail(const char *why, uint16_t code)
{
    virtio_guest_fail("rng", why, code);
}

/* Fills line[0..len) from the device, one request after another. */
static void read_random(uint8_t *line, uint32_t len)
{
    for (uint32_t have = 0; have < len;) {
        struct virtq_buf buf = {line + have, len - have, 1};
        virtq_add(&queue, 0, &buf, 1);
        virtq_notify(&queue);
        uint32_t id, written;
        virtq_wait(&queue, &id, &written);
        if (id != 0 || written > len - have)
            fail("the device wrote more than it was given, or into a chain it never had", 2);
        have += written;
    }
}

static void put_hex_byte(uint8_t b)
{
    uart_putc("0123456789abcdef"[b >> 4]);
    uart_putc("0123456789abcdef"[b & 0xf]);
}

int main(uint64_t hartid, uint64_t dtb)
{
    (void)hartid;
    virtio_guest_find("rng", dtb, VIRTIO_ID_ENTROPY, &dev);
    const char *err = virtio_init(&dev, 0); /* 5.4.3: no feature bits */
    if (!err)
        err = virtq_init(&queue, &dev, 0); /* 5.4.2: requestq */
    if (err)
        fail(err, 2);
    virtio_driver_ok(&dev);

    uint64_t total = labvmm_param_bytes;
    for (uint64_t offset = 0; offset < total; offset += BYTES_PER_LINE) {
        uint8_t line[BYTES_PER_LINE];
        uint32_t n = total - offset < BYTES_PER_LINE ? (uint32_t)(total - offset) : BYTES_PER_LINE;
        read_random(line, n);
        uart_puts("rng: ");
        uart_put_hex(offset, 4);
        uart_puts(":");
        int all_equal = n == BYTES_PER_LINE;
        for (uint32_t i = 0; i < n; i++) {
            uart_putc(' ');
            put_hex_byte(line[i]);
            all_equal &= line[i] == line[0];
        }
        uart_puts("\n");
        if (all_equal)
            fail("16 equal bytes in a row: the device looks stuck", 1);
    }
    uart_puts("rng: read ");
    uart_put_dec(total);
    uart_puts(" bytes\n");
    power_off();
}
