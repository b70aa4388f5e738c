/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/* cilium-rs datapath: parsed packet summary, events and metrics. */
#ifndef CILIUM_RS_EVENTS_H
#define CILIUM_RS_EVENTS_H

#include "common.h"
#include "maps.h"

/* Unread event bytes after which a submit wakes the reader up. */
#define EVENTS_WAKEUP_BYTES (64 * 1024)

/* What the programs learn about a packet while parsing it. */
struct pkt_info {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 tcp_flags;
	__u8 icmp_type;
	__u8 reply; /* conntrack saw the packet as a reply (set once the state is known) */
	__u16 ethertype; /* 0: IPv4, parsed; else the frame's EtherType (not parsed) */
	__u8 quiet;      /* conntrack: nothing new to report on this packet (aggregation) */
	__u8 policy_ok;  /* conntrack: the flow passed policy at the current revision */
	__be32 svc_addr; /* a service flow's frontend (its conntrack entry holds the flow's */
	__be16 svc_port; /* policy stamp); port 0: not a service flow */
	__u16 deliver_ifindex; /* conntrack: where the flow's packets were delivered (0: no
				* idea), a hint for lookup_ip4_endpoint_at */
};

/* Monitor aggregation levels (Cilium's TRACE_AGGREGATE_*). */
#define TRACE_AGGREGATE_RX 1
#define TRACE_AGGREGATE_ACTIVE_CT 3

static __always_inline void metrics_add(__u8 reason, __u8 dir, __u32 bytes)
{
	struct metrics_key key = { .reason = reason, .dir = dir };
	struct metrics_value *v = bpf_map_lookup_elem(&cilium_metrics, &key);

	if (v) {
		v->count += 1;
		v->bytes += bytes;
	} else {
		struct metrics_value init = { .count = 1, .bytes = bytes };

		bpf_map_update_elem(&cilium_metrics, &key, &init, BPF_NOEXIST);
	}
}

static __always_inline void emit_event(struct __sk_buff *skb, __u8 type, __u8 subtype,
				       __u16 source, const struct pkt_info *pi,
				       __u32 src_label, __u32 dst_label, __u16 src_id,
				       __u16 dst_id)
{
	struct datapath_event *ev;

	ev = bpf_ringbuf_reserve(&cilium_events, sizeof(*ev), 0);
	if (!ev) {
		metrics_add(REASON_EVENTS_LOST, 0, 0);
		return;
	}
	ev->type = type;
	ev->subtype = subtype;
	ev->source = source;
	ev->hash = skb->hash;
	ev->len_orig = skb->len;
	ev->version = EVENT_VERSION;
	ev->ethertype = pi->ethertype;
	ev->src_label = src_label;
	ev->dst_label = dst_label;
	ev->src_id = src_id;
	ev->dst_id = dst_id;
	ev->ifindex = skb->ifindex;
	ev->saddr = pi->saddr;
	ev->daddr = pi->daddr;
	ev->sport = pi->sport;
	ev->dport = pi->dport;
	ev->proto = pi->proto;
	ev->tcp_flags = pi->tcp_flags;
	ev->icmp_type = pi->icmp_type;
	ev->reply = pi->reply;
	ev->ktime = bpf_ktime_get_ns();
	/* Waking the reader for every record costs more than the rest of the program: wake
	 * it only once a batch has built up. Readers also poll on a short timer. */
	bpf_ringbuf_submit(ev, bpf_ringbuf_query(&cilium_events, BPF_RB_AVAIL_DATA) >=
				       EVENTS_WAKEUP_BYTES ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

/* Drops a packet: counts it, reports it, and returns TC_ACT_SHOT. */
static __always_inline int send_drop(struct __sk_buff *skb, __u8 reason, __u8 dir,
				     __u16 source, const struct pkt_info *pi, __u32 src_label,
				     __u32 dst_label)
{
	metrics_add(reason, dir, skb->len);
	emit_event(skb, CILIUM_NOTIFY_DROP, reason, source, pi, src_label, dst_label, source, 0);
	return TC_ACT_SHOT;
}

/* Whether a forwarded packet is reported at this observation point, with the node's
 * monitor aggregation (Cilium's emit_trace_notify): from `lowest` on, not at the receiving
 * points; from `medium` on, only when conntrack has something new to say (a new
 * connection, a TCP flag not seen before in this direction, or the report interval
 * passed). */
static __always_inline int trace_wanted(__u8 obs_point, const struct pkt_info *pi)
{
	if (MONITOR_AGGREGATION >= TRACE_AGGREGATE_RX && obs_point >= TRACE_FROM_LXC &&
	    obs_point <= TRACE_FROM_NETWORK)
		return 0;
	if (MONITOR_AGGREGATION >= TRACE_AGGREGATE_ACTIVE_CT && pi->quiet)
		return 0;
	return 1;
}

/* Counts a forwarded packet and reports it at an observation point (unless aggregated). */
static __always_inline void send_trace(struct __sk_buff *skb, __u8 obs_point, __u8 dir,
				       __u16 source, const struct pkt_info *pi,
				       __u32 src_label, __u32 dst_label, __u16 src_id,
				       __u16 dst_id)
{
	metrics_add(REASON_FORWARDED, dir, skb->len);
	if (trace_wanted(obs_point, pi))
		emit_event(skb, CILIUM_NOTIFY_TRACE, obs_point, source, pi, src_label,
			   dst_label, src_id, dst_id);
}

#endif
