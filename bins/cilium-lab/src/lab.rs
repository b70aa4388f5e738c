// SPDX-License-Identifier: Apache-2.0

//! A lab: the nodes (network namespaces on an underlay bridge, 192.168.10.0/24), the
//! upstream Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler) on the control-plane node, and on every node a kubelet (this crate's,
//! [`crate::kubelet`]), which runs Cilium's agent (DaemonSet `cilium`), operator and
//! hubble-relay (Deployments) as `cilium install` makes them (the `cilium` CLI's library,
//! with the seed's Helm values, [`seed_values`]; `up --no-cilium` leaves that to the
//! user, as the seed's cluster before its `helm install`). Users reach the apiserver
//! through `<lab dir>/kubeconfig` (a forwarder on 127.0.0.1 in this namespace: nothing in
//! the root namespace changes) with the pinned kubectl (`cilium-lab kubectl ...`).
//!
//! Everything it makes is written to `<lab dir>/lab.json` before it is made (the pods, to
//! each node's kubelet `pods.json`), so `down` removes it all, also after a crash. No
//! namespace gets a route out of the lab.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cilium_k8s::testing::{ControlPlane, Detached, NodeIpam, Options};
use serde::{Deserialize, Serialize};

use crate::kubelet::runtime::{self, RuntimeState};

/// The apiserver's address (on the control-plane node).
pub const API_ADDR: &str = "192.168.10.100:6443";
/// The control-plane node's underlay address.
pub const CTR_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 10, 100);
/// The pod CIDR pool (the seed's).
pub const POD_POOL: &str = "172.20.0.0/16";
/// The kubelets' API port.
pub const KUBELET_PORT: u16 = 10250;

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
    /// The agent's state dir (socket, store).
    pub state_dir: PathBuf,
    /// The kubelet's directory (its pods, their logs, its certificates).
    pub kubelet_dir: PathBuf,
    /// The node's root directory: its pods' `hostPath` volumes are under it (`bpffs` is
    /// its `sys/fs/bpf`, `state_dir` its `var/run/cilium`).
    #[serde(default)]
    pub root: PathBuf,
    /// The kubelet's pid.
    pub kubelet_pid: Option<u32>,
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

/// The cgroup v2 hierarchy the lab makes its nodes' cgroups in.
const CGROUP_UNIFIED: &str = "/sys/fs/cgroup/unified";

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
    /// bpffs mounts made (and the nodes' cgroup bind mounts).
    pub mounts: Vec<PathBuf>,
    /// cgroup v2 directories made (the lab's, then each node's): removed at `down`, last
    /// first.
    #[serde(default)]
    pub cgroups: Vec<PathBuf>,
    /// Whether the lab made `/etc/netns` itself (removed at `down` if empty).
    #[serde(default)]
    pub made_etc_netns: bool,
    /// The control plane's processes.
    #[serde(default)]
    pub control_plane: Option<Detached>,
    /// The apiserver forwarder's pid (127.0.0.1 here to the apiserver in the lab).
    #[serde(default)]
    pub forward_pid: Option<u32>,
    /// The forwarder's port on 127.0.0.1.
    #[serde(default)]
    pub api_port: u16,
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

/// A connected stream that can be split in two and half-closed.
trait Duplex: std::io::Read + std::io::Write + Send + Sized + 'static {
    fn dup(&self) -> std::io::Result<Self>;
    fn close_write(&self);
}

impl Duplex for std::net::TcpStream {
    fn dup(&self) -> std::io::Result<Self> {
        self.try_clone()
    }
    fn close_write(&self) {
        let _ = self.shutdown(std::net::Shutdown::Write);
    }
}

impl Duplex for std::os::unix::net::UnixStream {
    fn dup(&self) -> std::io::Result<Self> {
        self.try_clone()
    }
    fn close_write(&self) {
        let _ = self.shutdown(std::net::Shutdown::Write);
    }
}

/// Copies `a` to `b` and `b` to `a`, each on a thread, passing each end's close on.
fn splice<A: Duplex, B: Duplex>(a: A, b: B) {
    let (Ok(mut a2), Ok(mut b2)) = (a.dup(), b.dup()) else {
        return;
    };
    let (mut a, mut b) = (a, b);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut a, &mut b);
        b.close_write();
    });
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut b2, &mut a2);
        a2.close_write();
    });
}

fn program_is_kubelet(args: &[String]) -> bool {
    args.first().is_some_and(|a| a == "kubelet")
}

