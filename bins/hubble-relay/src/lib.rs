// SPDX-License-Identifier: Apache-2.0

//! hubble-relay for cilium-rs: the cluster's flows through one Observer API, and the
//! Hubble UI.
//!
//! - [`discovery`]: the relay's peers, one per node registered in the cluster store
//!   (`cilium/state/nodes/v1/<cluster>/`) or one per CiliumNode of the Kubernetes API,
//!   each at its `InternalIP` and the agents' Hubble port; kept current as nodes come and
//!   go (one loop for both sources). Or a fixed list.
//! - [`cilium_hubble::relay::Relay`] merges the nodes' flows (this crate serves it).
//! - [`ui`]: the Hubble UI, a web page with a service map of a namespace (workloads by
//!   identity, edges for observed flows, red for drops) and a live flow table, over a
//!   small JSON API on the relay.
//! - [`browser`]: headless Chromium, to render the UI to a screenshot (tests, and
//!   `cilium-lab hubble-ui --screenshot` on a machine without a display).
//!
//! ```no_run
//! # async fn demo() -> Result<(), String> {
//! use std::sync::Arc;
//! use cilium_hubble::relay::{Peer, Relay, RelayOptions};
//! let (_tx, peers) = tokio::sync::watch::channel(vec![Peer {
//!     name: "k8s-w1".into(),
//!     address: "192.168.10.101:4244".into(),
//! }]);
//! let relay = Arc::new(Relay::new(peers, RelayOptions::default()));
//! let ui = hubble_relay::ui::router(relay.clone());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:12000").await.map_err(|e| e.to_string())?;
//! axum::serve(listener, ui).await.map_err(|e| e.to_string())
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod browser;
pub mod discovery;
pub mod ui;
