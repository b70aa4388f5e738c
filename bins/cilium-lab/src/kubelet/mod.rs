// SPDX-License-Identifier: Apache-2.0

//! The lab's kubelet: one per node, in the node's network namespace, on the real
//! Kubernetes API. It registers its Node and renews its Lease ([`node`]), watches the pods
//! bound to its node and runs them ([`runtime`]: a network namespace wired by cilium-cni
//! as a container runtime wires it, a process per container), reports their status
//! (podIP, phase, conditions, containerStatuses with restart counts), applies their
//! restartPolicy, stops them with their grace period when they are deleted and confirms
//! the deletion, keeps each pod's hosts file naming the Services (the lab's cluster DNS),
//! and serves the kubelet API that `kubectl exec` and `kubectl logs` reach through the
//! apiserver ([`server`]).
//!
//! Design notes:
//! - Service names: each pod's `/etc/netns/<netns>/hosts` (what `ip netns exec` shows as
//!   `/etc/hosts`, so every process started in the pod sees it) lists every Service by
//!   `NAME` (same namespace), `NAME.NS`, `NAME.NS.svc` and `NAME.NS.svc.cluster.local`,
//!   rewritten by the kubelet when Services change. Chosen over building CoreDNS from its
//!   Go module: no extra program to build (CoreDNS with its kubernetes plugin is another
//!   large Go build on a 2-core machine) and no DNS traffic in the flows Hubble shows; the
//!   cost is a file write per pod per Service change, and no SRV records or search-path
//!   semantics beyond the names above.
//! - Pods' processes run in their own sessions: a kubelet that stops (or is killed)
//!   leaves them running, and the next one adopts them from `pods.json` (a pid is only
//!   adopted if it still runs the program recorded).
//! - Readiness is "the process runs": probes are not run.

pub mod cni;
pub mod container;
pub mod node;
pub mod runtime;
pub mod server;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cilium_k8s::watch::Informer;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::watcher;
use serde_json::{Value, json};

use crate::workload;
use runtime::{ContainerRecord, PodRecord, RuntimeState};

/// How a kubelet runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The node's name.
    pub node: String,
    /// The node's InternalIP.
    pub ip: Ipv4Addr,
    /// The control-plane node (role label and taint).
    pub control_plane: bool,
    /// The kubeconfig of the node's credentials.
    pub kubeconfig: PathBuf,
    /// The kubelet's directory (`pods.json`, container logs).
    pub dir: PathBuf,
    /// Prefix of pods' network namespace names (`<prefix>-pod-<uid>`).
    pub netns_prefix: String,
    /// The node's network namespace, where the CNI plugin runs (`ip netns exec`, with the
    /// node's /sys); `None`: as the kubelet.
    pub node_netns: Option<String>,
    /// The node's CNI configuration directory (`/etc/cni/net.d` under its root).
    pub cni_conf_dir: PathBuf,
    /// Where CNI plugins are looked up, in order.
    pub cni_bin_dirs: Vec<PathBuf>,
    /// The node's root directory: `hostPath` volumes are paths under it (the lab's nodes
    /// share one machine's file system).
    pub host_root: PathBuf,
    /// Where the upstream Kubernetes programs are (for kube-proxy's image).
    pub kube_dir: Option<PathBuf>,
    /// The program whose `workload` subcommand runs the built-in workloads (cilium-lab).
    pub workload_program: PathBuf,
    /// The kubelet API's address and TLS files (certificate, key, client CA), if served.
    pub api: Option<ApiConfig>,
}

/// Where the kubelet API listens and its certificates.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The listening port (on the node's IP).
    pub port: u16,
    /// The serving certificate (PEM file).
    pub cert: PathBuf,
    /// Its key (PEM file).
    pub key: PathBuf,
    /// The CA of client certificates (the apiserver's).
    pub client_ca: PathBuf,
}

/// The most a deleted pod's processes are given to stop.
const MAX_GRACE: Duration = Duration::from_secs(30);
/// How often the Lease is renewed, and the Node's status reported.
const LEASE_RENEW: Duration = Duration::from_secs(10);
const STATUS_REPORT: Duration = Duration::from_secs(60);

/// The state the kubelet API shares with the pod loop.
#[derive(Debug, Clone)]
pub struct Shared {
    state: Arc<Mutex<RuntimeState>>,
    dir: PathBuf,
    /// The node's root directory (see [`Config::host_root`]).
    host_root: PathBuf,
}

impl Shared {
    /// The cgroup of a pod's processes: the node's ([`runtime::node_cgroup`]) for a
    /// `hostNetwork` pod (`netns` `None`), none for the others.
    fn cgroup_of(&self, netns: Option<&str>) -> Option<PathBuf> {
        match netns {
            None => runtime::node_cgroup(&self.host_root),
            Some(_) => None,
        }
    }

    fn find(&self, namespace: &str, pod: &str) -> Result<PodRecord, String> {
        let state = self.state.lock().map_err(|_| "kubelet state poisoned")?;
        state
            .pods
            .values()
            .find(|p| p.namespace == namespace && p.name == pod)
            .cloned()
            .ok_or_else(|| format!("pod {namespace}/{pod} is not running on this node"))
    }

    fn container<'a>(p: &'a PodRecord, container: &str) -> Result<&'a ContainerRecord, String> {
        p.containers
            .iter()
            .find(|c| c.name == container)
            .ok_or_else(|| {
                let names: Vec<&str> = p.containers.iter().map(|c| c.name.as_str()).collect();
                format!(
                    "container {container} is not valid for pod {} (containers: {})",
                    p.name,
                    names.join(", ")
                )
            })
    }

    /// The command that runs `argv` in a container (in its pod's network namespace).
    fn command_in(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        argv: &[String],
    ) -> Result<std::process::Command, String> {
        let p = self.find(namespace, pod)?;
        let c = Self::container(&p, container)?;
        if c.pid.is_none() {
            return Err(format!("container {container} is not running"));
        }
        let (program, args) = argv.split_first().ok_or("no command given")?;
        let program = image_program(c, program);
        let cgroup = self.cgroup_of(p.netns.as_deref());
        let prefix = runtime::pod_prefix(p.hostname(), p.netns.as_deref(), cgroup.as_deref());
        let mut cmd = std::process::Command::new(&prefix[0]);
        cmd.args(&prefix[1..])
            .arg(program)
            .args(args)
            .env_clear()
            .envs(c.env.iter().map(|(k, v)| (k, v)));
        Ok(cmd)
    }

    /// The log file of a container's current (or previous) run.
    fn log_of(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        previous: bool,
    ) -> Result<PathBuf, String> {
        let p = self.find(namespace, pod)?;
        let c = Self::container(&p, container)?;
        let run = if previous {
            c.restart_count.checked_sub(1).ok_or_else(|| {
                format!("previous terminated container \"{container}\" in pod \"{pod}\" not found")
            })?
        } else {
            c.restart_count
        };
        Ok(runtime::log_file(&self.dir, &p.uid, container, run))
    }
}

