/* disk: a virtio block device driver (virtio 1.2, 5.2 Block Device) on the
   library in common/virtio.c. It finds the disk, prints its capacity and
   serial, checks sectors of a test image, writes, flushes and reads back.

   The test image's contents are a pattern anyone can recompute: word w
   (8 bytes, little-endian) of sector s, written in generation g, is
       (s * 0x9E3779B97F4A7C15 + w) ^ (g * 0xBF58476D1CE4E5B9)      (mod 2^64)
   A fresh image is generation 0 (tests/images_util.py writes one); each
   write this guest makes is a later generation, so a stale, lost or torn
   sector shows as a mismatch.

   With flush_loop = N > 0 it instead writes sector write_sector + (n-1) %
   write_count in generation n, flushes, and prints "FLUSHED n", for n = 1..N:
   once that line is out, every write up to generation n is durable.

   Exit codes: 0 done (or no block device at all), 1 data mismatch, 2 the
   device failed a request or the parameters do not fit the disk. */
#include <stdint.h>
#include "finisher.h"
#include "uart.h"
#include "virtio.h"
#include "virtio_guest.h"

/* Parameters whose default is 0 go into .data by hand (guests/README.md). */
__attribute__((section(".data"))) volatile uint64_t labvmm_param_read_sector = 0;
volatile uint64_t labvmm_param_read_count = 16;   /* sectors checked for generation 0 */
volatile uint64_t labvmm_param_write_sector = 64; /* first sector written */
volatile uint64_t labvmm_param_write_count = 4;   /* sectors written */
__attribute__((section(".data"))) volatile uint64_t labvmm_param_flush_loop = 0;

#define SECTOR_BYTES 512 /* virtio-blk counts in 512-byte sectors whatever blk_size says */
#define WORDS_PER_SECTOR (SECTOR_BYTES / 8)
#define SECTORS_PER_REQUEST 8

#define PATTERN_SECTOR 0x9E3779B97F4A7C15ull
#define PATTERN_GENERATION 0xBF58476D1CE4E5B9ull

/* 5.2.3 Feature bits, 5.2.4 Device configuration layout. */
#define VIRTIO_BLK_F_RO (1ull << 5)
#define VIRTIO_BLK_F_FLUSH (1ull << 9)
#define CONFIG_CAPACITY 0 /* le64, in 512-byte sectors */

/* 5.2.6 Device Operation: a request is a header the device reads, data, and
   a status byte the device writes, each in its own descriptor here. */
#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_UNSUPP 2
#define VIRTIO_BLK_ID_BYTES 20

struct virtio_blk_req {
    uint32_t type;
    uint32_t reserved;
    uint64_t sector;
};

static struct virtio_dev dev;
static struct virtq queue;
static struct virtio_blk_req header;
static volatile uint8_t status;
static uint64_t data[SECTORS_PER_REQUEST * WORDS_PER_SECTOR];
static uint64_t capacity;
static uint64_t checksum; /* over every word checked, in order */

static uint64_t pattern(uint64_t sector, uint64_t word, uint64_t generation)
{
    return (sector * PATTERN_SECTOR + word) ^ (generation * PATTERN_GENERATION);
}

static __attribute__((noreturn)) void fail(const char *why, uint16_t code)
{
    virtio_guest_fail("disk", why, code);
}

static void put_range(uint64_t first, uint64_t count)
{
    uart_put_dec(first);
    uart_puts("-");
    uart_put_dec(first + count - 1);
}

/* Submits one request, waits for it by polling the used ring, and returns
   the status the device wrote. len is 0 for FLUSH, which has no data. */
