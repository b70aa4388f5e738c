// SPDX-License-Identifier: Apache-2.0

//! Two nodes on etcd, as the binaries run them: a lab underlay namespace (a bridge,
//! 192.168.10.0/24, etcd on 192.168.10.1 and the operator), two node namespaces wired to
//! it, a cilium-agent in each with `kvstore=etcd`, native routing and
//! auto-direct-node-routes. Pods are created with the cilium-cni binary. Checks: the
//! operator's /24s, pod-to-pod across nodes, one identity for one label set on both nodes,
//! remote identities in the ipcache, a policy on one node that tells apart two pods of the
//! other node, and a node leaving (its route goes). Needs root and etcd; everything is made
//! under a `crs<pid>c` prefix and removed on drop (processes killed by pid).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cilium_bpf::testing::{is_root_or_skip, run};
use cilium_core::kvstore::etcd::EtcdServer;
use serde_json::Value;

const ETCD: &str = "192.168.10.1:2379";

fn sibling(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_cilium-cni")).with_file_name(name);
    assert!(
        p.exists(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        p.display()
    );
    p
}

struct NodeNs {
    name: &'static str,
    ns: String,
    ip: Ipv4Addr,
    bpffs: PathBuf,
    state: PathBuf,
    agent: Option<Child>,
}

impl NodeNs {
    fn socket(&self) -> PathBuf {
        self.state.join("cilium.sock")
    }

    fn api(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        cilium_agent::client::Client::new(&self.socket().to_string_lossy())
            .call(method, path, body)
            .map_err(|e| e.0)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.state.join("agent.log")).unwrap_or_default()
    }
}

