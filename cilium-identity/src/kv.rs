// SPDX-License-Identifier: Apache-2.0

//! An [`IdentityBackend`] on a [`KvStore`], with Cilium's kvstore key layout.
//!
//! - `cilium/state/identities/v1/id/<ID>` -> the label set's kvstore key form (the "master"
//!   key: which labels the number stands for);
//! - `cilium/state/identities/v1/value/<labels>/<node>` -> `<ID>` (one per node using it,
//!   a session key: it goes with the node's session lease);
//! - `cilium/state/identities/v1/locks/<labels>` -> a holder token (a session key), held
//!   while a node allocates or releases that label set's identity.
//!
//! Nodes sharing one store (etcd) agree on the numbers, as in Cilium's kvstore mode: under
//! the label set's lock a node looks for the identity (a value key of any node, else an
//! `id` key holding these labels), and only when there is none creates the next free `id`
//! key with `create_only`, so two nodes racing for the same labels get the same number and
//! two label sets never share one. Releasing the last user's registration deletes the `id`
//! key under the same lock. The `id` keys have no lease: a restarted node (whose value keys
//! went with its old session) finds its numbers again through them.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cilium_core::kvstore::{KvError, KvStore};
use cilium_core::{LabelSet, NumericIdentity};

use crate::{IdentityBackend, IdentityError};

/// The prefix of identity keys.
pub const IDENTITIES_PREFIX: &str = "cilium/state/identities/v1";

/// Identities kept in a [`KvStore`].
#[derive(Debug)]
pub struct KvBackend<S> {
    store: S,
    node: String,
    min: u32,
    max: u32,
    lock: tokio::sync::Mutex<u32>,
}

fn backend_err(operation: &'static str) -> impl FnOnce(KvError) -> IdentityError {
    move |e| IdentityError::Backend {
        operation,
        reason: e.to_string(),
    }
}

fn id_key(id: u32) -> String {
    format!("{IDENTITIES_PREFIX}/id/{id}")
}

fn value_prefix(labels: &LabelSet) -> String {
    format!("{IDENTITIES_PREFIX}/value/{}/", labels.kvstore_key())
}

fn lock_key(labels: &LabelSet) -> String {
    format!("{IDENTITIES_PREFIX}/locks/{}", labels.kvstore_key())
}

/// How long a node waits for another node's lock on a label set before giving up.
const LOCK_WAIT: Duration = Duration::from_secs(30);

/// Parses a label set from its kvstore key form (`k8s:a=b;k8s:c=d;`).
pub fn labels_from_kvstore_key(text: &str) -> Option<LabelSet> {
    let items: Vec<&str> = text.split(';').filter(|s| !s.is_empty()).collect();
    LabelSet::parse_list(&items).ok()
}

