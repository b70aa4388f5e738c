// SPDX-License-Identifier: Apache-2.0

//! The seed's cluster before Cilium, on one node: upstream kube-proxy (iptables mode) and
//! the reference CNI plugins (Debian's `containernetworking-plugins`: `bridge` on `cni0`
//! with `host-local` IPAM on the node's podCIDR, then `portmap`), on the upstream control
//! plane with the node-ipam controller handing out `/24`s of 10.244.0.0/16.
//!
//! Namespaces, all named `crskp<pid>-*`: `cp` runs the control plane on 192.168.10.100,
//! `node` (192.168.10.101, a veth to `cp`) runs kube-proxy and holds `cni0`, `a` and `b` are
//! pods wired by the plugins. Steps: the Node gets a podCIDR from the node-ipam controller;
//! kube-proxy programs the `kubernetes` Service and a pod reaches the apiserver through it;
//! a backend in pod b behind a ClusterIP Service (and an EndpointSlice made through the
//! API) answers pod a through the ClusterIP, masqueraded to the node (`--masquerade-all`);
//! deleting the Service removes its rules; CNI DEL of both pods through the plugins.
//!
//! kube-proxy runs with flags only and none that change the machine: the conntrack sysctls
//! of the root namespace (`nf_conntrack_max` and the module's `hashsize` are global) are
//! left alone with `--conntrack-max-per-core=0` and the two TCP timeouts at 0, its OOM score
//! is left as it is (`--oom-score-adj=0`, where upstream's -999 protects it machine-wide),
//! and no kernel module is loaded (iptables mode runs no `modprobe`; br_netfilter is not
//! needed with `--masquerade-all`). The test checks that the root namespace's sysctls that
//! kube-proxy and the plugins could touch are unchanged and that kube-proxy's log shows no
//! write to them. Needs root; everything is removed on drop, even on panic.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cilium_bpf::testing::{is_root_or_skip, run};
use cilium_k8s::testing::{ControlPlane, NodeIpam, Options, SEED_CLUSTER_CIDR};
use serde_json::{Value, json};

const CTR_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 10, 100);
const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 10, 101);
const NODE: &str = "k8s-w1";
/// Debian's reference plugins.
const CNI_PATH: &str = "/usr/lib/cni";
/// The backend's port in pod b, the Service's target port.
const BACKEND_PORT: u16 = 8080;
/// What the backend serves.
const MARKER: &str = "served by the backend in pod b";
/// How long kube-proxy may take to program (or remove) a Service.
const SYNC_TIMEOUT: Duration = Duration::from_secs(60);

/// Root-namespace files kube-proxy or the plugins could write: they must not change.
/// `nf_conntrack_max` and `hashsize` are global to the machine; the others are the root
/// namespace's own.
const ROOT_FILES: &[&str] = &[
    "/proc/sys/net/netfilter/nf_conntrack_max",
    "/sys/module/nf_conntrack/parameters/hashsize",
    "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established",
    "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_close_wait",
    "/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal",
    "/proc/sys/net/ipv4/conf/all/route_localnet",
    "/proc/sys/net/ipv4/ip_forward",
    "/proc/sys/net/bridge/bridge-nf-call-iptables",
];

