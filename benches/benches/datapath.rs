// SPDX-License-Identifier: Apache-2.0

//! Per-packet cost of the datapath, measured in the kernel with `BPF_PROG_TEST_RUN` at
//! 10,000 runs per call (`repeat`), against a reference program and a pass program run in
//! the same process on the same packets.
//!
//! The programs under test are the datapath's own handlers (`handle_from_container`,
//! `handle_from_netdev`, `handle_to_netdev`), compiled by `benches/build.rs` into
//! `bpf/bench_lxc.c` and `bpf/bench_host.c` under a harness (`bpf/harness.h`) that saves
//! the packet's headers, runs the handler and restores them, so that every run sees the
//! same packet (the datapath rewrites TTL and addresses); wrappers for new flows also give
//! every run its own TCP source port. The reference (`bpf/reference.h`) parses, looks the
//! service up, looks the flow up in an LRU conntrack map and, on a miss, picks a backend
//! from a Maglev table and records it: the least a service datapath does. The pass program
//! does nothing but the harness's save and restore. All three pay the harness.
//!
//! Scenarios (each printed as `N.Nx the reference`: ours divided by the reference's time
//! on a packet of the same kind, established or new):
//! - `local`: `from_container`, an established TCP flow between two local endpoints
//!   (delivered with `bpf_redirect_peer`).
//! - `service_new` / `service_established`: a ClusterIP with a Maglev table, a new flow
//!   each run / the same flow.
//! - `service_reply`: the backend's reply (reverse NAT, delivery to the client).
//! - `policy_new` / `policy_established`: to an endpoint with ingress policy.
//! - `nodeport_new` / `nodeport_established`: `from_netdev`, a client outside the node to
//!   a NodePort whose backend is local.
//! - `masquerade`: `to_netdev`, an established flow of a pod to the world (SNAT).
//!
//! The two endpoints and the node's device are interfaces of a network namespace of
//! the bench's (`crs<pid>-bench`, deleted at the end), which the measuring thread enters:
//! every packet carries its interface's index, as on a node where each pod has its own.
//!
//! Each scenario runs with `monitor-aggregation` `medium` (the chart's default) and `none`
//! (every packet reported; the bench drains the event ring after every call so the ring
//! never fills, as an agent would). Each figure is the median over 21 calls (5 for new
//! flows, which need a fresh source port per run) of the kernel's mean time per run.
//!
//! Needs root (CAP_BPF and a private bpffs) and clang-19 (to build the harness); otherwise
//! prints why it is skipped.
//!
//! `CILIUM_BENCH_BPF_DIR=DIR` loads `bench_lxc.o` and `bench_host.o` from DIR instead of
//! the objects built into the bench: a variant of the datapath compiled by hand (with
//! `cilium-bpf/bpf/clang.flags`) is measured against the same reference in seconds, with
//! no rebuild of the workspace.

use std::net::Ipv4Addr;
use std::process::Command;

use aya::Ebpf;
use aya::programs::SchedClassifier;
use cilium_bpf::maps::{EventReader, Maps};
use cilium_bpf::testing::ipv4_tcp_packet;
use cilium_bpf::{Datapath, DatapathConfig};

/// Runs per `BPF_PROG_TEST_RUN` call.
const REPEAT: u32 = 10_000;
/// Calls per figure for packets that can repeat, and for new flows (each run takes a
/// source port; 5 x 10,000 stay below the 64k ports). Without `--bench` (`cargo test
/// --all-targets` runs benches that way) every scenario runs once, as a check.
const ROUNDS: usize = 21;
const ROUNDS_NEW: usize = 5;

const TC_ACT_OK: u32 = 0;
const TC_ACT_REDIRECT: u32 = 7;

static BENCH_LXC: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench_lxc.o"));
static BENCH_HOST: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench_host.o"));

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

/// One loaded harness object (the endpoint or the node-device handlers) at one monitor
/// aggregation level.
struct Harness {
    ebpf: Ebpf,
}