/// The program an exec names, as the container's image has it: a program of the image
/// (`/agnhost` in agnhost's, `cilium-dbg` in Cilium's) is the lab's copy beside the
/// container's entrypoint; any other is the node's (the lab's containers share its files).
fn image_program(c: &ContainerRecord, program: &str) -> String {
    let name = program.rsplit('/').next().unwrap_or(program);
    match (workload::for_image(&c.image, &[]), c.argv.first()) {
        (Ok(workload::Workload::Program { binary }), Some(entrypoint))
            if workload::image_programs(binary).contains(&name) =>
        {
            Path::new(entrypoint)
                .with_file_name(name)
                .display()
                .to_string()
        }
        _ => program.to_owned(),
    }
}

impl server::Containers for Shared {
    fn exec_command(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        argv: &[String],
    ) -> Result<std::process::Command, String> {
        self.command_in(namespace, pod, container, argv)
    }

    fn log_path(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        previous: bool,
    ) -> Result<PathBuf, String> {
        self.log_of(namespace, pod, container, previous)
    }

    fn pod_netns(&self, namespace: &str, pod: &str) -> Result<Option<PathBuf>, String> {
        let p = self.find(namespace, pod)?;
        match &p.netns {
            Some(_) if p.ip.is_none() => Err(format!("pod {namespace}/{pod} has no network yet")),
            Some(ns) => Ok(Some(PathBuf::from("/run/netns").join(ns))),
            None => Ok(None),
        }
    }
}

/// A kubelet.
pub struct Kubelet {
    cfg: Config,
    client: kube::Client,
    shared: Shared,
    /// Processes this kubelet started (their exit codes are known).
    children: HashMap<u32, Child>,
    /// The status last written per pod uid.
    reported: HashMap<String, Value>,
    /// Why a pod could not start, per uid, and when to try again.
    waiting: HashMap<String, (String, String, Instant)>,
    /// When each container (`uid/name`) last ended (its restart back-off).
    finished: HashMap<String, Instant>,
    /// The `kubernetes` Service's ClusterIP (containers' `KUBERNETES_SERVICE_HOST`).
    api_service: Option<String>,
    /// When each container's (`uid/name`) readiness probe is due next.
    probes: HashMap<String, Instant>,
}

impl std::fmt::Debug for Kubelet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubelet")
            .field("node", &self.cfg.node)
            .finish_non_exhaustive()
    }
}

fn log(msg: &str) {
    // The API's errors quote whole objects: the first 400 characters say what went wrong.
    let short: String = msg.chars().take(400).collect();
    let more = if short.len() < msg.len() {
        " [...]"
    } else {
        ""
    };
    eprintln!("{} kubelet: {short}{more}", node::now_rfc3339());
}

