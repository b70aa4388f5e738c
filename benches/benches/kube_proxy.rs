// SPDX-License-Identifier: Apache-2.0

//! kube-proxy replacement against the real kube-proxy, in one run on this machine.
//!
//! - Connect latency (p50, p99) and connections/s from a client pod to the first and the
//!   last of N ClusterIPs, N in {1, 1000, 10000}, all with one backend:
//!   - `kube-proxy-iptables` and `kube-proxy-nftables`: upstream kube-proxy (v1.37.2, built
//!     from the pinned module) with `--proxy-mode=iptables` / `--proxy-mode=nftables`, flags
//!     only as `privileged_kube_proxy` (cilium-k8s/tests) runs it, in a node namespace of a
//!     control plane with node IPAM; the client and backend pods wired by Debian's `bridge`
//!     plugin on cni0; the Services and EndpointSlices created through the API
//!     (`CREATE_CONCURRENCY` `kubectl create` of a List at once).
//!   - `ours`: the BPF datapath (`from_container`, services in `cilium_lb4_services_v2`).
//!   - `emulated-legacy`: kube-proxy's rule shape (KUBE-SERVICES -> KUBE-SVC-* ->
//!     KUBE-SEP-*) written by this bench and loaded with iptables-legacy-restore in the
//!     client's namespace, kept for the backend the real kube-proxy does not use here
//!     (its `iptables` is iptables-nft).
//! - Programming time: N services from empty, and one more at N = 10,000. kube-proxy: from
//!   the first create through the API until its rules (the nat table's KUBE-SERVICES, or
//!   the `service-ips` map) hold all N, polled every 20 ms (each poll lists the rules, so a
//!   figure is late by up to one listing); at most `PROGRAM_TIMEOUT`, else what was
//!   reached is printed. Ours: LbManager + ServiceWriter from the Service objects (no API);
//!   emulated-legacy: iptables-legacy-restore (`--noflush` for one more).
//! - Every figure of ours is also printed as a ratio against the real kube-proxy's in the
//!   same run, ours / theirs (below 1: ours is faster).
//!
//! Needs root, iptables, nft, Debian's CNI plugins and the Kubernetes binaries
//! (`cargo xtask kube-build`); prints "skipped: ..." otherwise. Everything runs in
//! namespaces and a bpffs this bench creates (prefix `crsk<pid>`) and removes, even on
//! panic; nothing is changed in the root namespace.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cilium_bpf::lb::ServiceWriter;
use cilium_bpf::types::{EndpointInfo, mac_to_u64};
use cilium_bpf::{Datapath, DatapathConfig};
use cilium_k8s::testing::{ControlPlane, NodeIpam, Options, SEED_CLUSTER_CIDR};
use cilium_lb::maglev::L4Proto;
use cilium_lb::manager::{LbConfig, LbManager};
use cilium_lb::service::{Backend, L3n4Addr, Service, ServiceType};

const CONNECTS: usize = 300;
const SERVER: Ipv4Addr = Ipv4Addr::new(172, 20, 0, 11);
const CLIENT: Ipv4Addr = Ipv4Addr::new(172, 20, 0, 10);
const ROUTER: Ipv4Addr = Ipv4Addr::new(172, 20, 0, 254);

fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn vip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(0x0a60_0000u32 + 1 + i as u32)
}

/// Namespaces (and an optional bpffs) removed on drop.
struct Env {
    namespaces: Vec<String>,
    bpffs: Option<std::path::PathBuf>,
}

impl Drop for Env {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        if let Some(fs) = &self.bpffs {
            let _ = Command::new("umount").arg(fs).status();
            let _ = std::fs::remove_dir(fs);
        }
    }
}

fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("netns");
        // SAFETY: an open netns fd that outlives the call; only this thread moves.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns");
        f()
    })
}

