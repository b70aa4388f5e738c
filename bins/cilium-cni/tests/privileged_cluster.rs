// SPDX-License-Identifier: Apache-2.0

//! Two nodes on etcd, as the binaries run them: a lab underlay namespace (a bridge,
//! 192.168.10.0/24, etcd on 192.168.10.1 and the operator), two node namespaces wired to
//! it, a cilium-agent in each with `kvstore=etcd` (etcd with client certificates, reached
//! through `kvstore-opt etcd.config=<file>` as Cilium reads it), native routing and
//! auto-direct-node-routes. Pods are created with the cilium-cni binary. Checks: the
//! operator's /24s, pod-to-pod across nodes, one identity for one label set on both nodes,
//! remote identities in the ipcache, a policy on one node that tells apart two pods of the
//! other node, and a node leaving (its route goes). Needs root and etcd; everything is made
//! under a `crs<pid>c` prefix and removed on drop (processes killed by pid).

#[macro_use]
mod common;

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use cilium_bpf::testing::is_root_or_skip;
use cilium_core::kvstore::etcd::EtcdServer;
use common::{Underlay, sibling};
use serde_json::Value;

const ETCD: &str = "192.168.10.1:2379";

/// Everything the test made; removed on drop, even on panic (etcd first, then the
/// underlay with the agents and the operator).
struct Lab {
    _etcd: EtcdServer,
    base: Underlay,
}

deref_to_underlay!(Lab);

impl Lab {
    fn new() -> Lab {
        let mut base = Underlay::new('c', &["k8s-w1", "k8s-w2"]);
        let wrapper = vec![
            "ip".to_owned(),
            "netns".into(),
            "exec".into(),
            base.lan.clone(),
        ];
        let tls = etcd_tls(&base.dir);
        let etcd = EtcdServer::start_binary_tls(
            std::path::Path::new("etcd"),
            &base.dir.join("etcd"),
            ETCD.parse().expect("addr"),
            "192.168.10.1:2380".parse().expect("addr"),
            &wrapper,
            Some(tls),
        )
        .expect("start etcd in the lab");
        base.spawn_in_lan(
            &sibling("cilium-operator"),
            &[
                kvstore_opt(&base.dir),
                "--cluster-pool-ipv4-cidr=172.20.0.0/16".into(),
                "--cluster-pool-ipv4-mask-size=24".into(),
                "--leader-election-lease-duration=5s".into(),
            ],
            "operator.log",
        );
        Lab { _etcd: etcd, base }
    }

    fn start_agent(&mut self, i: usize, tunnel: bool) {
        let mut args = vec![
            "--kvstore=etcd".to_owned(),
            kvstore_opt(&self.base.dir),
            "--kvstore-lease-ttl=3s".into(),
            "--ipv4-native-routing-cidr=172.20.0.0/16".into(),
        ];
        if tunnel {
            args.extend([
                "--routing-mode=tunnel".into(),
                "--auto-direct-node-routes=false".into(),
            ]);
        } else {
            args.extend([
                "--routing-mode=native".into(),
                "--auto-direct-node-routes=true".into(),
            ]);
        }
        self.base.start_agent(i, &args);
    }

    /// Registers the pod and creates it with cilium-cni on node `i`; returns its IP.
    fn add_pod(&mut self, i: usize, pod: &str, app: &str) -> Ipv4Addr {
        self.nodes[i]
            .api(
                "PUT",
                &format!("/pod/default/{pod}"),
                Some(&serde_json::json!({"metadata": {"name": pod, "namespace": "default", "labels": {"app": app}}})),
            )
            .expect("register the pod");
        self.add_pod_netns(i, pod)
    }

    fn identity_of(&self, i: usize, pod: &str) -> u64 {
        let ep = self.nodes[i]
            .api("GET", &format!("/endpoint/pod-name:default:{pod}"), None)
            .expect("endpoint");
        ep["status"]["identity"]["id"].as_u64().expect("identity")
    }
}

/// etcd's TLS as production clusters run it: a CA, etcd's certificate for its address,
/// a client certificate for the agents and the operator (`--client-cert-auth`), and the
/// `etcd.config` file they read (Cilium's keys), all under `dir`.
fn etcd_tls(dir: &std::path::Path) -> cilium_core::kvstore::etcd::EtcdServerTls {
    use cilium_k8s::pki::CertificateAuthority;
    let tls = dir.join("etcd-tls");
    std::fs::create_dir_all(&tls).expect("tls dir");
    let write = |name: &str, text: &str| {
        let p = tls.join(name);
        std::fs::write(&p, text).expect("write");
        p
    };
    let ca = CertificateAuthority::new("etcd CA").expect("CA");
    let server = ca
        .serving(&["etcd"], &["192.168.10.1".parse().expect("ip")])
        .expect("server certificate");
    let client = ca.client("cilium", &[]).expect("client certificate");
    let out = cilium_core::kvstore::etcd::EtcdServerTls {
        ca_file: write("ca.crt", ca.cert_pem()),
        cert_file: write("server.crt", &server.cert_pem),
        key_file: write("server.key", &server.key_pem),
        client_cert_file: write("client.crt", &client.cert_pem),
        client_key_file: write("client.key", &client.key_pem),
    };
    write(
        "etcd.config",
        &format!(
            "endpoints:\n- https://{ETCD}\ntrusted-ca-file: {}\ncert-file: {}\nkey-file: {}\n",
            out.ca_file.display(),
            out.client_cert_file.display(),
            out.client_key_file.display()
        ),
    );
    out
}

/// `--kvstore-opt` naming the etcd.config file [`etcd_tls`] wrote.
fn kvstore_opt(dir: &std::path::Path) -> String {
    format!(
        "--kvstore-opt=etcd.config={}",
        dir.join("etcd-tls/etcd.config").display()
    )
}

/// Whether a TCP connection from pod `from` to `to:port` gets its echo back.
fn tcp_reaches(lab: &Lab, from: &str, to: Ipv4Addr, port: u16) -> bool {
    cilium_bpf::testing::tcp_echo_reaches(&lab.pod_ns(from), to, port)
}

/// Retries `tcp_reaches` for up to 15 s (routes and ipcache entries arrive through etcd).
fn eventually_reaches(lab: &Lab, from: &str, to: Ipv4Addr, port: u16) -> bool {
    lab.reaches_within(from, to, port, true, 15)
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
    // The node-device programs are on each node's eth0: traffic from the other node to a
    // pod passes the pod's ingress policy there (the policy checks below go through it).
    for n in &lab.nodes {
        assert!(
            n.log()
                .contains("attached the node-device programs\" device=eth0"),
            "{}",
            n.log()
        );
    }

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
