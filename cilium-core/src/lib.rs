// SPDX-License-Identifier: Apache-2.0

//! The shared model of cilium-rs, a Cilium-compatible eBPF networking stack in Rust.
//!
//! This crate holds what every other part agrees on, with Cilium's formats:
//! - [`Label`] and [`LabelSet`]: labels as `source:key=value`, sets sorted by key whose
//!   string is Cilium's kvstore key (`k8s:app=web;k8s:io.kubernetes.pod.namespace=default;`);
//! - [`LabelFilter`]: which labels count for identity (Cilium's default rules plus yours);
//! - [`NumericIdentity`]: reserved identities, cluster-id bits, the local scope flag;
//! - [`IdPool`]: a next-fit integer id pool with O(log64 n) allocation at any fill, used for
//!   IPs, pod CIDRs, identities and service ids;
//! - [`Clock`]: an injected monotonic clock ([`ManualClock`] for tests).
//!
//! ```
//! use cilium_core::{LabelFilter, LabelSet, NumericIdentity};
//!
//! let pod = LabelSet::parse_list(&["k8s:app=curl", "k8s:io.kubernetes.pod.namespace=default",
//!                                  "k8s:pod-template-hash=5f4c"]).unwrap();
//! let (identity_labels, _info) = LabelFilter::default().filter(&pod);
//! assert_eq!(identity_labels.kvstore_key(), "k8s:app=curl;k8s:io.kubernetes.pod.namespace=default;");
//! assert_eq!(NumericIdentity::HEALTH.get(), 4);
//! ```
#![forbid(unsafe_code)]

mod clock;
pub mod cluster;
pub mod config;
mod error;
mod filter;
mod identity;
mod idpool;
pub mod kvstore;
pub mod labels;

pub use clock::{Clock, ManualClock, MonotonicClock, rfc3339};
pub use error::CoreError;
pub use filter::{LabelFilter, LabelPrefix, is_local_source};
pub use identity::{IdentityScope, NumericIdentity};
pub use idpool::IdPool;
pub use labels::{Label, LabelSet};
