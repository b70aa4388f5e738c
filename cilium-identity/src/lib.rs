// SPDX-License-Identifier: Apache-2.0

//! Security identities from labels, as Cilium allocates them.
//!
//! Every set of identity-relevant labels (see `cilium_core::LabelFilter`) gets a numeric
//! identity, and every node of the cluster must agree on it: policy is enforced on these
//! numbers. [`IdentityAllocator`] gives
//! - reserved label sets their reserved identity (`reserved:host` is 1, `reserved:health` 4,
//!   ...) without allocating anything;
//! - CIDR/FQDN label sets a node-local identity (`1 << 24 | n`);
//! - every other label set a global identity from the cluster's range (`[256, 65535]` for
//!   cluster 0) through an [`IdentityBackend`]: [`MemoryBackend`] here, a kvstore (etcd)
//!   backend for multi-node clusters;
//!
//! and counts users: an identity nobody uses is collected by [`IdentityAllocator::gc`] once
//! its grace period is over. The clock is injected, so tests never sleep.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use cilium_core::{LabelSet, ManualClock};
//! use cilium_identity::{AllocatorConfig, IdentityAllocator, MemoryBackend};
//!
//! # block_on(async {
//! let clock = Arc::new(ManualClock::new());
//! let alloc = IdentityAllocator::with_clock(
//!     MemoryBackend::new(0),
//!     AllocatorConfig::with_grace(Duration::from_secs(30)),
//!     clock.clone(),
//! );
//! let curl = LabelSet::parse_list(&["k8s:app=curl", "k8s:io.kubernetes.pod.namespace=default"]).unwrap();
//! let id = alloc.acquire(&curl).await.unwrap().identity.id;
//! assert_eq!(id.get(), 256);
//! assert!(alloc.release(id).unwrap()); // no users left
//! clock.advance(Duration::from_secs(31));
//! assert_eq!(alloc.gc().await.unwrap().len(), 1);
//! # });
//! # fn block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     let mut f = std::pin::pin!(f);
//! #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
//! #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
//! # }
//! ```
#![forbid(unsafe_code)]

mod allocator;
mod backend;
mod error;
pub mod kv;

pub use allocator::{
    Acquired, AllocatorConfig, Identity, IdentityAllocator, is_local_scope, reserved_identity,
    reserved_labels,
};
pub use backend::{IdentityBackend, MemoryBackend};
pub use error::IdentityError;
pub use kv::{IDENTITIES_PREFIX, KvBackend, labels_from_kvstore_key};

#[cfg(test)]
mod tests;