impl Kubelet {
    /// A kubelet for `cfg` (reads `pods.json`: the pods an earlier run left).
    pub async fn new(cfg: Config) -> Result<Kubelet, String> {
        std::fs::create_dir_all(&cfg.dir).map_err(|e| format!("{}: {e}", cfg.dir.display()))?;
        let state = RuntimeState::load(&cfg.dir)?;
        let client = cilium_k8s::client(&cfg.kubeconfig)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Kubelet {
            shared: Shared {
                state: Arc::new(Mutex::new(state)),
                dir: cfg.dir.clone(),
                host_root: cfg.host_root.clone(),
            },
            cfg,
            client,
            children: HashMap::new(),
            reported: HashMap::new(),
            waiting: HashMap::new(),
            finished: HashMap::new(),
            api_service: None,
            probes: HashMap::new(),
        })
    }

    /// What the kubelet API needs.
    pub fn shared(&self) -> Shared {
        self.shared.clone()
    }

    fn node_info(&self) -> node::NodeInfo {
        node::NodeInfo {
            name: self.cfg.node.clone(),
            ip: self.cfg.ip,
            control_plane: self.cfg.control_plane,
            port: self.cfg.api.as_ref().map_or(0, |a| a.port),
            max_pods: 110,
            network_ready: matches!(cni::load(&self.cfg.cni_conf_dir), Ok(Some(_))),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, RuntimeState> {
        // The loop is the only writer; a panic while holding it ends the kubelet anyway.
        self.shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn save(&self) {
        if let Err(e) = self.state().save(&self.cfg.dir) {
            log(&format!("saving pods.json: {e}"));
        }
    }

    /// Registers the node, then runs pods until the process ends.
    pub async fn run(mut self) -> Result<(), String> {
        let mut info = self.node_info();
        // The apiserver may still be starting: try for a while.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match node::register(&self.client, &info).await {
                Ok(()) => break,
                Err(e) if Instant::now() < deadline => {
                    log(&format!("registering (will retry): {e}"));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(e),
            }
        }
        node::renew_lease(&self.client, &self.cfg.node).await?;
        log(&format!("node {} registered", self.cfg.node));
        if let Some(api) = self.cfg.api.clone() {
            let read = |p: &PathBuf| {
                std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))
            };
            let (cert, key, ca) = (read(&api.cert)?, read(&api.key)?, read(&api.client_ca)?);
            let listener = tokio::net::TcpListener::bind((self.cfg.ip, api.port))
                .await
                .map_err(|e| format!("{}:{}: {e}", self.cfg.ip, api.port))?;
            let containers: Arc<dyn server::Containers> = Arc::new(self.shared());
            tokio::spawn(async move {
                if let Err(e) = server::serve(listener, &cert, &key, &ca, containers).await {
                    log(&format!("the kubelet API stopped: {e}"));
                }
            });
        }
        let pods_api: Api<Pod> = Api::all(self.client.clone());
        let (mut pods, _) = Informer::start_with(
            pods_api,
            watcher::Config::default().fields(&format!("spec.nodeName={}", self.cfg.node)),
            |p: &Pod| Ok(p.clone()),
        )
        .await
        .map_err(|e| e.to_string())?;
        let (mut services, _) = Informer::start_with(
            Api::<Service>::all(self.client.clone()),
            watcher::Config::default(),
            |s: &Service| Ok(s.clone()),
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        // The Lease is the node's heartbeat: renewed by a task of its own, so that a slow
        // pod (a long grace period, a slow CNI call) never makes the node look dead.
        let (client, node_name) = (self.client.clone(), self.cfg.node.clone());
        tokio::spawn(async move {
            let mut lease = tokio::time::interval(LEASE_RENEW);
            let mut failing = false;
            loop {
                lease.tick().await;
                match node::renew_lease(&client, &node_name).await {
                    Ok(()) => failing = false,
                    Err(e) if !failing => {
                        log(&e);
                        failing = true;
                    }
                    Err(_) => {}
                }
            }
        });
        let mut status = tokio::time::interval(STATUS_REPORT);
        let mut api_down = false;
        loop {
            // `None`: nothing heard from the API this time (a tick).
            let heard: Option<Result<(), String>> = tokio::select! {
                r = pods.next() => Some(r.map(|_| ()).map_err(|e| format!("watching pods: {e}"))),
                r = services.next() => Some(r.map(|_| ()).map_err(|e| format!("watching services: {e}"))),
                _ = tick.tick() => None,
                _ = status.tick() => Some(node::report_status(&self.client, &info).await),
            };
            // Said once per outage: the informers retry on their own.
            match heard {
                Some(Err(e)) if !api_down => {
                    log(&e);
                    api_down = true;
                }
                Some(Ok(())) if api_down => {
                    log("the API answers again");
                    api_down = false;
                }
                _ => {}
            }
            // A network plugin installed (or removed): the Node says so at once.
            let now = self.node_info();
            if now.network_ready != info.network_ready {
                info = now;
                log(&format!("network ready: {}", info.network_ready));
                if let Err(e) = node::report_status(&self.client, &info).await {
                    log(&e);
                }
            }
            let svcs = service_names(services.cache());
            self.sync(pods.cache(), &svcs).await;
        }
    }

    /// One round: every pod bound here runs as its spec says, every pod gone is cleaned
    /// up, statuses are reported.
    async fn sync(&mut self, pods: &BTreeMap<String, Pod>, services: &[(String, String, String)]) {
        self.api_service = services
            .iter()
            .find(|(ns, name, _)| ns == "default" && name == "kubernetes")
            .map(|(_, _, ip)| ip.clone());
        // Pods gone first (deleted without this kubelet, e.g. forced): a new pod of the
        // same name then finds its namespace name free.
        let seen: HashSet<String> = pods
            .values()
            .filter_map(|p| p.metadata.uid.clone())
            .collect();
        let gone: Vec<String> = self
            .state()
            .pods
            .keys()
            .filter(|uid| !seen.contains(*uid))
            .cloned()
            .collect();
        for uid in gone {
            self.teardown(&uid, Duration::ZERO).await;
            self.reported.remove(&uid);
            self.waiting.remove(&uid);
        }
        for pod in pods.values() {
            let Some(uid) = pod.metadata.uid.clone() else {
                continue;
            };
            if pod.metadata.deletion_timestamp.is_some() {
                self.terminate(pod, &uid).await;
                continue;
            }
            let known = self.state().pods.contains_key(&uid);
            let terminal = matches!(
                pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            );
            if !known && !terminal {
                self.start(pod, &uid, services).await;
            } else if known {
                self.check_containers(pod, &uid).await;
            } else {
                // Finished before this kubelet knew it (e.g. while it was down): its status
                // is someone else's to write.
                continue;
            }
            self.report(pod, &uid).await;
        }
        self.probe(pods).await;
        let records: Vec<PodRecord> = self.state().pods.values().cloned().collect();
        for p in records {
            if let Some(ns) = &p.netns
                && runtime::netns_exists(ns)
                && let Err(e) = runtime::write_hosts(ns, &p.name, &p.namespace, p.ip, services)
            {
                log(&format!("hosts of {}/{}: {e}", p.namespace, p.name));
            }
        }
    }

    /// The host directory of a pod's volume.
    fn volume_dir(&self, uid: &str, volume: &str) -> PathBuf {
        self.cfg.dir.join("volumes").join(uid).join(volume)
    }

    /// Makes the pod's volumes; their directories by volume name.
    async fn volumes(&self, pod: &Pod, uid: &str) -> Result<BTreeMap<String, PathBuf>, String> {
        container::check_volumes(pod)?;
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let config_maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), &namespace);
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &namespace);
        let mut dirs = BTreeMap::new();
        let none = BTreeMap::new();
        let ctx = container::Context {
            node: &self.cfg.node,
            host_ip: self.cfg.ip,
            pod_ip: None,
            bin_dir: &self.cfg.host_root,
            workload_program: &self.cfg.workload_program,
            volumes: &none,
            api_service: None,
            kube_dir: self.cfg.kube_dir.as_deref(),
        };
        for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            let dir = self.volume_dir(uid, &v.name);
            let mut files: Vec<(String, Vec<u8>)> = Vec::new();
            if let Some(hp) = &v.host_path {
                let dir = container::host_path(&self.cfg.host_root, &hp.path);
                match hp.type_.as_deref().unwrap_or_default() {
                    "File" | "FileOrCreate" | "Socket" | "CharDevice" | "BlockDevice" => {
                        if let Some(parent) = dir.parent() {
                            std::fs::create_dir_all(parent)
                                .map_err(|e| format!("hostPath {}: {e}", hp.path))?;
                        }
                    }
                    _ => std::fs::create_dir_all(&dir)
                        .map_err(|e| format!("hostPath {}: {e}", hp.path))?,
                }
                dirs.insert(v.name.clone(), dir);
                continue;
            } else if let Some(cm) = &v.config_map {
                let optional = cm.optional == Some(true);
                files = self
                    .config_map_files(&config_maps, &cm.name, cm.items.as_deref(), optional)
                    .await?;
            } else if let Some(sec) = &v.secret {
                let name = sec.secret_name.clone().unwrap_or_default();
                files = secret_files(&secrets, &name, sec.items.as_deref(), sec.optional).await?;
            } else if let Some(projected) = &v.projected {
                for source in projected.sources.iter().flatten() {
                    if let Some(sec) = &source.secret {
                        files.extend(
                            secret_files(&secrets, &sec.name, sec.items.as_deref(), sec.optional)
                                .await?,
                        );
                    }
                    if let Some(t) = &source.service_account_token {
                        let token = self.service_account_token(pod, t).await?;
                        files.push((t.path.clone(), token.into_bytes()));
                    }
                    if let Some(cm) = &source.config_map {
                        let optional = cm.optional == Some(true);
                        files.extend(
                            self.config_map_files(
                                &config_maps,
                                &cm.name,
                                cm.items.as_deref(),
                                optional,
                            )
                            .await?,
                        );
                    }
                    for item in source
                        .downward_api
                        .iter()
                        .flat_map(|d| d.items.iter().flatten())
                    {
                        let Some(f) = &item.field_ref else {
                            return Err(format!(
                                "volume {}: downwardAPI item {}: only fieldRef is supported by the lab's runtime",
                                v.name, item.path
                            ));
                        };
                        let value = container::field_ref(pod, &f.field_path, &ctx)?;
                        files.push((item.path.clone(), value.into_bytes()));
                    }
                }
            }
            // emptyDir: an empty directory.
            container::write_volume(&dir, &files)?;
            dirs.insert(v.name.clone(), dir);
        }
        Ok(dirs)
    }

    /// The files of a ConfigMap volume (or projected source): its data and binaryData, or
    /// the items named; nothing when it is absent and optional.
    async fn config_map_files(
        &self,
        api: &Api<ConfigMap>,
        name: &str,
        items: Option<&[k8s_openapi::api::core::v1::KeyToPath]>,
        optional: bool,
    ) -> Result<Vec<(String, Vec<u8>)>, String> {
        let Some(found) = api
            .get_opt(name)
            .await
            .map_err(|e| format!("configmap {name}: {e}"))?
        else {
            return if optional {
                Ok(Vec::new())
            } else {
                Err(format!("configmap \"{name}\" not found"))
            };
        };
        let mut data: BTreeMap<String, Vec<u8>> = found
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect();
        data.extend(
            found
                .binary_data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0)),
        );
        container::key_files(&data, items, &format!("configmap \"{name}\""))
    }

    /// A token of the pod's service account, bound to the pod (the apiserver extends a
    /// bound token's life to a year, as it does for kubelets).
    async fn service_account_token(
        &self,
        pod: &Pod,
        source: &k8s_openapi::api::core::v1::ServiceAccountTokenProjection,
    ) -> Result<String, String> {
        use k8s_openapi::api::authentication::v1::{
            BoundObjectReference, TokenRequest, TokenRequestSpec,
        };
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let account = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into());
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: source.audience.clone().map(|a| vec![a]),
                expiration_seconds: Some(source.expiration_seconds.unwrap_or(3607)),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: pod.metadata.name.clone(),
                    uid: pod.metadata.uid.clone(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(self.client.clone(), &namespace);
        let answer = accounts
            .create_token_request(&account, &Default::default(), &request)
            .await
            .map_err(|e| format!("a token of serviceaccount {namespace}/{account}: {e}"))?;
        answer.status.and_then(|s| s.token).ok_or_else(|| {
            format!("serviceaccount {namespace}/{account}: the token request has no token")
        })
    }

    /// Every container's environment and command line.
    fn containers(
        &self,
        pod: &Pod,
        pod_ip: Option<Ipv4Addr>,
        volumes: &BTreeMap<String, PathBuf>,
    ) -> Result<Vec<ContainerRecord>, (String, String)> {
        let bin_dir = self
            .cfg
            .workload_program
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let ctx = container::Context {
            node: &self.cfg.node,
            host_ip: self.cfg.ip,
            pod_ip,
            bin_dir: &bin_dir,
            workload_program: &self.cfg.workload_program,
            volumes,
            api_service: self.api_service.as_deref(),
            kube_dir: self.cfg.kube_dir.as_deref(),
        };
        let mut out = Vec::new();
        for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
            let image = c.image.clone().unwrap_or_default();
            if let Err(e) = workload::for_image(&image, &[]) {
                return Err(("ErrImagePull".into(), e));
            }
            let mut env = container::environment(pod, c, &ctx)
                .map_err(|e| ("CreateContainerConfigError".to_owned(), e))?;
            if let Some(dir) = container::service_account_dir(c, &ctx)
                && !env.iter().any(|(k, _)| k == "KUBECONFIG")
                && let Some(kubeconfig) = container::in_cluster_kubeconfig(&dir, &env)
            {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                let file = self.volume_dir(&uid, &format!("{}.kubeconfig", c.name));
                std::fs::write(&file, kubeconfig).map_err(|e| {
                    (
                        "CreateContainerConfigError".to_owned(),
                        format!("{}: {e}", file.display()),
                    )
                })?;
                env.push(("KUBECONFIG".into(), file.display().to_string()));
            }
            let argv = container::command_line(pod, c, &env, &ctx)
                .map_err(|e| ("CreateContainerConfigError".to_owned(), e))?;
            out.push(ContainerRecord {
                name: c.name.clone(),
                image,
                argv,
                env,
                pid: None,
                restart_count: 0,
                started_at: String::new(),
                last_exit: None,
                finished_at: None,
                // Not ready until its readiness probe first passes.
                ready: c.readiness_probe.as_ref().map(|_| false),
            });
        }
        Ok(out)
    }

    async fn start(&mut self, pod: &Pod, uid: &str, services: &[(String, String, String)]) {
        if let Some((_, _, until)) = self.waiting.get(uid)
            && Instant::now() < *until
        {
            return;
        }
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let Some(spec) = &pod.spec else { return };
        // Images and settings first: an unknown image or a bad setting is the pod's
        // error, nothing is made.
        let volumes = match self.volumes(pod, uid).await {
            Ok(v) => v,
            Err(e) => {
                self.waiting.insert(
                    uid.to_owned(),
                    (
                        "CreateContainerConfigError".into(),
                        e,
                        Instant::now() + Duration::from_secs(5),
                    ),
                );
                return;
            }
        };
        let containers = match self.containers(pod, None, &volumes) {
            Ok(c) => c,
            Err((reason, e)) => {
                let _ = std::fs::remove_dir_all(self.cfg.dir.join("volumes").join(uid));
                self.waiting.insert(
                    uid.to_owned(),
                    (reason, e, Instant::now() + Duration::from_secs(10)),
                );
                return;
            }
        };
        let host_network = spec.host_network == Some(true);
        // The network configuration as it is now: the pod keeps it for its DEL.
        let network = if host_network {
            None
        } else {
            match cni::load(&self.cfg.cni_conf_dir) {
                Ok(Some((_, list))) => Some(list),
                Ok(None) => {
                    let e = format!("network is not ready: {}", cni::NOT_READY);
                    self.waiting.insert(
                        uid.to_owned(),
                        (
                            "ContainerCreating".into(),
                            e,
                            Instant::now() + Duration::from_secs(1),
                        ),
                    );
                    return;
                }
                Err(e) => {
                    self.waiting.insert(
                        uid.to_owned(),
                        (
                            "ContainerCreating".into(),
                            e,
                            Instant::now() + Duration::from_secs(2),
                        ),
                    );
                    return;
                }
            }
        };
        // Named by the pod's uid: unique on every node, whatever the pod's name.
        let netns = (!host_network).then(|| format!("{}-pod-{uid}", self.cfg.netns_prefix));
        let mut record = PodRecord {
            namespace: namespace.clone(),
            name: name.clone(),
            uid: uid.to_owned(),
            netns: netns.clone(),
            ip: host_network.then_some(self.cfg.ip),
            start_time: node::now_rfc3339(),
            containers,
            network,
            network_result: None,
            hostname: if host_network {
                self.cfg.node.clone()
            } else {
                runtime::pod_hostname(&name, pod.spec.as_ref().and_then(|s| s.hostname.as_deref()))
            },
        };
        // Recorded before anything is made: a crash leaves nothing unknown.
        self.state().pods.insert(uid.to_owned(), record.clone());
        self.save();
        if let Some(ns) = &netns {
            match self.sandbox(&record, ns).await {
                Ok((ip, result)) => {
                    record.ip = Some(ip);
                    record.network_result = Some(result);
                    self.state().pods.insert(uid.to_owned(), record.clone());
                    self.save();
                    // Before the containers start: `ip netns exec` gives them this file.
                    if let Err(e) = runtime::write_hosts(ns, &name, &namespace, Some(ip), services)
                    {
                        log(&format!("hosts of {namespace}/{name}: {e}"));
                    }
                }
                Err(e) => {
                    log(&format!("pod {namespace}/{name}: {e}"));
                    // Undone, and tried again shortly (the agent may still be starting).
                    self.teardown(uid, Duration::ZERO).await;
                    self.waiting.insert(
                        uid.to_owned(),
                        (
                            "ContainerCreating".into(),
                            e,
                            Instant::now() + Duration::from_secs(2),
                        ),
                    );
                    return;
                }
            }
        }
        self.waiting.remove(uid);
        // Again with the pod's IP (`status.podIP` references).
        if let Ok(containers) = self.containers(pod, record.ip, &volumes) {
            record.containers = containers;
        }
        for i in 0..record.containers.len() {
            self.start_container(&mut record, i);
            // Each process recorded as soon as it runs.
            self.state().pods.insert(uid.to_owned(), record.clone());
            self.save();
        }
        log(&format!("pod {namespace}/{name} started"));
    }

    /// Runs the exec readiness probes that are due (`initialDelaySeconds`, then every
    /// `periodSeconds`, `timeoutSeconds` each) and records what they say; a container
    /// that is not running is not ready.
    async fn probe(&mut self, pods: &BTreeMap<String, Pod>) {
        let now = Instant::now();
        let records: Vec<PodRecord> = self.state().pods.values().cloned().collect();
        let mut changed = false;
        for record in records {
            let Some(pod) = pods
                .values()
                .find(|p| p.metadata.uid.as_deref() == Some(&record.uid))
            else {
                continue;
            };
            let specs = pod.spec.iter().flat_map(|s| s.containers.iter());
            for (i, spec) in specs.enumerate() {
                let (Some(probe), Some(c)) = (&spec.readiness_probe, record.containers.get(i))
                else {
                    continue;
                };
                let key = format!("{}/{}", record.uid, c.name);
                let secs = |v: Option<i32>, default: u64| {
                    v.and_then(|v| u64::try_from(v).ok()).unwrap_or(default)
                };
                if c.pid.is_none() {
                    self.probes.insert(
                        key,
                        now + Duration::from_secs(secs(probe.initial_delay_seconds, 0)),
                    );
                    if c.ready == Some(true) {
                        changed |= self.set_ready(&record.uid, i, false);
                    }
                    continue;
                }
                let due = *self
                    .probes
                    .entry(key.clone())
                    .or_insert(now + Duration::from_secs(secs(probe.initial_delay_seconds, 0)));
                if now < due {
                    continue;
                }
                let Some(command) = probe.exec.as_ref().and_then(|e| e.command.clone()) else {
                    // Only exec probes: any other kind says ready.
                    changed |= self.set_ready(&record.uid, i, true);
                    continue;
                };
                let timeout = Duration::from_secs(secs(probe.timeout_seconds, 1));
                let (hostname, netns, env) = (
                    record.hostname().to_owned(),
                    record.netns.clone(),
                    c.env.clone(),
                );
                let cgroup = self.shared.cgroup_of(netns.as_deref());
                let ok = tokio::task::spawn_blocking(move || {
                    let cgroup = cgroup.as_deref();
                    runtime::probe(&hostname, netns.as_deref(), cgroup, &command, &env, timeout)
                })
                .await
                .unwrap_or(false);
                self.probes.insert(
                    key,
                    Instant::now() + Duration::from_secs(secs(probe.period_seconds, 10)),
                );
                changed |= self.set_ready(&record.uid, i, ok);
            }
        }
        if changed {
            self.save();
            for pod in pods.values() {
                if let Some(uid) = pod.metadata.uid.clone() {
                    self.report(pod, &uid).await;
                }
            }
        }
    }

    /// Records a container's readiness; whether it changed.
    fn set_ready(&self, uid: &str, i: usize, ready: bool) -> bool {
        let mut state = self.state();
        let Some(c) = state
            .pods
            .get_mut(uid)
            .and_then(|p| p.containers.get_mut(i))
        else {
            return false;
        };
        let changed = c.ready != Some(ready);
        c.ready = Some(ready);
        changed
    }

    /// The pod's network namespace, wired by the network's plugins; its IPv4 address and
    /// the ADD's result.
    async fn sandbox(&self, record: &PodRecord, ns: &str) -> Result<(Ipv4Addr, Value), String> {
        runtime::create_netns(ns)?;
        let result = self.cni("ADD", record, ns).await?;
        let ip = cilium_cni::runtime::result_ipv4(&result)
            .ok_or_else(|| "the CNI result has no IPv4 address".to_owned())?;
        Ok((ip, result))
    }

    /// Runs the pod's network (its plugins in order for ADD, in reverse with the ADD's
    /// result for DEL, as libcni does); the last plugin's result. A pod recorded before
    /// networks were kept takes the node's configuration as it is now.
    async fn cni(
        &self,
        command: &'static str,
        record: &PodRecord,
        ns: &str,
    ) -> Result<Value, String> {
        let list = match &record.network {
            Some(l) => l.clone(),
            None => cni::load(&self.cfg.cni_conf_dir)?
                .map(|(_, l)| l)
                .ok_or_else(|| cni::NOT_READY.to_owned())?,
        };
        let mut plugins: Vec<Value> = list["plugins"].as_array().cloned().unwrap_or_default();
        let mut prev = None;
        if command == "DEL" {
            plugins.reverse();
            prev = record.network_result.clone();
        }
        let cni_path = self
            .cfg
            .cni_bin_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let mut errors = Vec::new();
        for plugin in plugins {
            let kind = plugin["type"].as_str().unwrap_or_default().to_owned();
            let binary = cni::find_plugin(&self.cfg.cni_bin_dirs, &kind)?;
            let netconf = cni::plugin_config(&list, &plugin, prev.as_ref()).to_string();
            let (namespace, name, id) = (
                record.namespace.clone(),
                record.name.clone(),
                record.container_id(),
            );
            let netns = format!("/run/netns/{ns}");
            let node_netns = self.cfg.node_netns.clone();
            let cni_path = cni_path.clone();
            let outcome = tokio::task::spawn_blocking(move || {
                let wrapper: Vec<&str> = match &node_netns {
                    Some(n) => vec!["ip", "netns", "exec", n],
                    None => Vec::new(),
                };
                cilium_cni::runtime::invoke_with_path(
                    &binary,
                    &wrapper,
                    &cilium_cni::runtime::Invocation {
                        command,
                        container_id: &id,
                        netns: &netns,
                        ifname: "eth0",
                        pod: (&namespace, &name),
                        netconf: &netconf,
                    },
                    &cni_path,
                )
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("running {kind}: {e}"))?;
            if !outcome.success {
                let e = format!(
                    "CNI {command} of {kind} failed: {} {}",
                    outcome.output,
                    outcome.stderr.trim()
                );
                // DEL goes on through the other plugins (each releases what it holds).
                if command == "DEL" {
                    errors.push(e);
                    continue;
                }
                return Err(e);
            }
            if command == "ADD" {
                prev = Some(outcome.output);
            }
        }
        if !errors.is_empty() {
            return Err(errors.join("; "));
        }
        Ok(prev.unwrap_or(Value::Null))
    }

    fn start_container(&mut self, record: &mut PodRecord, i: usize) {
        let hostname = record.hostname().to_owned();
        let c = &mut record.containers[i];
        let log_path = runtime::log_file(&self.cfg.dir, &record.uid, &c.name, c.restart_count);
        let cgroup = self.shared.cgroup_of(record.netns.as_deref());
        match runtime::start_process(
            &hostname,
            record.netns.as_deref(),
            cgroup.as_deref(),
            &c.argv,
            &c.env,
            &log_path,
        ) {
            Ok(child) => {
                c.pid = Some(child.id());
                c.started_at = node::now_rfc3339();
                self.children.insert(child.id(), child);
            }
            Err(e) => {
                log(&format!("pod {}/{}: {e}", record.namespace, record.name));
                c.pid = None;
                c.last_exit = Some(128);
                c.finished_at = Some(node::now_rfc3339());
                // The restart back-off applies to a start that failed too.
                self.finished
                    .insert(format!("{}/{}", record.uid, c.name), Instant::now());
            }
        }
    }

    /// Notices containers that ended and restarts them as the pod's restartPolicy says
    /// (after a back-off that doubles from 1 s to 30 s).
    async fn check_containers(&mut self, pod: &Pod, uid: &str) {
        let policy = pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into());
        let Some(mut record) = self.state().pods.get(uid).cloned() else {
            return;
        };
        if record.netns.is_some() && record.ip.is_none() {
            // A start cut short (this kubelet was killed during the CNI ADD): undone, and
            // made again in the next round.
            self.teardown(uid, Duration::ZERO).await;
            return;
        }
        let mut changed = false;
        for i in 0..record.containers.len() {
            let c = &mut record.containers[i];
            if let Some(pid) = c.pid {
                let exit = match self.children.get_mut(&pid) {
                    Some(child) => match child.try_wait() {
                        Ok(Some(status)) => Some(exit_code(status)),
                        _ => None,
                    },
                    None => (!runtime::alive(pid, &c.argv[0])).then_some(137),
                };
                if let Some(code) = exit {
                    self.children.remove(&pid);
                    c.pid = None;
                    c.last_exit = Some(code);
                    c.finished_at = Some(node::now_rfc3339());
                    self.finished
                        .insert(format!("{uid}/{}", c.name), Instant::now());
                    changed = true;
                    log(&format!(
                        "pod {}/{} container {} exited ({code})",
                        record.namespace, record.name, c.name
                    ));
                }
            }
            let c = &record.containers[i];
            if c.pid.is_none() {
                let restart = match policy.as_str() {
                    "Never" => false,
                    "OnFailure" => c.last_exit != Some(0),
                    _ => true,
                };
                let backoff = Duration::from_secs(1u64 << c.restart_count.min(5)).min(MAX_GRACE);
                let key = format!("{uid}/{}", c.name);
                let due = self
                    .finished
                    .get(&key)
                    .is_none_or(|t| t.elapsed() >= backoff);
                if restart && due {
                    record.containers[i].restart_count += 1;
                    self.start_container(&mut record, i);
                    changed = true;
                }
            }
        }
        if changed {
            self.state().pods.insert(uid.to_owned(), record);
            self.save();
        }
    }

    /// A deleted pod: its processes get its grace period, its sandbox goes, and the
    /// deletion is confirmed (deleted with grace 0, for this uid only).
    async fn terminate(&mut self, pod: &Pod, uid: &str) {
        let grace = pod
            .metadata
            .deletion_grace_period_seconds
            .map_or(MAX_GRACE, |s| {
                Duration::from_secs(u64::try_from(s).unwrap_or(0))
            })
            .min(MAX_GRACE);
        self.teardown(uid, grace).await;
        self.reported.remove(uid);
        self.waiting.remove(uid);
        let api: Api<Pod> = Api::namespaced(
            self.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_owned()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api
            .delete(pod.metadata.name.as_deref().unwrap_or_default(), &params)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => log(&format!("confirming the deletion of a pod: {e}")),
        }
    }

    /// Stops a pod's processes and removes its sandbox and record.
    async fn teardown(&mut self, uid: &str, grace: Duration) {
        let Some(record) = self.state().pods.get(uid).cloned() else {
            return;
        };
        let mut children: Vec<(u32, String, Option<Child>)> = record
            .containers
            .iter()
            .filter_map(|c| {
                c.pid
                    .map(|p| (p, c.argv[0].clone(), self.children.remove(&p)))
            })
            .collect();
        let _ = tokio::task::spawn_blocking(move || {
            for (pid, argv0, child) in &mut children {
                runtime::stop_process(*pid, argv0, grace, child.as_mut());
            }
        })
        .await;
        if let Some(ns) = &record.netns {
            if runtime::netns_exists(ns)
                && let Err(e) = self.cni("DEL", &record, ns).await
            {
                log(&format!("pod {}/{}: {e}", record.namespace, record.name));
            }
            runtime::delete_netns(ns);
        }
        self.state().pods.remove(uid);
        self.save();
        let _ = std::fs::remove_dir_all(self.cfg.dir.join("volumes").join(uid));
        let _ = std::fs::remove_dir_all(self.cfg.dir.join("logs").join(uid));
        log(&format!("pod {}/{} stopped", record.namespace, record.name));
    }

    /// Writes the pod's status when it differs from what was last written.
    async fn report(&mut self, pod: &Pod, uid: &str) {
        let record = self.state().pods.get(uid).cloned();
        let status = pod_status(pod, record.as_ref(), self.waiting.get(uid), self.cfg.ip);
        if self.reported.get(uid) == Some(&status) {
            return;
        }
        let api: Api<Pod> = Api::namespaced(
            self.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        match api
            .patch_status(
                pod.metadata.name.as_deref().unwrap_or_default(),
                &PatchParams::default(),
                // The uid makes it a precondition: never written into a successor of the
                // same name.
                &Patch::Merge(json!({"metadata": {"uid": uid}, "status": status})),
            )
            .await
        {
            Ok(_) => {
                self.reported.insert(uid.to_owned(), status);
            }
            Err(e) => log(&format!("reporting a pod's status: {e}")),
        }
    }
}

