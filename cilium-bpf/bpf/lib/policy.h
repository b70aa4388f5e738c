/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/* cilium-rs datapath: identity-based policy (cilium_policy_v2).
 *
 * Each endpoint with policy has an inner LPM trie in cilium_policy_v2 keyed by its endpoint
 * id. A key is {prefixlen, peer identity, direction, protocol, port}: the first 40 bits
 * (identity, direction) are always matched, then 8 protocol bits (0 bits: any protocol) and
 * 0-16 port bits (prefixes encode port ranges). Identity 0 stands for any peer. The agent
 * writes an allow-all entry for a direction it does not enforce, and never writes an allow
 * that a deny of the same identity covers, so two lookups decide: the peer's longest match
 * and the any-peer longest match, a deny in either winning.
 */
#ifndef CILIUM_RS_POLICY_H
#define CILIUM_RS_POLICY_H

#include "common.h"
#include "maps.h"
#include "events.h"
#include "conntrack.h"

#define POLICY_FULL_PREFIX_BITS 64
#define POLICY_F_DENY 1

#define POLICY_INGRESS 0
#define POLICY_EGRESS 1

/* Policy verdict event subtypes (the flow's fate). */
#define POLICY_VERDICT_ALLOWED 1
#define POLICY_VERDICT_DENIED 2

/* Counts a packet of `len` bytes on the entry that allowed it: the entry's key is the
 * packet's, cut to the entry's protocol + port prefix (its flags' bits 3-7), as the agent
 * wrote it, so the count is found under the entry's own key. */
static __always_inline void policy_account(__u16 ep_id, __u32 sec_label, __u8 egress,
					   __u8 proto, __be16 dport, __u8 flags, __u32 len)
{
	struct policy_stats_key key = {};
	struct policy_stats_value *v;
	__u8 prefix = flags >> 3;

	key.endpoint_id = ep_id;
	key.prefix_len = prefix;
	key.sec_label = sec_label;
	key.egress = egress;
	if (prefix >= 8)
		key.protocol = proto;
	if (prefix > 8) {
		__u32 bits = prefix > 24 ? 16 : prefix - 8;
		__u16 mask = (__u16)(0xffff0000U >> bits);

		key.dport = bpf_htons(bpf_ntohs(dport) & mask);
	}
	v = bpf_map_lookup_elem(&cilium_policystats, &key);
	if (v) {
		v->packets += 1;
		v->bytes += len;
	} else {
		struct policy_stats_value nv = { .packets = 1, .bytes = len };

		bpf_map_update_elem(&cilium_policystats, &key, &nv, BPF_NOEXIST);
	}
}

/* The verdict of an endpoint's policy for a peer: 0 allowed (or the endpoint has no policy
 * map, so nothing is enforced), DROP_POLICY when nothing allows it, DROP_POLICY_DENY when a
 * deny entry matches. An allowed packet is counted on the entry that allowed it (the
 * peer's own before the any-peer one). */
static __always_inline int policy_verdict(__u16 ep_id, __u32 peer, __u8 egress, __u8 proto,
					  __be16 dport, __u32 len)
{
	__u32 id = ep_id;
	struct policy_key key = {};
	struct policy_entry *exact, *any;
	void *inner;
	int allowed;

	inner = bpf_map_lookup_elem(&cilium_policy_v2, &id);
	if (!inner)
		return 0;
	key.prefixlen = POLICY_FULL_PREFIX_BITS;
	key.sec_label = peer;
	key.egress = egress;
	key.protocol = proto;
	key.dport = dport;
	exact = bpf_map_lookup_elem(inner, &key);
	key.sec_label = 0;
	any = bpf_map_lookup_elem(inner, &key);
	/* Flags are compared one pointer at a time: the verifier refuses `exact || any`
	 * folded into a pointer OR. */
	allowed = 0;
	if (exact) {
		if (exact->flags & POLICY_F_DENY)
			return DROP_POLICY_DENY;
		allowed = 1;
	}
	if (any) {
		if (any->flags & POLICY_F_DENY)
			return DROP_POLICY_DENY;
		allowed |= 2;
	}
	if (allowed & 1)
		policy_account(ep_id, peer, egress, proto, dport, exact ? exact->flags : 0, len);
	else if (allowed & 2)
		policy_account(ep_id, 0, egress, proto, dport, any ? any->flags : 0, len);
	return allowed ? 0 : DROP_POLICY;
}

/* Verdict event subtype flag: the destination's ingress policy decided (else the
 * source's egress policy). */
#define POLICY_VERDICT_F_INGRESS 4

/* Reports the verdict on a new flow, and which policy decided it. */
static __always_inline void send_policy_verdict(struct __sk_buff *skb, int verdict,
						__u8 ingress, __u16 source,
						const struct pkt_info *pi, __u32 src_label,
						__u32 dst_label, __u16 src_id, __u16 dst_id)
{
	__u8 sub = verdict ? POLICY_VERDICT_DENIED : POLICY_VERDICT_ALLOWED;

	if (ingress)
		sub |= POLICY_VERDICT_F_INGRESS;
	emit_event(skb, CILIUM_NOTIFY_POLICY_VERDICT, sub, source, pi, src_label, dst_label,
		   src_id, dst_id);
}

