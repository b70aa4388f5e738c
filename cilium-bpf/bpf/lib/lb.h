/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/* cilium-rs datapath: service load balancing (east-west, in from_container). */
#ifndef CILIUM_RS_LB_H
#define CILIUM_RS_LB_H

#include "common.h"
#include "maps.h"
#include "events.h"
#include "conntrack.h"

#define LB_LOOKUP_SCOPE_EXT 0
#define LB_SELECTION_RANDOM 1
#define LB_SELECTION_MAGLEV 2

#define IP_CSUM_OFF (ETH_HLEN + offsetof(struct iphdr, check))
#define IP_SADDR_OFF (ETH_HLEN + offsetof(struct iphdr, saddr))
#define IP_DADDR_OFF (ETH_HLEN + offsetof(struct iphdr, daddr))

#ifndef offsetof
#define offsetof(type, member) __builtin_offsetof(type, member)
#endif

#define SVC_FLAG_AFFINITY (1 << 4)
#define AFFINITY_TIMEOUT_MASK 0x00ffffff

/* The backend a client was given within the service's affinity timeout, if it may still
 * have it (an active backend of the service); 0 otherwise. */
static __always_inline __u32 lb4_affinity_backend(const struct lb4_service *svc, __be32 client)
{
	struct lb4_affinity_key key = {};
	struct lb_affinity_match match = {};
	struct lb_affinity_val *val;
	__u32 timeout = svc->backend_id & AFFINITY_TIMEOUT_MASK;
	__u64 now = bpf_mono_now();

	key.client_id.client_ip = client;
	key.rev_nat_id = svc->rev_nat_index;
	val = bpf_map_lookup_elem(&cilium_lb4_affinity, &key);
	if (!val)
		return 0;
	if (val->last_used + timeout <= now) {
		bpf_map_delete_elem(&cilium_lb4_affinity, &key);
		return 0;
	}
	match.backend_id = val->backend_id;
	match.rev_nat_id = svc->rev_nat_index;
	if (!bpf_map_lookup_elem(&cilium_lb_affinity_match, &match))
		return 0;
	val->last_used = now;
	return val->backend_id;
}

static __always_inline void lb4_affinity_update(const struct lb4_service *svc, __be32 client,
						__u32 backend_id)
{
	struct lb4_affinity_key key = {};
	struct lb_affinity_val val = {};

	key.client_id.client_ip = client;
	key.rev_nat_id = svc->rev_nat_index;
	val.last_used = bpf_mono_now();
	val.backend_id = backend_id;
	bpf_map_update_elem(&cilium_lb4_affinity, &key, &val, BPF_ANY);
}


/* Jenkins hash of three words, as Linux's jhash_3words (and Cilium's). */
static __always_inline __u32 rol32(__u32 word, unsigned int shift)
{
	return (word << shift) | (word >> ((-shift) & 31));
}

static __always_inline __u32 jhash_3words(__u32 a, __u32 b, __u32 c, __u32 initval)
{
	initval += 0xdeadbeef + (3 << 2);
	a += initval;
	b += initval;
	c += initval;
	c ^= b; c -= rol32(b, 14);
	a ^= c; a -= rol32(c, 11);
	b ^= a; b -= rol32(a, 25);
	c ^= b; c -= rol32(b, 16);
	a ^= c; a -= rol32(c, 4);
	b ^= a; b -= rol32(a, 14);
	c ^= b; c -= rol32(b, 24);
	return c;
}

/* Offset of the L4 checksum, or 0 when the protocol has none we rewrite. */
static __always_inline __u32 l4_csum_off(__u8 proto, __u32 ihl)
{
	if (proto == IPPROTO_TCP)
		return ETH_HLEN + ihl + 16;
	if (proto == IPPROTO_UDP)
		return ETH_HLEN + ihl + 6;
	return 0;
}

/* An incremental checksum update for a 32-bit field changing from `from` to `to` (RFC 1624,
 * eqn. 3), as csum_replace4 does; both in network order. */
