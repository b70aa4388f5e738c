// SPDX-License-Identifier: Apache-2.0

//! Upstream's `cnitool` (containernetworking/cni v1.3.0, built by `cargo xtask
//! upstream-build`) drives cilium-cni through libcni, as a container runtime does: it
//! reads a conflist from `NETCONFPATH`, finds the plugins in `CNI_PATH`, caches each ADD's
//! result and hands it back as `prevResult` to CHECK and DEL, injects `runtimeConfig` from
//! `CAP_ARGS`, and parses the plugins' error JSON. One node (a namespace under a
//! `crs<pid><tag>` prefix with its agent and datapath, from `tests/common`), pods in
//! namespaces the test makes:
//!
//! - `cilium` (spec 1.1.0, cilium-cni alone): STATUS, ADD (the result, connectivity),
//!   CHECK (and its failure once a pod lost its address or its veth), DEL twice, GC with
//!   and without `cni.dev/valid-attachments`, STATUS with the agent down.
//! - `cilium-chain` (spec 1.0.0, as far as Debian's reference plugins go): cilium-cni,
//!   then `portmap` and `bandwidth` with their capabilities; ADD through the chain, the
//!   DNAT rule (and a connection through it from the lab's bridge) and the tbf qdiscs in
//!   the node's namespace, CHECK, DEL cleaning up.
//!
//! libcni keeps its cache in `/var/lib/cni`: every cnitool run gets a private mount
//! namespace where the test's own directory is bound over `/var/lib`, so nothing is
//! written outside the test's directory and no other runtime's attachment is seen. Needs
//! root; everything is removed on drop, even on panic.

mod common;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cilium_bpf::testing::{is_root_or_skip, run};
use cilium_cni::runtime::{Invocation, Outcome, invoke};
use common::Underlay;
use serde_json::{Value, json};
use sha2::{Digest, Sha512};

const CIDR: &str = "172.20.1.0/24";
const CAP_PORTMAP: &str =
    r#"{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}"#;

/// What one cnitool run did.
#[derive(Debug)]
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit ok={} stdout={:?} stderr={:?}",
            self.ok, self.stdout, self.stderr
        )
    }
}

/// One node with its agent, plus cnitool's directories (all under the underlay's
/// directory, removed with it).
struct Lab {
    base: Underlay,
    cnitool: PathBuf,
    /// `NETCONFPATH`.
    netconf: PathBuf,
    /// `CNI_PATH`: cilium-cni, portmap and bandwidth.
    bin: PathBuf,
    /// Bound over `/var/lib` for cnitool (libcni's cache, `/var/lib/cni`).
    varlib: PathBuf,
}

impl Lab {
    fn new(tag: char, cnitool: PathBuf) -> Lab {
        let mut base = Underlay::new(tag, &["k8s-w1"]);
        base.start_agent(0, &[format!("--ipv4-range={CIDR}")]);
        base.wait_agent(0);
        let netconf = base.dir.join("net.d");
        let bin = base.dir.join("cni-bin");
        let varlib = base.dir.join("var-lib");
        for d in [&netconf, &bin, &varlib] {
            std::fs::create_dir_all(d).expect("cnitool dir");
        }
        let link = |target: &Path, name: &str| {
            std::os::unix::fs::symlink(target, bin.join(name)).expect("symlink a plugin");
        };
        link(Path::new(env!("CARGO_BIN_EXE_cilium-cni")), "cilium-cni");
        link(Path::new("/usr/lib/cni/portmap"), "portmap");
        link(Path::new("/usr/lib/cni/bandwidth"), "bandwidth");
        let lab = Lab {
            base,
            cnitool,
            netconf,
            bin,
            varlib,
        };
        lab.write_conflists();
        lab
    }

    fn node(&self) -> &common::NodeNs {
        &self.base.nodes[0]
    }

    fn cilium_plugin(&self) -> Value {
        json!({"type": "cilium-cni", "agent-socket": self.node().socket()})
    }