/* Remembers in the flow's entry that it passed policy at the current revision, and where
 * its packets are delivered (`dst_ifindex`, 0: not to a local endpoint): the service entry
 * of a service flow (which its established packets read), else the flow's. */
static __always_inline void ct_policy_stamp(const struct pkt_info *pi, __u32 dst_ifindex)
{
	struct ipv4_ct_tuple key = {};
	struct ct_entry *e;
	__be16 dport = pi->proto == IPPROTO_ICMP ? 0 : pi->dport;

	if (pi->svc_port)
		ct_key(&key, pi->saddr, pi->svc_addr, pi->sport, pi->svc_port, pi->proto,
		       TUPLE_F_SERVICE);
	else
		ct_key(&key, pi->saddr, pi->daddr, pi->sport, dport, pi->proto, TUPLE_F_OUT);
	e = bpf_map_lookup_elem(ct_map(pi->proto), &key);
	if (e) {
		e->policy_rev = policy_rev_stamp();
		if (e->ifindex != ct_ifindex(dst_ifindex))
			e->ifindex = ct_ifindex(dst_ifindex);
	}
}

/* Tracks a new flow that policy allowed, with the interfaces of its endpoints (0: not a
 * local endpoint). */
static __always_inline void ct_policy_create(struct __sk_buff *skb, const struct pkt_info *pi,
					     __u32 src_label, __u32 src_ifindex, __u32 dst_ifindex)
{
	struct ipv4_ct_tuple key = {};
	struct ct_entry e = {};
	__be16 dport = pi->proto == IPPROTO_ICMP ? 0 : pi->dport;

	ct_key(&key, pi->saddr, pi->daddr, pi->sport, dport, pi->proto, TUPLE_F_OUT);
	e.src_sec_id = src_label;
	e.policy_rev = policy_rev_stamp();
	e.reply_ifindex = src_ifindex;
	e.ifindex = ct_ifindex(dst_ifindex);
	ct_touch(&e, pi->proto, pi->tcp_flags, skb->len, 1, bpf_mono_now());
	bpf_map_update_elem(ct_map(pi->proto), &key, &e, BPF_ANY);
}

/* Whether a packet in conntrack state `ct_state`, reported (or not) at observation point
 * `obs`, needs its source's identity: policy decides it (see policy_enforce), or its trace
 * is reported. */
static __always_inline int needs_src_identity(int ct_state, const struct pkt_info *pi,
					      __u8 obs)
{
	if (ct_state != CT_REPLY && !(ct_state == CT_ESTABLISHED && pi->policy_ok))
		return 1;
	return trace_wanted(obs, pi);
}

/* The endpoints of a packet, as policy sees them: endpoint ids (0: not a local endpoint),
 * identities and the local endpoints' interfaces (0: not local). */
struct policy_peers {
	__u16 src_id;
	__u16 dst_id;
	__u32 src_label;
	__u32 dst_label;
	__u32 src_ifindex;
	__u32 dst_ifindex;
};

/* Policy for a packet between `p->src_id` and `p->dst_id` in conntrack state `ct_state`:
 * replies pass, and so do established flows that passed at the current policy revision;
 * otherwise the source's egress policy and the destination's ingress policy must both allow
 * it (an allowed tracked flow is stamped with the revision and its delivery interface). A
 * new flow gets a verdict event and, if allowed, a conntrack entry. Returns 0 or the drop
 * reason. */
static __always_inline int policy_enforce(struct __sk_buff *skb, int ct_state,
					  const struct pkt_info *pi, __u16 source,
					  const struct policy_peers *p)
{
	__u16 src_id = p->src_id, dst_id = p->dst_id;
	__u32 src_label = p->src_label, dst_label = p->dst_label;
	int ret = 0;
	__u8 ingress = 0;

	if (ct_state == CT_REPLY)
		return 0;
	/* An established flow that passed at the current policy revision: nothing changed. */
	if (ct_state == CT_ESTABLISHED && pi->policy_ok)
		return 0;
	if (src_id)
		ret = policy_verdict(src_id, dst_label, POLICY_EGRESS, pi->proto, pi->dport,
				     skb->len);
	if (!ret && dst_id) {
		ret = policy_verdict(dst_id, src_label, POLICY_INGRESS, pi->proto, pi->dport,
				     skb->len);
		ingress = 1;
	}
	if (ct_state == CT_NEW || ct_state == CT_NEW_TRACKED)
		send_policy_verdict(skb, ret, ingress, source, pi, src_label, dst_label, src_id,
				    dst_id);
	if (ct_state == CT_NEW && !ret)
		ct_policy_create(skb, pi, src_label, p->src_ifindex, p->dst_ifindex);
	else if (ct_state != CT_NEW && !ret)
		ct_policy_stamp(pi, p->dst_ifindex);
	return ret;
}

#endif
