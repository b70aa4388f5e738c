// SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause)
/* Never loaded: one global of each map key, map value and event type, so that this
 * object's BTF describes every datapath ABI type. cilium-bpf's layout test compares its
 * Rust mirrors against it. */
#include "lib/common.h"

struct endpoint_key abi_endpoint_key __attribute__((used));
struct endpoint_info abi_endpoint_info __attribute__((used));
struct lxc_ifindex_entry abi_lxc_ifindex_entry __attribute__((used));
struct ipcache_key abi_ipcache_key __attribute__((used));
struct remote_endpoint_info abi_remote_endpoint_info __attribute__((used));
struct metrics_key abi_metrics_key __attribute__((used));
struct metrics_value abi_metrics_value __attribute__((used));
struct lb4_key abi_lb4_key __attribute__((used));
struct lb4_service abi_lb4_service __attribute__((used));
struct lb4_backend abi_lb4_backend __attribute__((used));
struct lb4_reverse_nat abi_lb4_reverse_nat __attribute__((used));
struct ipv4_ct_tuple abi_ipv4_ct_tuple __attribute__((used));
struct ct_entry abi_ct_entry __attribute__((used));
struct ipv4_nat_entry abi_ipv4_nat_entry __attribute__((used));
struct policy_key abi_policy_key __attribute__((used));
struct policy_entry abi_policy_entry __attribute__((used));
struct policy_stats_key abi_policy_stats_key __attribute__((used));
struct policy_stats_value abi_policy_stats_value __attribute__((used));
struct datapath_event abi_datapath_event __attribute__((used));
struct lb4_reverse_sk_key abi_lb4_reverse_sk_key __attribute__((used));
struct lb4_reverse_sk abi_lb4_reverse_sk __attribute__((used));
struct lb4_affinity_key abi_lb4_affinity_key __attribute__((used));
struct lb_affinity_val abi_lb_affinity_val __attribute__((used));
struct lb_affinity_match abi_lb_affinity_match __attribute__((used));

char LICENSE[] SEC("license") = "Dual BSD/GPL";
