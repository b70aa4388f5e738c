// SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause)
/* cilium-rs datapath: programs on an endpoint's host-side veth (lxc*).
 *
 * from_container runs on tc ingress of the lxc device: traffic leaving the pod.
 * to_container runs on tc egress of the lxc device: traffic the stack sends to the pod.
 */
#include "lib/config.h"
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/events.h"
#include "lib/parse.h"
#include "lib/conntrack.h"
#include "lib/lb.h"
#include "lib/policy.h"

struct arp_eth {
	__be16 htype;
	__be16 ptype;
	__u8 hlen;
	__u8 plen;
	__be16 op;
	__u8 sha[ETH_ALEN];
	__be32 sip;
	__u8 tha[ETH_ALEN];
	__be32 tip;
} __attribute__((packed));

#define ARPOP_REQUEST 1
#define ARPOP_REPLY 2

/* Answers the pod's ARP requests (for its gateway, the router IP) with the MAC of its
 * host-side veth, as Cilium's ARP responder does: the reply goes back out of the lxc device
 * to the pod. */
static __always_inline int handle_arp(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct arp_eth *arp = (void *)(eth + 1);
	struct pkt_info pi = {};
	struct endpoint_info *ep;
	__be32 sip, tip;
	__u8 mac[ETH_ALEN];

	if ((void *)(arp + 1) > data_end)
		return TC_ACT_OK;
	if (!ENABLE_ARP_RESPONDER || arp->op != bpf_htons(ARPOP_REQUEST) ||
	    arp->hlen != ETH_ALEN || arp->plen != 4)
		return TC_ACT_OK;
	sip = arp->sip;
	tip = arp->tip;
	if (sip == tip)
		return TC_ACT_OK; /* gratuitous */
	ep = lookup_ip4_endpoint_at(skb->ifindex, sip);
	pi.saddr = sip;
	pi.daddr = tip;
	if (!ep || ep->ifindex != skb->ifindex)
		return send_drop(skb, DROP_INVALID_SIP, METRIC_EGRESS, 0, &pi, 0, 0);
	__builtin_memcpy(mac, &ep->node_mac, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, mac, ETH_ALEN);
	arp->op = bpf_htons(ARPOP_REPLY);
	__builtin_memcpy(arp->tha, arp->sha, ETH_ALEN);
	__builtin_memcpy(arp->sha, mac, ETH_ALEN);
	arp->sip = tip;
	arp->tip = sip;
	return bpf_redirect(skb->ifindex, 0);
}

