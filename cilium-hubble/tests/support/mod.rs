// SPDX-License-Identifier: Apache-2.0

//! For the API tests: a node's flow source served on a real socket, and flows at known
//! times.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use cilium_hubble::flow::{Flow, NoNames};
use cilium_hubble::observer::{Listen, ObserverService, RingSource, serve};

/// An empty source of node `name` keeping `capacity` flows.
pub fn source(name: &str, capacity: usize) -> Arc<RingSource> {
    Arc::new(RingSource::new(name, capacity).expect("capacity"))
}

/// Serves `source` on `listen`; returns the task and the address bound.
pub async fn serve_on(
    source: &Arc<RingSource>,
    listen: &str,
) -> (tokio::task::JoinHandle<()>, String) {
    serve_tls_on(source, listen, None).await
}

/// [`serve_on`] over TLS when `tls` is given.
pub async fn serve_tls_on(
    source: &Arc<RingSource>,
    listen: &str,
    tls: Option<cilium_hubble::tls::ServerTlsConfig>,
) -> (tokio::task::JoinHandle<()>, String) {
    let listener = listen
        .parse::<Listen>()
        .unwrap()
        .bind()
        .await
        .expect("bind");
    let address = listener.address().expect("bound").to_string();
    let service = ObserverService::new(source.clone());
    let task = tokio::spawn(async move {
        let _ = serve(service, listener, tls).await;
    });
    (task, address)
}

/// A flow of node `node` to port `port` at second `second` of a fixed minute (dropped by
/// policy when `dropped`).
pub fn flow_at(node: &str, port: u16, second: u64, dropped: bool) -> Flow {
    let mut ev = cilium_hubble::example_event();
    ev.dport = port;
    if dropped {
        ev.kind = cilium_bpf::events::EventKind::Drop { reason: 133 };
    }
    Flow::from_event(
        &ev,
        1_795_749_000_000_000_000 + u128::from(second) * 1_000_000_000 + u128::from(port),
        node,
        &NoNames,
    )
}
