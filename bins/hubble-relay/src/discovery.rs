// SPDX-License-Identifier: Apache-2.0

//! The relay's peers, one per node, each at its address and the agents' Hubble port
//! (their `hubble-listen-address`), from one of three sources:
//!
//! - the cluster store ([`follow_cluster_store`]): every node an agent registered under
//!   `cilium/state/nodes/v1/<cluster>/`, at its `InternalIP`. Registrations are session
//!   keys, so a node whose agent is gone for good leaves the list; one whose agent is only
//!   restarting stays, and the relay reports it unavailable meanwhile.
//! - the Kubernetes API ([`follow_kubernetes`]): every CiliumNode, at the `InternalIP` of
//!   its `spec.addresses` (IPv4 preferred), else at its first IPv4 address. A node leaves
//!   the list when its CiliumNode is deleted (the operator collects those of deleted
//!   Nodes).
//! - a fixed list ([`static_peers`], `--peer NAME=ADDRESS`).
//!
//! The first two follow their source with one loop (an informer behind
//! [`cilium_core::cluster::Watcher`]): start it, retried every second while the source
//! cannot be read, then publish the peer list (sorted by name) after each change.

use std::fmt::Display;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use cilium_core::cluster::{Change, Informer, NODES_PREFIX, NodeRegistration, Watcher};
use cilium_core::kvstore::KvStore;
use cilium_hubble::relay::Peer;
use kube::api::DynamicObject;
use kube::runtime::watcher;
use tokio::sync::watch;

/// How long to wait before trying a source that failed again.
const RETRY: Duration = Duration::from_secs(1);

/// The peer of a node registration (`None` without an `InternalIP`).
pub fn peer_of(node: &NodeRegistration, port: u16) -> Option<Peer> {
    node.internal_ip().map(|ip| Peer {
        name: node.name.clone(),
        address: format!("{ip}:{port}"),
    })
}

fn log(level: &str, msg: &str, fields: &str) {
    eprintln!("level={level} subsys=hubble-relay msg=\"{msg}\" {fields}");
}

/// A node as a discovery source reports it.
trait Node {
    /// The node's name.
    fn name(&self) -> &str;
    /// Its Hubble server at `port` (`None`: the node has no address to reach it at).
    fn peer(&self, port: u16) -> Option<Peer>;
}

impl Node for NodeRegistration {
    fn name(&self) -> &str {
        &self.name
    }

    fn peer(&self, port: u16) -> Option<Peer> {
        peer_of(self, port)
    }
}

/// A CiliumNode as the relay reads it: its name and the address of its Hubble server.
/// Only these are kept, so that changes to the rest of the object (status, IPAM) are not
/// reported as peer changes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CiliumNodePeer {
    name: String,
    ip: Option<IpAddr>,
}

impl Node for CiliumNodePeer {
    fn name(&self) -> &str {
        &self.name
    }

    fn peer(&self, port: u16) -> Option<Peer> {
        self.ip.map(|ip| Peer {
            name: self.name.clone(),
            address: SocketAddr::new(ip, port).to_string(),
        })
    }
}

/// The address a CiliumNode's Hubble server is reached at, of its `spec.addresses`
/// (`(type, ip)`): the `InternalIP` (the IPv4 one when there are several), else the first
/// IPv4 address of any type.
fn hubble_ip(addresses: &[(String, IpAddr)]) -> Option<IpAddr> {
    let internal = || addresses.iter().filter(|(kind, _)| kind == "InternalIP");
    internal()
        .find(|(_, ip)| ip.is_ipv4())
        .or_else(|| internal().next())
        .or_else(|| addresses.iter().find(|(_, ip)| ip.is_ipv4()))
        .map(|(_, ip)| *ip)
}