impl Harness {
    fn load(config: &DatapathConfig, object: &'static str, bytes: &[u8]) -> Harness {
        let from_dir = std::env::var_os("CILIUM_BENCH_BPF_DIR").map(|dir| {
            let path = std::path::Path::new(&dir).join(object);
            std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        });
        let bytes = from_dir.as_deref().unwrap_or(bytes);
        let mut ebpf = cilium_bpf::load_object(config, object, bytes).expect("load harness");
        let names: Vec<String> = ebpf.programs().map(|(n, _)| n.to_owned()).collect();
        for name in names {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(&name)
                .expect("program")
                .try_into()
                .expect("classifier");
            prog.load()
                .unwrap_or_else(|e| panic!("loading {name}: {e:?}"));
        }
        Harness { ebpf }
    }

    fn program(&self, name: &str) -> &SchedClassifier {
        self.ebpf
            .program(name)
            .unwrap_or_else(|| panic!("no program {name}"))
            .try_into()
            .expect("classifier")
    }

    /// The next source port the new-flow wrappers hand out.
    fn reset_port(&mut self, port: u32) {
        let mut m: aya::maps::Array<_, u32> = self
            .ebpf
            .map_mut("bench_port")
            .expect("bench_port")
            .try_into()
            .expect("array");
        m.set(0, port, 0).expect("set bench_port");
    }
}

