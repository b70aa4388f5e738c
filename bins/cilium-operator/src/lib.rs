// SPDX-License-Identifier: Apache-2.0

//! The cilium-rs operator, as a library so tests and the lab can run it in-process.
//!
//! Two modes. On the Kubernetes API ([`run_k8s`], the [`k8s`] module): a Lease elects the
//! leader, which runs cluster-pool IPAM on CiliumNode objects and garbage-collects
//! CiliumIdentities, CiliumEndpoints and the CiliumNodes of gone Nodes. On the cluster
//! store ([`run`]): one operator leads at a time ([`acquire_leadership`]: a session key in
//! the store; when the leader dies its session ends and the key goes, and a standby takes
//! over). The leader runs:
//! - cluster-pool IPAM ([`ipam_loop`]): every CiliumNode without a pod CIDR gets the next
//!   one from `cluster-pool-ipv4-cidr` / `cluster-pool-ipv4-mask-size`, written into
//!   `spec.ipam.podCIDRs` with a compare-and-swap; CIDRs already in CiliumNodes are taken
//!   back first (a restarted operator hands out nothing twice); a deleted CiliumNode frees
//!   its CIDR; an exhausted pool is written into `status.ipam.operator-status.error`;
//! - identity GC ([`identity_gc_loop`]): identities no node is registered as a user of for
//!   `identity-heartbeat-timeout` are deleted;
//! - endpoints ([`endpoints_loop`], Kubernetes' endpoint controller): each Service's
//!   Endpoints object lists the running pods its selector matches, with the service's
//!   ports resolved against the pods (`targetPort` by number or by container port name).
//!
//! ```no_run
//! # async fn run() -> Result<(), String> {
//! use std::sync::Arc;
//! use cilium_core::kvstore::{AnyStore, FileStore};
//! use cilium_operator::{OperatorConfig, run};
//!
//! let store = Arc::new(AnyStore::File(FileStore::open("/tmp/store.log").map_err(|e| e.to_string())?));
//! let config = OperatorConfig::new("op-1", "172.20.0.0/16", 24)?;
//! run(store, config).await
//! # }
//! ```
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cilium_core::cluster::{
    CILIUM_NODES_PREFIX, Change, CiliumNode, ENDPOINTS_PREFIX, Informer, PODS_PREFIX,
    SERVICES_PREFIX, Watcher,
};
use cilium_core::kvstore::{AnyStore, EventKind, KvStore, KvWatch};
use cilium_identity::KvBackend;
use cilium_ipam::{ClusterPool, ClusterPoolConfig, IpamError};
use ipnet::{IpNet, Ipv4Net};

pub mod k8s;
pub use k8s::run_k8s;

/// The key the leader holds (a session key).
pub const LEADER_KEY: &str = "cilium/state/operator/v1/leader";

/// What the operator needs to know.
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// This operator's name in leader election.
    pub id: String,
    /// `cluster-pool-ipv4-cidr` and `cluster-pool-ipv4-mask-size`.
    pub cluster_pool: ClusterPoolConfig,
    /// `identity-gc-interval`: how often unused identities are looked for.
    pub identity_gc_interval: Duration,
    /// `identity-heartbeat-timeout`: how long an identity must stay unused to be deleted.
    pub identity_heartbeat_timeout: Duration,
    /// `cilium-endpoint-gc-interval`: how often CiliumEndpoints of gone pods are looked
    /// for (Kubernetes mode).
    pub endpoint_gc_interval: Duration,
    /// `nodes-gc-interval`: how often CiliumNodes whose Node is gone are looked for
    /// (Kubernetes mode).
    pub nodes_gc_interval: Duration,
    /// `leader-election-lease-duration`: how long a leader that stopped renewing keeps
    /// the lead.
    pub lease_duration: Duration,
}