/// Everything the test made; removed on drop, even on panic.
struct Lab {
    prefix: String,
    lan: String,
    nodes: Vec<NodeNs>,
    namespaces: Vec<String>,
    etcd: Option<EtcdServer>,
    operator: Option<Child>,
    dir: PathBuf,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut a) = n.agent.take() {
                let _ = a.kill();
                let _ = a.wait();
            }
        }
        if let Some(mut o) = self.operator.take() {
            let _ = o.kill();
            let _ = o.wait();
        }
        self.etcd.take();
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        for n in &self.nodes {
            let _ = Command::new("umount").arg(&n.bpffs).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Lab {
    fn add_netns(&mut self, name: &str) {
        run(&["ip", "netns", "add", name]);
        self.namespaces.push(name.to_owned());
        run(&["ip", "-n", name, "link", "set", "lo", "up"]);
    }

    fn new() -> Lab {
        let prefix = format!("crs{}c", std::process::id());
        let dir = std::env::temp_dir().join(format!("{prefix}-lab"));
        std::fs::create_dir_all(&dir).expect("lab dir");
        let mut lab = Lab {
            lan: format!("{prefix}-lan"),
            prefix,
            nodes: Vec::new(),
            namespaces: Vec::new(),
            etcd: None,
            operator: None,
            dir,
        };
        let lan = lab.lan.clone();
        lab.add_netns(&lan);
        run(&["ip", "-n", &lan, "link", "add", "br0", "type", "bridge"]);
        run(&[
            "ip",
            "-n",
            &lan,
            "addr",
            "add",
            "192.168.10.1/24",
            "dev",
            "br0",
        ]);
        run(&["ip", "-n", &lan, "link", "set", "br0", "up"]);
        for (i, name) in ["k8s-w1", "k8s-w2"].into_iter().enumerate() {
            let ns = format!("{}-{name}", lab.prefix);
            lab.add_netns(&ns);
            let ip = Ipv4Addr::new(192, 168, 10, 101 + i as u8);
            let port = format!("p{i}");
            run(&[
                "ip", "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &port,
                "netns", &lan,
            ]);
            run(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                "eth0",
            ]);
            run(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
            run(&[
                "ip", "-n", &lan, "link", "set", &port, "master", "br0", "up",
            ]);
            let bpffs = lab.dir.join(format!("{name}-bpffs"));
            let state = lab.dir.join(format!("{name}-state"));
            std::fs::create_dir_all(&bpffs).expect("bpffs dir");
            std::fs::create_dir_all(&state).expect("state dir");
            run(&["mount", "-t", "bpf", "bpf", bpffs.to_str().expect("utf-8")]);
            lab.nodes.push(NodeNs {
                name,
                ns,
                ip,
                bpffs,
                state,
                agent: None,
            });
        }
        let wrapper = vec!["ip".to_owned(), "netns".into(), "exec".into(), lan.clone()];
        lab.etcd = Some(
            EtcdServer::start(
                &lab.dir.join("etcd"),
                ETCD.parse().expect("addr"),
                "192.168.10.1:2380".parse().expect("addr"),
                &wrapper,
            )
            .expect("start etcd in the lab"),
        );
        let log = std::fs::File::create(lab.dir.join("operator.log")).expect("log");
        lab.operator = Some(
            Command::new("ip")
                .args(["netns", "exec", &lan])
                .arg(sibling("cilium-operator"))
                .args([
                    &format!("--kvstore-opt=etcd.address={ETCD}"),
                    "--cluster-pool-ipv4-cidr=172.20.0.0/16",
                    "--cluster-pool-ipv4-mask-size=24",
                    "--leader-election-lease-duration=5s",
                ])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start the operator"),
        );
        lab
    }

    fn start_agent(&mut self, i: usize, tunnel: bool) {
        let n = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(n.state.join("agent.log"))
            .expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", &n.ns])
            .arg(sibling("cilium-agent"))
            .arg(format!("--bpf-root={}", n.bpffs.display()))
            .arg(format!("--state-dir={}", n.state.display()))
            .arg(format!("--socket-path={}", n.socket().display()))
            .args([
                "--kvstore=etcd",
                &format!("--kvstore-opt=etcd.address={ETCD}"),
                "--kvstore-lease-ttl=3s",
                &format!("--k8s-node-name={}", n.name),
                &format!("--ipv4-node={}", n.ip),
                "--ipv4-native-routing-cidr=172.20.0.0/16",
            ])
            .args(if tunnel {
                ["--routing-mode=tunnel", "--auto-direct-node-routes=false"]
            } else {
                ["--routing-mode=native", "--auto-direct-node-routes=true"]
            })
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn the agent");
        n.agent = Some(child);
    }

    fn wait_agent(&mut self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let n = &mut self.nodes[i];
            if n.api("GET", "/healthz", None).is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = n.agent.as_mut().map(Child::try_wait) {
                panic!("agent {} exited with {status}: {}", n.name, n.log());
            }
            assert!(
                Instant::now() < deadline,
                "agent {} never served: {}",
                n.name,
                n.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn pod_ns(&self, pod: &str) -> String {
        format!("{}-{pod}", self.prefix)
    }

    /// Registers the pod and creates it with cilium-cni on node `i`; returns its IP.
    fn add_pod(&mut self, i: usize, pod: &str, app: &str) -> Ipv4Addr {
        let ns = self.pod_ns(pod);
        self.add_netns(&ns);
        let n = &self.nodes[i];
        n.api(
            "PUT",
            &format!("/pod/default/{pod}"),
            Some(&serde_json::json!({"metadata": {"name": pod, "namespace": "default", "labels": {"app": app}}})),
        )
        .expect("register the pod");
        let netconf = serde_json::json!({
            "cniVersion": "1.0.0", "name": "cilium", "type": "cilium-cni", "agent-socket": n.socket(),
        })
        .to_string();
        let netns = format!("/run/netns/{ns}");
        let out = cilium_cni::runtime::invoke(
            Path::new(env!("CARGO_BIN_EXE_cilium-cni")),
            &["ip", "netns", "exec", &n.ns],
            &cilium_cni::runtime::Invocation {
                command: "ADD",
                container_id: &format!("ctr-{pod}"),
                netns: &netns,
                ifname: "eth0",
                pod: ("default", pod),
                netconf: &netconf,
            },
        )
        .expect("run cilium-cni");
        assert!(
            out.success,
            "ADD {pod}: {} {}\n{}",
            out.output,
            out.stderr,
            n.log()
        );
        cilium_cni::runtime::result_ipv4(&out.output).expect("an IPv4 result")
    }

    fn identity_of(&self, i: usize, pod: &str) -> u64 {
        let ep = self.nodes[i]
            .api("GET", &format!("/endpoint/pod-name:default:{pod}"), None)
            .expect("endpoint");
        ep["status"]["identity"]["id"].as_u64().expect("identity")
    }
}

/// Whether a TCP connection from pod `from` to `to:port` gets its echo back.
fn tcp_reaches(lab: &Lab, from: &str, to: Ipv4Addr, port: u16) -> bool {
    cilium_bpf::testing::tcp_echo_reaches(&lab.pod_ns(from), to, port)
}

/// Retries `tcp_reaches` for up to 15 s (routes and ipcache entries arrive through etcd).
fn eventually_reaches(lab: &Lab, from: &str, to: Ipv4Addr, port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if tcp_reaches(lab, from, to, port) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

fn echo_server(lab: &Lab, pod: &str, ip: Ipv4Addr, port: u16) {
    cilium_bpf::testing::tcp_echo_server(&lab.pod_ns(pod), ip, port);
}

/// Packets the node's VXLAN device received.
fn vxlan_rx(lab: &Lab, i: usize) -> u64 {
    let out = Command::new("ip")
        .args([
            "-n",
            &lab.nodes[i].ns,
            "-s",
            "-j",
            "link",
            "show",
            "cilium_vxlan",
        ])
        .output()
        .expect("ip link");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v[0]["stats64"]["rx"]["packets"].as_u64().unwrap_or(0)
}

#[test]
fn privileged_two_nodes_on_etcd() {
    two_nodes("privileged_two_nodes_on_etcd", false);
}

#[test]
fn privileged_two_nodes_on_etcd_tunnel() {
    two_nodes("privileged_two_nodes_on_etcd_tunnel", true);
}

/// One lab at a time (each runs etcd on the same lab address).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn two_nodes(test: &str, tunnel: bool) {
    if !is_root_or_skip(test) {
        return;
    }
    if Command::new("etcd").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "etcd is not installed");
        eprintln!("{test}: skipped: etcd not installed");
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::new();
    lab.start_agent(0, tunnel);
    lab.start_agent(1, tunnel);
    lab.wait_agent(0);
    lab.wait_agent(1);

    // The operator gave each node a /24 of 172.20.0.0/16; each knows the other.
    let pool: ipnet::Ipv4Net = "172.20.0.0/16".parse().unwrap();
    let mut cidrs = Vec::new();
    for n in &lab.nodes {
        let health = n.api("GET", "/healthz", None).expect("healthz");
        assert_eq!(health["kvstore"]["state"], "Ok", "{health}");
        let cidr: ipnet::Ipv4Net = health["node-state"]["node"]["cidr"]
            .as_str()
            .expect("cidr")
            .parse()
            .expect("a CIDR");
        assert!(pool.contains(&cidr) && cidr.prefix_len() == 24, "{cidr}");
        cidrs.push(cidr);
    }
    assert_ne!(cidrs[0], cidrs[1]);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let nodes = lab.nodes[0]
            .api("GET", "/cluster/nodes", None)
            .expect("nodes");
        if nodes["nodes"].as_array().map_or(0, Vec::len) == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "k8s-w1 never learned k8s-w2: {nodes}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Pods on both nodes.
    let curl = lab.add_pod(0, "curl", "curl");
    let _other = lab.add_pod(0, "other", "other");
    let web_local = lab.add_pod(0, "web-a", "web");
    let web = lab.add_pod(1, "web-b", "web");
    assert!(cidrs[0].contains(&curl) && cidrs[0].contains(&web_local));
    assert!(cidrs[1].contains(&web));
    assert_eq!(
        lab.identity_of(0, "web-a"),
        lab.identity_of(1, "web-b"),
        "one label set, one number on every node"
    );
    assert_ne!(lab.identity_of(0, "curl"), lab.identity_of(0, "other"));

    // Across nodes, both ways.
    echo_server(&lab, "web-b", web, 8080);
    echo_server(&lab, "web-a", web_local, 8080);
    let rx_before = if tunnel { vxlan_rx(&lab, 1) } else { 0 };
    assert!(
        eventually_reaches(&lab, "curl", web, 8080),
        "curl (w1) -> web-b (w2)"
    );
    assert!(
        eventually_reaches(&lab, "web-b", web_local, 8080),
        "web-b (w2) -> web-a (w1)"
    );
    if tunnel {
        // Through the overlay, not the underlay's routes: there are none to pod CIDRs.
        assert!(
            vxlan_rx(&lab, 1) > rx_before,
            "k8s-w2 received nothing over VXLAN"
        );
        let routes = String::from_utf8_lossy(
            &Command::new("ip")
                .args(["-n", &lab.nodes[0].ns, "route"])
                .output()
                .unwrap()
                .stdout,
        )
        .into_owned();
        assert!(
            !routes.contains(&cidrs[1].to_string()),
            "a direct route in tunnel mode: {routes}"
        );
    }

    // k8s-w2's datapath knows curl's identity.
    let curl_id = lab.identity_of(0, "curl");
    let out = Command::new(sibling("cilium-dbg"))
        .arg(format!("--bpf-root={}", lab.nodes[1].bpffs.display()))
        .args(["bpf", "ipcache", "list"])
        .output()
        .expect("cilium-dbg");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{curl}/32")))
        .unwrap_or_else(|| panic!("no ipcache entry for curl {curl}: {text}"));
    assert!(line.contains(&format!("identity={curl_id} ")), "{line}");
    assert!(line.contains("tunnelendpoint=192.168.10.101"), "{line}");

    // A policy on k8s-w2: web accepts only curl, which lives on the other node.
    let policy = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: web-from-curl\nspec:\n  endpointSelector:\n    matchLabels:\n      app: web\n  ingress:\n  - fromEndpoints:\n    - matchLabels:\n        app: curl\n";
    cilium_agent::client::Client::new(&lab.nodes[1].socket().to_string_lossy())
        .call_raw("PUT", "/policy", policy.as_bytes().to_vec())
        .expect("import the policy");
    assert!(
        tcp_reaches(&lab, "curl", web, 8080),
        "curl is allowed across nodes"
    );
    assert!(
        !tcp_reaches(&lab, "other", web, 8080),
        "other is denied across nodes"
    );

    // A service on k8s-w1 whose only backend lives on k8s-w2: reached across nodes (through
    // the overlay in tunnel mode), with the policy above still applied to the backend.
    let spec = serde_json::json!({
        "frontend-address": {"ip": "10.96.0.20", "port": 80, "protocol": "TCP"},
        "backend-addresses": [{"ip": web.to_string(), "port": 8080}],
        "flags": {"type": "ClusterIP", "name": "web", "namespace": "default"},
    });
    lab.nodes[0]
        .api("PUT", "/service/0", Some(&spec))
        .expect("create the service");
    let vip = Ipv4Addr::new(10, 96, 0, 20);
    assert!(
        tcp_reaches(&lab, "curl", vip, 80),
        "curl -> service -> web-b"
    );
    assert!(
        !tcp_reaches(&lab, "other", vip, 80),
        "other is still denied by web-b's policy"
    );

    if tunnel {
        return;
    }
    // k8s-w2 goes away: once its session lapses, k8s-w1 drops its route and forgets it.
    let route = |lab: &Lab| {
        String::from_utf8_lossy(
            &Command::new("ip")
                .args([
                    "-n",
                    &lab.nodes[0].ns,
                    "route",
                    "show",
                    &cidrs[1].to_string(),
                ])
                .output()
                .expect("ip route")
                .stdout,
        )
        .into_owned()
    };
    assert!(
        route(&lab).contains("via 192.168.10.102"),
        "{}",
        route(&lab)
    );
    if let Some(mut a) = lab.nodes[1].agent.take() {
        let _ = a.kill();
        let _ = a.wait();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !route(&lab).trim().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the route to the departed node stayed: {}\n{}",
            route(&lab),
            lab.nodes[0].log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let nodes = lab.nodes[0]
        .api("GET", "/cluster/nodes", None)
        .expect("nodes");
    assert_eq!(nodes["nodes"].as_array().map(Vec::len), Some(1), "{nodes}");
}
