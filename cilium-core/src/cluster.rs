// SPDX-License-Identifier: Apache-2.0

//! Cluster objects the agents and the operator share through the store, and the one way
//! they read them: an [`Informer`] (list, then watch from the list's revision, resuming
//! after lost changes by listing again), as a Kubernetes informer does. Every source is a
//! [`Watcher`]; [`Mapped`] and [`Grouped`] reshape one source's objects for a consumer.
//!
//! Keys follow Cilium's kvstore mode where Cilium has one (`nodes`, `ip`), and
//! `cilium/state/<kind>/v1/...` for what Kubernetes would otherwise hold. Object shapes
//! follow the Kubernetes/Cilium schemas (metadata, spec, status), JSON in the store.
//!
//! ```
//! use cilium_core::cluster::{CiliumNode, Informer, Change, CILIUM_NODES_PREFIX};
//! use cilium_core::kvstore::{FileStore, KvStore};
//! # let dir = std::env::temp_dir().join(format!("crs-inf-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! let store = std::sync::Arc::new(FileStore::open(dir.join("store.log")).unwrap());
//! # ready(async {
//! let node = CiliumNode::new("k8s-w1", "192.168.10.101".parse().unwrap());
//! store.put(&node.key(), &serde_json::to_vec(&node).unwrap()).await.unwrap();
//! let (informer, initial) = Informer::<_, CiliumNode>::start(store.clone(), CILIUM_NODES_PREFIX).await.unwrap();
//! assert!(matches!(&initial[0], Change::Upsert { object, .. } if object.metadata.name == "k8s-w1"));
//! assert_eq!(informer.cache().len(), 1);
//! # });
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # fn ready(f: impl std::future::Future<Output = ()>) {
//! #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
//! #     let mut f = std::pin::pin!(f);
//! #     assert!(f.as_mut().poll(&mut cx).is_ready());
//! # }
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::kvstore::{EventKind, KvError, KvStore, KvWatch};

mod adapters;
pub use adapters::{Grouped, Mapped};

/// Node registrations (`<cluster>/<node>`, session keys of each agent).
pub const NODES_PREFIX: &str = "cilium/state/nodes/v1";
/// CiliumNode objects (`<node>`): the operator writes the pod CIDRs into them.
pub const CILIUM_NODES_PREFIX: &str = "cilium/state/ciliumnodes/v1";
/// The cluster's ipcache (`<cluster>/<ip>`, session keys of the owning agent).
pub const IPCACHE_PREFIX: &str = "cilium/state/ip/v1";
/// Pods (`<namespace>/<name>`), Kubernetes `Pod` objects: labels and spec from whoever
/// creates them, `status.podIP` / `hostIP` / `phase` once the pod runs.
pub const PODS_PREFIX: &str = "cilium/state/pods/v1";
/// Network policies, one document per origin (`<kind>/<namespace>/<name>`).
pub const POLICIES_PREFIX: &str = "cilium/state/policies/v1";
/// Kubernetes `Service` objects (`<namespace>/<name>`).
pub const SERVICES_PREFIX: &str = "cilium/state/services/v1";
/// Kubernetes `Endpoints` objects (`<namespace>/<name>`), written by the operator from the
/// running pods each service selects.
pub const ENDPOINTS_PREFIX: &str = "cilium/state/endpoints/v1";

/// A node's address of one kind (Cilium's `node.Address`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddress {
    /// `InternalIP`, `ExternalIP`, `CiliumInternalIP`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// The address.
    #[serde(rename = "IP")]
    pub ip: Ipv4Addr,
}

/// What an agent announces about its node (Cilium's `node.Node`, the fields used here).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRegistration {
    /// Node name.
    #[serde(rename = "Name")]
    pub name: String,
    /// Cluster name.
    #[serde(rename = "Cluster")]
    pub cluster: String,
    /// Addresses (the `InternalIP` is the one other nodes route to).
    #[serde(rename = "IPAddresses")]
    pub addresses: Vec<NodeAddress>,
    /// The pod CIDR.
    #[serde(rename = "IPv4AllocCIDR")]
    pub ipv4_alloc_cidr: Option<Ipv4Net>,
    /// The health endpoint's IP.
    #[serde(
        rename = "IPv4HealthIP",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_health_ip: Option<Ipv4Addr>,
}

impl NodeRegistration {
    /// The store key: `cilium/state/nodes/v1/<cluster>/<name>`.
    pub fn key(&self) -> String {
        format!("{NODES_PREFIX}/{}/{}", self.cluster, self.name)
    }

