// SPDX-License-Identifier: Apache-2.0

//! The node's part in the cluster (kvstore mode): it announces itself and its endpoints,
//! and learns the other nodes and their endpoints.
//!
//! - Node registration `cilium/state/nodes/v1/<cluster>/<node>` and one ipcache entry
//!   `cilium/state/ip/v1/<cluster>/<ip>` per local endpoint, all session keys, written again
//!   every [`RESYNC`] (so an etcd outage or a lost session heals), stale ones of this node
//!   removed.
//! - Other nodes (an informer on the node registrations): with `routing-mode=native` and
//!   `auto-direct-node-routes`, a route to each node's pod CIDR via its node IP, removed
//!   when the node leaves; each node IP in `cilium_ipcache_v2` as `remote-node` (6).
//! - Other nodes' endpoints (an informer on the ipcache): each IP with its identity and
//!   node in `cilium_ipcache_v2`, so policy sees remote pods' identities.
//! - Every identity of the cluster (an informer on the `id` keys) in the policy engine, so
//!   a rule selecting pods of other nodes allows their identities.
//! - Kubernetes Services and Endpoints (informers) as load-balancer frontends, and the
//!   policies of the store (an informer) in the policy engine.
//!
//! [`run`] does all this on the cluster store; [`run_k8s`] does the same from the Kubernetes
//! API ([`kubernetes`]: CiliumNodes, CiliumEndpoints, CiliumIdentities, Services and
//! EndpointSlices, Cilium's and Kubernetes' network policies), where CiliumNodes and
//! CiliumEndpoints announce the nodes and endpoints. Each loop below takes any
//! [`Watcher`] of what it consumes, so both sources share them.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use cilium_bpf::link::Netlink;
use cilium_bpf::types::RemoteEndpointInfo;
use cilium_core::LabelSet;
use cilium_core::cluster::{
    Change, ENDPOINTS_PREFIX, IPCACHE_PREFIX, Informer, IpIdentityPair, NODES_PREFIX, NodeAddress,
    NodeRegistration, POLICIES_PREFIX, SERVICES_PREFIX, Watcher,
};
use cilium_core::config::{AgentConfig, IdentityAllocationMode, RoutingMode};
use cilium_core::kvstore::{AnyStore, KvStore};

use crate::node::Node;

pub mod kubernetes;

/// How often the node writes its announcements again.
pub const RESYNC: Duration = Duration::from_secs(10);

/// Identity of other nodes' addresses.
const REMOTE_NODE: u32 = 6;
/// Identity of this node's addresses.
const HOST: u32 = 1;

fn log(level: &str, msg: &str, fields: &str) {
    eprintln!("level={level} subsys=cluster msg=\"{msg}\" {fields}");
}

fn remote_info(identity: u32, host: Ipv4Addr) -> RemoteEndpointInfo {
    let mut tunnel = [0u8; 16];
    tunnel[..4].copy_from_slice(&host.octets());
    RemoteEndpointInfo {
        sec_identity: identity,
        tunnel_endpoint: tunnel,
        ..RemoteEndpointInfo::default()
    }
}

/// This node's registration.
pub fn registration(node: &Node) -> NodeRegistration {
    NodeRegistration {
        name: node.name.clone(),
        cluster: node.cluster.clone(),
        addresses: vec![NodeAddress {
            kind: "InternalIP".into(),
            ip: node.ipv4,
        }],
        ipv4_alloc_cidr: Some(node.cidr),
        ipv4_health_ip: None,
    }
}

