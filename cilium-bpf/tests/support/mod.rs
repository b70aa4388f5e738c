// SPDX-License-Identifier: Apache-2.0

//! Test environments for the privileged tests: a node network namespace with pod
//! namespaces wired by veth pairs (host side `lxc…` in the node, `eth0` in the pod), a
//! private BPF file system, and a guard that removes all of it on drop, even on panic.
//!
//! Nothing here touches the root network namespace: links, addresses and routes are made
//! inside namespaces created here, named `crs<pid>x<n>-…`.

#![allow(dead_code, reason = "each test file uses a different part")]
#![allow(unreachable_pub, reason = "a test-support module shared by test files")]

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

pub use cilium_bpf::testing::{in_netns, is_root_or_skip, run, spawn_in_netns};

/// A pod wired to the node.
#[derive(Debug, Clone)]
pub struct Pod {
    /// Its network namespace.
    pub netns: String,
    /// Host-side veth name (in the node namespace).
    pub lxc: String,
    /// Host-side veth ifindex (in the node namespace).
    pub lxc_ifindex: u32,
    /// Host-side veth MAC.
    pub lxc_mac: [u8; 6],
    /// The pod's eth0 MAC.
    pub mac: [u8; 6],
    /// The pod's IP.
    pub ip: Ipv4Addr,
}

/// A node namespace, its pods, and a private bpffs; all removed on drop.
#[derive(Debug)]
pub struct TestNode {
    /// Name prefix of everything created.
    pub prefix: String,
    /// The node's network namespace.
    pub node: String,
    /// The pods.
    pub pods: Vec<Pod>,
    /// The private BPF file system (the datapath's bpf-root).
    pub bpffs: PathBuf,
    namespaces: Vec<String>,
    mounted: bool,
}

/// The router IP the pods use as gateway.
pub const ROUTER: Ipv4Addr = Ipv4Addr::new(172, 20, 0, 254);

/// The router IP of the pods in 172.20.`subnet`.0/24.
pub fn router_of(subnet: u8) -> Ipv4Addr {
    Ipv4Addr::new(172, 20, subnet, 254)
}

fn link_info(ns: &str, dev: &str) -> (u32, [u8; 6]) {
    let out = run(&["ip", "-n", ns, "-o", "link", "show", "dev", dev]);
    let ifindex: u32 = out
        .split(':')
        .next()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ifindex in {out}"));
    let mac_str = out
        .split("link/ether ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no MAC in {out}"));
    let mut mac = [0u8; 6];
    for (i, part) in mac_str.split(':').enumerate() {
        mac[i] = u8::from_str_radix(part, 16).expect("hex MAC");
    }
    (ifindex, mac)
}

impl TestNode {
    /// Creates the node namespace and `pods` pods (172.20.0.10, .11, ...), and mounts a
    /// private bpffs.
    pub fn new(pods: usize) -> Self {
        Self::new_in_subnet(pods, 0)
    }

