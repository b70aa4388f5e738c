// SPDX-License-Identifier: Apache-2.0

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cilium_core::{LabelSet, ManualClock, NumericIdentity};
use proptest::prelude::*;

use crate::*;

/// Runs a future whose every await is ready at once (the in-memory backend's).
fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("in-memory futures are always ready"),
    }
}

fn labels(items: &[&str]) -> LabelSet {
    LabelSet::parse_list(items).unwrap()
}

type Alloc = IdentityAllocator<MemoryBackend, Arc<ManualClock>>;

fn alloc_with(backend: MemoryBackend, grace: u64) -> (Alloc, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new());
    let a = IdentityAllocator::with_clock(
        backend,
        AllocatorConfig::with_grace(Duration::from_secs(grace)),
        clock.clone(),
    );
    (a, clock)
}

#[test]
fn reserved_sets_do_not_allocate() {
    let (a, _) = alloc_with(MemoryBackend::new(0), 0);
    let cases = [
        (vec!["reserved:host"], NumericIdentity::HOST),
        (
            vec!["reserved:host", "k8s:node-role.kubernetes.io/control-plane"],
            NumericIdentity::HOST,
        ),
        (vec!["reserved:world"], NumericIdentity::WORLD),
        (vec!["reserved:health"], NumericIdentity::HEALTH),
        (vec!["reserved:init"], NumericIdentity::INIT),
        (vec!["reserved:remote-node"], NumericIdentity::REMOTE_NODE),
        (
            vec!["reserved:remote-node", "reserved:kube-apiserver"],
            NumericIdentity::KUBE_APISERVER,
        ),
        (
            vec!["reserved:kube-apiserver"],
            NumericIdentity::KUBE_APISERVER,
        ),
        (vec!["reserved:ingress"], NumericIdentity::INGRESS),
        (vec!["reserved:world-ipv6"], NumericIdentity::WORLD_IPV6),
    ];
    for (items, want) in cases {
        let got = block_on(a.acquire(&labels(&items))).unwrap();
        assert_eq!(got.identity.id, want, "{items:?}");
        assert!(!got.is_new);
        assert_eq!(a.release(want), Ok(false));
    }
    assert!(a.is_empty());
    assert!(block_on(a.backend().list()).unwrap().is_empty());
    assert_eq!(
        reserved_labels(NumericIdentity::KUBE_APISERVER)
            .unwrap()
            .to_string(),
        "reserved:kube-apiserver=;reserved:remote-node=;"
    );
}

#[test]
fn seed_pods_get_stable_global_identities() {
    let (a, _) = alloc_with(MemoryBackend::new(0), 0);
    let curl = labels(&["k8s:app=curl", "k8s:io.kubernetes.pod.namespace=default"]);
    let web = labels(&["k8s:app=webpod", "k8s:io.kubernetes.pod.namespace=default"]);
    let c = block_on(a.acquire(&curl)).unwrap().identity.id;
    let w1 = block_on(a.acquire(&web)).unwrap().identity.id;
    let w2 = block_on(a.acquire(&web)).unwrap().identity.id;
    assert_eq!(w1, w2);
    assert_ne!(c, w1);
    assert!(c.get() >= 256 && w1.get() <= 65535);
    assert_eq!(a.refcount(w1), Some(2));
    assert_eq!(block_on(a.lookup_by_labels(&web)).unwrap(), Some(w1));
    let got = block_on(a.lookup_by_id(c)).unwrap().unwrap();
    assert_eq!(*got.labels, curl);
    let all = block_on(a.list()).unwrap();
    assert_eq!(all.len(), 10 + 2);
    assert_eq!(all[0].id, NumericIdentity::HOST);
}

#[test]
fn local_identities_carry_the_flag() {
    let (a, clock) = alloc_with(MemoryBackend::new(0), 5);
    let cidr = labels(&["cidr:10.0.0.0/8", "reserved:world"]);
    let got = block_on(a.acquire(&cidr)).unwrap();
    assert!(got.identity.id.is_local());
    assert_eq!(got.identity.id.get(), (1 << 24) | 1);
    assert!(block_on(a.backend().list()).unwrap().is_empty());
    assert!(a.release(got.identity.id).unwrap());
    clock.advance(Duration::from_secs(5));
    assert_eq!(block_on(a.gc()).unwrap().len(), 1);
    assert_eq!(block_on(a.lookup_by_labels(&cidr)).unwrap(), None);
}

#[test]
fn refcounts_never_go_negative() {
    let (a, _) = alloc_with(MemoryBackend::new(0), 0);
    let l = labels(&["k8s:app=x"]);
    let id = block_on(a.acquire(&l)).unwrap().identity.id;
    assert_eq!(a.release(id), Ok(true));
    assert_eq!(a.release(id), Err(IdentityError::NotInUse { id }));
    let other = NumericIdentity::new(999);
    assert_eq!(a.release(other), Err(IdentityError::NotFound { id: other }));
    assert_eq!(
        block_on(a.acquire(&LabelSet::new())),
        Err(IdentityError::EmptyLabels)
    );
}

