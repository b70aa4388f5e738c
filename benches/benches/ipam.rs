// SPDX-License-Identifier: Apache-2.0

//! IPAM costs.
//!
//! - `ipam_alloc_release_99pct_slash16`: allocate one IP then release it, in a /16 node range
//!   that is 99% full (65,534 usable, 655 free, scattered). `baseline` is the random-scan
//!   bitmap Kubernetes and Cilium use; `ours` is `NodeAllocator` (next-fit over a summary
//!   bitmap). Goal: under 100 ns.
//! - `cluster_pool_carve_65536`: carve all 65,536 /24 node CIDRs of a /8 for named nodes
//!   (goal: under 5 ms). `baseline` is the straightforward version (Kubernetes' cidrset: a
//!   flat bitmap scanned bit by bit from a next-candidate index, plus a map from node name
//!   to CIDR); `ours` is `ClusterPool`; `carve_only` is the CIDR carving alone, without
//!   node names (`IdPool` next-fit), to show where the time goes.

use std::hint::black_box;

use cilium_benches::{RandomScanBitmap, scatter};
use cilium_ipam::{ClusterPool, ClusterPoolConfig, Family, NodeAllocator, Owner};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

const USABLE: u32 = 65_534;
const FREE: usize = 655;

/// 655 distinct ids spread over the whole range.
fn free_set() -> Vec<u32> {
    let mut seen = std::collections::HashSet::new();
    scatter(USABLE, 42)
        .filter(|i| seen.insert(*i))
        .take(FREE)
        .collect()
}

fn alloc_release(c: &mut Criterion) {
    let free = free_set();
    let mut g = c.benchmark_group("ipam_alloc_release_99pct_slash16");

    let mut base = RandomScanBitmap::new(USABLE);
    for i in 0..USABLE {
        base.take(i);
    }
    for &i in &free {
        base.put(i);
    }
    g.bench_function("baseline", |b| {
        b.iter(|| {
            let i = base.allocate_next().expect("not full");
            base.put(black_box(i));
        });
    });

    let mut ours = NodeAllocator::new(&["10.0.0.0/16".parse().expect("valid")]).expect("valid");
    let owner = Owner::new("bench").expect("valid");
    while ours.allocate_next(Family::V4, owner.clone()).is_ok() {}
    let base_ip = u32::from(std::net::Ipv4Addr::new(10, 0, 0, 1));
    for &i in &free {
        ours.release(std::net::Ipv4Addr::from(base_ip + i).into())
            .expect("allocated");
    }
    g.bench_function("ours", |b| {
        b.iter(|| {
            let ip = ours
                .allocate_next(Family::V4, owner.clone())
                .expect("not full");
            ours.release(black_box(ip)).expect("allocated");
        });
    });
    g.finish();
}

fn carve(c: &mut Criterion) {
    let names: Vec<String> = (0..65_536).map(|i| format!("node-{i}")).collect();
    let cfg = ClusterPoolConfig::ipv4("10.0.0.0/8", 24).expect("valid");
    let mut g = c.benchmark_group("cluster_pool_carve_65536");
    g.sample_size(20);
    g.bench_function("baseline", |b| {
        b.iter_batched(
            || (vec![0u64; 1024], std::collections::HashMap::new()),
            |(mut bits, mut by_name)| {
                let mut next = 0usize;
                for n in &names {
                    let mut found = None;
                    for step in 0..65_536 {
                        let at = (next + step) % 65_536;
                        if bits[at / 64] & (1 << (at % 64)) == 0 {
                            bits[at / 64] |= 1 << (at % 64);
                            found = Some(at);
                            break;
                        }
                    }
                    let at = found.expect("room");
                    next = at + 1;
                    let net = std::net::Ipv4Addr::from((10u32 << 24) | ((at as u32) << 8));
                    by_name.insert(n.clone(), net);
                }
                (bits, by_name)
            },
            BatchSize::LargeInput,
        );
    });
    g.bench_function("carve_only", |b| {
        b.iter_batched(
            || cilium_core::IdPool::new(65_536),
            |mut pool| {
                while let Some(i) = pool.allocate_next() {
                    black_box(i);
                }
                pool
            },
            BatchSize::LargeInput,
        );
    });
    g.bench_function("ours", |b| {
        b.iter_batched(
            || ClusterPool::new(&cfg).expect("valid"),
            |mut pool| {
                for n in &names {
                    black_box(pool.allocate(n).expect("room"));
                }
                pool
            },
            BatchSize::LargeInput,
        );
    });
    g.finish();
}

criterion_group!(benches, alloc_release, carve);
criterion_main!(benches);