static __always_inline int handle_from_container(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct pkt_info pi = {};
	struct endpoint_info *src, *dst;
	struct lb4_service *svc = NULL;
	struct policy_peers peers = {};
	struct src_identity sid = {};
	struct iphdr *ip;
	__u32 src_label, dst_label, ihl;
	__u16 src_id;
	int ret, local, ct_state, svc_new = -1;

	if ((void *)(eth + 1) > data_end)
		return send_drop(skb, DROP_INVALID, METRIC_EGRESS, 0, &pi, 0, 0);
	if (eth->h_proto == bpf_htons(ETH_P_ARP))
		return handle_arp(skb);
	if (eth->h_proto != bpf_htons(ETH_P_IP)) {
		/* Reported with its EtherType: no addresses were parsed. */
		pi.ethertype = bpf_ntohs(eth->h_proto);
		return send_drop(skb, DROP_UNKNOWN_L3, METRIC_EGRESS, 0, &pi, 0, 0);
	}
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return send_drop(skb, DROP_INVALID, METRIC_EGRESS, 0, &pi, 0, 0);
	ret = parse_ip4(data_end, ip, &pi);
	if (ret)
		return send_drop(skb, ret, METRIC_EGRESS, 0, &pi, 0, 0);

	/* The source must be the endpoint behind this very interface: no spoofing. */
	src = lookup_ip4_endpoint_at(skb->ifindex, ip->saddr);
	if (!src || src->ifindex != skb->ifindex)
		return send_drop(skb, DROP_INVALID_SIP, METRIC_EGRESS, 0, &pi, 0, 0);
	src_label = src->sec_id;
	src_id = src->lxc_id;
	sid.addr = pi.saddr;
	sid.id = src_label;
	ihl = ip->ihl * 4;

	/* Requests to a service frontend get a backend (a reply's destination is never a
	 * frontend); everything else is looked up in conntrack once, and replies of service
	 * flows get their frontend back. Both rewrite the packet, so its pointers are loaded
	 * again after. */
	if (pi.proto == IPPROTO_TCP || pi.proto == IPPROTO_UDP)
		svc = lb4_lookup_service_internal(pi.daddr, pi.dport, pi.proto);
	if (svc) {
		ret = lb4_local(skb, svc, &pi, ihl, &sid, 1, skb->ifindex, &svc_new);
		if (ret == DROP_NO_SERVICE && SERVICE_NO_BACKEND_REJECT) {
			/* Reported as Cilium does, then refused rather than left to time out. */
			send_drop(skb, ret, METRIC_EGRESS, src_id, &pi, src_label, 0);
			return lb4_reject(skb);
		}
		if (ret)
			return send_drop(skb, ret, METRIC_EGRESS, src_id, &pi, src_label, 0);
		/* A service flow's conntrack state is known from its translation. */
		ct_state = svc_new ? CT_NEW_TRACKED : CT_ESTABLISHED;
	} else {
		__be32 self = pi.saddr;

		ret = ct_lookup4_rev_nat(skb, &pi, ihl, &ct_state);
		if (ret)
			return send_drop(skb, ret, METRIC_EGRESS, src_id, &pi, src_label, 0);
		/* A reply to the pod itself through a service (see lb4_local) goes back to
		 * the pod's own address. */
		if (ct_state == CT_REPLY && pi.daddr == IPV4_LOOPBACK) {
			if (rewrite_addr_port(skb, ihl, pi.proto, 1, IPV4_LOOPBACK, self,
					      pi.dport, pi.dport))
				return send_drop(skb, DROP_INVALID, METRIC_EGRESS, src_id, &pi,
						 src_label, 0);
			pi.daddr = self;
		}
	}
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return send_drop(skb, DROP_INVALID, METRIC_EGRESS, src_id, &pi, src_label, 0);

	/* Conntrack remembered where this flow's packets were delivered: usually an array
	 * index finds the destination. */
	dst = lookup_ip4_endpoint_at(pi.deliver_ifindex, ip->daddr);
	local = dst && !(dst->flags & ENDPOINT_F_HOST);
	dst_label = dst ? dst->sec_id : resolve_identity4(ip->daddr);

	/* Policy: replies of tracked flows pass; everything else needs this endpoint's egress
	 * policy and, for a pod on this node, the destination's ingress policy. */
	pi.reply = ct_state == CT_REPLY;
	peers.src_id = src_id;
	peers.src_label = src_label;
	peers.dst_label = dst_label;
	peers.src_ifindex = skb->ifindex;
	if (local) {
		peers.dst_id = dst->lxc_id;
		peers.dst_ifindex = dst->ifindex;
	}
	ret = policy_enforce(skb, ct_state, &pi, src_id, &peers);
	if (ret)
		return send_drop(skb, ret, METRIC_EGRESS, src_id, &pi, src_label, dst_label);
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return send_drop(skb, DROP_INVALID, METRIC_EGRESS, src_id, &pi, src_label, 0);

	if (local) {
		__u32 ifindex = dst->ifindex;
		__u16 dst_id = dst->lxc_id;

		if (ip->ttl <= 1)
			return send_drop(skb, DROP_INVALID, METRIC_EGRESS, src_id, &pi, src_label,
					 dst_label);
		/* Deliver straight into the destination pod: L2 rewrite, TTL, redirect_peer. */
		__builtin_memcpy(eth->h_dest, &dst->mac, ETH_ALEN);
		__builtin_memcpy(eth->h_source, &dst->node_mac, ETH_ALEN);
		decrease_ttl(ip);
		send_trace(skb, TRACE_TO_LXC, METRIC_EGRESS, src_id, &pi, src_label, dst_label,
			   src_id, dst_id);
		return bpf_redirect_peer(ifindex, 0);
	}

	/* A reply whose source became one of the node's addresses (NodePort) goes straight
	 * out of the node's device: the stack would drop it as a martian. */
	if (ct_state == CT_REPLY && pi.saddr == NODE_IPV4) {
		send_trace(skb, TRACE_TO_NETWORK, METRIC_EGRESS, src_id, &pi, src_label, dst_label,
			   src_id, 0);
		return fib_redirect(skb, pi.saddr, pi.daddr);
	}

	/* Tunnel mode: a pod of another node goes into the overlay, towards the node the
	 * ipcache names, carrying this endpoint's identity as the VNI. */
	if (TUNNEL_IFINDEX) {
		struct remote_endpoint_info *info = ipcache_lookup4(ip->daddr);

		if (info && info->tunnel_endpoint.ip4 && info->tunnel_endpoint.ip4 != NODE_IPV4 &&
		    info->sec_identity != IDENTITY_REMOTE_NODE &&
		    info->sec_identity != IDENTITY_HOST) {
			struct bpf_tunnel_key key = {};

			key.remote_ipv4 = bpf_ntohl(info->tunnel_endpoint.ip4);
			key.tunnel_id = src_label;
			key.tunnel_ttl = 64;
			if (bpf_skb_set_tunnel_key(skb, &key, sizeof(key), BPF_F_ZERO_CSUM_TX) < 0)
				return send_drop(skb, DROP_INVALID, METRIC_EGRESS, src_id, &pi,
						 src_label, dst_label);
			send_trace(skb, TRACE_TO_OVERLAY, METRIC_EGRESS, src_id, &pi, src_label,
				   dst_label, src_id, 0);
			return bpf_redirect(TUNNEL_IFINDEX, 0);
		}
	}

	/* Anything else: the node's stack routes it (native routing). */
	send_trace(skb, TRACE_TO_STACK, METRIC_EGRESS, src_id, &pi, src_label, dst_label, src_id,
		   0);
	return TC_ACT_OK;
}

