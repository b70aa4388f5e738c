// SPDX-License-Identifier: Apache-2.0

//! `cilium-dbg cleanup` on a real node: a node namespace with an underlay device, etcd in
//! it, the cilium-agent binary (first in tunnel mode, then restarted with native routing
//! and auto-direct-node-routes, as a reconfigured node would be), pods wired by the
//! cilium-cni binary, and another node announced through etcd so the agent routes to its
//! pod CIDR. Then: cleanup is refused while the agent runs; without `--force` it lists and
//! asks, and "n" removes nothing; with `--force --all-state` it removes every program,
//! route, link, pin and state file the agent made and nothing else (foreign routes, bpffs
//! directories and files stay; the pods' veths stay, without programs); a second run finds
//! nothing. Needs root and etcd; everything is made under a `crsclean<pid>` prefix and
//! removed on drop, even on panic (processes killed by pid).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cilium_bpf::testing::{in_netns, is_root_or_skip, run};
use cilium_core::kvstore::etcd::EtcdServer;
use serde_json::Value;

const NODE_IP: &str = "192.168.10.101";
const CIDR: &str = "172.20.1.0/24";
/// The other node, announced through etcd only.
const PEER_IP: &str = "192.168.10.102";
const PEER_CIDR: &str = "172.20.2.0/24";
const ETCD: &str = "127.0.0.1:2379";

/// A binary built next to cilium-dbg.
fn sibling(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_cilium-dbg")).with_file_name(name);
    assert!(
        p.exists(),
        "{} is missing: build it first (cargo build -p cilium-agent -p cilium-cni)",
        p.display()
    );
    p
}

