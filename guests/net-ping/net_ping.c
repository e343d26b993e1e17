/* net-ping: ping over a virtio network device. Finds the NIC, reads its MAC
   address, asks by ARP (RFC 826) who has the target address, then sends
   ICMP echo requests (RFC 792) one at a time and prints each reply the way
   ping(8) does, without round-trip times: the output has to be the same on
   every machine, and timings are not.

   The defaults fit QEMU's user networking and labvmm's host port alike: the
   guest is 10.0.2.15 and pings the gateway, 10.0.2.2. Waiting is polling the
   used ring against CLINT mtime (timeout_ms per ARP try and per reply).
   While it waits it answers ARP requests for its own address, so a peer that
   asks before replying (QEMU's slirp may) gets its answer.

   Exit codes: 0 every reply arrived (or no network device at all), 1 lost
   replies or no ARP answer, 2 the device could not be set up. */
#include <stdint.h>
#include "clint.h"
#include "finisher.h"
#include "inet.h"
#include "uart.h"
#include "virtio_guest.h"
#include "virtio_net.h"

volatile uint64_t labvmm_param_ip = 0x0a00020f;     /* 10.0.2.15, our address */
volatile uint64_t labvmm_param_target = 0x0a000202; /* 10.0.2.2, whom we ping */
volatile uint64_t labvmm_param_count = 3;           /* echo requests */
volatile uint64_t labvmm_param_timeout_ms = 1000;   /* per ARP try and per reply */

#define ARP_TRIES 3
#define PING_ID 0x4c42     /* the ICMP identifier: "LB" */
#define PAYLOAD_BYTES 56   /* as ping(8): 64 bytes of ICMP */

static struct vnet net;
static uint8_t frame[ETH_FRAME_MAX], out[ETH_FRAME_MAX];
static uint32_t my_ip;

static uint64_t deadline_after_timeout(void)
{
    return clint_mtime() + labvmm_param_timeout_ms * (CLINT_TICKS_PER_SEC / 1000);
}

/* Answers an ARP request for our address; returns 1 if frame was one. */
static int answer_arp(uint32_t len)
{
    struct arp_packet a;
    if (!arp_parse(frame, len, &a) || a.op != ARP_REQUEST || a.target_ip != my_ip)
        return 0;
    struct arp_packet reply = {.op = ARP_REPLY, .sender_ip = my_ip, .target_ip = a.sender_ip};
    for (int i = 0; i < ETH_ADDR_BYTES; i++)
        reply.sender_mac[i] = net.mac[i], reply.target_mac[i] = a.sender_mac[i];
    vnet_send(&net, out, arp_build(out, a.sender_mac, &reply));
    return 1;
}

/* The next frame that is not an ARP request for us, or 0 once mtime passes
   deadline. The used ring is plain memory, but mtime is a device register
   (on labvmm every read is a VM exit): look at the clock every 64 polls. */
static uint32_t receive_until(uint64_t deadline)
{
    for (uint32_t polls = 0;; polls++) {
        uint32_t len = vnet_receive(&net, frame);
        if (len > 0 && !answer_arp(len))
            return len;
        if (len == 0 && polls % 64 == 0 && clint_mtime() >= deadline)
            return 0;
    }
}

/* Finds the target's MAC address by ARP; returns 1 and fills mac, or 0. */
static int resolve(uint32_t ip, uint8_t mac[ETH_ADDR_BYTES])
{
    struct arp_packet request = {.op = ARP_REQUEST, .sender_ip = my_ip, .target_ip = ip};
    for (int i = 0; i < ETH_ADDR_BYTES; i++)
        request.sender_mac[i] = net.mac[i];
    for (int try = 0; try < ARP_TRIES; try++) {
        vnet_send(&net, out, arp_build(out, eth_broadcast, &request));
        uint64_t deadline = deadline_after_timeout();
        uint32_t len;
        while ((len = receive_until(deadline)) > 0) {
            struct arp_packet a;
            if (arp_parse(frame, len, &a) && a.op == ARP_REPLY && a.sender_ip == ip
                && a.target_ip == my_ip) {
                for (int i = 0; i < ETH_ADDR_BYTES; i++)
                    mac[i] = a.sender_mac[i];
                return 1;
            }
        }
    }
    return 0;
}

