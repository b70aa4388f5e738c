// SPDX-License-Identifier: Apache-2.0

//! The node: the agent's state and the work behind the API. Owns the embedded store, the
//! node's IPAM, the identity allocator, the policy engine, the endpoints and (when started
//! with one) the loaded datapath. Endpoint changes are serialised by one lock; each is
//! all-or-nothing: a failed step undoes the ones before it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use cilium_bpf::lb::{MAGLEV_LUT_SIZE, ServiceWriter};
use cilium_bpf::link::Netlink;
use cilium_bpf::maps::Maps;
use cilium_bpf::policy::PolicyWriter;
use cilium_bpf::types::{EndpointInfo, RemoteEndpointInfo, mac_to_u64};
use cilium_bpf::{Datapath, DatapathConfig};
use cilium_core::cluster::{CILIUM_NODES_PREFIX, Change, CiliumNode, Informer};
use cilium_core::config::{AgentConfig, PolicyEnforcement};
use cilium_core::kvstore::{AnyStore, FileStore, KvStore};
use cilium_core::{IdPool, Label, LabelFilter, LabelSet, NumericIdentity};
use cilium_identity::{AllocatorConfig, IdentityAllocator, IdentityBackend, KvBackend};
use cilium_ipam::{ClusterPool, ClusterPoolConfig, Family, NodeAllocator, Owner};
use cilium_lb::maglev::MaglevConfig;
use cilium_lb::manager::{LbConfig, LbManager};
use cilium_lb::service::Service;
use cilium_policy::{EnforcementMode, PolicyDiff, PolicyEngine};
use ipnet::{IpNet, Ipv4Net};
use serde_json::{Value, json};

use crate::endpoint::{self, EndpointChangeRequest, EndpointRecord, EndpointState};
use crate::metrics::Metrics;
use crate::service::{SERVICES_PREFIX, ServiceSpec};

/// The node's VXLAN device in tunnel mode (Cilium's name).
const TUNNEL_DEVICE: &str = "cilium_vxlan";

/// Endpoint ids are 1..=4095, as in Cilium.
const MAX_ENDPOINT_ID: u32 = 4095;
/// Pods registered through the API, as Kubernetes would hold them.
pub use cilium_core::cluster::PODS_PREFIX;
/// Imported policies, one key per document origin.
pub use cilium_core::cluster::POLICIES_PREFIX;

/// An API failure: an HTTP status and a message. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status code.
    pub status: u16,
    /// What went wrong.
    pub message: String,
}

impl ApiError {
    /// 400.
    pub fn bad_request(m: impl Into<String>) -> Self {
        ApiError {
            status: 400,
            message: m.into(),
        }
    }
    /// 404.
    pub fn not_found(m: impl Into<String>) -> Self {
        ApiError {
            status: 404,
            message: m.into(),
        }
    }
    /// 409.
    pub fn conflict(m: impl Into<String>) -> Self {
        ApiError {
            status: 409,
            message: m.into(),
        }
    }
    /// 500.
    pub fn internal(m: impl Into<String>) -> Self {
        ApiError {
            status: 500,
            message: m.into(),
        }
    }
    /// 503.
    pub fn unavailable(m: impl Into<String>) -> Self {
        ApiError {
            status: 503,
            message: m.into(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.status)
    }
}

fn internal<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> ApiError {
    move |e| ApiError::internal(format!("{what}: {e}"))
}

/// Start-up options that are not configuration keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartOptions {
    /// Load the datapath (needs root and a BPF file system). Without it, the agent serves
    /// its API and keeps its state but cannot create endpoints.
    pub datapath: bool,
}

/// The loaded datapath and the maps the agent writes.
#[derive(Debug)]
struct Dp {
    datapath: Datapath,
    maps: Maps,
    policy: PolicyWriter,
    services: ServiceWriter,
}

#[derive(Debug)]
struct NodeState {
    ipam: NodeAllocator,
    ids: IdPool,
    endpoints: BTreeMap<u16, EndpointRecord>,
    policy: PolicyEngine,
    lb: LbManager,
    /// Frontends programmed for each Kubernetes service (`<ns>/<name>`).
    k8s_frontends: BTreeMap<String, Vec<cilium_lb::service::L3n4Addr>>,
    dp: Option<Dp>,
}

/// What a restart found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Endpoints restored with their IP and identity.
    pub restored: Vec<u16>,
    /// Endpoints whose interface was gone: removed, their IPs free again.
    pub removed: Vec<u16>,
    /// State files that could not be read (removed).
    pub bad_files: Vec<String>,
    /// Deletions the CNI queued while the agent was down, replayed.
    pub replayed_deletes: usize,
    /// Services restored from the store (their ids kept from the maps).
    pub services: usize,
}

/// The node's state and operations.
#[derive(Debug)]
pub struct Node {
    /// This node's name.
    pub name: String,
    /// This node's IPv4 address.
    pub ipv4: Ipv4Addr,
    /// This node's pod CIDR.
    pub cidr: Ipv4Net,
    /// The router IP (pods' gateway, on `cilium_host`).
    pub router: Ipv4Addr,
    /// The state directory.
    pub state_dir: PathBuf,
    /// Where the CNI queues deletions while the agent is down.
    pub delete_queue: PathBuf,
    store: Arc<AnyStore>,
    identities: IdentityAllocator<KvBackend<Arc<AnyStore>>>,
    filter: LabelFilter,
    /// The cluster's name.
    pub cluster: String,
    endpoint_routes: bool,
    /// The other nodes, as their agents registered them (cluster mode).
    pub(crate) cluster_nodes:
        std::sync::Mutex<BTreeMap<String, cilium_core::cluster::NodeRegistration>>,
    /// Other nodes' endpoints as the cluster's ipcache announces them (Hubble names remote
    /// pods with them).
    pub(crate) remote_endpoints:
        std::sync::Mutex<BTreeMap<Ipv4Addr, cilium_core::cluster::IpIdentityPair>>,
    state: tokio::sync::Mutex<NodeState>,
    /// What the last start restored.
    pub restore: std::sync::Mutex<RestoreReport>,
    /// The agent's metrics.
    pub metrics: Arc<Metrics>,
}

fn enforcement(p: PolicyEnforcement) -> EnforcementMode {
    match p {
        PolicyEnforcement::Default => EnforcementMode::Default,
        PolicyEnforcement::Always => EnforcementMode::Always,
        PolicyEnforcement::Never => EnforcementMode::Never,
    }
}

