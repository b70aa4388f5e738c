// SPDX-License-Identifier: Apache-2.0

//! Identity allocation at Cilium's pain points (issues #22984: 0.5 s per allocation with
//! ~60k identities on 2 vCPUs; #34512: GC at ~5 identities/s).
//!
//! - `identity_acquire_60k/existing`: acquire + release of a label set already held, with
//!   60,000 identities present.
//! - `identity_acquire_60k/new`: acquire a new label set (backend allocation), release it and
//!   collect it, with 60,000 identities present.
//! - `identity_gc_10k`: collect 10,000 unused identities in one GC run.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use cilium_benches::ready;
use cilium_core::{LabelSet, ManualClock};
use cilium_identity::{AllocatorConfig, IdentityAllocator, MemoryBackend};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

fn pod_labels(i: usize) -> LabelSet {
    LabelSet::parse_list(&[
        format!("k8s:app=app-{i}"),
        "k8s:io.kubernetes.pod.namespace=default".to_owned(),
        "k8s:io.cilium.k8s.policy.cluster=default".to_owned(),
        "k8s:io.cilium.k8s.policy.serviceaccount=default".to_owned(),
    ])
    .expect("valid labels")
}

type Alloc = IdentityAllocator<MemoryBackend, Arc<ManualClock>>;

fn allocator(grace: Duration) -> (Alloc, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new());
    let alloc = IdentityAllocator::with_clock(
        MemoryBackend::new(0),
        AllocatorConfig::with_grace(grace),
        clock.clone(),
    );
    (alloc, clock)
}

fn acquire(c: &mut Criterion) {
    let (alloc, _clock) = allocator(Duration::ZERO);
    for i in 0..60_000 {
        ready(alloc.acquire(&pod_labels(i))).expect("room");
    }
    let existing = pod_labels(31_337);
    let fresh = pod_labels(1_000_000);
    let mut g = c.benchmark_group("identity_acquire_60k");
    g.bench_function("existing", |b| {
        b.iter(|| {
            let got = ready(alloc.acquire(black_box(&existing))).expect("held");
            alloc.release(got.identity.id).expect("held");
        });
    });
    g.bench_function("new", |b| {
        b.iter(|| {
            let got = ready(alloc.acquire(black_box(&fresh))).expect("room");
            alloc.release(got.identity.id).expect("held");
            ready(alloc.gc()).expect("gc");
        });
    });
    g.finish();
}

fn gc(c: &mut Criterion) {
    let labels: Vec<LabelSet> = (0..10_000).map(pod_labels).collect();
    let mut g = c.benchmark_group("identity_gc_10k");
    g.sample_size(20);
    g.bench_function("ours", |b| {
        b.iter_batched(
            || {
                let (alloc, clock) = allocator(Duration::from_secs(1));
                for l in &labels {
                    let id = ready(alloc.acquire(l)).expect("room").identity.id;
                    alloc.release(id).expect("held");
                }
                clock.advance(Duration::from_secs(2));
                alloc
            },
            |alloc| {
                let gone = ready(alloc.gc()).expect("gc");
                assert_eq!(gone.len(), 10_000);
                alloc
            },
            BatchSize::LargeInput,
        );
    });
    g.finish();
}

criterion_group!(benches, acquire, gc);
criterion_main!(benches);
