/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/* cilium-rs datapath: connection tracking for service flows. */
#ifndef CILIUM_RS_CONNTRACK_H
#define CILIUM_RS_CONNTRACK_H

#include "common.h"
#include "maps.h"

/* Tuple flags (Cilium's TUPLE_F_*). */
#define TUPLE_F_OUT 0
#define TUPLE_F_IN 1
#define TUPLE_F_RELATED 2
#define TUPLE_F_SERVICE 4

/* Lifetimes in seconds (Cilium's defaults). */
#define CT_LIFETIME_TCP 21600
#define CT_LIFETIME_NONTCP 60
#define CT_SYN_TIMEOUT 60
#define CT_CLOSE_TIMEOUT 10

/* ct_entry.flags bits. */
#define CT_F_RX_CLOSING 1
#define CT_F_TX_CLOSING 2
#define CT_F_SEEN_NON_SYN 16

#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10

static __always_inline __u32 bpf_mono_now(void)
{
	return (__u32)(bpf_ktime_get_ns() / 1000000000ULL);
}

static __always_inline void *ct_map(__u8 proto)
{
	if (proto == IPPROTO_TCP)
		return &cilium_ct4_global;
	return &cilium_ct_any4_global;
}

/* The lifetime an entry gets after a packet with these TCP flags (0 for non-TCP). */
static __always_inline __u32 ct_lifetime(__u8 proto, __u8 tcp_flags, __u16 flags)
{
	if (proto != IPPROTO_TCP)
		return CT_LIFETIME_NONTCP;
	if (flags & (CT_F_RX_CLOSING | CT_F_TX_CLOSING))
		return CT_CLOSE_TIMEOUT;
	if (!(flags & CT_F_SEEN_NON_SYN))
		return CT_SYN_TIMEOUT;
	return CT_LIFETIME_TCP;
}

/* Updates an entry for a packet travelling in direction `tx` (1: as the entry was created,
 * 0: the reply direction). */
static __always_inline void ct_touch(struct ct_entry *e, __u8 proto, __u8 tcp_flags,
				     __u32 len, int tx)
{
	__u16 flags = e->flags;

	e->packets += 1;
	e->bytes += len;
	if (proto == IPPROTO_TCP) {
		if (tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST))
			flags |= tx ? CT_F_TX_CLOSING : CT_F_RX_CLOSING;
		if (tcp_flags & TCP_FLAG_ACK)
			flags |= CT_F_SEEN_NON_SYN;
		if (tx)
			e->tx_flags_seen |= tcp_flags;
		else
			e->rx_flags_seen |= tcp_flags;
		/* A new SYN on a closing entry starts the connection over. */
		if ((tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN)
			flags &= ~(CT_F_RX_CLOSING | CT_F_TX_CLOSING | CT_F_SEEN_NON_SYN);
	}
	e->flags = flags;
	e->lifetime = bpf_mono_now() + ct_lifetime(proto, tcp_flags, flags);
}

#endif