    /// As [`TestNode::new`], with pods in 172.20.`subnet`.0/24 and the router at .254.
    pub fn new_in_subnet(pods: usize, subnet: u8) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let prefix = format!(
            "crs{}x{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let bpffs = std::env::temp_dir().join(format!("{prefix}-bpffs"));
        let mut env = TestNode {
            node: format!("{prefix}-node"),
            prefix: prefix.clone(),
            pods: Vec::new(),
            bpffs: bpffs.clone(),
            namespaces: Vec::new(),
            mounted: false,
        };
        std::fs::create_dir_all(&bpffs).expect("bpffs dir");
        run(&[
            "mount",
            "-t",
            "bpf",
            "bpf",
            bpffs.to_str().expect("utf-8 path"),
        ]);
        env.mounted = true;
        let node = env.node.clone();
        run(&["ip", "netns", "add", &node]);
        env.namespaces.push(node.clone());
        run(&["ip", "-n", &node, "link", "set", "lo", "up"]);
        for i in 0..pods {
            let netns = format!("{prefix}-pod{i}");
            run(&["ip", "netns", "add", &netns]);
            env.namespaces.push(netns.clone());
            let lxc = format!("lxc{:012x}", i + 1);
            let ip = Ipv4Addr::new(172, 20, subnet, 10 + i as u8);
            let router = router_of(subnet);
            run(&[
                "ip", "-n", &node, "link", "add", &lxc, "type", "veth", "peer", "name", "tmp0",
            ]);
            run(&["ip", "-n", &node, "link", "set", "tmp0", "netns", &netns]);
            run(&["ip", "-n", &netns, "link", "set", "tmp0", "name", "eth0"]);
            run(&["ip", "-n", &netns, "link", "set", "lo", "up"]);
            run(&[
                "ip",
                "-n",
                &netns,
                "addr",
                "add",
                &format!("{ip}/32"),
                "dev",
                "eth0",
            ]);
            run(&["ip", "-n", &netns, "link", "set", "eth0", "up"]);
            run(&["ip", "-n", &node, "link", "set", &lxc, "up"]);
            run(&[
                "ip",
                "-n",
                &netns,
                "route",
                "add",
                &format!("{router}/32"),
                "dev",
                "eth0",
                "scope",
                "link",
            ]);
            run(&[
                "ip",
                "-n",
                &netns,
                "route",
                "add",
                "default",
                "via",
                &router.to_string(),
                "dev",
                "eth0",
            ]);
            let (lxc_ifindex, lxc_mac) = link_info(&node, &lxc);
            let (_, mac) = link_info(&netns, "eth0");
            env.pods.push(Pod {
                netns,
                lxc,
                lxc_ifindex,
                lxc_mac,
                mac,
                ip,
            });
        }
        env
    }

    /// Adds an "outside" namespace linked to the node by a veth: the node's `eth0` gets
    /// `node_ip/24`, the outside's `eth0` gets `outside_ip/24`; the node forwards. Returns
    /// the outside namespace's name.
    pub fn add_outside(&mut self, node_ip: Ipv4Addr, outside_ip: Ipv4Addr) -> String {
        let outside = format!("{}-out", self.prefix);
        run(&["ip", "netns", "add", &outside]);
        self.namespaces.push(outside.clone());
        let node = self.node.clone();
        run(&[
            "ip", "-n", &node, "link", "add", "eth0", "type", "veth", "peer", "name", "tmp0",
        ]);
        run(&["ip", "-n", &node, "link", "set", "tmp0", "netns", &outside]);
        run(&["ip", "-n", &outside, "link", "set", "tmp0", "name", "eth0"]);
        run(&[
            "ip",
            "-n",
            &node,
            "addr",
            "add",
            &format!("{node_ip}/24"),
            "dev",
            "eth0",
        ]);
        run(&[
            "ip",
            "-n",
            &outside,
            "addr",
            "add",
            &format!("{outside_ip}/24"),
            "dev",
            "eth0",
        ]);
        run(&["ip", "-n", &node, "link", "set", "eth0", "up"]);
        run(&["ip", "-n", &outside, "link", "set", "eth0", "up"]);
        run(&["ip", "-n", &outside, "link", "set", "lo", "up"]);
        for (key, value) in [
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
        ] {
            run(&[
                "ip",
                "netns",
                "exec",
                &node,
                "sysctl",
                "-qw",
                &format!("{key}={value}"),
            ]);
        }
        for p in &self.pods {
            run(&[
                "ip",
                "netns",
                "exec",
                &node,
                "sysctl",
                "-qw",
                &format!("net.ipv4.conf.{}.rp_filter=0", p.lxc),
            ]);
        }
        outside
    }

    /// Runs a command inside a namespace; returns whether it succeeded.
    pub fn exec_ok(&self, netns: &str, args: &[&str]) -> bool {
        Command::new("ip")
            .args(["netns", "exec", netns])
            .args(args)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        if self.mounted {
            let _ = Command::new("umount").arg(&self.bpffs).status();
        }
        let _ = std::fs::remove_dir(&self.bpffs);
    }
}