/// The root namespace's values of [`ROOT_FILES`] (those that exist), and the lines of its
/// iptables and ip6tables rules that name a kube-proxy (`KUBE-`) or plugin (`CNI-`) chain.
fn root_snapshot() -> Vec<(&'static str, String)> {
    let mut values: Vec<(&'static str, String)> = ROOT_FILES
        .iter()
        .filter_map(|f| Some((*f, std::fs::read_to_string(f).ok()?.trim().to_owned())))
        .collect();
    for save in ["iptables-save", "ip6tables-save"] {
        let out = Command::new(save)
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default();
        let ours: Vec<String> = String::from_utf8_lossy(&out)
            .lines()
            .filter(|l| l.contains("KUBE-") || l.contains("CNI-"))
            .map(str::to_owned)
            .collect();
        values.push((save, ours.join("\n")));
    }
    values
}

/// One pod: its namespace and, once ADDed, the chain's result (the DEL's prevResult).
struct Pod {
    netns: String,
    result: Option<Value>,
}

/// Everything the test made, undone on drop even on panic: its processes killed by pid,
/// the pods DELeted through the plugins (reverse order) if the test did not, the
/// namespaces deleted (with them cni0, the veths and every iptables rule in them), the
/// directory removed. The control plane is dropped before (it is declared after).
struct Lab {
    prefix: String,
    dir: PathBuf,
    namespaces: Vec<String>,
    children: Vec<(&'static str, Child)>,
    pods: Vec<Pod>,
    conflist: Option<Value>,
}

impl Lab {
    fn new() -> Lab {
        let prefix = format!("crskp{}-", std::process::id());
        let dir = std::env::temp_dir().join(prefix.trim_end_matches('-'));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {dir:?}: {e}"));
        Lab {
            prefix,
            dir,
            namespaces: Vec::new(),
            children: Vec::new(),
            pods: Vec::new(),
            conflist: None,
        }
    }

    fn ns(&self, short: &str) -> String {
        format!("{}{short}", self.prefix)
    }

    /// Creates namespace `<prefix><short>` with `lo` up.
    fn add_netns(&mut self, short: &str) -> String {
        let ns = self.ns(short);
        run(&["ip", "netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        run(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        ns
    }

    /// `args` run inside namespace `ns`, standard output and error to `<dir>/<log>`.
    fn spawn_in(&mut self, what: &'static str, ns: &str, args: &[&str], log: &str) {
        let path = self.dir.join(log);
        let file =
            std::fs::File::create(&path).unwrap_or_else(|e| panic!("creating {path:?}: {e}"));
        let err = file.try_clone().expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what} in {ns}: {e}"));
        self.children.push((what, child));
    }

    /// Panics (with its log) if `what` has exited.
    fn check_running(&mut self, what: &str, log: &str) {
        for (name, child) in &mut self.children {
            if *name == what
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "{what} exited ({status}); its log:\n{}",
                    tail(&self.dir.join(log), 40)
                );
            }
        }
    }

    /// One CNI call of `plugin` (in the node namespace, as a runtime on the node runs it)
    /// for pod `pod`, `conf` on its standard input; its result, or what it said.
    fn cni(&self, command: &str, plugin: &str, pod: &str, conf: &Value) -> Result<Value, String> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns("node")])
            .arg(Path::new(CNI_PATH).join(plugin))
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", pod)
            .env("CNI_NETNS", format!("/run/netns/{pod}"))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", CNI_PATH)
            // As containerd and CRI-O pass them: the reference plugins refuse arguments
            // they do not know unless IgnoreUnknown is set.
            .env(
                "CNI_ARGS",
                format!(
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod};\
                     K8S_POD_INFRA_CONTAINER_ID={pod}"
                ),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {CNI_PATH}/{plugin}: {e}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A plugin may answer (an error) without reading its input.
            let _ = stdin.write_all(conf.to_string().as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|e| format!("{plugin}: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!(
                "{plugin} ({}): {} {}",
                out.status,
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        if stdout.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&stdout).map_err(|e| format!("{plugin}'s result {stdout:?}: {e}"))
    }

    /// The configuration of the conflist's plugin `i` as a runtime passes it: the plugin's
    /// object with the list's name and version, and `prevResult` when there is one.
    fn plugin_conf(&self, i: usize, prev: Option<&Value>) -> (String, Value) {
        let list = self
            .conflist
            .as_ref()
            .expect("the conflist is written first");
        let mut conf = list["plugins"][i].clone();
        conf["cniVersion"] = list["cniVersion"].clone();
        conf["name"] = list["name"].clone();
        if let Some(prev) = prev {
            conf["prevResult"] = prev.clone();
        }
        let plugin = conf["type"].as_str().expect("plugin type").to_owned();
        (plugin, conf)
    }

    /// CNI ADD of pod `<prefix><short>` (a new namespace) through the conflist's plugins
    /// in order, each given the previous one's result; returns the pod's address.
    fn add_pod(&mut self, short: &str) -> Ipv4Addr {
        let ns = self.add_netns(short);
        self.pods.push(Pod {
            netns: ns.clone(),
            result: None,
        });
        let count = self.conflist.as_ref().expect("conflist")["plugins"]
            .as_array()
            .map_or(0, Vec::len);
        let mut prev: Option<Value> = None;
        for i in 0..count {
            let (plugin, conf) = self.plugin_conf(i, prev.as_ref());
            let result = self
                .cni("ADD", &plugin, &ns, &conf)
                .unwrap_or_else(|e| panic!("CNI ADD of pod {ns}: {e}"));
            prev = Some(result);
        }
        let result = prev.expect("a result");
        let ip = result["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("CNI ADD of pod {ns}: no IPv4 address in {result}"));
        if let Some(pod) = self.pods.iter_mut().find(|p| p.netns == ns) {
            pod.result = Some(result);
        }
        ip
    }

    /// CNI DEL of every ADDed pod, the last first, through the plugins in reverse order
    /// (prevResult: the pod's ADD result); the errors, one line each.
    fn del_pods(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        let count = self
            .conflist
            .as_ref()
            .map_or(0, |c| c["plugins"].as_array().map_or(0, Vec::len));
        let pods: Vec<(String, Value)> = self
            .pods
            .iter_mut()
            .rev()
            .filter_map(|p| Some((p.netns.clone(), p.result.take()?)))
            .collect();
        for (ns, result) in pods {
            for i in (0..count).rev() {
                let (plugin, conf) = self.plugin_conf(i, Some(&result));
                if let Err(e) = self.cni("DEL", &plugin, &ns, &conf) {
                    errors.push(format!("CNI DEL of pod {ns}: {e}"));
                }
            }
        }
        errors
    }

    /// `cmd` inside namespace `short`: its standard output, or its status and stderr.
    fn exec_in(&self, short: &str, cmd: &[&str]) -> Result<String, String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns(short)])
            .args(cmd)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{cmd:?}: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "{} ({}): {}",
                cmd.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// The node namespace's NAT table as `iptables-save` prints it.
    fn node_nat(&self) -> String {
        self.exec_in("node", &["iptables-save", "-t", "nat"])
            .unwrap_or_else(|e| panic!("iptables-save in the node namespace: {e}"))
    }

    /// `curl` from pod `short` (3 s at most); the body, or why not.
    fn curl(&self, short: &str, url: &str, extra: &[&str]) -> Result<String, String> {
        let mut cmd = vec!["curl", "-sS", "--max-time", "3"];
        cmd.extend_from_slice(extra);
        cmd.push(url);
        self.exec_in(short, &cmd)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- kube-proxy (last lines)\n{}",
                tail(&self.dir.join("kube-proxy.log"), 30)
            );
        }
        for (_, child) in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for e in self.del_pods() {
            eprintln!("cleanup: {e}");
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "delete", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The last `n` lines of a file.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Polls `f` every 250 ms for up to `timeout` until it returns `Ok`; panics with `what` and
/// the last `Err`.
#[track_caller]
fn until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => {
                panic!("{what}: not within {timeout:?}; last: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// `a.b.c.0/24` inside 10.244.0.0/16.
fn is_seed_pod_cidr(cidr: &str) -> bool {
    let Some((net, len)) = cidr.split_once('/') else {
        return false;
    };
    let Ok(net) = net.parse::<Ipv4Addr>() else {
        return false;
    };
    let o = net.octets();
    len == "24" && o[0] == 10 && o[1] == 244 && o[3] == 0
}

#[test]
fn privileged_kube_proxy_serves_a_cluster_ip_on_the_bridge_network() {
    if !is_root_or_skip("privileged_kube_proxy_serves_a_cluster_ip_on_the_bridge_network") {
        return;
    }
    for plugin in ["bridge", "host-local", "portmap"] {
        let tool = format!("{CNI_PATH}/{plugin}");
        assert!(
            Path::new(&tool).exists(),
            "{tool} is missing: install containernetworking-plugins (scripts/deps.sh)"
        );
    }
    let started = Instant::now();
    let root_before = root_snapshot();
    let mut lab = Lab::new();

    // The control plane's namespace and the node's, a veth between them (made inside the
    // control plane's namespace, its peer created directly in the node's).
    let cp_ns = lab.add_netns("cp");
    let node_ns = lab.add_netns("node");
    run(&[
        "ip", "-n", &cp_ns, "link", "add", "kp-cp", "type", "veth", "peer", "name", "kp-node",
        "netns", &node_ns,
    ]);
    run(&[
        "ip",
        "-n",
        &cp_ns,
        "addr",
        "add",
        &format!("{CTR_IP}/24"),
        "dev",
        "kp-cp",
    ]);
    run(&[
        "ip",
        "-n",
        &node_ns,
        "addr",
        "add",
        &format!("{NODE_IP}/24"),
        "dev",
        "kp-node",
    ]);
    run(&["ip", "-n", &cp_ns, "link", "set", "kp-cp", "up"]);
    run(&["ip", "-n", &node_ns, "link", "set", "kp-node", "up"]);

    let cp = ControlPlane::start_with_node_ipam(
        &Options {
            netns: Some(cp_ns.clone()),
            address: CTR_IP,
            ..Options::default()
        },
        &NodeIpam::seed(),
    )
    .unwrap_or_else(|e| panic!("the control plane with node IPAM did not start: {e}"));
    eprintln!("control plane up after {:.1?}", started.elapsed());

    // Step 1: the Node gets a /24 of 10.244.0.0/16 from the node-ipam controller.
    cp.add_ready_node(NODE, NODE_IP)
        .unwrap_or_else(|e| panic!("creating Node {NODE}: {e}"));
    let pod_cidr = until(
        &format!("Node {NODE}'s spec.podCIDR from the node-ipam controller"),
        SYNC_TIMEOUT,
        || {
            let cidr = cp
                .kubectl(&["get", "node", NODE, "-o", "jsonpath={.spec.podCIDR}"])
                .map_err(|e| e.to_string())?;
            if cidr.is_empty() {
                Err("no podCIDR yet".into())
            } else {
                Ok(cidr)
            }
        },
    );
    assert!(
        is_seed_pod_cidr(&pod_cidr),
        "Node {NODE}'s podCIDR {pod_cidr:?} is not a /24 of {SEED_CLUSTER_CIDR}"
    );
    eprintln!("step 1: Node {NODE} has podCIDR {pod_cidr}");

    // Step 2: kube-proxy in the node's namespace, flags only, as user system:kube-proxy
    // (bootstrap RBAC binds it to system:node-proxier, as kubeadm's kube-proxy is).
    let kubeconfig = cp
        .write_kubeconfig("kube-proxy.kubeconfig", "system:kube-proxy", &[])
        .unwrap_or_else(|e| panic!("kube-proxy's kubeconfig: {e}"));
    let kube_proxy = cp.kube_proxy_path();
    let kube_proxy_args = [
        kube_proxy.display().to_string(),
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--hostname-override={NODE}"),
        "--proxy-mode=iptables".into(),
        format!("--cluster-cidr={SEED_CLUSTER_CIDR}"),
        "--masquerade-all".into(),
        // nf_conntrack_max and the module's hashsize are global: leave them.
        "--conntrack-max-per-core=0".into(),
        "--conntrack-tcp-timeout-established=0".into(),
        "--conntrack-tcp-timeout-close-wait=0".into(),
        // Upstream's -999 would shield it from the machine's OOM killer.
        "--oom-score-adj=0".into(),
        "--v=2".into(),
    ];
    let args: Vec<&str> = kube_proxy_args.iter().map(String::as_str).collect();
    lab.spawn_in("kube-proxy", &node_ns, &args, "kube-proxy.log");
    eprintln!("step 2: kube-proxy started in {node_ns}");

    // Step 3: kube-proxy programs the `kubernetes` Service (10.96.0.1 -> the apiserver).
    until(
        "kube-proxy programming the kubernetes Service (10.96.0.1) in KUBE-SERVICES",
        SYNC_TIMEOUT,
        || {
            lab.check_running("kube-proxy", "kube-proxy.log");
            let nat = lab.node_nat();
            if nat.contains("-A KUBE-SERVICES -d 10.96.0.1/32") {
                Ok(())
            } else {
                Err(format!("nat table:\n{nat}"))
            }
        },
    );
    eprintln!("step 3: kube-proxy programmed the kubernetes Service");

    // Step 4: two pods through the reference plugins, on the node's podCIDR.
    let conflist = json!({
        "cniVersion": "1.0.0",
        "name": "cbr0",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": true,
                "ipMasq": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": pod_cidr}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    // Not /var/lib/cni/networks: the test's own directory.
                    "dataDir": lab.dir.join("cni-ipam"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": true}},
        ],
    });
    std::fs::write(lab.dir.join("10-cbr0.conflist"), conflist.to_string())
        .expect("writing the conflist");
    lab.conflist = Some(conflist);
    let a_ip = lab.add_pod("a");
    let b_ip = lab.add_pod("b");
    let gateway = {
        let o = a_ip.octets();
        Ipv4Addr::new(o[0], o[1], o[2], 1)
    };
    for ip in [a_ip, b_ip] {
        assert_eq!(
            format!("{}/24", Ipv4Addr::from(u32::from(ip) & 0xffff_ff00)),
            pod_cidr,
            "pod address {ip} is outside the node's podCIDR {pod_cidr}"
        );
    }
    let cni0 = lab
        .exec_in("node", &["ip", "-4", "-o", "addr", "show", "dev", "cni0"])
        .unwrap_or_else(|e| panic!("cni0 in the node namespace: {e}"));
    assert!(
        cni0.contains(&format!("{gateway}/24")),
        "cni0 lacks the gateway {gateway}: {cni0}"
    );
    eprintln!("step 4: pods a={a_ip} b={b_ip} on cni0 ({gateway})");

    // Step 5: a pod reaches the apiserver through the kubernetes Service.
    let readyz = until(
        "pod a reaching the apiserver through https://10.96.0.1/readyz",
        SYNC_TIMEOUT,
        || lab.curl("a", "https://10.96.0.1/readyz", &["-k"]),
    );
    assert_eq!(
        readyz.trim(),
        "ok",
        "the apiserver's /readyz through 10.96.0.1"
    );
    eprintln!("step 5: pod a reached the apiserver through 10.96.0.1");

    // Step 6: the backend in pod b, reached directly on the bridge first.
    let www = lab.dir.join("www");
    std::fs::create_dir_all(&www).expect("www");
    std::fs::write(www.join("index.html"), format!("{MARKER}\n")).expect("index.html");
    let www_arg = www.display().to_string();
    let b_ns = lab.ns("b");
    let port = BACKEND_PORT.to_string();
    let bind = b_ip.to_string();
    lab.spawn_in(
        "backend",
        &b_ns,
        &[
            "python3",
            "-m",
            "http.server",
            &port,
            "--bind",
            &bind,
            "--directory",
            &www_arg,
        ],
        "backend.log",
    );
    let direct = format!("http://{b_ip}:{BACKEND_PORT}/");
    until(
        "pod a reaching pod b's backend directly",
        SYNC_TIMEOUT,
        || {
            lab.check_running("backend", "backend.log");
            lab.curl("a", &direct, &[])
        },
    );
    eprintln!("step 6: the backend in pod b answers pod a directly");

    // Step 7: a ClusterIP Service and its EndpointSlice through the API.
    let objects = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: kp-web\n  namespace: default\n\
         spec:\n  type: ClusterIP\n  ports:\n  - {{name: http, port: 80, protocol: TCP, \
         targetPort: {BACKEND_PORT}}}\n---\napiVersion: discovery.k8s.io/v1\nkind: \
         EndpointSlice\nmetadata:\n  name: kp-web-1\n  namespace: default\n  labels:\n    \
         kubernetes.io/service-name: kp-web\n    endpointslice.kubernetes.io/managed-by: \
         crs-test\naddressType: IPv4\nendpoints:\n- addresses: [\"{b_ip}\"]\n  conditions: \
         {{ready: true}}\n  nodeName: {NODE}\nports:\n- {{name: http, port: {BACKEND_PORT}, \
         protocol: TCP}}\n"
    );
    cp.kubectl_input(&["apply", "-f", "-"], Some(&objects))
        .unwrap_or_else(|e| panic!("creating Service kp-web and its EndpointSlice: {e}"));
    let cluster_ip: Ipv4Addr = cp
        .kubectl(&[
            "get",
            "service",
            "kp-web",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ])
        .unwrap_or_else(|e| panic!("Service kp-web's clusterIP: {e}"))
        .parse()
        .unwrap_or_else(|e| panic!("Service kp-web's clusterIP: {e}"));
    let service_rule = format!("-A KUBE-SERVICES -d {cluster_ip}/32");
    let dnat = format!("--to-destination {b_ip}:{BACKEND_PORT}");
    until(
        &format!("kube-proxy programming Service kp-web ({cluster_ip}) -> {b_ip}:{BACKEND_PORT}"),
        SYNC_TIMEOUT,
        || {
            lab.check_running("kube-proxy", "kube-proxy.log");
            let nat = lab.node_nat();
            if nat.contains(&service_rule) && nat.contains(&dnat) {
                Ok(())
            } else {
                Err(format!("nat table:\n{nat}"))
            }
        },
    );
    eprintln!("step 7: KUBE-SERVICES has {cluster_ip}");

    // Step 8: pod a through the ClusterIP, masqueraded to the node's cni0 address.
    let url = format!("http://{cluster_ip}/");
    let mut attempts = 0;
    let body = until(
        &format!("pod a reaching {url} (Service kp-web)"),
        Duration::from_secs(30),
        || {
            attempts += 1;
            lab.curl("a", &url, &[])
        },
    );
    assert_eq!(body.trim(), MARKER, "the body of {url} from pod a");
    let served = tail(&lab.dir.join("backend.log"), 20);
    assert!(
        served
            .lines()
            .any(|l| l.starts_with(&format!("{gateway} ")) && l.contains("\"GET / ")),
        "the backend did not see the request from the node's {gateway} (--masquerade-all):\n\
         {served}"
    );
    eprintln!("step 8: pod a got the backend through {cluster_ip} ({attempts} attempts)");

    // kube-proxy's writes outside its netns: none to the root namespace.
    let log = std::fs::read_to_string(lab.dir.join("kube-proxy.log")).unwrap_or_default();
    let mut tried = String::new();
    for line in log.lines().filter(|l| {
        let l = l.to_ascii_lowercase();
        // Not the flags it echoes at start (--conntrack-*, --oom-score-adj).
        !l.contains("] flag: --")
            && [
                "sysctl",
                "modprobe",
                "hashsize",
                "conntrack",
                "oom",
                "br_netfilter",
                "br-nf",
            ]
            .iter()
            .any(|w| l.contains(w))
    }) {
        let _ = writeln!(tried, "  {line}");
    }
    eprintln!("kube-proxy's log on sysctls, modules, conntrack and OOM:\n{tried}");
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with('W') || l.starts_with('E'))
        .collect();
    eprintln!(
        "kube-proxy's warnings and errors:\n  {}",
        warnings.join("\n  ")
    );
    for global in ["nf_conntrack_max", "hashsize", "modprobe"] {
        assert!(
            !tried.contains(global),
            "kube-proxy tried {global}, outside its namespace:\n{tried}"
        );
    }
    let root_after = root_snapshot();
    assert_eq!(
        root_before, root_after,
        "the root namespace's sysctls or rules changed while kube-proxy and the plugins ran"
    );

    // Step 9: deleting the Service removes its rules.
    cp.kubectl(&["delete", "service", "kp-web", "--wait=true"])
        .unwrap_or_else(|e| panic!("deleting Service kp-web: {e}"));
    until(
        &format!("kube-proxy removing Service kp-web's rules ({cluster_ip})"),
        SYNC_TIMEOUT,
        || {
            lab.check_running("kube-proxy", "kube-proxy.log");
            let nat = lab.node_nat();
            if nat.contains(&cluster_ip.to_string()) {
                Err(format!("nat table:\n{nat}"))
            } else {
                Ok(())
            }
        },
    );
    assert!(
        lab.curl("a", &url, &["--max-time", "2"]).is_err(),
        "{url} still answers after Service kp-web was deleted"
    );
    cp.kubectl(&["delete", "endpointslice", "kp-web-1"])
        .unwrap_or_else(|e| panic!("deleting EndpointSlice kp-web-1: {e}"));
    eprintln!("step 9: Service kp-web's rules are gone");

    // Step 10: CNI DEL of both pods through the plugins, the last one first.
    let errors = lab.del_pods();
    assert!(errors.is_empty(), "CNI DEL: {}", errors.join("; "));
    let leases = std::fs::read_dir(lab.dir.join("cni-ipam").join("cbr0"))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.parse::<Ipv4Addr>().is_ok())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    assert!(
        leases.is_empty(),
        "host-local still holds {leases:?} after CNI DEL"
    );
    let veths = lab
        .exec_in("node", &["ip", "-o", "link", "show", "type", "veth"])
        .unwrap_or_else(|e| panic!("the node's veths: {e}"));
    assert!(
        veths.lines().all(|l| l.contains("kp-node@")),
        "the pods' veths are still on the node after CNI DEL:\n{veths}"
    );
    let nat = lab.node_nat();
    assert!(
        !nat.lines().any(|l| l.starts_with("-A CNI-")),
        "the bridge plugin's ipMasq rules are still in the node's nat table after CNI DEL:\n{nat}"
    );
    eprintln!(
        "step 10: both pods deleted through the plugins; done in {:.1?}",
        started.elapsed()
    );
    drop(cp);
}
