// SPDX-License-Identifier: Apache-2.0

//! Where global identities live: the [`IdentityBackend`] trait and the in-memory backend.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use cilium_core::{IdPool, LabelSet, NumericIdentity};

use crate::IdentityError;

/// The store of global identities, shared by every node of a cluster.
///
/// The model is Cilium's kvstore allocator: an identity is created once per label set (the
/// "master" key, `id/<ID> -> labels`) and each node that uses it registers itself (a "value"
/// key per node). [`allocate`](Self::allocate) registers this node and returns the label
/// set's identity, creating it if needed; [`release`](Self::release) removes this node's
/// registration, and the identity itself goes away when no node uses it. Every node must get
/// the same number for the same labels, even when several allocate at once.
///
/// Methods are async so that networked backends (etcd) fit without changing callers; the
/// in-memory backend's futures are ready at once.
pub trait IdentityBackend: Send + Sync {
    /// Registers this node as a user of `labels`' identity, creating the identity if needed.
    fn allocate(
        &self,
        labels: &LabelSet,
    ) -> impl Future<Output = Result<NumericIdentity, IdentityError>> + Send;

    /// Removes this node's registration of `labels`' identity.
    fn release(
        &self,
        labels: &LabelSet,
        id: NumericIdentity,
    ) -> impl Future<Output = Result<(), IdentityError>> + Send;

    /// The identity of `labels`, if one exists (allocated by any node).
    fn lookup(
        &self,
        labels: &LabelSet,
    ) -> impl Future<Output = Result<Option<NumericIdentity>, IdentityError>> + Send;

    /// The labels of an identity, if it exists.
    fn lookup_by_id(
        &self,
        id: NumericIdentity,
    ) -> impl Future<Output = Result<Option<LabelSet>, IdentityError>> + Send;

    /// Every identity in the store.
    fn list(
        &self,
    ) -> impl Future<Output = Result<Vec<(NumericIdentity, LabelSet)>, IdentityError>> + Send;
}

/// A backend held in this process: for a single node, tests, and tools.
///
/// Identities are taken next-fit from the cluster's global range (`[256, 65535]` for
/// cluster 0), and freed when their last registration is released.
///
/// ```
/// use cilium_identity::MemoryBackend;
/// let backend = MemoryBackend::new(0);
/// assert_eq!(backend.range(), (256, 65535));
/// ```
#[derive(Debug)]
pub struct MemoryBackend {
    min: u32,
    max: u32,
    state: Mutex<MemState>,
}

#[derive(Debug)]
struct MemState {
    by_labels: HashMap<Arc<LabelSet>, (NumericIdentity, u64), foldhash::fast::RandomState>,
    by_id: HashMap<NumericIdentity, Arc<LabelSet>, foldhash::fast::RandomState>,
    pool: IdPool,
}

impl MemoryBackend {
    /// A backend allocating from the global range of `cluster_id`.
    pub fn new(cluster_id: u8) -> Self {
        let (min, max) = NumericIdentity::global_range(cluster_id);
        Self::with_range(min.get(), max.get())
    }

    /// A backend allocating from `[min, max]` (a smaller range makes exhaustion testable).
    /// An empty range (`min > max`) gives a backend that can allocate nothing.
    pub fn with_range(min: u32, max: u32) -> Self {
        let len = if min > max { 0 } else { max - min + 1 };
        MemoryBackend {
            min,
            max,
            state: Mutex::new(MemState {
                by_labels: HashMap::default(),
                by_id: HashMap::default(),
                pool: IdPool::new(len),
            }),
        }
    }

    /// The range `[min, max]` identities are taken from.
    pub fn range(&self) -> (u32, u32) {
        (self.min, self.max)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemState> {
        // A panic while holding the lock cannot leave the maps half-updated (each update
        // is done before any call that could panic), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn allocate_now(&self, labels: &LabelSet) -> Result<NumericIdentity, IdentityError> {
        let mut st = self.lock();
        if let Some((id, users)) = st.by_labels.get_mut(labels) {
            *users += 1;
            return Ok(*id);
        }
        let Some(idx) = st.pool.allocate_next() else {
            return Err(IdentityError::Exhausted {
                min: self.min,
                max: self.max,
            });
        };
        let id = NumericIdentity::new(self.min + idx);
        let labels = Arc::new(labels.clone());
        st.by_labels.insert(labels.clone(), (id, 1));
        st.by_id.insert(id, labels);
        Ok(id)
    }

    fn release_now(&self, labels: &LabelSet, id: NumericIdentity) -> Result<(), IdentityError> {
        let mut st = self.lock();
        let Some((held, users)) = st.by_labels.get_mut(labels) else {
            return Err(IdentityError::NotFound { id });
        };
        if *held != id {
            return Err(IdentityError::NotFound { id });
        }
        *users -= 1;
        if *users == 0 {
            st.by_labels.remove(labels);
            st.by_id.remove(&id);
            st.pool.put(id.get() - self.min);
        }
        Ok(())
    }
}

impl IdentityBackend for MemoryBackend {
    async fn allocate(&self, labels: &LabelSet) -> Result<NumericIdentity, IdentityError> {
        self.allocate_now(labels)
    }

    async fn release(&self, labels: &LabelSet, id: NumericIdentity) -> Result<(), IdentityError> {
        self.release_now(labels, id)
    }

    async fn lookup(&self, labels: &LabelSet) -> Result<Option<NumericIdentity>, IdentityError> {
        Ok(self.lock().by_labels.get(labels).map(|(id, _)| *id))
    }

    async fn lookup_by_id(&self, id: NumericIdentity) -> Result<Option<LabelSet>, IdentityError> {
        Ok(self.lock().by_id.get(&id).map(|l| (**l).clone()))
    }

    async fn list(&self) -> Result<Vec<(NumericIdentity, LabelSet)>, IdentityError> {
        let st = self.lock();
        let mut v: Vec<_> = st.by_id.iter().map(|(i, l)| (*i, (**l).clone())).collect();
        v.sort_by_key(|(i, _)| *i);
        Ok(v)
    }
}