fn run(args: &[&str]) -> Result<String, String> {
    runtime::run(args)
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
    /// Install Cilium (the seed's `helm install`); false leaves the cluster without a
    /// network plugin, for `cilium install`.
    pub install_cilium: bool,
    /// The seed's cluster before Cilium: kube-proxy (iptables) and the bridge network
    /// (instead of Cilium).
    pub kube_proxy: bool,
}

/// kube-proxy as kubeadm deploys it (a `List`): ServiceAccount, ClusterRoleBinding to
/// `system:node-proxier`, ConfigMap `kube-proxy` with kubeadm's `config.conf`, DaemonSet
/// `kube-proxy` (hostNetwork, `registry.k8s.io/kube-proxy`). The lab's runtime cannot
/// give a configuration file the service account's token path, so the DaemonSet passes
/// the configuration's settings as flags (kube-proxy ignores flags when `--config` is
/// given), with the kubeconfig the kubelet writes for the pod's account; and it leaves
/// the machine-wide conntrack settings and its OOM score alone.
pub fn kube_proxy_objects() -> serde_json::Value {
    let config = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: iptables\nclusterCIDR: 10.244.0.0/16\nclientConnection:\n  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf\nconntrack:\n  maxPerCore: 0\n";
    let labels = serde_json::json!({"k8s-app": "kube-proxy"});
    serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": "kube-proxy", "namespace": "kube-system"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "kubeadm:node-proxier"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:node-proxier"},
         "subjects": [{"kind": "ServiceAccount", "name": "kube-proxy", "namespace": "kube-system"}]},
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "kube-proxy", "namespace": "kube-system", "labels": {"app": "kube-proxy"}},
         "data": {"config.conf": config}},
        {"apiVersion": "apps/v1", "kind": "DaemonSet",
         "metadata": {"name": "kube-proxy", "namespace": "kube-system", "labels": labels},
         "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": "kube-proxy",
                    "hostNetwork": true,
                    "priorityClassName": "system-node-critical",
                    "terminationGracePeriodSeconds": 1,
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [{
                        "name": "kube-proxy",
                        "image": "registry.k8s.io/kube-proxy:v1.37.2",
                        "command": ["/usr/local/bin/kube-proxy"],
                        "args": [
                            "--kubeconfig=$(KUBECONFIG)",
                            "--hostname-override=$(NODE_NAME)",
                            "--proxy-mode=iptables",
                            "--cluster-cidr=10.244.0.0/16",
                            "--masquerade-all",
                            "--conntrack-max-per-core=0",
                            "--conntrack-tcp-timeout-established=0",
                            "--conntrack-tcp-timeout-close-wait=0",
                            "--oom-score-adj=0",
                        ],
                        "env": [
                            {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                            {"name": "KUBERNETES_SERVICE_HOST", "value": "192.168.10.100"},
                            {"name": "KUBERNETES_SERVICE_PORT", "value": "6443"},
                        ],
                    }],
                },
            },
         }},
    ]})
}

