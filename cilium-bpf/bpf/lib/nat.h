/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/* cilium-rs datapath: BPF masquerading (SNAT to the node's IP) on the node's device. */
#ifndef CILIUM_RS_NAT_H
#define CILIUM_RS_NAT_H

#include "config.h"
#include "common.h"
#include "maps.h"
#include "conntrack.h"
#include "lb.h"

/* Ports masquerading allocates (Cilium's NODEPORT_PORT_MIN_NAT..NODEPORT_PORT_MAX_NAT: above
 * the NodePort range, so that from_netdev can look services up first), and how often a
 * taken port is retried. */
#define SNAT_PORT_MIN 32768
#define SNAT_PORT_MAX 65535
#define SNAT_COLLISION_RETRIES 32

/* Whether `addr` lies in ipv4-native-routing-cidr (no masquerading there). */
static __always_inline int in_native_cidr(__be32 addr)
{
	__u32 len = NATIVE_CIDR4_LEN;
	__u32 mask;

	if (len == 0 || len > 32)
		return 0;
	mask = bpf_htonl(len == 32 ? 0xffffffff : ~((1U << (32 - len)) - 1));
	return (addr & mask) == (NATIVE_CIDR4 & mask);
}

/* Masquerades a packet leaving the node (saddr:sport -> node IP:allocated port), creating
 * the egress and ingress NAT entries on the first packet. Returns 0, or a drop reason. */
static __always_inline int snat4_egress(struct __sk_buff *skb, struct pkt_info *pi, __u32 ihl)
{
	struct ipv4_ct_tuple okey = {}, rkey = {};
	struct ipv4_nat_entry *e, oval = {}, rval = {};
	__be32 node = NODE_IPV4;
	__be16 nport;
	__u32 i;

	tuple4(&okey, pi->saddr, pi->daddr, pi->sport, pi->dport, pi->proto, TUPLE_F_OUT);
	e = bpf_map_lookup_elem(&cilium_snat_v4_external, &okey);
	if (e) {
		nport = e->to_port;
	} else {
		__u32 start = bpf_get_prandom_u32();

		nport = 0;
		for (i = 0; i < SNAT_COLLISION_RETRIES; i++) {
			__u16 p = SNAT_PORT_MIN + ((start + i) % (SNAT_PORT_MAX - SNAT_PORT_MIN + 1));
			__be16 cand = bpf_htons(p);

			tuple4(&rkey, pi->daddr, node, pi->dport, cand, pi->proto, TUPLE_F_IN);
			if (!bpf_map_lookup_elem(&cilium_snat_v4_external, &rkey)) {
				nport = cand;
				break;
			}
		}
		if (!nport)
			return DROP_NAT_NO_MAPPING;
		rval.created = bpf_mono_now();
		rval.to_addr = pi->saddr;
		rval.to_port = pi->sport;
		if (bpf_map_update_elem(&cilium_snat_v4_external, &rkey, &rval, BPF_NOEXIST))
			return DROP_NAT_NO_MAPPING;
		oval.created = rval.created;
		oval.to_addr = node;
		oval.to_port = nport;
		bpf_map_update_elem(&cilium_snat_v4_external, &okey, &oval, BPF_ANY);
	}
	if (rewrite_addr_port(skb, ihl, pi->proto, 0, pi->saddr, node, pi->sport, nport))
		return DROP_INVALID;
	pi->saddr = node;
	pi->sport = nport;
	return 0;
}

/* Reverse masquerading for a reply to the node IP. Returns 1 when translated, 0 when the
 * packet belongs to no masqueraded flow, or a drop reason (> 1). */
static __always_inline int snat4_ingress(struct __sk_buff *skb, struct pkt_info *pi, __u32 ihl)
{
	struct ipv4_ct_tuple rkey = {};
	struct ipv4_nat_entry *e;
	__be32 addr;
	__be16 port;

	tuple4(&rkey, pi->saddr, pi->daddr, pi->sport, pi->dport, pi->proto, TUPLE_F_IN);
	e = bpf_map_lookup_elem(&cilium_snat_v4_external, &rkey);
	if (!e)
		return 0;
	addr = e->to_addr;
	port = e->to_port;
	if (rewrite_addr_port(skb, ihl, pi->proto, 1, pi->daddr, addr, pi->dport, port))
		return DROP_INVALID;
	pi->daddr = addr;
	pi->dport = port;
	return 1;
}

#endif