/// A private BPF file system, unmounted and removed on drop.
#[derive(Debug)]
pub struct BpfFs {
    /// Where it is mounted.
    pub path: PathBuf,
}

impl BpfFs {
    /// Mounts a new bpffs under the temporary directory.
    pub fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "crs{}b{}-bpffs",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&path).expect("bpffs dir");
        run(&[
            "mount",
            "-t",
            "bpf",
            "bpf",
            path.to_str().expect("utf-8 path"),
        ]);
        BpfFs { path }
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// A tiny HTTP server in a pod: answers every request with `Hostname: <name>` (like the
/// seed's traefik/whoami) and closes the connection. Stopped on drop.
#[derive(Debug)]
pub struct HttpServer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    addr: std::net::SocketAddr,
    netns: String,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl HttpServer {
    /// Starts serving on `ip:port` inside `netns`.
    pub fn start(netns: &str, ip: Ipv4Addr, port: u16, hostname: &str) -> Self {
        use std::io::{Read, Write};
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let addr = std::net::SocketAddr::from((ip, port));
        let (tx, rx) = std::sync::mpsc::channel();
        let (flag, name) = (stop.clone(), hostname.to_owned());
        let handle = spawn_in_netns(netns, move || {
            let listener = std::net::TcpListener::bind(addr).expect("bind");
            tx.send(()).expect("ready");
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(2)));
                let mut buf = [0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let peer = conn.peer_addr().map(|a| a.to_string()).unwrap_or_default();
                let body = format!("Hostname: {name}\nRemoteAddr: {peer}\n");
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .expect("server ready");
        HttpServer {
            stop,
            addr,
            netns: netns.to_owned(),
            handle: Some(handle),
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let addr = self.addr;
        // Wake the accept loop with one last connection from inside the pod.
        let _ = spawn_in_netns(&self.netns, move || {
            let _ = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(1));
        })
        .join();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Runs `curl` inside a namespace; returns its output when it succeeds.
pub fn curl(netns: &str, args: &[&str]) -> Option<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "curl", "-sS", "--max-time", "3"])
        .args(args)
        .output()
        .map_err(|e| eprintln!("running curl in {netns}: {e}"))
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "curl {args:?} in {netns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Loads the datapath in the node namespace, attaches it to every pod and records the
/// pods in cilium_lxc (endpoint ids 100.., identities 256..).
pub fn start_datapath(env: &TestNode, node_ip: Ipv4Addr) -> cilium_bpf::Datapath {
    let config = cilium_bpf::DatapathConfig::new(&env.bpffs, node_ip, ROUTER);
    start_datapath_with(env, config, None)
}

/// As [`start_datapath`], with a configuration, and the node device to attach to.
pub fn start_datapath_with(
    env: &TestNode,
    config: cilium_bpf::DatapathConfig,
    netdev: Option<&str>,
) -> cilium_bpf::Datapath {
    use cilium_bpf::types::{EndpointInfo, mac_to_u64};
    let pods = env.pods.clone();
    let netdev = netdev.map(str::to_owned);
    let dp = in_netns(&env.node, move || {
        let mut dp = cilium_bpf::Datapath::load(config).expect("load");
        for p in &pods {
            assert_eq!(
                dp.attach_endpoint(&p.lxc).expect("attach"),
                cilium_bpf::Attached::New
            );
        }
        if let Some(dev) = netdev {
            assert_eq!(
                dp.attach_netdev(&dev).expect("attach netdev"),
                cilium_bpf::Attached::New
            );
        }
        dp
    });
    let mut maps = cilium_bpf::maps::Maps::open(&env.bpffs).expect("open pinned maps");
    for (i, p) in env.pods.iter().enumerate() {
        let info = EndpointInfo {
            ifindex: p.lxc_ifindex,
            lxc_id: 100 + i as u16,
            mac: mac_to_u64(p.mac),
            node_mac: mac_to_u64(p.lxc_mac),
            sec_id: 256 + i as u32,
            ..EndpointInfo::default()
        };
        maps.endpoints
            .upsert_ipv4(p.ip, &info)
            .expect("insert endpoint");
    }
    dp
}

/// Several nodes on one underlay (a bridge in a namespace of its own), and an "outside"
/// namespace on the same underlay; node `i` is 192.168.10.(101 + i) with pods in
/// 172.20.`i`.0/24 and routes to the other nodes' pod CIDRs (native routing). The outside
/// is 192.168.10.200. Everything is removed on drop.
#[derive(Debug)]
pub struct TestCluster {
    /// The nodes.
    pub nodes: Vec<TestNode>,
    /// The outside namespace.
    pub outside: String,
    extra: Vec<String>,
}

/// The address of node `i` on the underlay.
pub fn node_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 10, 101 + i as u8)
}

