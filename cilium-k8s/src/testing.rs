// SPDX-License-Identifier: Apache-2.0

//! The upstream Kubernetes control plane for tests and the lab: etcd, kube-apiserver,
//! kube-controller-manager and kube-scheduler as upstream builds them (the binaries of
//! `cargo xtask kube-build`, which also builds kube-proxy; etcd is the one the apiserver's
//! client is built against, not Debian's 3.4, whose missing watch progress requests stall
//! the apiserver's watch cache), here or in a network namespace.
//!
//! [`ControlPlane::start`] makes a temp directory with a CA, the apiserver's serving
//! certificate, a client certificate per component (the admin in `system:masters`, the
//! controller-manager and the scheduler as the users bootstrap RBAC knows; the apiserver's
//! own for kubelets, which it verifies against the same CA), the service-account key, and a
//! kubeconfig for each; starts etcd and the apiserver
//! (`--service-cluster-ip-range=10.96.0.0/16` as in the seed), waits for `/readyz`, then the
//! controller-manager with node IPAM off (Cilium's cluster-pool does IPAM) and only the
//! node-lifecycle, deployment, replicaset, daemonset, endpointslice, namespace,
//! serviceaccount(-token), garbage-collector and pod garbage-collector controllers, and the
//! scheduler. [`ControlPlane::start_with_node_ipam`] runs the node-ipam controller too,
//! which gives each Node a `spec.podCIDR` from a cluster CIDR as in a cluster before Cilium
//! (kube-proxy and the reference bridge plugin with host-local IPAM). Dropping it kills
//! every process it started (by pid) and removes the directory, also when a test panics.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use cilium_core::kvstore::etcd::EtcdServer;

use crate::Error;
use crate::pki::{CertificateAuthority, CertifiedKey, key_pair_pem};

/// The seed's service range.
pub const SERVICE_CLUSTER_IP_RANGE: &str = "10.96.0.0/16";
/// The `kubernetes` Service's ClusterIP in that range.
pub const KUBERNETES_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
/// The controllers the controller-manager runs: no node IPAM (Cilium's cluster-pool does
/// it; [`ControlPlane::start_with_node_ipam`] adds it); the node lifecycle controller lifts
/// a node's `not-ready` taint once its kubelet reports it Ready, and marks it unreachable
/// when its Lease is not renewed.
pub const CONTROLLERS: &[&str] = &[
    "node-lifecycle-controller",
    "deployment-controller",
    "replicaset-controller",
    "endpointslice-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "garbage-collector-controller",
    "pod-garbage-collector-controller",
    "daemonset-controller",
    // kube-root-ca.crt in every namespace: the CA of pods' service account volumes.
    "root-ca-certificate-publisher-controller",
];

/// The node-ipam controller, run only by [`ControlPlane::start_with_node_ipam`].
pub const NODE_IPAM_CONTROLLER: &str = "node-ipam-controller";

/// The seed's pod network before Cilium: kube-controller-manager's `--cluster-cidr`, cut
/// into a `/24` per node (`--node-cidr-mask-size`), the ranges of each node's bridge plugin.
pub const SEED_CLUSTER_CIDR: &str = "10.244.0.0/16";

/// The prefix length of each node's podCIDR in [`SEED_CLUSTER_CIDR`].
pub const SEED_NODE_CIDR_MASK_SIZE: u8 = 24;

/// kube-controller-manager's node IPAM (`--allocate-node-cidrs=true`, range allocator):
/// each Node gets a `spec.podCIDR` of `node_cidr_mask_size` bits from `cluster_cidr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIpam {
    /// `--cluster-cidr`: the pods' network.
    pub cluster_cidr: String,
    /// `--node-cidr-mask-size`: the prefix length of each node's podCIDR.
    pub node_cidr_mask_size: u8,
}

impl NodeIpam {
    /// The seed's: [`SEED_CLUSTER_CIDR`] with a `/24` per node.
    pub fn seed() -> NodeIpam {
        NodeIpam {
            cluster_cidr: SEED_CLUSTER_CIDR.into(),
            node_cidr_mask_size: SEED_NODE_CIDR_MASK_SIZE,
        }
    }
}

