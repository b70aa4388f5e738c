// SPDX-License-Identifier: Apache-2.0

//! A node's flow source for the API tests: a ring the test fills, a counter of datapath
//! losses the test sets, and a server for it on a real socket.

#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cilium_hubble::flow::{Flow, NoNames};
use cilium_hubble::observer::{FlowSource, Listen, ObserverService, serve};
use cilium_hubble::ring::{Read, Ring};

/// A node's flows, as a test writes them.
pub struct Source {
    pub name: String,
    pub ring: Mutex<Ring<Flow>>,
    pub lost: AtomicU64,
}

impl Source {
    /// An empty source named `name` keeping `capacity` flows.
    pub fn new(name: &str, capacity: usize) -> Arc<Self> {
        Arc::new(Source {
            name: name.to_owned(),
            ring: Mutex::new(Ring::new(capacity).unwrap()),
            lost: AtomicU64::new(0),
        })
    }

    /// Adds a flow.
    pub fn push(&self, f: Flow) {
        self.ring.lock().unwrap().push(f);
    }

    /// Serves the source on `listen`; returns the task and the address bound.
    pub async fn serve(self: &Arc<Self>, listen: &str) -> (tokio::task::JoinHandle<()>, String) {
        let listen: Listen = listen.parse().unwrap();
        let listener = listen.bind().await.expect("bind");
        let address = match &listener {
            cilium_hubble::observer::Listener::Tcp(l) => l.local_addr().unwrap().to_string(),
            cilium_hubble::observer::Listener::Unix(_) => listen.to_string(),
        };
        let service = ObserverService::new(self.clone());
        let task = tokio::spawn(async move {
            let _ = serve(service, listener).await;
        });
        (task, address)
    }
}

impl FlowSource for Source {
    fn node_name(&self) -> String {
        self.name.clone()
    }
    fn read_from(&self, from: u64) -> Read<Flow> {
        self.ring.lock().unwrap().read_from(from)
    }
    fn status(&self) -> (usize, usize, u64) {
        let r = self.ring.lock().unwrap();
        (r.len(), r.capacity(), r.written())
    }
    fn uptime(&self) -> Duration {
        Duration::from_secs(5)
    }
    fn datapath_lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }
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