/// A server on `ip`:8080 that accepts and closes connections until one sends a byte.
fn server(ns: &str, ip: Ipv4Addr) {
    let (tx, rx) = std::sync::mpsc::channel();
    in_netns(ns, move || {
        let l = TcpListener::bind((ip, 8080)).expect("bind");
        tx.send(()).expect("ready");
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let mut b = [0u8; 1];
            if c.read(&mut b).ok() == Some(1) {
                break; // a byte means "stop"
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("server ready");
}

/// Connect latencies (microseconds) to `target` from `ns`.
fn connects(ns: &str, target: Ipv4Addr) -> Vec<f64> {
    in_netns(ns, move || {
        let addr = SocketAddr::from((target, 80));
        (0..CONNECTS)
            .map(|_| {
                let t = Instant::now();
                let c = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
                let us = t.elapsed().as_secs_f64() * 1e6;
                drop(c);
                us
            })
            .collect()
    })
    .join()
    .expect("client")
}

fn stop_server(ns: &str, via: SocketAddr) {
    in_netns(ns, move || {
        if let Ok(mut c) = TcpStream::connect_timeout(&via, Duration::from_secs(1)) {
            use std::io::Write;
            let _ = c.write_all(b"x");
        }
    })
    .join()
    .expect("stop");
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let p = |q: f64| v[((v.len() - 1) as f64 * q) as usize];
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    (p(0.5), p(0.99), 1e6 / mean)
}

/// Two namespaces, client and server, on a veth pair (the server is reachable directly).
fn pair(prefix: &str) -> (Env, String, String) {
    let (c, s) = (format!("{prefix}-c"), format!("{prefix}-s"));
    let env = Env {
        namespaces: vec![c.clone(), s.clone()],
        bpffs: None,
    };
    for ns in [&c, &s] {
        run(&["ip", "netns", "add", ns]);
        run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
    }
    run(&[
        "ip", "-n", &c, "link", "add", "eth0", "type", "veth", "peer", "name", "tmp0",
    ]);
    run(&["ip", "-n", &c, "link", "set", "tmp0", "netns", &s]);
    run(&["ip", "-n", &s, "link", "set", "tmp0", "name", "eth0"]);
    run(&[
        "ip",
        "-n",
        &c,
        "addr",
        "add",
        &format!("{CLIENT}/24"),
        "dev",
        "eth0",
    ]);
    run(&[
        "ip",
        "-n",
        &s,
        "addr",
        "add",
        &format!("{SERVER}/24"),
        "dev",
        "eth0",
    ]);
    run(&["ip", "-n", &c, "link", "set", "eth0", "up"]);
    run(&["ip", "-n", &s, "link", "set", "eth0", "up"]);
    run(&[
        "ip",
        "-n",
        &c,
        "route",
        "add",
        "10.96.0.0/16",
        "dev",
        "eth0",
    ]);
    (env, c, s)
}

/// kube-proxy's rules for services `from..to` (two endpoints each, as a Deployment of 2).
fn kube_rules(from: usize, to: usize, header: bool) -> String {
    let mut r = String::new();
    if header {
        r.push_str("*nat\n:KUBE-SERVICES - [0:0]\n-A OUTPUT -j KUBE-SERVICES\n");
    } else {
        r.push_str("*nat\n");
    }
    for i in from..to {
        r.push_str(&format!(
            ":KUBE-SVC-{i} - [0:0]\n:KUBE-SEP-{i}A - [0:0]\n:KUBE-SEP-{i}B - [0:0]\n"
        ));
    }
    for i in from..to {
        r.push_str(&format!(
            "-A KUBE-SERVICES -d {}/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-{i}\n\
             -A KUBE-SVC-{i} -m statistic --mode random --probability 0.5 -j KUBE-SEP-{i}A\n\
             -A KUBE-SVC-{i} -j KUBE-SEP-{i}B\n\
             -A KUBE-SEP-{i}A -p tcp -m tcp -j DNAT --to-destination {SERVER}:8080\n\
             -A KUBE-SEP-{i}B -p tcp -m tcp -j DNAT --to-destination {SERVER}:8080\n",
            vip(i)
        ));
    }
    r.push_str("COMMIT\n");
    r
}

fn restore(tool: &str, ns: &str, rules: &str, noflush: bool) -> Duration {
    use std::io::Write;
    let t = Instant::now();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, tool]);
    if noflush {
        cmd.arg("--noflush");
    }
    let mut child = cmd.stdin(Stdio::piped()).spawn().expect("iptables-restore");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(rules.as_bytes())
        .expect("write rules");
    assert!(child.wait().expect("wait").success(), "{tool} failed");
    t.elapsed()
}

/// p50 and p99 (microseconds) and connections/s.
type Lat = (f64, f64, f64);

/// One setup's figures at one N; `None` where it was not measured or a bound hit.
#[derive(Default)]
struct Figures {
    first: Option<Lat>,
    last: Option<Lat>,
    load_ms: Option<f64>,
    /// kube-proxy only: the part of `load_ms` after the last create returned.
    after_api_ms: Option<f64>,
    add_ms: Option<f64>,
}

/// The emulation: kube-proxy's rule shape loaded with `tool` in the client's namespace.
fn iptables_mode(tool: &str, label: &str, n: usize, prefix: &str) -> Figures {
    let (_env, c, s) = pair(prefix);
    server(&s, SERVER);
    let load = restore(tool, &c, &kube_rules(0, n, true), false);
    println!(
        "kube_proxy_program_load_N{n}/{label:<20} {:>10.1} ms",
        load.as_secs_f64() * 1e3
    );
    let mut fig = Figures {
        load_ms: Some(load.as_secs_f64() * 1e3),
        ..Figures::default()
    };
    if n == 10_000 {
        let add = restore(tool, &c, &kube_rules(n, n + 1, false), true);
        println!(
            "kube_proxy_program_add_one_N{n}/{label:<20} {:>10.2} ms",
            add.as_secs_f64() * 1e3
        );
        fig.add_ms = Some(add.as_secs_f64() * 1e3);
    }
    fig.first = Some(stats(connects(&c, vip(0))));
    fig.last = Some(stats(connects(&c, vip(n - 1))));
    stop_server(&c, SocketAddr::from((vip(0), 80)));
    fig
}

fn bpf_mode(n: usize, prefix: &str) -> Figures {
    let node = format!("{prefix}-n");
    let (c, s) = (format!("{prefix}-c"), format!("{prefix}-s"));
    let fs = std::env::temp_dir().join(format!("{prefix}-bpffs"));
    std::fs::create_dir_all(&fs).expect("bpffs dir");
    run(&["mount", "-t", "bpf", "bpf", fs.to_str().expect("utf-8")]);
    let _env = Env {
        namespaces: vec![node.clone(), c.clone(), s.clone()],
        bpffs: Some(fs.clone()),
    };
    run(&["ip", "netns", "add", &node]);
    let wire = |pod: &str, lxc: &str, ip: Ipv4Addr| -> (u32, [u8; 6], [u8; 6]) {
        run(&["ip", "netns", "add", pod]);
        run(&[
            "ip", "-n", &node, "link", "add", lxc, "type", "veth", "peer", "name", "tmp0",
        ]);
        run(&["ip", "-n", &node, "link", "set", "tmp0", "netns", pod]);
        run(&["ip", "-n", pod, "link", "set", "tmp0", "name", "eth0"]);
        run(&["ip", "-n", pod, "link", "set", "lo", "up"]);
        run(&[
            "ip",
            "-n",
            pod,
            "addr",
            "add",
            &format!("{ip}/32"),
            "dev",
            "eth0",
        ]);
        run(&["ip", "-n", pod, "link", "set", "eth0", "up"]);
        run(&["ip", "-n", &node, "link", "set", lxc, "up"]);
        run(&[
            "ip",
            "-n",
            pod,
            "route",
            "add",
            &format!("{ROUTER}/32"),
            "dev",
            "eth0",
            "scope",
            "link",
        ]);
        run(&[
            "ip",
            "-n",
            pod,
            "route",
            "add",
            "default",
            "via",
            &ROUTER.to_string(),
        ]);
        let link = |ns: &str, dev: &str| -> (u32, [u8; 6]) {
            let out = run(&["ip", "-n", ns, "-o", "link", "show", "dev", dev]);
            let idx = out
                .split(':')
                .next()
                .and_then(|s| s.trim().parse().ok())
                .expect("ifindex");
            let mac_s = out
                .split("link/ether ")
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
                .expect("mac");
            let mut mac = [0u8; 6];
            for (i, p) in mac_s.split(':').enumerate() {
                mac[i] = u8::from_str_radix(p, 16).expect("hex");
            }
            (idx, mac)
        };
        let (idx, lxc_mac) = link(&node, lxc);
        let (_, mac) = link(pod, "eth0");
        (idx, lxc_mac, mac)
    };
    let client = wire(&c, "lxc000000000001", CLIENT);
    let serv = wire(&s, "lxc000000000002", SERVER);
    let root = fs.clone();
    let dp: Datapath = in_netns(&node, move || {
        let mut dp = Datapath::load(DatapathConfig::new(
            &root,
            Ipv4Addr::new(192, 168, 10, 100),
            ROUTER,
        ))
        .expect("load");
        dp.attach_endpoint("lxc000000000001").expect("attach");
        dp.attach_endpoint("lxc000000000002").expect("attach");
        dp
    })
    .join()
    .expect("datapath");
    let mut maps = cilium_bpf::maps::Maps::open(&fs).expect("maps");
    for (i, (ip, (idx, lxc_mac, mac))) in [(CLIENT, client), (SERVER, serv)].into_iter().enumerate()
    {
        let info = EndpointInfo {
            ifindex: idx,
            lxc_id: 10 + i as u16,
            mac: mac_to_u64(mac),
            node_mac: mac_to_u64(lxc_mac),
            sec_id: 300 + i as u32,
            ..EndpointInfo::default()
        };
        maps.endpoints.upsert_ipv4(ip, &info).expect("endpoint");
    }
    let service = |i: usize| {
        let mut svc = Service::new(
            "bench",
            L3n4Addr::new(vip(i).into(), 80, L4Proto::Tcp),
            ServiceType::ClusterIP,
        );
        svc.backends = vec![Backend::new(L3n4Addr::new(
            SERVER.into(),
            8080,
            L4Proto::Tcp,
        ))];
        svc
    };
    let services: Vec<Service> = (0..n).map(service).collect();
    let mut lb = LbManager::new(LbConfig::default());
    let mut writer = ServiceWriter::open(&fs).expect("writer");
    let t = Instant::now();
    writer
        .apply(&lb.apply(&services).expect("apply"))
        .expect("write");
    let load = t.elapsed().as_secs_f64() * 1e3;
    println!(
        "kube_proxy_program_load_N{n}/{:<20} {load:>10.1} ms",
        "ours"
    );
    let mut fig = Figures {
        load_ms: Some(load),
        ..Figures::default()
    };
    if n == 10_000 {
        let t = Instant::now();
        writer
            .apply(&lb.upsert(&service(n)).expect("upsert"))
            .expect("write");
        let add = t.elapsed().as_secs_f64() * 1e3;
        println!(
            "kube_proxy_program_add_one_N{n}/{:<20} {add:>10.2} ms",
            "ours"
        );
        fig.add_ms = Some(add);
    }
    server(&s, SERVER);
    fig.first = Some(stats(connects(&c, vip(0))));
    fig.last = Some(stats(connects(&c, vip(n - 1))));
    stop_server(&c, SocketAddr::from((vip(0), 80)));
    drop(dp);
    fig
}

fn euid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(u32::MAX)
}

