// SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause)
/* cilium-rs datapath: programs on the node's network device.
 *
 * from_netdev (tc ingress): NodePort services (DNAT to a local backend, delivered straight
 * into the pod) and replies of masqueraded flows (back to the pod).
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

/* Delivers a packet whose destination is a local endpoint into its pod. */
static __always_inline int deliver_local(struct __sk_buff *skb, struct pkt_info *pi,
					 __u32 src_label)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct endpoint_info *ep;
	__u32 ifindex;

	if ((void *)(ip + 1) > data_end)
		return send_drop(skb, DROP_INVALID, METRIC_INGRESS, 0, pi, src_label, 0);
	ep = lookup_ip4_endpoint(ip->daddr);
	if (!ep)
		return TC_ACT_OK;
	ifindex = ep->ifindex;
	__builtin_memcpy(eth->h_dest, &ep->mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, &ep->node_mac, ETH_ALEN);
	if (ip->ttl <= 1)
		return send_drop(skb, DROP_INVALID, METRIC_INGRESS, ep->lxc_id, pi, src_label,
				 ep->sec_id);
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
	struct iphdr *ip;
	__u32 ihl, src_label;
	int ret, new_flow;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return TC_ACT_OK;
	ihl = ip->ihl * 4;
	if (parse_ip4(data_end, ip, &pi))
		return TC_ACT_OK;
	src_label = resolve_identity4(pi.saddr);

	/* Traffic for a pod of this node (from another node): straight into the pod, after
	 * the reverse NAT of a service flow whose client lives here. */
	ep = lookup_ip4_endpoint(pi.daddr);
	if (ep && !(ep->flags & ENDPOINT_F_HOST)) {
		ret = lb4_rev_nat(skb, &pi, ihl);
		if (ret > 1)
			return send_drop(skb, ret, METRIC_INGRESS, 0, &pi, src_label, 0);
		return deliver_local(skb, &pi, src_label);
	}
	if (pi.proto != IPPROTO_TCP && pi.proto != IPPROTO_UDP)
		return TC_ACT_OK;

	/* A reply of a masqueraded flow (a pod's, or a NodePort flow to a backend elsewhere). */
	ret = pi.daddr == NODE_IPV4 ? snat4_ingress(skb, &pi, ihl) : 0;
	if (ret > 1)
		return send_drop(skb, ret, METRIC_INGRESS, 0, &pi, src_label, 0);
	if (ret == 1) {
		if (lookup_ip4_endpoint(pi.daddr))
			return deliver_local(skb, &pi, src_label);
		/* NodePort reply: back to the frontend, out towards the client. */
		ret = lb4_rev_nat(skb, &pi, ihl);
		if (ret > 1)
			return send_drop(skb, ret, METRIC_INGRESS, 0, &pi, src_label, 0);
		send_trace(skb, TRACE_TO_NETWORK, METRIC_EGRESS, 0, &pi, src_label, IDENTITY_WORLD,
			   0, 0);
		return fib_redirect(skb, pi.saddr, pi.daddr);
	}

	/* NodePort (the node's address), ExternalIPs and LoadBalancer addresses routed here. */
	svc = lb4_lookup_service(pi.daddr, pi.dport, pi.proto);
	if (!svc)
		return TC_ACT_OK;
	ret = lb4_local(skb, svc, &pi, ihl, src_label, 0, &new_flow);
	if (ret)
		return send_drop(skb, ret, METRIC_INGRESS, 0, &pi, src_label, 0);
	if (lookup_ip4_endpoint(pi.daddr))
		return deliver_local(skb, &pi, src_label);
	/* The backend is on another node: masquerade so its replies come back here. */
	ret = snat4_egress(skb, &pi, ihl);
	if (ret)
		return send_drop(skb, ret, METRIC_INGRESS, 0, &pi, src_label, 0);
	send_trace(skb, TRACE_TO_NETWORK, METRIC_EGRESS, 0, &pi, src_label, 0, 0, 0);
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
	if (pi.proto != IPPROTO_TCP && pi.proto != IPPROTO_UDP)
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