/// The node: its namespace (and the pods'), directories, etcd and agent; all removed on
/// drop.
struct Node {
    prefix: String,
    ns: String,
    dir: PathBuf,
    bpffs: PathBuf,
    state: PathBuf,
    socket: PathBuf,
    agent: Option<Child>,
    etcd: Option<EtcdServer>,
    namespaces: Vec<String>,
    mounted: bool,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop_agent();
        drop(self.etcd.take());
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!("--- agent log (last 40 lines) ---");
            for l in &lines[lines.len().saturating_sub(40)..] {
                eprintln!("{l}");
            }
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        if self.mounted {
            let _ = Command::new("umount").arg(&self.bpffs).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Node {
    fn new() -> Node {
        let prefix = format!("crsclean{}", std::process::id());
        let dir = std::env::temp_dir().join(&prefix);
        let _ = std::fs::remove_dir_all(&dir);
        let state = dir.join("state");
        let mut node = Node {
            ns: format!("{prefix}-node"),
            prefix,
            bpffs: dir.join("bpffs"),
            socket: state.join("cilium.sock"),
            state,
            dir,
            agent: None,
            etcd: None,
            namespaces: Vec::new(),
            mounted: false,
        };
        for d in [&node.bpffs, &node.state] {
            std::fs::create_dir_all(d).expect("test directory");
        }
        run(&[
            "mount",
            "-t",
            "bpf",
            "bpf",
            node.bpffs.to_str().expect("utf-8"),
        ]);
        node.mounted = true;
        let ns = node.ns.clone();
        node.add_netns(&ns);
        // The underlay device: a veth pair inside the node (no dummy links on this kernel).
        node.ip(&[
            "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
        ]);
        node.ip(&["addr", "add", &format!("{NODE_IP}/24"), "dev", "eth0"]);
        node.ip(&["link", "set", "eth0", "up"]);
        node.ip(&["link", "set", "eth0p", "up"]);
        node
    }

    fn add_netns(&mut self, name: &str) {
        run(&["ip", "netns", "add", name]);
        self.namespaces.push(name.to_owned());
        run(&["ip", "-n", name, "link", "set", "lo", "up"]);
    }

    /// `ip -n <node> ARGS`, which must succeed; its output.
    fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "-n", &self.ns];
        all.extend(args);
        run(&all)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    fn start_etcd(&mut self) {
        let wrapper = ["ip", "netns", "exec", &self.ns].map(str::to_owned);
        let etcd = EtcdServer::start(
            &self.dir.join("etcd"),
            ETCD.parse().expect("addr"),
            "127.0.0.1:2380".parse().expect("addr"),
            &wrapper,
        )
        .expect("start etcd in the node namespace");
        self.etcd = Some(etcd);
    }

    fn etcdctl(&self, args: &[&str]) {
        let endpoint = format!("http://{ETCD}");
        let mut all = vec![
            "ip",
            "netns",
            "exec",
            &self.ns,
            "etcdctl",
            "--endpoints",
            &endpoint,
        ];
        all.extend(args);
        let out = Command::new(all[0])
            .args(&all[1..])
            .env("ETCDCTL_API", "3")
            .output()
            .expect("etcdctl");
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn start_agent(&mut self, args: &[&str]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("agent.log"))
            .expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(sibling("cilium-agent"))
            .arg(format!("--bpf-root={}", self.bpffs.display()))
            .arg(format!("--state-dir={}", self.state.display()))
            .arg(format!("--socket-path={}", self.socket.display()))
            .arg(format!(
                "--hubble-socket-path={}",
                self.state.join("hubble.sock").display()
            ))
            .args([
                &format!("--ipv4-node={NODE_IP}"),
                &format!("--ipv4-range={CIDR}"),
                "--k8s-node-name=k8s-w1",
                "--kvstore=etcd",
                &format!("--kvstore-opt=etcd.address={ETCD}"),
                "--kvstore-lease-ttl=3s",
            ])
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn the agent");
        self.agent = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.api("GET", "/healthz", None).is_err() {
            if let Some(Ok(Some(status))) = self.agent.as_mut().map(Child::try_wait) {
                panic!("agent exited with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "agent never served: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop_agent(&mut self) {
        if let Some(mut child) = self.agent.take() {
            // `ip netns exec` execs the agent: the child's pid is the agent's.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn api(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        cilium_dbg::client::Client::new(&self.socket.to_string_lossy())
            .call(method, path, body)
            .map_err(|e| e.0)
    }

    /// Registers pod `pod` and wires it with cilium-cni, as a runtime does.
    fn add_pod(&mut self, pod: &str) {
        let ns = format!("{}-{pod}", self.prefix);
        self.add_netns(&ns);
        self.api(
            "PUT",
            &format!("/pod/default/{pod}"),
            Some(&serde_json::json!({"metadata": {"name": pod, "namespace": "default", "labels": {"app": pod}}})),
        )
        .expect("register the pod");
        let netconf = serde_json::json!({
            "cniVersion": "1.0.0", "name": "cilium", "type": "cilium-cni", "agent-socket": self.socket,
        })
        .to_string();
        let out = cilium_cni::runtime::invoke(
            &sibling("cilium-cni"),
            &["ip", "netns", "exec", &self.ns],
            &cilium_cni::runtime::Invocation {
                command: "ADD",
                container_id: &format!("ctr-{pod}"),
                netns: &format!("/run/netns/{ns}"),
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
            self.log()
        );
    }

    /// `cilium-dbg [args]` inside the node's namespace, with the node's bpf root, socket
    /// and state directory; `stdin` as its input. Returns (success, stdout, stderr).
    fn cleanup(&self, args: &[&str], stdin: &str) -> (bool, String, String) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(env!("CARGO_BIN_EXE_cilium-dbg"))
            .arg(format!("--bpf-root={}", self.bpffs.display()))
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .arg("cleanup")
            .arg(format!("--state-dir={}", self.state.display()))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run cilium-dbg");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        let out = child.wait_with_output().expect("cilium-dbg");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The node's devices by name.
    fn devices(&self) -> BTreeSet<String> {
        let links: Value = serde_json::from_str(&self.ip(&["-j", "link", "show"])).expect("json");
        links
            .as_array()
            .expect("a list")
            .iter()
            .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
            .collect()
    }

    /// Every IPv4 route of every table, as `ip -j` describes it (flags such as `linkdown`
    /// left out: they follow the peer's carrier).
    fn routes(&self) -> BTreeSet<String> {
        let routes: Value =
            serde_json::from_str(&self.ip(&["-4", "-j", "route", "show", "table", "all"]))
                .expect("json");
        routes
            .as_array()
            .expect("a list")
            .iter()
            .map(|r| {
                [
                    "type", "dst", "gateway", "dev", "table", "protocol", "scope", "prefsrc",
                ]
                .iter()
                .map(|k| format!("{k}={}", r[*k]))
                .collect::<Vec<_>>()
                .join(" ")
            })
            .collect()
    }

    /// The tcx programs of every device of the node, as `<dev> <hook> <name>`.
    fn tcx_programs(&self) -> Vec<String> {
        let devices: Vec<String> = self.devices().into_iter().collect();
        in_netns(&self.ns, move || {
            let mut out = Vec::new();
            for d in devices {
                for p in cilium_bpf::loader::tcx_programs(&d).expect("query tcx") {
                    out.push(format!("{d} {} {}", p.hook, p.name));
                }
            }
            out
        })
    }

    /// Every file and directory under the bpffs, relative to it.
    fn bpffs_tree(&self) -> BTreeSet<String> {
        fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                out.insert(
                    p.strip_prefix(root)
                        .expect("under the root")
                        .display()
                        .to_string(),
                );
                if p.is_dir() {
                    walk(root, &p, out);
                }
            }
        }
        let mut out = BTreeSet::new();
        walk(&self.bpffs, &self.bpffs, &mut out);
        out
    }
}

#[test]
fn privileged_cleanup_removes_what_the_agent_installed_and_nothing_else() {
    let test = "privileged_cleanup_removes_what_the_agent_installed_and_nothing_else";
    if !is_root_or_skip(test) {
        return;
    }
    if !Command::new("etcd")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: etcd is not installed (scripts/deps.sh installs etcd-server)"
        );
        eprintln!("{test}: skipped: etcd not installed");
        return;
    }
    let mut node = Node::new();
    // What is there before the agent, and must stay: routes of the node's own, a /32 on a
    // device that is not a pod's, bpffs directories of someone else, a file in the state
    // directory the agent does not write.
    node.ip(&[
        "route",
        "add",
        "10.99.0.0/24",
        "via",
        "192.168.10.254",
        "dev",
        "eth0",
    ]);
    node.ip(&[
        "route",
        "add",
        "10.99.1.1/32",
        "dev",
        "eth0",
        "scope",
        "link",
    ]);
    std::fs::create_dir_all(node.bpffs.join("foreign")).expect("mkdir in bpffs");
    std::fs::create_dir_all(node.bpffs.join("tc/keep")).expect("mkdir in bpffs");
    std::fs::write(node.state.join("notes.txt"), "not the agent's").expect("a file");
    let routes_before = node.routes();
    let devices_before = node.devices();
    let bpffs_before = node.bpffs_tree();
    node.start_etcd();

    // Tunnel mode first: cilium_vxlan with from_overlay, then a pod.
    node.start_agent(&["--routing-mode=tunnel"]);
    node.add_pod("web");
    node.stop_agent();
    // The node reconfigured for native routing with routes to the other nodes' pods.
    node.start_agent(&[
        "--routing-mode=native",
        "--auto-direct-node-routes=true",
        "--ipv4-native-routing-cidr=172.20.0.0/16",
    ]);
    node.add_pod("curl");
    let peer = serde_json::json!({
        "Name": "k8s-w2",
        "Cluster": "default",
        "IPAddresses": [{"Type": "InternalIP", "IP": PEER_IP}],
        "IPv4AllocCIDR": PEER_CIDR,
    });
    node.etcdctl(&[
        "put",
        "cilium/state/nodes/v1/default/k8s-w2",
        &peer.to_string(),
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let peer_route = format!("{PEER_CIDR} via {PEER_IP} dev eth0 proto 67");
    while !node
        .ip(&["route", "show", PEER_CIDR])
        .contains(&format!("via {PEER_IP} dev eth0 proto 67"))
    {
        assert!(
            Instant::now() < deadline,
            "no route to the other node's pods: {}\n{}",
            node.ip(&["route"]),
            node.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // What the agent made.
    let devices = node.devices();
    let lxc: Vec<String> = devices
        .iter()
        .filter(|d| d.starts_with("lxc"))
        .cloned()
        .collect();
    assert_eq!(lxc.len(), 2, "{devices:?}");
    for d in ["cilium_host", "cilium_net", "cilium_vxlan"] {
        assert!(devices.contains(d), "{d} missing: {devices:?}");
    }
    let programs = node.tcx_programs();
    for d in &lxc {
        assert!(
            programs.contains(&format!("{d} ingress from_container"))
                && programs.contains(&format!("{d} egress to_container")),
            "{programs:?}"
        );
    }
    assert!(
        programs.contains(&"cilium_vxlan ingress from_overlay".to_owned()),
        "{programs:?}"
    );
    // (Filtered by protocol, `ip` leaves the protocol out of each line.)
    let agent_routes = node.ip(&["route", "show", "proto", "67"]);
    assert_eq!(agent_routes.lines().count(), 3, "{agent_routes}");
    for d in &lxc {
        assert!(
            agent_routes.contains(&format!("dev {d} scope link")),
            "{agent_routes}"
        );
    }
    assert!(node.bpffs.join("tc/globals/cilium_lxc").exists());
    assert!(node.state.join("endpoints").is_dir());

    // Refused while the agent runs, --force or not; nothing touched.
    let (ok, out, err) = node.cleanup(&["--force", "--all-state"], "");
    assert!(!ok, "{out}{err}");
    assert!(
        err.contains("the agent is running") && err.contains(&node.socket.display().to_string()),
        "{err}"
    );
    assert!(out.is_empty(), "{out}");
    assert_eq!(node.devices(), devices);
    node.stop_agent();

    // Without --force: the listing and upstream's question; "n" removes nothing.
    let (ok, out, err) = node.cleanup(&[], "n\n");
    assert!(ok, "{out}{err}");
    assert!(
        out.starts_with("Warning: Destructive operation. You are about to remove:\n"),
        "{out}"
    );
    for want in [
        "The command is non-revertible, do you want to continue [y/N]?",
        "Cleanup aborted: nothing removed.",
        "  cilium_host\n",
        "  cilium_vxlan\n",
        &format!("from_container on {}", lxc[0]),
        "from_overlay on cilium_vxlan",
        &peer_route,
        &node
            .bpffs
            .join("tc/globals/cilium_lxc")
            .display()
            .to_string(),
        &node.state.join("endpoints").display().to_string(),
    ] {
        assert!(out.contains(want), "{want:?} not in:\n{out}");
    }
    assert!(!out.contains("10.99."), "foreign routes listed:\n{out}");
    assert!(
        !out.contains("foreign") && !out.contains("notes.txt"),
        "{out}"
    );
    assert_eq!(node.devices(), devices);
    assert_eq!(node.tcx_programs(), programs);
    // --bpf-state alone: programs and pins, no routes, links or state.
    let (ok, out, err) = node.cleanup(&["--bpf-state"], "n\n");
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("from_overlay on cilium_vxlan") && out.contains("cilium_lxc"),
        "{out}"
    );
    for section in ["- routes", "- links", "- agent state"] {
        assert!(
            !out.contains(section),
            "{section:?} with --bpf-state:\n{out}"
        );
    }

    // The real thing.
    let (ok, out, err) = node.cleanup(&["--force", "--all-state"], "");
    assert!(ok, "{out}{err}");
    println!("{out}");
    assert!(
        !out.contains("non-revertible"),
        "--force does not ask:\n{out}"
    );
    for want in [
        &format!("removed tcx program from_container on {}", lxc[0]),
        "removed tcx program from_overlay on cilium_vxlan",
        &format!("removed route {peer_route}"),
        "removed link cilium_host",
        "removed link cilium_vxlan",
        "removed map cilium_lxc",
        &format!("removed {}", node.state.join("endpoints").display()),
    ] {
        assert!(out.contains(want), "{want:?} not in:\n{out}");
    }

    // No cilium_* link; the pods' veths stay.
    let after = node.devices();
    let expected: BTreeSet<String> = devices_before.iter().chain(&lxc).cloned().collect();
    assert_eq!(after, expected);
    // No tcx program on any device, no classic tc either.
    assert_eq!(node.tcx_programs(), Vec::<String>::new());
    for d in &after {
        // Classic tc filters need a clsact (or ingress) qdisc: there is none.
        let qdiscs = run(&["tc", "-n", &node.ns, "qdisc", "show", "dev", d]);
        assert!(
            !qdiscs.contains("clsact") && !qdiscs.contains("ingress"),
            "{d}: {qdiscs}"
        );
    }
    // The routes are the node's own again.
    assert_eq!(node.routes(), routes_before);
    // The bpffs is as it was: the project's directories gone, the others kept.
    assert_eq!(node.bpffs_tree(), bpffs_before);
    // Only the file the agent did not write is left in the state directory.
    let left: Vec<String> = std::fs::read_dir(&node.state)
        .expect("state dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["notes.txt"]);

    // Idempotent: a second run finds nothing and says so.
    let (ok, out, err) = node.cleanup(&["--force", "--all-state"], "");
    assert!(ok, "{out}{err}");
    assert!(out.starts_with("Nothing to remove"), "{out}");
    assert!(!out.contains("removed"), "{out}");
}