static uint8_t blk_request(uint32_t type, uint64_t sector, void *buf, uint32_t len)
{
    header = (struct virtio_blk_req){.type = type, .sector = sector};
    status = 0xff; /* not a status the device may write */
    struct virtq_buf chain[3];
    unsigned n = 0;
    chain[n++] = (struct virtq_buf){&header, sizeof header, 0};
    if (len > 0)
        chain[n++] = (struct virtq_buf){buf, len, type != VIRTIO_BLK_T_OUT};
    chain[n++] = (struct virtq_buf){(const void *)&status, 1, 1};
    virtq_add(&queue, 0, chain, n);
    virtq_notify(&queue);
    uint32_t id, written;
    virtq_wait(&queue, &id, &written);
    if (id != 0)
        fail("the device returned a chain it was never given", 2);
    return status;
}

static void blk_transfer(uint32_t type, uint64_t sector, uint64_t count)
{
    if (blk_request(type, sector, data, (uint32_t)(count * SECTOR_BYTES)) != VIRTIO_BLK_S_OK) {
        uart_puts(type == VIRTIO_BLK_T_IN ? "disk: reading" : "disk: writing");
        uart_puts(" sectors ");
        put_range(sector, count);
        fail(" failed", 2);
    }
}

/* count > 0 sectors from first must be on the disk. */
static void check_range(uint64_t first, uint64_t count)
{
    if (first >= capacity || count > capacity - first) {
        uart_puts("disk: sectors ");
        put_range(first, count);
        uart_puts(" are not on the disk (");
        uart_put_dec(capacity);
        fail("sectors)", 2);
    }
}

/* Reads sectors first..first+count-1 and checks they hold `generation`. */
static void read_and_verify(uint64_t first, uint64_t count, uint64_t generation)
{
    for (uint64_t s = first; s < first + count; s += SECTORS_PER_REQUEST) {
        uint64_t n = first + count - s < SECTORS_PER_REQUEST ? first + count - s : SECTORS_PER_REQUEST;
        blk_transfer(VIRTIO_BLK_T_IN, s, n);
        for (uint64_t i = 0; i < n * WORDS_PER_SECTOR; i++) {
            uint64_t sector = s + i / WORDS_PER_SECTOR, word = i % WORDS_PER_SECTOR;
            uint64_t want = pattern(sector, word, generation);
            if (data[i] != want) {
                uart_puts("disk: MISMATCH in sector ");
                uart_put_dec(sector);
                uart_puts(" word ");
                uart_put_dec(word);
                uart_puts(": read ");
                uart_put_hex(data[i], 16);
                uart_puts(", expected ");
                uart_put_hex(want, 16);
                uart_puts(" (generation ");
                uart_put_dec(generation);
                uart_puts(")\n");
                power_off_fail(1);
            }
            checksum = (checksum << 5 | checksum >> 59) ^ data[i]; /* rotate-xor */
        }
    }
}

static void write_generation(uint64_t first, uint64_t count, uint64_t generation)
{
    for (uint64_t s = first; s < first + count; s += SECTORS_PER_REQUEST) {
        uint64_t n = first + count - s < SECTORS_PER_REQUEST ? first + count - s : SECTORS_PER_REQUEST;
        for (uint64_t i = 0; i < n * WORDS_PER_SECTOR; i++)
            data[i] = pattern(s + i / WORDS_PER_SECTOR, i % WORDS_PER_SECTOR, generation);
        blk_transfer(VIRTIO_BLK_T_OUT, s, n);
    }
}

static void flush(void)
{
    if (blk_request(VIRTIO_BLK_T_FLUSH, 0, 0, 0) != VIRTIO_BLK_S_OK)
        fail("FLUSH failed", 2);
}

static void print_serial(void)
{
    char id[VIRTIO_BLK_ID_BYTES + 1];
    uint8_t st = blk_request(VIRTIO_BLK_T_GET_ID, 0, id, VIRTIO_BLK_ID_BYTES);
    if (st == VIRTIO_BLK_S_UNSUPP) {
        uart_puts("disk: no serial (GET_ID unsupported)\n");
        return;
    }
    if (st != VIRTIO_BLK_S_OK)
        fail("GET_ID failed", 2);
    /* The id is NUL-terminated unless it is all 20 bytes long (5.2.6). */
    id[VIRTIO_BLK_ID_BYTES] = '\0';
    for (int i = 0; id[i]; i++)
        if (id[i] < ' ' || id[i] > '~')
            id[i] = '?';
    uart_puts("disk: serial \"");
    uart_puts(id);
    uart_puts("\"\n");
}

