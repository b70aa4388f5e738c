// SPDX-License-Identifier: Apache-2.0

//! The relay's peers from the cluster store: every node an agent registered under
//! `cilium/state/nodes/v1/<cluster>/`, at `<InternalIP>:<port>` (the agents'
//! `hubble-listen-address` port). Registrations are session keys, so a node whose agent
//! is gone for good leaves the list; one whose agent is only restarting stays, and the
//! relay reports it unavailable meanwhile.

use std::time::Duration;

use cilium_core::cluster::{Change, Informer, NODES_PREFIX, NodeRegistration};
use cilium_core::kvstore::KvStore;
use cilium_hubble::relay::Peer;
use tokio::sync::watch;

/// The peer of a node registration (`None` without an `InternalIP`).
pub fn peer_of(node: &NodeRegistration, port: u16) -> Option<Peer> {
    node.internal_ip().map(|ip| Peer {
        name: node.name.clone(),
        address: format!("{ip}:{port}"),
    })
}

fn log(msg: &str, fields: &str) {
    eprintln!("level=info subsys=hubble-relay msg=\"{msg}\" {fields}");
}

/// Follows the nodes of cluster `cluster` in `store`, publishing the peer list (sorted by
/// name) on `tx` after each change; returns when every receiver is gone. A store that
/// cannot be listed is retried every second.
pub async fn follow<S>(store: S, cluster: &str, port: u16, tx: watch::Sender<Vec<Peer>>)
where
    S: KvStore + Clone,
{
    let prefix = format!("{NODES_PREFIX}/{cluster}");
    let (mut informer, initial) = loop {
        match Informer::<S, NodeRegistration>::start(store.clone(), &prefix).await {
            Ok(started) => break started,
            Err(e) => {
                log(
                    "the cluster store is not reachable yet",
                    &format!("error=\"{e}\""),
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let publish = |informer: &Informer<S, NodeRegistration>| {
        let mut peers: Vec<Peer> = informer
            .cache()
            .values()
            .filter_map(|n| peer_of(n, port))
            .collect();
        peers.sort();
        tx.send_replace(peers);
    };
    publish(&informer);
    for change in initial {
        if let Change::Upsert { object, .. } = change {
            log("peer", &format!("node={}", object.name));
        }
    }
    loop {
        tokio::select! {
            change = informer.next() => match change {
                Ok(Change::Upsert { object, .. }) => log("peer added or changed", &format!("node={}", object.name)),
                Ok(Change::Delete { last, .. }) => log("peer gone", &format!("node={}", last.name)),
                Ok(Change::Invalid { key, error }) => log("skipping an invalid node registration", &format!("key={key} error=\"{error}\"")),
                Err(e) => {
                    log("watching the nodes failed; retrying", &format!("error=\"{e}\""));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            () = tx.closed() => return,
        }
        publish(&informer);
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
