// SPDX-License-Identifier: Apache-2.0

//! Service translation costs, 10,000 ClusterIP services with 3 backends each.
//!
//! - `lb_translate_10k/ours`: `LbManager::apply` from empty: ids, 40,000 service entries,
//!   backends and rev-NAT entries, as map updates.
//! - `lb_one_backend_change_10k`: one service swaps one backend. `baseline` recomputes and
//!   diffs the whole desired set (`apply` of all 10,000); `ours` is the incremental
//!   `upsert` of the one service.

use std::hint::black_box;

use cilium_lb::manager::{LbConfig, LbManager};
use cilium_lb::service::{Backend, L3n4Addr, Service, ServiceType};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

fn addr(a: u32, port: u16) -> L3n4Addr {
    L3n4Addr::new(
        std::net::Ipv4Addr::from(a).into(),
        port,
        cilium_lb::maglev::L4Proto::Tcp,
    )
}

fn services(n: u32) -> Vec<Service> {
    (0..n)
        .map(|i| {
            let mut s = Service::new(
                format!("ns/svc-{i}"),
                addr(0x0a60_0000 + i, 80),
                ServiceType::ClusterIP,
            );
            for b in 0..3 {
                s.backends
                    .push(Backend::new(addr(0xac14_0000 + i * 3 + b, 8080)));
            }
            s
        })
        .collect()
}

fn translate(c: &mut Criterion) {
    let desired = services(10_000);
    let mut g = c.benchmark_group("lb_translate_10k");
    g.sample_size(10);
    g.bench_function("ours", |b| {
        b.iter_batched(
            || LbManager::new(LbConfig::default()),
            |mut lb| {
                black_box(lb.apply(&desired).expect("valid"));
                lb
            },
            BatchSize::LargeInput,
        );
    });
    g.finish();
}

fn one_change(c: &mut Criterion) {
    let mut desired = services(10_000);
    let mut lb = LbManager::new(LbConfig::default());
    lb.apply(&desired).expect("valid");
    let original = desired[5000].backends[0].clone();
    let replacement = Backend::new(addr(0xac20_0000, 8080));
    let mut flip = false;
    let mut g = c.benchmark_group("lb_one_backend_change_10k");
    g.sample_size(10);
    g.bench_function("baseline", |b| {
        b.iter(|| {
            flip = !flip;
            desired[5000].backends[0] = if flip {
                replacement.clone()
            } else {
                original.clone()
            };
            black_box(lb.apply(&desired).expect("valid"));
        });
    });
    g.bench_function("ours", |b| {
        b.iter(|| {
            flip = !flip;
            desired[5000].backends[0] = if flip {
                replacement.clone()
            } else {
                original.clone()
            };
            black_box(lb.upsert(&desired[5000]).expect("valid"));
        });
    });
    g.finish();
}

criterion_group!(benches, translate, one_change);
criterion_main!(benches);