/// The controller-manager's controller and node-IPAM flags: [`CONTROLLERS`] and
/// `--allocate-node-cidrs=false`, or with `ipam` also [`NODE_IPAM_CONTROLLER`] and its
/// flags (the service range too, so that no node gets a CIDR overlapping it).
fn controller_flags(ipam: Option<&NodeIpam>) -> Vec<String> {
    let mut controllers = CONTROLLERS.to_vec();
    let mut flags = Vec::new();
    match ipam {
        None => flags.push("--allocate-node-cidrs=false".to_owned()),
        Some(ipam) => {
            controllers.push(NODE_IPAM_CONTROLLER);
            flags.extend([
                "--allocate-node-cidrs=true".to_owned(),
                format!("--cluster-cidr={}", ipam.cluster_cidr),
                format!("--node-cidr-mask-size={}", ipam.node_cidr_mask_size),
                format!("--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}"),
            ]);
        }
    }
    flags.insert(0, format!("--controllers={}", controllers.join(",")));
    flags
}

/// How long a component may take to become ready (a loaded 2-core machine, first start).
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// Where the control plane runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// A network namespace to run every process in (`ip netns exec NAME`); `None`: this
    /// one.
    pub netns: Option<String>,
    /// The address etcd and the apiserver bind to and the apiserver advertises.
    pub address: Ipv4Addr,
    /// The apiserver's port; 0 picks a free one (in a namespace: 6443).
    pub port: u16,
    /// The directory for certificates, kubeconfigs, etcd's data and the logs; `None`: a
    /// fresh one under the temp dir, removed on drop.
    pub dir: Option<PathBuf>,
    /// Start every process in its own session (`setsid`), so that it outlives this one
    /// once [`ControlPlane::detach`]ed (the lab's daemons).
    pub own_session: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            netns: None,
            address: Ipv4Addr::LOCALHOST,
            port: 0,
            dir: None,
            own_session: false,
        }
    }
}

/// A running control plane; see the module documentation.
#[derive(Debug)]
pub struct ControlPlane {
    dir: PathBuf,
    owned_dir: bool,
    kube: PathBuf,
    wrapper: Vec<String>,
    server: String,
    ca: CertificateAuthority,
    etcd: Option<EtcdServer>,
    apiserver_args: Vec<String>,
    apiserver: Option<Child>,
    controller_manager: Option<Child>,
    scheduler: Option<Child>,
}

/// The programs the control plane runs, and kube-proxy (a directory from before one was
/// added is stale).
const BINARIES: [&str; 6] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kube-proxy",
    "kubectl",
];

fn has_binaries(dir: &Path) -> bool {
    BINARIES.iter().all(|b| dir.join(b).exists())
}

/// One of upstream's clients built by `cargo xtask upstream-build` (`hubble`,
/// `cilium-dbg`, `cnitool` in `target/upstream/`), the test oracles of this project's
/// formats; `None` when it has not been built, after printing that the test is skipped.
/// Under CI (`CI` set) a missing binary is a failure: `cargo xtask test` builds them.
pub fn upstream_client(name: &str) -> Option<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()?
        .to_path_buf();
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) if !t.is_empty() => workspace.join(t),
        _ => workspace.join("target"),
    };
    let bin = target.join("upstream").join(name);
    built_or_skip(&bin, "cargo xtask upstream-build").then_some(bin)
}

/// Whether a program a test needs (built by the xtask command `how`) exists; when not,
/// prints that the test is skipped, or fails under CI (`CI` set), where `cargo xtask
/// test` builds it.
pub fn built_or_skip(program: &Path, how: &str) -> bool {
    if program.exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} is missing: {how}",
        program.display()
    );
    eprintln!("skipped: {} not built ({how})", program.display());
    false
}