/// `ours` over `theirs`, e.g. `0.12x`, or `-` when either is missing.
fn ratio(ours: Option<f64>, theirs: Option<f64>) -> String {
    match (ours, theirs) {
        (Some(o), Some(t)) if t > 0.0 => {
            let r = o / t;
            if r >= 0.1 {
                format!("{r:.2}x")
            } else if r >= 0.001 {
                format!("{r:.4}x")
            } else {
                format!("{r:.1e}x")
            }
        }
        _ => "-".into(),
    }
}

/// The figures side by side, each of ours with its ratio against each real kube-proxy's.
fn summary(sizes: &[usize], rows: &[(&str, &[Figures])]) {
    let ours = rows[0].1;
    let theirs = &rows[1..];
    let against = |get: &dyn Fn(&Figures) -> Option<f64>, i: usize| -> String {
        theirs
            .iter()
            .filter(|(name, _)| name.starts_with("kube-proxy"))
            .map(|(name, figs)| format!("ours {} {name}", ratio(get(&ours[i]), get(&figs[i]))))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let fmt = |v: Option<f64>, unit: &str| {
        v.map_or("-".to_owned(), |v| {
            if v < 1.0 {
                format!("{v:.3} {unit}")
            } else {
                format!("{v:.1} {unit}")
            }
        })
    };
    println!("\nkube_proxy summary (ratios: ours / theirs, below 1 is faster)");
    for (i, &n) in sizes.iter().enumerate() {
        for (which, pick) in [("first", 0), ("last", 1)] {
            let lat = |f: &Figures| if pick == 0 { f.first } else { f.last };
            for (name, figs) in rows {
                let l = lat(&figs[i]);
                println!(
                    "kube_proxy_connect_N{n}_{which}/{name:<20} p50 {:>10}  p99 {:>10}",
                    fmt(l.map(|l| l.0), "us"),
                    fmt(l.map(|l| l.1), "us")
                );
            }
            println!(
                "kube_proxy_connect_N{n}_{which} p50: {}; p99: {}",
                against(&|f| lat(f).map(|l| l.0), i),
                against(&|f| lat(f).map(|l| l.1), i)
            );
        }
        for (name, figs) in rows {
            println!(
                "kube_proxy_program_load_N{n}/{name:<20} {:>12}",
                fmt(figs[i].load_ms, "ms")
            );
        }
        println!(
            "kube_proxy_program_load_N{n}: {}",
            against(&|f| f.load_ms, i)
        );
        // kube-proxy's figure includes the API creates; against the part after them only:
        let after: Vec<String> = theirs
            .iter()
            .filter(|(name, figs)| name.starts_with("kube-proxy") && figs[i].after_api_ms.is_some())
            .map(|(name, figs)| {
                format!(
                    "ours {} {name} ({})",
                    ratio(ours[i].load_ms, figs[i].after_api_ms),
                    fmt(figs[i].after_api_ms, "ms")
                )
            })
            .collect();
        println!(
            "kube_proxy_program_load_N{n} after the last API create: {}",
            after.join(", ")
        );
        if n == 10_000 {
            for (name, figs) in rows {
                println!(
                    "kube_proxy_program_add_one_N{n}/{name:<20} {:>12}",
                    fmt(figs[i].add_ms, "ms")
                );
            }
            println!(
                "kube_proxy_program_add_one_N{n}: {}",
                against(&|f| f.add_ms, i)
            );
        }
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("kube_proxy: benchmark");
        return;
    }
    if euid() != 0 {
        println!("kube_proxy: skipped: needs root");
        return;
    }
    let have = |t: &str| {
        Command::new(t)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    for tool in ["iptables-legacy-restore", "iptables-save", "nft"] {
        if !have(tool) {
            println!("kube_proxy: skipped: {tool} not installed");
            return;
        }
    }
    for plugin in ["bridge", "host-local", "portmap"] {
        if !std::path::Path::new(CNI_PATH).join(plugin).exists() {
            println!(
                "kube_proxy: skipped: {CNI_PATH}/{plugin} missing (containernetworking-plugins)"
            );
            return;
        }
    }
    if let Err(e) = cilium_k8s::testing::kube_dir() {
        println!("kube_proxy: skipped: {e}");
        return;
    }
    let sizes = [1usize, 1000, 10_000];
    let prefix = format!("crsk{}", std::process::id());
    let ours: Vec<Figures> = sizes
        .iter()
        .map(|&n| bpf_mode(n, &format!("{prefix}b{n}")))
        .collect();
    let legacy: Vec<Figures> = sizes
        .iter()
        .map(|&n| {
            iptables_mode(
                "iptables-legacy-restore",
                "emulated-legacy",
                n,
                &format!("{prefix}l{n}"),
            )
        })
        .collect();
    let kp_iptables = real_mode(Mode::Iptables, &sizes, &format!("{prefix}ki"));
    let kp_nftables = real_mode(Mode::Nftables, &sizes, &format!("{prefix}kn"));
    summary(
        &sizes,
        &[
            ("ours", &ours),
            (Mode::Iptables.label(), &kp_iptables),
            (Mode::Nftables.label(), &kp_nftables),
            ("emulated-legacy", &legacy),
        ],
    );
}

// ---- the real kube-proxy ----

/// The control plane's address in its namespace, and the node's.
const CP_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 10, 100);
const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 10, 101);
const NODE: &str = "k8s-w1";
/// Debian's reference plugins.
const CNI_PATH: &str = "/usr/lib/cni";
/// The backend's port in pod b, every Service's target port.
const BACKEND_PORT: u16 = 8080;
/// Concurrent `kubectl create` of the Services and EndpointSlices.
const CREATE_CONCURRENCY: usize = 4;
/// How long kube-proxy may take to program N services (or to drop them), and to start.
const PROGRAM_TIMEOUT: Duration = Duration::from_secs(300);
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// kube-proxy's two modes on Linux.
#[derive(Clone, Copy)]
enum Mode {
    Iptables,
    Nftables,
}

