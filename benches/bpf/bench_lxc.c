// SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause)
/* The endpoint programs' handlers under the benchmark harness, with the reference and the
 * pass program (see harness.h and reference.h). Built by benches/build.rs. */
#define BENCH_HARNESS
#include "../../cilium-bpf/bpf/bpf_lxc.c"
#include "harness.h"
#include "reference.h"

static __always_inline int nothing(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}

BENCH(bench_pass, nothing, 0)
BENCH(bench_reference, reference, 0)
BENCH(bench_reference_new, reference, 1)
BENCH(bench_from_container, handle_from_container, 0)
BENCH(bench_from_container_new, handle_from_container, 1)

char LICENSE[] SEC("license") = "Dual BSD/GPL";
