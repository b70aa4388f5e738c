// SPDX-License-Identifier: Apache-2.0

//! The ipcache: `cilium_ipcache_v2` (which identity an IP has, and behind which node), and
//! this node's endpoints as the cluster's ipcache announces them (`cluster.rs` follows the
//! other nodes' entries and writes them here).

use std::net::Ipv4Addr;

use cilium_bpf::DatapathError;
use cilium_bpf::maps::IpcacheMap;
use cilium_bpf::types::RemoteEndpointInfo;
use cilium_core::kvstore::{AnyStore, KvStore};

use super::Node;
use crate::endpoint::EndpointRecord;

/// `cilium_ipcache_v2` (none without a datapath).
#[derive(Debug)]
pub(super) struct IpCache {
    map: Option<IpcacheMap>,
}

impl IpCache {
    /// Writes through `map`; without one every write is a no-op.
    pub(super) fn new(map: Option<IpcacheMap>) -> Self {
        IpCache { map }
    }

    /// Writes (or replaces) an entry.
    pub(super) fn upsert(
        &mut self,
        ip: Ipv4Addr,
        prefix_len: u8,
        info: &RemoteEndpointInfo,
    ) -> Result<(), DatapathError> {
        match self.map.as_mut() {
            Some(map) => map.upsert_ipv4(ip, prefix_len, info),
            None => Ok(()),
        }
    }

    /// Removes an entry (best effort).
    pub(super) fn remove(&mut self, ip: Ipv4Addr, prefix_len: u8) {
        if let Some(map) = self.map.as_mut() {
            let _ = map.remove_ipv4(ip, prefix_len);
        }
    }
}

impl Node {
    /// Writes (or replaces) a `cilium_ipcache_v2` entry (no-op without a datapath).
    pub(crate) async fn ipcache_upsert(
        &self,
        ip: Ipv4Addr,
        prefix_len: u8,
        info: &RemoteEndpointInfo,
    ) -> Result<(), String> {
        let mut st = self.state.lock().await;
        st.ipcache
            .upsert(ip, prefix_len, info)
            .map_err(|e| e.to_string())
    }

    /// Removes a `cilium_ipcache_v2` entry (no-op without a datapath).
    pub(crate) async fn ipcache_remove(&self, ip: Ipv4Addr, prefix_len: u8) {
        let mut st = self.state.lock().await;
        st.ipcache.remove(ip, prefix_len);
    }

    /// The cluster ipcache entry of an endpoint.
    pub(crate) fn ip_identity_pair(
        &self,
        ep: &EndpointRecord,
    ) -> cilium_core::cluster::IpIdentityPair {
        cilium_core::cluster::IpIdentityPair {
            ip: ep.ipv4,
            host_ip: self.ipv4,
            id: ep.identity,
            key: 0,
            namespace: ep.k8s_namespace.clone(),
            pod: ep.k8s_pod_name.clone(),
            named_ports: ep.named_ports.clone(),
        }
    }

    /// Announces an endpoint's IP and identity to the cluster (a session key). A failure is
    /// logged; the periodic resync writes it again.
    pub(crate) async fn publish_endpoint(&self, ep: &EndpointRecord) {
        // Kubernetes mode: the endpoint's CiliumEndpoint is written by its sync loop.
        self.endpoints_changed.notify_one();
        // Only other nodes read these, and only a cluster store has other nodes.
        if !matches!(**self.store(), AnyStore::Etcd(_)) {
            return;
        }
        let pair = self.ip_identity_pair(ep);
        // Bounded: the endpoint works without it, and the resync loop writes it later.
        let result = match serde_json::to_vec(&pair) {
            Ok(v) => tokio::time::timeout(
                std::time::Duration::from_secs(1),
                self.store.put_ephemeral(&pair.key(&self.cluster), &v),
            )
            .await
            .unwrap_or_else(|_| {
                Err(cilium_core::kvstore::KvError::Unavailable(
                    "timed out".into(),
                ))
            }),
            Err(e) => Err(cilium_core::kvstore::KvError::Unavailable(e.to_string())),
        };
        if let Err(e) = result {
            eprintln!(
                "level=warning msg=\"publishing an endpoint to the cluster failed; will retry\" endpoint={} error=\"{e}\"",
                ep.id
            );
        }
    }

    /// Withdraws an endpoint's ipcache entry from the cluster.
    pub(crate) async fn unpublish_endpoint(&self, ep: &EndpointRecord) {
        self.endpoints_changed.notify_one();
        if !matches!(**self.store(), AnyStore::Etcd(_)) {
            return;
        }
        let key = self.ip_identity_pair(ep).key(&self.cluster);
        let deleted =
            tokio::time::timeout(std::time::Duration::from_secs(1), self.store.delete(&key))
                .await
                .unwrap_or_else(|_| {
                    Err(cilium_core::kvstore::KvError::Unavailable(
                        "timed out".into(),
                    ))
                });
        if let Err(e) = deleted {
            eprintln!(
                "level=warning msg=\"withdrawing an endpoint from the cluster failed\" endpoint={} error=\"{e}\"",
                ep.id
            );
        }
    }
}
