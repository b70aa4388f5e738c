// SPDX-License-Identifier: Apache-2.0

//! Maglev table builds: `maglev_M<m>_N<n>` for M in {16381, 65521, 131071} and N in
//! {10, 100, 1000} with equal weights, plus `maglev_weighted_M16381_N100` (weights
//! 1..=100). `baseline` is Cilium's algorithm as upstream writes it (materialised `N x M`
//! permutation, then the fill; run single-threaded, and only where the table fits in
//! 256 MiB); `ours` is `cilium_lb::maglev::Maglev`. For reference, on this machine Cilium's
//! Go code takes ~8-10 ms at M=16381/N=100 and Katran ~0.42 ms.

use std::hint::black_box;

use cilium_benches::maglev_reference;
use cilium_lb::maglev::{
    DEFAULT_HASH_SEED, L4Proto, Maglev, MaglevBackend, MaglevConfig, backend_hash_string,
};
use criterion::{Criterion, criterion_group, criterion_main};

fn backends(n: u32, weighted: bool) -> Vec<MaglevBackend> {
    let mut v: Vec<MaglevBackend> = (0..n)
        .map(|i| {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i + 1);
            let w = if weighted { (i % 100 + 1) as u16 } else { 100 };
            MaglevBackend::new(
                backend_hash_string(ip.into(), 0, 8080, L4Proto::Tcp, false),
                w,
                i,
            )
        })
        .collect();
    v.sort_by(|a, b| a.hash.cmp(&b.hash));
    v
}

fn one(c: &mut Criterion, name: &str, m: u32, set: &[MaglevBackend]) {
    let config = MaglevConfig::new(m, DEFAULT_HASH_SEED).expect("valid");
    let seed = config.seed().murmur;
    let hashes: Vec<String> = set.iter().map(|b| b.hash.clone()).collect();
    let weights: Vec<u16> = set.iter().map(|b| b.weight).collect();
    let mut g = c.benchmark_group(name);
    g.sample_size(10);
    if u64::from(m) * set.len() as u64 * 8 <= 256 << 20 {
        g.bench_function("baseline", |b| {
            b.iter(|| black_box(maglev_reference(&hashes, &weights, m, seed)));
        });
    }
    let mut maglev = Maglev::new(config);
    let mut table = vec![0u32; m as usize];
    g.bench_function("ours", |b| {
        b.iter(|| maglev.fill(black_box(set), &mut table).expect("valid"));
    });
    g.finish();
}

fn builds(c: &mut Criterion) {
    for m in [16381u32, 65521, 131_071] {
        for n in [10u32, 100, 1000] {
            one(c, &format!("maglev_M{m}_N{n}"), m, &backends(n, false));
        }
    }
    one(
        c,
        "maglev_weighted_M16381_N100",
        16381,
        &backends(100, true),
    );
}

criterion_group!(benches, builds);
criterion_main!(benches);
