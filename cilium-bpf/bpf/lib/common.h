/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/* cilium-rs datapath: shared types, constants and helpers.
 *
 * Map keys and values mirror upstream Cilium's layouts (bpf/lib/common.h, bpf/lib/lb.h,
 * bpf/lib/conntrack.h, bpf/lib/nat.h, bpf/lib/policy.h). Every struct here has a Rust twin
 * in cilium-bpf/src/types.rs; a test compares sizes and field offsets through BTF.
 */
#ifndef CILIUM_RS_COMMON_H
#define CILIUM_RS_COMMON_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define __always_inline inline __attribute__((always_inline))

/* <linux/icmp.h> pulls in glibc headers through <linux/if.h>: define the header here. */
struct icmphdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	union {
		struct {
			__be16 id;
			__be16 sequence;
		} echo;
		__be32 gateway;
	} un;
};

/* Address families in map keys (Cilium's ENDPOINT_KEY_IPV4/IPV6). */
#define ENDPOINT_KEY_IPV4 1
#define ENDPOINT_KEY_IPV6 2

/* Drop reasons: Cilium's codes (negative in the datapath, positive in events). */
#define DROP_INVALID_SIP 132
#define DROP_POLICY 133
#define DROP_INVALID 134
#define DROP_CT_INVALID_HDR 135
#define DROP_UNKNOWN_L3 139
#define DROP_UNKNOWN_L4 142
#define DROP_NO_SERVICE 158
#define DROP_NAT_NO_MAPPING 160
#define DROP_POLICY_DENY 181

/* Trace observation points (Cilium's TRACE_*). */
#define TRACE_TO_LXC 0
#define TRACE_TO_PROXY 1
#define TRACE_TO_HOST 2
#define TRACE_TO_STACK 3
#define TRACE_TO_OVERLAY 4
#define TRACE_FROM_LXC 5
#define TRACE_FROM_PROXY 6
#define TRACE_FROM_HOST 7
#define TRACE_FROM_STACK 8
#define TRACE_FROM_OVERLAY 9
#define TRACE_FROM_NETWORK 10
#define TRACE_TO_NETWORK 11

/* Metric directions (Cilium's METRIC_*). */
#define METRIC_INGRESS 1
#define METRIC_EGRESS 2
#define METRIC_SERVICE 3

/* Metric reason for forwarded packets (drops use their drop reason). */
#define REASON_FORWARDED 0
/* Metric reason counting events the ring buffer had no room for. */
#define REASON_EVENTS_LOST 255

/* ---- cilium_lxc ---------------------------------------------------------------------- */

struct endpoint_key {
	union {
		struct {
			__u32 ip4;
			__u32 pad1;
			__u32 pad2;
			__u32 pad3;
		};
		__u8 ip6[16];
	};
	__u8 family;
	__u8 key;
	__u16 cluster_id;
};

#define ENDPOINT_F_HOST 1
#define ENDPOINT_F_ATHOSTNS 2

struct endpoint_info {
	__u32 ifindex;
	__u16 unused;
	__u16 lxc_id;
	__u32 flags;
	__u32 pad;
	__u64 mac;
	__u64 node_mac;
	__u32 sec_id;
	__u32 parent_ifindex;
	__u32 pad2[2];
};

/* ---- cilium_lxc_ifindex (not an upstream map) ------------------------------------------- */

/* The local endpoint behind an interface, by interface index: the endpoint's cilium_lxc
 * entry and its address. Programs that know the interface a packet comes from or goes to
 * (its own, or one conntrack remembered) find the endpoint by an array index instead of a
 * hash of the address. An entry counts only for its own address and interface, so a stale
 * or wrong index costs the hash lookup it replaces and nothing else. */
struct lxc_ifindex_entry {
	__be32 ip4;
	__u32 pad;
	struct endpoint_info info;
};

/* ---- cilium_ipcache_v2 ----------------------------------------------------------------- */

struct ipcache_key {
	__u32 prefixlen; /* the LPM trie's prefix length, 32 static bits included */
	__u16 cluster_id;
	__u8 pad1;
	__u8 family;
	union {
		struct {
			__u32 ip4;
			__u32 pad4;
			__u32 pad5;
			__u32 pad6;
		};
		__u8 ip6[16];
	};
};

/* Bits before the address in an ipcache key's prefix: cluster_id, pad1, family. */
#define IPCACHE_STATIC_PREFIX_BITS 32

struct remote_endpoint_info {
	__u32 sec_identity;
	union {
		struct {
			__u32 ip4;
			__u32 pad1;
			__u32 pad2;
			__u32 pad3;
		};
		__u8 ip6[16];
	} tunnel_endpoint;
	__u16 pad;
	__u8 key;
	__u8 flags;
};

/* ---- cilium_metrics -------------------------------------------------------------------- */

struct metrics_key {
	__u8 reason;
	__u8 dir;
	__u16 line;
	__u8 file;
	__u8 reserved[3];
};

struct metrics_value {
	__u64 count;
	__u64 bytes;
};

/* ---- load balancing -------------------------------------------------------------------- */

struct lb4_key {
	__be32 address;
	__be16 dport;
	__u16 backend_slot;
	__u8 proto;
	__u8 scope;
	__u8 pad[2];
};

struct lb4_service {
	union {
		__u32 backend_id;
		__u32 affinity_timeout;
		__u32 l7_lb_proxy_port;
	};
	__u16 count;
	__u16 rev_nat_index; /* network byte order */
	__u8 flags;
	__u8 flags2;
	__u16 qcount;
};

