/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/* cilium-rs datapath: packet parsing and endpoint lookups. */
#ifndef CILIUM_RS_PARSE_H
#define CILIUM_RS_PARSE_H

#include "common.h"
#include "maps.h"
#include "events.h"

#define IP_MF 0x2000
#define IP_OFFSET 0x1FFF

/* Parses an IPv4 packet into `pi`: addresses and protocol, then the L4 header (ports, TCP
 * flags, ICMP type). Returns 0, or a drop reason (the addresses are filled either way, for
 * the drop event). Non-first fragments carry no L4 header. */
static __always_inline int parse_ip4(void *data_end, struct iphdr *ip, struct pkt_info *pi)
{
	pi->saddr = ip->saddr;
	pi->daddr = ip->daddr;
	pi->proto = ip->protocol;
	__u32 ihl = ip->ihl * 4;
	void *l4;

	if (ihl < sizeof(struct iphdr) || ihl > 60)
		return DROP_INVALID;
	if (ip->frag_off & bpf_htons(IP_OFFSET))
		return 0;
	l4 = (void *)ip + ihl;
	switch (ip->protocol) {
	case IPPROTO_TCP: {
		struct tcphdr *tcp = l4;

		if ((void *)(tcp + 1) > data_end)
			return DROP_INVALID;
		pi->sport = tcp->source;
		pi->dport = tcp->dest;
		pi->tcp_flags = ((__u8 *)tcp)[13];
		break;
	}
	case IPPROTO_UDP: {
		struct udphdr *udp = l4;

		if ((void *)(udp + 1) > data_end)
			return DROP_INVALID;
		pi->sport = udp->source;
		pi->dport = udp->dest;
		break;
	}
	case IPPROTO_ICMP: {
		struct icmphdr *icmp = l4;

		if ((void *)(icmp + 1) > data_end)
			return DROP_INVALID;
		pi->icmp_type = icmp->type;
		pi->sport = icmp->un.echo.id;
		break;
	}
	default:
		break;
	}
	return 0;
}

static __always_inline struct endpoint_info *lookup_ip4_endpoint(__be32 addr)
{
	struct endpoint_key key = {};

	key.ip4 = addr;
	key.family = ENDPOINT_KEY_IPV4;
	return bpf_map_lookup_elem(&cilium_lxc, &key);
}

/* The local endpoint with address `addr`, looked for first behind interface `ifindex` (the
 * packet's own interface, or the one conntrack remembered for its flow; 0: none known) in
 * cilium_lxc_ifindex, then in cilium_lxc. Either way the answer is cilium_lxc's. */
static __always_inline struct endpoint_info *lookup_ip4_endpoint_at(__u32 ifindex, __be32 addr)
{
	struct lxc_ifindex_entry *e;
	__u32 key = ifindex;

	if (key && key < LXC_IFINDEX_MAX) {
		e = bpf_map_lookup_elem(&cilium_lxc_ifindex, &key);
		if (e && e->ip4 == addr && e->info.ifindex == key)
			return &e->info;
	}
	return lookup_ip4_endpoint(addr);
}

static __always_inline struct remote_endpoint_info *ipcache_lookup4(__be32 addr)
{
	struct ipcache_key key = {};

	key.prefixlen = IPCACHE_STATIC_PREFIX_BITS + 32;
	key.family = ENDPOINT_KEY_IPV4;
	key.ip4 = addr;
	return bpf_map_lookup_elem(&cilium_ipcache_v2, &key);
}

/* Reserved identities used when nothing better is known. */
#define IDENTITY_HOST 1
#define IDENTITY_WORLD 2
#define IDENTITY_REMOTE_NODE 6

/* The identity of an address: a local endpoint's, the ipcache's, or world. */
static __always_inline __u32 resolve_identity4(__be32 addr)
{
	struct endpoint_info *ep = lookup_ip4_endpoint(addr);
	struct remote_endpoint_info *info;

	if (ep)
		return ep->sec_id;
	info = ipcache_lookup4(addr);
	if (info)
		return info->sec_identity;
	return IDENTITY_WORLD;
}

/* A packet's source identity, resolved from its address (resolve_identity4) the first time
 * something needs it: a policy decision, a reported event, a new conntrack entry.
 * Established flows that passed policy at the current revision and report nothing never
 * pay the lookups. `id` 0: not resolved yet. */
struct src_identity {
	__be32 addr;
	__u32 id;
};

static __always_inline __u32 src_identity_get(struct src_identity *s)
{
	if (!s->id)
		s->id = resolve_identity4(s->addr);
	return s->id;
}

#endif