impl Mode {
    fn flag(self) -> &'static str {
        match self {
            Mode::Iptables => "--proxy-mode=iptables",
            Mode::Nftables => "--proxy-mode=nftables",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Mode::Iptables => "kube-proxy-iptables",
            Mode::Nftables => "kube-proxy-nftables",
        }
    }
}

/// One node as `privileged_kube_proxy` builds it (cilium-k8s/tests): the control plane in
/// namespace `cp`, kube-proxy in `node` (a veth between them), pods `a` (client) and `b`
/// (backend) wired by Debian's bridge + host-local plugins on the node's podCIDR. Undone on
/// drop, even on panic: the control plane stopped, kube-proxy killed by pid, the namespaces
/// deleted (with them cni0, the veths and every rule kube-proxy wrote), the directory removed.
struct RealNode {
    prefix: String,
    dir: std::path::PathBuf,
    mode: Mode,
    namespaces: Vec<String>,
    cp: Option<ControlPlane>,
    kube_proxy: Option<std::process::Child>,
}

impl Drop for RealNode {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- kube-proxy (last lines)\n{}",
                tail(&self.dir.join("kube-proxy.log"), 30)
            );
        }
        if let Some(mut kp) = self.kube_proxy.take() {
            let _ = kp.kill();
            let _ = kp.wait();
        }
        drop(self.cp.take());
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn tail(path: &std::path::Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Polls `f` every `every` until it returns `Some` or `timeout` passes (then `None`).
fn poll<T>(timeout: Duration, every: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}

impl RealNode {
    fn ns(&self, short: &str) -> String {
        format!("{}-{short}", self.prefix)
    }

    fn cp(&self) -> &ControlPlane {
        self.cp.as_ref().expect("control plane")
    }

    fn add_netns(&mut self, short: &str) -> String {
        let ns = self.ns(short);
        run(&["ip", "netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        run(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        ns
    }

    /// `cmd` in the node namespace; its output, or `None` when it failed.
    fn in_node(&self, cmd: &[&str]) -> Option<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns("node")])
            .args(cmd)
            .stdin(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The part of kube-proxy's rules that has one entry per programmed Service: the nat
    /// table's KUBE-SERVICES (iptables) or the `service-ips` map (nftables).
    fn services_listing(&self) -> String {
        match self.mode {
            Mode::Iptables => self
                .in_node(&["iptables-save", "-t", "nat"])
                .map(|s| {
                    s.lines()
                        .filter(|l| l.starts_with("-A KUBE-SERVICES "))
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .unwrap_or_default(),
            Mode::Nftables => self
                .in_node(&["nft", "list", "map", "ip", "kube-proxy", "service-ips"])
                .unwrap_or_default(),
        }
    }

    /// How many Services named `default/<name_prefix>*` kube-proxy has programmed (with
    /// their endpoints: a Service without endpoints is not in these rules).
    fn programmed(&self, name_prefix: &str) -> usize {
        let needle = format!("default/{name_prefix}");
        self.services_listing().matches(&needle).count()
    }

    fn check_running(&mut self) {
        if let Some(kp) = &mut self.kube_proxy
            && let Ok(Some(status)) = kp.try_wait()
        {
            panic!(
                "kube-proxy exited ({status}); its log:\n{}",
                tail(&self.dir.join("kube-proxy.log"), 40)
            );
        }
    }

    /// One CNI call of `plugin` in the node namespace for pod namespace `pod`.
    fn cni(&self, plugin: &str, pod: &str, conf: &serde_json::Value) -> serde_json::Value {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns("node")])
            .arg(std::path::Path::new(CNI_PATH).join(plugin))
            .env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", pod)
            .env("CNI_NETNS", format!("/run/netns/{pod}"))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", CNI_PATH)
            .env(
                "CNI_ARGS",
                format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}"),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{CNI_PATH}/{plugin}: {e}"));
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(conf.to_string().as_bytes());
        }
        let out = child.wait_with_output().expect("plugin");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "CNI ADD {plugin} for {pod}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null)
    }

    /// CNI ADD of a new pod namespace through `bridge` then `portmap`; its address.
    fn add_pod(&mut self, short: &str, conflist: &serde_json::Value) -> Ipv4Addr {
        let ns = self.add_netns(short);
        let mut prev: Option<serde_json::Value> = None;
        for plugin in conflist["plugins"].as_array().expect("plugins") {
            let mut conf = plugin.clone();
            conf["cniVersion"] = conflist["cniVersion"].clone();
            conf["name"] = conflist["name"].clone();
            if let Some(p) = prev.take() {
                conf["prevResult"] = p;
            }
            let kind = conf["type"].as_str().expect("type").to_owned();
            prev = Some(self.cni(&kind, &ns, &conf));
        }
        let result = prev.expect("a result");
        result["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no IPv4 address for pod {ns} in {result}"))
    }

    /// The control plane, kube-proxy in `mode` and two pods on the bridge.
    fn start(mode: Mode, prefix: &str) -> (RealNode, Ipv4Addr, Ipv4Addr) {
        let dir = std::env::temp_dir().join(prefix);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("bench directory");
        let mut node = RealNode {
            prefix: prefix.to_owned(),
            dir,
            mode,
            namespaces: Vec::new(),
            cp: None,
            kube_proxy: None,
        };
        let cp_ns = node.add_netns("cp");
        let node_ns = node.add_netns("node");
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
            &format!("{CP_IP}/24"),
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
                netns: Some(cp_ns),
                address: CP_IP,
                dir: Some(node.dir.join("control-plane")),
                ..Options::default()
            },
            &NodeIpam::seed(),
        )
        .unwrap_or_else(|e| panic!("the control plane did not start: {e}"));
        node.cp = Some(cp);
        node.cp()
            .add_ready_node(NODE, NODE_IP)
            .unwrap_or_else(|e| panic!("Node {NODE}: {e}"));
        let pod_cidr = poll(START_TIMEOUT, Duration::from_millis(250), || {
            node.cp()
                .kubectl(&["get", "node", NODE, "-o", "jsonpath={.spec.podCIDR}"])
                .ok()
                .filter(|c| !c.is_empty())
        })
        .unwrap_or_else(|| panic!("Node {NODE} got no podCIDR within {START_TIMEOUT:?}"));

        let kubeconfig = node
            .cp()
            .write_kubeconfig("kube-proxy.kubeconfig", "system:kube-proxy", &[])
            .unwrap_or_else(|e| panic!("kube-proxy's kubeconfig: {e}"));
        let log = std::fs::File::create(node.dir.join("kube-proxy.log")).expect("log");
        let kube_proxy = Command::new("ip")
            .args(["netns", "exec", &node_ns])
            .arg(node.cp().kube_proxy_path())
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--hostname-override={NODE}"))
            .arg(mode.flag())
            .arg(format!("--cluster-cidr={SEED_CLUSTER_CIDR}"))
            .args([
                "--masquerade-all",
                // Global to the machine: left alone.
                "--conntrack-max-per-core=0",
                "--conntrack-tcp-timeout-established=0",
                "--conntrack-tcp-timeout-close-wait=0",
                "--oom-score-adj=0",
                "--v=2",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting kube-proxy: {e}"));
        node.kube_proxy = Some(kube_proxy);
        let started = poll(START_TIMEOUT, Duration::from_millis(250), || {
            node.check_running();
            (node.programmed("kubernetes") > 0).then_some(())
        });
        assert!(
            started.is_some(),
            "{} did not program the kubernetes Service within {START_TIMEOUT:?}; log:\n{}",
            mode.label(),
            tail(&node.dir.join("kube-proxy.log"), 30)
        );

        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "cbr0",
            "plugins": [
                {
                    "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": pod_cidr}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": node.dir.join("cni-ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": true}},
            ],
        });
        let a = node.add_pod("a", &conflist);
        let b = node.add_pod("b", &conflist);
        (node, a, b)
    }

    /// Services `<name_prefix>0..count` (port 80 -> 8080) and an EndpointSlice each with
    /// `backend`, created by `CREATE_CONCURRENCY` kubectl at once; the time it took.
    fn create_services(
        &self,
        name_prefix: &str,
        range: std::ops::Range<usize>,
        backend: Ipv4Addr,
    ) -> Duration {
        let object = |i: usize| {
            let name = format!("{name_prefix}{i}");
            [
                serde_json::json!({
                    "apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": name, "namespace": "default",
                                 "labels": {"crs-bench": name_prefix.trim_end_matches('-')}},
                    "spec": {"type": "ClusterIP", "ports": [
                        {"name": "http", "port": 80, "targetPort": BACKEND_PORT, "protocol": "TCP"}]},
                }),
                serde_json::json!({
                    "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"name": format!("{name}-1"), "namespace": "default",
                                 "labels": {"kubernetes.io/service-name": name,
                                            "endpointslice.kubernetes.io/managed-by": "crs-bench",
                                            "crs-bench": name_prefix.trim_end_matches('-')}},
                    "addressType": "IPv4",
                    "endpoints": [{"addresses": [backend.to_string()], "conditions": {"ready": true},
                                   "nodeName": NODE}],
                    "ports": [{"name": "http", "port": BACKEND_PORT, "protocol": "TCP"}],
                }),
            ]
        };
        let indices: Vec<usize> = range.collect();
        let chunk = indices.len().div_ceil(CREATE_CONCURRENCY).max(1);
        let lists: Vec<String> = indices
            .chunks(chunk)
            .map(|c| {
                let items: Vec<serde_json::Value> = c.iter().flat_map(|&i| object(i)).collect();
                serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string()
            })
            .collect();
        let cp = self.cp();
        let t = Instant::now();
        std::thread::scope(|s| {
            let handles: Vec<_> = lists
                .iter()
                .map(|list| {
                    s.spawn(move || {
                        cp.kubectl_input(&["create", "-o", "name", "-f", "-"], Some(list))
                    })
                })
                .collect();
            for h in handles {
                h.join()
                    .expect("kubectl thread")
                    .unwrap_or_else(|e| panic!("creating the Services: {e}"));
            }
        });
        t.elapsed()
    }

    fn cluster_ip(&self, name: &str) -> Ipv4Addr {
        self.cp()
            .kubectl(&["get", "service", name, "-o", "jsonpath={.spec.clusterIP}"])
            .ok()
            .and_then(|ip| ip.parse().ok())
            .unwrap_or_else(|| panic!("Service {name}'s clusterIP"))
    }

    /// Polls until `count` Services `<name_prefix>*` are programmed, at most
    /// `PROGRAM_TIMEOUT`; the time since `since`, or what was reached.
    fn wait_programmed(
        &mut self,
        name_prefix: &str,
        count: usize,
        since: Instant,
    ) -> Result<Duration, usize> {
        let mut reached = 0;
        let done = poll(PROGRAM_TIMEOUT, Duration::from_millis(20), || {
            self.check_running();
            reached = self.programmed(name_prefix);
            (reached == count).then(|| since.elapsed())
        });
        done.ok_or(reached)
    }
}

