// SPDX-License-Identifier: Apache-2.0

//! One node end to end, as a container runtime drives it: the cilium-agent binary runs in a
//! node namespace (private bpffs, state dir, socket), pods are created by invoking the
//! cilium-cni binary with the CNI environment and a netconf on stdin, and cilium-dbg reads
//! the result. Covers pod connectivity, a policy that denies one pair, DEL/CHECK, and the
//! restart-safety scenario: SIGKILL during 100 concurrent pod creations, then a restart,
//! with a TCP stream running throughout. Needs root; everything is removed on drop.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cilium_bpf::testing::{is_root_or_skip, run, spawn_in_netns};
use common::sibling;
use serde_json::Value;

/// A binary of the workspace, next to cilium-cni.
/// The node: namespaces, bpffs, state dir and the agent process; all removed on drop.
#[derive(Debug)]
struct Node {
    prefix: String,
    node: String,
    bpffs: PathBuf,
    state: PathBuf,
    socket: PathBuf,
    agent: Option<Child>,
    namespaces: Mutex<Vec<String>>,
}

const CIDR: &str = "172.20.1.0/24";

impl Node {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let prefix = format!(
            "crs{}a{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let bpffs = std::env::temp_dir().join(format!("{prefix}-bpffs"));
        let state = std::env::temp_dir().join(format!("{prefix}-state"));
        let node = Node {
            node: format!("{prefix}-node"),
            socket: state.join("cilium.sock"),
            prefix,
            bpffs,
            state,
            agent: None,
            namespaces: Mutex::new(Vec::new()),
        };
        std::fs::create_dir_all(&node.bpffs).expect("bpffs dir");
        std::fs::create_dir_all(&node.state).expect("state dir");
        run(&[
            "mount",
            "-t",
            "bpf",
            "bpf",
            node.bpffs.to_str().expect("utf-8"),
        ]);
        node.add_netns(&node.node);
        run(&["ip", "-n", &node.node, "link", "set", "lo", "up"]);
        node
    }

    fn add_netns(&self, name: &str) {
        run(&["ip", "netns", "add", name]);
        self.namespaces.lock().expect("lock").push(name.to_owned());
    }

    fn start_agent(&mut self) {
        self.start_agent_with(&[]);
    }