impl OperatorConfig {
    /// Cilium's defaults (identity GC every 15 minutes, unused for 30; endpoint and
    /// CiliumNode GC every 5 minutes; a 15 s lease) for a pool.
    pub fn new(id: &str, pool_cidrs: &str, mask_size: u8) -> Result<Self, String> {
        Ok(OperatorConfig {
            id: id.to_owned(),
            cluster_pool: ClusterPoolConfig::ipv4(pool_cidrs, mask_size)
                .map_err(|e| format!("cluster-pool-ipv4-cidr: {e}"))?,
            identity_gc_interval: Duration::from_secs(15 * 60),
            identity_heartbeat_timeout: Duration::from_secs(30 * 60),
            endpoint_gc_interval: Duration::from_secs(5 * 60),
            nodes_gc_interval: Duration::from_secs(5 * 60),
            lease_duration: Duration::from_secs(15),
        })
    }
}

pub(crate) fn log(level: &str, msg: &str, fields: &str) {
    eprintln!("level={level} subsys=cilium-operator msg=\"{msg}\" {fields}");
}

/// Waits until this operator holds [`LEADER_KEY`].
pub async fn acquire_leadership<S: KvStore>(store: &S, id: &str) -> Result<(), String> {
    let mut announced = false;
    loop {
        if store
            .create_only_ephemeral(LEADER_KEY, id.as_bytes())
            .await
            .map_err(|e| format!("leader election: {e}"))?
        {
            return Ok(());
        }
        if !announced {
            let leader = store
                .get(LEADER_KEY)
                .await
                .ok()
                .flatten()
                .map(|v| String::from_utf8_lossy(&v).into_owned())
                .unwrap_or_default();
            log(
                "info",
                "another operator leads; standing by",
                &format!("leader={leader}"),
            );
            announced = true;
        }
        // Wait for the key to go (or a second, in case the deletion was missed).
        let (_, rev) = store
            .list_prefix_revision(LEADER_KEY)
            .await
            .map_err(|e| format!("leader election: {e}"))?;
        let mut watch = store
            .watch_prefix(LEADER_KEY, rev)
            .await
            .map_err(|e| format!("leader election: {e}"))?;
        let deleted = async {
            while let Ok(e) = watch.next().await {
                if e.key == LEADER_KEY && e.kind == EventKind::Delete {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), deleted).await;
    }
}

/// Leads (after winning the election) until an error or the loss of leadership.
pub async fn run(store: Arc<AnyStore>, config: OperatorConfig) -> Result<(), String> {
    acquire_leadership(&*store, &config.id).await?;
    log("info", "leading", &format!("id={}", config.id));
    let check = {
        let store = store.clone();
        let id = config.id.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                match store.get(LEADER_KEY).await {
                    Ok(Some(v)) if v == id.as_bytes() => {}
                    Ok(_) => {
                        return "lost leadership (the leader key is gone or another's)".to_owned();
                    }
                    // Unreachable store: keep leading; the key tells when it is back.
                    Err(_) => {}
                }
            }
        }
    };
    tokio::select! {
        r = ipam_loop(store.clone(), config.cluster_pool.clone()) => r,
        r = endpoints_loop(store.clone()) => r,
        r = identity_gc_loop(store.clone(), config.identity_gc_interval, config.identity_heartbeat_timeout) => r,
        why = check => Err(why),
    }
}

