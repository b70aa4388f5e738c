// SPDX-License-Identifier: Apache-2.0

//! The node's identity allocator: a reference-counted cache in front of a backend.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use cilium_core::labels::source;
use cilium_core::{Clock, IdPool, Label, LabelSet, MonotonicClock, NumericIdentity};
use serde::{Deserialize, Serialize};

use crate::{IdentityBackend, IdentityError};

/// A numeric identity and the labels it stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The number.
    pub id: NumericIdentity,
    /// The (identity-relevant) labels.
    pub labels: Arc<LabelSet>,
}

/// The result of [`IdentityAllocator::acquire`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acquired {
    /// The identity.
    pub identity: Identity,
    /// Whether this node started using it with this call (its first user here).
    pub is_new: bool,
}

/// Settings of an [`IdentityAllocator`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct AllocatorConfig {
    /// The cluster id (0-255): fixes the global range.
    pub cluster_id: u8,
    /// How long an identity with no users is kept before [`IdentityAllocator::gc`] collects
    /// it (a pod restarting within the grace period keeps its identity).
    pub gc_grace: Duration,
}

impl Default for AllocatorConfig {
    fn default() -> Self {
        AllocatorConfig {
            cluster_id: 0,
            gc_grace: Duration::from_secs(60),
        }
    }
}

impl AllocatorConfig {
    /// Cluster 0 with the given grace period.
    pub fn with_grace(gc_grace: Duration) -> Self {
        AllocatorConfig {
            gc_grace,
            ..Self::default()
        }
    }
}

#[derive(Debug)]
struct Entry {
    labels: Arc<LabelSet>,
    refs: u64,
    unused_since: Option<Duration>,
}

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Debug, Default)]
struct State {
    entries: FastMap<NumericIdentity, Entry>,
    by_labels: FastMap<Arc<LabelSet>, NumericIdentity>,
    /// Identities with no users, by the time they became unused.
    unused: BTreeSet<(Duration, NumericIdentity)>,
    /// Node-local (CIDR/FQDN) identity indexes; created on first use.
    local_pool: Option<IdPool>,
}

/// Maps label sets to identities: reserved label sets to reserved identities, CIDR/FQDN
/// label sets to node-local identities (`1 << 24` set), everything else to global identities
/// from the backend. Each identity counts its users; one with no users is collected by
/// [`gc`](Self::gc) once the grace period has passed.
///
/// ```
/// use cilium_core::LabelSet;
/// use cilium_identity::{AllocatorConfig, IdentityAllocator, MemoryBackend};
///
/// # tokio_test_block_on(async {
/// let alloc = IdentityAllocator::new(MemoryBackend::new(0), AllocatorConfig::default());
/// let web = LabelSet::parse_list(&["k8s:app=webpod", "k8s:io.kubernetes.pod.namespace=default"]).unwrap();
/// let a = alloc.acquire(&web).await.unwrap();
/// let b = alloc.acquire(&web).await.unwrap();
/// assert_eq!(a.identity.id, b.identity.id);
/// assert!(a.is_new && !b.is_new);
/// assert_eq!(alloc.refcount(a.identity.id), Some(2));
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     let mut f = std::pin::pin!(f);
/// #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
/// #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
/// # }
/// ```
#[derive(Debug)]
pub struct IdentityAllocator<B, C = MonotonicClock> {
    backend: B,
    clock: C,
    config: AllocatorConfig,
    min: NumericIdentity,
    max: NumericIdentity,
    state: Mutex<State>,
}

/// The reserved identity a label set stands for, as Cilium's
/// `LookupReservedIdentityByLabels`: `reserved:host` anywhere means host;
/// `reserved:remote-node` means remote-node, or kube-apiserver with
/// `reserved:kube-apiserver`; otherwise a set of exactly one `reserved:<name>` label.
pub fn reserved_identity(labels: &LabelSet) -> Option<NumericIdentity> {
    if !labels.has_source(source::RESERVED) {
        return None;
    }
    let has = |name: &str| {
        labels
            .get(name)
            .is_some_and(|l| l.source() == source::RESERVED)
    };
    if has("host") {
        return Some(NumericIdentity::HOST);
    }
    if has("remote-node") {
        return Some(if has("kube-apiserver") {
            NumericIdentity::KUBE_APISERVER
        } else {
            NumericIdentity::REMOTE_NODE
        });
    }
    if labels.len() != 1 {
        return None;
    }
    let only = labels.iter().next()?;
    NumericIdentity::from_reserved_name(only.key()).filter(|id| *id != NumericIdentity::UNKNOWN)
}

/// The labels of a reserved identity (`reserved:<name>`; kube-apiserver also carries
/// `reserved:remote-node`).
pub fn reserved_labels(id: NumericIdentity) -> Option<LabelSet> {
    let name = id.reserved_name().filter(|_| id.is_reserved())?;
    let mut set = LabelSet::new();
    set.insert(Label::reserved(name).expect("reserved names are valid keys"));
    if id == NumericIdentity::KUBE_APISERVER {
        set.insert(Label::reserved("remote-node").expect("valid key"));
    }
    Some(set)
}