/// Decodes a CiliumNode for the relay. An address entry that is not an IP (of either
/// family) is skipped rather than making the node invalid: one odd entry must not hide a
/// node the relay can reach.
fn decode_cilium_node(object: &DynamicObject) -> Result<CiliumNodePeer, String> {
    let name = object
        .metadata
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or("a CiliumNode without a name")?;
    let addresses: Vec<(String, IpAddr)> = object.data["spec"]["addresses"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter_map(|a| {
                    let kind = a["type"].as_str().unwrap_or_default();
                    let ip = a["ip"].as_str()?.parse().ok()?;
                    Some((kind.to_owned(), ip))
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(CiliumNodePeer {
        ip: hubble_ip(&addresses),
        name,
    })
}

/// Follows the nodes of cluster `cluster` in `store`, publishing the peer list (sorted by
/// name) on `tx` after each change; returns when every receiver is gone. A store that
/// cannot be listed is retried every second.
pub async fn follow_cluster_store<S>(
    store: S,
    cluster: &str,
    port: u16,
    tx: watch::Sender<Vec<Peer>>,
) where
    S: KvStore + Clone,
{
    let prefix = format!("{NODES_PREFIX}/{cluster}");
    follow(
        "the cluster store",
        || Informer::<S, NodeRegistration>::start(store.clone(), &prefix),
        port,
        tx,
    )
    .await;
}

/// Follows every CiliumNode through the Kubernetes API `client`, publishing the peer list
/// (sorted by name) on `tx` after each change; returns when every receiver is gone. While
/// the API cannot be listed (unreachable, or the CiliumNode definition not registered
/// yet) the list is tried again every second; once it is watched, the informer resumes
/// by itself after an outage (with its back-off).
pub async fn follow_kubernetes(client: kube::Client, port: u16, tx: watch::Sender<Vec<Peer>>) {
    follow(
        "the Kubernetes API",
        || {
            cilium_k8s::watch::Informer::start_with(
                cilium_k8s::nodes::api(client.clone()),
                watcher::Config::default(),
                decode_cilium_node,
            )
        },
        port,
        tx,
    )
    .await;
}

/// The loop of every source: starts a watcher with `start` (again after a second while
/// that fails), publishes the peers of its nodes at `port` on `tx`, and again after each
/// change; returns when every receiver is gone.
async fn follow<W, T, E, F, Fut>(
    source: &str,
    mut start: F,
    port: u16,
    tx: watch::Sender<Vec<Peer>>,
) where
    W: Watcher<T>,
    T: Node,
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(W, Vec<Change<T>>), E>>,
{
    let (mut watcher, initial) = loop {
        tokio::select! {
            started = start() => match started {
                Ok(started) => break started,
                Err(e) => log(
                    "warning",
                    &format!("cannot list the nodes of {source} yet; retrying"),
                    &format!("error=\"{e}\""),
                ),
            },
            () = tx.closed() => return,
        }
        tokio::select! {
            () = tokio::time::sleep(RETRY) => {}
            () = tx.closed() => return,
        }
    };
    log(
        "info",
        &format!("following the nodes of {source}"),
        &format!("nodes={}", watcher.objects().len()),
    );
    for change in &initial {
        report(change, port);
    }
    let publish = |watcher: &W| {
        let mut peers: Vec<Peer> = watcher
            .objects()
            .values()
            .filter_map(|n| n.peer(port))
            .collect();
        peers.sort();
        tx.send_replace(peers);
    };
    publish(&watcher);
    loop {
        tokio::select! {
            change = watcher.next_change() => match change {
                Ok(change) => report(&change, port),
                Err(e) => {
                    log(
                        "warning",
                        &format!("watching the nodes of {source} failed; retrying"),
                        &format!("error=\"{e}\""),
                    );
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            },
            () = tx.closed() => return,
        }
        publish(&watcher);
    }
}

/// Logs what a change does to the peers.
fn report<T: Node>(change: &Change<T>, port: u16) {
    match change {
        Change::Upsert { object, .. } => match object.peer(port) {
            Some(peer) => log(
                "info",
                "peer added or changed",
                &format!("node={} address={}", peer.name, peer.address),
            ),
            None => log(
                "warning",
                "node without an address; not a peer",
                &format!("node={}", object.name()),
            ),
        },
        Change::Delete { last, .. } => log("info", "peer gone", &format!("node={}", last.name())),
        Change::Invalid { key, error } => log(
            "warning",
            "skipping an invalid node",
            &format!("key={key} error=\"{error}\""),
        ),
    }
}

/// A fixed peer list from `NAME=ADDRESS` items (`--peer`), sorted by name.
pub fn static_peers(items: &[String]) -> Result<Vec<Peer>, String> {
    let mut peers = items
        .iter()
        .map(|item| {
            let (name, address) = item
                .split_once('=')
                .filter(|(n, a)| !n.is_empty() && !a.is_empty())
                .ok_or_else(|| format!("--peer {item:?}: NAME=ADDRESS is expected"))?;
            Ok(Peer {
                name: name.to_owned(),
                address: address.to_owned(),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    peers.sort();
    Ok(peers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cilium_node(name: &str, addresses: &serde_json::Value) -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNode",
            "metadata": {"name": name},
            "spec": {"addresses": addresses, "ipam": {"podCIDRs": ["10.0.1.0/24"]}},
            "status": {"ipam": {"operator-status": {}}},
        }))
        .unwrap()
    }

    fn peer(addresses: &serde_json::Value) -> Option<Peer> {
        decode_cilium_node(&cilium_node("k8s-w1", addresses))
            .unwrap()
            .peer(4244)
    }

    #[test]
    fn a_cilium_node_is_reached_at_its_internal_ip_else_its_first_ipv4_address() {
        let at = |address: &str| {
            Some(Peer {
                name: "k8s-w1".into(),
                address: address.into(),
            })
        };
        // The InternalIP, wherever it is in the list.
        assert_eq!(
            peer(&serde_json::json!([
                {"type": "CiliumInternalIP", "ip": "10.0.1.5"},
                {"type": "InternalIP", "ip": "192.168.10.101"},
            ])),
            at("192.168.10.101:4244")
        );
        // Of two InternalIPs the IPv4 one; an IPv6 one alone, bracketed.
        assert_eq!(
            peer(&serde_json::json!([
                {"type": "InternalIP", "ip": "fd00::101"},
                {"type": "InternalIP", "ip": "192.168.10.101"},
            ])),
            at("192.168.10.101:4244")
        );
        assert_eq!(
            peer(&serde_json::json!([{"type": "InternalIP", "ip": "fd00::101"}])),
            at("[fd00::101]:4244")
        );
        // No InternalIP: the first IPv4 address of any type.
        assert_eq!(
            peer(&serde_json::json!([
                {"type": "CiliumInternalIP", "ip": "fd00::5"},
                {"type": "ExternalIP", "ip": "203.0.113.7"},
                {"type": "CiliumInternalIP", "ip": "10.0.1.5"},
            ])),
            at("203.0.113.7:4244")
        );
        // An entry that is not an IP is skipped; no address at all: no peer.
        assert_eq!(
            peer(&serde_json::json!([
                {"type": "InternalIP", "ip": "not-an-ip"},
                {"type": "Hostname", "ip": "10.0.0.9"},
            ])),
            at("10.0.0.9:4244")
        );
        assert_eq!(peer(&serde_json::json!([])), None);
        let bare: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "cilium.io/v2", "kind": "CiliumNode", "metadata": {"name": "bare"},
        }))
        .unwrap();
        assert_eq!(decode_cilium_node(&bare).unwrap().peer(4244), None);
    }

    #[test]
    fn only_the_name_and_address_of_a_cilium_node_count() {
        let a = decode_cilium_node(&cilium_node(
            "k8s-w1",
            &serde_json::json!([{"type": "InternalIP", "ip": "192.168.10.101"}]),
        ))
        .unwrap();
        let mut other = cilium_node(
            "k8s-w1",
            &serde_json::json!([{"type": "InternalIP", "ip": "192.168.10.101"}]),
        );
        other.data["status"]["ipam"]["operator-status"]["error"] = "exhausted".into();
        other.data["spec"]["ipam"]["podCIDRs"] = serde_json::json!(["10.0.2.0/24"]);
        // Equal, so the informer reports no change (and the relay logs none).
        assert_eq!(decode_cilium_node(&other).unwrap(), a);
        let nameless: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "cilium.io/v2", "kind": "CiliumNode", "metadata": {},
        }))
        .unwrap();
        assert!(decode_cilium_node(&nameless).is_err());
    }
}