/// The directory with the upstream binaries (`kube-apiserver`, ..., `kube-proxy`,
/// `kubectl`): `$CRS_KUBE_DIR` when set, else `target/kube/` of this workspace, built by
/// `cargo xtask kube-build` when it is missing.
pub fn kube_dir() -> Result<PathBuf, Error> {
    if let Some(dir) = std::env::var_os("CRS_KUBE_DIR") {
        let dir = PathBuf::from(dir);
        return if has_binaries(&dir) {
            Ok(dir)
        } else {
            Err(Error::Missing(format!(
                "CRS_KUBE_DIR={} lacks one of {}",
                dir.display(),
                BINARIES.join(", ")
            )))
        };
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| Error::Missing("the workspace of cilium-k8s".into()))?
        .to_path_buf();
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) if !t.is_empty() => workspace.join(t),
        _ => workspace.join("target"),
    };
    let dir = target.join("kube");
    if has_binaries(&dir) {
        return Ok(dir);
    }
    if !workspace.join("xtask").is_dir() {
        return Err(Error::Missing(format!(
            "{} has no Kubernetes binaries; set CRS_KUBE_DIR to a directory with \
             kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy and kubectl",
            dir.display()
        )));
    }
    eprintln!("cilium-k8s: building the control plane (cargo xtask kube-build)");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["xtask", "kube-build"])
        .current_dir(&workspace)
        .status()
        .map_err(|e| Error::Missing(format!("cannot run cargo xtask kube-build: {e}")))?;
    if status.success() && has_binaries(&dir) {
        Ok(dir)
    } else {
        Err(Error::Missing(format!(
            "cargo xtask kube-build failed ({status})"
        )))
    }
}

/// A kubeconfig (YAML) for `server` with the CA and a client certificate, embedded.
pub fn kubeconfig_yaml(server: &str, ca_pem: &str, client: &CertifiedKey, user: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kubernetes\n  cluster:\n    \
         server: {server}\n    certificate-authority-data: {}\nusers:\n- name: {user}\n  \
         user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: \
         {user}@kubernetes\n  context:\n    cluster: kubernetes\n    user: {user}\n\
         current-context: {user}@kubernetes\npreferences: {{}}\n",
        b64(ca_pem),
        b64(&client.cert_pem),
        b64(&client.key_pem),
    )
}

fn free_port(ip: Ipv4Addr) -> Result<u16, Error> {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::Io(format!("no free port on {ip}: {e}")))
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(|e| Error::Io(format!("writing {}: {e}", path.display())))
}

/// The last lines of a component's log, for an error.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(12)..].join("\n")
}

impl ControlPlane {
    /// For tests: a control plane on 127.0.0.1 (free ports). Panics when it cannot start
    /// (the message names the component and shows its log).
    /// Free ports are picked before the components bind them, so control planes of tests
    /// running in parallel can pick the same one: a start that fails with "address already
    /// in use" is tried again (three times at most).
    pub fn start_for_test(test: &str) -> ControlPlane {
        let mut attempt = 1;
        loop {
            match ControlPlane::start(&Options::default()) {
                Ok(cp) => return cp,
                Err(e) if attempt < 3 && e.to_string().contains("address already in use") => {
                    attempt += 1;
                }
                Err(e) => panic!("{test}: {e}"),
            }
        }
    }

    /// Starts etcd, the apiserver, the controller-manager and the scheduler; returns once
    /// the apiserver is ready and the controller-manager has made the `default`
    /// ServiceAccount.
    pub fn start(opts: &Options) -> Result<ControlPlane, Error> {
        ControlPlane::start_inner(opts, None)
    }