/* Sends echo request `seq` and waits for its reply; returns 1 if it came. */
static int ping_once(uint32_t target, const uint8_t target_mac[ETH_ADDR_BYTES], uint16_t seq)
{
    static uint8_t payload[PAYLOAD_BYTES];
    for (uint32_t i = 0; i < PAYLOAD_BYTES; i++)
        payload[i] = (uint8_t)(seq + i); /* differs per request, so a stale reply cannot match */
    struct icmp_echo request = {.src_ip = my_ip, .dst_ip = target, .type = ICMP_ECHO_REQUEST,
                                .id = PING_ID, .seq = seq, .payload = payload,
                                .payload_bytes = PAYLOAD_BYTES};
    for (int i = 0; i < ETH_ADDR_BYTES; i++)
        request.src_mac[i] = net.mac[i], request.dst_mac[i] = target_mac[i];
    vnet_send(&net, out, icmp_echo_build(out, &request));

    uint64_t deadline = deadline_after_timeout();
    uint32_t len;
    while ((len = receive_until(deadline)) > 0) {
        struct icmp_echo reply;
        if (!icmp_echo_parse(frame, len, &reply) || reply.type != ICMP_ECHO_REPLY
            || reply.src_ip != target || reply.dst_ip != my_ip || reply.id != PING_ID
            || reply.seq != seq || reply.payload_bytes != PAYLOAD_BYTES)
            continue;
        int same = 1;
        for (uint32_t i = 0; i < PAYLOAD_BYTES; i++)
            same &= reply.payload[i] == payload[i];
        if (!same)
            continue;
        uart_put_dec(8 + reply.payload_bytes); /* ICMP header and payload, as ping(8) counts */
        uart_puts(" bytes from ");
        print_ip(target);
        uart_puts(": icmp_seq=");
        uart_put_dec(seq);
        uart_puts("\n");
        return 1;
    }
    uart_puts("net-ping: no reply to icmp_seq=");
    uart_put_dec(seq);
    uart_puts("\n");
    return 0;
}

int main(uint64_t hartid, uint64_t dtb)
{
    (void)hartid;
    my_ip = (uint32_t)labvmm_param_ip;
    uint32_t target = (uint32_t)labvmm_param_target;
    virtio_guest_find("net-ping", dtb, VIRTIO_ID_NET, &net.dev);
    const char *err = vnet_init(&net);
    if (err)
        virtio_guest_fail("net-ping", err, 2);
    uart_puts("net-ping: MAC ");
    print_mac(net.mac);
    uart_puts(", address ");
    print_ip(my_ip);
    uart_puts("\n");

    uint8_t target_mac[ETH_ADDR_BYTES];
    if (!resolve(target, target_mac)) {
        uart_puts("net-ping: no ARP reply from ");
        print_ip(target);
        uart_puts("\n");
        power_off_fail(1);
    }
    uart_puts("net-ping: ");
    print_ip(target);
    uart_puts(" is at ");
    print_mac(target_mac);
    uart_puts("\n");

    uint64_t received = 0;
    for (uint64_t seq = 1; seq <= labvmm_param_count; seq++)
        received += (uint64_t)ping_once(target, target_mac, (uint16_t)seq);
    uart_puts("net-ping: ");
    uart_put_dec(labvmm_param_count);
    uart_puts(" packets transmitted, ");
    uart_put_dec(received);
    uart_puts(" received\n");
    if (received != labvmm_param_count)
        power_off_fail(1);
    power_off();
}