#[test]
fn gc_waits_for_the_grace_period_and_spares_reacquired() {
    let (a, clock) = alloc_with(MemoryBackend::new(0), 30);
    let x = labels(&["k8s:app=x"]);
    let y = labels(&["k8s:app=y"]);
    let ix = block_on(a.acquire(&x)).unwrap().identity.id;
    let iy = block_on(a.acquire(&y)).unwrap().identity.id;
    a.release(ix).unwrap();
    a.release(iy).unwrap();
    clock.advance(Duration::from_secs(29));
    assert!(block_on(a.gc()).unwrap().is_empty());
    // y comes back before its grace period ends: same number, not collected.
    let again = block_on(a.acquire(&y)).unwrap();
    assert_eq!(again.identity.id, iy);
    assert!(!again.is_new);
    clock.advance(Duration::from_secs(1));
    let gone = block_on(a.gc()).unwrap();
    assert_eq!(gone.iter().map(|i| i.id).collect::<Vec<_>>(), vec![ix]);
    assert_eq!(block_on(a.backend().lookup(&x)).unwrap(), None);
    assert_eq!(block_on(a.backend().lookup(&y)).unwrap(), Some(iy));
}

#[test]
fn exhaustion_is_an_error_and_gc_frees() {
    let (a, _) = alloc_with(MemoryBackend::with_range(256, 258), 0);
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            block_on(a.acquire(&labels(&[&format!("k8s:n={i}")])))
                .unwrap()
                .identity
                .id,
        );
    }
    let err = block_on(a.acquire(&labels(&["k8s:n=3"]))).unwrap_err();
    assert_eq!(err, IdentityError::Exhausted { min: 256, max: 258 });
    assert_eq!(a.len(), 3);
    a.release(ids[1]).unwrap();
    block_on(a.gc()).unwrap();
    assert_eq!(
        block_on(a.acquire(&labels(&["k8s:n=3"])))
            .unwrap()
            .identity
            .id,
        ids[1]
    );
}

#[test]
fn out_of_range_backend_is_rejected() {
    // A backend configured for cluster 1 behind an allocator for cluster 0.
    let (a, _) = alloc_with(MemoryBackend::new(1), 0);
    let err = block_on(a.acquire(&labels(&["k8s:app=x"]))).unwrap_err();
    assert!(matches!(err, IdentityError::OutOfRange { .. }));
    assert!(block_on(a.backend().list()).unwrap().is_empty());
    assert!(a.is_empty());
}

