// SPDX-License-Identifier: Apache-2.0

//! Identity-based network policy as Cilium resolves it, as a library.
//!
//! - [`parse`] reads CiliumNetworkPolicy / CiliumClusterwideNetworkPolicy (`cilium.io/v2`)
//!   and Kubernetes NetworkPolicy (`networking.k8s.io/v1`) from YAML or JSON, several
//!   documents at once, rejecting unknown fields and bad values with the field's path;
//! - the documents become [`Rule`]s in normal form (namespace scoping applied);
//! - a [`Repository`] resolves rules against identities into each endpoint's
//!   [`EndpointPolicy`]: (peer identity, direction, protocol, port range) -> allow or deny,
//!   deny winning, with Cilium's enforcement modes.
//! - a [`PolicyEngine`] keeps every endpoint's policy up to date as rules, identities and
//!   endpoints change, through a [`SelectorCache`], and returns only the changed entries
//!   ([`PolicyDiff`]): what the agent writes into the policy maps.
//!
//! ```
//! use cilium_core::{LabelSet, NumericIdentity};
//! use cilium_policy::{parse, EnforcementMode, Repository};
//!
//! let docs = parse(r#"
//! apiVersion: cilium.io/v2
//! kind: CiliumNetworkPolicy
//! metadata: {name: allow-curl, namespace: default}
//! spec:
//!   endpointSelector: {matchLabels: {app: webpod}}
//!   ingress:
//!   - fromEndpoints: [{matchLabels: {app: curl}}]
//!     toPorts: [{ports: [{port: "80", protocol: TCP}]}]
//! "#).unwrap();
//! let mut repo = Repository::new(EnforcementMode::Default);
//! repo.add(docs.into_iter().flat_map(|(_, rules)| rules));
//! let web = NumericIdentity::new(257);
//! let curl = NumericIdentity::new(256);
//! repo.upsert_identity(web, LabelSet::parse_list(&["k8s:app=webpod", "k8s:io.kubernetes.pod.namespace=default"]).unwrap());
//! repo.upsert_identity(curl, LabelSet::parse_list(&["k8s:app=curl", "k8s:io.kubernetes.pod.namespace=default"]).unwrap());
//! assert!(repo.allowed(curl, web, 6, 80));
//! assert!(!repo.allowed(curl, web, 6, 81));
//! assert!(repo.allowed(web, curl, 6, 81)); // curl has no policy
//! ```
#![forbid(unsafe_code)]

mod cache;
mod engine;
mod error;
mod incremental;
pub mod model;
mod rules;
mod selector;

pub use cache::{SelectionChange, SelectorCache};
pub use engine::{EndpointPolicy, EnforcementMode, PolicyKey, Repository, Verdict};
pub use error::PolicyError;
pub use incremental::{EndpointId, EnforcementChange, PolicyChange, PolicyDiff, PolicyEngine};
pub use rules::{
    Direction, Entity, NamedPort, NamedPorts, Peer, PolicyDocument, PortRange, Rule, parse,
    parse_value,
};
pub use selector::{Operator, Requirement, Selector};

#[cfg(test)]
mod engine_tests;
#[cfg(test)]
mod netpol_tests;
