// SPDX-License-Identifier: Apache-2.0

//! Per-packet cost of the datapath, measured in the kernel with BPF_PROG_TEST_RUN.
//!
//! - `datapath_from_container_local`: `from_container` on a TCP SYN between two local
//!   endpoints (parse, two endpoint lookups, MAC rewrite, TTL, trace event, counters,
//!   redirect_peer).
//! - `datapath_service_new_flow`: a SYN to a ClusterIP from a new source port each time
//!   (conntrack miss, backend selection, two conntrack entries, DNAT, delivery).
//! - `datapath_service_established`: the same packet again (conntrack hit, DNAT).
//! - `datapath_service_reply`: the backend's reply (reverse NAT, delivery).
//! - `datapath_policy_new_flow`: a SYN to an endpoint with ingress policy, from a new
//!   source port each time (conntrack miss, policy lookups, conntrack entry, verdict event).
//! - `datapath_policy_established`: the same flow's packets once tracked (conntrack hit,
//!   policy lookups again, as Cilium re-checks established flows; replies skip them).
//!
//! The baseline of each is a program that only returns TC_ACT_OK, run in the same process
//! on the same packet.
//!
//! Needs root (CAP_BPF and a private bpffs); otherwise prints "skipped: needs root". Each
//! figure is the median over 7 rounds of the mean kernel-measured time of 20,000 single
//! runs (a run changes the packet, TTL included, so runs cannot be repeated in place).

use std::net::Ipv4Addr;
use std::process::Command;