    /// [`ControlPlane::start`], with the controller-manager's node IPAM as `ipam` says
    /// (`--allocate-node-cidrs=true --cluster-cidr=.. --node-cidr-mask-size=..` and the
    /// node-ipam controller): every Node gets its `spec.podCIDR`, as kube-proxy and the
    /// reference bridge plugin of a cluster before Cilium expect.
    ///
    /// ```no_run
    /// use cilium_k8s::testing::{ControlPlane, NodeIpam, Options};
    ///
    /// let cp = ControlPlane::start_with_node_ipam(&Options::default(), &NodeIpam::seed())?;
    /// cp.add_ready_node("k8s-w1", "192.168.10.101".parse().unwrap())?;
    /// // Soon: 10.244.0.0/24.
    /// let cidr = cp.kubectl(&["get", "node", "k8s-w1", "-o", "jsonpath={.spec.podCIDR}"])?;
    /// println!("{cidr}");
    /// # Ok::<(), cilium_k8s::Error>(())
    /// ```
    pub fn start_with_node_ipam(opts: &Options, ipam: &NodeIpam) -> Result<ControlPlane, Error> {
        ControlPlane::start_inner(opts, Some(ipam))
    }

    fn start_inner(opts: &Options, ipam: Option<&NodeIpam>) -> Result<ControlPlane, Error> {
        let kube = kube_dir()?;
        let (dir, owned_dir) = match &opts.dir {
            Some(d) => (d.clone(), false),
            None => {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let d = std::env::temp_dir().join(format!(
                    "crs-kube-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::SeqCst)
                ));
                let _ = std::fs::remove_dir_all(&d);
                (d, true)
            }
        };
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::Io(format!("creating {}: {e}", dir.display())))?;
        let mut wrapper: Vec<String> = match &opts.netns {
            Some(ns) => vec!["ip".into(), "netns".into(), "exec".into(), ns.clone()],
            None => Vec::new(),
        };
        if opts.own_session {
            wrapper.insert(0, "setsid".into());
        }
        let ip = opts.address;
        let in_netns = opts.netns.is_some();
        let port = match (opts.port, in_netns) {
            (0, true) => 6443,
            (0, false) => free_port(ip)?,
            (p, _) => p,
        };
        let (etcd_client, etcd_peer) = if in_netns {
            (SocketAddr::from((ip, 2379)), SocketAddr::from((ip, 2380)))
        } else {
            (
                SocketAddr::from((ip, free_port(ip)?)),
                SocketAddr::from((ip, free_port(ip)?)),
            )
        };
        let server = format!("https://{ip}:{port}");

