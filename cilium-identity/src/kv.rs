// SPDX-License-Identifier: Apache-2.0

//! An [`IdentityBackend`] on a [`KvStore`], with Cilium's kvstore key layout.
//!
//! - `cilium/state/identities/v1/id/<ID>` -> the label set's kvstore key form (the "master"
//!   key: which labels the number stands for);
//! - `cilium/state/identities/v1/value/<labels>/<node>` -> `<ID>` (one per node using it).
//!
//! On the embedded file store this makes identities durable: a restarted agent gets the
//! same number for the same labels. Within one process, allocations are serialised by a
//! lock; agents on several nodes sharing one store need the per-key kvstore locks of the
//! multi-node store, which this backend does not take.

use std::collections::BTreeSet;

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

impl<S: KvStore> IdentityBackend for KvBackend<S> {
    async fn allocate(&self, labels: &LabelSet) -> Result<NumericIdentity, IdentityError> {
        let mut cursor = self.lock.lock().await;
        let id = match self.find(labels).await? {
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
            .put(&key, id.to_string().as_bytes())
            .await
            .map_err(backend_err("registering this node"))?;
        Ok(NumericIdentity::new(id))
    }

    async fn release(&self, labels: &LabelSet, id: NumericIdentity) -> Result<(), IdentityError> {
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
            self.store
                .delete(&id_key(id.get()))
                .await
                .map_err(backend_err("deleting an identity"))?;
        }
        Ok(())
    }

    async fn lookup(&self, labels: &LabelSet) -> Result<Option<NumericIdentity>, IdentityError> {
        Ok(self.find(labels).await?.map(NumericIdentity::new))
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
