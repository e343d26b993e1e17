/* Just enough of Ethernet, ARP (RFC 826), IPv4 (RFC 791) and ICMP echo
   (RFC 792) for net-ping and net-echo: building and checking frames in a
   caller's buffer. Network byte order is big-endian; IPv4 addresses are held
   as host integers, 10.0.2.15 = 0x0a00020f. */
#ifndef INET_H
#define INET_H

#include <stdint.h>

#define ETH_ADDR_BYTES 6
#define ETH_HEADER_BYTES 14 /* destination, source, EtherType */
#define ETH_FRAME_MAX 1514  /* header + a 1500-byte payload, no FCS */
#define ETH_FRAME_MIN 60    /* shorter frames are padded (IEEE 802.3, no FCS) */
#define ETHERTYPE_IPV4 0x0800
#define ETHERTYPE_ARP 0x0806

#define ARP_REQUEST 1
#define ARP_REPLY 2

#define ICMP_ECHO_REPLY 0
#define ICMP_ECHO_REQUEST 8

extern const uint8_t eth_broadcast[ETH_ADDR_BYTES];

/* An ARP packet for IPv4 over Ethernet. */
struct arp_packet {
    uint16_t op;                          /* ARP_REQUEST or ARP_REPLY */
    uint8_t sender_mac[ETH_ADDR_BYTES];   /* sha */
    uint32_t sender_ip;                   /* spa */
    uint8_t target_mac[ETH_ADDR_BYTES];   /* tha (zero in a request) */
    uint32_t target_ip;                   /* tpa */
};

/* An ICMP echo request or reply and the addresses around it. */
struct icmp_echo {
    uint8_t src_mac[ETH_ADDR_BYTES], dst_mac[ETH_ADDR_BYTES];
    uint32_t src_ip, dst_ip;
    uint8_t type; /* ICMP_ECHO_REQUEST or ICMP_ECHO_REPLY */
    uint16_t id, seq;
    const uint8_t *payload;
    uint32_t payload_bytes;
};

/* The Internet checksum (RFC 1071) of len bytes: 0 over data that holds its own. */
uint16_t inet_checksum(const uint8_t *data, uint32_t len);

/* 1 and *out when frame (len bytes) is an Ethernet/IPv4 ARP packet, else 0. */
int arp_parse(const uint8_t *frame, uint32_t len, struct arp_packet *out);

/* Writes an ARP frame from `a` to eth_dst into frame; returns its length. */
uint32_t arp_build(uint8_t *frame, const uint8_t eth_dst[ETH_ADDR_BYTES], const struct arp_packet *a);

/* 1 and *out when frame is an IPv4 ICMP echo request or reply with good
   header and ICMP checksums, else 0. out->payload points into frame. */
int icmp_echo_parse(const uint8_t *frame, uint32_t len, struct icmp_echo *out);

/* Writes the Ethernet + IPv4 + ICMP frame for `e` into frame (room for
   ETH_FRAME_MAX bytes; e->payload_bytes at most 1472); returns its length. */
uint32_t icmp_echo_build(uint8_t *frame, const struct icmp_echo *e);

/* Dotted quad and colon-separated hex, on the UART. */
void print_ip(uint32_t ip);
void print_mac(const uint8_t mac[ETH_ADDR_BYTES]);

#endif
