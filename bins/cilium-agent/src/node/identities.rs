// SPDX-License-Identifier: Apache-2.0

//! Where the node's identities live (`identity-allocation-mode`): the cluster store's
//! identity keys (kvstore mode, also the mode without a Kubernetes API), or CiliumIdentity
//! objects (crd mode).

use std::sync::Arc;

use cilium_core::kvstore::AnyStore;
use cilium_core::{LabelSet, NumericIdentity};
use cilium_identity::{IdentityBackend, IdentityError, KvBackend};
use cilium_k8s::identity::CrdBackend;

/// The node's identity backend.
#[derive(Debug)]
pub(crate) enum Identities {
    /// `cilium/state/identities/v1` keys in the cluster store.
    Kvstore(KvBackend<Arc<AnyStore>>),
    /// CiliumIdentity objects (boxed: the client and index are much larger).
    Crd(Box<CrdBackend>),
}

impl Identities {
    /// The mode's name as Cilium prints it.
    pub(crate) fn mode(&self) -> &'static str {
        match self {
            Identities::Kvstore(_) => "kvstore",
            Identities::Crd(_) => "crd",
        }
    }

    /// The identities this node registered as a user of (kvstore mode; crd mode keeps no
    /// per-node registrations).
    pub(crate) async fn registrations(
        &self,
    ) -> Result<Vec<(LabelSet, NumericIdentity)>, IdentityError> {
        match self {
            Identities::Kvstore(b) => b.registrations().await,
            Identities::Crd(_) => Ok(Vec::new()),
        }
    }

    /// Identities no node uses (kvstore mode; in crd mode the operator's GC judges).
    pub(crate) async fn unused(&self) -> Result<Vec<(NumericIdentity, LabelSet)>, IdentityError> {
        match self {
            Identities::Kvstore(b) => b.unused().await,
            Identities::Crd(_) => Ok(Vec::new()),
        }
    }

    /// Deletes an identity if still unused (kvstore mode); returns whether it did.
    pub(crate) async fn remove_if_unused(
        &self,
        id: NumericIdentity,
        labels: &LabelSet,
    ) -> Result<bool, IdentityError> {
        match self {
            Identities::Kvstore(b) => b.remove_if_unused(id, labels).await,
            Identities::Crd(_) => Ok(false),
        }
    }
}

impl IdentityBackend for Identities {
    async fn allocate(&self, labels: &LabelSet) -> Result<NumericIdentity, IdentityError> {
        match self {
            Identities::Kvstore(b) => b.allocate(labels).await,
            Identities::Crd(b) => b.allocate(labels).await,
        }
    }

    async fn release(&self, labels: &LabelSet, id: NumericIdentity) -> Result<(), IdentityError> {
        match self {
            Identities::Kvstore(b) => b.release(labels, id).await,
            Identities::Crd(b) => b.release(labels, id).await,
        }
    }

    async fn lookup(&self, labels: &LabelSet) -> Result<Option<NumericIdentity>, IdentityError> {
        match self {
            Identities::Kvstore(b) => b.lookup(labels).await,
            Identities::Crd(b) => b.lookup(labels).await,
        }
    }

    async fn lookup_by_id(&self, id: NumericIdentity) -> Result<Option<LabelSet>, IdentityError> {
        match self {
            Identities::Kvstore(b) => b.lookup_by_id(id).await,
            Identities::Crd(b) => b.lookup_by_id(id).await,
        }
    }

    async fn list(&self) -> Result<Vec<(NumericIdentity, LabelSet)>, IdentityError> {
        match self {
            Identities::Kvstore(b) => b.list().await,
            Identities::Crd(b) => b.list().await,
        }
    }
}
