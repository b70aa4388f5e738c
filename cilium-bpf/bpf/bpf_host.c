// SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause)
/* cilium-rs datapath: programs on the node's network device.
 *
 * from_netdev (tc ingress): traffic for the node's pods from other nodes (their ingress
 * policy, then straight into the pod), NodePort services (DNAT to a local backend, or SNAT
 * towards one on another node) and replies of masqueraded flows (back to the pod).
 * to_netdev (tc egress): BPF masquerading of pod traffic leaving ipv4-native-routing-cidr.
 */
#include "lib/config.h"
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/events.h"
#include "lib/parse.h"
#include "lib/conntrack.h"
#include "lib/lb.h"
#include "lib/nat.h"
#include "lib/policy.h"

/* Delivers a packet to local endpoint `ep` (the packet's destination) into its pod, once
 * the endpoint's ingress policy allows it (conntrack state `ct_state`: replies pass, new
 * flows get a verdict), as to_container would: the packet skips the endpoint's device. */
static __always_inline int deliver_local(struct __sk_buff *skb, struct pkt_info *pi,
					 struct src_identity *src, int ct_state,
					 const struct endpoint_info *ep)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct policy_peers peers = {};
	__u32 ifindex, src_label;
	int ret;

	if ((void *)(ip + 1) > data_end)
		return send_drop(skb, DROP_INVALID, METRIC_INGRESS, 0, pi, src_identity_get(src),
				 0);
	if (!ep || (ep->flags & ENDPOINT_F_HOST))
		return TC_ACT_OK;
	pi->reply = ct_state == CT_REPLY;
	/* The source's identity (an ipcache lookup) only when policy or a report needs it. */
	src_label = needs_src_identity(ct_state, pi, TRACE_TO_LXC) ? src_identity_get(src) : 0;
	peers.dst_id = ep->lxc_id;
	peers.src_label = src_label;
	peers.dst_label = ep->sec_id;
	peers.dst_ifindex = ep->ifindex;
	ret = policy_enforce(skb, ct_state, pi, ep->lxc_id, &peers);
	if (ret)
		return send_drop(skb, ret, METRIC_INGRESS, ep->lxc_id, pi, src_label, ep->sec_id);
	ifindex = ep->ifindex;
	__builtin_memcpy(eth->h_dest, &ep->mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, &ep->node_mac, ETH_ALEN);
	if (ip->ttl <= 1)
		return send_drop(skb, DROP_INVALID, METRIC_INGRESS, ep->lxc_id, pi,
				 src_identity_get(src), ep->sec_id);
	decrease_ttl(ip);
	send_trace(skb, TRACE_TO_LXC, METRIC_INGRESS, ep->lxc_id, pi, src_label, ep->sec_id, 0,
		   ep->lxc_id);
	return bpf_redirect_peer(ifindex, 0);
}

