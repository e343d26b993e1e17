/* net-echo: answers ARP requests (RFC 826) for its own address and ICMP echo
   requests (RFC 792) to it, forever or until it has answered `count` echo
   requests, so two VMs on one switch can ping each other: net-ping in one,
   net-echo in the other.

   It sleeps between frames, woken by the device's interrupt: the virtio-mmio
   device raises its PLIC source when it puts a buffer in the used ring
   (4.2.3.4 Notifications From The Device); the PLIC forwards the source to
   hart 0's M-mode context (machine external interrupt); the handler claims
   it, acknowledges the device's InterruptStatus, which lowers the line, and
   completes the claim (PLIC spec, "Interrupt Claim Process", "Interrupt
   Completion").

   Exit codes: 0 answered `count` requests (or no network device at all),
   2 the device could not be set up, 3 an unexpected trap, 4 it answered
   without its handler ever taking the device's interrupt (frames only came
   in while it was awake, or the machine never delivered the interrupt). */
#include <stdint.h>
#include "csr.h"
#include "finisher.h"
#include "inet.h"
#include "plic.h"
#include "uart.h"
#include "virtio_guest.h"
#include "virtio_net.h"

volatile uint64_t labvmm_param_ip = 0x0a000210; /* 10.0.2.16, our address */
__attribute__((section(".data"))) volatile uint64_t labvmm_param_count = 0; /* 0: forever */

static struct vnet net;
static uint8_t frame[ETH_FRAME_MAX], out[ETH_FRAME_MAX];
static uint32_t my_ip;
static uint64_t answered;
static volatile uint64_t interrupts; /* claims of the device's source */

__attribute__((interrupt("machine"), aligned(4))) static void trap_handler(void)
{
    uint64_t cause = csr_read(mcause);
    if (cause != CAUSE_M_EXTERNAL) {
        uart_puts("net-echo: unexpected trap, mcause ");
        uart_put_hex(cause, 16);
        uart_puts(" mepc ");
        uart_put_hex(csr_read(mepc), 1);
        uart_puts("\n");
        power_off_fail(3);
    }
    uint32_t irq = plic_claim(PLIC_CTX_HART0_M);
    if (irq == net.dev.irq) {
        virtio_ack_interrupt(&net.dev); /* the frames themselves are read in main */
        interrupts++;
    }
    if (irq != 0)
        plic_complete(PLIC_CTX_HART0_M, irq);
}

static void answer_arp(const struct arp_packet *a)
{
    struct arp_packet reply = {.op = ARP_REPLY, .sender_ip = my_ip, .target_ip = a->sender_ip};
    for (int i = 0; i < ETH_ADDR_BYTES; i++)
        reply.sender_mac[i] = net.mac[i], reply.target_mac[i] = a->sender_mac[i];
    vnet_send(&net, out, arp_build(out, a->sender_mac, &reply));
    uart_puts("net-echo: told ");
    print_ip(a->sender_ip);
    uart_puts(" that ");
    print_ip(my_ip);
    uart_puts(" is at ");
    print_mac(net.mac);
    uart_puts("\n");
}

static void answer_echo(const struct icmp_echo *request)
{
    struct icmp_echo reply = *request;
    reply.type = ICMP_ECHO_REPLY;
    reply.src_ip = my_ip, reply.dst_ip = request->src_ip;
    for (int i = 0; i < ETH_ADDR_BYTES; i++)
        reply.src_mac[i] = net.mac[i], reply.dst_mac[i] = request->src_mac[i];
    vnet_send(&net, out, icmp_echo_build(out, &reply));
    answered++;
    uart_puts("net-echo: echo reply to ");
    print_ip(request->src_ip);
    uart_puts(": icmp_seq=");
    uart_put_dec(request->seq);
    uart_puts(", ");
    uart_put_dec(8 + request->payload_bytes);
    uart_puts(" bytes\n");
}

/* One received frame: ARP requests for us and echo requests to us get an
   answer; everything else is not ours and is dropped without a word. */
static void handle(uint32_t len)
{
    struct arp_packet a;
    struct icmp_echo e;
    if (arp_parse(frame, len, &a)) {
        if (a.op == ARP_REQUEST && a.target_ip == my_ip)
            answer_arp(&a);
    } else if (icmp_echo_parse(frame, len, &e)) {
        if (e.type == ICMP_ECHO_REQUEST && e.dst_ip == my_ip)
            answer_echo(&e);
    }
}

int main(uint64_t hartid, uint64_t dtb)
{
    (void)hartid;
    my_ip = (uint32_t)labvmm_param_ip;
    virtio_guest_find("net-echo", dtb, VIRTIO_ID_NET, &net.dev);

    /* The interrupt path first, so no completion can come before it is ready:
       trap vector, PLIC source priority/enable/threshold, mie.MEIE. mstatus.MIE
       stays clear except for a moment after each wfi (see below). */
    csr_write(mtvec, (uint64_t)(uintptr_t)trap_handler);
    plic_set_priority(net.dev.irq, 1);
    plic_enable(PLIC_CTX_HART0_M, net.dev.irq);
    plic_set_threshold(PLIC_CTX_HART0_M, 0);
    csr_set(mie, MIE_MEIE);

    const char *err = vnet_init(&net);
    if (err)
        virtio_guest_fail("net-echo", err, 2);
    uart_puts("net-echo: MAC ");
    print_mac(net.mac);
    uart_puts(", address ");
    print_ip(my_ip);
    if (labvmm_param_count) {
        uart_puts(", answering ");
        uart_put_dec(labvmm_param_count);
        uart_puts(" echo requests\n");
    } else {
        uart_puts(", answering echo requests until powered off\n");
    }

    for (;;) {
        uint32_t len;
        while ((len = vnet_receive(&net, frame)) > 0) {
            handle(len);
            if (labvmm_param_count && answered >= labvmm_param_count) {
                uart_puts("net-echo: answered ");
                uart_put_dec(answered);
                uart_puts(" echo requests\n");
                if (interrupts == 0)
                    power_off_fail(4);
                power_off();
            }
        }
        /* Nothing to do: sleep. wfi wakes on an interrupt pending in mie even
           with mstatus.MIE clear (priv spec v1.12, 3.3.3), so a frame that
           arrived since the loop looked cannot be slept through. Then let the
           pending interrupt in for a moment, so the handler takes it. */
        wfi();
        csr_set(mstatus, MSTATUS_MIE);
        csr_clear(mstatus, MSTATUS_MIE);
    }
}
