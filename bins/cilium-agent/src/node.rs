// SPDX-License-Identifier: Apache-2.0

//! The node: the agent's state and the work behind the API. [`Node`] holds what the node
//! is (its name, addresses, pod CIDR, directories, store, identity allocator, metrics) and
//! starts it ([`Node::start`]: the store, the node IP, the pod CIDR, bpffs and the
//! datapath). Each subsystem lives in its own file with its state and its map writes:
//!
//! - `endpoints`: endpoint creation, deletion and restore, pod records, the delete queue,
//!   IPAM (`cilium_lxc`, the endpoints' programs and routes);
//! - `policy`: the policy engine, imported and cluster policies (`cilium_policy_v2`);
//! - `service_sync`: services from the API and from Kubernetes (`cilium_lb4_*`);
//! - `ipcache`: `cilium_ipcache_v2` and the endpoints' announcements to the cluster.
//!
//! Their states sit together under one lock, so every change is serialised; each is
//! all-or-nothing: a failed step undoes the ones before it.

mod ceps;
mod endpoints;
mod error;
mod identities;
mod ipcache;
mod policy;
mod service_sync;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cilium_bpf::lb::ServiceWriter;
use cilium_bpf::link::Netlink;
use cilium_bpf::maps::Maps;
use cilium_bpf::policy::PolicyWriter;
use cilium_bpf::{Datapath, DatapathConfig};
use cilium_core::cluster::{CILIUM_NODES_PREFIX, Change, CiliumNode, Informer, Watcher};
use cilium_core::config::{AgentConfig, IdentityAllocationMode};
use cilium_core::kvstore::{AnyStore, FileStore, KvStore};
use cilium_core::{LabelFilter, NumericIdentity};
use cilium_identity::{AllocatorConfig, IdentityAllocator, IdentityBackend, KvBackend};
use cilium_ipam::{ClusterPool, ClusterPoolConfig, NodeAllocator, Owner};
use cilium_lb::manager::LbConfig;
use ipnet::{IpNet, Ipv4Net};

use crate::metrics::Metrics;
use endpoints::{EndpointDatapath, EndpointTable};
use error::internal;
use identities::Identities;
use ipcache::IpCache;
use policy::PolicyState;
use service_sync::ServiceTable;

/// The node's VXLAN device in tunnel mode (Cilium's name).
const TUNNEL_DEVICE: &str = "cilium_vxlan";

/// Pods registered through the API, as Kubernetes would hold them.
pub use cilium_core::cluster::PODS_PREFIX;
/// Imported policies, one key per document origin.
pub use cilium_core::cluster::POLICIES_PREFIX;
pub use error::ApiError;

/// Start-up options that are not configuration keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartOptions {
    /// Load the datapath (needs root and a BPF file system). Without it, the agent serves
    /// its API and keeps its state but cannot create endpoints.
    pub datapath: bool,
}

/// The datapath as `Node::load_datapath` loads it, before its handles go to the
/// subsystems that write through them.
#[derive(Debug)]
struct LoadedDatapath {
    datapath: Datapath,
    maps: Maps,
    policy: PolicyWriter,
    services: ServiceWriter,
    socket_lb: Option<cilium_bpf::loader::SocketLb>,
}

/// The node's mutable state: one struct per subsystem, each defined in its file with the
/// methods that change it. With a datapath every subsystem holds its map handles; without
/// one, none does.
///
/// One lock over all of them, not one each: an endpoint's creation claims an IP and an id,
/// feeds the policy engine and writes `cilium_lxc`, the ipcache and its policy map as one
/// all-or-nothing step, and a policy change rewrites the maps of the endpoints it sees.
/// Separate locks would let one change see another half-made, and taking several in
/// different orders could deadlock.
#[derive(Debug)]
struct NodeState {
    endpoints: EndpointTable,
    policy: PolicyState,
    services: ServiceTable,
    ipcache: IpCache,
}

