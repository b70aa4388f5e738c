// SPDX-License-Identifier: Apache-2.0

//! TCP throughput with real traffic (`iperf3`, one stream, 3 s; 1 s without `--bench`)
//! through the datapath, beside a bare veth pair in the same run:
//!
//! - `bare_veth`: two namespaces joined by a veth pair, no BPF (the baseline).
//! - `pod_to_pod`: two pods of one node (`from_container`, `bpf_redirect_peer`).
//! - `clusterip`: the same pods through a ClusterIP (DNAT, reverse NAT).
//! - `across_nodes`: a pod to a pod of another node (native routing over a bridge;
//!   `from_netdev` on the receiving node delivers into the pod).
//!
//! The datapath runs at `monitor-aggregation` medium (the chart's default) and none; each
//! figure is Gbit/s, with its ratio to the bare veth (ours / baseline). The nodes, pods and
//! underlay are the privileged tests' (cilium-bpf/tests/support), all in namespaces this
//! bench creates and removes. Needs root and iperf3; otherwise says it is skipped.

#[path = "../../cilium-bpf/tests/support/mod.rs"]
mod support;

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cilium_bpf::DatapathConfig;
use support::{TestCluster, is_root_or_skip, node_ip, router_of, run, start_datapath_with};

/// An iperf3 server in a namespace for one test (`-1`), killed on drop if still there.
struct Server(Child);

impl Server {
    fn start(netns: &str, ip: Ipv4Addr) -> Server {
        let child = Command::new("ip")
            .args(["netns", "exec", netns, "iperf3", "-s", "-1", "-B"])
            .arg(ip.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("iperf3 -s");
        // The server needs a moment to listen.
        std::thread::sleep(Duration::from_millis(300));
        Server(child)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Gbit/s received by an iperf3 server at `server_ip` (listening in `server_ns`) from a
/// client in `client_ns` connecting to `target`.
fn iperf(
    server_ns: &str,
    server_ip: Ipv4Addr,
    client_ns: &str,
    target: Ipv4Addr,
    secs: u32,
) -> f64 {
    let _server = Server::start(server_ns, server_ip);
    let out = Command::new("ip")
        .args(["netns", "exec", client_ns, "iperf3", "-J", "-c"])
        .arg(target.to_string())
        .args(["-t", &secs.to_string()])
        .output()
        .expect("iperf3 -c");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "iperf3 -c {target}: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let bps = report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("no throughput in {report}"));
    bps / 1e9
}

/// Two namespaces joined by a veth pair (10.99.0.1 and .2), removed on drop.
struct BareVeth(String, String);

impl BareVeth {
    fn new() -> BareVeth {
        let (a, b) = (
            format!("crs{}tp-a", std::process::id()),
            format!("crs{}tp-b", std::process::id()),
        );
        for ns in [&a, &b] {
            run(&["ip", "netns", "add", ns]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        run(&[
            "ip", "-n", &a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns",
            &b,
        ]);
        for (ns, ip) in [(&a, "10.99.0.1/24"), (&b, "10.99.0.2/24")] {
            run(&["ip", "-n", ns, "addr", "add", ip, "dev", "eth0"]);
            run(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
        }
        BareVeth(a, b)
    }
}

impl Drop for BareVeth {
    fn drop(&mut self) {
        for ns in [&self.0, &self.1] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("throughput: benchmark");
        return;
    }
    if !is_root_or_skip("throughput") {
        return;
    }
    if Command::new("iperf3").arg("--version").output().is_err() {
        println!("throughput: skipped: iperf3 not installed");
        return;
    }
    let secs = if std::env::args().any(|a| a == "--bench") {
        3
    } else {
        1
    };

    let bare = {
        let veth = BareVeth::new();
        iperf(
            &veth.1,
            Ipv4Addr::new(10, 99, 0, 2),
            &veth.0,
            Ipv4Addr::new(10, 99, 0, 2),
            secs,
        )
    };
    println!("throughput/bare_veth        {bare:>6.1} Gbit/s (the baseline)");

    let mut rows: Vec<(&str, [f64; 2])> = vec![
        ("pod_to_pod", [0.0; 2]),
        ("clusterip", [0.0; 2]),
        ("across_nodes", [0.0; 2]),
    ];
    for (column, level) in [(0usize, 3u8), (1, 0)] {
        // Two nodes with two pods each, their datapaths at this aggregation level.
        let cluster = TestCluster::new(2, 2);
        let _dps: Vec<_> = cluster
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let mut config = DatapathConfig::new(&node.bpffs, node_ip(i), router_of(i as u8));
                config.native_routing_cidr = Some((Ipv4Addr::new(172, 20, 0, 0), 16));
                config.monitor_aggregation = level;
                let dp = start_datapath_with(node, config, Some("eth0"));
                let mut maps = cilium_bpf::maps::Maps::open(&node.bpffs).expect("maps");
                let other = node_ip(1 - i);
                let info = cilium_bpf::types::RemoteEndpointInfo {
                    sec_identity: 6,
                    ..Default::default()
                };
                maps.ipcache.upsert_ipv4(other, 32, &info).expect("ipcache");
                dp
            })
            .collect();
        let (n0, n1) = (&cluster.nodes[0], &cluster.nodes[1]);
        let (client, server) = (&n0.pods[0], &n0.pods[1]);
        rows[0].1[column] = iperf(&server.netns, server.ip, &client.netns, server.ip, secs);

        // A ClusterIP to the server pod's iperf3 port.
        let vip = Ipv4Addr::new(10, 96, 0, 50);
        let mut lb = cilium_lb::manager::LbManager::new(cilium_lb::manager::LbConfig::default());
        let svc = cilium_lb::service::Service::new(
            "iperf",
            cilium_lb::service::L3n4Addr::new(vip.into(), 5201, cilium_lb::maglev::L4Proto::Tcp),
            cilium_lb::service::ServiceType::ClusterIP,
        )
        .with_backend(cilium_lb::service::Backend::new(
            cilium_lb::service::L3n4Addr::new(
                server.ip.into(),
                5201,
                cilium_lb::maglev::L4Proto::Tcp,
            ),
        ));
        cilium_bpf::lb::ServiceWriter::open(&n0.bpffs)
            .expect("service writer")
            .apply(&lb.upsert(&svc).expect("upsert"))
            .expect("apply");
        rows[1].1[column] = iperf(&server.netns, server.ip, &client.netns, vip, secs);

        let remote = &n1.pods[0];
        rows[2].1[column] = iperf(&remote.netns, remote.ip, &client.netns, remote.ip, secs);
    }
    for (name, [medium, none]) in rows {
        println!(
            "throughput/{name:<16} medium {medium:>6.1} Gbit/s ({:.2}x the bare veth)   none {none:>6.1} Gbit/s ({:.2}x)",
            medium / bare,
            none / bare
        );
    }
}