        // Certificates and kubeconfigs.
        let ca = CertificateAuthority::new("cilium-rs kubernetes CA")?;
        let mut ips: Vec<IpAddr> = vec![IpAddr::V4(ip), IpAddr::V4(KUBERNETES_SERVICE_IP)];
        if ip != Ipv4Addr::LOCALHOST {
            ips.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        let serving = ca.serving(
            &[
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
                "localhost",
            ],
            &ips,
        )?;
        write(&dir.join("ca.crt"), ca.cert_pem())?;
        write(&dir.join("apiserver.crt"), &serving.cert_pem)?;
        write(&dir.join("apiserver.key"), &serving.key_pem)?;
        let (sa_key, sa_pub) = key_pair_pem()?;
        write(&dir.join("sa.key"), &sa_key)?;
        write(&dir.join("sa.pub"), &sa_pub)?;
        for (file, user, groups) in [
            (
                "admin.kubeconfig",
                "kubernetes-admin",
                &["system:masters"][..],
            ),
            (
                "controller-manager.kubeconfig",
                "system:kube-controller-manager",
                &[][..],
            ),
            ("scheduler.kubeconfig", "system:kube-scheduler", &[][..]),
        ] {
            let client = ca.client(user, groups)?;
            write(
                &dir.join(file),
                &kubeconfig_yaml(&server, ca.cert_pem(), &client, user),
            )?;
        }
        // What the apiserver shows kubelets (exec, logs); it checks their serving
        // certificates against the same CA.
        let kubelet_client = ca.client("kube-apiserver-kubelet-client", &["system:masters"])?;
        write(
            &dir.join("apiserver-kubelet-client.crt"),
            &kubelet_client.cert_pem,
        )?;
        write(
            &dir.join("apiserver-kubelet-client.key"),
            &kubelet_client.key_pem,
        )?;

        // etcd as kubeadm runs it: clients over TLS with certificates of the cluster's CA
        // (`--client-cert-auth`); the apiserver is its one client.
        let etcd_serving = ca.serving(&["localhost", "etcd"], &ips)?;
        write(&dir.join("etcd-server.crt"), &etcd_serving.cert_pem)?;
        write(&dir.join("etcd-server.key"), &etcd_serving.key_pem)?;
        let etcd_client_cert = ca.client("kube-apiserver-etcd-client", &[])?;
        write(
            &dir.join("apiserver-etcd-client.crt"),
            &etcd_client_cert.cert_pem,
        )?;
        write(
            &dir.join("apiserver-etcd-client.key"),
            &etcd_client_cert.key_pem,
        )?;
        let etcd = EtcdServer::start_binary_tls(
            &kube.join("etcd"),
            &dir.join("etcd"),
            etcd_client,
            etcd_peer,
            &wrapper,
            Some(cilium_core::kvstore::etcd::EtcdServerTls {
                ca_file: dir.join("ca.crt"),
                cert_file: dir.join("etcd-server.crt"),
                key_file: dir.join("etcd-server.key"),
                client_cert_file: dir.join("apiserver-etcd-client.crt"),
                client_key_file: dir.join("apiserver-etcd-client.key"),
            }),
        )
        .map_err(|e| Error::Start {
            component: "etcd".into(),
            message: e,
            log: String::new(),
        })?;
        let d = |f: &str| dir.join(f).display().to_string();
        let apiserver_args = vec![
            format!("--etcd-servers={}", etcd.endpoint),
            format!("--etcd-cafile={}", d("ca.crt")),
            format!("--etcd-certfile={}", d("apiserver-etcd-client.crt")),
            format!("--etcd-keyfile={}", d("apiserver-etcd-client.key")),
            format!("--bind-address={ip}"),
            format!("--advertise-address={ip}"),
            format!("--secure-port={port}"),
            format!("--tls-cert-file={}", d("apiserver.crt")),
            format!("--tls-private-key-file={}", d("apiserver.key")),
            format!("--client-ca-file={}", d("ca.crt")),
            format!(
                "--kubelet-client-certificate={}",
                d("apiserver-kubelet-client.crt")
            ),
            format!("--kubelet-client-key={}", d("apiserver-kubelet-client.key")),
            format!("--kubelet-certificate-authority={}", d("ca.crt")),
            "--kubelet-preferred-address-types=InternalIP".into(),
            format!("--service-account-key-file={}", d("sa.pub")),
            format!("--service-account-signing-key-file={}", d("sa.key")),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}"),
            "--authorization-mode=Node,RBAC".into(),
            // hostNetwork pods (Cilium's DaemonSet) need it.
            "--allow-privileged=true".into(),
            // The `kubernetes` Service's endpoints: loopback is not a valid endpoint address.
            format!(
                "--endpoint-reconciler-type={}",
                if ip.is_loopback() { "none" } else { "lease" }
            ),
            "--profiling=false".into(),
        ];
        let mut cp = ControlPlane {
            dir,
            owned_dir,
            kube,
            wrapper,
            server,
            ca,
            etcd: Some(etcd),
            apiserver_args,
            apiserver: None,
            controller_manager: None,
            scheduler: None,
        };
        cp.start_apiserver()?;