/// Runs the node's cluster duties on the cluster store until the process ends.
pub async fn run(node: Arc<Node>, config: AgentConfig) {
    write_host_entries(&node).await;
    let direct_routes = direct_routes(&config);
    let nodes_prefix = format!("{NODES_PREFIX}/{}", node.cluster);
    let ipcache_prefix = format!("{IPCACHE_PREFIX}/{}", node.cluster);
    let identities_prefix = format!("{}/id", cilium_identity::IDENTITIES_PREFIX);
    tokio::join!(
        announce(node.clone()),
        async {
            let nodes = informer(&node, &nodes_prefix).await;
            follow_nodes(node.clone(), direct_routes, nodes).await;
        },
        async {
            let ipcache = informer(&node, &ipcache_prefix).await;
            follow_ipcache(node.clone(), ipcache).await;
        },
        async {
            let ids = informer_with(&node, &identities_prefix, identity_entry).await;
            follow_identities(node.clone(), ids).await;
        },
        async {
            let services = informer(&node, SERVICES_PREFIX).await;
            let endpoints = informer(&node, ENDPOINTS_PREFIX).await;
            follow_services(
                node.clone(),
                services,
                endpoints,
                (SERVICES_PREFIX, ENDPOINTS_PREFIX),
            )
            .await;
        },
        async {
            let policies = informer(&node, POLICIES_PREFIX).await;
            follow_policies(
                node.clone(),
                policies,
                |key| owner_of(POLICIES_PREFIX, key),
                (),
            )
            .await;
        },
    );
}

/// Runs the node's cluster duties from the Kubernetes API until the process ends: the
/// same consumers as [`run`], fed by [`kubernetes`]' watchers, each started (and retried
/// every second while the API is away) on its own. Writes this node's own ipcache entries;
/// announces nothing (its CiliumNode and CiliumEndpoints do that).
pub async fn run_k8s(node: Arc<Node>, config: AgentConfig, client: kube::Client) {
    write_host_entries(&node).await;
    let direct_routes = direct_routes(&config);
    let cluster = node.cluster.clone();
    tokio::join!(
        async {
            let nodes = api_retry("ciliumnodes", || {
                kubernetes::nodes(client.clone(), cluster.clone())
            })
            .await;
            follow_nodes(node.clone(), direct_routes, nodes).await;
        },
        async {
            let ceps = api_retry("ciliumendpoints", || kubernetes::endpoints(client.clone())).await;
            follow_ipcache(node.clone(), ceps).await;
        },
        async {
            // The identities where they are allocated: CiliumIdentity objects, or (with
            // identity-allocation-mode=kvstore) the cluster store's id keys.
            if config.identity_allocation_mode == IdentityAllocationMode::Kvstore {
                let prefix = format!("{}/id", cilium_identity::IDENTITIES_PREFIX);
                let ids = informer_with(&node, &prefix, identity_entry).await;
                follow_identities(node.clone(), ids).await;
            } else {
                let ids = api_retry("ciliumidentities", || {
                    kubernetes::identities(client.clone())
                })
                .await;
                follow_identities(node.clone(), ids).await;
            }
        },
        async {
            let services = api_retry("services", || kubernetes::services(client.clone())).await;
            let slices = api_retry("endpointslices", || {
                kubernetes::service_endpoints(client.clone())
            })
            .await;
            follow_services(node.clone(), services, slices, ("", "")).await;
        },
        follow_k8s_policies(node.clone(), "CiliumNetworkPolicy", || {
            kubernetes::cilium_policies(client.clone(), "CiliumNetworkPolicy")
        }),
        follow_k8s_policies(node.clone(), "CiliumClusterwideNetworkPolicy", || {
            kubernetes::cilium_policies(client.clone(), "CiliumClusterwideNetworkPolicy")
        }),
        follow_k8s_policies(node.clone(), "NetworkPolicy", || {
            kubernetes::network_policies(client.clone())
        }),
        async {
            let name = node.name.clone();
            let pods = api_retry("pods", || kubernetes::local_pods(client.clone(), &name)).await;
            follow_pod_labels(node.clone(), pods, |key| {
                key.split_once('/')
                    .map(|(ns, pod)| (ns.to_owned(), Some(pod.to_owned())))
            })
            .await;
        },
        async {
            let namespaces =
                api_retry("namespaces", || kubernetes::namespaces(client.clone())).await;
            follow_pod_labels(node.clone(), namespaces, |key| Some((key.to_owned(), None))).await;
        },
    );
}

