/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/* The reference of the per-packet benchmarks: the least a service datapath does per
 * packet. Parse Ethernet, IPv4 and TCP/UDP; look the destination up in a service map; look
 * the flow up in an LRU conntrack map; on a miss, pick the backend from a Maglev table by a
 * hash of the flow and record it; look the backend up. No events, counters, policy,
 * endpoint checks or packet rewrite: what cilium-rs adds to this is what the ratios show.
 * Its maps are its own (not pinned); the bench fills them. */
#ifndef BENCH_REFERENCE_H
#define BENCH_REFERENCE_H

#define REF_LUT_SIZE 16381

struct ref_svc_key {
	__be32 addr;
	__be16 port;
	__u8 proto;
	__u8 pad;
};

struct ref_svc {
	__u32 count;
	__u32 pad;
};

struct ref_ct_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct ref_ct {
	__u32 backend;
	__u32 lifetime;
};

struct ref_backend {
	__be32 addr;
	__be16 port;
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct ref_svc_key);
	__type(value, struct ref_svc);
	__uint(max_entries, 1024);
} ref_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ref_ct_key);
	__type(value, struct ref_ct);
	__uint(max_entries, 262144);
} ref_ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, REF_LUT_SIZE);
} ref_maglev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct ref_backend);
	__uint(max_entries, 64);
} ref_backends SEC(".maps");

static __always_inline int reference(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct ref_svc_key skey = {};
	struct ref_ct_key ckey = {};
	struct ref_ct *e, ne = {};
	struct ref_backend *be;
	struct ref_svc *svc;
	__be16 *ports;
	__u32 backend, idx, *slot;

	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return TC_ACT_OK;
	ports = (void *)ip + ip->ihl * 4;
	if ((void *)(ports + 2) > data_end)
		return TC_ACT_SHOT;
	skey.addr = ip->daddr;
	skey.port = ports[1];
	skey.proto = ip->protocol;
	svc = bpf_map_lookup_elem(&ref_services, &skey);
	if (!svc)
		return TC_ACT_OK;
	ckey.saddr = ip->saddr;
	ckey.daddr = ip->daddr;
	ckey.sport = ports[0];
	ckey.dport = ports[1];
	ckey.proto = ip->protocol;
	e = bpf_map_lookup_elem(&ref_ct, &ckey);
	if (e) {
		backend = e->backend;
	} else {
		idx = jhash_3words(ip->saddr, ((__u32)ports[1] << 16) | ports[0], ip->protocol,
				   0) % REF_LUT_SIZE;
		slot = bpf_map_lookup_elem(&ref_maglev, &idx);
		if (!slot)
			return TC_ACT_SHOT;
		backend = *slot;
		ne.backend = backend;
		ne.lifetime = bpf_mono_now() + 21600;
		bpf_map_update_elem(&ref_ct, &ckey, &ne, BPF_ANY);
	}
	be = bpf_map_lookup_elem(&ref_backends, &backend);
	if (!be || !be->addr)
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}

#endif
