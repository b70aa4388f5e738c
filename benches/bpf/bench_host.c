// SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause)
/* The node-device programs' handlers under the benchmark harness (see harness.h). Built by
 * benches/build.rs. */
#define BENCH_HARNESS
#include "../../cilium-bpf/bpf/bpf_host.c"
#include "harness.h"

BENCH(bench_from_netdev, handle_from_netdev, 0)
BENCH(bench_from_netdev_new, handle_from_netdev, 1)
BENCH(bench_to_netdev, handle_to_netdev, 0)

char LICENSE[] SEC("license") = "Dual BSD/GPL";