    /// The node's `InternalIP`.
    pub fn internal_ip(&self) -> Option<Ipv4Addr> {
        self.addresses
            .iter()
            .find(|a| a.kind == "InternalIP")
            .map(|a| a.ip)
    }
}

/// Kubernetes object metadata (the fields used here).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// Name.
    pub name: String,
    /// Namespace (empty for cluster-scoped objects).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A CiliumNode address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CiliumNodeAddress {
    /// `InternalIP`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The address.
    pub ip: Ipv4Addr,
}

/// `spec.ipam` of a CiliumNode.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CiliumNodeIpam {
    /// The pod CIDRs the operator allocated (cluster-pool IPAM).
    #[serde(rename = "podCIDRs", default)]
    pub pod_cidrs: Vec<Ipv4Net>,
}

/// `spec` of a CiliumNode.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CiliumNodeSpec {
    /// The node's addresses.
    #[serde(default)]
    pub addresses: Vec<CiliumNodeAddress>,
    /// IPAM.
    #[serde(default)]
    pub ipam: CiliumNodeIpam,
}

/// `status.ipam` of a CiliumNode.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CiliumNodeIpamStatus {
    /// The operator's error, e.g. an exhausted pool.
    #[serde(rename = "operator-status", default)]
    pub operator_status: OperatorStatus,
}

/// The operator's verdict on a node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorStatus {
    /// Empty when all is well.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// `status` of a CiliumNode.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CiliumNodeStatus {
    /// IPAM.
    #[serde(default)]
    pub ipam: CiliumNodeIpamStatus,
}

/// A CiliumNode (`cilium.io/v2`): the agent creates it, the operator fills in the pod
/// CIDRs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CiliumNode {
    /// `cilium.io/v2`.
    pub api_version: String,
    /// `CiliumNode`.
    pub kind: String,
    /// Name = the node's name.
    pub metadata: ObjectMeta,
    /// Spec.
    #[serde(default)]
    pub spec: CiliumNodeSpec,
    /// Status.
    #[serde(default)]
    pub status: CiliumNodeStatus,
}

impl CiliumNode {
    /// A CiliumNode for a node with this InternalIP and no pod CIDR yet.
    pub fn new(name: &str, internal_ip: Ipv4Addr) -> Self {
        CiliumNode {
            api_version: "cilium.io/v2".into(),
            kind: "CiliumNode".into(),
            metadata: ObjectMeta {
                name: name.into(),
                ..ObjectMeta::default()
            },
            spec: CiliumNodeSpec {
                addresses: vec![CiliumNodeAddress {
                    kind: "InternalIP".into(),
                    ip: internal_ip,
                }],
                ipam: CiliumNodeIpam::default(),
            },
            status: CiliumNodeStatus::default(),
        }
    }

    /// The store key: `cilium/state/ciliumnodes/v1/<name>`.
    pub fn key(&self) -> String {
        format!("{CILIUM_NODES_PREFIX}/{}", self.metadata.name)
    }
}

/// An ipcache entry (Cilium's `IPIdentityPair`): an endpoint's IP, its identity and the
/// node it lives on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpIdentityPair {
    /// The endpoint's IP.
    #[serde(rename = "IP")]
    pub ip: Ipv4Addr,
    /// The node's IP (the tunnel endpoint in tunnel mode).
    #[serde(rename = "HostIP")]
    pub host_ip: Ipv4Addr,
    /// The security identity.
    #[serde(rename = "ID")]
    pub id: u32,
    /// Encryption key index (0).
    #[serde(rename = "Key", default)]
    pub key: u8,
    /// The pod's namespace.
    #[serde(
        rename = "K8sNamespace",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub namespace: String,
    /// The pod's name.
    #[serde(
        rename = "K8sPodName",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub pod: String,
    /// The pod's named container ports (policies' named ports resolve against them).
    #[serde(rename = "NamedPorts", default, skip_serializing_if = "Vec::is_empty")]
    pub named_ports: Vec<NamedPort>,
}

/// A named container port (Cilium's `NamedPort`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NamedPort {
    /// The port's name.
    #[serde(rename = "Name")]
    pub name: String,
    /// Its number.
    #[serde(rename = "Port")]
    pub port: u16,
    /// `TCP`, `UDP` or `SCTP`.
    #[serde(rename = "Protocol")]
    pub protocol: String,
}

impl NamedPort {
    /// The IP protocol number of its protocol (6, 17, 132), or None for an unknown one.
    pub fn proto_number(&self) -> Option<u8> {
        match self.protocol.to_ascii_uppercase().as_str() {
            "TCP" | "" => Some(6),
            "UDP" => Some(17),
            "SCTP" => Some(132),
            _ => None,
        }
    }
}