impl<S: KvStore> KvBackend<S> {
    /// A backend for `node` taking new identities from `[min, max]` (`[256, 65535]` for
    /// cluster 0).
    pub fn new(store: S, node: impl Into<String>, min: u32, max: u32) -> Self {
        KvBackend {
            store,
            node: node.into(),
            min,
            max,
            lock: tokio::sync::Mutex::new(min),
        }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Takes the cluster-wide lock of a label set; returns the token to release it with.
    async fn lock_labels(&self, labels: &LabelSet) -> Result<Vec<u8>, IdentityError> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let token = format!(
            "{}/{}/{}",
            self.node,
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        )
        .into_bytes();
        let key = lock_key(labels);
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(2);
        loop {
            if self
                .store
                .create_only_ephemeral(&key, &token)
                .await
                .map_err(backend_err("taking the label set's lock"))?
            {
                return Ok(token);
            }
            if started.elapsed() > LOCK_WAIT {
                return Err(IdentityError::Backend {
                    operation: "taking the label set's lock",
                    reason: format!("{key} held for more than {LOCK_WAIT:?}"),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    async fn unlock_labels(&self, labels: &LabelSet, token: &[u8]) {
        // Best effort: a lock that cannot be removed goes with this node's session.
        let _ = self.store.delete_if(&lock_key(labels), token).await;
    }

    /// Identities no node is registered as a user of (`id` keys without value keys), such
    /// as those of a node whose session ended before it came back.
    pub async fn unused(&self) -> Result<Vec<(NumericIdentity, LabelSet)>, IdentityError> {
        let values = self
            .store
            .list_prefix(&format!("{IDENTITIES_PREFIX}/value/"))
            .await
            .map_err(backend_err("listing registrations"))?;
        let used: BTreeSet<u32> = values
            .iter()
            .filter_map(|(_, v)| std::str::from_utf8(v).ok()?.parse().ok())
            .collect();
        Ok(self
            .list()
            .await?
            .into_iter()
            .filter(|(id, _)| !used.contains(&id.get()))
            .collect())
    }

    /// Deletes an identity if it is still unused (checked under its label set's lock);
    /// returns whether it did.
    pub async fn remove_if_unused(
        &self,
        id: NumericIdentity,
        labels: &LabelSet,
    ) -> Result<bool, IdentityError> {
        let token = self.lock_labels(labels).await?;
        let result = async {
            let users = self
                .store
                .list_prefix(&value_prefix(labels))
                .await
                .map_err(backend_err("looking up labels"))?;
            if !users.is_empty() {
                return Ok(false);
            }
            self.store
                .delete_if(&id_key(id.get()), labels.kvstore_key().as_bytes())
                .await
                .map_err(backend_err("deleting an identity"))
        }
        .await;
        self.unlock_labels(labels, &token).await;
        result
    }

    /// The identity of `labels` from the `id` keys (no node registered as a user).
    async fn find_master(&self, labels: &LabelSet) -> Result<Option<u32>, IdentityError> {
        let want = labels.kvstore_key();
        Ok(self
            .store
            .list_prefix(&format!("{IDENTITIES_PREFIX}/id/"))
            .await
            .map_err(backend_err("listing identities"))?
            .into_iter()
            .find(|(_, v)| v.as_slice() == want.as_bytes())
            .and_then(|(k, _)| k.rsplit('/').next().and_then(|n| n.parse().ok())))
    }

    /// The identities this node is registered as a user of (its value keys), as
    /// `(labels, id)`: after a restart, the ones no endpoint claims again can be released.
    pub async fn registrations(&self) -> Result<Vec<(LabelSet, NumericIdentity)>, IdentityError> {
        let prefix = format!("{IDENTITIES_PREFIX}/value/");
        let suffix = format!("/{}", self.node);
        let mut out = Vec::new();
        for (key, value) in self
            .store
            .list_prefix(&prefix)
            .await
            .map_err(backend_err("listing registrations"))?
        {
            let Some(labels) = key
                .strip_prefix(&prefix)
                .and_then(|k| k.strip_suffix(&suffix))
            else {
                continue;
            };
            let id = std::str::from_utf8(&value)
                .ok()
                .and_then(|v| v.parse::<u32>().ok());
            if let (Some(labels), Some(id)) = (labels_from_kvstore_key(labels), id) {
                out.push((labels, NumericIdentity::new(id)));
            }
        }
        Ok(out)
    }

    async fn find(&self, labels: &LabelSet) -> Result<Option<u32>, IdentityError> {
        let values = self
            .store
            .list_prefix(&value_prefix(labels))
            .await
            .map_err(backend_err("looking up labels"))?;
        for (_, v) in values {
            if let Some(id) = std::str::from_utf8(&v)
                .ok()
                .and_then(|s| s.parse::<u32>().ok())
            {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }
}

impl<S: KvStore> KvBackend<S> {
    async fn allocate_locked(&self, labels: &LabelSet) -> Result<u32, IdentityError> {
        let mut cursor = self.lock.lock().await;
        let found = match self.find(labels).await? {
            Some(id) => Some(id),
            None => self.find_master(labels).await?,
        };
        let id = match found {
            Some(id) => id,
            None => {
                let used: BTreeSet<u32> = self
                    .store
                    .list_prefix(&format!("{IDENTITIES_PREFIX}/id/"))
                    .await
                    .map_err(backend_err("listing identities"))?
                    .into_iter()
                    .filter_map(|(k, _)| k.rsplit('/').next().and_then(|n| n.parse().ok()))
                    .collect();
                let span = self.max - self.min + 1;
                let start = (*cursor).clamp(self.min, self.max);
                let mut chosen = None;
                for step in 0..span {
                    let candidate = self.min + (start - self.min + step) % span;
                    if used.contains(&candidate) {
                        continue;
                    }
                    if self
                        .store
                        .create_only(&id_key(candidate), labels.kvstore_key().as_bytes())
                        .await
                        .map_err(backend_err("creating an identity"))?
                    {
                        chosen = Some(candidate);
                        break;
                    }
                }
                let Some(id) = chosen else {
                    return Err(IdentityError::Exhausted {
                        min: self.min,
                        max: self.max,
                    });
                };
                *cursor = if id == self.max { self.min } else { id + 1 };
                id
            }
        };
        let key = format!("{}{}", value_prefix(labels), self.node);
        self.store
            .put_ephemeral(&key, id.to_string().as_bytes())
            .await
            .map_err(backend_err("registering this node"))?;
        Ok(id)
    }

    async fn release_locked(
        &self,
        labels: &LabelSet,
        id: NumericIdentity,
    ) -> Result<(), IdentityError> {
        let _guard = self.lock.lock().await;
        let key = format!("{}{}", value_prefix(labels), self.node);
        self.store
            .delete(&key)
            .await
            .map_err(backend_err("removing this node's registration"))?;
        let others = self
            .store
            .list_prefix(&value_prefix(labels))
            .await
            .map_err(backend_err("looking up labels"))?;
        if others.is_empty() {
            // Only if it still stands for these labels.
            self.store
                .delete_if(&id_key(id.get()), labels.kvstore_key().as_bytes())
                .await
                .map_err(backend_err("deleting an identity"))?;
        }
        Ok(())
    }
}

impl<S: KvStore> IdentityBackend for KvBackend<S> {
    async fn allocate(&self, labels: &LabelSet) -> Result<NumericIdentity, IdentityError> {
        let token = self.lock_labels(labels).await?;
        let result = self.allocate_locked(labels).await;
        self.unlock_labels(labels, &token).await;
        result.map(NumericIdentity::new)
    }

    async fn release(&self, labels: &LabelSet, id: NumericIdentity) -> Result<(), IdentityError> {
        let token = self.lock_labels(labels).await?;
        let result = self.release_locked(labels, id).await;
        self.unlock_labels(labels, &token).await;
        result
    }

    async fn lookup(&self, labels: &LabelSet) -> Result<Option<NumericIdentity>, IdentityError> {
        let found = match self.find(labels).await? {
            Some(id) => Some(id),
            None => self.find_master(labels).await?,
        };
        Ok(found.map(NumericIdentity::new))
    }

    async fn lookup_by_id(&self, id: NumericIdentity) -> Result<Option<LabelSet>, IdentityError> {
        let value = self
            .store
            .get(&id_key(id.get()))
            .await
            .map_err(backend_err("reading an identity"))?;
        Ok(value.and_then(|v| {
            std::str::from_utf8(&v)
                .ok()
                .and_then(labels_from_kvstore_key)
        }))
    }

    async fn list(&self) -> Result<Vec<(NumericIdentity, LabelSet)>, IdentityError> {
        let mut out: Vec<(NumericIdentity, LabelSet)> = self
            .store
            .list_prefix(&format!("{IDENTITIES_PREFIX}/id/"))
            .await
            .map_err(backend_err("listing identities"))?
            .into_iter()
            .filter_map(|(k, v)| {
                let id: u32 = k.rsplit('/').next()?.parse().ok()?;
                let labels = labels_from_kvstore_key(std::str::from_utf8(&v).ok()?)?;
                Some((NumericIdentity::new(id), labels))
            })
            .collect();
        out.sort_by_key(|(id, _)| *id);
        Ok(out)
    }
}
