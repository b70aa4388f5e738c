// SPDX-License-Identifier: Apache-2.0

//! kube-proxy replacement against a kube-proxy emulation, in one run on this machine.
//!
//! - Connect latency (p50, p99) and connections/s from a client to the first and the last
//!   of N ClusterIPs, N in {1, 1000, 10000}: `baseline-legacy` and `baseline-nft` are
//!   kube-proxy's iptables rules (KUBE-SERVICES -> KUBE-SVC-* -> KUBE-SEP-* with statistic
//!   and DNAT) in the client's namespace, loaded with iptables-legacy-restore and
//!   iptables-nft-restore; `ours` is the BPF datapath (from_container, services in
//!   cilium_lb4_services_v2).
//! - Programming time: loading N services from empty, and adding one at N = 10,000
//!   (iptables-restore vs LbManager + ServiceWriter).
//!
//! Needs root and iptables; prints "skipped: ..." otherwise. Everything runs in namespaces
//! and a bpffs this bench creates (prefix `crsk<pid>`) and removes, even on panic.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cilium_bpf::lb::ServiceWriter;
use cilium_bpf::types::{EndpointInfo, mac_to_u64};
use cilium_bpf::{Datapath, DatapathConfig};
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

/// A server that accepts and closes connections until `stop` connects to it.
fn server(ns: &str) {
    let (tx, rx) = std::sync::mpsc::channel();
    in_netns(ns, move || {
        let l = TcpListener::bind((SERVER, 8080)).expect("bind");
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

fn stop_server(ns: &str, via: Ipv4Addr) {
    in_netns(ns, move || {
        if let Ok(mut c) =
            TcpStream::connect_timeout(&SocketAddr::from((via, 80)), Duration::from_secs(1))
        {
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

fn report(name: &str, n: usize, which: &str, lat: (f64, f64, f64)) {
    println!(
        "kube_proxy_connect_N{n}_{which}/{name:<16} p50 {:>8.1} us  p99 {:>8.1} us  {:>8.0} conn/s",
        lat.0, lat.1, lat.2
    );
}

fn iptables_mode(
    tool: &str,
    label: &str,
    n: usize,
    prefix: &str,
) -> ((f64, f64, f64), (f64, f64, f64)) {
    let (_env, c, s) = pair(prefix);
    server(&s);
    let load = restore(tool, &c, &kube_rules(0, n, true), false);
    println!(
        "kube_proxy_program_load_N{n}/{label:<16} {:>10.1} ms",
        load.as_secs_f64() * 1e3
    );
    if n == 10_000 {
        let add = restore(tool, &c, &kube_rules(n, n + 1, false), true);
        println!(
            "kube_proxy_program_add_one_N{n}/{label:<16} {:>10.2} ms",
            add.as_secs_f64() * 1e3
        );
    }
    let first = stats(connects(&c, vip(0)));
    let last = stats(connects(&c, vip(n - 1)));
    stop_server(&c, vip(0));
    (first, last)
}

fn bpf_mode(n: usize, prefix: &str) -> ((f64, f64, f64), (f64, f64, f64)) {
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
    println!(
        "kube_proxy_program_load_N{n}/{:<16} {:>10.1} ms",
        "ours",
        t.elapsed().as_secs_f64() * 1e3
    );
    if n == 10_000 {
        let t = Instant::now();
        writer
            .apply(&lb.upsert(&service(n)).expect("upsert"))
            .expect("write");
        println!(
            "kube_proxy_program_add_one_N{n}/{:<16} {:>10.2} ms",
            "ours",
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    server(&s);
    let first = stats(connects(&c, vip(0)));
    let last = stats(connects(&c, vip(n - 1)));
    stop_server(&c, vip(0));
    drop(dp);
    (first, last)
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
    if !have("iptables-legacy-restore") || !have("iptables-nft-restore") {
        println!("kube_proxy: skipped: iptables (legacy and nft) not installed");
        return;
    }
    let prefix = format!("crsk{}", std::process::id());
    for n in [1usize, 1000, 10_000] {
        let legacy = iptables_mode(
            "iptables-legacy-restore",
            "baseline-legacy",
            n,
            &format!("{prefix}l{n}"),
        );
        let nft = iptables_mode(
            "iptables-nft-restore",
            "baseline-nft",
            n,
            &format!("{prefix}f{n}"),
        );
        let ours = bpf_mode(n, &format!("{prefix}b{n}"));
        for (which, pick) in [("first", 0usize), ("last", 1)] {
            let get = |r: &((f64, f64, f64), (f64, f64, f64))| if pick == 0 { r.0 } else { r.1 };
            report("baseline-legacy", n, which, get(&legacy));
            report("baseline-nft", n, which, get(&nft));
            report("ours", n, which, get(&ours));
            println!(
                "kube_proxy_connect_N{n}_{which} p50 ratio: legacy/ours {:.2}x, nft/ours {:.2}x",
                get(&legacy).0 / get(&ours).0,
                get(&nft).0 / get(&ours).0
            );
        }
    }
}