static __always_inline int handle_to_container(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct pkt_info pi = {};
	struct policy_peers peers = {};
	struct src_identity src = {};
	struct endpoint_info *dst;
	struct iphdr *ip;
	__u32 src_label, dst_label;
	__u16 dst_id;
	int ret, ct_state;

	if ((void *)(eth + 1) > data_end)
		return TC_ACT_OK;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return send_drop(skb, DROP_INVALID, METRIC_INGRESS, 0, &pi, 0, 0);
	ret = parse_ip4(data_end, ip, &pi);
	if (ret)
		return send_drop(skb, ret, METRIC_INGRESS, 0, &pi, 0, 0);

	/* The packet leaves through the endpoint's own interface. */
	dst = lookup_ip4_endpoint_at(skb->ifindex, ip->daddr);
	if (!dst)
		return TC_ACT_OK;
	dst_label = dst->sec_id;
	dst_id = dst->lxc_id;
	src.addr = ip->saddr;
	/* Ingress policy for traffic from the stack (the host, other nodes, the world);
	 * replies of tracked flows pass, and a reply of a service flow whose backend is
	 * behind the stack gets its frontend back. */
	ret = ct_lookup4_rev_nat(skb, &pi, ip->ihl * 4, &ct_state);
	if (ret)
		return send_drop(skb, ret, METRIC_INGRESS, dst_id, &pi, src_identity_get(&src),
				 dst_label);
	pi.reply = ct_state == CT_REPLY;
	/* The source's identity (an ipcache lookup) only when policy or a report needs it. */
	src_label = needs_src_identity(ct_state, &pi, TRACE_TO_LXC) ? src_identity_get(&src) : 0;
	peers.dst_id = dst_id;
	peers.src_label = src_label;
	peers.dst_label = dst_label;
	peers.dst_ifindex = dst->ifindex;
	ret = policy_enforce(skb, ct_state, &pi, dst_id, &peers);
	if (ret)
		return send_drop(skb, ret, METRIC_INGRESS, dst_id, &pi, src_label, dst_label);
	send_trace(skb, TRACE_TO_LXC, METRIC_INGRESS, dst_id, &pi, src_label, dst_label, 0,
		   dst_id);
	return TC_ACT_OK;
}

