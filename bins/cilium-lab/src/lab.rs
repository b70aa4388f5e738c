// SPDX-License-Identifier: Apache-2.0

//! A lab: the nodes (network namespaces on an underlay bridge, 192.168.10.0/24), etcd and
//! the operator on the control-plane node, one agent per node, and pods created through
//! cilium-cni as a runtime does. Everything it makes is written to `<lab dir>/lab.json`
//! before it is made, so `down` removes it all, also after a crash. Nothing is done in the
//! root network namespace; no namespace gets a route out of the lab.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cilium_core::cluster::{PODS_PREFIX, POLICIES_PREFIX, SERVICES_PREFIX};
use cilium_core::kvstore::etcd::{EtcdServer, EtcdStore};
use cilium_core::kvstore::{AnyStore, KvStore};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::manifest::{self, Object, Placed, PodSpec};
use crate::workload::Workload;

/// etcd's client address (on the control-plane node).
pub const ETCD_ADDR: &str = "192.168.10.100:2379";
/// The pod CIDR pool (the seed's).
pub const POD_POOL: &str = "172.20.0.0/16";

/// A node of the lab.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabNode {
    /// Node name (`k8s-ctr`, `k8s-w1`, ...).
    pub name: String,
    /// Its network namespace.
    pub netns: String,
    /// Its IP on the underlay.
    pub ip: Ipv4Addr,
    /// Its private BPF file system.
    pub bpffs: PathBuf,
    /// The agent's state dir (socket, store, logs).
    pub state_dir: PathBuf,
    /// The agent's pid.
    pub agent_pid: Option<u32>,
}

impl LabNode {
    /// The agent's API socket.
    pub fn socket(&self) -> PathBuf {
        self.state_dir.join("cilium.sock")
    }

    /// The node's Hubble socket.
    pub fn hubble_socket(&self) -> PathBuf {
        self.state_dir.join("hubble.sock")
    }

    /// A client of the agent's API.
    pub fn client(&self) -> cilium_agent::client::Client {
        cilium_agent::client::Client::new(&self.socket().to_string_lossy())
    }
}

/// A pod of the lab.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabPod {
    /// Kubernetes namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Node.
    pub node: String,
    /// Its network namespace.
    pub netns: String,
    /// Its IP (once created).
    pub ip: Option<Ipv4Addr>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// The workload's pid.
    pub pid: Option<u32>,
    /// Creation time (Unix seconds).
    pub created: u64,
}

/// Everything a lab made, as saved in `lab.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LabState {
    /// Name prefix of namespaces.
    pub prefix: String,
    /// Creation time (Unix seconds).
    pub created: u64,
    /// The nodes, control plane first.
    pub nodes: Vec<LabNode>,
    /// Network namespaces made, in order.
    pub namespaces: Vec<String>,
    /// bpffs mounts made.
    pub mounts: Vec<PathBuf>,
    /// `/etc/netns/<ns>` directories made (pods' hosts files).
    pub etc_netns: Vec<PathBuf>,
    /// Whether the lab made `/etc/netns` itself (removed at `down` if empty).
    #[serde(default)]
    pub made_etc_netns: bool,
    /// etcd's pid.
    pub etcd_pid: Option<u32>,
    /// The operator's pid.
    pub operator_pid: Option<u32>,
    /// hubble-relay's pid.
    #[serde(default)]
    pub relay_pid: Option<u32>,
    /// The pods.
    pub pods: Vec<LabPod>,
    /// Next ClusterIP to hand out (host part of 10.96.0.0/16).
    pub next_service_ip: u32,
    /// The agents' extra settings (`up --config`).
    #[serde(default)]
    pub agent_config: BTreeMap<String, String>,
    /// Pods reach other nodes' pods through VXLAN (`routing-mode=tunnel`) instead of
    /// routes (`native` with auto-direct-node-routes).
    #[serde(default)]
    pub tunnel: bool,
}

impl LabState {
    /// The index of node `name`, or an error listing the nodes there are.
    pub fn node_index(&self, name: &str) -> Result<usize, String> {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
                format!("no node {name:?} (nodes: {})", names.join(", "))
            })
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Where a lab lives and how its namespaces are named.
#[derive(Debug, Clone)]
pub struct Lab {
    /// The lab directory (`$CILIUM_LAB_DIR`, default `/tmp/cilium-lab`).
    pub dir: PathBuf,
    /// The prefix of everything it names (`$CILIUM_LAB_PREFIX`, default `crsl`).
    pub prefix: String,
    /// Where the other binaries are (next to this one).
    pub bin_dir: PathBuf,
}