/* The write-and-flush loop the durability tests kill at random moments. */
static void flush_loop(uint64_t first, uint64_t count, uint64_t iterations)
{
    if (!(dev.features & VIRTIO_BLK_F_FLUSH))
        fail("the device offers no FLUSH, so there is no flush loop", 2);
    for (uint64_t n = 1; n <= iterations; n++) {
        write_generation(first + (n - 1) % count, 1, n);
        flush();
        uart_puts("FLUSHED ");
        uart_put_dec(n);
        uart_puts("\n");
    }
    /* Sector first + k last got generation k+1, k+1+count, ...: the largest <= N. */
    for (uint64_t k = 0; k < count && k < iterations; k++) {
        uint64_t last = k + 1 + (iterations - k - 1) / count * count;
        read_and_verify(first + k, 1, last);
        uart_puts("disk: sector ");
        uart_put_dec(first + k);
        uart_puts(" holds generation ");
        uart_put_dec(last);
        uart_puts("\n");
    }
}

int main(uint64_t hartid, uint64_t dtb)
{
    (void)hartid;
    virtio_guest_find("disk", dtb, VIRTIO_ID_BLOCK, &dev);

    const char *err = virtio_init(&dev, VIRTIO_BLK_F_RO | VIRTIO_BLK_F_FLUSH);
    if (!err)
        err = virtq_init(&queue, &dev, 0); /* 5.2.2: one request queue */
    if (!err && queue.size < 3)
        err = "a queue too small for a three-descriptor request";
    if (err)
        fail(err, 2);
    virtio_driver_ok(&dev);

    virtio_config_read(&dev, CONFIG_CAPACITY, &capacity, 8, 4);
    int read_only = (dev.features & VIRTIO_BLK_F_RO) != 0;
    uart_puts("disk: capacity ");
    uart_put_dec(capacity);
    uart_puts(" sectors (");
    uart_put_dec(capacity / 2);
    uart_puts(" KiB), flush ");
    uart_puts(dev.features & VIRTIO_BLK_F_FLUSH ? "yes" : "no");
    uart_puts(", read-only ");
    uart_puts(read_only ? "yes\n" : "no\n");
    print_serial();

    uint64_t first = labvmm_param_read_sector, count = labvmm_param_read_count;
    if (count > 0) {
        check_range(first, count);
        read_and_verify(first, count, 0);
        uart_puts("disk: sectors ");
        put_range(first, count);
        uart_puts(" hold the generation 0 pattern\n");
    }

    first = labvmm_param_write_sector, count = labvmm_param_write_count;
    if (labvmm_param_flush_loop > 0) {
        if (read_only)
            fail("read-only, so there is no flush loop", 2);
        if (count == 0)
            fail("the flush loop needs write_count >= 1", 2);
        check_range(first, count);
        flush_loop(first, count, labvmm_param_flush_loop);
    } else if (count > 0 && read_only) {
        uart_puts("disk: read-only, nothing written\n");
    } else if (count > 0) {
        check_range(first, count);
        write_generation(first, count, 1);
        uart_puts("disk: wrote generation 1 to sectors ");
        put_range(first, count);
        if (dev.features & VIRTIO_BLK_F_FLUSH) {
            flush();
            uart_puts(", flushed\n");
        } else {
            uart_puts(" (the device offers no FLUSH)\n");
        }
        read_and_verify(first, count, 1);
        uart_puts("disk: sectors ");
        put_range(first, count);
        uart_puts(" hold the generation 1 pattern\n");
    }

    uart_puts("disk: checksum ");
    uart_put_hex(checksum, 16);
    uart_puts("\ndisk OK\n");
    power_off();
}