/// Connect latency, programming time and one more Service at 10,000, through the real
/// kube-proxy in `mode`, for each N of `sizes`.
fn real_mode(mode: Mode, sizes: &[usize], prefix: &str) -> Vec<Figures> {
    let label = mode.label();
    let (mut node, a_ip, b_ip) = RealNode::start(mode, prefix);
    let (a, b) = (node.ns("a"), node.ns("b"));
    println!("{label}: client pod {a_ip}, backend pod {b_ip}:{BACKEND_PORT}");
    server(&b, b_ip);
    let mut all = Vec::new();
    for &n in sizes {
        let mut fig = Figures::default();
        let name = format!("kpb{n}-");
        let t = Instant::now();
        let created = node.create_services(&name, 0..n, b_ip);
        match node.wait_programmed(&name, n, t) {
            Ok(d) => {
                println!(
                    "kube_proxy_program_load_N{n}/{label:<20} {:>10.1} ms  (API creates {:.1} ms, \
                     then {:.1} ms)",
                    d.as_secs_f64() * 1e3,
                    created.as_secs_f64() * 1e3,
                    (d.saturating_sub(created)).as_secs_f64() * 1e3
                );
                fig.load_ms = Some(d.as_secs_f64() * 1e3);
                fig.after_api_ms = Some(d.saturating_sub(created).as_secs_f64() * 1e3);
            }
            Err(reached) => println!(
                "kube_proxy_program_load_N{n}/{label:<20} not within {PROGRAM_TIMEOUT:?}: \
                 {reached} of {n} programmed (API creates took {:.1} s)",
                created.as_secs_f64()
            ),
        }
        if n == 10_000 {
            let t = Instant::now();
            node.create_services(&format!("kpb{n}x-"), 0..1, b_ip);
            match node.wait_programmed(&format!("kpb{n}x-"), 1, t) {
                Ok(d) => {
                    println!(
                        "kube_proxy_program_add_one_N{n}/{label:<20} {:>10.2} ms",
                        d.as_secs_f64() * 1e3
                    );
                    fig.add_ms = Some(d.as_secs_f64() * 1e3);
                }
                Err(_) => println!(
                    "kube_proxy_program_add_one_N{n}/{label:<20} not within {PROGRAM_TIMEOUT:?}"
                ),
            }
        }
        for (i, slot) in [(0, &mut fig.first), (n - 1, &mut fig.last)] {
            let vip = node.cluster_ip(&format!("{name}{i}"));
            if node.services_listing().contains(&vip.to_string()) {
                *slot = Some(stats(connects(&a, vip)));
            }
        }
        all.push(fig);
        if n != *sizes.last().expect("sizes") {
            // From empty for the next N: delete these and wait for kube-proxy to drop them.
            let selector = format!("crs-bench={}", name.trim_end_matches('-'));
            node.cp()
                .kubectl(&[
                    "delete",
                    "service,endpointslice",
                    "-l",
                    &selector,
                    "--wait=false",
                ])
                .unwrap_or_else(|e| panic!("deleting the Services: {e}"));
            if node.wait_programmed(&name, 0, Instant::now()).is_err() {
                println!("{label}: the N={n} Services still programmed after {PROGRAM_TIMEOUT:?}");
            }
        }
    }
    stop_server(&a, SocketAddr::from((b_ip, BACKEND_PORT)));
    all
}