static __always_inline void csum_replace4(__sum16 *sum, __be32 from, __be32 to)
{
	__u32 s = (__u16)~*sum;

	s += (__u16)~(__u16)from + (__u16)~(__u16)(from >> 16);
	s += (__u16)to + (__u16)(to >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	*sum = (__sum16)~(__u16)s;
}

/* Rewrites one address (source or destination) and one port of the packet, fixing the IP
 * and L4 checksums. The L4 checksum goes through the kernel's helpers (they know whether
 * the checksum is partial, offloaded to the device); the address, the port and the IP
 * header's checksum are written in place. Invalidates packet pointers. */
static __always_inline int rewrite_addr_port(struct __sk_buff *skb, __u32 ihl, __u8 proto,
					     int dest, __be32 old_addr, __be32 new_addr,
					     __be16 old_port, __be16 new_port)
{
	__u32 csum_off = l4_csum_off(proto, ihl);
	__u32 udp_flags = proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
	void *data, *data_end;
	struct iphdr *ip;
	__be16 *ports;

	if (ihl < sizeof(struct iphdr) || ihl > 60)
		return DROP_INVALID;
	if (csum_off) {
		if (bpf_l4_csum_replace(skb, csum_off, old_addr, new_addr,
					BPF_F_PSEUDO_HDR | udp_flags | sizeof(new_addr)) < 0)
			return DROP_INVALID;
		if (old_port != new_port &&
		    bpf_l4_csum_replace(skb, csum_off, old_port, new_port,
					udp_flags | sizeof(new_port)) < 0)
			return DROP_INVALID;
	}
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	ip = data + ETH_HLEN;
	if ((void *)(ip + 1) > data_end)
		return DROP_INVALID;
	csum_replace4(&ip->check, old_addr, new_addr);
	if (dest)
		ip->daddr = new_addr;
	else
		ip->saddr = new_addr;
	if (csum_off && old_port != new_port) {
		ports = (void *)ip + ihl;
		if ((void *)(ports + 2) > data_end)
			return DROP_INVALID;
		ports[dest ? 1 : 0] = new_port;
	}
	return 0;
}

#define LB_LOOKUP_SCOPE_INT 1
#define SVC_FLAG2_TWO_SCOPES (1 << 5)

static __always_inline struct lb4_service *lb4_lookup_scope(__be32 addr, __be16 port,
							    __u8 proto, __u8 scope)
{
	struct lb4_key key = {};

	key.address = addr;
	key.dport = port;
	key.proto = proto;
	key.scope = scope;
	return bpf_map_lookup_elem(&cilium_lb4_services_v2, &key);
}

/* The service entry for traffic from outside the node (the external scope). */
static __always_inline struct lb4_service *lb4_lookup_service(__be32 addr, __be16 port,
							      __u8 proto)
{
	return lb4_lookup_scope(addr, port, proto, LB_LOOKUP_SCOPE_EXT);
}

/* The service entry for traffic from a pod: the internal scope when the service has one
 * (externalTrafficPolicy differs from internalTrafficPolicy), else the only one. */
static __always_inline struct lb4_service *lb4_lookup_service_internal(__be32 addr,
								       __be16 port, __u8 proto)
{
	struct lb4_service *svc = lb4_lookup_scope(addr, port, proto, LB_LOOKUP_SCOPE_EXT);

	if (svc && (svc->flags2 & SVC_FLAG2_TWO_SCOPES))
		return lb4_lookup_scope(addr, port, proto, LB_LOOKUP_SCOPE_INT);
	return svc;
}

/* Picks a backend for a new flow: Maglev when the service has a table, else a random
 * active slot (rand % count + 1). Returns 0 when there is none. */
static __always_inline __u32 lb4_select_backend(const struct lb4_service *svc, __be32 addr,
						__be16 port, __u8 proto, __be32 saddr,
						__be16 sport, int scope_int)
{
	struct lb4_key key = {};
	struct lb4_service *slot;
	__u16 rev_nat = svc->rev_nat_index;
	void *inner;

	if (svc->count == 0)
		return 0;
	inner = bpf_map_lookup_elem(&cilium_lb4_maglev, &rev_nat);
	if (inner) {
		__u32 zero = 0;
		__u32 *table = bpf_map_lookup_elem(inner, &zero);

		if (table) {
			__u32 idx = jhash_3words(saddr, ((__u32)port << 16) | sport, proto,
						 HASH_INIT4_SEED) % LB_MAGLEV_LUT_SIZE;

			/* Spelled out for the verifier, which loses the modulo's bound (the
			 * empty asm keeps clang from dropping the check). */
			asm volatile("" : "+r"(idx));
			if (idx >= LB_MAGLEV_LUT_SIZE)
				return 0;
			return table[idx];
		}
	}
	key.address = addr;
	key.dport = port;
	key.proto = proto;
	key.scope = (svc->flags2 & SVC_FLAG2_TWO_SCOPES) && scope_int ? LB_LOOKUP_SCOPE_INT :
									LB_LOOKUP_SCOPE_EXT;
	key.backend_slot = (bpf_get_prandom_u32() % svc->count) + 1;
	slot = bpf_map_lookup_elem(&cilium_lb4_services_v2, &key);
	if (!slot)
		return 0;
	return slot->backend_id;
}

/* The source a pod's packets get when a service sends them back to the pod itself
 * (hairpin): Cilium's default ipv4-service-loopback-address. The pod's reply goes to it
 * and the reverse translation gives the pod its own address back. */
#define IPV4_LOOPBACK bpf_htonl(0xa9fe2a01) /* 169.254.42.1 */

/* Translates the destination of a packet to a service frontend into one of its backends,
 * recording the choice in conntrack so every later packet of the flow goes to the same
 * backend. `*new_flow` tells whether the translated flow was new to conntrack (its entry is
 * created here, so policy need not look it up again). `src_ifindex` is the client
 * endpoint's interface (0: the client is not a local endpoint), kept in the translated
 * flow's entry for its replies; `pi->deliver_ifindex` gets where the flow's packets were
 * delivered so far. Returns 0, or a drop reason. */
static __always_inline int lb4_local(struct __sk_buff *skb, const struct lb4_service *svc,
				     struct pkt_info *pi, __u32 ihl, struct src_identity *src,
				     int scope_int, __u32 src_ifindex, int *new_flow)
{
	struct ipv4_ct_tuple skey = {}, fkey = {};
	struct ct_entry *e = NULL, *fe;
	struct lb4_backend *be = NULL;
	__u32 backend_id = 0;
	__u16 rev_nat = svc->rev_nat_index;
	__be32 vip = pi->daddr, baddr;
	__be16 vport = pi->dport, bport;
	int syn_only = pi->proto == IPPROTO_TCP &&
		       (pi->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN;
	void *ct = ct_map(pi->proto);
	__u32 now = bpf_mono_now();

	*new_flow = 0;
	ct_key(&skey, pi->saddr, vip, pi->sport, vport, pi->proto, TUPLE_F_SERVICE);
	e = bpf_map_lookup_elem(ct, &skey);
	if (e) {
		backend_id = (__u32)e->backend_id;
		be = bpf_map_lookup_elem(&cilium_lb4_backends_v3, &backend_id);
		/* Existing flows keep a terminating backend; a new connection, or a backend
		 * that is gone, chooses again. */
		if (be && be->flags != 0 && syn_only)
			be = NULL;
	}
	/* Policy stamps go to the service entry (see ct_policy_stamp). */
	pi->svc_addr = vip;
	pi->svc_port = vport;
	if (be) {
		/* An established service flow: its service entry says all the packet needs
		 * (backend, whether to report it, whether it passed policy at this revision).
		 * The translated flow's entry, which replies use, is refreshed at most once a
		 * second (in the service entry's otherwise unused last_rx_report), and on the
		 * packets conntrack reports or that open or close the connection. */
		int report = ct_touch(e, pi->proto, pi->tcp_flags, skb->len, 1, now);

		pi->quiet = !report;
		pi->policy_ok = e->policy_rev == policy_rev_stamp();
		pi->deliver_ifindex = e->ifindex;
		*new_flow = 0;
		if (!report && e->last_rx_report == now &&
		    !(pi->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_FIN | TCP_FLAG_RST)))
			goto translate;
		e->last_rx_report = now;
	} else {
		struct ct_entry ne = {};

		backend_id = 0;
		if (svc->flags & SVC_FLAG_AFFINITY)
			backend_id = lb4_affinity_backend(svc, pi->saddr);
		if (!backend_id)
			backend_id = lb4_select_backend(svc, vip, vport, pi->proto, pi->saddr,
							pi->sport, scope_int);
		if (!backend_id)
			return DROP_NO_SERVICE;
		if (svc->flags & SVC_FLAG_AFFINITY)
			lb4_affinity_update(svc, pi->saddr, backend_id);
		be = bpf_map_lookup_elem(&cilium_lb4_backends_v3, &backend_id);
		if (!be)
			return DROP_NO_SERVICE;
		ne.backend_id = backend_id;
		ne.rev_nat_index = rev_nat;
		ne.src_sec_id = src_identity_get(src);
		ct_touch(&ne, pi->proto, pi->tcp_flags, skb->len, 1, now);
		ne.last_rx_report = now;
		bpf_map_update_elem(ct, &skey, &ne, BPF_ANY);
	}

	/* The translated flow's entry: replies find the rev-NAT index there. A pod that
	 * reaches itself through the service is seen by itself as IPV4_LOOPBACK. */
	ct_key(&fkey, be->address == pi->saddr ? IPV4_LOOPBACK : pi->saddr, be->address,
	       pi->sport, be->port, pi->proto, TUPLE_F_OUT);
	fe = bpf_map_lookup_elem(ct, &fkey);
	if (fe) {
		if (fe->rev_nat_index != rev_nat)
			fe->rev_nat_index = rev_nat;
		if (fe->backend_id != backend_id)
			fe->backend_id = backend_id;
		if (fe->reply_ifindex != src_ifindex)
			fe->reply_ifindex = src_ifindex;
		ct_touch(fe, pi->proto, pi->tcp_flags, skb->len, 1, now);
	} else {
		struct ct_entry fne = {};

		/* The flow is new to conntrack (policy then gives it a verdict). */
		*new_flow = 1;
		fne.backend_id = backend_id;
		fne.rev_nat_index = rev_nat;
		fne.src_sec_id = src_identity_get(src);
		fne.reply_ifindex = src_ifindex;
		ct_touch(&fne, pi->proto, pi->tcp_flags, skb->len, 1, now);
		bpf_map_update_elem(ct, &fkey, &fne, BPF_ANY);
	}
	if (*new_flow) {
		pi->quiet = 0;
		pi->policy_ok = 0;
	}

translate:
	baddr = be->address;
	bport = be->port;
	if (rewrite_addr_port(skb, ihl, pi->proto, 1, vip, baddr, vport, bport))
		return DROP_INVALID;
	if (baddr == pi->saddr) {
		/* Hairpin: the pod would drop a packet from its own address. */
		if (rewrite_addr_port(skb, ihl, pi->proto, 0, baddr, IPV4_LOOPBACK, pi->sport,
				      pi->sport))
			return DROP_INVALID;
		pi->saddr = IPV4_LOOPBACK;
	}
	pi->daddr = baddr;
	pi->dport = bport;
	return 0;
}

/* Reverse NAT for a reply of a service flow (reverse-NAT index `idx`, from conntrack):
 * the source goes back to the frontend. Returns 0, or a drop reason. */
static __always_inline int lb4_rev_nat_apply(struct __sk_buff *skb, struct pkt_info *pi,
					     __u32 ihl, __u16 idx)
{
	struct lb4_reverse_nat *rn = bpf_map_lookup_elem(&cilium_lb4_reverse_nat, &idx);
	__be32 addr;
	__be16 port;

	if (!rn)
		return 0;
	addr = rn->address;
	port = rn->port;
	if (rewrite_addr_port(skb, ihl, pi->proto, 0, pi->saddr, addr, pi->sport, port))
		return DROP_INVALID;
	pi->saddr = addr;
	pi->sport = port;
	return 0;
}

/* Conntrack for a packet that is not a service request (`*ct_state`), and a reply of a
 * service flow gets its frontend back. Returns 0, or a drop reason. */
static __always_inline int ct_lookup4_rev_nat(struct __sk_buff *skb, struct pkt_info *pi,
					      __u32 ihl, int *ct_state)
{
	__u16 rev_nat = 0;

	*ct_state = ct_lookup4(skb, pi, &rev_nat);
	return rev_nat ? lb4_rev_nat_apply(skb, pi, ihl, rev_nat) : 0;
}

/* Reverse NAT for a packet that may answer a service flow. Returns 1 when the packet was
 * translated, 0 when it is not such a reply, or a drop reason (> 1). */
static __always_inline int lb4_rev_nat(struct __sk_buff *skb, struct pkt_info *pi, __u32 ihl)
{
	__u16 idx = 0;
	int ret;

	if (pi->proto != IPPROTO_TCP && pi->proto != IPPROTO_UDP)
		return 0;
	if (!ct_reply4(skb, pi, &idx) || !idx)
		return 0;
	ret = lb4_rev_nat_apply(skb, pi, ihl, idx);
	return ret ? ret : 1;
}

/* Folds a bpf_csum_diff sum into a 16-bit Internet checksum. */
static __always_inline __sum16 csum_fold32(__s64 sum)
{
	__u32 s = (__u32)sum;

	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__sum16)~s;
}

