/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/* cilium-rs datapath: connection tracking for service flows. */
#ifndef CILIUM_RS_CONNTRACK_H
#define CILIUM_RS_CONNTRACK_H

#include "common.h"
#include "maps.h"
#include "events.h"

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

/* Seconds of CLOCK_MONOTONIC, from the coarse clock (a tick's resolution is plenty for
 * lifetimes in seconds, and it reads no clock source). */
static __always_inline __u32 bpf_mono_now(void)
{
	return (__u32)(bpf_ktime_get_coarse_ns() / 1000000000ULL);
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
 * 0: the reply direction) at `now` (bpf_mono_now, read once per packet by the caller),
 * writing only what changed: the lifetime moves once a second,
 * counters only with bpf-conntrack-accounting. Returns 1 when the packet is worth a trace
 * report under monitor aggregation (Cilium's __ct_update_timeout): a TCP flag of
 * monitor-aggregation-flags not seen before in this direction, or the report interval has
 * passed since this direction's last report (a new entry, zeroed, always reports). */
static __always_inline int ct_touch(struct ct_entry *e, __u8 proto, __u8 tcp_flags,
				    __u32 len, int tx, __u32 now)
{
	__u16 flags = e->flags;
	__u32 lifetime, last;
	__u8 seen = 0, acc;

	if (CT_ACCOUNTING) {
		e->packets += 1;
		e->bytes += len;
	}
	if (proto == IPPROTO_TCP) {
		if (tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST))
			flags |= tx ? CT_F_TX_CLOSING : CT_F_RX_CLOSING;
		if (tcp_flags & TCP_FLAG_ACK)
			flags |= CT_F_SEEN_NON_SYN;
		/* A new SYN on a closing entry starts the connection over. */
		if ((tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN)
			flags &= ~(CT_F_RX_CLOSING | CT_F_TX_CLOSING | CT_F_SEEN_NON_SYN);
		seen = tcp_flags & CT_REPORT_FLAGS;
	}
	if (flags != e->flags)
		e->flags = flags;
	lifetime = now + ct_lifetime(proto, tcp_flags, flags);
	if (lifetime != e->lifetime)
		e->lifetime = lifetime;
	acc = tx ? e->tx_flags_seen : e->rx_flags_seen;
	last = tx ? e->last_tx_report : e->last_rx_report;
	seen |= acc;
	if (last + CT_REPORT_INTERVAL < now || last == 0 || seen != acc) {
		if (tx) {
			e->tx_flags_seen = seen;
			e->last_tx_report = now;
		} else {
			e->rx_flags_seen = seen;
			e->last_rx_report = now;
		}
		return 1;
	}
	return 0;
}

/* An interface as conntrack keeps it for lookup_ip4_endpoint_at: ct_entry.ifindex holds
 * 16 bits, and cilium_lxc_ifindex has no slot beyond them (0: none). */
static __always_inline __u16 ct_ifindex(__u32 ifindex)
{
	return ifindex < LXC_IFINDEX_MAX ? (__u16)ifindex : 0;
}

/* Conntrack states of a packet. */
#define CT_NEW 0
#define CT_ESTABLISHED 1
#define CT_REPLY 2
/* New, and already given its entry (by the service translation). */
#define CT_NEW_TRACKED 3

/* The tuple of a packet from `saddr:sport` to `daddr:dport`, in the packet's order: the
 * NAT map's key (Cilium's NAT tuples are in that order). */
static __always_inline void tuple4(struct ipv4_ct_tuple *t, __be32 saddr, __be32 daddr,
				   __be16 sport, __be16 dport, __u8 proto, __u8 flags)
{
	t->daddr = daddr;
	t->saddr = saddr;
	t->dport = dport;
	t->sport = sport;
	t->nexthdr = proto;
	t->flags = flags;
}

/* The CT key of a flow from `saddr:sport` to `daddr:dport`, stored as Cilium stores it:
 * the address fields reversed (`daddr` holds the source: the names fit the reply), the
 * ports not, so that Cilium's tools read the entries right. */
static __always_inline void ct_key(struct ipv4_ct_tuple *t, __be32 saddr, __be32 daddr,
				   __be16 sport, __be16 dport, __u8 proto, __u8 flags)
{
	tuple4(t, daddr, saddr, sport, dport, proto, flags);
}

/* Whether the packet answers a tracked flow: its entry (created in the other direction) is
 * touched as a reply, `*rev_nat` gets the flow's reverse-NAT index (0: not a service
 * flow) and `pi->deliver_ifindex` the interface of the flow's source endpoint. ICMP echo:
 * request and reply carry the same id (in sport); the port is 0. */
static __always_inline int ct_reply4(struct __sk_buff *skb, struct pkt_info *pi,
				     __u16 *rev_nat)
{
	struct ipv4_ct_tuple key = {};
	struct ct_entry *e;

	if (pi->proto == IPPROTO_ICMP)
		ct_key(&key, pi->daddr, pi->saddr, pi->sport, 0, pi->proto, TUPLE_F_OUT);
	else
		ct_key(&key, pi->daddr, pi->saddr, pi->dport, pi->sport, pi->proto, TUPLE_F_OUT);
	e = bpf_map_lookup_elem(ct_map(pi->proto), &key);
	if (!e)
		return 0;
	pi->quiet = !ct_touch(e, pi->proto, pi->tcp_flags, skb->len, 0, bpf_mono_now());
	*rev_nat = e->rev_nat_index;
	pi->deliver_ifindex = ct_ifindex(e->reply_ifindex);
	return 1;
}

/* The policy revision stamp of the moment: cilium_policy_rev + 1 (0 never matches, so an
 * entry nobody stamped is checked). */
static __always_inline __u32 policy_rev_stamp(void)
{
	__u32 zero = 0;
	__u32 *rev = bpf_map_lookup_elem(&cilium_policy_rev, &zero);

	return (rev ? *rev : 0) + 1;
}

/* The conntrack state of a packet that is not a service request: CT_REPLY (see
 * ct_reply4, which sets `*rev_nat`), CT_ESTABLISHED when its own flow is tracked (the entry
 * touched, `pi->policy_ok` telling whether it passed policy at the current revision and
 * `pi->deliver_ifindex` where its packets were delivered), else CT_NEW. */
static __always_inline int ct_lookup4(struct __sk_buff *skb, struct pkt_info *pi,
				      __u16 *rev_nat)
{
	struct ipv4_ct_tuple key = {};
	struct ct_entry *e;

	*rev_nat = 0;
	if (ct_reply4(skb, pi, rev_nat))
		return CT_REPLY;
	ct_key(&key, pi->saddr, pi->daddr, pi->sport,
	       pi->proto == IPPROTO_ICMP ? 0 : pi->dport, pi->proto, TUPLE_F_OUT);
	e = bpf_map_lookup_elem(ct_map(pi->proto), &key);
	if (!e)
		return CT_NEW;
	pi->quiet = !ct_touch(e, pi->proto, pi->tcp_flags, skb->len, 1, bpf_mono_now());
	pi->policy_ok = e->policy_rev == policy_rev_stamp();
	pi->deliver_ifindex = e->ifindex;
	return CT_ESTABLISHED;
}

#endif