    fn write_conflists(&self) {
        let solo = json!({
            "cniVersion": "1.1.0",
            "name": "cilium",
            "plugins": [self.cilium_plugin()],
        });
        // Debian's reference plugins (1.1.1) speak up to 1.0.0.
        let chain = json!({
            "cniVersion": "1.0.0",
            "name": "cilium-chain",
            "plugins": [
                self.cilium_plugin(),
                {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true},
                {"type": "bandwidth", "capabilities": {"bandwidth": true}},
            ],
        });
        for (file, conf) in [
            ("10-cilium.conflist", solo),
            ("20-cilium-chain.conflist", chain),
        ] {
            std::fs::write(self.netconf.join(file), conf.to_string()).expect("conflist");
        }
    }

    fn netns_path(&self, pod: &str) -> String {
        format!("/run/netns/{}", self.base.pod_ns(pod))
    }

    /// The container id cnitool gives a pod: `cnitool-` and the first 10 bytes of
    /// sha512(netns path) in hex.
    fn container_id(&self, pod: &str) -> String {
        let digest = Sha512::digest(self.netns_path(pod).as_bytes());
        let hex: String = digest.iter().take(10).map(|b| format!("{b:02x}")).collect();
        format!("cnitool-{hex}")
    }

    fn host_veth(&self, pod: &str) -> String {
        cilium_cni::host_veth_name(&self.container_id(pod), "eth0")
    }

    /// The pod's namespace and its record (labels) at the agent.
    fn make_pod(&mut self, pod: &str) {
        let ns = self.base.pod_ns(pod);
        self.base.add_netns(&ns);
        self.node()
            .api(
                "PUT",
                &format!("/pod/default/{pod}"),
                Some(&json!({"metadata": {"name": pod, "namespace": "default", "labels": {"app": pod}}})),
            )
            .expect("register the pod");
    }