/// A process's exit code as Kubernetes reports it: its code, or 128 + the signal that
/// ended it.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(137)
}

/// (namespace, name, ClusterIP) of every Service with a ClusterIP.
fn service_names(services: &BTreeMap<String, Service>) -> Vec<(String, String, String)> {
    services
        .values()
        .filter_map(|s| {
            let ip = s.spec.as_ref()?.cluster_ip.clone()?;
            (ip != "None" && !ip.is_empty()).then(|| {
                (
                    s.metadata.namespace.clone().unwrap_or_default(),
                    s.metadata.name.clone().unwrap_or_default(),
                    ip,
                )
            })
        })
        .collect()
}

/// A pod's status as this kubelet sees it.
pub fn pod_status(
    pod: &Pod,
    record: Option<&PodRecord>,
    waiting: Option<&(String, String, Instant)>,
    host_ip: Ipv4Addr,
) -> Value {
    let now = node::now_rfc3339();
    let previous = |kind: &str| -> Option<String> {
        pod.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == kind)
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| t.0.to_string())
    };
    let condition = |kind: &str, ok: bool| {
        let status = if ok { "True" } else { "False" };
        let same = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == kind))
            .is_some_and(|c| c.status == status);
        let since = if same { previous(kind) } else { None }.unwrap_or_else(|| now.clone());
        json!({"type": kind, "status": status, "lastTransitionTime": since})
    };
    let spec_containers: Vec<(String, String)> = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
        .collect();
    let Some(record) = record.filter(|r| r.netns.is_none() || r.ip.is_some()) else {
        let (reason, message) = waiting
            .map(|(r, m, _)| (r.clone(), m.clone()))
            .unwrap_or_else(|| ("ContainerCreating".into(), String::new()));
        let statuses: Vec<Value> = spec_containers
            .iter()
            .map(|(name, image)| {
                json!({"name": name, "image": image, "imageID": "", "ready": false,
                "started": false, "restartCount": 0,
                "state": {"waiting": {"reason": reason, "message": message}}})
            })
            .collect();
        return json!({
            "phase": "Pending", "hostIP": host_ip.to_string(), "hostIPs": [{"ip": host_ip.to_string()}],
            "conditions": [condition("PodScheduled", true), condition("Initialized", true),
                           condition("ContainersReady", false), condition("Ready", false)],
            "containerStatuses": statuses,
        });
    };
    let policy = pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always");
    let mut all_running = true;
    let mut all_ready = true;
    let mut all_done_ok = true;
    let mut any_failed_final = false;
    let statuses: Vec<Value> = record
        .containers
        .iter()
        .map(|c| {
            let running = c.pid.is_some();
            all_running &= running;
            let ready = running && c.ready.unwrap_or(true);
            all_ready &= ready;
            let terminated = |code: i32, started: &str, finished: &Option<String>| {
                let mut t = json!({"exitCode": code,
                    "reason": match code { 0 => "Completed", 137 => "ContainerStatusUnknown", _ => "Error" },
                    "containerID": format!("cilium-lab://{}/{}", record.uid, c.name)});
                // Times that are not known are left out (an empty one is refused).
                if !started.is_empty() {
                    t["startedAt"] = json!(started);
                }
                if let Some(f) = finished.as_deref().filter(|f| !f.is_empty()) {
                    t["finishedAt"] = json!(f);
                }
                json!({"terminated": t})
            };
            let state = if running {
                json!({"running": {"startedAt": c.started_at}})
            } else {
                let code = c.last_exit.unwrap_or(137);
                let restarting = match policy {
                    "Never" => false,
                    "OnFailure" => code != 0,
                    _ => true,
                };
                all_done_ok &= code == 0 && !restarting;
                any_failed_final |= code != 0 && !restarting;
                if restarting {
                    json!({"waiting": {"reason": "CrashLoopBackOff",
                        "message": format!("back-off restarting failed container {}", c.name)}})
                } else {
                    terminated(code, &c.started_at, &c.finished_at)
                }
            };
            if running {
                all_done_ok = false;
            }
            let mut s = json!({"name": c.name, "image": c.image, "imageID": c.image,
                "containerID": format!("cilium-lab://{}/{}", record.uid, c.name),
                "ready": ready, "started": running, "restartCount": c.restart_count,
                "state": state});
            if let Some(code) = c.last_exit
                && c.restart_count > 0
            {
                s["lastState"] = terminated(code, "", &c.finished_at);
            }
            s
        })
        .collect();
    let phase = if all_running {
        "Running"
    } else if all_done_ok {
        "Succeeded"
    } else if any_failed_final && record.containers.iter().all(|c| c.pid.is_none()) {
        "Failed"
    } else {
        "Running"
    };
    let ip = record.ip.map(|ip| ip.to_string()).unwrap_or_default();
    json!({
        "phase": phase,
        "hostIP": host_ip.to_string(), "hostIPs": [{"ip": host_ip.to_string()}],
        "podIP": ip, "podIPs": [{"ip": ip}],
        "startTime": record.start_time,
        "conditions": [condition("PodReadyToStartContainers", true), condition("PodScheduled", true),
                       condition("Initialized", true), condition("ContainersReady", all_ready),
                       condition("Ready", all_ready)],
        "containerStatuses": statuses,
    })
}

