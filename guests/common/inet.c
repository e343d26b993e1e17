/* Ethernet, ARP, IPv4 and ICMP echo frames (see inet.h). */
#include "inet.h"
#include "uart.h"

const uint8_t eth_broadcast[ETH_ADDR_BYTES] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

/* Offsets in an ARP packet for Ethernet/IPv4 (RFC 826), after the Ethernet header. */
#define ARP_BYTES 28
#define ARP_HTYPE_ETHERNET 1

#define IPV4_HEADER_BYTES 20 /* what we send: no options */
#define IPV4_PROTO_ICMP 1
#define IPV4_TTL 64
#define ICMP_ECHO_HEADER_BYTES 8 /* type, code, checksum, identifier, sequence */

static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t get32(const uint8_t *p) { return (uint32_t)get16(p) << 16 | get16(p + 2); }

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
    put16(p, (uint16_t)(v >> 16));
    put16(p + 2, (uint16_t)v);
}

static void copy(uint8_t *to, const uint8_t *from, uint32_t len)
{
    for (uint32_t i = 0; i < len; i++)
        to[i] = from[i];
}

uint16_t inet_checksum(const uint8_t *data, uint32_t len)
{
    /* One's complement sum of 16-bit words, an odd last byte padded with 0. */
    uint32_t sum = 0;
    for (uint32_t i = 0; i + 1 < len; i += 2)
        sum += get16(data + i);
    if (len & 1)
        sum += (uint32_t)data[len - 1] << 8;
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

static void eth_header(uint8_t *frame, const uint8_t dst[ETH_ADDR_BYTES],
                       const uint8_t src[ETH_ADDR_BYTES], uint16_t ethertype)
{
    copy(frame, dst, ETH_ADDR_BYTES);
    copy(frame + ETH_ADDR_BYTES, src, ETH_ADDR_BYTES);
    put16(frame + 12, ethertype);
}

int arp_parse(const uint8_t *frame, uint32_t len, struct arp_packet *out)
{
    const uint8_t *a = frame + ETH_HEADER_BYTES;
    if (len < ETH_HEADER_BYTES + ARP_BYTES || get16(frame + 12) != ETHERTYPE_ARP)
        return 0;
    /* hardware type, protocol type, their address lengths: Ethernet, IPv4, 6, 4 */
    if (get16(a) != ARP_HTYPE_ETHERNET || get16(a + 2) != ETHERTYPE_IPV4 || a[4] != 6 || a[5] != 4)
        return 0;
    out->op = get16(a + 6);
    copy(out->sender_mac, a + 8, ETH_ADDR_BYTES);
    out->sender_ip = get32(a + 14);
    copy(out->target_mac, a + 18, ETH_ADDR_BYTES);
    out->target_ip = get32(a + 24);
    return 1;
}

uint32_t arp_build(uint8_t *frame, const uint8_t eth_dst[ETH_ADDR_BYTES], const struct arp_packet *a)
{
    uint8_t *p = frame + ETH_HEADER_BYTES;
    eth_header(frame, eth_dst, a->sender_mac, ETHERTYPE_ARP);
    put16(p, ARP_HTYPE_ETHERNET);
    put16(p + 2, ETHERTYPE_IPV4);
    p[4] = 6, p[5] = 4;
    put16(p + 6, a->op);
    copy(p + 8, a->sender_mac, ETH_ADDR_BYTES);
    put32(p + 14, a->sender_ip);
    copy(p + 18, a->target_mac, ETH_ADDR_BYTES);
    put32(p + 24, a->target_ip);
    for (uint32_t i = ETH_HEADER_BYTES + ARP_BYTES; i < ETH_FRAME_MIN; i++)
        frame[i] = 0;
    return ETH_FRAME_MIN;
}

int icmp_echo_parse(const uint8_t *frame, uint32_t len, struct icmp_echo *out)
{
    const uint8_t *ip = frame + ETH_HEADER_BYTES;
    if (len < ETH_HEADER_BYTES + IPV4_HEADER_BYTES || get16(frame + 12) != ETHERTYPE_IPV4)
        return 0;
    uint32_t header_bytes = 4u * (ip[0] & 0xf), total_bytes = get16(ip + 2);
    /* version 4, a header that fits, a total length inside the frame, ICMP, not a fragment */
    if (ip[0] >> 4 != 4 || header_bytes < IPV4_HEADER_BYTES || total_bytes < header_bytes
        || ETH_HEADER_BYTES + total_bytes > len || ip[9] != IPV4_PROTO_ICMP
        || (get16(ip + 6) & 0x3fff) != 0 || inet_checksum(ip, header_bytes) != 0)
        return 0;
    const uint8_t *icmp = ip + header_bytes;
    uint32_t icmp_bytes = total_bytes - header_bytes;
    if (icmp_bytes < ICMP_ECHO_HEADER_BYTES || inet_checksum(icmp, icmp_bytes) != 0
        || (icmp[0] != ICMP_ECHO_REQUEST && icmp[0] != ICMP_ECHO_REPLY) || icmp[1] != 0)
        return 0;
    copy(out->dst_mac, frame, ETH_ADDR_BYTES);
    copy(out->src_mac, frame + ETH_ADDR_BYTES, ETH_ADDR_BYTES);
    out->src_ip = get32(ip + 12);
    out->dst_ip = get32(ip + 16);
    out->type = icmp[0];
    out->id = get16(icmp + 4);
    out->seq = get16(icmp + 6);
    out->payload = icmp + ICMP_ECHO_HEADER_BYTES;
    out->payload_bytes = icmp_bytes - ICMP_ECHO_HEADER_BYTES;
    return 1;
}

uint32_t icmp_echo_build(uint8_t *frame, const struct icmp_echo *e)
{
    uint8_t *ip = frame + ETH_HEADER_BYTES, *icmp = ip + IPV4_HEADER_BYTES;
    uint32_t icmp_bytes = ICMP_ECHO_HEADER_BYTES + e->payload_bytes;
    eth_header(frame, e->dst_mac, e->src_mac, ETHERTYPE_IPV4);

    ip[0] = 0x45; /* version 4, 5 header words */
    ip[1] = 0;    /* type of service */
    put16(ip + 2, (uint16_t)(IPV4_HEADER_BYTES + icmp_bytes));
    put16(ip + 4, e->seq);  /* identification: any value, unique per datagram */
    put16(ip + 6, 0x4000);  /* don't fragment */
    ip[8] = IPV4_TTL;
    ip[9] = IPV4_PROTO_ICMP;
    put16(ip + 10, 0);
    put32(ip + 12, e->src_ip);
    put32(ip + 16, e->dst_ip);
    put16(ip + 10, inet_checksum(ip, IPV4_HEADER_BYTES));

    icmp[0] = e->type;
    icmp[1] = 0; /* code */
    put16(icmp + 2, 0);
    put16(icmp + 4, e->id);
    put16(icmp + 6, e->seq);
    copy(icmp + ICMP_ECHO_HEADER_BYTES, e->payload, e->payload_bytes);
    put16(icmp + 2, inet_checksum(icmp, icmp_bytes));
    uint32_t len = ETH_HEADER_BYTES + IPV4_HEADER_BYTES + icmp_bytes;
    for (; len < ETH_FRAME_MIN; len++)
        frame[len] = 0;
    return len;
}

void print_ip(uint32_t ip)
{
    for (int shift = 24; shift >= 0; shift -= 8) {
        uart_put_dec((ip >> shift) & 0xff);
        if (shift)
            uart_putc('.');
    }
}

void print_mac(const uint8_t mac[ETH_ADDR_BYTES])
{
    for (int i = 0; i < ETH_ADDR_BYTES; i++) {
        uart_putc("0123456789abcdef"[mac[i] >> 4]);
        uart_putc("0123456789abcdef"[mac[i] & 0xf]);
        if (i + 1 < ETH_ADDR_BYTES)
            uart_putc(':');
    }
}