struct lb4_backend {
	__be32 address;
	__be16 port;
	__u8 proto;
	__u8 flags;
	__u16 cluster_id;
	__u8 zone;
	__u8 pad;
};

/* Packed, 6 bytes, as Cilium's (its agent and cilium-dbg read the map with that size). */
struct lb4_reverse_nat {
	__be32 address;
	__be16 port;
} __attribute__((packed));

/* Session affinity: client -> the backend it was given, per service. */
struct lb4_affinity_key {
	union {
		__u32 client_ip;
		__u64 client_cookie;
	} client_id;
	__u16 rev_nat_id;
	__u8 netns_cookie;
	__u8 pad1;
	__u32 pad2;
};

struct lb_affinity_val {
	__u64 last_used;
	__u32 backend_id;
	__u32 pad;
};

/* Backends affinity may still point to (active ones), per service. */
struct lb_affinity_match {
	__u32 backend_id;
	__u16 rev_nat_id;
	__u16 pad;
};

/* Socket LB: what a translated socket really talks to -> the frontend it asked for. */
struct lb4_reverse_sk_key {
	__u64 cookie;
	__be32 address;
	__be16 port;
	__u16 pad;
};

struct lb4_reverse_sk {
	__be32 address;
	__be16 port;
	__u16 rev_nat_index;
};

/* ---- conntrack and NAT ------------------------------------------------------------------ */

struct ipv4_ct_tuple {
	__be32 daddr;
	__be32 saddr;
	__be16 dport;
	__be16 sport;
	__u8 nexthdr;
	__u8 flags;
} __attribute__((packed));

struct ct_entry {
	__u32 policy_rev; /* cilium_policy_rev + 1 when the flow last passed policy; 0: not yet */
	__u32 reply_ifindex; /* the interface of the flow's source endpoint (its replies go
			      * there), 0: not a local endpoint; upstream's reserved0 */
	__u64 backend_id;
	__u64 packets;
	__u64 bytes;
	__u32 lifetime;
	__u16 flags; /* rx_closing, tx_closing, ... as Cilium's bit fields */
	__u16 rev_nat_index;
	__u16 ifindex; /* the interface of the flow's destination endpoint when it is local
			* and below LXC_IFINDEX_MAX (its packets are delivered there), else 0 */
	__u8 tx_flags_seen;
	__u8 rx_flags_seen;
	__u32 src_sec_id;
	__u32 last_tx_report;
	__u32 last_rx_report;
};

struct ipv4_nat_entry {
	__u64 created;
	__u64 needs_ct;
	__u64 pad1;
	__u64 pad2;
	__be32 to_addr;
	__be16 to_port;
	__u16 pad3;
};

/* ---- policy ------------------------------------------------------------------------------ */

struct policy_key {
	__u32 prefixlen; /* LPM prefix: 40 static bits (identity, direction) + protocol + port */
	__u32 sec_label;
	__u8 egress;
	__u8 protocol;
	__be16 dport;
};

struct policy_entry {
	__be16 proxy_port;
	__u8 flags; /* bit 0: deny; bits 3-7: port prefix length */
	__u8 auth_type;
	__u8 proxy_port_priority;
	__u8 pad1;
	__u16 pad2;
};

/* cilium_policystats: what each policy entry allowed, per endpoint (Cilium's policy stats
 * map; upstream's `cilium-dbg bpf policy get` prints it beside the entries). */
struct policy_stats_key {
	__u16 endpoint_id;
	__u8 pad1;
	__u8 prefix_len; /* the entry's protocol + port prefix length (0-24) */
	__u32 sec_label;
	__u8 egress;
	__u8 protocol;
	__be16 dport;
};

struct policy_stats_value {
	__u64 packets;
	__u64 bytes;
};

/* ---- events ------------------------------------------------------------------------------- */

/* Event types (Cilium's CILIUM_NOTIFY_*). */
#define CILIUM_NOTIFY_DROP 1
#define CILIUM_NOTIFY_TRACE 4
#define CILIUM_NOTIFY_POLICY_VERDICT 5

#define EVENT_VERSION 1

/* The record every program writes into cilium_events (version 1, 56 bytes, host order
 * unless a field says otherwise). cilium-bpf's `events` module decodes it. */
struct datapath_event {
	__u8 type;       /* CILIUM_NOTIFY_* */
	__u8 subtype;    /* drop: reason; trace: observation point */
	__u16 source;    /* endpoint id of the program's endpoint (0: none) */
	__u32 hash;      /* skb hash */
	__u32 len_orig;  /* packet length */
	__u16 version;   /* EVENT_VERSION */
	__u16 ethertype; /* 0: an IPv4 packet; else the EtherType of a frame not parsed */
	__u32 src_label; /* source identity */
	__u32 dst_label; /* destination identity */
	__u16 src_id;    /* source endpoint id (0: not local) */
	__u16 dst_id;    /* destination endpoint id (0: not local) */
	__u32 ifindex;   /* interface the program runs on */
	__be32 saddr;
	__be32 daddr;
	__be16 sport;    /* ICMP: echo id */
	__be16 dport;
	__u8 proto;
	__u8 tcp_flags;  /* FIN 1, SYN 2, RST 4, PSH 8, ACK 16, URG 32, ECE 64, CWR 128 */
	__u8 icmp_type;
	__u8 reply;      /* 1 when conntrack saw the packet as a reply */
	__u64 ktime;     /* bpf_ktime_get_ns() */
};

#endif