/// Relabels the local endpoints whose pod (or namespace) changed: `target` turns an
/// object's key into the namespace and, for a pod, its name. The first list is followed
/// too (an endpoint restored after a restart may have missed a change).
async fn follow_pod_labels<T, W: Watcher<T>>(
    node: Arc<Node>,
    (mut inf, initial): Started<W, T>,
    target: impl Fn(&str) -> Option<(String, Option<String>)>,
) {
    let mut pending: std::collections::VecDeque<_> = initial.into();
    loop {
        if let Change::Upsert { key, .. } = next_change(&mut pending, &mut inf).await
            && let Some((namespace, pod)) = target(&key)
        {
            node.relabel_pods(&namespace, pod.as_deref()).await;
        }
    }
}

/// The policies of one Kubernetes kind in the policy engine, under the origins the engine
/// gives their rules.
async fn follow_k8s_policies<W, F>(node: Arc<Node>, kind: &'static str, start: impl FnMut() -> F)
where
    W: Watcher<serde_json::Value>,
    F: Future<Output = Result<Started<W, serde_json::Value>, cilium_k8s::Error>>,
{
    let started = api_retry(kind, start).await;
    let report = node
        .k8s_client()
        .map(|client| kubernetes::Validity { client, kind });
    follow_policies(
        node,
        started,
        |key| cilium_k8s::convert::policy_origin(kind, key),
        report,
    )
    .await;
}

/// Where a policy's validity is recorded (on its object, in Kubernetes mode).
trait ReportValidity: Send + Sync {
    /// Records that the policy under `key` applies (`Ok`) or why not.
    fn report(&self, key: &str, result: Result<(), &str>) -> impl Future<Output = ()> + Send;
}

/// Nowhere (the cluster store's policies have no status).
impl ReportValidity for () {
    async fn report(&self, _key: &str, _result: Result<(), &str>) {}
}

impl<R: ReportValidity> ReportValidity for Option<R> {
    async fn report(&self, key: &str, result: Result<(), &str>) {
        if let Some(r) = self {
            r.report(key, result).await;
        }
    }
}

impl ReportValidity for kubernetes::Validity {
    async fn report(&self, key: &str, result: Result<(), &str>) {
        self.record(key, result).await;
    }
}

fn direct_routes(config: &AgentConfig) -> bool {
    config.routing_mode == RoutingMode::Native && config.auto_direct_node_routes
}

/// This node's own addresses (its IP and the router's) in the ipcache as `host`.
async fn write_host_entries(node: &Node) {
    for ip in [node.ipv4, node.router] {
        let _ = node
            .ipcache_upsert(ip, 32, &remote_info(HOST, node.ipv4))
            .await;
    }
}

/// Writes the registration and the endpoints' entries every [`RESYNC`], removing entries
/// of this node that no endpoint backs any more.
async fn announce(node: Arc<Node>) {
    let prefix = format!("{IPCACHE_PREFIX}/{}/", node.cluster);
    let mut failing = false;
    loop {
        let result: Result<(), String> = async {
            let reg = registration(&node);
            let value = serde_json::to_vec(&reg).map_err(|e| e.to_string())?;
            node.store()
                .put_ephemeral(&reg.key(), &value)
                .await
                .map_err(|e| e.to_string())?;
            let endpoints = node.endpoints().await;
            let mut mine = std::collections::BTreeSet::new();
            for ep in &endpoints {
                let pair = node.ip_identity_pair(ep);
                let key = pair.key(&node.cluster);
                let value = serde_json::to_vec(&pair).map_err(|e| e.to_string())?;
                node.store()
                    .put_ephemeral(&key, &value)
                    .await
                    .map_err(|e| e.to_string())?;
                mine.insert(key);
            }
            for (key, value) in node
                .store()
                .list_prefix(&prefix)
                .await
                .map_err(|e| e.to_string())?
            {
                let ours = serde_json::from_slice::<IpIdentityPair>(&value)
                    .is_ok_and(|p| p.host_ip == node.ipv4);
                if ours && !mine.contains(&key) {
                    let _ = node.store().delete(&key).await;
                }
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) if failing => {
                log(
                    "info",
                    "cluster store reachable again; announcements written",
                    "",
                );
                failing = false;
            }
            Err(e) if !failing => {
                log(
                    "warning",
                    "cannot announce this node to the cluster store; forwarding goes on with what is known",
                    &format!("error=\"{e}\""),
                );
                failing = true;
            }
            _ => {}
        }
        tokio::time::sleep(RESYNC).await;
    }
}

/// A watcher just started, and its first changes (the list).
pub type Started<W, T> = (W, Vec<Change<T>>);

type StoreInformer<T> = Informer<Arc<AnyStore>, T>;

/// Starts a source, retrying every second while it cannot list; `source` and `what` name it
/// in the log.
async fn retry<R, E, F>(source: &str, what: &str, mut start: impl FnMut() -> F) -> R
where
    E: std::fmt::Display,
    F: Future<Output = Result<R, E>>,
{
    loop {
        match start().await {
            Ok(started) => return started,
            Err(e) => {
                log(
                    "warning",
                    &format!("cannot list from {source}; retrying"),
                    &format!("{what} error=\"{e}\""),
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// [`retry`] for a Kubernetes watcher of `resource`.
async fn api_retry<R, F>(resource: &str, start: impl FnMut() -> F) -> R
where
    F: Future<Output = Result<R, cilium_k8s::Error>>,
{
    retry("the Kubernetes API", &format!("resource={resource}"), start).await
}

/// Starts an informer on the store (JSON values), retrying while the store is away.
async fn informer<T>(node: &Node, prefix: &str) -> Started<StoreInformer<T>, T>
where
    T: serde::de::DeserializeOwned + Clone + PartialEq,
{
    informer_with(node, prefix, |_, v| {
        serde_json::from_slice(v).map_err(|e| e.to_string())
    })
    .await
}

/// [`informer`] with a decoder of its own.
async fn informer_with<T: Clone + PartialEq>(
    node: &Node,
    prefix: &str,
    decode: cilium_core::cluster::Decoder<T>,
) -> Started<StoreInformer<T>, T> {
    retry("the cluster store", &format!("prefix={prefix}"), || {
        Informer::start_with(node.store().clone(), prefix, decode)
    })
    .await
}

/// The next change of a watcher: the initial ones first; while its source is away, it
/// tries again every second.
async fn next_change<T, W: Watcher<T>>(
    pending: &mut std::collections::VecDeque<Change<T>>,
    watcher: &mut W,
) -> Change<T> {
    loop {
        if let Some(c) = pending.pop_front() {
            return c;
        }
        match watcher.next_change().await {
            Ok(c) => return c,
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// The underlay device: the one holding the node's IP.
async fn underlay(nl: &Netlink, ip: Ipv4Addr) -> Option<u32> {
    nl.ipv4_addresses()
        .await
        .ok()?
        .into_iter()
        .find(|(_, a)| *a == ip)
        .map(|(idx, _)| idx)
}

/// Other nodes: their IPs in the ipcache as `remote-node`, routes to their pod CIDRs.
async fn follow_nodes<W: Watcher<NodeRegistration>>(
    node: Arc<Node>,
    direct_routes: bool,
    (mut inf, initial): Started<W, NodeRegistration>,
) {
    let mut pending: std::collections::VecDeque<_> = initial.into();
    let nl = match Netlink::open() {
        Ok(nl) => nl,
        Err(e) => {
            log("error", "netlink", &format!("error=\"{e}\""));
            return;
        }
    };
    loop {
        let change = next_change(&mut pending, &mut inf).await;
        match change {
            Change::Upsert { object, .. } => {
                if object.name == node.name {
                    continue;
                }
                let Some(ip) = object.internal_ip() else {
                    continue;
                };
                let _ = node
                    .ipcache_upsert(ip, 32, &remote_info(REMOTE_NODE, ip))
                    .await;
                if direct_routes && let Some(cidr) = object.ipv4_alloc_cidr {
                    match underlay(&nl, node.ipv4).await {
                        Some(dev) => match nl
                            .agent_route_via(cidr.network(), cidr.prefix_len(), ip, dev)
                            .await
                        {
                            Ok(()) => log(
                                "info",
                                "route to a node's pods",
                                &format!("node={} cidr={cidr} via={ip}", object.name),
                            ),
                            Err(e) => log(
                                "warning",
                                "adding a node route failed",
                                &format!("node={} error=\"{e}\"", object.name),
                            ),
                        },
                        None => log(
                            "warning",
                            "no device holds this node's IP: no route to other nodes",
                            &format!("ip={}", node.ipv4),
                        ),
                    }
                }
                node.cluster_nodes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(object.name.clone(), object);
            }
            Change::Delete { last, .. } => {
                if last.name == node.name {
                    continue;
                }
                if let Some(ip) = last.internal_ip() {
                    node.ipcache_remove(ip, 32).await;
                }
                if direct_routes && let Some(cidr) = last.ipv4_alloc_cidr {
                    let _ = nl.route_del(cidr.network(), cidr.prefix_len()).await;
                    log(
                        "info",
                        "node left; route removed",
                        &format!("node={} cidr={cidr}", last.name),
                    );
                }
                node.cluster_nodes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&last.name);
            }
            Change::Invalid { key, error } => {
                log(
                    "warning",
                    "skipping an invalid node registration",
                    &format!("key={key} error=\"{error}\""),
                );
            }
        }
    }
}

/// Other nodes' endpoints in the ipcache (this node's own are skipped).
async fn follow_ipcache<W: Watcher<IpIdentityPair>>(
    node: Arc<Node>,
    (mut inf, initial): Started<W, IpIdentityPair>,
) {
    let mut pending: std::collections::VecDeque<_> = initial.into();
    loop {
        let change = next_change(&mut pending, &mut inf).await;
        match change {
            Change::Upsert { object, .. } if object.host_ip != node.ipv4 => {
                node.remote_endpoints
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(object.ip, object.clone());
                if let Err(e) = node
                    .ipcache_upsert(object.ip, 32, &remote_info(object.id, object.host_ip))
                    .await
                {
                    log(
                        "warning",
                        "writing a remote endpoint to the ipcache failed",
                        &format!("ip={} error=\"{e}\"", object.ip),
                    );
                }
                if let Err(e) = node.policy_peer_ports(object.ip, &object.named_ports).await {
                    log(
                        "warning",
                        "writing the policy of a remote endpoint's named ports failed",
                        &format!("ip={} error=\"{e}\"", object.ip),
                    );
                }
            }
            Change::Delete { last, .. } if last.host_ip != node.ipv4 => {
                node.remote_endpoints
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&last.ip);
                node.ipcache_remove(last.ip, 32).await;
                if !last.named_ports.is_empty() {
                    let _ = node.policy_peer_ports(last.ip, &[]).await;
                }
            }
            Change::Invalid { key, error } => {
                log(
                    "warning",
                    "skipping an invalid ipcache entry",
                    &format!("key={key} error=\"{error}\""),
                );
            }
            _ => {}
        }
    }
}

/// An `id/<n>` key and its label set.
fn identity_entry(key: &str, value: &[u8]) -> Result<(u32, LabelSet), String> {
    let id = key
        .rsplit('/')
        .next()
        .and_then(|n| n.parse::<u32>().ok())
        .ok_or_else(|| format!("{key}: not an identity key"))?;
    let text = std::str::from_utf8(value).map_err(|e| e.to_string())?;
    let labels = cilium_identity::labels_from_kvstore_key(text)
        .ok_or_else(|| format!("{key}: labels {text:?} do not parse"))?;
    Ok((id, labels))
}

/// Every identity of the cluster in the policy engine.
async fn follow_identities<W: Watcher<(u32, LabelSet)>>(
    node: Arc<Node>,
    (mut inf, initial): Started<W, (u32, LabelSet)>,
) {
    let mut pending: std::collections::VecDeque<_> = initial.into();
    loop {
        let change = next_change(&mut pending, &mut inf).await;
        let result = match change {
            Change::Upsert {
                object: (id, labels),
                ..
            } => node.policy_identity_upsert(id, labels).await,
            Change::Delete { last: (id, _), .. } => node.policy_identity_remove(id).await,
            Change::Invalid { key, error } => {
                log(
                    "warning",
                    "skipping an invalid identity",
                    &format!("key={key} error=\"{error}\""),
                );
                Ok(0)
            }
        };
        if let Err(e) = result {
            log(
                "warning",
                "updating policy for a cluster identity failed",
                &format!("error=\"{e}\""),
            );
        }
    }
}

/// The `<ns>/<name>` of a key under `prefix` (the key itself when `prefix` is empty).
fn owner_of(prefix: &str, key: &str) -> String {
    key.strip_prefix(prefix)
        .unwrap_or(key)
        .trim_start_matches('/')
        .to_owned()
}

/// The key of `owner`'s object under `prefix` ([`owner_of`] reversed).
fn key_of(prefix: &str, owner: &str) -> String {
    if prefix.is_empty() {
        owner.to_owned()
    } else {
        format!("{prefix}/{owner}")
    }
}

/// Services (JSON `Service` objects) and their endpoints (JSON `Endpoints` objects, keyed
/// as their service) as load-balancer frontends; `prefixes` are the two watchers' key
/// prefixes (empty when keys are `<ns>/<name>`).
async fn follow_services<S, E>(
    node: Arc<Node>,
    (mut services, _): Started<S, serde_json::Value>,
    (mut endpoints, _): Started<E, serde_json::Value>,
    (services_prefix, endpoints_prefix): (&str, &str),
) where
    S: Watcher<serde_json::Value>,
    E: Watcher<serde_json::Value>,
{
    // Everything once (the start already programmed what existed; this catches up with
    // what changed in between), then each change.
    let mut dirty: std::collections::BTreeSet<String> = services
        .objects()
        .keys()
        .map(|k| owner_of(services_prefix, k))
        .collect();
    loop {
        for owner in std::mem::take(&mut dirty) {
            let svc = services.objects().get(&key_of(services_prefix, &owner));
            let eps = endpoints.objects().get(&key_of(endpoints_prefix, &owner));
            let wanted = svc
                .map(|s| crate::k8s::services_from_k8s(s, eps, node.ipv4))
                .unwrap_or_default();
            if let Err(e) = node.apply_k8s_service(&owner, wanted).await {
                log(
                    "warning",
                    "programming a service failed",
                    &format!("service={owner} error=\"{e}\""),
                );
            }
        }
        let changed = tokio::select! {
            c = services.next_change() => c.map(|c| (services_prefix, c)).map_err(|_| ()),
            c = endpoints.next_change() => c.map(|c| (endpoints_prefix, c)).map_err(|_| ()),
        };
        match changed {
            Ok((
                prefix,
                Change::Upsert { key, .. }
                | Change::Delete { key, .. }
                | Change::Invalid { key, .. },
            )) => {
                dirty.insert(owner_of(prefix, &key));
            }
            Err(()) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// Policy documents (JSON) in the policy engine; `origin` names a key's document as the
/// engine names its rules (`<kind>/<namespace>/<name>`).
async fn follow_policies<W: Watcher<serde_json::Value>>(
    node: Arc<Node>,
    (mut inf, initial): Started<W, serde_json::Value>,
    origin: impl Fn(&str) -> String,
    report: impl ReportValidity,
) {
    let mut pending: std::collections::VecDeque<_> = initial.into();
    loop {
        let change = next_change(&mut pending, &mut inf).await;
        let result = match &change {
            Change::Upsert { key, object } => {
                let applied = node.apply_stored_policy(&origin(key), Some(object)).await;
                report
                    .report(key, applied.as_ref().map(drop).map_err(String::as_str))
                    .await;
                applied
            }
            Change::Delete { key, .. } => node.apply_stored_policy(&origin(key), None).await,
            Change::Invalid { key, error } => {
                report.report(key, Err(error)).await;
                Err(format!("{key}: {error}"))
            }
        };
        match result {
            Ok(n) if n > 0 => log(
                "info",
                "policy from the cluster applied",
                &format!("endpoints-updated={n}"),
            ),
            Ok(_) => {}
            Err(e) => log(
                "warning",
                "a policy from the cluster does not apply",
                &format!("error=\"{e}\""),
            ),
        }
    }
}