/// Where the IPAM loop writes a node's pod CIDR, or why it has none.
trait NodeSink {
    /// Writes `cidr` into CiliumNode `name` if it has none yet; with no CIDR, records
    /// `error` in its status instead.
    fn write(
        &self,
        name: &str,
        cidr: Option<Ipv4Net>,
        error: &str,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

/// CiliumNodes in the cluster store.
struct StoreNodes(Arc<AnyStore>);

impl NodeSink for StoreNodes {
    async fn write(&self, name: &str, cidr: Option<Ipv4Net>, error: &str) -> Result<(), String> {
        write_node(&*self.0, name, cidr, error).await
    }
}

/// CiliumNodes in the Kubernetes API.
struct ApiNodes(kube::Api<kube::api::DynamicObject>);

impl NodeSink for ApiNodes {
    async fn write(&self, name: &str, cidr: Option<Ipv4Net>, error: &str) -> Result<(), String> {
        match cidr {
            Some(c) => cilium_k8s::nodes::set_pod_cidr(&self.0, name, c)
                .await
                .map(drop),
            None => cilium_k8s::nodes::set_operator_error(&self.0, name, error).await,
        }
        .map_err(|e| e.to_string())
    }
}

/// Writes `cidr` into a CiliumNode that has none (compare-and-swap on its stored bytes, so
/// a concurrent change is never overwritten); `error` instead records why there is none.
async fn write_node<S: KvStore>(
    store: &S,
    name: &str,
    cidr: Option<Ipv4Net>,
    error: &str,
) -> Result<(), String> {
    let key = format!("{CILIUM_NODES_PREFIX}/{name}");
    loop {
        let Some(raw) = store.get(&key).await.map_err(|e| e.to_string())? else {
            return Ok(()); // Deleted meanwhile.
        };
        let Ok(mut node) = serde_json::from_slice::<CiliumNode>(&raw) else {
            return Ok(()); // Not ours to fix.
        };
        if !node.spec.ipam.pod_cidrs.is_empty() {
            return Ok(());
        }
        match cidr {
            Some(c) => {
                node.spec.ipam.pod_cidrs = vec![c];
                node.status.ipam.operator_status.error.clear();
            }
            None if node.status.ipam.operator_status.error == error => return Ok(()),
            None => node.status.ipam.operator_status.error = error.to_owned(),
        }
        let new = serde_json::to_vec(&node).map_err(|e| e.to_string())?;
        if store
            .compare_and_swap(&key, &raw, &new)
            .await
            .map_err(|e| e.to_string())?
        {
            return Ok(());
        }
    }
}

fn v4(cidrs: &[Ipv4Net]) -> Vec<IpNet> {
    cidrs.iter().map(|c| IpNet::V4(*c)).collect()
}

/// Cluster-pool IPAM over the CiliumNodes of the cluster store, until the store fails.
pub async fn ipam_loop(store: Arc<AnyStore>, pool_config: ClusterPoolConfig) -> Result<(), String> {
    let (informer, initial) = Informer::<_, CiliumNode>::start(store.clone(), CILIUM_NODES_PREFIX)
        .await
        .map_err(|e| format!("watching CiliumNodes: {e}"))?;
    ipam(informer, initial, StoreNodes(store), &pool_config).await
}

/// Cluster-pool IPAM over the CiliumNode objects of the Kubernetes API. API errors are
/// retried (the watch resumes); only a pool that cannot be built ends it.
pub async fn ipam_loop_k8s(
    client: kube::Client,
    pool_config: ClusterPoolConfig,
) -> Result<(), String> {
    let (informer, initial) = loop {
        match cilium_k8s::nodes::informer(client.clone()).await {
            Ok(started) => break started,
            Err(e) => {
                log(
                    "warning",
                    "cannot list CiliumNodes; retrying",
                    &format!("error=\"{e}\""),
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    ipam(
        Retrying(informer),
        initial,
        ApiNodes(cilium_k8s::nodes::api(client)),
        &pool_config,
    )
    .await
}

/// A watcher whose errors are logged and waited out (a Kubernetes informer resumes by
/// itself after a backoff), so that the loop using it never ends on an API outage.
struct Retrying<W>(W);

impl<T: Send, W: Watcher<T> + Send> Watcher<T> for Retrying<W>
where
    W::Error: Send,
{
    type Error = W::Error;

    fn objects(&self) -> &BTreeMap<String, T> {
        self.0.objects()
    }

    async fn next_change(&mut self) -> Result<Change<T>, W::Error> {
        let mut failing = false;
        loop {
            match self.0.next_change().await {
                Ok(c) => return Ok(c),
                Err(e) if !failing => {
                    log(
                        "warning",
                        "watch interrupted; resuming",
                        &format!("error=\"{e}\""),
                    );
                    failing = true;
                }
                Err(_) => {}
            }
        }
    }
}

/// The cluster-pool IPAM loop over any source of CiliumNodes.
async fn ipam<W: Watcher<CiliumNode>, S: NodeSink>(
    mut informer: W,
    initial: Vec<Change<CiliumNode>>,
    sink: S,
    pool_config: &ClusterPoolConfig,
) -> Result<(), String> {
    let mut pool = ClusterPool::new(pool_config).map_err(|e| e.to_string())?;
    // Take back what is already handed out before handing out anything.
    for change in &initial {
        if let Change::Upsert { object, .. } = change
            && !object.spec.ipam.pod_cidrs.is_empty()
            && let Err(e) = pool.occupy(&object.metadata.name, &v4(&object.spec.ipam.pod_cidrs))
        {
            log(
                "warning",
                "a CiliumNode's pod CIDR does not fit the pool",
                &format!("ciliumnode={} error=\"{e}\"", object.metadata.name),
            );
        }
    }
    let mut pending: std::collections::VecDeque<Change<CiliumNode>> = initial.into();
    loop {
        let change = match pending.pop_front() {
            Some(c) => c,
            None => informer
                .next_change()
                .await
                .map_err(|e| format!("watching CiliumNodes: {e}"))?,
        };
        match change {
            Change::Upsert { object, .. } => {
                let name = object.metadata.name.clone();
                if !object.spec.ipam.pod_cidrs.is_empty() {
                    if pool.get(&name).is_none() {
                        let _ = pool.occupy(&name, &v4(&object.spec.ipam.pod_cidrs));
                    }
                    continue;
                }
                match pool.allocate(&name) {
                    Ok(cidrs) => {
                        let Some(cidr) = cidrs.ipv4 else { continue };
                        log(
                            "info",
                            "allocated a pod CIDR",
                            &format!("ciliumnode={name} cidr={cidr}"),
                        );
                        if let Err(e) = sink.write(&name, Some(cidr), "").await {
                            // Not written: give it back and try again in a second (the
                            // store or the API is away).
                            log(
                                "warning",
                                "cannot write a pod CIDR; retrying",
                                &format!("ciliumnode={name} error=\"{e}\""),
                            );
                            pool.release(&name);
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            pending.push_back(Change::Upsert {
                                key: object.key(),
                                object,
                            });
                        }
                    }
                    Err(e @ IpamError::PoolExhausted { .. }) => {
                        log(
                            "warning",
                            "pod CIDR pool exhausted",
                            &format!("ciliumnode={name}"),
                        );
                        if object.status.ipam.operator_status.error != e.to_string() {
                            sink.write(&name, None, &e.to_string()).await?;
                        }
                    }
                    Err(e) => {
                        if object.status.ipam.operator_status.error != e.to_string() {
                            sink.write(&name, None, &e.to_string()).await?;
                        }
                    }
                }
            }
            Change::Delete { last, .. } => {
                if let Some(freed) = pool.release(&last.metadata.name) {
                    // Nodes that waited for a CIDR get another chance.
                    for node in informer.objects().values() {
                        if node.spec.ipam.pod_cidrs.is_empty() {
                            pending.push_back(Change::Upsert {
                                key: node.key(),
                                object: node.clone(),
                            });
                        }
                    }
                    log(
                        "info",
                        "released a pod CIDR",
                        &format!(
                            "ciliumnode={} cidr={}",
                            last.metadata.name,
                            freed
                                .to_vec()
                                .iter()
                                .map(ToString::to_string)
                                .collect::<Vec<_>>()
                                .join(",")
                        ),
                    );
                }
            }
            Change::Invalid { key, error } => {
                log(
                    "warning",
                    "skipping an invalid CiliumNode",
                    &format!("key={key} error=\"{error}\""),
                );
            }
        }
    }
}

/// Deletes identities that stay without users for `timeout`, looking every `interval`.
pub async fn identity_gc_loop(
    store: Arc<AnyStore>,
    interval: Duration,
    timeout: Duration,
) -> Result<(), String> {
    let backend = KvBackend::new(store, "cilium-operator", 256, u32::MAX);
    let mut unused_since: BTreeMap<u32, Instant> = BTreeMap::new();
    loop {
        tokio::time::sleep(interval).await;
        let Ok(unused) = backend.unused().await else {
            continue; // The store is away: try again next round.
        };
        let now = Instant::now();
        let ids: std::collections::BTreeSet<u32> = unused.iter().map(|(id, _)| id.get()).collect();
        unused_since.retain(|id, _| ids.contains(id));
        for (id, labels) in unused {
            let since = *unused_since.entry(id.get()).or_insert(now);
            if now.duration_since(since) >= timeout
                && backend.remove_if_unused(id, &labels).await.unwrap_or(false)
            {
                log(
                    "info",
                    "garbage-collected an unused identity",
                    &format!("identity={} labels=\"{}\"", id.get(), labels.kvstore_key()),
                );
                unused_since.remove(&id.get());
            }
        }
    }
}

/// Whether a pod's labels satisfy a service's `spec.selector` (every pair present).
fn selects(selector: &serde_json::Map<String, serde_json::Value>, pod: &serde_json::Value) -> bool {
    !selector.is_empty()
        && selector
            .iter()
            .all(|(k, v)| pod["metadata"]["labels"][k] == *v)
}

/// The port a service port reaches on a pod: `targetPort` as a number, as a name of one
/// of the pod's container ports, or (absent) the service port itself.
fn target_port(port: &serde_json::Value, pod: &serde_json::Value) -> Option<u64> {
    match &port["targetPort"] {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(name) => {
            if let Ok(n) = name.parse::<u64>() {
                return Some(n);
            }
            pod["spec"]["containers"]
                .as_array()?
                .iter()
                .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
                .find(|p| p["name"].as_str() == Some(name))
                .and_then(|p| p["containerPort"].as_u64())
        }
        _ => port["port"].as_u64(),
    }
}

/// The Endpoints object of a service, from the pods (running, with an IP) it selects.
pub fn endpoints_for(
    service: &serde_json::Value,
    pods: &[&serde_json::Value],
) -> serde_json::Value {
    let meta = &service["metadata"];
    let selector = service["spec"]["selector"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut subsets = Vec::new();
    for port in service["spec"]["ports"].as_array().into_iter().flatten() {
        let protocol = port["protocol"].as_str().unwrap_or("TCP");
        // One subset per (service port, resolved pod port).
        let mut by_target: BTreeMap<u64, Vec<serde_json::Value>> = BTreeMap::new();
        for pod in pods {
            let ready = pod["status"]["phase"] == "Running" && pod["status"]["podIP"].is_string();
            if !ready
                || !selects(&selector, pod)
                || pod["metadata"]["namespace"] != meta["namespace"]
            {
                continue;
            }
            if let Some(target) = target_port(port, pod) {
                by_target.entry(target).or_default().push(serde_json::json!({
                    "ip": pod["status"]["podIP"],
                    "nodeName": pod["spec"]["nodeName"],
                    "targetRef": {"kind": "Pod", "name": pod["metadata"]["name"], "namespace": pod["metadata"]["namespace"]},
                }));
            }
        }
        for (target, mut addresses) in by_target {
            addresses.sort_by(|a, b| a["ip"].as_str().cmp(&b["ip"].as_str()));
            let mut p = serde_json::json!({"port": target, "protocol": protocol});
            if let Some(name) = port["name"].as_str() {
                p["name"] = serde_json::Value::from(name);
            }
            subsets.push(serde_json::json!({"addresses": addresses, "ports": [p]}));
        }
    }
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
        "subsets": subsets,
    })
}

/// Keeps every Service's Endpoints object in line with the pods, until the store fails.
pub async fn endpoints_loop(store: Arc<AnyStore>) -> Result<(), String> {
    type Obj = serde_json::Value;
    let (mut pods, pods_initial) = Informer::<_, Obj>::start(store.clone(), PODS_PREFIX)
        .await
        .map_err(|e| format!("watching pods: {e}"))?;
    let (mut services, services_initial) =
        Informer::<_, Obj>::start(store.clone(), SERVICES_PREFIX)
            .await
            .map_err(|e| format!("watching services: {e}"))?;
    drop((pods_initial, services_initial));
    let mut written: BTreeMap<String, Obj> = store
        .list_prefix(&format!("{ENDPOINTS_PREFIX}/"))
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter_map(|(k, v)| Some((k, serde_json::from_slice(&v).ok()?)))
        .collect();
    loop {
        // Recompute every service's endpoints (clusters here are small), write changes.
        let all_pods: Vec<&Obj> = pods.cache().values().collect();
        let mut wanted = BTreeMap::new();
        for (key, svc) in services.cache() {
            let rest = key.strip_prefix(SERVICES_PREFIX).unwrap_or(key);
            wanted.insert(
                format!("{ENDPOINTS_PREFIX}{rest}"),
                endpoints_for(svc, &all_pods),
            );
        }
        for (key, ep) in &wanted {
            if written.get(key) != Some(ep) {
                let bytes = serde_json::to_vec(ep).map_err(|e| e.to_string())?;
                store.put(key, &bytes).await.map_err(|e| e.to_string())?;
                written.insert(key.clone(), ep.clone());
            }
        }
        let stale: Vec<String> = written
            .keys()
            .filter(|k| !wanted.contains_key(*k))
            .cloned()
            .collect();
        for key in stale {
            store.delete(&key).await.map_err(|e| e.to_string())?;
            written.remove(&key);
        }
        tokio::select! {
            r = pods.next() => { r.map_err(|e| format!("watching pods: {e}"))?; }
            r = services.next() => { r.map_err(|e| format!("watching services: {e}"))?; }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn endpoints_list_the_running_pods_a_service_selects() {
        let svc = json!({
            "metadata": {"name": "webpod", "namespace": "default"},
            "spec": {"selector": {"app": "webpod"}, "ports": [
                {"name": "http", "port": 80, "targetPort": 80, "protocol": "TCP"},
                {"name": "alt", "port": 8080, "targetPort": "web"},
            ]},
        });
        let pod = |name: &str, ip: &str, app: &str, phase: &str, ns: &str| {
            json!({
                "metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
                "spec": {"nodeName": "k8s-w1", "containers": [{"ports": [{"name": "web", "containerPort": 8000}]}]},
                "status": {"phase": phase, "podIP": ip},
            })
        };
        let pods = [
            pod("webpod-2", "172.20.2.5", "webpod", "Running", "default"),
            pod("webpod-1", "172.20.1.5", "webpod", "Running", "default"),
            pod("pending", "172.20.1.9", "webpod", "Pending", "default"),
            pod("curl", "172.20.0.5", "curl", "Running", "default"),
            pod("elsewhere", "172.20.1.7", "webpod", "Running", "other"),
        ];
        let refs: Vec<&serde_json::Value> = pods.iter().collect();
        let ep = endpoints_for(&svc, &refs);
        let subsets = ep["subsets"].as_array().unwrap();
        assert_eq!(subsets.len(), 2);
        let ips: Vec<&str> = subsets[0]["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["ip"].as_str().unwrap())
            .collect();
        assert_eq!(ips, ["172.20.1.5", "172.20.2.5"]);
        assert_eq!(
            subsets[0]["ports"][0],
            json!({"port": 80, "protocol": "TCP", "name": "http"})
        );
        assert_eq!(
            subsets[1]["ports"][0]["port"], 8000,
            "named targetPort resolved"
        );
        assert_eq!(ep["metadata"]["name"], "webpod");
        // No selector: no endpoints managed.
        let bare = json!({"metadata": {"name": "x", "namespace": "default"}, "spec": {"ports": [{"port": 1}]}});
        assert_eq!(endpoints_for(&bare, &refs)["subsets"], json!([]));
    }
}