/// Whether a label set gets a node-local identity: every label is of source `cidr`, `fqdn`,
/// `cidrgroup` or `reserved` (Cilium's `ScopeForLabels`).
pub fn is_local_scope(labels: &LabelSet) -> bool {
    !labels.is_empty()
        && labels
            .iter()
            .all(|l| cilium_core::is_local_source(l.source()) || l.source() == source::RESERVED)
}

impl<B: IdentityBackend> IdentityAllocator<B, MonotonicClock> {
    /// An allocator over `backend` using the machine's monotonic clock.
    pub fn new(backend: B, config: AllocatorConfig) -> Self {
        Self::with_clock(backend, config, MonotonicClock::new())
    }
}

impl<B: IdentityBackend, C: Clock> IdentityAllocator<B, C> {
    /// An allocator with an injected clock (use `cilium_core::ManualClock` in tests).
    pub fn with_clock(backend: B, config: AllocatorConfig, clock: C) -> Self {
        let (min, max) = NumericIdentity::global_range(config.cluster_id);
        IdentityAllocator {
            backend,
            clock,
            config,
            min,
            max,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section below finishes its updates before anything that could
        // panic, so a poisoned lock still guards consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The configuration.
    pub fn config(&self) -> &AllocatorConfig {
        &self.config
    }

    /// The global range `[min, max]` of this cluster.
    pub fn global_range(&self) -> (NumericIdentity, NumericIdentity) {
        (self.min, self.max)
    }

    /// Takes a reference on the identity of `labels`, allocating it if needed. Reserved
    /// label sets give their reserved identity and are not counted.
    pub async fn acquire(&self, labels: &LabelSet) -> Result<Acquired, IdentityError> {
        if labels.is_empty() {
            return Err(IdentityError::EmptyLabels);
        }
        if let Some(id) = reserved_identity(labels) {
            return Ok(Acquired {
                identity: Identity {
                    id,
                    labels: Arc::new(labels.clone()),
                },
                is_new: false,
            });
        }
        if let Some(found) = self.acquire_cached(labels) {
            return Ok(found);
        }
        if is_local_scope(labels) {
            return self.acquire_local(labels);
        }
        let id = self.backend.allocate(labels).await?;
        if id < self.min || id > self.max {
            // Undo the registration: the backend is misconfigured for this cluster.
            let _ = self.backend.release(labels, id).await;
            return Err(IdentityError::OutOfRange {
                id,
                min: self.min,
                max: self.max,
            });
        }
        let raced = {
            let mut st = self.lock();
            if let Some(found) = Self::bump(&mut st, labels) {
                Some(found)
            } else {
                Self::insert(&mut st, id, labels);
                None
            }
        };
        match raced {
            // Another acquire of the same labels finished first: keep its entry and drop
            // the extra registration this call made in the backend.
            Some(found) => {
                self.backend.release(labels, id).await?;
                Ok(found)
            }
            None => Ok(Acquired {
                identity: Identity {
                    id,
                    labels: Arc::new(labels.clone()),
                },
                is_new: true,
            }),
        }
    }

    fn acquire_cached(&self, labels: &LabelSet) -> Option<Acquired> {
        Self::bump(&mut self.lock(), labels)
    }

    /// Adds a reference to a cached identity.
    fn bump(st: &mut State, labels: &LabelSet) -> Option<Acquired> {
        let id = *st.by_labels.get(labels)?;
        let entry = st
            .entries
            .get_mut(&id)
            .expect("by_labels and entries agree");
        entry.refs += 1;
        if let Some(since) = entry.unused_since.take() {
            st.unused.remove(&(since, id));
        }
        Some(Acquired {
            identity: Identity {
                id,
                labels: entry.labels.clone(),
            },
            is_new: false,
        })
    }

    fn insert(st: &mut State, id: NumericIdentity, labels: &LabelSet) {
        let labels = Arc::new(labels.clone());
        st.by_labels.insert(labels.clone(), id);
        st.entries.insert(
            id,
            Entry {
                labels,
                refs: 1,
                unused_since: None,
            },
        );
    }

    fn acquire_local(&self, labels: &LabelSet) -> Result<Acquired, IdentityError> {
        let mut st = self.lock();
        if let Some(found) = Self::bump(&mut st, labels) {
            return Ok(found);
        }
        let pool = st
            .local_pool
            .get_or_insert_with(|| IdPool::new(NumericIdentity::MAX_LOCAL_INDEX));
        let Some(idx) = pool.allocate_next() else {
            return Err(IdentityError::Exhausted {
                min: NumericIdentity::LOCAL_IDENTITY_FLAG | 1,
                max: NumericIdentity::LOCAL_IDENTITY_FLAG | NumericIdentity::MAX_LOCAL_INDEX,
            });
        };
        let id = NumericIdentity::local(idx + 1).expect("index within the local range");
        Self::insert(&mut st, id, labels);
        Ok(Acquired {
            identity: Identity {
                id,
                labels: Arc::new(labels.clone()),
            },
            is_new: true,
        })
    }

    /// Drops one reference. Returns true when the identity has no users left (it will be
    /// collected after the grace period). Reserved identities are not counted: releasing
    /// one does nothing. Releasing more often than acquiring is an error.
    pub fn release(&self, id: NumericIdentity) -> Result<bool, IdentityError> {
        if id.is_reserved() {
            return Ok(false);
        }
        let now = self.clock.now();
        let mut st = self.lock();
        let entry = st
            .entries
            .get_mut(&id)
            .ok_or(IdentityError::NotFound { id })?;
        if entry.refs == 0 {
            return Err(IdentityError::NotInUse { id });
        }
        entry.refs -= 1;
        if entry.refs > 0 {
            return Ok(false);
        }
        entry.unused_since = Some(now);
        st.unused.insert((now, id));
        Ok(true)
    }

    /// Collects identities that have had no users for the grace period: local ones return
    /// to the local pool, global ones are released in the backend. Returns what was
    /// collected.
    pub async fn gc(&self) -> Result<Vec<Identity>, IdentityError> {
        let now = self.clock.now();
        let grace = self.config.gc_grace;
        let collected: Vec<Identity> = {
            let mut st = self.lock();
            let mut out = Vec::new();
            while let Some(&(since, id)) = st.unused.first() {
                if since + grace > now {
                    break;
                }
                st.unused.pop_first();
                let entry = st.entries.remove(&id).expect("unused entries exist");
                st.by_labels.remove(&entry.labels);
                if id.is_local()
                    && let Some(pool) = st.local_pool.as_mut()
                {
                    pool.put((id.get() & NumericIdentity::MAX_LOCAL_INDEX) - 1);
                }
                out.push(Identity {
                    id,
                    labels: entry.labels,
                });
            }
            out
        };
        let mut done = Vec::with_capacity(collected.len());
        let mut pending = collected.into_iter();
        while let Some(ident) = pending.next() {
            if ident.id.is_local() {
                done.push(ident);
                continue;
            }
            if let Err(e) = self.backend.release(&ident.labels, ident.id).await {
                // Keep what could not be released so the next run retries it.
                let mut st = self.lock();
                for back in std::iter::once(ident).chain(pending) {
                    if back.id.is_local() || st.by_labels.contains_key(&back.labels) {
                        continue;
                    }
                    st.by_labels.insert(back.labels.clone(), back.id);
                    st.entries.insert(
                        back.id,
                        Entry {
                            labels: back.labels,
                            refs: 0,
                            unused_since: Some(now),
                        },
                    );
                    st.unused.insert((now, back.id));
                }
                return Err(e);
            }
            done.push(ident);
        }
        Ok(done)
    }

    /// The number of users of an identity on this node (`None` if not held here).
    pub fn refcount(&self, id: NumericIdentity) -> Option<u64> {
        self.lock().entries.get(&id).map(|e| e.refs)
    }

    /// Number of identities held on this node (in use or waiting for GC).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether no identity is held on this node.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The identity of a label set: reserved, held here, or known to the backend.
    pub async fn lookup_by_labels(
        &self,
        labels: &LabelSet,
    ) -> Result<Option<NumericIdentity>, IdentityError> {
        if let Some(id) = reserved_identity(labels) {
            return Ok(Some(id));
        }
        if let Some(id) = self.lock().by_labels.get(labels) {
            return Ok(Some(*id));
        }
        if is_local_scope(labels) {
            return Ok(None);
        }
        self.backend.lookup(labels).await
    }

    /// The identity with this number: reserved, held here, or known to the backend.
    pub async fn lookup_by_id(
        &self,
        id: NumericIdentity,
    ) -> Result<Option<Identity>, IdentityError> {
        if let Some(labels) = reserved_labels(id) {
            return Ok(Some(Identity {
                id,
                labels: Arc::new(labels),
            }));
        }
        if let Some(e) = self.lock().entries.get(&id) {
            return Ok(Some(Identity {
                id,
                labels: e.labels.clone(),
            }));
        }
        if id.is_local() {
            return Ok(None);
        }
        Ok(self.backend.lookup_by_id(id).await?.map(|labels| Identity {
            id,
            labels: Arc::new(labels),
        }))
    }

    /// Every identity: the reserved ones, the backend's, and this node's local ones, sorted
    /// by number.
    pub async fn list(&self) -> Result<Vec<Identity>, IdentityError> {
        let mut out: Vec<Identity> = NumericIdentity::reserved()
            .filter_map(|(id, _)| {
                reserved_labels(id).map(|l| Identity {
                    id,
                    labels: Arc::new(l),
                })
            })
            .collect();
        for (id, labels) in self.backend.list().await? {
            out.push(Identity {
                id,
                labels: Arc::new(labels),
            });
        }
        {
            let st = self.lock();
            out.extend(
                st.entries
                    .iter()
                    .filter(|(id, _)| id.is_local())
                    .map(|(id, e)| Identity {
                        id: *id,
                        labels: e.labels.clone(),
                    }),
            );
        }
        out.sort_by_key(|i| i.id);
        out.dedup_by_key(|i| i.id);
        Ok(out)
    }
}