impl IpIdentityPair {
    /// The store key: `cilium/state/ip/v1/<cluster>/<ip>`.
    pub fn key(&self, cluster: &str) -> String {
        format!("{IPCACHE_PREFIX}/{cluster}/{}", self.ip)
    }
}

/// A change seen by an [`Informer`].
#[derive(Debug, Clone, PartialEq)]
pub enum Change<T> {
    /// Created or changed.
    Upsert {
        /// The store key.
        key: String,
        /// The object now.
        object: T,
    },
    /// Deleted.
    Delete {
        /// The store key.
        key: String,
        /// The object as it was last seen.
        last: T,
    },
    /// A value under the prefix that is not a valid object (left out of the cache).
    Invalid {
        /// The store key.
        key: String,
        /// Why it does not decode.
        error: String,
    },
}

/// One kind of cluster object kept up to date, whatever the source: the cluster store's
/// [`Informer`] or a Kubernetes watch (`cilium_k8s::watch::Informer`). What the agent and
/// the operator consume, so that a source slots in without touching them.
pub trait Watcher<T> {
    /// Why the source cannot be read right now (the watcher stays usable).
    type Error: std::fmt::Display;
    /// The objects as last seen, by key.
    fn objects(&self) -> &BTreeMap<String, T>;
    /// The next change (waits for one).
    fn next_change(&mut self) -> impl Future<Output = Result<Change<T>, Self::Error>> + Send;
}

impl<S, T> Watcher<T> for Informer<S, T>
where
    S: KvStore,
    T: Clone + PartialEq + Send + Sync,
{
    type Error = KvError;

    fn objects(&self) -> &BTreeMap<String, T> {
        self.cache()
    }

    fn next_change(&mut self) -> impl Future<Output = Result<Change<T>, KvError>> + Send {
        self.next()
    }
}

/// The objects under a prefix, kept up to date: list, then watch from the list's revision;
/// when the store has dropped changes the watch missed, list again and report the
/// difference. Consumers never read the store directly.
#[derive(Debug)]
pub struct Informer<S: KvStore, T> {
    store: S,
    prefix: String,
    cache: BTreeMap<String, T>,
    watch: S::Watch,
    pending: VecDeque<Change<T>>,
    decode: Decoder<T>,
}

/// Turns a stored value (and its key) into an object.
pub type Decoder<T> = fn(&str, &[u8]) -> Result<T, String>;

fn json<T: DeserializeOwned>(_key: &str, value: &[u8]) -> Result<T, String> {
    serde_json::from_slice(value).map_err(|e| e.to_string())
}

impl<S: KvStore, T: DeserializeOwned + Clone + PartialEq> Informer<S, T> {
    /// Lists the prefix (every object as an `Upsert`) and starts watching after it; values
    /// are JSON.
    pub async fn start(store: S, prefix: &str) -> Result<(Self, Vec<Change<T>>), KvError> {
        Self::start_with(store, prefix, json::<T>).await
    }
}

impl<S: KvStore, T: Clone + PartialEq> Informer<S, T> {
    /// [`Informer::start`] for values in another form (`decode`: key and value to object).
    pub async fn start_with(
        store: S,
        prefix: &str,
        decode: Decoder<T>,
    ) -> Result<(Self, Vec<Change<T>>), KvError> {
        let prefix = format!("{}/", prefix.trim_end_matches('/'));
        let (items, revision) = store.list_prefix_revision(&prefix).await?;
        let watch = store.watch_prefix(&prefix, revision).await?;
        let mut informer = Informer {
            store,
            prefix,
            cache: BTreeMap::new(),
            watch,
            pending: VecDeque::new(),
            decode,
        };
        let mut initial = Vec::new();
        for (key, value) in items {
            match informer.decoded(&key, &value) {
                Ok(object) => {
                    informer.cache.insert(key.clone(), object.clone());
                    initial.push(Change::Upsert { key, object });
                }
                Err(invalid) => initial.push(invalid),
            }
        }
        Ok((informer, initial))
    }

    fn decoded(&self, key: &str, value: &[u8]) -> Result<T, Change<T>> {
        (self.decode)(key, value).map_err(|error| Change::Invalid {
            key: key.to_owned(),
            error,
        })
    }

    /// The objects as last seen, by key.
    pub fn cache(&self) -> &BTreeMap<String, T> {
        &self.cache
    }

