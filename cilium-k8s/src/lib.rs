// SPDX-License-Identifier: Apache-2.0

//! Kubernetes for cilium-rs: Cilium's custom resource definitions (`cilium.io/v2`) and the
//! upstream Kubernetes control plane as a test harness.
//!
//! - [`crds`]: the CiliumNode, CiliumEndpoint, CiliumIdentity, CiliumNetworkPolicy and
//!   CiliumClusterwideNetworkPolicy definitions, with upstream's group, versions, kinds,
//!   scopes, short names, status subresources and printer columns, and
//!   [`register`](crds::register), which installs or upgrades them as Cilium's operator does.
//! - [`testing`]: [`ControlPlane`](testing::ControlPlane), etcd plus upstream's
//!   kube-apiserver, kube-controller-manager and kube-scheduler (built from the
//!   `k8s.io/kubernetes` module by `cargo xtask kube-build`, with kube-proxy), with
//!   certificates and kubeconfigs of its own, torn down on drop; optionally with the
//!   node-ipam controller
//!   ([`start_with_node_ipam`](testing::ControlPlane::start_with_node_ipam)).
//! - [`watch`]: [`Informer`](watch::Informer), list-then-watch of one kind through the
//!   API, reporting `cilium_core::cluster::Change`s as the cluster store's informer does.
//! - [`types`]: typed `cilium.io/v2` objects ([`CiliumIdentity`](types::CiliumIdentity)).
//! - [`identity`]: [`CrdBackend`](identity::CrdBackend), security identities as
//!   CiliumIdentity objects (`identity-allocation-mode=crd`), the same number on every node
//!   even when agents race for a label set.
//! - [`nodes`]: CiliumNodes through the API (the agent registers its node, the operator
//!   writes pod CIDRs), with optimistic concurrency.
//! - [`lease`]: [`LeaderElector`](lease::LeaderElector), leader election on a
//!   `coordination.k8s.io` Lease as client-go does it.
//! - [`pki`]: the small CA behind it; [`client`]: a client from a kubeconfig.
//!
//! ```no_run
//! use cilium_k8s::testing::ControlPlane;
//!
//! let cp = ControlPlane::start_for_test("doc");
//! cp.kubectl_input(&["apply", "-f", "-"], Some(&cilium_k8s::crds::all_yaml())).unwrap();
//! let header = cp.kubectl(&["get", "ciliumendpoints", "-A", "-o", "wide"]).unwrap();
//! println!("{header}");
//! ```
#![forbid(unsafe_code)]

pub mod convert;
pub mod crds;
pub mod identity;
pub mod lease;
pub mod nodes;
pub mod pki;
pub mod testing;
pub mod types;
pub mod watch;

/// A client of the API server a kubeconfig names (its current context), as the agent's
/// `k8s-kubeconfig-path` setting gives it.
pub async fn client(kubeconfig: &std::path::Path) -> Result<kube::Client, Error> {
    let file = kube::config::Kubeconfig::read_from(kubeconfig)
        .map_err(|e| Error::Api(format!("{}: {e}", kubeconfig.display())))?;
    let config = kube::Config::from_custom_kubeconfig(file, &Default::default())
        .await
        .map_err(|e| Error::Api(format!("{}: {e}", kubeconfig.display())))?;
    kube::Client::try_from(config).map_err(|e| Error::Api(e.to_string()))
}

/// What can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A program or file it needs is not there.
    #[error("missing: {0}")]
    Missing(String),
    /// A control-plane component did not start or become ready.
    #[error("{component}: {message}\n{log}")]
    Start {
        /// `etcd`, `kube-apiserver`, ...
        component: String,
        /// What happened.
        message: String,
        /// The last lines of its log.
        log: String,
    },
    /// kubectl failed.
    #[error("kubectl {args}: {stderr}")]
    Kubectl {
        /// Its arguments.
        args: String,
        /// Its standard error.
        stderr: String,
    },
    /// Certificates or keys could not be made.
    #[error("pki: {0}")]
    Pki(String),
    /// A file or process operation failed.
    #[error("{0}")]
    Io(String),
    /// The Kubernetes API refused a request or cannot be reached.
    #[error("kubernetes api: {0}")]
    Api(String),
    /// A manifest does not decode.
    #[error("manifest: {0}")]
    Manifest(String),
}
