/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/* cilium-rs datapath: the maps, with Cilium's names. All are pinned by name under the
 * loader's <bpf-root>/tc/globals/, so every program object and every agent restart shares
 * them. */
#ifndef CILIUM_RS_MAPS_H
#define CILIUM_RS_MAPS_H

#include "common.h"

#define ENDPOINTS_MAP_SIZE 65535
#define LXC_IFINDEX_MAX 65536
#define IPCACHE_MAP_SIZE 512000
#define METRICS_MAP_SIZE 1024
#define LB_MAP_SIZE 65536
#define CT_MAP_SIZE_TCP 524288
#define CT_MAP_SIZE_ANY 262144
#define SNAT_MAP_SIZE 524288
#define EVENTS_RING_SIZE (1 << 20)
#define POLICY_MAP_SIZE 16384
#define POLICY_ENDPOINTS_MAX 65535
#define POLICY_STATS_MAP_SIZE 65536

/* Local endpoints: IP -> interface, MACs, endpoint id, identity. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct endpoint_key);
	__type(value, struct endpoint_info);
	__uint(max_entries, ENDPOINTS_MAP_SIZE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilium_lxc SEC(".maps");

/* Local endpoints by interface index (below LXC_IFINDEX_MAX), written beside cilium_lxc
 * by the same writer (see struct lxc_ifindex_entry). Not an upstream map: Cilium compiles
 * each endpoint's own identity into its program; these programs are shared by every
 * endpoint and find theirs here. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct lxc_ifindex_entry);
	__uint(max_entries, LXC_IFINDEX_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilium_lxc_ifindex SEC(".maps");

/* Every known prefix -> identity (and tunnel endpoint). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct ipcache_key);
	__type(value, struct remote_endpoint_info);
	__uint(max_entries, IPCACHE_MAP_SIZE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilium_ipcache_v2 SEC(".maps");

/* Per-CPU packet and byte counters by reason and direction. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__type(key, struct metrics_key);
	__type(value, struct metrics_value);
	__uint(max_entries, METRICS_MAP_SIZE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilium_metrics SEC(".maps");

/* Packets and bytes each policy entry allowed, per CPU (Cilium's cilium_policystats). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__type(key, struct policy_stats_key);
	__type(value, struct policy_stats_value);
	__uint(max_entries, POLICY_STATS_MAP_SIZE);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilium_policystats SEC(".maps");

/* The agent's policy revision (index 0), bumped after every change of an endpoint's policy
 * map: a conntrack entry remembers the revision at which its flow last passed policy, and
 * established flows are checked again only when it changed (as Cilium re-checks on policy
 * revision changes). Not an upstream map. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilium_policy_rev SEC(".maps");

/* Trace, drop and policy verdict events for the agent (and Hubble). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, EVENTS_RING_SIZE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilium_events SEC(".maps");

/* Services: master entries (slot 0) and backend slots. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb4_key);
	__type(value, struct lb4_service);
	__uint(max_entries, LB_MAP_SIZE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilium_lb4_services_v2 SEC(".maps");

/* Backends by id. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct lb4_backend);
	__uint(max_entries, LB_MAP_SIZE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilium_lb4_backends_v3 SEC(".maps");

/* Rev-NAT index -> frontend, to rewrite replies. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u16);
	__type(value, struct lb4_reverse_nat);
	__uint(max_entries, LB_MAP_SIZE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilium_lb4_reverse_nat SEC(".maps");

/* Maglev: rev-NAT index -> the service's lookup table (an inner array map holding the M
 * backend ids in its single value). The inner template is sized for Cilium's default
 * M = 16381; the agent creates one inner map per Maglev service. */
#define LB_MAGLEV_LUT_SIZE 16381
#define LB_MAGLEV_MAP_MAX_ENTRIES 65536

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__type(key, __u16);
	__type(value, __u32);
	__uint(max_entries, LB_MAGLEV_MAP_MAX_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_ARRAY);
		__uint(key_size, sizeof(__u32));
		__uint(value_size, sizeof(__u32) * LB_MAGLEV_LUT_SIZE);
		__uint(max_entries, 1);
	});
} cilium_lb4_maglev SEC(".maps");

/* Session affinity by client IP. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb4_affinity_key);
	__type(value, struct lb_affinity_val);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilium_lb4_affinity SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb_affinity_match);
	__type(value, __u8);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilium_lb_affinity_match SEC(".maps");

/* Socket LB reverse translation (recvmsg, getpeername). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb4_reverse_sk_key);
	__type(value, struct lb4_reverse_sk);
	__uint(max_entries, 262144);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilium_lb4_reverse_sk SEC(".maps");

/* TCP connections. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ipv4_ct_tuple);
	__type(value, struct ct_entry);
	__uint(max_entries, CT_MAP_SIZE_TCP);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilium_ct4_global SEC(".maps");

/* UDP, ICMP and other flows. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ipv4_ct_tuple);
	__type(value, struct ct_entry);
	__uint(max_entries, CT_MAP_SIZE_ANY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilium_ct_any4_global SEC(".maps");

/* BPF masquerading: original and translated tuples. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ipv4_ct_tuple);
	__type(value, struct ipv4_nat_entry);
	__uint(max_entries, SNAT_MAP_SIZE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilium_snat_v4_external SEC(".maps");

/* Policy: endpoint id -> that endpoint's policy (an inner LPM trie of policy_key ->
 * policy_entry, Cilium's per-endpoint cilium_policy_v2_<id> layout). The agent creates
 * one inner map per endpoint. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, POLICY_ENDPOINTS_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_LPM_TRIE);
		/* aya-obj 0.3 reads only sizes in inner map templates. */
		__uint(key_size, sizeof(struct policy_key));
		__uint(value_size, sizeof(struct policy_entry));
		__uint(max_entries, POLICY_MAP_SIZE);
		__uint(map_flags, BPF_F_NO_PREALLOC);
	});
} cilium_policy_v2 SEC(".maps");

#endif