/// The outside namespace's address.
pub const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 10, 200);

impl TestCluster {
    /// Builds `nodes` nodes with `pods` pods each.
    pub fn new(nodes: usize, pods: usize) -> Self {
        let nodes: Vec<TestNode> = (0..nodes)
            .map(|i| TestNode::new_in_subnet(pods, i as u8))
            .collect();
        let prefix = nodes[0].prefix.clone();
        let underlay = format!("{prefix}-ul");
        let outside = format!("{prefix}-out");
        let mut cluster = TestCluster {
            nodes,
            outside: outside.clone(),
            extra: Vec::new(),
        };
        run(&["ip", "netns", "add", &underlay]);
        cluster.extra.push(underlay.clone());
        run(&["ip", "netns", "add", &outside]);
        cluster.extra.push(outside.clone());
        run(&[
            "ip", "-n", &underlay, "link", "add", "br0", "type", "bridge",
        ]);
        run(&["ip", "-n", &underlay, "link", "set", "br0", "up"]);
        let plug = |ns: &str, port: &str, addr: Ipv4Addr| {
            run(&[
                "ip", "-n", &underlay, "link", "add", port, "type", "veth", "peer", "name", "tmp0",
            ]);
            run(&["ip", "-n", &underlay, "link", "set", "tmp0", "netns", ns]);
            run(&["ip", "-n", ns, "link", "set", "tmp0", "name", "eth0"]);
            run(&["ip", "-n", &underlay, "link", "set", port, "master", "br0"]);
            run(&["ip", "-n", &underlay, "link", "set", port, "up"]);
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ]);
            run(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        };
        for (i, node) in cluster.nodes.iter().enumerate() {
            plug(&node.node, &format!("u{i}"), node_ip(i));
        }
        plug(&outside, "uout", OUTSIDE_IP);
        let count = cluster.nodes.len();
        for (i, node) in cluster.nodes.iter().enumerate() {
            for (key, value) in [
                ("net.ipv4.ip_forward", "1"),
                ("net.ipv4.conf.all.rp_filter", "0"),
                ("net.ipv4.conf.default.rp_filter", "0"),
                ("net.ipv4.conf.eth0.rp_filter", "0"),
            ] {
                run(&[
                    "ip",
                    "netns",
                    "exec",
                    &node.node,
                    "sysctl",
                    "-qw",
                    &format!("{key}={value}"),
                ]);
            }
            for p in &node.pods {
                run(&[
                    "ip",
                    "netns",
                    "exec",
                    &node.node,
                    "sysctl",
                    "-qw",
                    &format!("net.ipv4.conf.{}.rp_filter=0", p.lxc),
                ]);
            }
            for j in (0..count).filter(|j| *j != i) {
                run(&[
                    "ip",
                    "-n",
                    &node.node,
                    "route",
                    "add",
                    &format!("172.20.{j}.0/24"),
                    "via",
                    &node_ip(j).to_string(),
                ]);
            }
        }
        cluster
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for ns in self.extra.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}