    /// The next change (waits for one). Errors are the store's (unavailable); the informer
    /// stays usable and resumes where it was.
    pub async fn next(&mut self) -> Result<Change<T>, KvError> {
        loop {
            if let Some(c) = self.pending.pop_front() {
                return Ok(c);
            }
            match self.watch.next().await {
                Ok(event) => {
                    if let Some(change) = self.apply(event.key, event.kind) {
                        return Ok(change);
                    }
                }
                Err(KvError::Compacted { .. }) => self.relist().await?,
                Err(e) => return Err(e),
            }
        }
    }

    fn apply(&mut self, key: String, kind: EventKind) -> Option<Change<T>> {
        match kind {
            EventKind::Put(value) => {
                let decoded = (self.decode)(&key, &value);
                put(&mut self.cache, key, decoded)
            }
            EventKind::Delete => self
                .cache
                .remove(&key)
                .map(|last| Change::Delete { key, last }),
        }
    }

    /// Lists again after lost changes and queues the difference with the cache.
    async fn relist(&mut self) -> Result<(), KvError> {
        let (items, revision) = self.store.list_prefix_revision(&self.prefix).await?;
        self.watch = self.store.watch_prefix(&self.prefix, revision).await?;
        let mut seen = std::collections::BTreeSet::new();
        for (key, value) in items {
            seen.insert(key.clone());
            if let Some(c) = self.apply(key, EventKind::Put(value)) {
                self.pending.push_back(c);
            }
        }
        let gone: Vec<String> = self
            .cache
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(c) = self.apply(key, EventKind::Delete) {
                self.pending.push_back(c);
            }
        }
        Ok(())
    }
}

/// Puts a decoded object into a cache by key and returns what that changes: `Upsert` for a
/// new or changed object, nothing for the same object again, `Invalid` for one that does not
/// decode (the object the key held before is gone).
fn put<T: Clone + PartialEq>(
    cache: &mut BTreeMap<String, T>,
    key: String,
    decoded: Result<T, String>,
) -> Option<Change<T>> {
    match decoded {
        Ok(object) => {
            if cache.get(&key) == Some(&object) {
                return None;
            }
            cache.insert(key.clone(), object.clone());
            Some(Change::Upsert { key, object })
        }
        Err(error) => {
            cache.remove(&key);
            Some(Change::Invalid { key, error })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kvstore::FileStore;
    use std::sync::Arc;

    /// The output of a future that is ready at its first poll.
    pub(super) fn ready<T>(f: impl Future<Output = T>) -> T {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let mut f = std::pin::pin!(f);
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("not ready"),
        }
    }

    #[test]
    fn informer_lists_then_follows_and_recovers_lost_changes() {
        let dir = std::env::temp_dir().join(format!("crs-informer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Arc::new(FileStore::open(dir.join("s.log")).unwrap());
        let a = CiliumNode::new("a", Ipv4Addr::new(192, 168, 10, 100));
        ready(store.put(&a.key(), &serde_json::to_vec(&a).unwrap())).unwrap();
        ready(store.put(&format!("{CILIUM_NODES_PREFIX}/bad"), b"{")).unwrap();
        let (mut inf, initial) = ready(Informer::<_, CiliumNode>::start(
            store.clone(),
            CILIUM_NODES_PREFIX,
        ))
        .unwrap();
        assert_eq!(initial.len(), 2);
        assert!(matches!(initial[1], Change::Invalid { .. }));
        // A change, an unchanged rewrite (not reported), a deletion.
        let mut a2 = a.clone();
        a2.spec.ipam.pod_cidrs = vec!["172.20.0.0/24".parse().unwrap()];
        ready(store.put(&a.key(), &serde_json::to_vec(&a2).unwrap())).unwrap();
        ready(store.put(&a.key(), &serde_json::to_vec(&a2).unwrap())).unwrap();
        ready(store.delete(&a.key())).unwrap();
        assert_eq!(
            ready(inf.next()).unwrap(),
            Change::Upsert {
                key: a.key(),
                object: a2.clone()
            }
        );
        // Through the watcher interface the consumers use.
        assert_eq!(
            ready(Watcher::next_change(&mut inf)).unwrap(),
            Change::Delete {
                key: a.key(),
                last: a2
            }
        );
        // The watch falls far behind: the informer lists again and reports the difference.
        let b = CiliumNode::new("b", Ipv4Addr::new(192, 168, 10, 101));
        ready(store.put(&b.key(), &serde_json::to_vec(&b).unwrap())).unwrap();
        for i in 0..5000u32 {
            ready(store.put("cilium/state/churn/v1/x", &i.to_be_bytes())).unwrap();
        }
        assert_eq!(
            ready(inf.next()).unwrap(),
            Change::Upsert {
                key: b.key(),
                object: b
            }
        );
        assert_eq!(inf.cache().len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