/// The node name: `k8s-node-name`, `$K8S_NODE_NAME`, then the host name.
fn node_name(config: &AgentConfig) -> String {
    if !config.node_name.is_empty() {
        return config.node_name.clone();
    }
    if let Ok(n) = std::env::var("K8S_NODE_NAME")
        && !n.is_empty()
    {
        return n;
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

fn mount_bpffs(root: &Path) -> Result<(), String> {
    if cilium_bpf::loader::is_bpffs(root).unwrap_or(false) {
        return Ok(());
    }
    std::fs::create_dir_all(root).map_err(|e| format!("creating {}: {e}", root.display()))?;
    let status = std::process::Command::new("mount")
        .args(["-t", "bpf", "bpf"])
        .arg(root)
        .status()
        .map_err(|e| format!("running mount: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("mounting a BPF file system at {}", root.display()))
    }
}

/// The load-balancing settings from the agent's keys. With the datapath, the Maglev table
/// size must be the one its programs are built for.
fn lb_config(config: &AgentConfig, node: &str, datapath: bool) -> Result<LbConfig, String> {
    let maglev = MaglevConfig::new(
        config.bpf_lb_maglev_table_size,
        &config.bpf_lb_maglev_hash_seed,
    )
    .map_err(|e| format!("bpf-lb-maglev-table-size / bpf-lb-maglev-hash-seed: {e}"))?;
    if datapath && maglev.table_size() as usize != MAGLEV_LUT_SIZE {
        return Err(format!(
            "bpf-lb-maglev-table-size: the datapath is built for {MAGLEV_LUT_SIZE}, not {}",
            maglev.table_size()
        ));
    }
    Ok(LbConfig {
        algorithm: match config.bpf_lb_algorithm {
            cilium_core::config::LbAlgorithm::Random => cilium_lb::service::LbAlgorithm::Random,
            cilium_core::config::LbAlgorithm::Maglev => cilium_lb::service::LbAlgorithm::Maglev,
        },
        maglev,
        node_name: node.to_owned(),
        ..LbConfig::default()
    })
}

/// The store `kvstore` names: the embedded one in `state-dir`, or etcd (retried every
/// second until it answers: without its cluster state the node cannot start).
async fn open_store(config: &AgentConfig, state_dir: &Path) -> Result<AnyStore, String> {
    if config.kvstore != "etcd" {
        return FileStore::open(state_dir.join("kvstore.log"))
            .map(AnyStore::File)
            .map_err(|e| format!("opening the embedded store: {e}"));
    }
    let endpoints = config.etcd_endpoints().map_err(|e| e.to_string())?;
    let ttl = std::time::Duration::from_secs(config.kvstore_lease_ttl);
    let mut logged = false;
    loop {
        match cilium_core::kvstore::etcd::EtcdStore::connect(&endpoints, ttl).await {
            Ok(store) => {
                eprintln!(
                    "level=info msg=\"connected to etcd\" endpoints={} lease={:#x}",
                    endpoints.join(","),
                    store.lease_id()
                );
                return Ok(AnyStore::Etcd(Box::new(store)));
            }
            Err(e) => {
                if !logged {
                    eprintln!(
                        "level=warning msg=\"etcd is not reachable yet; retrying every second\" endpoints={} error=\"{e}\"",
                        endpoints.join(",")
                    );
                    logged = true;
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

/// The node's IP when `ipv4-node` is auto: the first address that is not loopback, not on
/// `cilium_host`, and not in `ipv4-range`.
async fn detect_node_ip(range: Option<Ipv4Net>) -> Result<Ipv4Addr, String> {
    let nl = Netlink::open().map_err(|e| e.to_string())?;
    let host = nl
        .get("cilium_host")
        .await
        .map_err(|e| e.to_string())?
        .map(|l| l.index);
    nl.ipv4_addresses()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|(idx, _)| Some(*idx) != host)
        .map(|(_, ip)| ip)
        .find(|ip| !range.is_some_and(|r| r.contains(ip)))
        .ok_or_else(|| "this node has no IPv4 address: set ipv4-node".to_owned())
}

/// Registers this node's CiliumNode (cluster-pool IPAM) and waits until the operator has
/// written a pod CIDR into it.
async fn wait_for_pod_cidr(
    store: &Arc<AnyStore>,
    name: &str,
    ipv4: Ipv4Addr,
) -> Result<Ipv4Net, String> {
    let mine = CiliumNode::new(name, ipv4);
    let key = mine.key();
    let encoded = serde_json::to_vec(&mine).map_err(|e| e.to_string())?;
    // Create it if it is new; an existing one (a restart) keeps its CIDR.
    store
        .create_only(&key, &encoded)
        .await
        .map_err(|e| format!("registering CiliumNode {name}: {e}"))?;
    let (mut informer, initial) =
        Informer::<_, CiliumNode>::start(store.clone(), CILIUM_NODES_PREFIX)
            .await
            .map_err(|e| format!("watching CiliumNodes: {e}"))?;
    let mut changes: std::collections::VecDeque<Change<CiliumNode>> = initial.into();
    let mut reported = String::new();
    eprintln!(
        "level=info msg=\"waiting for the operator to allocate this node's pod CIDR\" ciliumnode={name}"
    );
    loop {
        let change = match changes.pop_front() {
            Some(c) => c,
            None => informer
                .next()
                .await
                .map_err(|e| format!("watching CiliumNodes: {e}"))?,
        };
        if let Change::Upsert { object, .. } = change
            && object.metadata.name == name
        {
            if let Some(cidr) = object.spec.ipam.pod_cidrs.first() {
                eprintln!("level=info msg=\"pod CIDR allocated\" ciliumnode={name} cidr={cidr}");
                return Ok(*cidr);
            }
            let error = &object.status.ipam.operator_status.error;
            if !error.is_empty() && *error != reported {
                eprintln!(
                    "level=warning msg=\"the operator cannot allocate a pod CIDR\" ciliumnode={name} error=\"{error}\""
                );
                reported = error.clone();
            }
        }
    }
}

fn write_sysctl(key: &str, value: &str) -> Result<(), String> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::write(&path, value).map_err(|e| format!("setting {key}: {e}"))
}

impl Node {
    /// Starts the node: opens the embedded store in `state-dir`, works out the node's
    /// name, IP and pod CIDR, and (with `options.datapath`) mounts bpffs if needed, loads
    /// the datapath (reusing pinned maps and links), sets up `cilium_host`, restores the
    /// endpoints of the last run and replays queued deletions.
    pub async fn start(
        config: &AgentConfig,
        options: StartOptions,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Node>, String> {
        let state_dir = config.state_dir.clone();
        std::fs::create_dir_all(&state_dir)
            .map_err(|e| format!("creating state-dir {}: {e}", state_dir.display()))?;
        let store = Arc::new(open_store(config, &state_dir).await?);
        let name = node_name(config);
        let ipv4 = match config.ipv4_node {
            Some(ip) => ip,
            None => detect_node_ip(config.ipv4_range).await?,
        };
        let cidr = match config.ipv4_range {
            Some(c) => c,
            None if config.kvstore == "etcd" => wait_for_pod_cidr(&store, &name, ipv4).await?,
            None => {
                let text = config
                    .cluster_pool_ipv4_cidr
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",");
                let pool_config =
                    ClusterPoolConfig::ipv4(&text, config.cluster_pool_ipv4_mask_size)
                        .map_err(|e| format!("cluster-pool-ipv4-cidr: {e}"))?;
                let mut pool = ClusterPool::new(&pool_config).map_err(|e| e.to_string())?;
                match pool.allocate(&name).map_err(|e| e.to_string())?.ipv4 {
                    Some(n) => n,
                    _ => return Err("the cluster pool gave no IPv4 CIDR".into()),
                }
            }
        };
        let router = config
            .local_router_ipv4
            .unwrap_or_else(|| cidr.hosts().next().unwrap_or(cidr.network()));
        let mut ipam =
            NodeAllocator::new(&[IpNet::V4(cidr)]).map_err(|e| format!("ipv4-range: {e}"))?;
        ipam.allocate(
            IpAddr::V4(router),
            Owner::new("router").map_err(|e| e.to_string())?,
        )
        .map_err(|e| format!("reserving the router IP {router}: {e}"))?;
        let range = cilium_identity::MemoryBackend::new(config.cluster_id).range();
        let identities = IdentityAllocator::new(
            KvBackend::new(store.clone(), name.clone(), range.0, range.1),
            {
                let mut c = AllocatorConfig::default();
                c.cluster_id = config.cluster_id;
                c
            },
        );
        if options.datapath && !config.enable_endpoint_routes {
            eprintln!(
                "level=warning msg=\"enable-endpoint-routes=false is not supported: each endpoint gets its /32 route to its lxc device, as with true\""
            );
        }
        let lb_config = lb_config(config, &name, options.datapath)?;
        let dp = if options.datapath {
            Some(Self::load_datapath(config, ipv4, router, cidr, &lb_config).await?)
        } else {
            None
        };
        let delete_queue = config
            .socket_path
            .parent()
            .unwrap_or(Path::new("/var/run/cilium"))
            .join("deleteQueue");
        let node = Arc::new(Node {
            name,
            ipv4,
            cidr,
            router,
            state_dir,
            delete_queue,
            store,
            identities,
            filter: LabelFilter::default(),
            cluster: config.cluster_name.clone(),
            cluster_nodes: std::sync::Mutex::new(BTreeMap::new()),
            remote_endpoints: std::sync::Mutex::new(BTreeMap::new()),
            endpoint_routes: true,
            state: tokio::sync::Mutex::new(NodeState {
                ipam,
                ids: IdPool::new(MAX_ENDPOINT_ID),
                endpoints: BTreeMap::new(),
                policy: PolicyEngine::new(enforcement(config.enable_policy)),
                lb: LbManager::new(lb_config.clone()),
                k8s_frontends: BTreeMap::new(),
                dp,
            }),
            restore: std::sync::Mutex::new(RestoreReport::default()),
            metrics,
        });
        node.load_policies().await?;
        let mut report = node.restore_endpoints().await?;
        report.services = node.restore_services(lb_config).await?;
        *node.restore.lock().unwrap_or_else(|e| e.into_inner()) = report;
        node.update_gauges().await;
        Ok(node)
    }

    async fn load_datapath(
        config: &AgentConfig,
        ipv4: Ipv4Addr,
        router: Ipv4Addr,
        cidr: Ipv4Net,
        lb: &LbConfig,
    ) -> Result<Dp, String> {
        mount_bpffs(&config.bpf_root)?;
        let mut dp_config = DatapathConfig::new(&config.bpf_root, ipv4, router);
        dp_config.maglev_hash_seed = lb.maglev.seed().jhash0;
        // Tunnel mode: the node's VXLAN device (collect-metadata, Cilium's port 8472),
        // made before the programs load (they carry its ifindex).
        let tunnel = if config.routing_mode == cilium_core::config::RoutingMode::Tunnel {
            let nl = Netlink::open().map_err(|e| e.to_string())?;
            if nl
                .get(TUNNEL_DEVICE)
                .await
                .map_err(|e| e.to_string())?
                .is_none()
            {
                nl.add_vxlan_external(TUNNEL_DEVICE, 8472)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            let dev = nl.require(TUNNEL_DEVICE).await.map_err(|e| e.to_string())?;
            nl.up(dev.index).await.map_err(|e| e.to_string())?;
            dp_config.tunnel_ifindex = dev.index;
            true
        } else {
            false
        };
        dp_config.native_routing_cidr = config
            .ipv4_native_routing_cidr
            .map(|n| (n.network(), n.prefix_len()));
        let mut datapath =
            Datapath::load(dp_config).map_err(|e| format!("loading the datapath: {e}"))?;
        if tunnel {
            datapath
                .attach_overlay(TUNNEL_DEVICE)
                .map_err(|e| format!("attaching to {TUNNEL_DEVICE}: {e}"))?;
        }
        let maps = Maps::open(&config.bpf_root).map_err(|e| e.to_string())?;
        let policy = PolicyWriter::open(&config.bpf_root, true).map_err(|e| e.to_string())?;
        let services = ServiceWriter::open(&config.bpf_root).map_err(|e| e.to_string())?;
        // The host side: cilium_host (router IP) and its peer cilium_net, as Cilium has them.
        let nl = Netlink::open().map_err(|e| e.to_string())?;
        if nl
            .get("cilium_host")
            .await
            .map_err(|e| e.to_string())?
            .is_none()
        {
            nl.add_veth("cilium_host", "cilium_net", config.mtu)
                .await
                .map_err(|e| e.to_string())?;
        }
        for dev in ["cilium_net", "cilium_host"] {
            let link = nl.require(dev).await.map_err(|e| e.to_string())?;
            nl.up(link.index).await.map_err(|e| e.to_string())?;
        }
        let host = nl.require("cilium_host").await.map_err(|e| e.to_string())?;
        nl.add_address(host.index, router, 32)
            .await
            .map_err(|e| e.to_string())?;
        let _ = cidr;
        for (key, value) in [
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
        ] {
            write_sysctl(key, value)?;
        }
        Ok(Dp {
            datapath,
            maps,
            policy,
            services,
        })
    }

    /// The embedded store.
    pub fn store(&self) -> &Arc<AnyStore> {
        &self.store
    }

    /// Whether the datapath is loaded.
    pub async fn has_datapath(&self) -> bool {
        self.state.lock().await.dp.is_some()
    }

    /// The labels of a pod as the agent derives them: the pod's labels from its record,
    /// `io.kubernetes.pod.namespace`, `io.cilium.k8s.policy.cluster` and
    /// `io.cilium.k8s.policy.serviceaccount`, and `extra`; then the identity-relevant ones.
    async fn pod_labels(
        &self,
        namespace: &str,
        pod: &str,
        extra: &[String],
    ) -> Result<LabelSet, ApiError> {
        let mut labels = LabelSet::new();
        let mut account = "default".to_owned();
        if !namespace.is_empty() && !pod.is_empty() {
            let key = format!("{PODS_PREFIX}/{namespace}/{pod}");
            if let Some(raw) = self
                .store
                .get(&key)
                .await
                .map_err(internal("reading the pod"))?
            {
                let record: Value =
                    serde_json::from_slice(&raw).map_err(internal("decoding the pod"))?;
                if let Some(map) = record["metadata"]["labels"].as_object() {
                    for (k, v) in map {
                        let label = Label::k8s(k.clone(), v.as_str().unwrap_or_default())
                            .map_err(|e| ApiError::bad_request(format!("pod label {k}: {e}")))?;
                        labels.insert(label);
                    }
                }
                if let Some(sa) = record["spec"]["serviceAccountName"].as_str() {
                    account = sa.to_owned();
                }
            }
        }
        let ns = if namespace.is_empty() {
            "default"
        } else {
            namespace
        };
        let fixed = [
            ("io.kubernetes.pod.namespace", ns.to_owned()),
            ("io.cilium.k8s.policy.cluster", self.cluster.clone()),
            ("io.cilium.k8s.policy.serviceaccount", account),
        ];
        for (k, v) in fixed {
            labels.insert(Label::k8s(k, v).map_err(|e| ApiError::internal(e.to_string()))?);
        }
        for item in extra {
            let label: Label = item
                .parse()
                .map_err(|e| ApiError::bad_request(format!("label {item:?}: {e}")))?;
            labels.insert(label);
        }
        Ok(self.filter.filter(&labels).0)
    }

    /// Creates an endpoint (`PUT /v1/endpoint/{id}`): claims its IP, gives it an id, labels
    /// and an identity, writes its datapath state and policy, and persists it. Returns it
    /// once it is ready, with its (ingress, egress) enforcement. All or nothing.
    pub async fn create_endpoint(
        &self,
        req: EndpointChangeRequest,
    ) -> Result<(EndpointRecord, (bool, bool)), ApiError> {
        let started = Instant::now();
        let ip: Ipv4Addr = req
            .addressing
            .ipv4
            .as_deref()
            .ok_or_else(|| ApiError::bad_request("addressing.ipv4 is required"))?
            .parse()
            .map_err(|e| ApiError::bad_request(format!("addressing.ipv4: {e}")))?;
        if !self.cidr.contains(&ip) {
            return Err(ApiError::bad_request(format!(
                "{ip} is not in this node's pod CIDR {}",
                self.cidr
            )));
        }
        if req.container_id.is_empty() || req.interface_name.is_empty() {
            return Err(ApiError::bad_request(
                "container-id and interface-name are required",
            ));
        }
        let labels = self
            .pod_labels(&req.k8s_namespace, &req.k8s_pod_name, &req.labels)
            .await?;
        let t_labels = started.elapsed();
        let nl = Netlink::open().map_err(internal("netlink"))?;
        let host = nl
            .get(&req.interface_name)
            .await
            .map_err(internal("looking up the interface"))?
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "no interface {:?} on this node",
                    req.interface_name
                ))
            })?;
        let t_link = started.elapsed();
        let mut st = self.state.lock().await;
        let t_locked = started.elapsed();
        if st.dp.is_none() {
            return Err(ApiError::unavailable(
                "this agent runs without a datapath: endpoints cannot be created",
            ));
        }
        if let Some(e) = st.endpoints.values().find(|e| {
            e.container_id == req.container_id
                && e.container_interface_name == req.container_interface_name
        }) {
            return Err(ApiError::conflict(format!(
                "container {} already has endpoint {}",
                req.container_id, e.id
            )));
        }
        let owner_name =
            endpoint::ipam_owner(&req.k8s_namespace, &req.k8s_pod_name, &req.container_id);
        let owner =
            Owner::new(owner_name.clone()).map_err(|e| ApiError::bad_request(e.to_string()))?;
        // The IP: reserved for this pod by POST /ipam, or free.
        let claimed_here = match st.ipam.owner_of(IpAddr::V4(ip)) {
            Some(o) if o.as_str() == owner_name => false,
            Some(o) => {
                return Err(ApiError::conflict(format!(
                    "{ip} is already allocated to {}",
                    o.as_str()
                )));
            }
            None => {
                st.ipam
                    .allocate(IpAddr::V4(ip), owner)
                    .map_err(|e| ApiError::conflict(e.to_string()))?;
                true
            }
        };
        let Some(idx) = st.ids.allocate_next() else {
            if claimed_here {
                let _ = st.ipam.release(IpAddr::V4(ip));
            }
            return Err(ApiError::unavailable("no free endpoint id"));
        };
        let mut ep = EndpointRecord {
            id: (idx + 1) as u16,
            container_id: req.container_id.clone(),
            container_interface_name: req.container_interface_name.clone(),
            interface_name: req.interface_name.clone(),
            interface_index: host.index,
            mac: [0; 6],
            host_mac: host.mac,
            ipv4: ip,
            k8s_namespace: req.k8s_namespace.clone(),
            k8s_pod_name: req.k8s_pod_name.clone(),
            netns: req.netns.clone(),
            labels: labels.to_strings(),
            identity: 0,
            state: EndpointState::WaitingForIdentity,
            regenerations: 0,
        };
        ep.mac = match req.mac.as_deref().and_then(parse_mac) {
            Some(mac) => mac,
            None => pod_mac(&req.netns, &req.container_interface_name)
                .await
                .unwrap_or(host.mac),
        };
        let t_mac = started.elapsed();
        let result = self.bring_up(&mut st, &mut ep, &labels, &nl).await;
        if let Err(e) = result {
            st.ids.put(idx);
            st.ipam.release(IpAddr::V4(ip)).ok();
            return Err(e);
        }
        st.endpoints.insert(ep.id, ep.clone());
        self.gauges(&st);
        let enforced = st
            .policy
            .policy(ep.id)
            .map_or((false, false), |p| (p.ingress_enforced, p.egress_enforced));
        drop(st);
        self.publish_endpoint(&ep).await;
        let total = started.elapsed();
        self.metrics.regeneration_time.observe(total.as_secs_f64());
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        eprintln!(
            "level=info msg=\"endpoint ready\" endpoint={} ipv4={} identity={} total-ms={:.2} labels-ms={:.2} link-ms={:.2} lock-wait-ms={:.2} mac-ms={:.2} bring-up-ms={:.2}",
            ep.id,
            ep.ipv4,
            ep.identity,
            ms(total),
            ms(t_labels),
            ms(t_link - t_labels),
            ms(t_locked - t_link),
            ms(t_mac - t_locked),
            ms(total - t_mac),
        );
        Ok((ep, enforced))
    }

    /// Identity, datapath, policy, state file; undoes what it did when a step fails.
    async fn bring_up(
        &self,
        st: &mut NodeState,
        ep: &mut EndpointRecord,
        labels: &LabelSet,
        nl: &Netlink,
    ) -> Result<(), ApiError> {
        let acquired = self
            .identities
            .acquire(labels)
            .await
            .map_err(|e| ApiError::internal(format!("allocating an identity: {e}")))?;
        let id = acquired.identity.id;
        ep.identity = id.get();
        ep.state = EndpointState::Regenerating;
        let written = self.write_datapath(st, ep, labels, nl).await;
        let persisted = written.and_then(|()| {
            ep.state = EndpointState::Ready;
            ep.regenerations += 1;
            endpoint::persist(&self.state_dir, ep).map_err(internal("writing the endpoint state"))
        });
        if let Err(e) = persisted {
            self.metrics.regenerations_failure.inc();
            self.clear_datapath(st, ep, nl).await;
            let _ = self.identities.release(id);
            return Err(e);
        }
        self.metrics.regenerations_success.inc();
        Ok(())
    }

    async fn write_datapath(
        &self,
        st: &mut NodeState,
        ep: &EndpointRecord,
        labels: &LabelSet,
        nl: &Netlink,
    ) -> Result<(), ApiError> {
        let id = NumericIdentity::new(ep.identity);
        let mut diff = st.policy.upsert_identity(id, labels.clone());
        let ep_diff = st.policy.upsert_endpoint(ep.id, labels.clone());
        merge(&mut diff, ep_diff);
        let Some(dp) = st.dp.as_mut() else {
            return Err(ApiError::unavailable("no datapath"));
        };
        dp.datapath
            .attach_endpoint(&ep.interface_name)
            .map_err(internal("attaching the datapath"))?;
        let info = EndpointInfo {
            ifindex: ep.interface_index,
            lxc_id: ep.id,
            mac: mac_to_u64(ep.mac),
            node_mac: mac_to_u64(ep.host_mac),
            sec_id: ep.identity,
            ..EndpointInfo::default()
        };
        dp.maps
            .endpoints
            .upsert_ipv4(ep.ipv4, &info)
            .map_err(internal("writing cilium_lxc"))?;
        dp.maps
            .ipcache
            .upsert_ipv4(
                ep.ipv4,
                32,
                &RemoteEndpointInfo {
                    sec_identity: ep.identity,
                    ..RemoteEndpointInfo::default()
                },
            )
            .map_err(internal("writing cilium_ipcache"))?;
        dp.policy
            .apply(&st.policy, &diff)
            .map_err(internal("writing the policy map"))?;
        if self.endpoint_routes {
            nl.route_dev(ep.ipv4, 32, ep.interface_index)
                .await
                .map_err(internal("adding the endpoint route"))?;
        }
        Ok(())
    }

    /// Removes an endpoint's datapath state (best effort: every step is attempted).
    async fn clear_datapath(&self, st: &mut NodeState, ep: &EndpointRecord, nl: &Netlink) {
        let diff = st.policy.remove_endpoint(ep.id);
        if let Some(dp) = st.dp.as_mut() {
            let _ = dp.policy.apply(&st.policy, &diff);
            let _ = dp.policy.remove(ep.id);
            let _ = dp.maps.endpoints.remove_ipv4(ep.ipv4);
            let _ = dp.maps.ipcache.remove_ipv4(ep.ipv4, 32);
            let _ = dp.datapath.detach_endpoint(&ep.interface_name);
        }
        if self.endpoint_routes {
            let _ = nl.route_del(ep.ipv4, 32).await;
        }
    }

    /// Finds an endpoint by Cilium's id forms: `<id>`, `cilium-local:<id>`,
    /// `container-id:<id>`, `pod-name:<ns>:<pod>` (or `<ns>/<pod>`).
    pub async fn find_endpoint(&self, id: &str) -> Result<EndpointRecord, ApiError> {
        let st = self.state.lock().await;
        find_in(&st.endpoints, id).cloned()
    }

    /// Every endpoint, by id.
    pub async fn endpoints(&self) -> Vec<EndpointRecord> {
        self.state
            .lock()
            .await
            .endpoints
            .values()
            .cloned()
            .collect()
    }

    /// The endpoint's policy enforcement (ingress, egress).
    pub async fn enforcement_of(&self, id: u16) -> (bool, bool) {
        let st = self.state.lock().await;
        st.policy
            .policy(id)
            .map_or((false, false), |p| (p.ingress_enforced, p.egress_enforced))
    }

    /// Deletes an endpoint (`DELETE /v1/endpoint/{id}`): policy, maps, links, identity,
    /// IP, state file. Returns the deleted endpoint.
    pub async fn delete_endpoint(&self, id: &str) -> Result<EndpointRecord, ApiError> {
        let nl = Netlink::open().map_err(internal("netlink"))?;
        let mut st = self.state.lock().await;
        let mut ep = find_in(&st.endpoints, id)?.clone();
        ep.state = EndpointState::Disconnecting;
        self.clear_datapath(&mut st, &ep, &nl).await;
        endpoint::forget(&self.state_dir, ep.id).map_err(internal("removing the state file"))?;
        st.endpoints.remove(&ep.id);
        st.ids.put(u32::from(ep.id) - 1);
        let _ = st.ipam.release(IpAddr::V4(ep.ipv4));
        let _ = self.identities.release(NumericIdentity::new(ep.identity));
        self.gauges(&st);
        drop(st);
        self.unpublish_endpoint(&ep).await;
        Ok(ep)
    }

    /// Deletes every endpoint of a container (the CNI's DEL); returns how many there were.
    pub async fn delete_container(&self, container_id: &str) -> Result<usize, ApiError> {
        let ids: Vec<u16> = {
            let st = self.state.lock().await;
            st.endpoints
                .values()
                .filter(|e| e.container_id == container_id)
                .map(|e| e.id)
                .collect()
        };
        for id in &ids {
            self.delete_endpoint(&id.to_string()).await?;
        }
        Ok(ids.len())
    }

    /// `POST /v1/ipam`: the next free IP for `owner` (held until an endpoint claims it or
    /// it is released; a restart frees it if no endpoint did).
    pub async fn ipam_allocate(&self, owner: &str) -> Result<Value, ApiError> {
        let owner = Owner::new(owner).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let mut st = self.state.lock().await;
        let ip = st
            .ipam
            .allocate_next(Family::V4, owner)
            .map_err(|e| ApiError::unavailable(e.to_string()))?;
        self.gauges(&st);
        drop(st);
        Ok(json!({
            "ipv4": {
                "ip": ip.to_string(),
                "gateway": self.router.to_string(),
                "cidrs": [self.cidr.to_string()],
            },
            "host-addressing": {"ipv4": {"ip": self.router.to_string(), "enabled": true}},
        }))
    }

    /// `DELETE /v1/ipam/{ip}`: releases an IP no endpoint uses.
    pub async fn ipam_release(&self, ip: &str) -> Result<(), ApiError> {
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|e| ApiError::bad_request(format!("{ip:?}: {e}")))?;
        let mut st = self.state.lock().await;
        if st.endpoints.values().any(|e| e.ipv4 == ip) {
            return Err(ApiError::conflict(format!("{ip} is used by an endpoint")));
        }
        if ip == self.router {
            return Err(ApiError::conflict(format!("{ip} is the router IP")));
        }
        st.ipam
            .release(IpAddr::V4(ip))
            .map_err(|e| ApiError::not_found(e.to_string()))?;
        self.gauges(&st);
        drop(st);
        Ok(())
    }

    /// The IPAM status line and the allocated addresses with their owners.
    pub async fn ipam_status(&self) -> (String, Vec<(String, String)>) {
        let st = self.state.lock().await;
        let line = st.ipam.status(Family::V4).unwrap_or_default();
        let list = st
            .ipam
            .list()
            .into_iter()
            .map(|(ip, o)| (ip.to_string(), o.as_str().to_owned()))
            .collect();
        (line, list)
    }

    /// Every identity the node knows (reserved ones included) as `(id, labels)`.
    pub async fn identities(&self) -> Result<Vec<(u32, Vec<String>)>, ApiError> {
        let mut out: Vec<(u32, Vec<String>)> = (1..=9)
            .filter_map(|n| {
                let id = NumericIdentity::new(n);
                cilium_identity::reserved_labels(id).map(|l| (n, l.to_strings()))
            })
            .collect();
        for (id, labels) in self
            .identities
            .backend()
            .list()
            .await
            .map_err(internal("listing identities"))?
        {
            out.push((id.get(), labels.to_strings()));
        }
        Ok(out)
    }

    /// Registers a pod record (`PUT /v1/pod/{namespace}/{name}`), as Kubernetes would hold
    /// it: its labels and service account become the endpoint's labels.
    pub async fn put_pod(&self, namespace: &str, name: &str, pod: &Value) -> Result<(), ApiError> {
        if let Some(map) = pod["metadata"]["labels"].as_object() {
            for (k, v) in map {
                let Some(v) = v.as_str() else {
                    return Err(ApiError::bad_request(format!("label {k}: not a string")));
                };
                Label::k8s(k.clone(), v)
                    .map_err(|e| ApiError::bad_request(format!("label {k}: {e}")))?;
            }
        } else if !pod["metadata"]["labels"].is_null() {
            return Err(ApiError::bad_request("metadata.labels must be an object"));
        }
        check_name(namespace)?;
        check_name(name)?;
        self.store
            .put(
                &format!("{PODS_PREFIX}/{namespace}/{name}"),
                pod.to_string().as_bytes(),
            )
            .await
            .map_err(internal("storing the pod"))
    }

    /// Imports policy documents (`PUT /v1/policy`, YAML or JSON): all or nothing. Returns
    /// the origins imported and the endpoints whose policy changed.
    pub async fn import_policy(&self, text: &str) -> Result<(Vec<String>, usize), ApiError> {
        let docs = cilium_policy::parse(text).map_err(|e| ApiError::bad_request(e.to_string()))?;
        if docs.is_empty() {
            return Err(ApiError::bad_request("no policy documents in the input"));
        }
        let mut st = self.state.lock().await;
        let mut origins = Vec::new();
        let mut diff = PolicyDiff::default();
        for (doc, rules) in docs {
            let origin = doc.origin();
            self.store
                .put(
                    &format!("{POLICIES_PREFIX}/{origin}"),
                    doc.to_json().to_string().as_bytes(),
                )
                .await
                .map_err(internal("storing the policy"))?;
            merge(&mut diff, st.policy.remove_rules(&origin));
            merge(&mut diff, st.policy.add_rules(rules));
            origins.push(origin);
        }
        let changed = apply_policy(&mut st, &diff)?;
        Ok((origins, changed))
    }

    /// Applies a policy document the cluster store holds under `origin` (written by another
    /// agent or the lab), or removes it (`None`). Returns the endpoints whose policy
    /// changed.
    pub(crate) async fn apply_stored_policy(
        &self,
        origin: &str,
        doc: Option<&Value>,
    ) -> Result<usize, String> {
        let mut parsed = Vec::new();
        if let Some(doc) = doc {
            for (d, rules) in cilium_policy::parse(&doc.to_string()).map_err(|e| e.to_string())? {
                if d.origin() == origin {
                    parsed.extend(rules);
                }
            }
        }
        let mut st = self.state.lock().await;
        let mut diff = PolicyDiff::default();
        merge(&mut diff, st.policy.remove_rules(origin));
        if !parsed.is_empty() {
            merge(&mut diff, st.policy.add_rules(parsed));
        }
        apply_policy(&mut st, &diff).map_err(|e| e.message)
    }

    /// Deletes the policies whose origin starts with `prefix` (all with an empty prefix).
    pub async fn delete_policy(&self, prefix: &str) -> Result<Vec<String>, ApiError> {
        let mut st = self.state.lock().await;
        let stored = self
            .store
            .list_prefix(&format!("{POLICIES_PREFIX}/"))
            .await
            .map_err(internal("listing policies"))?;
        let mut deleted = Vec::new();
        let mut diff = PolicyDiff::default();
        for (key, _) in stored {
            let origin = key[POLICIES_PREFIX.len() + 1..].to_owned();
            if !origin.starts_with(prefix) {
                continue;
            }
            self.store
                .delete(&key)
                .await
                .map_err(internal("deleting the policy"))?;
            merge(&mut diff, st.policy.remove_rules(&origin));
            deleted.push(origin);
        }
        if deleted.is_empty() && !prefix.is_empty() {
            return Err(ApiError::not_found(format!("no policy matches {prefix:?}")));
        }
        apply_policy(&mut st, &diff)?;
        Ok(deleted)
    }

    /// The stored policy documents.
    pub async fn policies(&self) -> Result<Vec<Value>, ApiError> {
        Ok(self
            .store
            .list_prefix(&format!("{POLICIES_PREFIX}/"))
            .await
            .map_err(internal("listing policies"))?
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect())
    }

    /// Tells the policy engine about a cluster identity (another node's pods) and rewrites
    /// the policy maps it changes.
    pub(crate) async fn policy_identity_upsert(
        &self,
        id: u32,
        labels: LabelSet,
    ) -> Result<usize, String> {
        let mut st = self.state.lock().await;
        let diff = st.policy.upsert_identity(NumericIdentity::new(id), labels);
        apply_policy(&mut st, &diff).map_err(|e| e.message)
    }

    /// Forgets a cluster identity that was deleted.
    pub(crate) async fn policy_identity_remove(&self, id: u32) -> Result<usize, String> {
        let mut st = self.state.lock().await;
        if st.endpoints.values().any(|e| e.identity == id) {
            return Ok(0); // Still used here.
        }
        let diff = st.policy.remove_identity(NumericIdentity::new(id));
        apply_policy(&mut st, &diff).map_err(|e| e.message)
    }

    /// Writes (or replaces) a `cilium_ipcache_v2` entry (no-op without a datapath).
    pub(crate) async fn ipcache_upsert(
        &self,
        ip: Ipv4Addr,
        prefix_len: u8,
        info: &RemoteEndpointInfo,
    ) -> Result<(), String> {
        let mut st = self.state.lock().await;
        match st.dp.as_mut() {
            Some(dp) => dp
                .maps
                .ipcache
                .upsert_ipv4(ip, prefix_len, info)
                .map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }

    /// Removes a `cilium_ipcache_v2` entry (no-op without a datapath).
    pub(crate) async fn ipcache_remove(&self, ip: Ipv4Addr, prefix_len: u8) {
        let mut st = self.state.lock().await;
        if let Some(dp) = st.dp.as_mut() {
            let _ = dp.maps.ipcache.remove_ipv4(ip, prefix_len);
        }
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
        }
    }

    /// Announces an endpoint's IP and identity to the cluster (a session key). A failure is
    /// logged; the periodic resync writes it again.
    pub(crate) async fn publish_endpoint(&self, ep: &EndpointRecord) {
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

    /// Creates or updates a service (`PUT /v1/service/{id}`): `id` is 0 or the id the
    /// frontend already has. Stored, then written to the maps in an order that never shows
    /// a packet a missing backend. Returns the service's id and whether it is new.
    pub async fn upsert_service(
        &self,
        id: u32,
        spec: &ServiceSpec,
    ) -> Result<(u16, bool), ApiError> {
        let svc = spec.to_service().map_err(ApiError::bad_request)?;
        let mut st = self.state.lock().await;
        let existing = st.lb.service_id(&svc.frontend);
        if id != 0 && existing.map(u32::from) != Some(id) {
            return Err(ApiError::bad_request(match existing {
                Some(e) => format!("frontend {} has id {e}, not {id}", svc.frontend),
                None => format!(
                    "service ids are chosen by the agent: use 0 for a new frontend, not {id}"
                ),
            }));
        }
        let key = format!("{SERVICES_PREFIX}/{}", svc.frontend);
        let previous = self
            .store
            .get(&key)
            .await
            .map_err(internal("reading the service"))?;
        let value = serde_json::to_vec(&svc).map_err(internal("encoding the service"))?;
        self.store
            .put(&key, &value)
            .await
            .map_err(internal("storing the service"))?;
        let ops = match st.lb.upsert(&svc) {
            Ok(ops) => ops,
            Err(e) => {
                let undo = match &previous {
                    Some(v) => self.store.put(&key, v).await,
                    None => self.store.delete(&key).await.map(|_| ()),
                };
                if let Err(u) = undo {
                    eprintln!(
                        "level=error msg=\"undoing a service write\" key={key} error=\"{u}\""
                    );
                }
                return Err(match e {
                    cilium_lb::LbError::IdsExhausted { .. } => ApiError::conflict(e.to_string()),
                    _ => ApiError::bad_request(e.to_string()),
                });
            }
        };
        if let Some(dp) = st.dp.as_mut() {
            dp.services
                .apply(&ops)
                .map_err(internal("writing the service maps"))?;
        }
        let id = st
            .lb
            .service_id(&svc.frontend)
            .ok_or_else(|| ApiError::internal("the service has no id after its update"))?;
        Ok((id, existing.is_none()))
    }

    /// Deletes the service with this id (`DELETE /v1/service/{id}`).
    pub async fn delete_service(&self, id: u16) -> Result<Service, ApiError> {
        let mut st = self.state.lock().await;
        let svc = st
            .lb
            .services()
            .into_iter()
            .find(|(i, _)| *i == id)
            .map(|(_, s)| s.clone())
            .ok_or_else(|| ApiError::not_found(format!("service {id} not found")))?;
        self.store
            .delete(&format!("{SERVICES_PREFIX}/{}", svc.frontend))
            .await
            .map_err(internal("deleting the service"))?;
        let ops = st.lb.delete(&svc.frontend);
        if let Some(dp) = st.dp.as_mut() {
            dp.services
                .apply(&ops)
                .map_err(internal("writing the service maps"))?;
        }
        Ok(svc)
    }

    /// The services, by id.
    pub async fn services(&self) -> Vec<(u16, Service)> {
        let st = self.state.lock().await;
        let mut out: Vec<(u16, Service)> = st
            .lb
            .services()
            .into_iter()
            .map(|(i, s)| (i, s.clone()))
            .collect();
        out.sort_by_key(|(i, _)| *i);
        out
    }

    /// Brings the services back at start: ids and Maglev tables from the maps (with the
    /// datapath), the services from the store, and writes only the difference (nothing
    /// after a plain restart). Returns how many services there are.
    async fn restore_services(&self, config: LbConfig) -> Result<usize, String> {
        let mut desired: Vec<Service> = Vec::new();
        for (key, value) in self
            .store
            .list_prefix(&format!("{SERVICES_PREFIX}/"))
            .await
            .map_err(|e| e.to_string())?
        {
            let parsed = serde_json::from_slice::<Service>(&value)
                .map_err(|e| e.to_string())
                .and_then(|s| s.validate().map(|()| s).map_err(|e| e.to_string()));
            match parsed {
                Ok(s) => desired.push(s),
                Err(e) => eprintln!(
                    "level=warning msg=\"skipping a stored service\" key={key} error=\"{e}\""
                ),
            }
        }
        // In a cluster, the Kubernetes services are part of what the maps should hold: list
        // them now so a restart does not take them out and put them back.
        let k8s = self.k8s_services_now().await?;
        let api_count = desired.len();
        for (_, services) in &k8s {
            desired.extend(services.iter().cloned());
        }
        let mut st = self.state.lock().await;
        st.k8s_frontends = k8s
            .iter()
            .map(|(owner, svcs)| (owner.clone(), svcs.iter().map(|s| s.frontend).collect()))
            .collect();
        let NodeState { lb, dp, .. } = &mut *st;
        if let Some(dp) = dp.as_mut() {
            let maps = dp.services.read_back().map_err(|e| e.to_string())?;
            *lb = LbManager::restore(config.clone(), maps).unwrap_or_else(|e| {
                eprintln!(
                    "level=warning msg=\"the load-balancing maps do not restore; rewriting them\" error=\"{e}\""
                );
                LbManager::new(config)
            });
        }
        let ops = lb
            .apply(&desired)
            .map_err(|e| format!("restoring the services: {e}"))?;
        if let Some(dp) = dp.as_mut() {
            dp.services
                .apply(&ops)
                .map_err(|e| format!("writing the service maps: {e}"))?;
        }
        Ok(api_count)
    }

    /// The Kubernetes services of the cluster store, translated, by `<ns>/<name>` (empty
    /// with the embedded store).
    /// A store that cannot be listed is an error: an empty answer would take every
    /// Kubernetes service out of the maps.
    async fn k8s_services_now(&self) -> Result<Vec<(String, Vec<Service>)>, String> {
        use cilium_core::cluster::{ENDPOINTS_PREFIX, SERVICES_PREFIX};
        if !matches!(**self.store(), AnyStore::Etcd(_)) {
            return Ok(Vec::new());
        }
        let list = |prefix: &'static str| async move {
            let listed = self
                .store
                .list_prefix(&format!("{prefix}/"))
                .await
                .map_err(|e| format!("listing {prefix}: {e}"))?;
            // Entries that are not JSON are left out, as the informers leave them out.
            Ok::<BTreeMap<String, Value>, String>(
                listed
                    .into_iter()
                    .filter_map(|(k, v)| serde_json::from_slice(&v).ok().map(|v| (k, v)))
                    .collect(),
            )
        };
        let services = list(SERVICES_PREFIX).await?;
        let endpoints = list(ENDPOINTS_PREFIX).await?;
        Ok(services
            .iter()
            .map(|(key, svc)| {
                let owner = key
                    .strip_prefix(SERVICES_PREFIX)
                    .unwrap_or(key)
                    .trim_start_matches('/')
                    .to_owned();
                let eps = endpoints.get(&format!("{ENDPOINTS_PREFIX}/{owner}"));
                (owner, crate::k8s::services_from_k8s(svc, eps, self.ipv4))
            })
            .collect())
    }

    /// Programs the frontends of one Kubernetes service (`<ns>/<name>`): the given ones
    /// added or updated, the ones it had before and no longer has removed.
    pub(crate) async fn apply_k8s_service(
        &self,
        owner: &str,
        services: Vec<Service>,
    ) -> Result<(), String> {
        let mut st = self.state.lock().await;
        let previous = st.k8s_frontends.remove(owner).unwrap_or_default();
        let mut ops = Vec::new();
        let mut now = Vec::new();
        for svc in &services {
            match st.lb.upsert(svc) {
                Ok(o) => {
                    ops.extend(o);
                    now.push(svc.frontend);
                }
                Err(e) => eprintln!(
                    "level=warning msg=\"skipping a service frontend\" service={owner} frontend={} error=\"{e}\"",
                    svc.frontend
                ),
            }
        }
        for fe in previous.iter().filter(|f| !now.contains(f)) {
            ops.extend(st.lb.delete(fe));
        }
        if !now.is_empty() {
            st.k8s_frontends.insert(owner.to_owned(), now);
        }
        if let Some(dp) = st.dp.as_mut() {
            dp.services.apply(&ops).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Sets the enforcement mode at run time.
    pub async fn set_enforcement(&self, mode: PolicyEnforcement) -> Result<(), ApiError> {
        let mut st = self.state.lock().await;
        if st.policy.mode() == enforcement(mode) {
            return Ok(());
        }
        // The engine's mode is fixed at creation: rebuild it with the same rules and
        // endpoints, then write every endpoint's map.
        let mut engine = PolicyEngine::new(enforcement(mode));
        for (key, value) in self
            .store
            .list_prefix(&format!("{POLICIES_PREFIX}/"))
            .await
            .map_err(internal("listing policies"))?
        {
            let text = String::from_utf8_lossy(&value).into_owned();
            for (_, rules) in cilium_policy::parse(&text)
                .map_err(|e| ApiError::internal(format!("stored policy {key}: {e}")))?
            {
                engine.add_rules(rules);
            }
        }
        let mut diff = PolicyDiff::default();
        // Every identity of the cluster (other nodes' pods too), then the local endpoints.
        if let Ok(all) = self.identities.backend().list().await {
            for (id, labels) in all {
                merge(&mut diff, engine.upsert_identity(id, labels));
            }
        }
        for ep in st.endpoints.values() {
            let labels = LabelSet::parse_list(&ep.labels).unwrap_or_default();
            merge(
                &mut diff,
                engine.upsert_identity(NumericIdentity::new(ep.identity), labels.clone()),
            );
            merge(&mut diff, engine.upsert_endpoint(ep.id, labels));
        }
        st.policy = engine;
        let ids: Vec<u16> = st.endpoints.keys().copied().collect();
        let NodeState { policy, dp, .. } = &mut *st;
        if let Some(dp) = dp.as_mut() {
            for id in ids {
                match policy.policy(id) {
                    Some(p) => dp.policy.install(id, &p),
                    None => dp.policy.remove(id),
                }
                .map_err(internal("writing the policy map"))?;
            }
        }
        Ok(())
    }

    async fn load_policies(&self) -> Result<(), String> {
        let mut st = self.state.lock().await;
        for (key, value) in self
            .store
            .list_prefix(&format!("{POLICIES_PREFIX}/"))
            .await
            .map_err(|e| e.to_string())?
        {
            let text = String::from_utf8_lossy(&value).into_owned();
            match cilium_policy::parse(&text) {
                Ok(docs) => {
                    for (_, rules) in docs {
                        st.policy.add_rules(rules);
                    }
                }
                Err(e) => eprintln!(
                    "level=warning msg=\"skipping a stored policy\" key={key} error=\"{e}\""
                ),
            }
        }
        Ok(())
    }

    /// Restores the endpoints of the last run from their state files: an endpoint whose
    /// interface still exists gets its IP, id and identity back and its datapath state
    /// rewritten (links are swapped, maps kept: traffic does not stop); one whose interface
    /// is gone is removed. Datapath entries of endpoints that were never persisted are
    /// removed, identities no endpoint claims are released, and queued deletions replayed.
    async fn restore_endpoints(&self) -> Result<RestoreReport, String> {
        let mut report = RestoreReport::default();
        let (records, bad) = endpoint::load_all(&self.state_dir);
        for (path, why) in bad {
            eprintln!(
                "level=warning msg=\"removing an unreadable endpoint state file\" file={} error=\"{why}\"",
                path.display()
            );
            let _ = std::fs::remove_file(&path);
            report.bad_files.push(path.display().to_string());
        }
        let nl = Netlink::open().map_err(|e| e.to_string())?;
        let mut st = self.state.lock().await;
        let has_dp = st.dp.is_some();
        for mut ep in records {
            let link = nl
                .get(&ep.interface_name)
                .await
                .map_err(|e| e.to_string())?;
            let alive = has_dp && link.is_some_and(|l| l.index == ep.interface_index);
            let claimed = alive
                && st.ids.take(u32::from(ep.id) - 1)
                && st
                    .ipam
                    .allocate(
                        IpAddr::V4(ep.ipv4),
                        Owner::new(ep.owner()).map_err(|e| e.to_string())?,
                    )
                    .is_ok();
            if !claimed {
                if alive {
                    st.ids.put(u32::from(ep.id) - 1);
                }
                self.clear_datapath(&mut st, &ep, &nl).await;
                let _ = endpoint::forget(&self.state_dir, ep.id);
                report.removed.push(ep.id);
                continue;
            }
            let labels = LabelSet::parse_list(&ep.labels).map_err(|e| e.to_string())?;
            ep.state = EndpointState::Restoring;
            let previous = ep.identity;
            let brought = self.bring_up(&mut st, &mut ep, &labels, &nl).await;
            match brought {
                Ok(()) => {
                    if ep.identity != previous {
                        eprintln!(
                            "level=warning msg=\"restored endpoint got a new identity\" endpoint={} old={previous} new={}",
                            ep.id, ep.identity
                        );
                    }
                    report.restored.push(ep.id);
                    st.endpoints.insert(ep.id, ep);
                }
                Err(e) => {
                    eprintln!(
                        "level=warning msg=\"could not restore endpoint\" endpoint={} error=\"{e}\"",
                        ep.id
                    );
                    st.ids.put(u32::from(ep.id) - 1);
                    let _ = st.ipam.release(IpAddr::V4(ep.ipv4));
                    let _ = endpoint::forget(&self.state_dir, ep.id);
                    report.removed.push(ep.id);
                }
            }
        }
        // Datapath entries no restored endpoint owns: endpoints that crashed half-made.
        let known: BTreeSet<Ipv4Addr> = st.endpoints.values().map(|e| e.ipv4).collect();
        let ifnames: BTreeSet<String> = st
            .endpoints
            .values()
            .map(|e| e.interface_name.clone())
            .collect();
        if let Some(dp) = st.dp.as_mut() {
            if let Ok(entries) = dp.maps.endpoints.entries() {
                for (key, _) in entries {
                    let Some(ip) = key.ipv4_addr() else { continue };
                    if !known.contains(&ip) {
                        let _ = dp.maps.endpoints.remove_ipv4(ip);
                        let _ = dp.maps.ipcache.remove_ipv4(ip, 32);
                    }
                }
            }
            let links = dp
                .datapath
                .config()
                .bpf_root
                .join("cilium")
                .join("endpoints");
            if let Ok(dirs) = std::fs::read_dir(&links) {
                for d in dirs.flatten() {
                    let name = d.file_name().to_string_lossy().into_owned();
                    if !ifnames.contains(&name) {
                        let _ = dp.datapath.detach_endpoint(&name);
                    }
                }
            }
        }
        // Identities this node registered that no endpoint claims any more.
        let claimed: BTreeSet<u32> = st.endpoints.values().map(|e| e.identity).collect();
        drop(st);
        if let Ok(regs) = self.identities.backend().registrations().await {
            for (labels, id) in regs {
                if !claimed.contains(&id.get()) {
                    let _ = self.identities.backend().release(&labels, id).await;
                }
            }
        }
        // With the embedded store this node is the only user: identities that no restored
        // endpoint re-registered (their registrations went with the last session) are
        // garbage. (With a shared store the operator collects them, after a grace period.)
        if let Ok(unused) = self.identities.backend().unused().await {
            for (id, labels) in unused {
                if !claimed.contains(&id.get()) {
                    let _ = self
                        .identities
                        .backend()
                        .remove_if_unused(id, &labels)
                        .await;
                }
            }
        }
        report.replayed_deletes = self.replay_delete_queue().await;
        Ok(report)
    }

    /// Deletes the endpoints of containers the CNI queued for deletion while the agent was
    /// down (one file per container id in the delete queue), then the files.
    pub async fn replay_delete_queue(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.delete_queue) else {
            return 0;
        };
        let mut n = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let container = text.trim();
            if !container.is_empty() && self.delete_container(container).await.is_ok() {
                n += 1;
            }
            let _ = std::fs::remove_file(&path);
        }
        n
    }

    /// Releases identities unused for longer than the grace period (run periodically).
    pub async fn collect_identities(&self) {
        if let Err(e) = self.identities.gc().await {
            eprintln!("level=warning msg=\"identity GC failed\" error=\"{e}\"");
        }
    }

    async fn update_gauges(&self) {
        let st = self.state.lock().await;
        self.gauges(&st);
    }

    /// Sets the gauges from a state the caller holds (no second lock: a response never
    /// waits behind queued endpoint creations).
    fn gauges(&self, st: &NodeState) {
        let ready = st
            .endpoints
            .values()
            .filter(|e| e.state == EndpointState::Ready)
            .count();
        self.metrics.set_endpoints(ready as i64);
        let (used, total) = st.ipam.usage(Family::V4).unwrap_or((0, 0));
        self.metrics.set_ipam(i64::from(used), i64::from(total));
        let ids: BTreeSet<u32> = st.endpoints.values().map(|e| e.identity).collect();
        self.metrics.set_identities(ids.len() as i64);
    }
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty()
        || name.len() > 253
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    {
        return Err(ApiError::bad_request(format!(
            "{name:?} is not a valid Kubernetes name"
        )));
    }
    Ok(())
}

fn merge(into: &mut PolicyDiff, more: PolicyDiff) {
    into.entries.extend(more.entries);
    into.enforcement.extend(more.enforcement);
}

fn apply_policy(st: &mut NodeState, diff: &PolicyDiff) -> Result<usize, ApiError> {
    match st.dp.as_mut() {
        Some(dp) => dp
            .policy
            .apply(&st.policy, diff)
            .map_err(internal("writing the policy map")),
        None => Ok(0),
    }
}

fn find_in<'a>(
    endpoints: &'a BTreeMap<u16, EndpointRecord>,
    id: &str,
) -> Result<&'a EndpointRecord, ApiError> {
    let found = if let Some(c) = id.strip_prefix("container-id:") {
        endpoints.values().find(|e| e.container_id == c)
    } else if let Some(p) = id.strip_prefix("pod-name:") {
        let (ns, pod) = p.split_once([':', '/']).ok_or_else(|| {
            ApiError::bad_request(format!("{id:?}: expected pod-name:<ns>:<pod>"))
        })?;
        endpoints
            .values()
            .find(|e| e.k8s_namespace == ns && e.k8s_pod_name == pod)
    } else {
        let n = id.strip_prefix("cilium-local:").unwrap_or(id);
        let n: u16 = n
            .parse()
            .map_err(|_| ApiError::bad_request(format!("{id:?} is not an endpoint id")))?;
        endpoints.get(&n)
    };
    found.ok_or_else(|| ApiError::not_found(format!("endpoint {id} not found")))
}

/// `aa:bb:cc:dd:ee:ff`.
fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// The MAC of `ifname` inside the pod's namespace.
async fn pod_mac(netns: &str, ifname: &str) -> Option<[u8; 6]> {
    let file = std::fs::File::open(netns).ok()?;
    let nl = Netlink::open_in(&file).ok()?;
    nl.get(ifname).await.ok().flatten().map(|l| l.mac)
}
