// SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause)
/* A program that does nothing: the baseline of the per-packet benchmarks. */
#include "lib/common.h"

SEC("classifier")
int bench_pass(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