/// The files of Secret `name` (its `items`, or every key): none when it is absent and
/// `optional`, else an error naming it.
async fn secret_files(
    secrets: &Api<Secret>,
    name: &str,
    items: Option<&[k8s_openapi::api::core::v1::KeyToPath]>,
    optional: Option<bool>,
) -> Result<Vec<(String, Vec<u8>)>, String> {
    match secrets
        .get_opt(name)
        .await
        .map_err(|e| format!("secret {name}: {e}"))?
    {
        Some(found) => {
            let data: BTreeMap<String, Vec<u8>> = found
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .chain(
                    found
                        .string_data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.into_bytes())),
                )
                .collect();
            container::key_files(&data, items, &format!("secret \"{name}\""))
        }
        None if optional == Some(true) => Ok(Vec::new()),
        None => Err(format!("secret \"{name}\" not found")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(restart: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "u"},
            "spec": {"restartPolicy": restart, "containers": [{"name": "c", "image": "nicolaka/netshoot"}]},
        }))
        .expect("pod")
    }

    fn record(pid: Option<u32>, exit: Option<i32>, restarts: u32) -> PodRecord {
        PodRecord {
            namespace: "default".into(),
            name: "p".into(),
            uid: "u".into(),
            netns: Some("crsl-default-p".into()),
            ip: Some(Ipv4Addr::new(172, 20, 1, 5)),
            start_time: "2026-12-05T00:00:00Z".into(),
            network: None,
            network_result: None,
            hostname: String::new(),
            containers: vec![ContainerRecord {
                name: "c".into(),
                image: "nicolaka/netshoot".into(),
                argv: vec!["sleep".into()],
                env: vec![],
                pid,
                restart_count: restarts,
                started_at: "2026-12-05T00:00:01Z".into(),
                last_exit: exit,
                finished_at: exit.map(|_| "2026-12-05T00:00:02Z".into()),
                ready: None,
            }],
        }
    }

    const HOST: Ipv4Addr = Ipv4Addr::new(192, 168, 10, 101);

    #[test]
    fn an_exec_finds_the_images_programs_beside_its_entrypoint() {
        let mut c = record(Some(1), None, 0).containers.remove(0);
        c.image = "registry.k8s.io/e2e-test-images/agnhost:2.56".into();
        c.argv = vec!["/lab/kube/agnhost".into(), "porter".into()];
        assert_eq!(image_program(&c, "/agnhost"), "/lab/kube/agnhost");
        assert_eq!(image_program(&c, "agnhost"), "/lab/kube/agnhost");
        assert_eq!(image_program(&c, "/bin/sh"), "/bin/sh");
        c.image = "quay.io/cilium/cilium:v1.18.0".into();
        c.argv = vec!["/lab/bin/cilium-agent".into()];
        assert_eq!(image_program(&c, "cilium-dbg"), "/lab/bin/cilium-dbg");
        c.image = "nicolaka/netshoot".into();
        assert_eq!(image_program(&c, "curl"), "curl");
    }

    #[test]
    fn a_running_pod_is_ready_with_its_ip() {
        let s = pod_status(&pod("Always"), Some(&record(Some(42), None, 0)), None, HOST);
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["podIP"], "172.20.1.5");
        assert_eq!(s["hostIP"], "192.168.10.101");
        assert_eq!(s["containerStatuses"][0]["ready"], true);
        let ready = s["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .find(|c| c["type"] == "Ready");
        assert_eq!(ready.expect("Ready")["status"], "True");
        // Decodes as Kubernetes' PodStatus.
        serde_json::from_value::<k8s_openapi::api::core::v1::PodStatus>(s).expect("PodStatus");
    }

    #[test]
    fn a_running_container_its_probe_says_is_not_ready_keeps_the_pod_unready() {
        let mut r = record(Some(42), None, 0);
        r.containers[0].ready = Some(false);
        let s = pod_status(&pod("Always"), Some(&r), None, HOST);
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["containerStatuses"][0]["ready"], false);
        assert_eq!(s["containerStatuses"][0]["started"], true);
        assert_eq!(s["conditions"][4]["type"], "Ready");
        assert_eq!(s["conditions"][4]["status"], "False");
        r.containers[0].ready = Some(true);
        let s = pod_status(&pod("Always"), Some(&r), None, HOST);
        assert_eq!(s["conditions"][4]["status"], "True");
    }

    #[test]
    fn phases_follow_the_restart_policy() {
        let failed = record(None, Some(3), 0);
        assert_eq!(
            pod_status(&pod("Never"), Some(&failed), None, HOST)["phase"],
            "Failed"
        );
        assert_eq!(
            pod_status(&pod("OnFailure"), Some(&failed), None, HOST)["phase"],
            "Running"
        );
        let s = pod_status(&pod("Always"), Some(&failed), None, HOST);
        assert_eq!(
            s["containerStatuses"][0]["state"]["waiting"]["reason"],
            "CrashLoopBackOff"
        );
        let done = record(None, Some(0), 0);
        assert_eq!(
            pod_status(&pod("Never"), Some(&done), None, HOST)["phase"],
            "Succeeded"
        );
        assert_eq!(
            pod_status(&pod("OnFailure"), Some(&done), None, HOST)["phase"],
            "Succeeded"
        );
        let restarted = record(Some(7), Some(1), 2);
        let s = pod_status(&pod("Always"), Some(&restarted), None, HOST);
        assert_eq!(s["containerStatuses"][0]["restartCount"], 2);
        assert_eq!(
            s["containerStatuses"][0]["lastState"]["terminated"]["exitCode"],
            1
        );
        // Decodes as Kubernetes' PodStatus (times that are not known are left out).
        serde_json::from_value::<k8s_openapi::api::core::v1::PodStatus>(s).expect("PodStatus");
    }

    #[test]
    fn an_unknown_image_is_the_pods_error() {
        let waiting = (
            "ErrImagePull".to_owned(),
            "image \"nginx\" is not one this lab can run".to_owned(),
            Instant::now(),
        );
        let s = pod_status(&pod("Always"), None, Some(&waiting), HOST);
        assert_eq!(s["phase"], "Pending");
        assert_eq!(
            s["containerStatuses"][0]["state"]["waiting"]["reason"],
            "ErrImagePull"
        );
        assert!(
            s["containerStatuses"][0]["state"]["waiting"]["message"]
                .as_str()
                .expect("message")
                .contains("nginx")
        );
    }
}