#[test]
fn nodes_sharing_a_backend_agree() {
    // Two allocators (two nodes) over one backend, racing from threads.
    let backend = Arc::new(MemoryBackend::new(0));
    struct Shared(Arc<MemoryBackend>);
    impl IdentityBackend for Shared {
        fn allocate(
            &self,
            l: &LabelSet,
        ) -> impl Future<Output = Result<NumericIdentity, IdentityError>> + Send {
            self.0.allocate(l)
        }
        fn release(
            &self,
            l: &LabelSet,
            id: NumericIdentity,
        ) -> impl Future<Output = Result<(), IdentityError>> + Send {
            self.0.release(l, id)
        }
        fn lookup(
            &self,
            l: &LabelSet,
        ) -> impl Future<Output = Result<Option<NumericIdentity>, IdentityError>> + Send {
            self.0.lookup(l)
        }
        fn lookup_by_id(
            &self,
            id: NumericIdentity,
        ) -> impl Future<Output = Result<Option<LabelSet>, IdentityError>> + Send {
            self.0.lookup_by_id(id)
        }
        fn list(
            &self,
        ) -> impl Future<Output = Result<Vec<(NumericIdentity, LabelSet)>, IdentityError>> + Send
        {
            self.0.list()
        }
    }
    let results: Vec<HashMap<String, NumericIdentity>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let b = backend.clone();
                s.spawn(move || {
                    let (a, _) = alloc_with_shared(Shared(b));
                    (0..200)
                        .map(|i| {
                            let l = labels(&[&format!("k8s:app=a{}", i % 50)]);
                            let id = block_on(a.acquire(&l)).unwrap().identity.id;
                            (l.to_string(), id)
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results[0], results[1]);
    assert_eq!(block_on(backend.list()).unwrap().len(), 50);

    fn alloc_with_shared<B: IdentityBackend>(b: B) -> (IdentityAllocator<B, Arc<ManualClock>>, ()) {
        (
            IdentityAllocator::with_clock(
                b,
                AllocatorConfig::default(),
                Arc::new(ManualClock::new()),
            ),
            (),
        )
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Same labels, same identity; different labels, different identities; refcounts match
    /// a model; reserved label sets never allocate.
    #[test]
    fn allocator_matches_model(ops in proptest::collection::vec((0u8..4, 0u8..12), 1..200)) {
        let (a, clock) = alloc_with(MemoryBackend::with_range(256, 270), 10);
        let mut refs: HashMap<u8, u64> = HashMap::new();
        let mut ids: HashMap<u8, NumericIdentity> = HashMap::new();
        let set = |n: u8| if n == 11 { labels(&["reserved:health"]) } else { labels(&[&format!("k8s:app=p{n}")]) };
        for (op, n) in ops {
            match op {
                0 | 1 => {
                    let got = block_on(a.acquire(&set(n))).unwrap().identity.id;
                    if n == 11 {
                        prop_assert_eq!(got, NumericIdentity::HEALTH);
                        continue;
                    }
                    if let Some(prev) = ids.get(&n) { prop_assert_eq!(*prev, got); }
                    for (other, oid) in &ids { if *other != n { prop_assert_ne!(*oid, got); } }
                    ids.insert(n, got);
                    *refs.entry(n).or_default() += 1;
                }
                2 => {
                    if let Some(id) = ids.get(&n).copied() {
                        let r = refs.get_mut(&n).unwrap();
                        let res = a.release(id);
                        if *r == 0 { prop_assert!(res.is_err()); } else { *r -= 1; prop_assert_eq!(res.unwrap(), *r == 0); }
                    }
                }
                _ => {
                    clock.advance(Duration::from_secs(u64::from(n)));
                    for gone in block_on(a.gc()).unwrap() {
                        let key = ids.iter().find(|(_, v)| **v == gone.id).map(|(k, _)| *k).unwrap();
                        prop_assert_eq!(refs[&key], 0);
                        ids.remove(&key);
                        refs.remove(&key);
                    }
                }
            }
            for (n, r) in &refs {
                prop_assert_eq!(a.refcount(ids[n]), Some(*r));
            }
        }
    }
}

/// A fresh file store path under the temporary directory.
fn store_path(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("crs-idkv-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("store.log")
}

#[test]
fn kv_backend_keeps_numbers_across_reopen() {
    use cilium_core::kvstore::FileStore;
    let path = store_path("reopen");
    let (web, curl) = (
        labels(&["k8s:app=web", "k8s:io.kubernetes.pod.namespace=default"]),
        labels(&["k8s:app=curl", "k8s:io.kubernetes.pod.namespace=default"]),
    );
    let (w, c) = {
        let b = KvBackend::new(FileStore::open(&path).unwrap(), "node1", 256, 65535);
        let w = block_on(b.allocate(&web)).unwrap();
        let c = block_on(b.allocate(&curl)).unwrap();
        assert_ne!(w, c);
        assert_eq!(
            block_on(b.allocate(&web)).unwrap(),
            w,
            "same labels, same number"
        );
        (w, c)
    };
    // A new session: the old registrations (session keys) are gone, the numbers are not.
    let b = KvBackend::new(FileStore::open(&path).unwrap(), "node1", 256, 65535);
    assert_eq!(block_on(b.registrations()).unwrap(), vec![]);
    assert_eq!(block_on(b.lookup(&curl)).unwrap(), Some(c));
    assert_eq!(block_on(b.allocate(&web)).unwrap(), w);
    assert_eq!(block_on(b.lookup_by_id(c)).unwrap(), Some(curl.clone()));
    assert_eq!(block_on(b.registrations()).unwrap(), vec![(web.clone(), w)]);
    // curl's number has no user any more: it can be collected, web's cannot.
    assert_eq!(block_on(b.unused()).unwrap(), vec![(c, curl.clone())]);
    assert!(!block_on(b.remove_if_unused(w, &web)).unwrap());
    assert!(block_on(b.remove_if_unused(c, &curl)).unwrap());
    assert_eq!(block_on(b.lookup(&curl)).unwrap(), None);
    assert_eq!(block_on(b.lookup_by_id(c)).unwrap(), None);
    assert_eq!(block_on(b.list()).unwrap(), vec![(w, web.clone())]);
    // Released by its only user: the number is gone and may be reused.
    block_on(b.release(&web, w)).unwrap();
    assert_eq!(block_on(b.lookup(&web)).unwrap(), None);
    assert_eq!(block_on(b.list()).unwrap(), vec![]);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn kv_backend_second_node_shares_the_number_and_keeps_it_alive() {
    use cilium_core::kvstore::FileStore;
    let path = store_path("nodes");
    let store = Arc::new(FileStore::open(&path).unwrap());
    let a = KvBackend::new(store.clone(), "a", 256, 260);
    let b = KvBackend::new(store, "b", 256, 260);
    let web = labels(&["k8s:app=web"]);
    let id = block_on(a.allocate(&web)).unwrap();
    assert_eq!(block_on(b.allocate(&web)).unwrap(), id);
    block_on(a.release(&web, id)).unwrap();
    assert_eq!(block_on(b.lookup_by_id(id)).unwrap(), Some(web.clone()));
    // The range is small: it fills and says so.
    for i in 0..4 {
        block_on(a.allocate(&labels(&[&format!("k8s:n={i}")]))).unwrap();
    }
    assert!(matches!(
        block_on(a.allocate(&labels(&["k8s:n=last"]))),
        Err(IdentityError::Exhausted { min: 256, max: 260 })
    ));
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}