impl NodeState {
    /// Hands the datapath's handles (if loaded) to the subsystems.
    fn new(
        ipam: NodeAllocator,
        config: &AgentConfig,
        lb: LbConfig,
        dp: Option<LoadedDatapath>,
    ) -> Self {
        let (programs, ipcache, policy_maps, service_maps) = match dp {
            Some(dp) => (
                Some(EndpointDatapath::new(dp.datapath, dp.maps.endpoints)),
                Some(dp.maps.ipcache),
                Some(dp.policy),
                Some(dp.services),
            ),
            None => (None, None, None, None),
        };
        NodeState {
            endpoints: EndpointTable::new(ipam, programs),
            policy: PolicyState::new(policy::enforcement(config.enable_policy), policy_maps),
            services: ServiceTable::new(lb, service_maps),
            ipcache: IpCache::new(ipcache),
        }
    }
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

/// The Kubernetes API client of a node running under Kubernetes.
#[derive(Clone)]
pub(crate) struct K8sApi(pub(crate) kube::Client);

impl std::fmt::Debug for K8sApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("K8sApi")
    }
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
    identities: IdentityAllocator<Identities>,
    /// The Kubernetes API, when the node runs under Kubernetes.
    pub(crate) k8s: Option<K8sApi>,
    /// Woken when an endpoint is published or withdrawn (the CiliumEndpoint sync).
    pub(crate) endpoints_changed: tokio::sync::Notify,
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
    /// Socket LB (`bpf-lb-sock`), attached to `cgroup-root` for as long as the node runs.
    socket_lb: Option<cilium_bpf::loader::SocketLb>,
    /// What the last start restored.
    pub restore: std::sync::Mutex<RestoreReport>,
    /// The agent's metrics.
    pub metrics: Arc<Metrics>,
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

