// SPDX-License-Identifier: Apache-2.0

//! The agent's Hubble observer (`enable-hubble`): a task reads the datapath's events
//! (`cilium_events`), turns each into a flow with the node's names for its endpoints and
//! identities, keeps the last `hubble-event-buffer-capacity` flows, and counts them in
//! Hubble's metrics. Reading never slows the datapath: the ring buffer is drained as fast
//! as it fills, and events the kernel could not queue are the datapath's own loss.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cilium_bpf::maps::EventReader;
use cilium_hubble::flow::{Flow, Names};

use crate::metrics::Metrics;
use crate::node::Node;

/// The flows a node keeps (the library's in-memory source; the reader below fills it).
pub type Observer = cilium_hubble::observer::RingSource;

async fn names(node: &Node) -> Names {
    // Other nodes' pods (endpoint id 0 here: the id is theirs), then this node's.
    let mut by_ip: HashMap<_, _> = node
        .remote_endpoints
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .map(|p| (p.ip, (0, p.namespace.clone(), p.pod.clone())))
        .collect();
    by_ip.extend(
        node.endpoints()
            .await
            .into_iter()
            .map(|e| (e.ipv4, (e.id, e.k8s_namespace, e.k8s_pod_name))),
    );
    let labels = node
        .identities()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|(id, labels)| (id, labels.into()))
        .collect();
    // Services by frontend, for flows to or from a ClusterIP (`<namespace>/<name>`).
    let services = node
        .services()
        .await
        .into_iter()
        .filter_map(|(_, svc)| {
            let (namespace, name) = svc.name.split_once('/')?;
            let std::net::IpAddr::V4(ip) = svc.frontend.address else {
                return None;
            };
            let service = cilium_hubble::flow::Service {
                name: name.to_owned(),
                namespace: namespace.to_owned(),
            };
            Some(((ip, svc.frontend.port), service))
        })
        .collect();
    Names {
        pods: by_ip,
        labels,
        services,
    }
}

/// Reads events until the process ends (every 100 ms: the datapath wakes readers only
/// once 64 KiB are waiting).
pub async fn run(
    node: Arc<Node>,
    observer: Arc<Observer>,
    metrics: Arc<Metrics>,
    bpf_root: PathBuf,
) {
    let mut reader = match EventReader::open(&bpf_root) {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "level=error subsys=hubble msg=\"cannot read datapath events\" error=\"{e}\""
            );
            return;
        }
    };
    // Event times are CLOCK_MONOTONIC; flows carry wall-clock time.
    let offset = {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        wall.saturating_sub(u128::from(cilium_bpf::events::monotonic_ns()))
    };
    let mut cached = names(&node).await;
    let mut refreshed = std::time::Instant::now();
    // Pod-like addresses a lookup did not name (cleared at each full refresh).
    let mut unnamed: std::collections::HashSet<std::net::Ipv4Addr> = Default::default();
    // The datapath counts the events it could not queue (reason 255 in cilium_metrics).
    let counters = cilium_bpf::maps::MetricsMap::open(&bpf_root).ok();
    let lost_now = || {
        counters.as_ref().and_then(|m| {
            m.count(cilium_bpf::events::drop_reason::EVENTS_LOST, 0)
                .ok()
        })
    };
    let lost_at_start = lost_now().unwrap_or(0);
    let mut lost_checked = std::time::Instant::now();
    loop {
        if lost_checked.elapsed() >= Duration::from_millis(500) {
            lost_checked = std::time::Instant::now();
            if let Some(total) = lost_now() {
                let since_start = total.saturating_sub(lost_at_start);
                let before = observer
                    .datapath_lost
                    .swap(since_start, std::sync::atomic::Ordering::Relaxed);
                if since_start > before {
                    metrics.count_lost("perf_event_ring_buffer", since_start - before);
                }
            }
        }
        let events = reader.drain();
        if !events.is_empty() {
            // Endpoints come and go: names are looked up again, before the batch is named,
            // when it mentions a local endpoint or a pod's identity (a cluster identity;
            // CIDR identities are node-local, >= 2^24, and have no pod) at an address the
            // cache does not know, unless a lookup since the last full refresh (every 2 s)
            // did not know it either: a pod's first packets are named, and an address
            // nobody names costs one lookup per 2 s, not one per batch.
            let pod_like =
                |endpoint: u16, identity: u32| endpoint != 0 || (256..1 << 24).contains(&identity);
            let unknown = |ip: &std::net::Ipv4Addr, cached: &Names| {
                !cached.pods.contains_key(ip) && !unnamed.contains(ip)
            };
            let new_unknown: Vec<std::net::Ipv4Addr> = events
                .iter()
                .flatten()
                .flat_map(|e| {
                    [
                        pod_like(e.src_endpoint, e.src_identity).then_some(e.saddr),
                        pod_like(e.dst_endpoint, e.dst_identity).then_some(e.daddr),
                    ]
                })
                .flatten()
                .filter(|ip| unknown(ip, &cached))
                .collect();
            if refreshed.elapsed() > Duration::from_secs(2) {
                unnamed.clear();
            }
            if !new_unknown.is_empty() || refreshed.elapsed() > Duration::from_secs(2) {
                cached = names(&node).await;
                refreshed = std::time::Instant::now();
                unnamed.extend(
                    new_unknown
                        .into_iter()
                        .filter(|ip| !cached.pods.contains_key(ip)),
                );
            }
            let mut undecodable = None;
            let mut flows = Vec::with_capacity(events.len());
            for ev in events {
                match ev {
                    Ok(ev) => {
                        let flow = Flow::from_event(
                            &ev,
                            offset + u128::from(ev.ktime_ns),
                            &node.name,
                            &cached,
                        );
                        metrics.count_flow(&flow);
                        flows.push(flow);
                    }
                    Err(e) => {
                        let (n, _) = undecodable.get_or_insert((0u32, e.to_string()));
                        *n += 1;
                    }
                }
            }
            observer.push_all(flows);
            if let Some((n, error)) = undecodable {
                eprintln!(
                    "level=warning subsys=hubble msg=\"skipping datapath events that do not decode\" count={n} error=\"{error}\""
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