/// The Helm values `cilium-lab up` installs Cilium with: the seed's `helm install`
/// (native routing; VXLAN with `tunnel`), hubble-relay and the UI on, and the operator's
/// garbage collection every 10 s instead of 5 min (a lab's nodes come and go quickly).
pub fn seed_values(tunnel: bool) -> Vec<String> {
    let mut v: Vec<String> = [
        "k8sServiceHost=192.168.10.100",
        "k8sServicePort=6443",
        "kubeProxyReplacement=true",
        "ipam.mode=cluster-pool",
        "ipam.operator.clusterPoolIPv4PodCIDRList={172.20.0.0/16}",
        "ipv4NativeRoutingCIDR=172.20.0.0/16",
        "endpointRoutes.enabled=true",
        "installNoConntrackIptablesRules=true",
        "bpf.masquerade=true",
        "ipv6.enabled=false",
        "hubble.relay.enabled=true",
        "hubble.ui.enabled=true",
        "operator.extraArgs={--leader-election-lease-duration=10s,--nodes-gc-interval=10s,--cilium-endpoint-gc-interval=10s}",
    ]
    .map(str::to_owned)
    .into();
    if tunnel {
        v.push("routingMode=tunnel".into());
        v.push("tunnelProtocol=vxlan".into());
        v.push("autoDirectNodeRoutes=false".into());
    } else {
        v.push("routingMode=native".into());
        v.push("autoDirectNodeRoutes=true".into());
    }
    v
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

    /// A test's own lab: directory `<tmp>/crs<pid><tag>-lab`, namespaces prefixed
    /// `crs<pid><tag>`, the binaries beside `lab_binary` (a test's
    /// `CARGO_BIN_EXE_cilium-lab`).
    pub fn for_test(tag: &str, lab_binary: &Path) -> Lab {
        let prefix = format!("crs{}{tag}", std::process::id());
        Lab {
            dir: std::env::temp_dir().join(format!("{prefix}-lab")),
            prefix,
            bin_dir: lab_binary
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        }
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

    /// The kubeconfig users take (`export KUBECONFIG=...`): the apiserver through the
    /// forwarder on 127.0.0.1.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// The kubeconfig of the lab's own components (the apiserver at its lab address).
    fn lab_kubeconfig(&self) -> PathBuf {
        self.dir.join("control-plane").join("admin.kubeconfig")
    }

    fn add_netns(&self, state: &mut LabState, name: &str) -> Result<(), String> {
        state.namespaces.push(name.to_owned());
        self.save(state)?;
        run(&["ip", "netns", "add", name])?;
        run(&["ip", "-n", name, "link", "set", "lo", "up"]).map(|_| ())
    }

    /// Starts a daemon in a namespace (`None`: this one), in its own session (it outlives
    /// this command), its output appended to `log`.
    fn daemon(
        &self,
        netns: Option<&str>,
        program: &Path,
        args: &[String],
        log: &Path,
    ) -> Result<u32, String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let mut cmd = Command::new("setsid");
        match netns {
            // The network namespace only: the kubelet creates pods' namespaces, which
            // must be mounted where everyone sees them (`ip netns exec` would give it a
            // mount namespace of its own).
            Some(ns) if program_is_kubelet(args) => {
                cmd.arg("nsenter").arg(format!("--net=/run/netns/{ns}"));
            }
            Some(ns) => {
                cmd.args(["ip", "netns", "exec", ns]);
            }
            None => {}
        }
        let child = cmd
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", program.display()))?;
        Ok(child.id())
    }

    /// `cilium-lab up`: the nodes, the control plane, the operator, a kubelet and an agent
    /// per node, hubble-relay; returns when every node is Ready.
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
        self.binary("cilium-operator")?;
        self.binary("hubble-relay")?;
        self.binary("cilium-cni")?;
        let kube_dir = cilium_k8s::testing::kube_dir().map_err(|e| e.to_string())?;
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        let mut state = LabState {
            prefix: self.prefix.clone(),
            created: now(),
            agent_config: opts.agent_config.clone(),
            tunnel: opts.tunnel,
            ..LabState::default()
        };
        self.save(&state)?;
        if !Path::new("/etc/netns").exists() {
            state.made_etc_netns = true;
            self.save(&state)?;
            std::fs::create_dir_all("/etc/netns").map_err(|e| format!("/etc/netns: {e}"))?;
        }
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
            let root = base.join("root");
            let bpffs = root.join("sys/fs/bpf");
            let state_dir = root.join("var/run/cilium");
            let kubelet_dir = base.join("kubelet");
            for d in [&bpffs, &state_dir, &kubelet_dir] {
                std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
            }
            state.mounts.push(bpffs.clone());
            self.save(&state)?;
            run(&["mount", "-t", "bpf", "bpf", &bpffs.to_string_lossy()])?;
            self.add_node_cgroup(&mut state, &name, &root)?;
            state.nodes.push(LabNode {
                name,
                netns,
                ip,
                bpffs,
                state_dir,
                kubelet_dir,
                root,
                kubelet_pid: None,
            });
            self.save(&state)?;
        }
        self.start_control_plane(&mut state, &kube_dir)?;
        for i in 0..state.nodes.len() {
            self.start_kubelet(&mut state, i)?;
        }
        if opts.kube_proxy {
            self.install_pre_cilium_network(&state)?;
            self.wait_nodes_ready(&state)?;
            return Ok(state);
        }
        // Without a network plugin the nodes stay NotReady, as a new cluster's do.
        if opts.install_cilium {
            self.install_cilium(&state)?;
            for n in &state.nodes {
                self.wait_agent(n)?;
            }
            self.wait_nodes_ready(&state)?;
        }
        Ok(state)
    }

    /// The seed's network before Cilium: on every node a bridge `cni0` with host-local
    /// addresses from the Node's podCIDR (the reference plugins; flannel's part, a /24 per
    /// node and a route to each other node's, is played by `10-bridge.conflist` and routes
    /// via the nodes' addresses, as flannel's host-gw backend does), and kube-proxy as
    /// kubeadm deploys it (DaemonSet and ConfigMap `kube-proxy`, ServiceAccount bound to
    /// `system:node-proxier`), in iptables mode.
    pub fn install_pre_cilium_network(&self, state: &LabState) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let cidrs: BTreeMap<String, String> = loop {
            let out = self.kubectl_output(&[
                "get",
                "nodes",
                "-o",
                "jsonpath={range .items[*]}{.metadata.name}={.spec.podCIDR}{\"\\n\"}{end}",
            ])?;
            let found: BTreeMap<String, String> = out
                .lines()
                .filter_map(|l| l.split_once('='))
                .filter(|(_, c)| !c.is_empty())
                .map(|(n, c)| (n.to_owned(), c.to_owned()))
                .collect();
            if state.nodes.iter().all(|n| found.contains_key(&n.name)) {
                break found;
            }
            if Instant::now() > deadline {
                return Err(format!("the nodes got no podCIDR: {out}"));
            }
            std::thread::sleep(Duration::from_millis(300));
        };
        for n in &state.nodes {
            let cidr = &cidrs[&n.name];
            for other in state.nodes.iter().filter(|o| o.name != n.name) {
                run(&[
                    "ip",
                    "-n",
                    &n.netns,
                    "route",
                    "replace",
                    &cidrs[&other.name],
                    "via",
                    &other.ip.to_string(),
                ])?;
            }
            let dir = n.root.join("etc/cni/net.d");
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let conf = serde_json::json!({
                "cniVersion": "1.0.0", "name": "cbr0",
                "plugins": [
                    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true,
                     "hairpinMode": true,
                     "ipam": {"type": "host-local", "ranges": [[{"subnet": cidr}]],
                              "routes": [{"dst": "0.0.0.0/0"}],
                              "dataDir": n.root.join("var/lib/cni/networks").display().to_string()}},
                    {"type": "portmap", "capabilities": {"portMappings": true}},
                ],
            });
            let file = dir.join("10-bridge.conflist");
            std::fs::write(&file, format!("{conf:#}"))
                .map_err(|e| format!("{}: {e}", file.display()))?;
        }
        self.kubectl_apply(&kube_proxy_objects().to_string())?;
        Ok(())
    }

    /// Installs Cilium as `cilium install` does (the CLI's library, through the lab's
    /// kubeconfig) with the seed's Helm values; the kubelets then run the agents, the
    /// operator and hubble-relay as the pods of its DaemonSet and Deployments.
    pub fn install_cilium(&self, state: &LabState) -> Result<(), String> {
        let mut values = cilium_cli::values::Values::new();
        for v in seed_values(state.tunnel) {
            values.set(&v).map_err(|e| format!("--set {v}: {e}"))?;
        }
        if !state.agent_config.is_empty() {
            let extra = serde_json::json!({"extraConfig": state.agent_config});
            values
                .merge_yaml(&extra.to_string())
                .map_err(|e| format!("--config: {e}"))?;
        }
        let kubeconfig = self.kubeconfig();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let client = cilium_cli::cluster::client(Some(&kubeconfig), None).await?;
            cilium_cli::commands::install(
                &client,
                &values,
                cilium_cli::install::DEFAULT_VERSION,
                None,
            )
            .await
        })
        .map(|_| ())
    }

    /// `kubectl apply -f -` of `manifest` (JSON or YAML).
    pub fn kubectl_apply(&self, manifest: &str) -> Result<String, String> {
        use std::io::Write;
        let mut child = self
            .kubectl()?
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("kubectl: {e}"))?;
        if let Some(mut input) = child.stdin.take() {
            input
                .write_all(manifest.as_bytes())
                .map_err(|e| format!("kubectl apply: {e}"))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| format!("kubectl apply: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "kubectl apply: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// The control plane on k8s-ctr (detached: it outlives this command), the kubelets'
    /// credentials, the users' kubeconfig and its forwarder.
    fn start_control_plane(&self, state: &mut LabState, kube_dir: &Path) -> Result<(), String> {
        let ctr = state.nodes[0].netns.clone();
        let cp_dir = self.dir.join("control-plane");
        // Node IPAM on, as kubeadm's `podSubnet` sets it in the seed: every Node gets a
        // 10.244.x.0/24 podCIDR (the bridge network's; Cilium's cluster-pool ignores it).
        let cp = ControlPlane::start_with_node_ipam(
            &Options {
                netns: Some(ctr.clone()),
                address: CTR_IP,
                port: 6443,
                dir: Some(cp_dir.clone()),
                own_session: true,
            },
            &NodeIpam::seed(),
        )
        .map_err(|e| format!("the control plane did not start: {e}"))?;
        // Each kubelet: its node's credentials and its API's serving certificate.
        for n in &state.nodes {
            cp.write_kubeconfig(
                &format!("kubelet-{}.kubeconfig", n.name),
                &format!("system:node:{}", n.name),
                &["system:nodes"],
            )
            .map_err(|e| e.to_string())?;
            let serving = cp
                .ca()
                .serving(&[n.name.as_str()], &[std::net::IpAddr::V4(n.ip)])
                .map_err(|e| e.to_string())?;
            let write = |file: &str, text: &str| {
                let p = n.kubelet_dir.join(file);
                std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))
            };
            write("kubelet.crt", &serving.cert_pem)?;
            write("kubelet.key", &serving.key_pem)?;
            write("ca.crt", cp.ca_pem())?;
        }
        state.control_plane = Some(cp.detach());
        self.save(state)?;
        // Users' kubeconfig: the admin's credentials, the apiserver through the forwarder.
        let port_file = self.dir.join("api-port");
        let _ = std::fs::remove_file(&port_file);
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        state.forward_pid = Some(self.daemon(
            None,
            &exe,
            &[
                "forward".into(),
                format!("--netns={ctr}"),
                format!("--to={API_ADDR}"),
                format!("--port-file={}", port_file.display()),
            ],
            &self.dir.join("forward.log"),
        )?);
        self.save(state)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let port: u16 = loop {
            if let Some(p) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|t| t.trim().parse().ok())
            {
                break p;
            }
            if Instant::now() > deadline {
                return Err("the apiserver forwarder did not start (forward.log)".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        state.api_port = port;
        self.save(state)?;
        let admin = std::fs::read_to_string(self.lab_kubeconfig()).map_err(|e| e.to_string())?;
        let user = admin.replace(
            &format!("https://{API_ADDR}"),
            &format!("https://127.0.0.1:{port}"),
        );
        std::fs::write(self.kubeconfig(), user).map_err(|e| e.to_string())?;
        let _ = kube_dir;
        Ok(())
    }

    /// Forwards connections to 127.0.0.1 (a free port, written to `port_file`) to `to`
    /// inside network namespace `netns`, until the process ends.
    pub fn forward(netns: &str, to: &str, port_file: &Path) -> Result<(), String> {
        let listener =
            std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(|e| format!("127.0.0.1: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        std::fs::write(port_file, port.to_string())
            .map_err(|e| format!("{}: {e}", port_file.display()))?;
        let to: std::net::SocketAddr = to.parse().map_err(|e| format!("{to}: {e}"))?;
        for conn in listener.incoming().flatten() {
            let ns = netns.to_owned();
            // The connection is made from a thread in the lab's namespace; the socket
            // stays there.
            let Ok(Ok(upstream)) = cilium_bpf::testing::spawn_in_netns(&ns, move || {
                std::net::TcpStream::connect_timeout(&to, Duration::from_secs(5))
            })
            .join() else {
                continue;
            };
            splice(conn, upstream);
        }
        Ok(())
    }

    /// kubectl (the pinned one) with the lab's kubeconfig.
    pub fn kubectl(&self) -> Result<Command, String> {
        self.require()?;
        let kubectl = cilium_k8s::testing::kube_dir()
            .map_err(|e| e.to_string())?
            .join("kubectl");
        let mut cmd = Command::new(kubectl);
        cmd.env("KUBECONFIG", self.kubeconfig());
        Ok(cmd)
    }

    /// Runs kubectl with `args`; its output, or an error with its stderr.
    pub fn kubectl_output(&self, args: &[&str]) -> Result<String, String> {
        let out = self
            .kubectl()?
            .args(args)
            .output()
            .map_err(|e| format!("kubectl: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Waits (up to 120 s) until every node is registered and Ready.
    fn wait_nodes_ready(&self, state: &LabState) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let out = self
                .kubectl_output(&[
                    "get",
                    "nodes",
                    "-o",
                    "jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
                ])
                .unwrap_or_default();
            let ready = state
                .nodes
                .iter()
                .all(|n| out.lines().any(|l| l == format!("{}=True", n.name)));
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("the nodes did not become Ready: {out}"));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Starts node `i`'s kubelet.
    pub fn start_kubelet(&self, state: &mut LabState, i: usize) -> Result<(), String> {
        let n = state.nodes.get(i).cloned().ok_or("no such node")?;
        if let Some(pid) = n.kubelet_pid
            && runtime::alive(pid, "cilium-lab")
        {
            return Err(format!(
                "the kubelet of {} runs already (pid {pid})",
                n.name
            ));
        }
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let cp_dir = self.dir.join("control-plane");
        let mut args = vec![
            "kubelet".to_owned(),
            format!("--node={}", n.name),
            format!("--ip={}", n.ip),
            format!(
                "--kubeconfig={}",
                cp_dir
                    .join(format!("kubelet-{}.kubeconfig", n.name))
                    .display()
            ),
            format!("--dir={}", n.kubelet_dir.display()),
            format!("--netns-prefix={}", self.prefix),
            format!("--node-netns={}", n.netns),
            format!("--cni-conf-dir={}", n.root.join("etc/cni/net.d").display()),
            // The node's own, then the images' (Cilium's install-cni copies cilium-cni to
            // the node: here the program is used where it is), then Debian's reference
            // plugins.
            format!("--cni-bin-dir={}", n.root.join("opt/cni/bin").display()),
            format!(
                "--cni-bin-dir={}",
                self.binary("cilium-cni")?
                    .parent()
                    .unwrap_or(Path::new("/"))
                    .display()
            ),
            "--cni-bin-dir=/usr/lib/cni".to_owned(),
            format!("--host-root={}", n.root.display()),
            format!(
                "--kube-dir={}",
                cilium_k8s::testing::kube_dir()
                    .map_err(|e| e.to_string())?
                    .display()
            ),
            format!("--port={KUBELET_PORT}"),
        ];
        if i == 0 {
            args.push("--control-plane".into());
        }
        let pid = self.daemon(
            Some(&n.netns),
            &exe,
            &args,
            &n.kubelet_dir.join("kubelet.log"),
        )?;
        state.nodes[i].kubelet_pid = Some(pid);
        self.save(state)
    }

    /// Kills a node's kubelet (SIGKILL): its pods keep running.
    pub fn kill_kubelet(&self, state: &mut LabState, node: &str) -> Result<(), String> {
        let i = state.node_index(node)?;
        if let Some(pid) = state.nodes[i].kubelet_pid.take() {
            Self::kill(pid, "cilium-lab");
        }
        self.save(state)
    }

    /// Kills a process the lab started (SIGKILL, by pid, if it is still `program`) and waits
    /// for it to go; returns whether it did.
    fn kill(pid: u32, program: &str) -> bool {
        if !runtime::alive(pid, program) {
            return false;
        }
        runtime::signal(pid, "KILL");
        let deadline = Instant::now() + Duration::from_secs(5);
        while runtime::alive(pid, program) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// Stops the apiserver (SIGKILL): the API is away until [`Lab::start_apiserver`].
    pub fn stop_apiserver(&self, state: &mut LabState) -> Result<(), String> {
        let cp = state.control_plane.as_mut().ok_or("no control plane")?;
        if let Some(pid) = cp.apiserver.take() {
            Self::kill(pid, "kube-apiserver");
        }
        self.save(state)
    }

    /// Starts the apiserver again and waits until it answers.
    pub fn start_apiserver(&self, state: &mut LabState) -> Result<(), String> {
        let cp = state.control_plane.clone().ok_or("no control plane")?;
        if cp.apiserver.is_some() {
            return Ok(());
        }
        let (program, args) = cp
            .apiserver_command
            .split_first()
            .ok_or("the apiserver's command line is unknown")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&cp.apiserver_log)
            .map_err(|e| format!("{}: {e}", cp.apiserver_log.display()))?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting the apiserver: {e}"))?;
        if let Some(c) = state.control_plane.as_mut() {
            c.apiserver = Some(child.id());
        }
        self.save(state)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.kubectl_output(&["get", "--raw=/readyz"]).is_err() {
            if Instant::now() > deadline {
                return Err("the apiserver did not become ready within 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Ok(())
    }

    /// Kills a node's agent (SIGKILL), as a crash would; its kubelet starts it again (the
    /// DaemonSet's restart policy) unless the kubelet is down too. Returns the pid killed.
    pub fn kill_agent(&self, state: &LabState, node: &str) -> Result<u32, String> {
        let n = &state.nodes[state.node_index(node)?];
        let pods = RuntimeState::load(&n.kubelet_dir)?;
        let pid = pods
            .pods
            .values()
            .filter(|p| p.namespace == "kube-system")
            .flat_map(|p| p.containers.iter())
            .find(|c| c.name == "cilium-agent")
            .and_then(|c| c.pid)
            .ok_or_else(|| format!("no agent runs on {node}"))?;
        if Self::kill(pid, "cilium-agent") {
            Ok(pid)
        } else {
            Err(format!("the agent of {node} (pid {pid}) is not running"))
        }
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

    /// Stops a node's kubelet and the pods it runs (its agent among them), and removes its
    /// namespaces and mounts (the machine is gone).
    fn remove_node_machine(&self, state: &mut LabState, i: usize) {
        let n = state.nodes[i].clone();
        if let Some(pid) = n.kubelet_pid {
            Self::kill(pid, "cilium-lab");
        }
        Self::remove_pods(&n.kubelet_dir);
        let _ = Command::new("umount")
            .arg(&n.bpffs)
            .stderr(Stdio::null())
            .status();
        state.mounts.retain(|m| m != &n.bpffs);
        let _ = run(&["ip", "netns", "del", &n.netns]);
        state.namespaces.retain(|x| x != &n.netns);
    }

    /// Stops the processes of every pod a kubelet recorded and removes their namespaces.
    fn remove_pods(kubelet_dir: &Path) -> Vec<String> {
        let mut done = Vec::new();
        let Ok(pods) = RuntimeState::load(kubelet_dir) else {
            return done;
        };
        for p in pods.pods.values() {
            for c in &p.containers {
                if let Some(pid) = c.pid
                    && let Some(argv0) = c.argv.first()
                    && Self::kill(pid, argv0)
                {
                    done.push(format!(
                        "stopped pod {}/{} ({argv0}, pid {pid})",
                        p.namespace, p.name
                    ));
                }
            }
            if let Some(ns) = &p.netns {
                runtime::delete_netns(ns);
                done.push(format!("deleted netns {ns}"));
            }
        }
        done
    }

    /// Removes a node: its machine goes (kubelet, agent, pods, namespaces), then its Node
    /// object, as when a node is deleted from a cluster: the pod garbage collector deletes
    /// its pods and their controllers make new ones elsewhere, the operator deletes its
    /// CiliumNode and frees its pod CIDR.
    pub fn remove_node(&self, state: &mut LabState, node: &str) -> Result<(), String> {
        let i = state.node_index(node)?;
        if i == 0 {
            return Err("k8s-ctr holds the control plane: it cannot be removed".into());
        }
        self.remove_node_machine(state, i);
        state.nodes.remove(i);
        self.save(state)?;
        self.kubectl_output(&["delete", "node", node]).map(|_| ())
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

    /// `cilium-lab ssh NODE [COMMAND...]`: the command in the node's network namespace
    /// (through `sh -c` when it is one word, so pipes work), or a shell; its exit code.
    pub fn ssh(&self, node: &str, command: &[String]) -> Result<i32, String> {
        let state = self.require()?;
        let n = &state.nodes[state.node_index(node)?];
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &n.netns]);
        match command {
            [] => cmd.arg(std::env::var("SHELL").unwrap_or_else(|_| "sh".into())),
            [one] => cmd.args(["sh", "-c", one]),
            many => cmd.args(many),
        };
        let status = cmd.status().map_err(|e| format!("ip netns exec: {e}"))?;
        Ok(status.code().unwrap_or(1))
    }

    /// hubble-relay's Observer API socket (its `hostPath` on the node that runs it).
    pub fn relay_socket(&self) -> PathBuf {
        self.relay_file(cilium_cli::install::RELAY_SOCKET)
    }

    /// The Hubble UI's socket.
    pub fn ui_socket(&self) -> PathBuf {
        self.relay_file(cilium_cli::install::UI_SOCKET)
    }

    /// A socket of hubble-relay's on whichever node has one that answers (a relay pod that
    /// moved leaves its old socket file behind on its old node), else one that exists, else
    /// the first node's path (the error then names it).
    fn relay_file(&self, path: &str) -> PathBuf {
        let nodes = self
            .load()
            .ok()
            .flatten()
            .map(|s| s.nodes)
            .unwrap_or_default();
        let candidates: Vec<PathBuf> = nodes
            .iter()
            .map(|n| crate::kubelet::container::host_path(&n.root, path))
            .collect();
        candidates
            .iter()
            .find(|p| std::os::unix::net::UnixStream::connect(p).is_ok())
            .or_else(|| candidates.iter().find(|p| p.exists()))
            .or(candidates.first())
            .cloned()
            .unwrap_or_else(|| self.dir.join("hubble-relay.sock"))
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
            // hubble-relay may have just started (after `up` or `cilium hubble enable`).
            None => {
                let deadline = Instant::now() + Duration::from_secs(10);
                while std::os::unix::net::UnixStream::connect(self.relay_socket()).is_err()
                    && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(200));
                }
                self.relay_socket()
            }
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
                splice(conn, ui);
            }
        });
        Ok(bound)
    }

    /// The node's cgroup (`/sys/fs/cgroup/unified/<prefix>/<node>`), bind-mounted at
    /// `<root>/run/cilium/cgroupv2`: the agent's `cgroup-root` (a `hostPath`) finds it there
    /// and attaches socket LB to it, and the kubelet puts the processes of `hostNetwork`
    /// pods in it, so that the node's own processes reach services as on a node with
    /// Cilium. Without a cgroup v2 hierarchy at /sys/fs/cgroup/unified a node has none
    /// (socket LB stays off; pods reach services either way).
    fn add_node_cgroup(&self, state: &mut LabState, node: &str, root: &Path) -> Result<(), String> {
        let unified = Path::new(CGROUP_UNIFIED);
        if !cilium_bpf::loader::is_cgroup2(unified).unwrap_or(false) {
            eprintln!(
                "cilium-lab: no cgroup v2 hierarchy at {CGROUP_UNIFIED}: {node} runs without socket LB"
            );
            return Ok(());
        }
        // Recorded before they are made, so that `down` removes them whatever happens next.
        let lab = unified.join(&self.prefix);
        if !state.cgroups.contains(&lab) {
            state.cgroups.push(lab.clone());
            self.save(state)?;
            std::fs::create_dir_all(&lab).map_err(|e| format!("{}: {e}", lab.display()))?;
        }
        let cgroup = lab.join(node);
        state.cgroups.push(cgroup.clone());
        self.save(state)?;
        std::fs::create_dir_all(&cgroup).map_err(|e| format!("{}: {e}", cgroup.display()))?;
        let target = root.join("run/cilium/cgroupv2");
        std::fs::create_dir_all(&target).map_err(|e| format!("{}: {e}", target.display()))?;
        state.mounts.push(target.clone());
        self.save(state)?;
        run(&[
            "mount",
            "--bind",
            &cgroup.to_string_lossy(),
            &target.to_string_lossy(),
        ])?;
        Ok(())
    }

    /// `cilium-lab down`: stops every process the lab started (by pid, after checking it is
    /// still the program it started: kubelets first, so that none restarts a pod, then the
    /// pods the kubelets recorded, Cilium's among them, then the control plane), removes
    /// its namespaces, mounts, hosts files and directory. Returns what it removed.
    pub fn down(&self) -> Result<Vec<String>, String> {
        let Some(state) = self.load()? else {
            return Err(format!("no lab is up in {}", self.dir.display()));
        };
        let mut done = Vec::new();
        for n in &state.nodes {
            if let Some(pid) = n.kubelet_pid
                && Self::kill(pid, "cilium-lab")
            {
                done.push(format!("stopped the kubelet of {} (pid {pid})", n.name));
            }
        }
        for n in &state.nodes {
            done.extend(Self::remove_pods(&n.kubelet_dir));
        }
        let mut pids: Vec<(u32, &str)> = Vec::new();
        if let Some(cp) = &state.control_plane {
            pids.extend(cp.scheduler.map(|p| (p, "kube-scheduler")));
            pids.extend(
                cp.controller_manager
                    .map(|p| (p, "kube-controller-manager")),
            );
            pids.extend(cp.apiserver.map(|p| (p, "kube-apiserver")));
            pids.extend(cp.etcd.map(|p| (p, "etcd")));
        }
        pids.extend(state.forward_pid.map(|p| (p, "cilium-lab")));
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
        // A cgroup goes once its last process has exited (they were all stopped above).
        for cg in state.cgroups.iter().rev() {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match std::fs::remove_dir(cg) {
                    Ok(()) => {
                        done.push(format!("removed cgroup {}", cg.display()));
                        break;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) if Instant::now() >= deadline => {
                        done.push(format!("could not remove cgroup {}: {e}", cg.display()));
                        break;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        }
        if state.made_etc_netns {
            let _ = std::fs::remove_dir("/etc/netns");
        }
        std::fs::remove_dir_all(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        done.push(format!("removed {}", self.dir.display()));
        Ok(done)
    }
}