/* On the node's VXLAN device (tc ingress), after the kernel decapsulated a packet from
 * another node: the source identity is the VNI. A packet for a pod of this node passes
 * that pod's ingress policy and is delivered into it; anything else goes to the stack. */
static __always_inline int handle_from_overlay(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct pkt_info pi = {};
	struct bpf_tunnel_key key = {};
	struct policy_peers peers = {};
	struct endpoint_info *dst;
	struct iphdr *ip;
	__u32 src_label, dst_label, ifindex;
	__u16 dst_id;
	int ret, ct_state;

	if ((void *)(eth + 1) > data_end)
		return TC_ACT_OK;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return send_drop(skb, DROP_INVALID, METRIC_INGRESS, 0, &pi, 0, 0);
	ret = parse_ip4(data_end, ip, &pi);
	if (ret)
		return send_drop(skb, ret, METRIC_INGRESS, 0, &pi, 0, 0);
	if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), 0) < 0)
		return send_drop(skb, DROP_INVALID, METRIC_INGRESS, 0, &pi, 0, 0);
	src_label = key.tunnel_id;
	dst = lookup_ip4_endpoint(ip->daddr);
	if (!dst || (dst->flags & ENDPOINT_F_HOST))
		return TC_ACT_OK;
	dst_label = dst->sec_id;
	dst_id = dst->lxc_id;
	ifindex = dst->ifindex;
	ret = ct_lookup4_rev_nat(skb, &pi, ip->ihl * 4, &ct_state);
	if (ret)
		return send_drop(skb, ret, METRIC_INGRESS, dst_id, &pi, src_label, dst_label);
	pi.reply = ct_state == CT_REPLY;
	peers.dst_id = dst_id;
	peers.src_label = src_label;
	peers.dst_label = dst_label;
	peers.dst_ifindex = ifindex;
	ret = policy_enforce(skb, ct_state, &pi, dst_id, &peers);
	if (ret)
		return send_drop(skb, ret, METRIC_INGRESS, dst_id, &pi, src_label, dst_label);
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return send_drop(skb, DROP_INVALID, METRIC_INGRESS, dst_id, &pi, src_label, 0);
	if (ip->ttl <= 1)
		return send_drop(skb, DROP_INVALID, METRIC_INGRESS, dst_id, &pi, src_label,
				 dst_label);
	/* Reverse NAT changed the source only: `dst` is still the destination. */
	__builtin_memcpy(eth->h_dest, &dst->mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, &dst->node_mac, ETH_ALEN);
	decrease_ttl(ip);
	send_trace(skb, TRACE_TO_LXC, METRIC_INGRESS, dst_id, &pi, src_label, dst_label, 0,
		   dst_id);
	return bpf_redirect_peer(ifindex, 0);
}

/* The programs. A benchmark harness includes this file with BENCH_HARNESS defined to
 * call the handlers itself. */
#ifndef BENCH_HARNESS
SEC("classifier")
int from_container(struct __sk_buff *skb)
{
	return handle_from_container(skb);
}

SEC("classifier")
int to_container(struct __sk_buff *skb)
{
	return handle_to_container(skb);
}

SEC("classifier")
int from_overlay(struct __sk_buff *skb)
{
	return handle_from_overlay(skb);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
#endif