#define ICMP_DEST_UNREACH 3
#define ICMP_PORT_UNREACH 3
/* The IP header and 8 bytes of the offending packet, which an ICMP error quotes. */
#define ICMP_QUOTE_LEN 28

/* An ICMP port unreachable with its quote, as written after the new IP header. */
struct icmp_reject {
	struct icmphdr icmp;
	__u8 quote[ICMP_QUOTE_LEN];
};

/* Answers a packet for a service without backends with an ICMP port unreachable from the
 * service's address, sent back out of the interface the packet came in on (Cilium's
 * `service-no-backend-response: reject`, its default): the client's connection fails at
 * once (ECONNREFUSED) instead of timing out. The packet becomes the answer. */
static __always_inline int lb4_reject(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct icmp_reject r = {};
	struct iphdr nip = {};
	__u8 smac[ETH_ALEN], dmac[ETH_ALEN];
	__be32 saddr, daddr;

	if ((void *)ip + ICMP_QUOTE_LEN > data_end || ip->ihl != 5)
		return TC_ACT_SHOT;
	__builtin_memcpy(r.quote, ip, ICMP_QUOTE_LEN);
	__builtin_memcpy(smac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(dmac, eth->h_dest, ETH_ALEN);
	saddr = ip->saddr;
	daddr = ip->daddr;
	if (bpf_skb_change_tail(skb, ETH_HLEN + sizeof(nip) + sizeof(r), 0))
		return TC_ACT_SHOT;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	if ((void *)eth + ETH_HLEN + sizeof(nip) + sizeof(r) > data_end)
		return TC_ACT_SHOT;
	__builtin_memcpy(eth->h_dest, smac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, dmac, ETH_ALEN);
	nip.version = 4;
	nip.ihl = 5;
	nip.tot_len = bpf_htons(sizeof(nip) + sizeof(r));
	nip.ttl = 64;
	nip.protocol = IPPROTO_ICMP;
	nip.saddr = daddr;
	nip.daddr = saddr;
	nip.check = csum_fold32(bpf_csum_diff(NULL, 0, (__be32 *)&nip, sizeof(nip), 0));
	r.icmp.type = ICMP_DEST_UNREACH;
	r.icmp.code = ICMP_PORT_UNREACH;
	r.icmp.checksum = csum_fold32(bpf_csum_diff(NULL, 0, (__be32 *)&r, sizeof(r), 0));
	__builtin_memcpy((void *)eth + ETH_HLEN, &nip, sizeof(nip));
	__builtin_memcpy((void *)eth + ETH_HLEN + sizeof(nip), &r, sizeof(r));
	return bpf_redirect(skb->ifindex, 0);
}

static __always_inline void decrease_ttl(struct iphdr *ip)
{
	__u32 check = (__u32)ip->check;

	check += (__u32)bpf_htons(0x0100);
	ip->check = (__sum16)(check + (check >= 0xFFFF));
	ip->ttl--;
}

#ifndef AF_INET
#define AF_INET 2
#endif

/* Sends a packet out of the device the node's FIB picks for its destination, resolving the
 * next hop's MAC (bpf_redirect_neigh). Used for replies whose source is one of the node's
 * own addresses (NodePort), which the stack would refuse as martians. */
static __always_inline int fib_redirect(struct __sk_buff *skb, __be32 saddr, __be32 daddr)
{
	struct bpf_fib_lookup fib = {};
	long rc;

	fib.family = AF_INET;
	fib.ipv4_src = saddr;
	fib.ipv4_dst = daddr;
	fib.ifindex = skb->ifindex;
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_SKIP_NEIGH);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return TC_ACT_OK;
	return bpf_redirect_neigh(fib.ifindex, NULL, 0, 0);
}

#endif