        let mut cm_args = vec![format!(
            "--kubeconfig={}",
            cp.path("controller-manager.kubeconfig")
        )];
        cm_args.extend(controller_flags(ipam));
        cm_args.extend([
            "--leader-elect=false".into(),
            "--secure-port=0".into(),
            "--use-service-account-credentials=true".into(),
            format!("--service-account-private-key-file={}", cp.path("sa.key")),
            format!("--root-ca-file={}", cp.path("ca.crt")),
            "--profiling=false".into(),
        ]);
        cp.controller_manager = Some(cp.spawn("kube-controller-manager", &cm_args)?);
        let sched_args = vec![
            format!("--kubeconfig={}", cp.path("scheduler.kubeconfig")),
            "--leader-elect=false".into(),
            "--secure-port=0".into(),
            "--profiling=false".into(),
        ];
        cp.scheduler = Some(cp.spawn("kube-scheduler", &sched_args)?);
        cp.wait(
            "kube-controller-manager",
            &["get", "serviceaccount", "default", "-n", "default"],
        )?;
        Ok(cp)
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    fn spawn(&self, component: &str, args: &[String]) -> Result<Child, Error> {
        let log_path = self.dir.join(format!("{component}.log"));
        let log = std::fs::File::create(&log_path)
            .map_err(|e| Error::Io(format!("creating {}: {e}", log_path.display())))?;
        let bin = self.kube.join(component);
        let mut cmd = match self.wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| Error::Io(e.to_string()))?)
            .stderr(log)
            .spawn()
            .map_err(|e| Error::Start {
                component: component.into(),
                message: format!("cannot run {}: {e}", bin.display()),
                log: String::new(),
            })
    }

    /// Waits until `kubectl ARGS` succeeds, while `component` keeps running.
    fn wait(&mut self, component: &str, args: &[&str]) -> Result<(), Error> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let child = match component {
                "kube-apiserver" => self.apiserver.as_mut(),
                "kube-controller-manager" => self.controller_manager.as_mut(),
                _ => self.scheduler.as_mut(),
            };
            if let Some(Ok(Some(status))) = child.map(Child::try_wait) {
                return Err(self.start_error(component, format!("exited: {status}")));
            }
            let last = match self.kubectl(args) {
                Ok(_) => return Ok(()),
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                return Err(self.start_error(
                    component,
                    format!("not ready within {READY_TIMEOUT:?}: {last}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn start_error(&self, component: &str, message: String) -> Error {
        Error::Start {
            component: component.into(),
            message,
            log: log_tail(&self.dir.join(format!("{component}.log"))),
        }
    }

    /// Starts the apiserver (again, after [`ControlPlane::stop_apiserver`]) and waits for
    /// `/readyz`.
    pub fn start_apiserver(&mut self) -> Result<(), Error> {
        if self.apiserver.is_some() {
            return Ok(());
        }
        let args = self.apiserver_args.clone();
        self.apiserver = Some(self.spawn("kube-apiserver", &args)?);
        self.wait("kube-apiserver", &["get", "--raw=/readyz"])
    }

    /// Kills the apiserver (the other components stay up, as when it fails).
    pub fn stop_apiserver(&mut self) {
        kill(&mut self.apiserver);
    }

    /// The apiserver's URL (`https://127.0.0.1:PORT`).
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The admin's kubeconfig (user `kubernetes-admin` in `system:masters`).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    /// The CA every certificate of this control plane chains to (PEM).
    pub fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    /// The CA every certificate of this control plane chains to, e.g. to issue a kubelet's
    /// serving certificate (the apiserver verifies kubelets against it, and shows them a
    /// client certificate it issued: `kube-apiserver-kubelet-client` in `system:masters`).
    pub fn ca(&self) -> &CertificateAuthority {
        &self.ca
    }

    /// Writes a kubeconfig for user `user` in `groups` (e.g. an agent's
    /// `system:node:<name>` in `system:nodes`) and returns its path.
    pub fn write_kubeconfig(
        &self,
        file: &str,
        user: &str,
        groups: &[&str],
    ) -> Result<PathBuf, Error> {
        let client = self.ca.client(user, groups)?;
        let path = self.dir.join(file);
        write(
            &path,
            &kubeconfig_yaml(&self.server, self.ca.cert_pem(), &client, user),
        )?;
        Ok(path)
    }

    /// The directory with the certificates, kubeconfigs and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The pinned kubectl.
    pub fn kubectl_path(&self) -> PathBuf {
        self.kube.join("kubectl")
    }

    /// The pinned kube-proxy (the same Kubernetes release as the control plane), for a
    /// node of a cluster before Cilium; the control plane never runs it.
    pub fn kube_proxy_path(&self) -> PathBuf {
        self.kube.join("kube-proxy")
    }

    /// Applies Cilium's five CRDs with kubectl and waits until they are established.
    pub fn apply_crds(&self) -> Result<(), Error> {
        self.kubectl_input(&["apply", "-f", "-"], Some(&crate::crds::all_yaml()))?;
        let mut args = vec!["wait", "--for=condition=Established", "--timeout=60s"];
        let names: Vec<String> = crate::crds::ALL
            .iter()
            .map(|c| format!("crd/{}", c.name))
            .collect();
        args.extend(names.iter().map(String::as_str));
        self.kubectl(&args).map(drop)
    }

    /// Waits (up to a minute, polling every 250 ms) until `f` returns `Some`; on a timeout,
    /// panics showing the cluster's nodes, workloads, pods and events.
    pub fn eventually<T>(&self, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(v) = f() {
                return v;
            }
            if Instant::now() > deadline {
                let state = self.kubectl(&["get", "nodes,deploy,rs,pods,events", "-o", "wide"]);
                panic!("timed out waiting for {what}; the cluster:\n{state:?}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Registers Node `name` as its kubelet would, `ip` its InternalIP, Ready as of now (the
    /// node-lifecycle controller lifts its not-ready taint, the scheduler binds pods to it;
    /// no kubelet renews it, so it stays Ready only for the node-monitor grace period).
    pub fn add_ready_node(&self, name: &str, ip: Ipv4Addr) -> Result<(), Error> {
        let ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| Error::Io(e.to_string()))?
            .as_nanos();
        let now = format!("{}Z", &cilium_core::rfc3339(ns)[..19]);
        let node = format!(
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels: \
             {{kubernetes.io/hostname: {name}}}\nstatus:\n  addresses:\n  - {{type: InternalIP, \
             address: {ip}}}\n  capacity: {{cpu: \"2\", memory: 4Gi, pods: \"110\"}}\n  \
             allocatable: {{cpu: \"2\", memory: 4Gi, pods: \"110\"}}\n  conditions:\n  - {{type: \
             Ready, status: \"True\", reason: KubeletReady, message: ready, lastHeartbeatTime: \
             \"{now}\", lastTransitionTime: \"{now}\"}}\n"
        );
        self.kubectl_input(&["apply", "-f", "-"], Some(&node))
            .map(drop)
    }

    /// Creates Deployment `name` (label `app=<name>`, image `whoami`, which nothing pulls)
    /// with one pod per address of `ips`, waits until the scheduler has bound them all to
    /// `node`, and makes each Running and Ready with its address, as its kubelet would
    /// (so the endpointslice controller lists them). Returns the pods' names, in the order
    /// of `ips`. Panics on a failure or a timeout (see [`ControlPlane::eventually`]).
    pub fn running_deployment(&self, name: &str, node: &str, ips: &[Ipv4Addr]) -> Vec<String> {
        self.kubectl(&[
            "create",
            "deployment",
            name,
            "--image=whoami",
            &format!("--replicas={}", ips.len()),
        ])
        .unwrap_or_else(|e| panic!("creating deployment {name}: {e}"));
        let template = "jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName}{\"\\n\"}{end}";
        let selector = format!("app={name}");
        let suffix = format!(" {node}");
        let pods = self.eventually(&format!("{} pods bound to {node}", ips.len()), || {
            let out = self
                .kubectl(&["get", "pods", "-l", &selector, "-o", template])
                .ok()?;
            let bound: Vec<String> = out
                .lines()
                .filter_map(|l| l.strip_suffix(suffix.as_str()))
                .map(str::to_owned)
                .collect();
            (bound.len() == ips.len()).then_some(bound)
        });
        for (pod, ip) in pods.iter().zip(ips) {
            self.set_pod_status(pod, *ip, true)
                .unwrap_or_else(|e| panic!("pod {pod}'s status: {e}"));
        }
        pods
    }

    /// Sets a pod's status as its kubelet would: Running with `ip`, its Ready condition
    /// `ready` (the endpointslice controller follows it).
    pub fn set_pod_status(&self, pod: &str, ip: Ipv4Addr, ready: bool) -> Result<(), Error> {
        let status = serde_json::json!({"status": {
            "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
        }})
        .to_string();
        self.kubectl(&[
            "patch",
            "pod",
            pod,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status,
        ])
        .map(drop)
    }

    /// Runs the pinned kubectl as the admin (in the control plane's namespace) and returns
    /// its standard output; a failure carries its standard error.
    pub fn kubectl(&self, args: &[&str]) -> Result<String, Error> {
        self.kubectl_input(args, None)
    }

    /// [`ControlPlane::kubectl`] with `input` on its standard input (`apply -f -`).
    pub fn kubectl_input(&self, args: &[&str], input: Option<&str>) -> Result<String, Error> {
        let kubectl = self.kubectl_path();
        let mut cmd = match self.wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&kubectl);
                c
            }
            None => Command::new(&kubectl),
        };
        let kubeconfig = self.kubeconfig();
        cmd.arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::Io(format!("cannot run {}: {e}", kubectl.display())))?;
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin
                .write_all(text.as_bytes())
                .map_err(|e| Error::Io(format!("kubectl stdin: {e}")))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| Error::Io(format!("kubectl: {e}")))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(Error::Kubectl {
                args: args.join(" "),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            })
        }
    }
}