    /// The agent with more flags.
    fn start_agent_with(&mut self, extra: &[&str]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.state.join("agent.log"))
            .expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.node])
            .arg(sibling("cilium-agent"))
            .arg(format!("--bpf-root={}", self.bpffs.display()))
            .arg(format!("--state-dir={}", self.state.display()))
            .arg(format!("--socket-path={}", self.socket.display()))
            .args([
                "--ipv4-node=192.168.10.101",
                &format!("--ipv4-range={CIDR}"),
                "--k8s-node-name=k8s-w1",
                "--enable-hubble=true",
                "--hubble-event-buffer-capacity=1023",
            ])
            .arg(format!(
                "--hubble-socket-path={}",
                self.state.join("hubble.sock").display()
            ))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn the agent");
        self.agent = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.api("GET", "/healthz", None).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "agent never served: {}",
                self.log()
            );
            if let Some(Ok(Some(status))) = self.agent.as_mut().map(Child::try_wait) {
                panic!("agent exited with {status}: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill_agent(&mut self) {
        if let Some(mut child) = self.agent.take() {
            // `ip netns exec` execs the agent: the child's pid is the agent's.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.state.join("agent.log")).unwrap_or_default()
    }

    fn api(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        cilium_agent::client::Client::new(&self.socket.to_string_lossy())
            .call(method, path, body)
            .map_err(|e| e.0)
    }

    fn netconf(&self, version: &str) -> String {
        serde_json::json!({
            "cniVersion": version,
            "name": "cilium",
            "type": "cilium-cni",
            "agent-socket": self.socket,
        })
        .to_string()
    }

    /// Runs cilium-cni as a runtime does; returns (success, stdout).
    fn cni(&self, command: &str, container: &str, pod: &str, version: &str) -> (bool, Value) {
        let netns = format!("/run/netns/{}-{pod}", self.prefix);
        let netconf = self.netconf(version);
        let out = cilium_cni::runtime::invoke(
            Path::new(env!("CARGO_BIN_EXE_cilium-cni")),
            &["ip", "netns", "exec", &self.node],
            &cilium_cni::runtime::Invocation {
                command,
                container_id: container,
                netns: &netns,
                ifname: "eth0",
                pod: ("default", pod),
                netconf: &netconf,
            },
        )
        .expect("run cilium-cni");
        (out.success, out.output)
    }

    fn add_pod(&self, pod: &str, labels: &[(&str, &str)]) -> Ipv4Addr {
        self.add_netns(&format!("{}-{pod}", self.prefix));
        let labels: serde_json::Map<String, Value> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
            .collect();
        self.api(
            "PUT",
            &format!("/pod/default/{pod}"),
            Some(&serde_json::json!({"metadata": {"name": pod, "namespace": "default", "labels": labels}})),
        )
        .expect("register the pod");
        let (ok, result) = self.cni("ADD", &format!("ctr-{pod}"), pod, "1.0.0");
        assert!(ok, "ADD {pod}: {result}\n{}", self.log());
        ip_of(&result)
    }

    fn dbg(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(sibling("cilium-dbg"))
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .output()
            .expect("cilium-dbg");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// Upstream's `cilium-dbg` (Cilium's own decoder of the API) on this node's agent
    /// socket: its stdout, or `None` when it is not built (see `upstream_client`).
    fn upstream_dbg(&self, args: &[&str]) -> Option<String> {
        let binary = cilium_k8s::testing::upstream_client("cilium-dbg")?;
        let out = Command::new(binary)
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .output()
            .expect("upstream cilium-dbg");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "upstream cilium-dbg {args:?}: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(stdout)
    }

    /// The project's `hubble` on this node's Observer socket: (success, stdout, stderr).
    fn hubble(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(sibling("hubble"))
            .arg(format!(
                "--server=unix://{}",
                self.state.join("hubble.sock").display()
            ))
            .args(args)
            .output()
            .expect("hubble");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn link_exists(&self, name: &str) -> bool {
        Command::new("ip")
            .args(["-n", &self.node, "link", "show", name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn pod_ns(&self, pod: &str) -> String {
        format!("{}-{pod}", self.prefix)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill_agent();
        let namespaces = self
            .namespaces
            .lock()
            .map(|n| n.clone())
            .unwrap_or_default();
        for ns in namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = Command::new("umount").arg(&self.bpffs).status();
        let _ = std::fs::remove_dir(&self.bpffs);
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

fn ip_of(result: &Value) -> Ipv4Addr {
    cilium_cni::runtime::result_ipv4(result).unwrap_or_else(|| panic!("no address in {result}"))
}

/// Whether a TCP connection from `from` to `to:port` gets an answer within a second.
fn tcp_reaches(node: &Node, from: &str, to: Ipv4Addr, port: u16) -> bool {
    cilium_bpf::testing::tcp_echo_reaches(&node.pod_ns(from), to, port)
}

/// An echo server in a pod's namespace until the test ends; counts its connections.
fn echo_server(node: &Node, pod: &str, ip: Ipv4Addr, port: u16) -> Arc<AtomicU32> {
    cilium_bpf::testing::tcp_echo_server(&node.pod_ns(pod), ip, port)
}

/// The lines of `out` without their trailing blanks.
fn trimmed_lines(out: &str) -> Vec<&str> {
    out.lines().map(str::trim_end).collect()
}

/// Every member `theirs` has (upstream re-encodes what its models kept) is in `ours` with
/// the same value; an empty one (null, [], {}) may be absent from ours (Go writes the
/// members its models have even when nothing filled them).
fn assert_within(theirs: &Value, ours: &Value, path: &str) {
    let empty = |v: &Value| match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    };
    match (theirs, ours) {
        (Value::Object(t), Value::Object(o)) => {
            for (k, v) in t {
                let at = format!("{path}.{k}");
                match o.get(k) {
                    Some(mine) => assert_within(v, mine, &at),
                    None => assert!(empty(v), "{at}: {v} missing in ours"),
                }
            }
        }
        (Value::Array(t), Value::Array(o)) => {
            assert_eq!(t.len(), o.len(), "{path}: lengths");
            for (i, (v, mine)) in t.iter().zip(o).enumerate() {
                assert_within(v, mine, &format!("{path}[{i}]"));
            }
        }
        _ => assert_eq!(theirs, ours, "{path}"),
    }
}

#[test]
fn privileged_pods_via_cni_policy_and_dbg() {
    if !is_root_or_skip("privileged_pods_via_cni_policy_and_dbg") {
        return;
    }
    let mut node = Node::new();
    node.start_agent();
    let web = node.add_pod("web", &[("app", "web")]);
    let curl = node.add_pod("curl", &[("app", "curl")]);
    let other = node.add_pod("other", &[("app", "other")]);
    let cidr: ipnet::Ipv4Net = CIDR.parse().expect("cidr");
    for ip in [web, curl, other] {
        assert!(cidr.contains(&ip), "{ip} outside {CIDR}");
    }
    assert!(web != curl && curl != other && web != other);
    let web_served = echo_server(&node, "web", web, 8080);
    assert!(tcp_reaches(&node, "curl", web, 8080), "curl -> web");
    assert!(tcp_reaches(&node, "other", web, 8080), "other -> web");

    // The endpoints, as cilium-dbg shows them.
    let (ok, out) = node.dbg(&["endpoint", "list", "-o", "json"]);
    assert!(ok, "{out}");
    let eps: Value = serde_json::from_str(&out).expect("json");
    let eps = eps.as_array().expect("a list");
    assert_eq!(eps.len(), 3);
    let mut identities = std::collections::BTreeSet::new();
    for ep in eps {
        assert_eq!(ep["status"]["state"], "ready", "{ep}");
        let id = ep["status"]["identity"]["id"].as_u64().expect("identity");
        assert!(id >= 256, "{ep}");
        identities.insert(id);
        let labels = ep["status"]["labels"]["security-relevant"].to_string();
        assert!(
            labels.contains("k8s:io.kubernetes.pod.namespace=default"),
            "{labels}"
        );
    }
    assert_eq!(identities.len(), 3, "three label sets, three identities");
    let (ok, table) = node.dbg(&["endpoint", "list"]);
    assert!(ok, "{table}");
    assert!(
        table.starts_with("ENDPOINT   POLICY (ingress)   POLICY (egress)   IDENTITY"),
        "{table}"
    );
    assert!(
        table.contains("k8s:app=web") && table.contains("ready"),
        "{table}"
    );
    // Upstream's cilium-dbg decodes the same endpoints with Cilium's models: its table is
    // ours, and every field its `endpoint get` keeps is ours.
    if let Some(theirs) = node.upstream_dbg(&["endpoint", "list"]) {
        assert_eq!(trimmed_lines(&theirs), trimmed_lines(&table));
        for ep in eps {
            let id = ep["id"].as_u64().unwrap().to_string();
            let theirs: Value = serde_json::from_str(
                &node
                    .upstream_dbg(&["endpoint", "get", &id, "-o", "json"])
                    .unwrap(),
            )
            .unwrap();
            let (_, ours) = node.dbg(&["endpoint", "get", &id, "-o", "json"]);
            let ours: Value = serde_json::from_str(&ours).unwrap();
            assert_within(&theirs, &ours, "endpoint");
        }
    }

    // A policy: web accepts TCP 8080 from curl only.
    let policy = node.state.join("web.yaml");
    std::fs::write(
        &policy,
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: web-from-curl\nspec:\n  endpointSelector:\n    matchLabels:\n      app: web\n  ingress:\n  - fromEndpoints:\n    - matchLabels:\n        app: curl\n    toPorts:\n    - ports:\n      - port: \"8080\"\n        protocol: TCP\n",
    )
    .expect("policy file");
    let (ok, out) = node.dbg(&["policy", "import", policy.to_str().expect("utf-8")]);
    assert!(ok, "{out}");
    assert!(
        tcp_reaches(&node, "curl", web, 8080),
        "curl -> web is allowed"
    );
    assert!(
        !tcp_reaches(&node, "other", web, 8080),
        "other -> web is denied"
    );
    // Enforcement as upstream reads it: web's ingress enabled, in its table as in ours.
    if let Some(theirs) = node.upstream_dbg(&["endpoint", "list"]) {
        let (_, table) = node.dbg(&["endpoint", "list"]);
        assert!(
            theirs.lines().any(|l| l
                .split_whitespace()
                .take(4)
                .eq(["1", "Enabled", "Disabled", "256"])),
            "{theirs}"
        );
        assert_eq!(trimmed_lines(&theirs), trimmed_lines(&table));
    }
    // Hubble saw the denied connection: counted by reason, and the node keeps flows.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, m) = node.dbg(&["metrics", "list"]);
        if m.lines()
            .any(|l| l.starts_with("hubble_drop_total") && l.contains("reason=POLICY_DENIED"))
        {
            assert!(m.contains("hubble_flows_processed_total"), "{m}");
            break;
        }
        assert!(Instant::now() < deadline, "no Hubble drop counted: {m}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The same drop through Hubble's Observer API, as `hubble observe` shows it.
    let hubble_cmd = |args: &[&str]| node.hubble(args);
    let (ok, out, err) = hubble_cmd(&[
        "observe",
        "--last",
        "200",
        "--verdict",
        "DROPPED",
        "--from-pod",
        "default/other",
        "--to-pod",
        "default/web",
        "-o",
        "json",
    ]);
    assert!(ok, "{out}{err}");
    let drops: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert!(
        !drops.is_empty(),
        "no dropped flow other -> web; all flows: {}",
        hubble_cmd(&["observe", "--last", "30"]).1
    );
    for d in &drops {
        assert_eq!(d["flow"]["verdict"], "DROPPED", "{d}");
        assert_eq!(d["flow"]["source"]["pod_name"], "other", "{d}");
        assert_eq!(d["flow"]["destination"]["pod_name"], "web", "{d}");
        assert_eq!(d["flow"]["l4"]["TCP"]["destination_port"], 8080, "{d}");
    }
    assert!(
        drops
            .iter()
            .any(|d| d["flow"]["drop_reason_desc"] == "POLICY_DENIED"),
        "{out}"
    );
    // Upstream's hubble reads the same real flows from the node's socket and prints them
    // as ours does (up to the last drop seen: SYNs retried later are not in both reads).
    if let Some(upstream) = cilium_k8s::testing::upstream_client("hubble") {
        let until = drops.last().unwrap()["flow"]["time"]
            .as_str()
            .unwrap()
            .to_owned();
        let socket = format!(
            "--server=unix://{}",
            node.state.join("hubble.sock").display()
        );
        for filter in [
            &["--verdict", "DROPPED", "--from-pod", "default/other"][..],
            &["--to-pod", "default/web", "--protocol", "tcp"],
        ] {
            let mut args = vec!["observe", "--last", "200", "--until", &until, "-o", "json"];
            args.extend_from_slice(filter);
            let (_, ours, _) = hubble_cmd(&args);
            let theirs = Command::new(&upstream)
                .arg(&socket)
                .args(&args)
                .output()
                .expect("upstream hubble");
            assert!(theirs.status.success(), "{theirs:?}");
            let theirs = String::from_utf8_lossy(&theirs.stdout);
            assert!(!ours.is_empty(), "{filter:?}");
            let parse = |s: &str| -> Vec<Value> {
                s.lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect()
            };
            assert_eq!(parse(&theirs), parse(&ours), "{filter:?}");
        }
    }
    let (ok, out, _) = hubble_cmd(&[
        "observe",
        "--last",
        "200",
        "--from-pod",
        "default/curl",
        "--to-pod",
        "default/web",
    ]);
    assert!(
        ok && out.lines().any(|l| l.contains("default/curl:")
            && l.contains("-> default/web:8080")
            && l.contains("FORWARDED")),
        "{out}"
    );
    // IPv6 is off inside the pods (the datapath is IPv4-only), so none of them sent a
    // frame that from_container drops as an unsupported L3 protocol.
    for pod in ["web", "curl", "other"] {
        let out = Command::new("ip")
            .args(["netns", "exec", &node.pod_ns(pod)])
            .args(["cat", "/proc/sys/net/ipv6/conf/all/disable_ipv6"])
            .output()
            .expect("ip netns exec");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1", "{pod}");
    }
    let (ok, out, err) = hubble_cmd(&["observe", "--last", "1000", "-o", "json"]);
    assert!(ok, "{err}");
    assert!(
        !out.contains("UNSUPPORTED_L3_PROTOCOL") && !out.contains("\"0.0.0.0\""),
        "{out}"
    );
    let (ok, out, _) = hubble_cmd(&["status"]);
    assert!(
        ok && out.contains("Current/Max Flows:") && out.contains("/1023"),
        "{out}"
    );
    let (_, status) = node.dbg(&["status"]);
    let hubble = status
        .lines()
        .find(|l| l.starts_with("Hubble:"))
        .unwrap_or_else(|| panic!("{status}"));
    assert!(
        hubble.contains("Ok") && hubble.contains("/1023"),
        "{hubble}"
    );
    let (_, table) = node.dbg(&["endpoint", "list"]);
    let web_row = table
        .lines()
        .find(|l| l.contains("k8s:app=web"))
        .expect("web's row");
    assert!(web_row.contains("Enabled"), "{table}");
    // A bad policy is refused and changes nothing.
    std::fs::write(&policy, "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: bad\nspec:\n  endpointSelector: {}\n  ingress:\n  - fromEndpoint: []\n").expect("write");
    let (ok, out) = node.dbg(&["policy", "import", policy.to_str().expect("utf-8")]);
    assert!(!ok && out.contains("fromEndpoint"), "{out}");
    assert!(!tcp_reaches(&node, "other", web, 8080), "still denied");
    let (ok, out) = node.dbg(&["policy", "delete", "--all"]);
    assert!(ok, "{out}");
    assert!(tcp_reaches(&node, "other", web, 8080), "allowed again");

    // A ClusterIP service with Maglev selection, backed by web and other.
    let web_hits = web_served;
    let other_hits = echo_server(&node, "other", other, 8080);
    let vip = Ipv4Addr::new(10, 96, 0, 10);
    let spec = serde_json::json!({
        "frontend-address": {"ip": vip.to_string(), "port": 80, "protocol": "TCP"},
        "backend-addresses": [{"ip": web.to_string(), "port": 8080}, {"ip": other.to_string(), "port": 8080}],
        "flags": {"type": "ClusterIP", "name": "webpod", "namespace": "default", "lbAlgorithm": "maglev"},
    });
    let svc = node
        .api("PUT", "/service/0", Some(&spec))
        .expect("create the service");
    let svc_id = svc["spec"]["id"].as_u64().expect("service id");
    let (before_web, before_other) = (
        web_hits.load(Ordering::SeqCst),
        other_hits.load(Ordering::SeqCst),
    );
    for _ in 0..20 {
        assert!(tcp_reaches(&node, "curl", vip, 80), "curl -> the ClusterIP");
    }
    let (to_web, to_other) = (
        web_hits.load(Ordering::SeqCst) - before_web,
        other_hits.load(Ordering::SeqCst) - before_other,
    );
    assert_eq!(to_web + to_other, 20);
    assert!(
        to_web > 0 && to_other > 0,
        "both backends serve: {to_web}/{to_other}"
    );
    let (ok, svc_table) = node.dbg(&["service", "list"]);
    assert!(ok, "{svc_table}");
    let table = &svc_table;
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        ["ID", "Frontend", "Service", "Type", "Backend"],
        "{table}"
    );
    let first = format!("{web}:8080/TCP");
    let second = format!("{other}:8080/TCP");
    let svc_id_text = svc_id.to_string();
    assert_eq!(
        lines[1],
        [
            svc_id_text.as_str(),
            "10.96.0.10:80/TCP",
            "ClusterIP",
            "1",
            "=>",
            first.as_str(),
            "(active)"
        ],
        "{table}"
    );
    assert_eq!(
        lines[2],
        ["2", "=>", second.as_str(), "(active)"],
        "{table}"
    );
    let bpf_root = format!("--bpf-root={}", node.bpffs.display());
    let (ok, out) = node.dbg(&[&bpf_root, "bpf", "lb", "list"]);
    assert!(
        ok && out.contains(&format!("10.96.0.10:80/TCP (1)   {first} ({svc_id}) (1)")),
        "{out}"
    );
    let (ok, maglev_json) = node.dbg(&[
        &bpf_root,
        "bpf",
        "lb",
        "maglev",
        "get",
        &svc_id_text,
        "-o",
        "json",
    ]);
    assert!(ok, "{maglev_json}");
    let tables: Value = serde_json::from_str(&maglev_json).expect("json");
    let table = tables[format!("[{svc_id}]/v4")]
        .as_array()
        .expect("the table");
    assert_eq!(table.len(), 16381);
    let distinct: std::collections::BTreeSet<u64> =
        table.iter().filter_map(Value::as_u64).collect();
    assert_eq!(distinct.len(), 2, "two backends share the table");
    let (ok, out) = node.dbg(&[&bpf_root, "bpf", "lb", "maglev", "get", "999"]);
    assert!(!ok && out.contains("no Maglev table"), "{out}");

    // The maps through the agent.
    let (ok, out) = node.dbg(&["map", "list", "-o", "json"]);
    assert!(ok, "{out}");
    let maps: Value = serde_json::from_str(&out).expect("json");
    let count = |name: &str| {
        maps["maps"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["name"] == name)
            .map(|m| m["entries"].clone())
    };
    assert_eq!(count("cilium_lb4_maglev"), Some(Value::from(1)), "{out}");
    assert_eq!(
        count("cilium_lb4_backends_v3"),
        Some(Value::from(2)),
        "{out}"
    );
    assert_eq!(count("cilium_events"), Some(Value::Null), "{out}");
    let (ok, out) = node.dbg(&["map", "list"]);
    assert!(
        ok && out.starts_with("Name") && out.contains("Num entries"),
        "{out}"
    );
    // Upstream's cilium-dbg counts the same entries (from the maps' `cache`); rows of maps
    // that traffic does not change are equal.
    if let Some(theirs) = node.upstream_dbg(&["map", "list"]) {
        let row = |table: &str, name: &str| {
            table
                .lines()
                .find(|l| l.split_whitespace().next() == Some(name))
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        };
        for name in [
            "cilium_lxc",
            "cilium_lb4_backends_v3",
            "cilium_lb4_maglev",
            "cilium_events",
        ] {
            assert_eq!(row(&theirs, name), row(&out, name), "{name}: {theirs}");
        }
        assert_eq!(
            row(&theirs, "cilium_lb4_backends_v3").as_deref(),
            Some("cilium_lb4_backends_v3 2 0 true")
        );
        let theirs = node.upstream_dbg(&["map", "get", "cilium_lxc"]).unwrap();
        let (_, ours) = node.dbg(&["map", "get", "cilium_lxc"]);
        assert_eq!(trimmed_lines(&theirs), trimmed_lines(&ours));
    }
    let (ok, out) = node.dbg(&["map", "get", "cilium_lxc"]);
    assert!(ok && out.starts_with("Key"), "{out}");
    assert!(
        out.contains(&format!("{web}:0")) && out.contains("sync"),
        "{out}"
    );
    let (ok, out) = node.dbg(&["map", "get", "cilium_nope"]);
    assert!(!ok && out.contains("unknown map"), "{out}");

    // A restart keeps the service, its id and its table; traffic goes on.
    node.kill_agent();
    assert!(
        tcp_reaches(&node, "curl", vip, 80),
        "the datapath serves with the agent down"
    );
    node.start_agent();
    let (_, after) = node.dbg(&["service", "list"]);
    assert_eq!(after, svc_table, "the service came back unchanged");
    let (_, again) = node.dbg(&[
        &bpf_root,
        "bpf",
        "lb",
        "maglev",
        "get",
        &svc_id_text,
        "-o",
        "json",
    ]);
    assert_eq!(again, maglev_json, "the table is the same");
    assert!(
        tcp_reaches(&node, "curl", vip, 80),
        "curl -> the ClusterIP after the restart"
    );
    let (ok, out) = node.dbg(&["service", "delete", &svc_id_text]);
    assert!(ok, "{out}");
    assert!(!tcp_reaches(&node, "curl", vip, 80), "the service is gone");
    let (_, out) = node.dbg(&["service", "list", "-o", "json"]);
    assert_eq!(out.trim(), "[]");

    // Identities, IPs, status, metrics.
    let (ok, out) = node.dbg(&["identity", "list", "--endpoints"]);
    let rows = out
        .lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .count();
    assert!(ok && rows == 3 && out.contains("k8s:app=curl"), "{out}");
    let (ok, out) = node.dbg(&["status", "--verbose"]);
    assert!(
        ok && out.contains("4/254 allocated from 172.20.1.0/24"),
        "{out}"
    );
    let (ok, out) = node.dbg(&["metrics", "list"]);
    assert!(ok && out.contains("cilium_endpoint_state"), "{out}");
    assert!(out.contains("cilium_forward_count_total"), "{out}");

    // CHECK, then DEL twice (idempotent), then CHECK fails.
    let (ok, out) = node.cni("CHECK", "ctr-other", "other", "1.1.0");
    assert!(ok, "CHECK: {out}");
    let host = cilium_cni::host_veth_name("ctr-other", "eth0");
    assert!(node.link_exists(&host));
    for _ in 0..2 {
        let (ok, out) = node.cni("DEL", "ctr-other", "other", "1.1.0");
        assert!(ok, "DEL: {out}");
    }
    assert!(!node.link_exists(&host), "the veth is gone");
    let (ok, out) = node.cni("CHECK", "ctr-other", "other", "1.1.0");
    assert!(!ok && out["code"].as_u64().is_some(), "{out}");
    let (_, out) = node.dbg(&["endpoint", "list", "-o", "json"]);
    let eps: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(eps.as_array().map(Vec::len), Some(2));
    // ADD of an interface that exists fails cleanly and leaves the existing one alone.
    let (ok, out) = node.cni("ADD", "ctr-web", "web", "1.0.0");
    assert!(
        !ok && out["code"] == cilium_cni::spec::code::INTERFACE_EXISTS,
        "{out}"
    );
    assert!(tcp_reaches(&node, "curl", web, 8080), "web still serves");
    let (_, health) = node.dbg(&["status", "--verbose"]);
    assert!(
        health.contains("3/254 allocated"),
        "the failed ADD released its IP: {health}"
    );
}

#[test]
fn privileged_restart_during_100_pod_creations() {
    if !is_root_or_skip("privileged_restart_during_100_pod_creations") {
        return;
    }
    let mut node = Node::new();
    node.start_agent();
    let a = node.add_pod("a", &[("app", "a")]);
    let b = node.add_pod("b", &[("app", "b")]);
    echo_server(&node, "b", b, 9000);
    let _ = a;

    // A TCP stream a -> b that runs through the crash and restart; records the longest gap.
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let stream = spawn_in_netns(&node.pod_ns("a"), move || {
        let mut conn =
            TcpStream::connect_timeout(&SocketAddr::from((b, 9000)), Duration::from_secs(2))
                .expect("connect");
        conn.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut longest = Duration::ZERO;
        let mut last = Instant::now();
        let mut echoed = 0usize;
        let chunk = [0x42u8; 1024];
        let mut buf = [0u8; 1024];
        while !flag.load(Ordering::SeqCst) {
            conn.write_all(&chunk).expect("the stream broke (write)");
            conn.read_exact(&mut buf).expect("the stream broke (read)");
            echoed += chunk.len();
            let now = Instant::now();
            longest = longest.max(now - last);
            last = now;
            std::thread::sleep(Duration::from_millis(5));
        }
        (echoed, longest)
    });

    // 100 pods created at once; the agent is killed while they are being created.
    let names: Vec<String> = (0..100).map(|i| format!("p{i}")).collect();
    for n in &names {
        node.add_netns(&node.pod_ns(n));
    }
    let node = Arc::new(Mutex::new(node));
    let results: Vec<(String, bool, Value)> = {
        let handles: Vec<_> = names
            .iter()
            .map(|n| {
                let (n, node) = (n.clone(), node.clone());
                let (prefix, socket, node_ns) = {
                    let g = node.lock().expect("lock");
                    (g.prefix.clone(), g.socket.clone(), g.node.clone())
                };
                std::thread::spawn(move || {
                    let conf = serde_json::json!({"cniVersion": "1.0.0", "name": "cilium", "type": "cilium-cni", "agent-socket": socket}).to_string();
                    let mut child = Command::new("ip")
                        .args(["netns", "exec", &node_ns])
                        .arg(env!("CARGO_BIN_EXE_cilium-cni"))
                        .env("CNI_COMMAND", "ADD")
                        .env("CNI_CONTAINERID", format!("ctr-{n}"))
                        .env("CNI_NETNS", format!("/run/netns/{prefix}-{n}"))
                        .env("CNI_IFNAME", "eth0")
                        .env("CNI_PATH", "/opt/cni/bin")
                        .env("CNI_ARGS", format!("K8S_POD_NAMESPACE=default;K8S_POD_NAME={n}"))
                        .stdin(Stdio::piped())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("spawn cilium-cni");
                    child.stdin.take().expect("stdin").write_all(conf.as_bytes()).expect("netconf");
                    let out = child.wait_with_output().expect("cilium-cni");
                    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
                    (n, out.status.success(), json)
                })
            })
            .collect();
        // Kill the agent once a quarter of the pods exist: the rest are mid-creation.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // The endpoint state files: counted without waiting on the agent.
            let dir = node.lock().expect("lock").state.join("endpoints");
            let n = std::fs::read_dir(dir).map_or(0, Iterator::count);
            if n >= 27 || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        node.lock().expect("lock").kill_agent();
        handles
            .into_iter()
            .map(|h| h.join().expect("cni thread"))
            .collect()
    };
    let mut node = Arc::try_unwrap(node)
        .expect("one owner")
        .into_inner()
        .expect("lock");
    let succeeded: Vec<(&str, Ipv4Addr)> = results
        .iter()
        .filter(|(_, ok, _)| *ok)
        .map(|(n, _, r)| (n.as_str(), ip_of(r)))
        .collect();
    eprintln!(
        "{} of 100 ADDs succeeded before the agent was killed",
        succeeded.len()
    );
    assert!(
        !succeeded.is_empty() && succeeded.len() < 100,
        "the kill must land mid-creation: {} succeeded",
        succeeded.len()
    );
    // Failed ADDs left nothing behind.
    for (n, ok, out) in &results {
        if !ok {
            let host = cilium_cni::host_veth_name(&format!("ctr-{n}"), "eth0");
            assert!(
                !node.link_exists(&host),
                "{n}: failed ADD left {host}: {out}"
            );
        }
    }
    node.start_agent();
    let eps: Value = node.api("GET", "/endpoint", None).expect("endpoints");
    let eps = eps.as_array().expect("list");
    let mut by_container = std::collections::BTreeMap::new();
    for ep in eps {
        let c = ep["status"]["external-identifiers"]["container-id"]
            .as_str()
            .expect("container id")
            .to_owned();
        let ip: Ipv4Addr = ep["status"]["networking"]["addressing"][0]["ipv4"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("ip");
        assert_eq!(ep["status"]["state"], "ready");
        by_container.insert(c, ip);
    }
    // Every ADD the CNI saw succeed is restored with its IP; nothing else is.
    for (n, ip) in &succeeded {
        assert_eq!(by_container.get(&format!("ctr-{n}")), Some(ip), "{n}");
    }
    assert_eq!(by_container.len(), succeeded.len() + 2, "{by_container:?}");
    let ips: std::collections::BTreeSet<_> = by_container.values().collect();
    assert_eq!(ips.len(), by_container.len(), "an IP was handed out twice");
    // IPAM holds exactly the router and the endpoints: half-created IPs were reclaimed.
    let health = node.api("GET", "/healthz", None).expect("health");
    let allocations = health["node-state"]["ipam"]["allocations"]
        .as_object()
        .expect("allocations")
        .len();
    assert_eq!(allocations, by_container.len() + 1, "{health}");
    // A new pod gets a fresh IP and talks to b.
    node.add_netns(&node.pod_ns("late"));
    let api = node.api(
        "PUT",
        "/pod/default/late",
        Some(&serde_json::json!({"metadata": {"labels": {"app": "late"}}})),
    );
    assert!(api.is_ok(), "{api:?}");
    let (ok, result) = node.cni("ADD", "ctr-late", "late", "1.0.0");
    assert!(ok, "{result}");
    let late = ip_of(&result);
    assert!(!ips.contains(&late), "{late} was in use");
    assert!(tcp_reaches(&node, "late", b, 9000));

    stop.store(true, Ordering::SeqCst);
    let (echoed, longest) = stream.join().expect("the stream survived");
    eprintln!("stream a -> b: {echoed} bytes echoed, longest gap {longest:?}");
    assert!(echoed > 0);
    assert!(
        longest < Duration::from_secs(2),
        "the stream stalled for {longest:?}"
    );
}

/// Hubble with monitor aggregation: one TCP exchange from curl to web (connect, "ping",
/// the echo, close) seen at `to-endpoint`. At `none` every packet curl sends is a flow; at
/// `medium` with `monitor-aggregation-flags=all` (the chart's values), the connection's
/// first packet and each packet carrying a TCP flag not seen before in its direction: SYN,
/// ACK, PSH and FIN, four flows (as Cilium reports within one interval). The agent shows
/// the level.
#[test]
fn privileged_hubble_with_monitor_aggregation() {
    if !is_root_or_skip("privileged_hubble_with_monitor_aggregation") {
        return;
    }
    let mut counts = Vec::new();
    for level in ["none", "medium"] {
        let mut node = Node::new();
        node.start_agent_with(&[
            &format!("--monitor-aggregation={level}"),
            "--monitor-aggregation-flags=all",
        ]);
        let web = node.add_pod("web", &[("app", "web")]);
        node.add_pod("curl", &[("app", "curl")]);
        let _served = echo_server(&node, "web", web, 8080);
        assert!(tcp_reaches(&node, "curl", web, 8080), "curl -> web");
        // The close's last packets are on their way: let them arrive.
        std::thread::sleep(Duration::from_millis(300));
        let (ok, out, _) = node.hubble(&[
            "observe",
            "--last",
            "1000",
            "--from-pod",
            "default/curl",
            "--to-pod",
            "default/web",
            "-o",
            "json",
        ]);
        assert!(ok, "{out}");
        let flows: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line")["flow"].clone())
            .filter(|f| f["trace_observation_point"] == "TO_ENDPOINT")
            .collect();
        let flags: Vec<String> = flows
            .iter()
            .map(|f| {
                let mut set: Vec<&str> = f["l4"]["TCP"]["flags"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(_, on)| **on == Value::Bool(true))
                    .map(|(k, _)| k.as_str())
                    .collect();
                set.sort_unstable();
                set.join("|")
            })
            .collect();
        if level == "medium" {
            assert_eq!(flags, ["SYN", "ACK", "ACK|PSH", "ACK|FIN"], "{out}");
            let (_, status) = node.dbg(&["status"]);
            assert!(status.contains("Monitor aggregation: Medium"), "{status}");
            let (_, config) = node.dbg(&["config"]);
            assert!(
                config
                    .lines()
                    .any(|l| l.starts_with("MonitorAggregationLevel") && l.ends_with(": Medium")),
                "{config}"
            );
        } else {
            assert!(flags.len() >= 5, "every packet: {flags:?}");
            assert_eq!(flags.first().map(String::as_str), Some("SYN"), "{flags:?}");
        }
        counts.push(flags.len());
    }
    eprintln!("flows of one exchange at none / medium: {counts:?}");
}