/// The mean ns per run of `program` over `rounds` calls of `REPEAT` runs on `packet`
/// (median of the calls), checking its verdict.
fn time(
    harness: &Harness,
    program: &'static str,
    (packet, ifindex): (&[u8], u32),
    rounds: usize,
    verdict: u32,
) -> f64 {
    let prog = harness.program(program);
    let mut per_run = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let r = cilium_bpf::loader::test_run_program_on(prog, program, packet, REPEAT, ifindex)
            .expect("test run");
        assert_eq!(r.verdict, verdict, "{program}: verdict");
        per_run.push(r.per_run.as_nanos() as f64);
    }
    median(per_run)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("datapath: benchmark");
        return;
    }
    if unsafe_free_euid() != 0 {
        println!("datapath: skipped: needs root");
        return;
    }
    if cfg!(bench_bpf_missing) {
        println!("datapath: skipped: needs clang-19 to build the harness (benches/bpf)");
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    let (rounds, rounds_new) = if full { (ROUNDS, ROUNDS_NEW) } else { (1, 1) };
    let dir = std::env::temp_dir().join(format!("crs{}-bench-bpffs", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ok = Command::new("mount")
        .args(["-t", "bpf", "bpf"])
        .arg(&dir)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "mounting bpffs at {}", dir.display());
    let _mount = Mount(dir.clone());

    let node_ip = Ipv4Addr::new(192, 168, 10, 100);
    let base = DatapathConfig::new(&dir, node_ip, Ipv4Addr::new(10, 0, 0, 254));
    // The datapath itself: it creates and pins the maps the harnesses share.
    let _dp = Datapath::load(base.clone()).expect("load datapath");
    let mut maps = Maps::open(&dir).expect("maps");
    // The event ring's reader, as an agent's: it keeps the ring from filling (a full ring
    // makes every reservation fail cheaply; a ring past 64 KiB of unread events makes every
    // submit wake the reader up, which costs microseconds).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (stop, dir) = (stop.clone(), dir.clone());
        std::thread::spawn(move || {
            let mut events = EventReader::open(&dir).expect("events");
            let mut read = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                read += events.drain().len();
                std::thread::sleep(std::time::Duration::from_micros(100));
            }
            read
        })
    };
    let (a, b) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    // Each endpoint behind an interface of its own, and the node's device, as on a node:
    // interfaces in a namespace of the bench's, which this thread enters to run the
    // programs on packets of those interfaces.
    let links = cilium_bpf::testing::TestLinks::new(&format!("crs{}-bench", std::process::id()), 3);
    let (if_a, if_b, if_dev) = (links.ifindexes[0], links.ifindexes[1], links.ifindexes[2]);
    cilium_bpf::testing::endpoints_at(&mut maps, &[(a, if_a), (b, if_b)]).expect("endpoints");
    let _inside = links.enter();

    // A ClusterIP (vip:80) and a NodePort (node:30080), both to b:8080, with Maglev tables
    // (the reference's algorithm).
    let vip = Ipv4Addr::new(10, 96, 0, 10);
    let mut lb = cilium_lb::manager::LbManager::new(cilium_lb::manager::LbConfig {
        algorithm: cilium_lb::service::LbAlgorithm::Maglev,
        external_clusterip: true,
        ..cilium_lb::manager::LbConfig::default()
    });
    let backend = || {
        cilium_lb::service::Backend::new(cilium_lb::service::L3n4Addr::new(
            b.into(),
            8080,
            cilium_lb::maglev::L4Proto::Tcp,
        ))
    };
    let mut writer = cilium_bpf::lb::ServiceWriter::open(&dir).expect("service writer");
    for (name, addr, port, kind) in [
        ("bench", vip, 80, cilium_lb::service::ServiceType::ClusterIP),
        (
            "np",
            node_ip,
            30080,
            cilium_lb::service::ServiceType::NodePort,
        ),
    ] {
        let svc = cilium_lb::service::Service::new(
            name,
            cilium_lb::service::L3n4Addr::new(addr.into(), port, cilium_lb::maglev::L4Proto::Tcp),
            kind,
        )
        .with_backend(backend());
        writer
            .apply(&lb.upsert(&svc).expect("upsert"))
            .expect("apply");
    }

    // The harnesses at both aggregation levels (the pinned maps are shared).
    let level = |l: u8| {
        let mut c = base.clone();
        c.monitor_aggregation = l;
        c
    };
    let mut lxc = [
        Harness::load(&level(3), "bench_lxc.o", BENCH_LXC),
        Harness::load(&level(0), "bench_lxc.o", BENCH_LXC),
    ];
    let mut host = [
        Harness::load(&level(3), "bench_host.o", BENCH_HOST),
        Harness::load(&level(0), "bench_host.o", BENCH_HOST),
    ];
    fill_reference(&mut lxc[0], vip, b);

    // The reference and the pass program, on a service packet of each kind.
    let syn = |src, dst, sport, dport| ipv4_tcp_packet(src, dst, sport, dport, 0x02);
    let ack = |src, dst, sport, dport| ipv4_tcp_packet(src, dst, sport, dport, 0x10);
    let ref_est = time(
        &lxc[0],
        "bench_reference",
        (&ack(a, vip, 50000, 80), if_a),
        rounds,
        TC_ACT_OK,
    );
    lxc[0].reset_port(1024);
    let ref_new = time(
        &lxc[0],
        "bench_reference_new",
        (&syn(a, vip, 1, 80), if_a),
        rounds_new,
        TC_ACT_OK,
    );
    let pass = time(
        &lxc[0],
        "bench_pass",
        (&ack(a, vip, 50000, 80), if_a),
        rounds,
        TC_ACT_OK,
    );
    println!("datapath/pass                   {pass:>7.1} ns/packet (the harness alone)");
    println!("datapath/reference_established  {ref_est:>7.1} ns/packet");
    println!("datapath/reference_new          {ref_new:>7.1} ns/packet");

    // Each scenario: (name, object, program, packet and its interface, new flows?,
    // verdict).
    struct Case {
        name: &'static str,
        host: bool,
        program: &'static str,
        packet: (Vec<u8>, u32),
        new: bool,
        verdict: u32,
    }
    let case = |name, host, program, packet, new, verdict| Case {
        name,
        host,
        program,
        packet,
        new,
        verdict,
    };
    let outside = Ipv4Addr::new(192, 0, 2, 7);
    let world = Ipv4Addr::new(198, 51, 100, 1);
    let before_policy = vec![
        case(
            "local",
            false,
            "bench_from_container",
            (ack(a, b, 40000, 80), if_a),
            false,
            TC_ACT_REDIRECT,
        ),
        case(
            "service_new",
            false,
            "bench_from_container_new",
            (syn(a, vip, 1, 80), if_a),
            true,
            TC_ACT_REDIRECT,
        ),
        case(
            "service_established",
            false,
            "bench_from_container",
            (ack(a, vip, 50000, 80), if_a),
            false,
            TC_ACT_REDIRECT,
        ),
        case(
            "service_reply",
            false,
            "bench_from_container",
            (ack(b, a, 8080, 50000), if_b),
            false,
            TC_ACT_REDIRECT,
        ),
        case(
            "nodeport_new",
            true,
            "bench_from_netdev_new",
            (syn(outside, node_ip, 1, 30080), if_dev),
            true,
            TC_ACT_REDIRECT,
        ),
        case(
            "nodeport_established",
            true,
            "bench_from_netdev",
            (ack(outside, node_ip, 50000, 30080), if_dev),
            false,
            TC_ACT_REDIRECT,
        ),
        case(
            "masquerade",
            true,
            "bench_to_netdev",
            (ack(a, world, 40001, 443), if_dev),
            false,
            TC_ACT_OK,
        ),
    ];
    let after_policy = vec![
        case(
            "policy_new",
            false,
            "bench_from_container_new",
            (syn(a, b, 1, 80), if_a),
            true,
            TC_ACT_REDIRECT,
        ),
        case(
            "policy_established",
            false,
            "bench_from_container",
            (ack(a, b, 50001, 80), if_a),
            false,
            TC_ACT_REDIRECT,
        ),
    ];
    let mut run = |cases: Vec<Case>, lxc: &mut [Harness; 2], host: &mut [Harness; 2]| {
        for c in cases {
            let mut figures = [0.0f64; 2];
            for (i, figure) in figures.iter_mut().enumerate() {
                // New flows start from an empty conntrack table at both levels.
                if c.new {
                    for ct in [&mut maps.ct4_tcp, &mut maps.ct4_any] {
                        cilium_bpf::conntrack::gc(ct, u32::MAX).expect("clear conntrack");
                    }
                }
                let h = if c.host { &mut host[i] } else { &mut lxc[i] };
                h.reset_port(1024);
                let rounds = if c.new { rounds_new } else { rounds };
                *figure = time(h, c.program, (&c.packet.0, c.packet.1), rounds, c.verdict);
            }
            let reference = if c.new { ref_new } else { ref_est };
            println!(
                "datapath/{:<22} medium {:>7.1} ns  {:>5.1}x the reference   none {:>7.1} ns  {:>5.1}x",
                c.name,
                figures[0],
                figures[0] / reference,
                figures[1],
                figures[1] / reference
            );
        }
    };
    run(before_policy, &mut lxc, &mut host);
    let snat =
        cilium_bpf::dump::map_entries(&dir, cilium_bpf::maps::names::SNAT4).expect("snat entries");
    assert!(
        !snat.is_empty(),
        "to_netdev masqueraded the flow to the world"
    );

    // Policy on b: ingress from a's identity on TCP 80, a deny for another peer.
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
    let mut policy = cilium_bpf::policy::PolicyWriter::open(&dir, true).expect("policy writer");
    policy
        .install(11, &engine.policy(11).expect("endpoint"))
        .expect("install policy");
    run(after_policy, &mut lxc, &mut host);
    // A denied port is dropped: the policy is really in the path.
    let denied = ipv4_tcp_packet(a, b, 50002, 81, 0x02);
    let r = cilium_bpf::loader::test_run_program_on(
        lxc[0].program("bench_from_container"),
        "bench_from_container",
        &denied,
        1,
        if_a,
    )
    .expect("test run");
    assert_eq!(r.verdict, 2, "port 81 is not allowed");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let read = reader.join().expect("reader");
    println!("datapath: {read} events read while measuring");
}