use cilium_bpf::maps::Maps;
use cilium_bpf::testing::ipv4_tcp_packet;
use cilium_bpf::{Datapath, DatapathConfig};

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("datapath_from_container_local: benchmark");
        return;
    }
    if unsafe_free_euid() != 0 {
        println!("datapath_from_container_local: skipped: needs root");
        return;
    }
    let dir = std::env::temp_dir().join(format!("crs{}-bench-bpffs", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ok = Command::new("mount")
        .args(["-t", "bpf", "bpf"])
        .arg(&dir)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "mounting bpffs at {}", dir.display());
    let _mount = Mount(dir.clone());

    let mut dp = Datapath::load(DatapathConfig::new(
        &dir,
        Ipv4Addr::new(192, 168, 10, 100),
        Ipv4Addr::new(10, 0, 0, 254),
    ))
    .expect("load datapath");
    let mut maps = Maps::open(&dir).expect("maps");
    let (a, b) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    cilium_bpf::testing::loopback_endpoints(&mut maps, &[a, b]).expect("endpoints");
    let packet = ipv4_tcp_packet(a, b, 40000, 80, 0x02);

    let mut bench = aya::Ebpf::load(cilium_bpf::objects::BPF_BENCH).expect("load bench object");
    let pass: &mut aya::programs::SchedClassifier = bench
        .program_mut("bench_pass")
        .expect("bench_pass")
        .try_into()
        .expect("classifier");
    pass.load().expect("load bench_pass");

    // A ClusterIP with one backend (b:8080).
    let vip = Ipv4Addr::new(10, 96, 0, 10);
    let mut lb = cilium_lb::manager::LbManager::new(cilium_lb::manager::LbConfig::default());
    let svc = cilium_lb::service::Service::new(
        "bench",
        cilium_lb::service::L3n4Addr::new(vip.into(), 80, cilium_lb::maglev::L4Proto::Tcp),
        cilium_lb::service::ServiceType::ClusterIP,
    )
    .with_backend(cilium_lb::service::Backend::new(
        cilium_lb::service::L3n4Addr::new(b.into(), 8080, cilium_lb::maglev::L4Proto::Tcp),
    ));
    cilium_bpf::lb::ServiceWriter::open(&dir)
        .expect("writer")
        .apply(&lb.upsert(&svc).expect("upsert"))
        .expect("apply");

    let cases: [(&str, MakePacket); 4] = [
        (
            "datapath_from_container_local",
            Box::new(move |_| packet.clone()),
        ),
        (
            "datapath_service_new_flow",
            Box::new(move |i| ipv4_tcp_packet(a, vip, 1024 + (i % 60000) as u16, 80, 0x02)),
        ),
        (
            "datapath_service_established",
            Box::new(move |_| ipv4_tcp_packet(a, vip, 50000, 80, 0x10)),
        ),
        (
            "datapath_service_reply",
            Box::new(move |_| ipv4_tcp_packet(b, a, 8080, 50000, 0x10)),
        ),
    ];
    for (name, make) in cases {
        measure(&mut dp, pass, name, make);
    }

    // Policy on b: ingress from a's identity on TCP 80, a deny for another peer, and the
    // host; egress not enforced. a has no policy map.
    let yaml = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: b, namespace: default}\nspec:\n  endpointSelector: {matchLabels: {app: b}}\n  ingress:\n  - fromEndpoints: [{matchLabels: {app: a}}]\n    toPorts: [{ports: [{port: \"80\", protocol: TCP}]}]\n  ingressDeny:\n  - fromEndpoints: [{matchLabels: {app: c}}]\n";
    let mut engine = cilium_policy::PolicyEngine::new(cilium_policy::EnforcementMode::Default);
    engine.add_rules(
        cilium_policy::parse(yaml)
            .expect("policy")
            .into_iter()
            .flat_map(|(_, r)| r),
    );
    let app = |name: &str| {
        cilium_core::LabelSet::parse_list(&[
            format!("k8s:app={name}"),
            "k8s:io.kubernetes.pod.namespace=default".to_owned(),
        ])
        .expect("labels")
    };
    for (id, name) in [(300u32, "a"), (301, "b"), (302, "c")] {
        engine.upsert_identity(cilium_core::NumericIdentity::new(id), app(name));
    }
    engine.upsert_endpoint(11, app("b"));
    let mut writer = cilium_bpf::policy::PolicyWriter::open(&dir, true).expect("policy writer");
    writer
        .install(11, &engine.policy(11).expect("endpoint"))
        .expect("install policy");
    let policy_cases: [(&str, MakePacket); 2] = [
        (
            "datapath_policy_new_flow",
            Box::new(move |i| ipv4_tcp_packet(a, b, 1024 + (i % 60000) as u16, 80, 0x02)),
        ),
        (
            "datapath_policy_established",
            Box::new(move |_| ipv4_tcp_packet(a, b, 50001, 80, 0x10)),
        ),
    ];
    for (name, make) in policy_cases {
        measure(&mut dp, pass, name, make);
    }
    // A denied peer is dropped: the policy is really in the path.
    let denied = ipv4_tcp_packet(a, b, 50002, 81, 0x02);
    let r = dp.test_run("from_container", &denied, 1).expect("test run");
    assert_eq!(r.verdict, 2, "port 81 is not allowed");
}

type MakePacket = Box<dyn FnMut(u32) -> Vec<u8>>;

/// Prints the median per-packet time of `from_container` on the packets `make` builds,
/// and of the pass program on the same packets.
fn measure(
    dp: &mut Datapath,
    pass: &mut aya::programs::SchedClassifier,
    name: &str,
    mut make: MakePacket,
) {
    let mut ours = Vec::new();
    let mut base = Vec::new();
    let mut n = 0u32;
    for _ in 0..7 {
        let (mut o, mut bs) = (0u128, 0u128);
        for _ in 0..RUNS {
            let pkt = make(n);
            n += 1;
            let r = dp.test_run("from_container", &pkt, 1).expect("test run");
            assert_eq!(r.verdict, 7, "{name}: delivered to the local endpoint");
            o += r.per_run.as_nanos();
            let r = cilium_bpf::loader::test_run_program(pass, "bench_pass", &pkt, 1)
                .expect("test run");
            bs += r.per_run.as_nanos();
        }
        ours.push(o as f64 / f64::from(RUNS));
        base.push(bs as f64 / f64::from(RUNS));
    }
    let (o, bs) = (median(ours), median(base));
    println!("{name}/baseline  {bs:>8.1} ns/packet (pass program)");
    println!("{name}/ours      {o:>8.1} ns/packet");
    println!(
        "{name} ratio     {:>8.2}x the pass program",
        o / bs.max(1.0)
    );
}

const RUNS: u32 = 10_000;

fn unsafe_free_euid() -> u32 {
    // Reads the effective uid from /proc instead of calling geteuid, keeping this bench
    // free of unsafe code.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(u32::MAX)
}