/// Options of `up`.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Number of nodes (control plane included).
    pub nodes: usize,
    /// Extra agent settings (`key: value`), as a cilium-config ConfigMap holds them.
    pub agent_config: BTreeMap<String, String>,
    /// `routing-mode=tunnel` (VXLAN) instead of native routing.
    pub tunnel: bool,
}

impl Lab {
    /// The lab of this environment.
    pub fn from_env() -> Result<Lab, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        Ok(Lab {
            dir: std::env::var_os("CILIUM_LAB_DIR")
                .map_or_else(|| PathBuf::from("/tmp/cilium-lab"), PathBuf::from),
            prefix: std::env::var("CILIUM_LAB_PREFIX").unwrap_or_else(|_| "crsl".into()),
            bin_dir: exe.parent().map(Path::to_path_buf).unwrap_or_default(),
        })
    }

    fn state_file(&self) -> PathBuf {
        self.dir.join("lab.json")
    }

    /// The saved state, if a lab is up.
    pub fn load(&self) -> Result<Option<LabState>, String> {
        match std::fs::read(self.state_file()) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| format!("{}: {e}", self.state_file().display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", self.state_file().display())),
        }
    }

    /// The state of a lab that is up, or a clear error.
    pub fn require(&self) -> Result<LabState, String> {
        self.load()?
            .ok_or_else(|| format!("no lab is up in {} (cilium-lab up)", self.dir.display()))
    }

    /// Saves the state (atomically: temp file, rename).
    pub fn save(&self, state: &LabState) -> Result<(), String> {
        let tmp = self.dir.join(".lab.json.tmp");
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| e.to_string())?;
        std::fs::write(&tmp, bytes).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, self.state_file()).map_err(|e| e.to_string())
    }

    /// A binary of this build.
    pub fn binary(&self, name: &str) -> Result<PathBuf, String> {
        let p = self.bin_dir.join(name);
        if p.exists() {
            Ok(p)
        } else {
            Err(format!(
                "{} is missing: build the workspace (cargo build --workspace)",
                p.display()
            ))
        }
    }

    fn add_netns(&self, state: &mut LabState, name: &str) -> Result<(), String> {
        state.namespaces.push(name.to_owned());
        self.save(state)?;
        run(&["ip", "netns", "add", name])?;
        run(&["ip", "-n", name, "link", "set", "lo", "up"]).map(|_| ())
    }

    /// Starts a daemon in a namespace, in its own session (it outlives this command), its
    /// output in `log`.
    fn daemon(
        &self,
        netns: &str,
        program: &Path,
        args: &[String],
        log: &Path,
    ) -> Result<u32, String> {
        let log = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let child = Command::new("setsid")
            .args(["ip", "netns", "exec", netns])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", program.display()))?;
        Ok(child.id())
    }

    /// `cilium-lab up`: the nodes, etcd, the operator and the agents; returns when every
    /// agent answers.
    pub fn up(&self, opts: &UpOptions) -> Result<LabState, String> {
        if self.load()?.is_some() {
            return Err(format!(
                "a lab is already up in {} (cilium-lab down first)",
                self.dir.display()
            ));
        }
        if opts.nodes == 0 || opts.nodes > 20 {
            return Err("--nodes must be between 1 and 20".into());
        }
        self.binary("cilium-agent")?;
        let operator = self.binary("cilium-operator")?;
        let relay = self.binary("hubble-relay")?;
        self.binary("cilium-cni")?;
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        let mut state = LabState {
            prefix: self.prefix.clone(),
            created: now(),
            next_service_ip: 10,
            agent_config: opts.agent_config.clone(),
            tunnel: opts.tunnel,
            ..LabState::default()
        };
        self.save(&state)?;
        let lan = format!("{}-lan", self.prefix);
        self.add_netns(&mut state, &lan)?;
        run(&["ip", "-n", &lan, "link", "add", "br0", "type", "bridge"])?;
        run(&["ip", "-n", &lan, "link", "set", "br0", "up"])?;
        for i in 0..opts.nodes {
            let name = if i == 0 {
                "k8s-ctr".to_owned()
            } else {
                format!("k8s-w{i}")
            };
            let netns = format!("{}-{name}", self.prefix);
            let ip = Ipv4Addr::new(192, 168, 10, 100 + i as u8);
            self.add_netns(&mut state, &netns)?;
            run(&[
                "ip", "-n", &netns, "link", "add", "eth0", "type", "veth", "peer", "name", &name,
                "netns", &lan,
            ])?;
            run(&[
                "ip",
                "-n",
                &netns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                "eth0",
            ])?;
            run(&["ip", "-n", &netns, "link", "set", "eth0", "up"])?;
            run(&[
                "ip", "-n", &lan, "link", "set", &name, "master", "br0", "up",
            ])?;
            let base = self.dir.join(&name);
            let bpffs = base.join("bpffs");
            let state_dir = base.join("state");
            std::fs::create_dir_all(&bpffs).map_err(|e| e.to_string())?;
            std::fs::create_dir_all(&state_dir).map_err(|e| e.to_string())?;
            state.mounts.push(bpffs.clone());
            self.save(&state)?;
            run(&["mount", "-t", "bpf", "bpf", &bpffs.to_string_lossy()])?;
            state.nodes.push(LabNode {
                name,
                netns,
                ip,
                bpffs,
                state_dir,
                agent_pid: None,
            });
            self.save(&state)?;
        }
        let ctr = state.nodes[0].netns.clone();
        self.start_etcd(&mut state)?;
        state.operator_pid = Some(self.daemon(
            &ctr,
            &operator,
            &[
                format!("--kvstore-opt=etcd.address={ETCD_ADDR}"),
                format!("--cluster-pool-ipv4-cidr={POD_POOL}"),
                "--cluster-pool-ipv4-mask-size=24".into(),
                "--leader-election-lease-duration=10s".into(),
            ],
            &self.dir.join("operator.log"),
        )?);
        self.save(&state)?;
        // hubble-relay runs on the control plane, as its pod would: the Observer API on
        // :4245 and on a socket in the lab dir (what `cilium-lab hubble` uses), the UI on
        // another socket (what `cilium-lab hubble-ui` forwards to).
        state.relay_pid = Some(self.daemon(
            &ctr,
            &relay,
            &[
                format!("--kvstore-opt=etcd.address={ETCD_ADDR}"),
                format!("--listen-address=unix://{}", self.relay_socket().display()),
                "--listen-address=:4245".into(),
                format!("--ui-listen-address=unix://{}", self.ui_socket().display()),
                "--dial-timeout=2s".into(),
            ],
            &self.dir.join("hubble-relay.log"),
        )?);
        self.save(&state)?;
        for i in 0..state.nodes.len() {
            self.start_agent(&mut state, i)?;
        }
        for n in &state.nodes {
            self.wait_agent(n)?;
        }
        Ok(state)
    }

    /// Starts etcd on the control-plane node (its data kept in the lab dir).
    pub fn start_etcd(&self, state: &mut LabState) -> Result<(), String> {
        let ctr = state
            .nodes
            .first()
            .ok_or("the lab has no nodes")?
            .netns
            .clone();
        let wrapper = ["setsid", "ip", "netns", "exec", &ctr].map(String::from);
        let etcd = EtcdServer::start(
            &self.dir.join("etcd"),
            ETCD_ADDR.parse().map_err(|e| format!("{e}"))?,
            "192.168.10.100:2380".parse().map_err(|e| format!("{e}"))?,
            &wrapper,
        )?;
        state.etcd_pid = etcd.detach();
        self.save(state)
    }

    /// Kills a process the lab started (SIGKILL, by pid, if it is still `program`) and waits
    /// for it to go; returns whether it did.
    fn kill(pid: u32, program: &str) -> bool {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmdline).contains(program) {
            return false;
        }
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// Stops etcd (SIGKILL): the cluster store is away until [`Lab::start_etcd`].
    pub fn stop_etcd(&self, state: &mut LabState) -> Result<(), String> {
        if let Some(pid) = state.etcd_pid.take() {
            Self::kill(pid, "etcd");
        }
        self.save(state)
    }

    /// Kills a node's agent (SIGKILL), as a crash would.
    pub fn kill_agent(&self, state: &mut LabState, node: &str) -> Result<(), String> {
        let i = state.node_index(node)?;
        if let Some(pid) = state.nodes[i].agent_pid.take() {
            Self::kill(pid, "cilium-agent");
        }
        self.save(state)
    }

    /// Waits (up to 90 s) until a node's agent answers.
    pub fn wait_agent(&self, n: &LabNode) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(90);
        while n.client().call("GET", "/healthz", None).is_err() {
            if Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(n.state_dir.join("agent.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                return Err(format!(
                    "the agent of {} did not come up; its log ends with:\n{}",
                    n.name,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    /// Starts node `i`'s agent with the lab's settings (its log appended to).
    pub fn start_agent(&self, state: &mut LabState, i: usize) -> Result<(), String> {
        let agent = self.binary("cilium-agent")?;
        let n = state.nodes.get(i).cloned().ok_or("no such node")?;
        let mut args = vec![
            format!("--bpf-root={}", n.bpffs.display()),
            format!("--state-dir={}", n.state_dir.display()),
            format!("--socket-path={}", n.socket().display()),
            "--kvstore=etcd".into(),
            format!("--kvstore-opt=etcd.address={ETCD_ADDR}"),
            "--kvstore-lease-ttl=30s".into(),
            format!("--k8s-node-name={}", n.name),
            format!("--ipv4-node={}", n.ip),
            if state.tunnel {
                "--routing-mode=tunnel".into()
            } else {
                "--routing-mode=native".into()
            },
            format!("--auto-direct-node-routes={}", !state.tunnel),
            format!("--ipv4-native-routing-cidr={POD_POOL}"),
            "--enable-endpoint-routes=true".into(),
            "--kube-proxy-replacement=true".into(),
            "--enable-bpf-masquerade=true".into(),
            "--enable-hubble=true".into(),
            format!("--hubble-socket-path={}", n.hubble_socket().display()),
        ];
        for (k, v) in &state.agent_config {
            args.push(format!("--{k}={v}"));
        }
        let log = n.state_dir.join("agent.log");
        let previous = std::fs::read(&log).unwrap_or_default();
        let pid = self.daemon(&n.netns, &agent, &args, &log)?;
        if !previous.is_empty() {
            // Keep the earlier runs' log in front (the daemon's file was created anew).
            let _ = std::fs::write(n.state_dir.join("agent.previous.log"), previous);
        }
        state.nodes[i].agent_pid = Some(pid);
        self.save(state)
    }

    /// Removes a node: its agent stops, its pods are gone (deleted from the cluster, as
    /// Kubernetes deletes the pods of a deleted node), its CiliumNode is deleted (the
    /// operator frees its CIDR; the other agents drop their routes to it and the services
    /// their backends on it), its namespaces go.
    pub fn remove_node(&self, state: &mut LabState, node: &str) -> Result<(), String> {
        let i = state.node_index(node)?;
        if i == 0 {
            return Err("k8s-ctr holds etcd and the operator: it cannot be removed".into());
        }
        self.kill_agent(state, node)?;
        let pods: Vec<LabPod> = state
            .pods
            .iter()
            .filter(|p| p.node == node)
            .cloned()
            .collect();
        for pod in &pods {
            Self::forget_pod(state, pod);
        }
        self.save(state)?;
        let keys: Vec<String> = pods
            .iter()
            .map(|p| format!("{PODS_PREFIX}/{}/{}", p.namespace, p.name))
            .chain([format!(
                "{}/{node}",
                cilium_core::cluster::CILIUM_NODES_PREFIX
            )])
            .collect();
        Self::with_store(state, move |store| {
            Box::pin(async move {
                for k in keys {
                    store.delete(&k).await.map_err(|e| e.to_string())?;
                }
                Ok(())
            })
        })?;
        let n = state.nodes.remove(i);
        let _ = Command::new("umount")
            .arg(&n.bpffs)
            .stderr(Stdio::null())
            .status();
        state.mounts.retain(|m| m != &n.bpffs);
        let _ = run(&["ip", "netns", "del", &n.netns]);
        state.namespaces.retain(|x| x != &n.netns);
        self.save(state)
    }

    /// Runs `f` on a store client inside the control-plane node's namespace (etcd is only
    /// reachable inside the lab).
    pub fn with_store<T: Send + 'static>(
        state: &LabState,
        f: impl FnOnce(
            Arc<AnyStore>,
        ) -> std::pin::Pin<Box<dyn Future<Output = Result<T, String>> + Send>>
        + Send
        + 'static,
    ) -> Result<T, String> {
        let ns = state
            .nodes
            .first()
            .ok_or("the lab has no nodes")?
            .netns
            .clone();
        cilium_bpf::testing::spawn_in_netns(&ns, move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async move {
                let store =
                    EtcdStore::connect(&[format!("http://{ETCD_ADDR}")], Duration::from_secs(30))
                        .await
                        .map_err(|e| format!("etcd: {e}"))?;
                let store = Arc::new(AnyStore::Etcd(Box::new(store)));
                f(store).await
            })
        })
        .join()
        .map_err(|_| "the store thread panicked".to_owned())?
    }

    fn put_json(state: &LabState, key: String, value: Value) -> Result<(), String> {
        Self::with_store(state, move |store| {
            Box::pin(async move {
                let bytes = serde_json::to_vec(&value).map_err(|e| e.to_string())?;
                store.put(&key, &bytes).await.map_err(|e| e.to_string())
            })
        })
    }

    /// Every object under a prefix (JSON values).
    pub fn list(state: &LabState, prefix: &'static str) -> Result<Vec<(String, Value)>, String> {
        Self::with_store(state, move |store| {
            Box::pin(async move {
                Ok(store
                    .list_prefix(&format!("{prefix}/"))
                    .await
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .filter_map(|(k, v)| Some((k, serde_json::from_slice(&v).ok()?)))
                    .collect())
            })
        })
    }

    /// `cilium-lab apply -f FILE`: every object of the manifest (all checked first).
    pub fn apply(
        &self,
        text: &str,
        namespace: &str,
        out: &mut dyn std::io::Write,
    ) -> Result<(), String> {
        let mut state = self.require()?;
        let objects = manifest::parse(text, namespace)?;
        let node_names: Vec<String> = state.nodes.iter().map(|n| n.name.clone()).collect();
        for object in objects {
            match object {
                Object::Service(mut svc) => {
                    let ns = svc["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or("default")
                        .to_owned();
                    let name = svc["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    if svc["spec"]["clusterIP"].as_str().is_none() {
                        let ip = Ipv4Addr::from(
                            u32::from(Ipv4Addr::new(10, 96, 0, 0)) + state.next_service_ip,
                        );
                        state.next_service_ip += 1;
                        svc["spec"]["clusterIP"] = Value::from(ip.to_string());
                        self.save(&state)?;
                    }
                    if svc["spec"]["type"].is_null() {
                        svc["spec"]["type"] = Value::from("ClusterIP");
                    }
                    Self::put_json(&state, format!("{SERVICES_PREFIX}/{ns}/{name}"), svc)?;
                    let _ = writeln!(out, "service/{name} created");
                }
                Object::Policy(doc) => {
                    let docs = cilium_policy::parse(&doc.to_string()).map_err(|e| e.to_string())?;
                    for (d, _) in docs {
                        let origin = d.origin();
                        Self::put_json(&state, format!("{POLICIES_PREFIX}/{origin}"), d.to_json())?;
                        let _ = writeln!(out, "{} created", origin.to_lowercase());
                    }
                }
                Object::Pod(pod) => {
                    let placed: Vec<Placed> = state
                        .pods
                        .iter()
                        .map(|p| Placed {
                            namespace: p.namespace.clone(),
                            labels: p.labels.clone(),
                            node: p.node.clone(),
                        })
                        .collect();
                    let node = manifest::schedule(&pod, &node_names, &placed)?;
                    self.create_pod(&mut state, &pod, &node)?;
                    let _ = writeln!(out, "pod/{} created on {node}", pod.name);
                }
            }
        }
        self.write_hosts(&mut state)
    }

    fn create_pod(
        &self,
        state: &mut LabState,
        pod: &PodSpec,
        node_name: &str,
    ) -> Result<(), String> {
        if state
            .pods
            .iter()
            .any(|p| p.namespace == pod.namespace && p.name == pod.name)
        {
            return Err(format!("pod {}/{} already exists", pod.namespace, pod.name));
        }
        let node = state
            .nodes
            .iter()
            .find(|n| n.name == node_name)
            .cloned()
            .ok_or_else(|| format!("no node {node_name}"))?;
        let netns = format!("{}-p-{}-{}", self.prefix, pod.namespace, pod.name);
        let mut object = pod.object.clone();
        object["spec"]["nodeName"] = Value::from(node_name);
        let key = format!("{PODS_PREFIX}/{}/{}", pod.namespace, pod.name);
        Self::put_json(state, key.clone(), object.clone())?;
        self.add_netns(state, &netns)?;
        state.pods.push(LabPod {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            node: node_name.to_owned(),
            netns: netns.clone(),
            ip: None,
            labels: pod.labels.clone(),
            pid: None,
            created: now(),
        });
        self.save(state)?;
        let outcome = self.cni("ADD", &node, &pod.namespace, &pod.name, &netns)?;
        let ip = cilium_cni::runtime::result_ipv4(&outcome.output)
            .ok_or_else(|| format!("pod {}: the CNI result has no IPv4", pod.name))?;
        let pid = match &pod.workload {
            Workload::Whoami { port } => Some(
                self.daemon(
                    &netns,
                    &std::env::current_exe().map_err(|e| e.to_string())?,
                    &[
                        "workload".into(),
                        "whoami".into(),
                        format!("--name={}", pod.name),
                        format!("--port={port}"),
                    ],
                    &self
                        .dir
                        .join(format!("pod-{}-{}.log", pod.namespace, pod.name)),
                )?,
            ),
            Workload::Sleep => None,
        };
        if let Some(p) = state.pods.iter_mut().find(|p| p.netns == netns) {
            p.ip = Some(ip);
            p.pid = pid;
        }
        self.save(state)?;
        object["status"] = serde_json::json!({"phase": "Running", "podIP": ip.to_string(), "hostIP": node.ip.to_string()});
        Self::put_json(state, key, object)
    }

    /// Runs cilium-cni for a pod as the node's runtime does (`ADD` or `DEL`); an ADD's
    /// result, or a clear error.
    fn cni(
        &self,
        command: &str,
        node: &LabNode,
        namespace: &str,
        name: &str,
        netns: &str,
    ) -> Result<cilium_cni::runtime::Outcome, String> {
        let netconf = serde_json::json!({
            "cniVersion": "0.3.1", "name": "cilium", "type": "cilium-cni", "agent-socket": node.socket(),
        })
        .to_string();
        let netns_path = format!("/run/netns/{netns}");
        let container = format!("{}-{namespace}-{name}", self.prefix);
        let outcome = cilium_cni::runtime::invoke(
            &self.binary("cilium-cni")?,
            &["ip", "netns", "exec", &node.netns],
            &cilium_cni::runtime::Invocation {
                command,
                container_id: &container,
                netns: &netns_path,
                ifname: "eth0",
                pod: (namespace, name),
                netconf: &netconf,
            },
        )
        .map_err(|e| format!("running cilium-cni: {e}"))?;
        if !outcome.success {
            return Err(format!(
                "pod {namespace}/{name}: CNI {command} failed: {} {}",
                outcome.output, outcome.stderr
            ));
        }
        Ok(outcome)
    }

    /// Each pod's `/etc/netns/<netns>/hosts` (what `ip netns exec` shows as /etc/hosts):
    /// itself, and every service as NAME (same namespace), NAME.NS, NAME.NS.svc and
    /// NAME.NS.svc.cluster.local.
    fn write_hosts(&self, state: &mut LabState) -> Result<(), String> {
        let services = Self::list(state, SERVICES_PREFIX)?;
        for pod in state.pods.clone() {
            let mut text = String::from("127.0.0.1\tlocalhost\n");
            if let Some(ip) = pod.ip {
                text.push_str(&format!("{ip}\t{}\n", pod.name));
            }
            for (_, svc) in &services {
                let (Some(ip), Some(name), Some(ns)) = (
                    svc["spec"]["clusterIP"].as_str(),
                    svc["metadata"]["name"].as_str(),
                    svc["metadata"]["namespace"].as_str(),
                ) else {
                    continue;
                };
                let short = if ns == pod.namespace {
                    format!("{name} ")
                } else {
                    String::new()
                };
                text.push_str(&format!(
                    "{ip}\t{short}{name}.{ns} {name}.{ns}.svc {name}.{ns}.svc.cluster.local\n"
                ));
            }
            if !Path::new("/etc/netns").exists() && !state.made_etc_netns {
                state.made_etc_netns = true;
                self.save(state)?;
            }
            let dir = Path::new("/etc/netns").join(&pod.netns);
            if !state.etc_netns.contains(&dir) {
                state.etc_netns.push(dir.clone());
                self.save(state)?;
            }
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            std::fs::write(dir.join("hosts"), text)
                .map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        Ok(())
    }

    /// `cilium-lab delete -f FILE`: removes the manifest's objects (a Deployment's pods,
    /// Pods, Services, policies). Objects that do not exist are reported, not errors.
    pub fn delete(
        &self,
        text: &str,
        namespace: &str,
        out: &mut dyn std::io::Write,
    ) -> Result<(), String> {
        let mut state = self.require()?;
        // The documents by kind and name (pods of a Deployment are found by owner).
        for (i, de) in serde_norway::Deserializer::from_str(text).enumerate() {
            let doc = <Value as Deserialize>::deserialize(de)
                .map_err(|e| format!("document {}: {e}", i + 1))?;
            if doc.is_null() {
                continue;
            }
            let kind = doc["kind"].as_str().unwrap_or_default();
            let name = doc["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let ns = doc["metadata"]["namespace"]
                .as_str()
                .unwrap_or(namespace)
                .to_owned();
            match kind {
                "Pod" | "Deployment" => {
                    let victims: Vec<LabPod> = state
                        .pods
                        .iter()
                        .filter(|p| {
                            p.namespace == ns
                                && if kind == "Pod" {
                                    p.name == name
                                } else {
                                    p.name.starts_with(&format!("{name}-"))
                                }
                        })
                        .cloned()
                        .collect();
                    for pod in victims {
                        self.delete_pod(&mut state, &pod)?;
                        let _ = writeln!(out, "pod \"{}\" deleted", pod.name);
                    }
                }
                "Service" => {
                    let key = format!("{SERVICES_PREFIX}/{ns}/{name}");
                    let existed = Self::with_store(&state, move |store| {
                        Box::pin(async move { store.delete(&key).await.map_err(|e| e.to_string()) })
                    })?;
                    let _ = writeln!(
                        out,
                        "service \"{name}\" {}",
                        if existed { "deleted" } else { "not found" }
                    );
                }
                "CiliumNetworkPolicy" | "CiliumClusterwideNetworkPolicy" | "NetworkPolicy" => {
                    let mut p = doc.clone();
                    if kind != "CiliumClusterwideNetworkPolicy" {
                        p["metadata"]["namespace"] = Value::from(ns.clone());
                    }
                    for (d, _) in cilium_policy::parse(&p.to_string()).map_err(|e| e.to_string())? {
                        let origin = d.origin();
                        let key = format!("{POLICIES_PREFIX}/{origin}");
                        let existed = Self::with_store(&state, move |store| {
                            Box::pin(
                                async move { store.delete(&key).await.map_err(|e| e.to_string()) },
                            )
                        })?;
                        let _ = writeln!(
                            out,
                            "{} {}",
                            origin.to_lowercase(),
                            if existed { "deleted" } else { "not found" }
                        );
                    }
                }
                other => {
                    return Err(format!(
                        "document {}: kind {other:?} is not supported",
                        i + 1
                    ));
                }
            }
        }
        self.write_hosts(&mut state)
    }

    fn delete_pod(&self, state: &mut LabState, pod: &LabPod) -> Result<(), String> {
        let node = state
            .nodes
            .iter()
            .find(|n| n.name == pod.node)
            .cloned()
            .ok_or_else(|| format!("no node {}", pod.node))?;
        self.cni("DEL", &node, &pod.namespace, &pod.name, &pod.netns)?;
        Self::forget_pod(state, pod);
        self.save(state)?;
        let key = format!("{PODS_PREFIX}/{}/{}", pod.namespace, pod.name);
        Self::with_store(state, move |store| {
            Box::pin(async move {
                store
                    .delete(&key)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
        })
    }

    /// `cilium-lab exec [-n NS] POD -- CMD`: runs CMD in the pod's network namespace;
    /// returns its exit code.
    pub fn exec(&self, namespace: &str, pod: &str, cmd: &[String]) -> Result<i32, String> {
        let state = self.require()?;
        let p = state
            .pods
            .iter()
            .find(|p| p.namespace == namespace && p.name == pod)
            .ok_or_else(|| format!("pods \"{pod}\" not found in namespace {namespace}"))?;
        if cmd.is_empty() {
            return Err("give a command after --".into());
        }
        let status = Command::new("ip")
            .args(["netns", "exec", &p.netns])
            .args(cmd)
            .status()
            .map_err(|e| format!("running {}: {e}", cmd[0]))?;
        Ok(status.code().unwrap_or(1))
    }

    /// Stops a pod's workload and removes its namespace, hosts file and records (the
    /// caller saves the state).
    fn forget_pod(state: &mut LabState, pod: &LabPod) {
        if let Some(pid) = pod.pid {
            Self::kill(pid, "cilium-lab");
        }
        let _ = run(&["ip", "netns", "del", &pod.netns]);
        let dir = Path::new("/etc/netns").join(&pod.netns);
        let _ = std::fs::remove_dir_all(&dir);
        state.etc_netns.retain(|d| d != &dir);
        state.namespaces.retain(|n| n != &pod.netns);
        state.pods.retain(|p| p.netns != pod.netns);
    }

    /// `cilium-lab dbg NODE -- ARGS`: cilium-dbg against that node's agent and maps.
    pub fn dbg(&self, node: &str, args: &[String]) -> Result<i32, String> {
        let state = self.require()?;
        let n = &state.nodes[state.node_index(node)?];
        let status = Command::new(self.binary("cilium-dbg")?)
            .arg(format!("--host=unix://{}", n.socket().display()))
            .arg(format!("--bpf-root={}", n.bpffs.display()))
            .args(args)
            .status()
            .map_err(|e| e.to_string())?;
        Ok(status.code().unwrap_or(1))
    }

    /// hubble-relay's Observer API socket.
    pub fn relay_socket(&self) -> PathBuf {
        self.dir.join("hubble-relay.sock")
    }

    /// The Hubble UI's socket.
    pub fn ui_socket(&self) -> PathBuf {
        self.dir.join("hubble-ui.sock")
    }

    /// `cilium-lab hubble [--node NODE] ARGS`: the hubble CLI against the lab's relay (the
    /// whole cluster), or one node's Hubble server.
    pub fn hubble(&self, node: Option<&str>, args: &[String]) -> Result<i32, String> {
        let status = self
            .hubble_command(node, args)?
            .status()
            .map_err(|e| e.to_string())?;
        Ok(status.code().unwrap_or(1))
    }

    /// The hubble CLI's command line for [`Lab::hubble`] (the binary execs it, so that
    /// ending `cilium-lab hubble` ends hubble too).
    pub fn hubble_command(&self, node: Option<&str>, args: &[String]) -> Result<Command, String> {
        let state = self.require()?;
        let socket = match node {
            None => self.relay_socket(),
            Some(node) => state.nodes[state.node_index(node)?].hubble_socket(),
        };
        let mut cmd = Command::new(self.binary("hubble")?);
        cmd.arg(format!("--server=unix://{}", socket.display()))
            .args(args);
        Ok(cmd)
    }

    /// Forwards connections to `127.0.0.1:port` (0: any free port) to the Hubble UI, each
    /// on its own threads, until the process ends; returns the port bound.
    pub fn forward_ui(&self, port: u16) -> Result<u16, String> {
        self.require()?;
        let socket = self.ui_socket();
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))
            .map_err(|e| format!("127.0.0.1:{port}: {e}"))?;
        let bound = listener.local_addr().map_err(|e| e.to_string())?.port();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let Ok(ui) = std::os::unix::net::UnixStream::connect(&socket) else {
                    continue;
                };
                let (Ok(mut conn2), Ok(mut ui2)) = (conn.try_clone(), ui.try_clone()) else {
                    continue;
                };
                let (mut conn, mut ui) = (conn, ui);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut conn, &mut ui);
                    let _ = ui.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut ui2, &mut conn2);
                    let _ = conn2.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Ok(bound)
    }

    /// `cilium-lab down`: stops every process the lab started (by pid, after checking it is
    /// still the program it started), removes its namespaces, mounts, hosts files and
    /// directory. Returns what it removed.
    pub fn down(&self) -> Result<Vec<String>, String> {
        let Some(state) = self.load()? else {
            return Err(format!("no lab is up in {}", self.dir.display()));
        };
        let mut done = Vec::new();
        let mut pids: Vec<(u32, &str)> = Vec::new();
        pids.extend(
            state
                .pods
                .iter()
                .filter_map(|p| p.pid)
                .map(|p| (p, "cilium-lab")),
        );
        pids.extend(
            state
                .nodes
                .iter()
                .filter_map(|n| n.agent_pid)
                .map(|p| (p, "cilium-agent")),
        );
        pids.extend(state.relay_pid.map(|p| (p, "hubble-relay")));
        pids.extend(state.operator_pid.map(|p| (p, "cilium-operator")));
        pids.extend(state.etcd_pid.map(|p| (p, "etcd")));
        for (pid, program) in pids {
            if Self::kill(pid, program) {
                done.push(format!("stopped {program} (pid {pid})"));
            }
        }
        for ns in state.namespaces.iter().rev() {
            if run(&["ip", "netns", "del", ns]).is_ok() {
                done.push(format!("deleted netns {ns}"));
            }
        }
        for m in &state.mounts {
            let _ = Command::new("umount").arg(m).stderr(Stdio::null()).status();
        }
        for d in &state.etc_netns {
            let _ = std::fs::remove_dir_all(d);
        }
        if state.made_etc_netns {
            let _ = std::fs::remove_dir("/etc/netns");
        }
        std::fs::remove_dir_all(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        done.push(format!("removed {}", self.dir.display()));
        Ok(done)
    }
}