/// The reference's maps: the ClusterIP vip:80, backend 1 = b:8080, every Maglev slot 1.
fn fill_reference(h: &mut Harness, vip: Ipv4Addr, b: Ipv4Addr) {
    let mut key = [0u8; 8];
    key[..4].copy_from_slice(&vip.octets());
    key[4..6].copy_from_slice(&80u16.to_be_bytes());
    key[6] = 6;
    let mut services: aya::maps::HashMap<_, [u8; 8], [u8; 8]> = h
        .ebpf
        .map_mut("ref_services")
        .expect("ref_services")
        .try_into()
        .expect("hash");
    services
        .insert(key, [1, 0, 0, 0, 0, 0, 0, 0], 0)
        .expect("service");
    let mut be = [0u8; 8];
    be[..4].copy_from_slice(&b.octets());
    be[4..6].copy_from_slice(&8080u16.to_be_bytes());
    let mut backends: aya::maps::Array<_, [u8; 8]> = h
        .ebpf
        .map_mut("ref_backends")
        .expect("ref_backends")
        .try_into()
        .expect("array");
    backends.set(1, be, 0).expect("backend");
    let mut lut: aya::maps::Array<_, u32> = h
        .ebpf
        .map_mut("ref_maglev")
        .expect("ref_maglev")
        .try_into()
        .expect("array");
    for i in 0..lut.len() {
        lut.set(i, 1, 0).expect("slot");
    }
}

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