/// The processes of a control plane left running by [`ControlPlane::detach`].
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Detached {
    /// etcd's pid.
    pub etcd: Option<u32>,
    /// The apiserver's pid.
    pub apiserver: Option<u32>,
    /// The controller-manager's pid.
    pub controller_manager: Option<u32>,
    /// The scheduler's pid.
    pub scheduler: Option<u32>,
    /// The apiserver's command line (wrapper, program, arguments): how to start it again.
    pub apiserver_command: Vec<String>,
    /// The apiserver's log file.
    pub apiserver_log: PathBuf,
}

impl ControlPlane {
    /// Leaves every process running and the directory in place (for a lab that outlives
    /// this process); returns their pids and how to start the apiserver again.
    pub fn detach(mut self) -> Detached {
        let mut command = self.wrapper.clone();
        command.push(self.kube.join("kube-apiserver").display().to_string());
        command.extend(self.apiserver_args.iter().cloned());
        self.owned_dir = false;
        Detached {
            etcd: self.etcd.take().and_then(EtcdServer::detach),
            apiserver: self.apiserver.take().map(|c| c.id()),
            controller_manager: self.controller_manager.take().map(|c| c.id()),
            scheduler: self.scheduler.take().map(|c| c.id()),
            apiserver_command: command,
            apiserver_log: self.dir.join("kube-apiserver.log"),
        }
    }
}

fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // A failing test: what each component said last, before it all goes.
            for c in [
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
            ] {
                eprintln!(
                    "--- {c} (last lines)\n{}",
                    log_tail(&self.dir.join(format!("{c}.log")))
                );
            }
        }
        kill(&mut self.scheduler);
        kill(&mut self.controller_manager);
        kill(&mut self.apiserver);
        self.etcd.take();
        if self.owned_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ipam_is_off_unless_asked_for() {
        let flags = controller_flags(None);
        assert_eq!(flags[0], format!("--controllers={}", CONTROLLERS.join(",")));
        assert_eq!(flags[1..], ["--allocate-node-cidrs=false"]);
        assert!(!flags[0].contains(NODE_IPAM_CONTROLLER));
    }

    #[test]
    fn node_ipam_runs_its_controller_with_the_cluster_cidr() {
        let flags = controller_flags(Some(&NodeIpam::seed()));
        assert!(flags[0].ends_with(",node-ipam-controller"), "{}", flags[0]);
        assert_eq!(
            flags[1..],
            [
                "--allocate-node-cidrs=true",
                "--cluster-cidr=10.244.0.0/16",
                "--node-cidr-mask-size=24",
                "--service-cluster-ip-range=10.96.0.0/16",
            ]
        );
    }
}
