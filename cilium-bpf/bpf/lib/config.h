/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/* cilium-rs datapath: node-wide settings, written by the loader into these `volatile
 * const` globals (aya's EbpfLoader::override_global) before the programs load. */
#ifndef CILIUM_RS_CONFIG_H
#define CILIUM_RS_CONFIG_H

#include <linux/types.h>

volatile const __u32 NODE_IPV4 = 0;      /* network byte order */
volatile const __u32 ROUTER_IPV4 = 0;    /* network byte order */
volatile const __u32 NATIVE_CIDR4 = 0;   /* ipv4-native-routing-cidr, network byte order */
volatile const __u32 NATIVE_CIDR4_LEN = 0;
volatile const __u32 ENABLE_ARP_RESPONDER = 1;
/* Seed of the Maglev flow hash (bytes 4-7 of bpf-lb-maglev-hash-seed). */
volatile const __u32 HASH_INIT4_SEED = 0;
/* routing-mode=tunnel: the ifindex of the node's VXLAN device (collect_md), 0 for native
 * routing. Pod traffic to other nodes' pods is encapsulated towards the ipcache's tunnel
 * endpoint with the source identity as VNI. */
volatile const __u32 TUNNEL_IFINDEX = 0;
/* monitor-aggregation (Cilium's MONITOR_AGGREGATION): 0 none, 1 lowest, 2 low, 3 medium,
 * 4 maximum. */
volatile const __u32 MONITOR_AGGREGATION = 0;
/* monitor-aggregation-interval in seconds (Cilium's CT_REPORT_INTERVAL). */
volatile const __u32 CT_REPORT_INTERVAL = 5;
/* monitor-aggregation-flags: the TCP flags whose first appearance in a direction of a
 * connection is reported (Cilium's CT_REPORT_FLAGS). */
volatile const __u32 CT_REPORT_FLAGS = 0x07;
/* kube-proxy-replacement: from_netdev serves NodePort (and ExternalIPs, LoadBalancer
 * addresses routed to the node). */
volatile const __u32 ENABLE_NODEPORT = 1;
/* enable-bpf-masquerade: to_netdev masquerades pod traffic leaving the cluster. */
volatile const __u32 ENABLE_BPF_MASQUERADE = 1;
/* service-no-backend-response: 1 reject (an ICMP port unreachable), 0 drop. */
volatile const __u32 SERVICE_NO_BACKEND_REJECT = 1;
/* bpf-conntrack-accounting: count packets and bytes in conntrack entries. */
volatile const __u32 CT_ACCOUNTING = 0;

#endif