    /// `cnitool <command> <network> /run/netns/<pod>` in the node's namespace, in a
    /// private mount namespace with the test's directory over `/var/lib`; up to 60 s.
    fn cnitool(&self, command: &str, network: &str, pod: &str, cap_args: Option<&str>) -> Run {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.node().ns])
            .args(["unshare", "--mount", "--propagation", "private", "--"])
            .args(["sh", "-c", r#"mount --bind "$0" /var/lib && exec "$@""#])
            .arg(&self.varlib)
            .arg(&self.cnitool)
            .args([command, network, &self.netns_path(pod)])
            .env("NETCONFPATH", &self.netconf)
            .env("CNI_PATH", &self.bin)
            .env("CNI_IFNAME", "eth0")
            .env(
                "CNI_ARGS",
                format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}"),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match cap_args {
            Some(c) => cmd.env("CAP_ARGS", c),
            None => cmd.env_remove("CAP_ARGS"),
        };
        let out = bounded(cmd, Duration::from_secs(60));
        Run {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// cilium-cni itself, as libcni would call it for network `cilium` (to see the error
    /// JSON cnitool turns into a message, and to send what cnitool cannot).
    fn plugin(&self, command: &str, container_id: &str, pod: &str, conf: &Value) -> Outcome {
        let netns = self.netns_path(pod);
        invoke(
            Path::new(env!("CARGO_BIN_EXE_cilium-cni")),
            &["ip", "netns", "exec", &self.node().ns],
            &Invocation {
                command,
                container_id,
                netns: &netns,
                ifname: "eth0",
                pod: ("default", pod),
                netconf: &conf.to_string(),
            },
        )
        .expect("run cilium-cni")
    }

    fn plugin_conf(&self, extra: Value) -> Value {
        let mut conf = json!({"cniVersion": "1.1.0", "name": "cilium"});
        for src in [self.cilium_plugin(), extra] {
            if let (Some(dst), Value::Object(src)) = (conf.as_object_mut(), src) {
                dst.extend(src);
            }
        }
        conf
    }

    /// The container ids of the agent's endpoints.
    fn endpoint_containers(&self) -> Vec<String> {
        let eps = self
            .node()
            .api("GET", "/endpoint", None)
            .expect("endpoint list");
        let mut ids: Vec<String> = eps
            .as_array()
            .expect("a list")
            .iter()
            .filter_map(|ep| {
                ep["status"]["external-identifiers"]["container-id"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        ids.sort();
        ids
    }

    /// IPs the agent's IPAM holds (the router's included).
    fn ipam_allocations(&self) -> usize {
        let health = self.node().api("GET", "/healthz", None).expect("healthz");
        health["node-state"]["ipam"]["allocations"]
            .as_object()
            .map_or(0, serde_json::Map::len)
    }

    fn node_link_exists(&self, name: &str) -> bool {
        Command::new("ip")
            .args(["-n", &self.node().ns, "link", "show", name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// The names of the node's `lxc*` devices.
    fn lxc_links(&self) -> Vec<String> {
        run(&["ip", "-n", &self.node().ns, "-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_owned())
            .filter(|n| n.starts_with("lxc") && n != "lxc_health")
            .collect()
    }

    fn in_node(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "netns", "exec", self.node().ns.as_str()];
        all.extend_from_slice(args);
        run(&all)
    }

    /// Whether `from` gets an ICMP echo reply from `to` within `secs` seconds.
    fn pings(&self, from: &str, to: Ipv4Addr, secs: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let ok = Command::new("ip")
                .args(["netns", "exec", &self.base.pod_ns(from)])
                .args(["ping", "-c", "1", "-W", "1", &to.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok || Instant::now() > deadline {
                return ok;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Runs `cmd` with piped output, killed (by its pid) after `limit`.
fn bounded(mut cmd: Command, limit: Duration) -> Output {
    let child = cmd.spawn().expect("spawn");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            // `ip netns exec`, unshare and sh exec: the pid is cnitool's.
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
    }
}

/// The ADD result cnitool printed, checked against what cilium-cni made; returns it and
/// the pod's IP.
#[track_caller]
fn check_add_result(lab: &Lab, pod: &str, out: &Run, version: &str) -> (Value, Ipv4Addr) {
    assert!(out.ok, "add {pod}: {out}\n{}", lab.node().log());
    let result: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("add {pod} printed no JSON ({e}): {out}"));
    assert_eq!(result["cniVersion"], version, "{result}");
    // cilium-cni's two; a later plugin of a chain may add its own after them.
    let interfaces = result["interfaces"].as_array().expect("interfaces");
    assert!(interfaces.len() >= 2, "{result}");
    assert_eq!(interfaces[0]["name"], lab.host_veth(pod), "{result}");
    assert!(interfaces[0].get("sandbox").is_none(), "{result}");
    assert_eq!(interfaces[1]["name"], "eth0", "{result}");
    assert_eq!(interfaces[1]["sandbox"], lab.netns_path(pod), "{result}");
    let ips = result["ips"].as_array().expect("ips");
    assert_eq!(ips.len(), 1, "{result}");
    assert_eq!(ips[0]["interface"], 1, "{result}");
    let ip = cilium_cni::runtime::result_ipv4(&result).expect("an IPv4 address");
    let cidr: ipnet::Ipv4Net = CIDR.parse().expect("cidr");
    assert!(cidr.contains(&ip), "{ip} outside {CIDR}");
    assert_eq!(
        ips[0]["gateway"],
        cidr.hosts().next().expect("router").to_string(),
        "the router"
    );
    assert!(
        result["routes"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["dst"] == "0.0.0.0/0")),
        "{result}"
    );
    let addrs = run(&[
        "ip",
        "-n",
        &lab.base.pod_ns(pod),
        "-4",
        "-o",
        "addr",
        "show",
        "dev",
        "eth0",
    ]);
    assert!(addrs.contains(&format!("inet {ip}/32")), "{addrs}");
    assert!(lab.node_link_exists(&lab.host_veth(pod)));
    (result, ip)
}

/// A failed cnitool run whose message is the plugin's error JSON as libcni parsed it.
#[track_caller]
fn assert_cni_error(out: &Run, msg: &str) {
    assert!(!out.ok, "expected a failure: {out}");
    assert!(
        !out.stderr.contains("netplugin failed"),
        "no error JSON: {out}"
    );
    assert!(out.stderr.contains(msg), "expected {msg:?}: {out}");
}

#[test]
fn privileged_cnitool_add_check_del_gc_status() {
    if !is_root_or_skip("privileged_cnitool_add_check_del_gc_status") {
        return;
    }
    let Some(tool) = cilium_k8s::testing::upstream_client("cnitool") else {
        return;
    };
    let started = Instant::now();
    let mut lab = Lab::new('g', tool);

    let out = lab.cnitool("status", "cilium", "a", None);
    assert!(out.ok && out.stdout.is_empty(), "status: {out}");

    // ADD: two pods that reach each other.
    lab.make_pod("a");
    lab.make_pod("b");
    let out = lab.cnitool("add", "cilium", "a", None);
    let (_, a) = check_add_result(&lab, "a", &out, "1.1.0");
    let out = lab.cnitool("add", "cilium", "b", None);
    let (_, b) = check_add_result(&lab, "b", &out, "1.1.0");
    assert_ne!(a, b);
    assert_eq!(
        lab.endpoint_containers(),
        {
            let mut v = vec![lab.container_id("a"), lab.container_id("b")];
            v.sort();
            v
        },
        "the endpoints, by cnitool's container ids"
    );
    assert!(lab.pings("a", b, 10), "a -> b");
    assert!(lab.pings("b", a, 10), "b -> a");

    // CHECK with the cached result as prevResult.
    for pod in ["a", "b"] {
        let out = lab.cnitool("check", "cilium", pod, None);
        assert!(out.ok, "check {pod}: {out}");
    }
    // b loses its address: CHECK fails (cnitool's message is the plugin's error JSON).
    run(&[
        "ip",
        "-n",
        &lab.base.pod_ns("b"),
        "addr",
        "del",
        &format!("{b}/32"),
        "dev",
        "eth0",
    ]);
    let out = lab.cnitool("check", "cilium", "b", None);
    assert_cni_error(&out, &format!("address {b} missing on eth0 in the pod"));
    let prev = json!({
        "cniVersion": "1.1.0",
        "interfaces": [{"name": lab.host_veth("b")}, {"name": "eth0", "sandbox": lab.netns_path("b")}],
        "ips": [{"address": format!("{b}/32"), "interface": 1}],
    });
    let direct = lab.plugin(
        "CHECK",
        &lab.container_id("b"),
        "b",
        &lab.plugin_conf(json!({"prevResult": prev})),
    );
    assert!(
        !direct.success && direct.output["code"] == cilium_cni::spec::code::IO,
        "{direct:?}"
    );
    // a loses its veth: CHECK fails.
    run(&[
        "ip",
        "-n",
        &lab.node().ns,
        "link",
        "del",
        &lab.host_veth("a"),
    ]);
    let out = lab.cnitool("check", "cilium", "a", None);
    assert_cni_error(&out, &format!("interface missing: {}", lab.host_veth("a")));

    // DEL, twice each (the second finds nothing and succeeds).
    for pod in ["a", "b"] {
        for round in 0..2 {
            let out = lab.cnitool("del", "cilium", pod, None);
            assert!(out.ok, "del {pod} ({round}): {out}");
        }
        assert!(!lab.node_link_exists(&lab.host_veth(pod)), "{pod}'s veth");
    }
    assert!(lab.endpoint_containers().is_empty(), "no endpoint is left");
    assert_eq!(lab.ipam_allocations(), 1, "only the router holds an IP");
    let cache = lab.varlib.join("cni/results");
    let cached = std::fs::read_dir(&cache).map_or(0, Iterator::count);
    assert_eq!(cached, 0, "libcni's cache in {}", cache.display());

    // GC: c and d through cnitool, e straight through cilium-cni (a runtime forgot it).
    for pod in ["c", "d", "e"] {
        lab.make_pod(pod);
    }
    for pod in ["c", "d"] {
        let out = lab.cnitool("add", "cilium", pod, None);
        check_add_result(&lab, pod, &out, "1.1.0");
    }
    let add_e = |lab: &Lab| {
        let out = lab.plugin("ADD", "ctr-e", "e", &lab.plugin_conf(json!({})));
        assert!(out.success, "ADD e: {out:?}");
    };
    add_e(&lab);
    let e_veth = cilium_cni::host_veth_name("ctr-e", "eth0");
    assert!(lab.node_link_exists(&e_veth));
    assert_eq!(lab.ipam_allocations(), 4);
    // GC as libcni sends it with valid attachments: c and d stay, e goes.
    let valid = json!([
        {"containerID": lab.container_id("c"), "ifname": "eth0"},
        {"containerID": lab.container_id("d"), "ifname": "eth0"},
    ]);
    let gc = lab.plugin(
        "GC",
        "",
        "e",
        &lab.plugin_conf(json!({"cni.dev/valid-attachments": valid, "cni.dev/attachments": valid})),
    );
    assert!(gc.success && gc.output.is_null(), "GC: {gc:?}");
    let mut want = vec![lab.container_id("c"), lab.container_id("d")];
    want.sort();
    assert_eq!(lab.endpoint_containers(), want, "GC kept the valid ones");
    assert!(!lab.node_link_exists(&e_veth), "GC removed e's veth");
    assert!(lab.node_link_exists(&lab.host_veth("c")));
    assert_eq!(lab.ipam_allocations(), 3, "GC released e's IP");
    for pod in ["c", "d"] {
        let out = lab.cnitool("check", "cilium", pod, None);
        assert!(out.ok, "check {pod} after GC: {out}");
    }
    // `cnitool gc` sends no valid attachment: libcni DELs the ones it cached (c and d),
    // then the plugin's GC removes the rest (e, made again).
    add_e(&lab);
    let out = lab.cnitool("gc", "cilium", "c", None);
    assert!(out.ok, "gc: {out}");
    assert!(lab.endpoint_containers().is_empty(), "everything went");
    assert!(lab.lxc_links().is_empty(), "{:?}", lab.lxc_links());
    assert_eq!(lab.ipam_allocations(), 1);

    // STATUS with the agent down: an error, code 50 (the plugin cannot serve ADD).
    lab.base.stop_agent(0);
    let out = lab.cnitool("status", "cilium", "a", None);
    assert_cni_error(&out, "the cilium agent is not available");
    let direct = lab.plugin("STATUS", "", "a", &lab.plugin_conf(json!({})));
    assert!(
        !direct.success && direct.output["code"] == cilium_cni::spec::code::UNAVAILABLE,
        "{direct:?}"
    );
    eprintln!("cnitool add/check/del/gc/status: {:?}", started.elapsed());
}

#[test]
fn privileged_cnitool_chain_portmap_bandwidth() {
    if !is_root_or_skip("privileged_cnitool_chain_portmap_bandwidth") {
        return;
    }
    let Some(tool) = cilium_k8s::testing::upstream_client("cnitool") else {
        return;
    };
    let started = Instant::now();
    let mut lab = Lab::new('h', tool);
    lab.make_pod("web");
    let bandwidth = json!({
        "ingressRate": 10_000_000, "ingressBurst": 1_000_000,
        "egressRate": 10_000_000, "egressBurst": 1_000_000,
    });
    let mut cap: Value = serde_json::from_str(CAP_PORTMAP).expect("json");
    cap["bandwidth"] = bandwidth;
    let cap = cap.to_string();

    // ADD through the chain: cilium-cni's result is each next plugin's prevResult, and
    // comes out the end.
    let out = lab.cnitool("add", "cilium-chain", "web", Some(&cap));
    let (result, web) = check_add_result(&lab, "web", &out, "1.0.0");
    assert_eq!(
        result["interfaces"].as_array().map(Vec::len),
        Some(3),
        "{result}"
    );
    let host = lab.host_veth("web");

    // portmap: the DNAT of hostPort 8080 to the pod's port 80, in the node's namespace.
    let nat = lab.in_node(&["iptables", "-t", "nat", "-S"]);
    assert!(
        nat.lines().any(
            |l| l.contains("--dport 8080") && l.contains(&format!("--to-destination {web}:80"))
        ),
        "{nat}"
    );
    // ... and it carries traffic: the lab's bridge reaches the pod at the node's 8080.
    let _served = cilium_bpf::testing::tcp_echo_server(&lab.base.pod_ns("web"), web, 80);
    let node_ip = lab.node().ip;
    let lan = lab.base.lan.clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cilium_bpf::testing::tcp_echo_reaches(&lan, node_ip, 8080) {
        assert!(
            Instant::now() < deadline,
            "{node_ip}:8080 does not reach {web}:80"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // bandwidth: a tbf on the host-side veth (ingress), and one on the IFB device that
    // the veth's ingress is redirected to (egress).
    let qdiscs = lab.in_node(&["tc", "qdisc", "show", "dev", &host]);
    assert!(qdiscs.contains("qdisc tbf"), "{qdiscs}");
    let ifb: Vec<String> = run(&[
        "ip",
        "-n",
        &lab.node().ns,
        "-o",
        "link",
        "show",
        "type",
        "ifb",
    ])
    .lines()
    .filter_map(|l| l.split(": ").nth(1).map(str::to_owned))
    .collect();
    assert_eq!(ifb.len(), 1, "one IFB device: {ifb:?}");
    assert_eq!(
        result["interfaces"][2]["name"], ifb[0],
        "bandwidth's, in the result"
    );
    let ifb_qdiscs = lab.in_node(&["tc", "qdisc", "show", "dev", &ifb[0]]);
    assert!(ifb_qdiscs.contains("qdisc tbf"), "{ifb_qdiscs}");

    // CHECK through the chain: each plugin gets the cached result, in order. Debian's
    // portmap (1.1.1) fails CHECK for an IPv4-only pod, looking for an ip6tables chain it
    // never made (containernetworking/plugins#819, fixed in later releases): then the
    // failure must be that one, after cilium-cni's CHECK passed.
    let out = lab.cnitool("check", "cilium-chain", "web", Some(&cap));
    assert!(
        out.ok
            || (out
                .stderr
                .starts_with("could not check ipv6 dnat: chain CNI-DN-")
                && out
                    .stderr
                    .trim_end()
                    .ends_with("not found in iptables table nat")),
        "check: {out}"
    );
    // cilium-cni's CHECK with the chain's result (bandwidth's IFB device in it) as
    // prevResult, as libcni hands it over.
    let mut conf = lab.plugin_conf(json!({"prevResult": result}));
    conf["name"] = json!("cilium-chain");
    conf["cniVersion"] = json!("1.0.0");
    let direct = lab.plugin("CHECK", &lab.container_id("web"), "web", &conf);
    assert!(direct.success, "{direct:?}");

    // DEL through the chain, in reverse: bandwidth, portmap, cilium-cni; then again.
    for round in 0..2 {
        let out = lab.cnitool("del", "cilium-chain", "web", Some(&cap));
        assert!(out.ok, "del ({round}): {out}");
    }
    let nat = lab.in_node(&["iptables", "-t", "nat", "-S"]);
    assert!(!nat.contains("--dport 8080"), "the DNAT is gone: {nat}");
    assert!(!lab.node_link_exists(&ifb[0]), "the IFB device is gone");
    assert!(!lab.node_link_exists(&host), "the veth is gone");
    assert!(lab.endpoint_containers().is_empty(), "no endpoint is left");
    assert_eq!(lab.ipam_allocations(), 1);
    eprintln!("cnitool chain: {:?}", started.elapsed());
}