/// Attaches socket LB to `cgroup` (`cgroup-root`): the services' connections of every
/// process in it go straight to a backend. Never mounts anything; a path that is not a
/// cgroup v2 directory leaves socket LB off with a warning (the services still work through
/// the endpoints' programs, for pods).
fn attach_socket_lb(bpf_root: &Path, cgroup: &Path) -> Option<cilium_bpf::loader::SocketLb> {
    match cilium_bpf::loader::SocketLb::attach(bpf_root, cgroup) {
        Ok(lb) => {
            eprintln!(
                "level=info msg=\"socket LB attached\" cgroup-root={}",
                cgroup.display()
            );
            Some(lb)
        }
        Err(e) => {
            eprintln!(
                "level=warning msg=\"socket LB is off: it could not be attached to cgroup-root (a cgroup v2 directory)\" cgroup-root={} error=\"{e}\"",
                cgroup.display()
            );
            None
        }
    }
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

/// The store `kvstore` names: the embedded one in `state-dir`, or etcd (retried every
/// second until it answers: without its cluster state the node cannot start).
async fn open_store(config: &AgentConfig, state_dir: &Path) -> Result<AnyStore, String> {
    if config.kvstore != "etcd" {
        return FileStore::open(state_dir.join("kvstore.log"))
            .map(AnyStore::File)
            .map_err(|e| format!("opening the embedded store: {e}"));
    }
    let etcd = config.etcd_config().map_err(|e| e.to_string())?;
    let endpoints = &etcd.endpoints;
    let ttl = std::time::Duration::from_secs(config.kvstore_lease_ttl);
    let mut logged = false;
    loop {
        match cilium_core::kvstore::etcd::EtcdStore::connect_with(&etcd, ttl).await {
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

/// Registers this node's CiliumNode in the cluster store (cluster-pool IPAM) and waits
/// until the operator has written a pod CIDR into it.
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
    let (informer, initial) = Informer::<_, CiliumNode>::start(store.clone(), CILIUM_NODES_PREFIX)
        .await
        .map_err(|e| format!("watching CiliumNodes: {e}"))?;
    await_pod_cidr(informer, initial, name).await
}

/// [`wait_for_pod_cidr`] through the Kubernetes API: the CiliumNode object is created (or
/// its addresses updated, its pod CIDRs kept), then watched. Waits out API outages.
async fn wait_for_pod_cidr_k8s(
    client: &kube::Client,
    name: &str,
    ipv4: Ipv4Addr,
) -> Result<Ipv4Net, String> {
    let mut logged = false;
    let started = loop {
        let attempt = async {
            cilium_k8s::nodes::register(client.clone(), name, ipv4).await?;
            cilium_k8s::nodes::informer(client.clone()).await
        };
        match attempt.await {
            Ok(started) => break started,
            Err(e) => {
                if !logged {
                    eprintln!(
                        "level=warning msg=\"cannot register this node's CiliumNode yet; retrying every second\" ciliumnode={name} error=\"{e}\""
                    );
                    logged = true;
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    };
    await_pod_cidr(started.0, started.1, name).await
}

/// Follows CiliumNodes until `name`'s has a pod CIDR, reporting the operator's error.
async fn await_pod_cidr<W: Watcher<CiliumNode>>(
    mut informer: W,
    initial: Vec<Change<CiliumNode>>,
    name: &str,
) -> Result<Ipv4Net, String> {
    let mut changes: std::collections::VecDeque<Change<CiliumNode>> = initial.into();
    let mut reported = String::new();
    eprintln!(
        "level=info msg=\"waiting for the operator to allocate this node's pod CIDR\" ciliumnode={name}"
    );
    loop {
        let change = match changes.pop_front() {
            Some(c) => c,
            None => match informer.next_change().await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!(
                        "level=warning msg=\"watching CiliumNodes failed; retrying\" error=\"{e}\""
                    );
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            },
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

/// The CiliumIdentity backend, once the CRD can be listed (the operator registers it:
/// an agent starting with it waits, as Cilium's does).
async fn crd_identities(
    client: &kube::Client,
    range: (u32, u32),
) -> cilium_k8s::identity::CrdBackend {
    let mut logged = false;
    loop {
        match cilium_k8s::identity::CrdBackend::with_range(client.clone(), range.0, range.1).await {
            Ok(backend) => return backend,
            Err(e) => {
                if !logged {
                    eprintln!(
                        "level=warning msg=\"cannot list CiliumIdentities yet (is the CRD registered?); retrying every second\" error=\"{e}\""
                    );
                    logged = true;
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

/// The Kubernetes API client the configuration names: `k8s-kubeconfig-path`, else the
/// kubeconfig `KUBECONFIG` names (kube-rs's convention; the lab's kubelet names the pod's
/// service account that way, having no mount namespace to put it at its fixed path), else
/// the in-cluster account when `k8s-api-server` or `KUBERNETES_SERVICE_HOST` is set
/// (Cilium's `k8sServiceHost`/`k8sServicePort`); `k8s-api-server` overrides the server's
/// URL. None without any of them.
pub async fn k8s_client(config: &AgentConfig) -> Result<Option<kube::Client>, String> {
    let in_cluster = std::env::var("KUBERNETES_SERVICE_HOST").is_ok_and(|h| !h.is_empty());
    let from_env = std::env::var_os("KUBECONFIG")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    let mut kube_config = match config.k8s_kubeconfig_path.as_ref().or(from_env.as_ref()) {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("k8s-kubeconfig-path {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &Default::default())
                .await
                .map_err(|e| format!("k8s-kubeconfig-path {}: {e}", path.display()))?
        }
        None if in_cluster || !config.k8s_api_server.is_empty() => kube::Config::incluster()
            .map_err(|e| {
                format!("the in-cluster Kubernetes account (k8s-api-server / KUBERNETES_SERVICE_HOST): {e}")
            })?,
        None => return Ok(None),
    };
    if !config.k8s_api_server.is_empty() {
        kube_config.cluster_url = config
            .k8s_api_server
            .parse()
            .map_err(|e| format!("k8s-api-server {}: {e}", config.k8s_api_server))?;
    }
    kube::Client::try_from(kube_config)
        .map(Some)
        .map_err(|e| format!("the Kubernetes client: {e}"))
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
        let k8s = k8s_client(config).await?;
        let name = node_name(config);
        let ipv4 = match config.ipv4_node {
            Some(ip) => ip,
            None => detect_node_ip(config.ipv4_range).await?,
        };
        let cidr = match (config.ipv4_range, &k8s) {
            (Some(c), _) => c,
            (None, Some(client)) => wait_for_pod_cidr_k8s(client, &name, ipv4).await?,
            (None, None) if config.kvstore == "etcd" => {
                wait_for_pod_cidr(&store, &name, ipv4).await?
            }
            (None, None) => {
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
        let backend = match (&k8s, config.identity_allocation_mode) {
            (Some(client), IdentityAllocationMode::Crd) => {
                Identities::Crd(Box::new(crd_identities(client, range).await))
            }
            (None, IdentityAllocationMode::Crd) => {
                eprintln!(
                    "level=info msg=\"identity-allocation-mode=crd needs the Kubernetes API; without one, identities are kept in the cluster store (kvstore mode)\""
                );
                Identities::Kvstore(KvBackend::new(
                    store.clone(),
                    name.clone(),
                    range.0,
                    range.1,
                ))
            }
            (_, IdentityAllocationMode::Kvstore) => Identities::Kvstore(KvBackend::new(
                store.clone(),
                name.clone(),
                range.0,
                range.1,
            )),
        };
        eprintln!(
            "level=info msg=\"security identities\" identity-allocation-mode={}",
            backend.mode()
        );
        let identities = IdentityAllocator::new(backend, {
            let mut c = AllocatorConfig::default();
            c.cluster_id = config.cluster_id;
            c
        });
        if options.datapath && !config.enable_endpoint_routes {
            eprintln!(
                "level=warning msg=\"enable-endpoint-routes=false is not supported: each endpoint gets its /32 route to its lxc device, as with true\""
            );
        }
        let lb_config = service_sync::lb_config(config, &name, options.datapath)?;
        let mut dp = if options.datapath {
            Some(Self::load_datapath(config, ipv4, router, cidr, &lb_config).await?)
        } else {
            None
        };
        let socket_lb = dp.as_mut().and_then(|d| d.socket_lb.take());
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
            k8s: k8s.map(K8sApi),
            endpoints_changed: tokio::sync::Notify::new(),
            filter: LabelFilter::default(),
            cluster: config.cluster_name.clone(),
            cluster_nodes: std::sync::Mutex::new(BTreeMap::new()),
            remote_endpoints: std::sync::Mutex::new(BTreeMap::new()),
            endpoint_routes: true,
            state: tokio::sync::Mutex::new(NodeState::new(ipam, config, lb_config.clone(), dp)),
            socket_lb,
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
    ) -> Result<LoadedDatapath, String> {
        mount_bpffs(&config.bpf_root)?;
        let mut dp_config = DatapathConfig::new(&config.bpf_root, ipv4, router);
        dp_config.maglev_hash_seed = lb.maglev.seed().jhash0;
        dp_config.monitor_aggregation = config.monitor_aggregation as u8;
        dp_config.monitor_aggregation_interval =
            u32::try_from(config.monitor_aggregation_interval).unwrap_or(u32::MAX);
        dp_config.monitor_aggregation_flags = config.monitor_aggregation_flags;
        dp_config.conntrack_accounting = config.bpf_conntrack_accounting;
        dp_config.enable_nodeport = config.kube_proxy_replacement;
        dp_config.enable_bpf_masquerade = config.enable_bpf_masquerade;
        dp_config.service_no_backend_reject =
            config.service_no_backend_response == cilium_core::config::NoBackendResponse::Reject;
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
        // The node's device (the one holding the node's IP): traffic from other nodes to
        // this node's pods passes their ingress policy there (and skips the stack), NodePort
        // with kube-proxy-replacement, masquerading with enable-bpf-masquerade.
        // A node whose IP no device holds (a test's bare namespace) runs without them.
        match node_device(ipv4).await {
            Ok(device) => {
                datapath
                    .attach_netdev(&device)
                    .map_err(|e| format!("attaching to {device}: {e}"))?;
                eprintln!(
                    "level=info msg=\"attached the node-device programs\" device={device} nodeport={} bpf-masquerade={}",
                    config.kube_proxy_replacement, config.enable_bpf_masquerade
                );
            }
            Err(e) => eprintln!(
                "level=warning msg=\"no node-device programs: NodePort from other nodes and BPF masquerading are off\" error=\"{e}\""
            ),
        }
        let maps = Maps::open(&config.bpf_root).map_err(|e| e.to_string())?;
        let socket_lb = if config.bpf_lb_sock {
            attach_socket_lb(&config.bpf_root, &config.cgroup_root)
        } else {
            None
        };
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
        Ok(LoadedDatapath {
            datapath,
            maps,
            policy,
            services,
            socket_lb,
        })
    }

    /// The cgroup socket LB is attached to, if it is.
    pub fn socket_lb_cgroup(&self) -> Option<&Path> {
        self.socket_lb.as_ref().map(|lb| lb.cgroup())
    }

    /// The embedded store.
    pub fn store(&self) -> &Arc<AnyStore> {
        &self.store
    }

    /// The Kubernetes API client, when the node runs under Kubernetes.
    pub(crate) fn k8s_client(&self) -> Option<kube::Client> {
        self.k8s.as_ref().map(|k| k.0.clone())
    }

    /// Whether the datapath is loaded.
    pub async fn has_datapath(&self) -> bool {
        self.state.lock().await.endpoints.has_datapath()
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

    /// Releases identities unused for longer than the grace period (run periodically).
    pub async fn collect_identities(&self) {
        if let Err(e) = self.identities.gc().await {
            eprintln!("level=warning msg=\"identity GC failed\" error=\"{e}\"");
        }
    }
}

/// The name of the device that holds the node's IP (in the agent's network namespace).
async fn node_device(ipv4: Ipv4Addr) -> Result<String, String> {
    let nl = Netlink::open().map_err(|e| e.to_string())?;
    let index = nl
        .ipv4_addresses()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|(_, ip)| *ip == ipv4)
        .map(|(index, _)| index)
        .ok_or_else(|| format!("no device holds the node's IP {ipv4}"))?;
    nl.devices()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|d| d.index == index)
        .map(|d| d.name)
        .ok_or_else(|| format!("no device with index {index} (the node's IP {ipv4})"))
}