static __always_inline int handle_from_netdev(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct pkt_info pi = {};
	struct endpoint_info *ep;
	struct lb4_service *svc;
	struct src_identity src = {};
	struct iphdr *ip;
	__u32 ihl;
	int ret, new_flow, ct_state;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return TC_ACT_OK;
	ihl = ip->ihl * 4;
	if (parse_ip4(data_end, ip, &pi))
		return TC_ACT_OK;
	/* The source's identity is looked up when something needs it. */
	src.addr = pi.saddr;

	/* Traffic for a pod of this node (from another node): its ingress policy, then
	 * straight into the pod; a reply of a service flow whose client lives here gets its
	 * frontend back first. */
	ep = pi.daddr == NODE_IPV4 ? NULL : lookup_ip4_endpoint(pi.daddr);
	if (ep && !(ep->flags & ENDPOINT_F_HOST)) {
		ret = ct_lookup4_rev_nat(skb, &pi, ihl, &ct_state);
		if (ret)
			return send_drop(skb, ret, METRIC_INGRESS, 0, &pi, src_identity_get(&src), 0);
		return deliver_local(skb, &pi, &src, ct_state, ep);
	}
	if (pi.proto != IPPROTO_TCP && pi.proto != IPPROTO_UDP)
		return TC_ACT_OK;
	if (!ENABLE_NODEPORT && !ENABLE_BPF_MASQUERADE)
		return TC_ACT_OK;

	/* NodePort (the node's address), ExternalIPs and LoadBalancer addresses routed here.
	 * Looked up first: masquerading's ports (SNAT_PORT_MIN and up) lie above the NodePort
	 * range, so a reply of a masqueraded flow never matches a service. */
	svc = ENABLE_NODEPORT ? lb4_lookup_service(pi.daddr, pi.dport, pi.proto) : NULL;
	if (svc) {
		ret = lb4_local(skb, svc, &pi, ihl, &src, 0, 0, &new_flow);
		if (ret)
			return send_drop(skb, ret, METRIC_INGRESS, 0, &pi, src_identity_get(&src),
					 0);
		ep = lookup_ip4_endpoint_at(pi.deliver_ifindex, pi.daddr);
		if (ep)
			return deliver_local(skb, &pi, &src,
					     new_flow ? CT_NEW_TRACKED : CT_ESTABLISHED, ep);
		/* The backend is on another node: masquerade so its replies come back here. */
		ret = snat4_egress(skb, &pi, ihl);
		if (ret)
			return send_drop(skb, ret, METRIC_INGRESS, 0, &pi, src_identity_get(&src),
					 0);
		send_trace(skb, TRACE_TO_NETWORK, METRIC_EGRESS, 0, &pi, src_identity_get(&src),
			   0, 0, 0);
		return fib_redirect(skb, pi.saddr, pi.daddr);
	}

	/* A reply of a masqueraded flow (a pod's, or a NodePort flow to a backend elsewhere). */
	ret = pi.daddr == NODE_IPV4 ? snat4_ingress(skb, &pi, ihl) : 0;
	if (ret > 1)
		return send_drop(skb, ret, METRIC_INGRESS, 0, &pi, src_identity_get(&src), 0);
	if (ret == 0)
		return TC_ACT_OK;
	ep = lookup_ip4_endpoint(pi.daddr);
	if (ep) {
		ret = ct_lookup4_rev_nat(skb, &pi, ihl, &ct_state);
		if (ret)
			return send_drop(skb, ret, METRIC_INGRESS, 0, &pi, src_identity_get(&src),
					 0);
		return deliver_local(skb, &pi, &src, ct_state, ep);
	}
	/* NodePort reply: back to the frontend, out towards the client. */
	ret = lb4_rev_nat(skb, &pi, ihl);
	if (ret > 1)
		return send_drop(skb, ret, METRIC_INGRESS, 0, &pi, src_identity_get(&src), 0);
	send_trace(skb, TRACE_TO_NETWORK, METRIC_EGRESS, 0, &pi, src_identity_get(&src),
		   IDENTITY_WORLD, 0, 0);
	return fib_redirect(skb, pi.saddr, pi.daddr);
}

static __always_inline int handle_to_netdev(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct pkt_info pi = {};
	struct endpoint_info *src;
	struct iphdr *ip;
	__u32 ihl;
	int ret;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return TC_ACT_OK;
	ihl = ip->ihl * 4;
	if (parse_ip4(data_end, ip, &pi))
		return TC_ACT_OK;
	if (!ENABLE_BPF_MASQUERADE || (pi.proto != IPPROTO_TCP && pi.proto != IPPROTO_UDP))
		return TC_ACT_OK;
	/* Only pod traffic to destinations outside the cluster is masqueraded: not inside the
	 * native-routing CIDR, and not to anything the ipcache knows as part of the cluster
	 * (other nodes, their pods). */
	src = lookup_ip4_endpoint(pi.saddr);
	if (!src || in_native_cidr(pi.daddr))
		return TC_ACT_OK;
	if (resolve_identity4(pi.daddr) != IDENTITY_WORLD)
		return TC_ACT_OK;
	ret = snat4_egress(skb, &pi, ihl);
	if (ret)
		return send_drop(skb, ret, METRIC_EGRESS, src->lxc_id, &pi, src->sec_id, 0);
	/* Nothing here tracks the connection, so with aggregation at `medium` or above the
	 * packet is counted and not reported, as Cilium's to-netdev does (its trace carries
	 * no conntrack monitor flag): from_container reported the flow when it started. */
	pi.quiet = 1;
	send_trace(skb, TRACE_TO_NETWORK, METRIC_EGRESS, 0, &pi, 0, IDENTITY_WORLD, 0, 0);
	return TC_ACT_OK;
}

/* The programs. A benchmark harness includes this file with BENCH_HARNESS defined to
 * call the handlers itself. */
#ifndef BENCH_HARNESS
SEC("classifier")
int from_netdev(struct __sk_buff *skb)
{
	return handle_from_netdev(skb);
}

SEC("classifier")
int to_netdev(struct __sk_buff *skb)
{
	return handle_to_netdev(skb);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
#endif
