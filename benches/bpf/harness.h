/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/* Benchmark harness for BPF_PROG_TEST_RUN with a repeat count: the kernel runs a program
 * `repeat` times on one skb, and the datapath rewrites packets (TTL, NAT), so each wrapper
 * saves the headers, runs the handler and puts them back, making every run see the same
 * packet. A wrapper for new flows also gives each run its own TCP source port (from the
 * `bench_port` counter, which the bench resets), so that every run is a conntrack miss.
 * The pass program pays the same save and restore: it is the harness's floor. */
#ifndef BENCH_HARNESS_H
#define BENCH_HARNESS_H

/* Ethernet + IPv4 (no options) + TCP (no options): what the bench's packets carry. */
#define BENCH_BYTES 54
#define BENCH_SPORT_OFF (14 + 20)

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1);
} bench_port SEC(".maps");

static __always_inline void bench_next_port(struct __sk_buff *skb)
{
	__u32 zero = 0;
	__u32 *port = bpf_map_lookup_elem(&bench_port, &zero);
	__be16 p;

	if (!port)
		return;
	p = bpf_htons((__u16)*port);
	*port += 1;
	bpf_skb_store_bytes(skb, BENCH_SPORT_OFF, &p, sizeof(p), 0);
}

#define BENCH(name, handler, new_flows)                                              \
	SEC("classifier")                                                             \
	int name(struct __sk_buff *skb)                                               \
	{                                                                             \
		__u8 saved[BENCH_BYTES];                                              \
		int ret;                                                              \
                                                                                      \
		if (bpf_skb_load_bytes(skb, 0, saved, sizeof(saved)) < 0)             \
			return TC_ACT_SHOT;                                           \
		if (new_flows)                                                        \
			bench_next_port(skb);                                         \
		ret = handler(skb);                                                   \
		if (bpf_skb_store_bytes(skb, 0, saved, sizeof(saved), 0) < 0)         \
			return TC_ACT_SHOT;                                           \
		return ret;                                                           \
	}

#endif
