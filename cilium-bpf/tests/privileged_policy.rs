// SPDX-License-Identifier: Apache-2.0

//! Network policy enforced in the datapath, measured with real traffic: nine pods with the
//! labels of the upstream conformance model (namespaces x, y, z; pods a, b, c), a policy
//! resolved by cilium-policy and written into cilium_policy_v2, and every pair probed with
//! TCP connects and UDP exchanges on ports 80 and 81. The measured matrix must equal the
//! one cilium-policy computes, which its own table tests check against the model. Needs
//! root; the namespaces and bpffs are removed on drop.

mod support;

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use cilium_bpf::events::{Event, EventKind, drop_reason};
use cilium_bpf::maps::{DIR_EGRESS, DIR_INGRESS, EventReader, Maps};
use cilium_bpf::policy::PolicyWriter;
use cilium_core::{LabelSet, NumericIdentity};
use cilium_policy::{EnforcementMode, PolicyEngine, Repository, parse};
use support::{TestNode, is_root_or_skip, spawn_in_netns};

const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 10, 100);
const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];
const TCP: u8 = 6;
const UDP: u8 = 17;
/// (protocol, port) probed for every pair.
const PROBES: [(u8, u16); 4] = [(TCP, 80), (TCP, 81), (UDP, 80), (UDP, 81)];

fn labels(i: usize) -> LabelSet {
    let (ns, pod) = (NAMESPACES[i / 3], PODS[i % 3]);
    LabelSet::parse_list(&[
        format!("k8s:pod={pod}"),
        format!("k8s:io.kubernetes.pod.namespace={ns}"),
        format!("k8s:io.cilium.k8s.namespace.labels.ns={ns}"),
    ])
    .expect("valid labels")
}

fn name(i: usize) -> String {
    format!("{}/{}", NAMESPACES[i / 3], PODS[i % 3])
}

/// TCP listeners and UDP echo servers on 80 and 81 in every pod, until dropped.
struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    fn start(env: &TestNode) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for pod in &env.pods {
            for port in [80u16, 81] {
                let (stop, addr) = (stop.clone(), SocketAddr::from((pod.ip, port)));
                threads.push(spawn_in_netns(&pod.netns, move || {
                    let l = TcpListener::bind(addr).expect("bind tcp");
                    l.set_nonblocking(true).expect("nonblocking");
                    while !stop.load(Ordering::Relaxed) {
                        match l.accept() {
                            Ok((conn, _)) => drop(conn),
                            Err(_) => std::thread::sleep(Duration::from_millis(5)),
                        }
                    }
                }));
            }
            for port in [80u16, 81] {
                let (stop, addr) = (stop.clone(), SocketAddr::from((pod.ip, port)));
                threads.push(spawn_in_netns(&pod.netns, move || {
                    let s = UdpSocket::bind(addr).expect("bind udp");
                    s.set_read_timeout(Some(Duration::from_millis(50)))
                        .expect("timeout");
                    let mut buf = [0u8; 64];
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok((n, from)) = s.recv_from(&mut buf) {
                            let _ = s.send_to(&buf[..n], from);
                        }
                    }
                }));
            }
        }
        // Let every listener bind before the first probe.
        std::thread::sleep(Duration::from_millis(300));
        Servers { stop, threads }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Probes every ordered pair of distinct pods on every (protocol, port) of [`PROBES`],
/// all at once (one thread per source pod, one per probe); returns (from, to, proto, port)
/// -> connected.
fn measure(env: &TestNode) -> Vec<((usize, usize, u8, u16), bool)> {
    let ips: Vec<Ipv4Addr> = env.pods.iter().map(|p| p.ip).collect();
    let mut per_source = Vec::new();
    for (from, pod) in env.pods.iter().enumerate() {
        let ips = ips.clone();
        per_source.push(spawn_in_netns(&pod.netns, move || {
            // Threads spawned here inherit this thread's network namespace.
            let mut probes = Vec::new();
            for (to, ip) in ips.iter().enumerate() {
                if to == from {
                    continue;
                }
                for (proto, port) in PROBES {
                    let addr = SocketAddr::from((*ip, port));
                    probes.push(std::thread::spawn(move || {
                        let ok = if proto == TCP {
                            TcpStream::connect_timeout(&addr, Duration::from_millis(1500)).is_ok()
                        } else {
                            udp_echo(addr)
                        };
                        ((from, to, proto, port), ok)
                    }));
                }
            }
            probes
                .into_iter()
                .map(|p| p.join().expect("probe"))
                .collect::<Vec<_>>()
        }));
    }
    per_source
        .into_iter()
        .flat_map(|t| t.join().expect("source"))
        .collect()
}

fn udp_echo(addr: SocketAddr) -> bool {
    let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
    s.set_read_timeout(Some(Duration::from_millis(400)))
        .expect("timeout");
    let mut buf = [0u8; 16];
    // A few tries: the first datagram may wait for neighbour resolution.
    (0..3).any(|_| s.send_to(b"probe", addr).is_ok() && s.recv_from(&mut buf).is_ok())
}

/// The policy cases run with real traffic: name and YAML (namespaced documents use the
/// model's namespaces).
fn cases() -> Vec<(&'static str, String)> {
    let np = |ns: &str, spec: &str| {
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p, namespace: {ns}}}\nspec:\n{spec}"
        )
    };
    let cnp = |ns: &str, spec: &str| {
        format!(
            "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: c, namespace: {ns}}}\nspec:\n{spec}"
        )
    };
    vec![
        ("no policy", String::new()),
        (
            "default deny ingress in x",
            np("x", "  podSelector: {}\n  policyTypes: [Ingress]\n"),
        ),
        (
            "x/a from namespace y",
            np(
                "x",
                "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: y}}\n",
            ),
        ),
        (
            "x/a from pod y/b only",
            np(
                "x",
                "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: y}}\n      podSelector: {matchLabels: {pod: b}}\n",
            ),
        ),
        (
            "x/a port 81 only",
            np(
                "x",
                "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports: [{port: 81, protocol: TCP}]\n",
            ),
        ),
        (
            "x/* port range 80-81 TCP",
            np(
                "x",
                "  podSelector: {}\n  ingress:\n  - ports: [{port: 80, endPort: 81, protocol: TCP}]\n",
            ),
        ),
        (
            "x/b UDP only",
            np(
                "x",
                "  podSelector: {matchLabels: {pod: b}}\n  ingress:\n  - ports: [{port: 80, protocol: UDP}]\n",
            ),
        ),
        (
            "egress of x/a to namespace y only",
            np(
                "x",
                "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - namespaceSelector: {matchLabels: {ns: y}}\n",
            ),
        ),
        (
            "deny from y beats allow all in z",
            cnp(
                "z",
                "  endpointSelector: {}\n  ingress:\n  - fromEntities: [all]\n  ingressDeny:\n  - fromEndpoints: [{matchLabels: {k8s:io.kubernetes.pod.namespace: y}}]\n    toPorts: [{ports: [{port: \"80\", protocol: TCP}]}]\n",
            ),
        ),
    ]
}

#[test]
fn privileged_policy_matrix_matches_the_model() {
    if !is_root_or_skip("privileged_policy_matrix_matches_the_model") {
        return;
    }
    let env = TestNode::new(9);
    let _dp = support::start_datapath(&env, NODE_IP);
    let maps = Maps::open(&env.bpffs).expect("maps");
    let mut writer = PolicyWriter::open(&env.bpffs, true).expect("policy map");
    let mut reader = EventReader::open(&env.bpffs).expect("events");
    let _servers = Servers::start(&env);
    let ids: Vec<NumericIdentity> = (0..9).map(|i| NumericIdentity::new(256 + i)).collect();
    let mut report = Vec::new();
    for (case, yaml) in cases() {
        let docs = parse(&yaml).unwrap_or_else(|e| panic!("{case}: {e}"));
        let rules: Vec<_> = docs.into_iter().flat_map(|(_, r)| r).collect();
        let mut engine = PolicyEngine::new(EnforcementMode::Default);
        let mut expect = Repository::new(EnforcementMode::Default);
        engine.add_rules(rules.clone());
        expect.add(rules);
        for (i, id) in ids.iter().enumerate() {
            engine.upsert_identity(*id, labels(i));
            expect.upsert_identity(*id, labels(i));
            engine.upsert_endpoint(100 + i as u16, labels(i));
        }
        for i in 0..9u16 {
            let policy = engine.policy(100 + i).expect("endpoint");
            writer.install(100 + i, &policy).expect("install policy");
        }
        let measured = measure(&env);
        let mut wrong = Vec::new();
        let mut denied = 0;
        for ((from, to, proto, port), got) in &measured {
            let want = expect.allowed(ids[*from], ids[*to], *proto, *port);
            denied += usize::from(!want);
            if *got != want {
                wrong.push(format!(
                    "{} -> {} {}/{port}: measured {got}, expected {want}",
                    name(*from),
                    name(*to),
                    if *proto == TCP { "TCP" } else { "UDP" }
                ));
            }
        }
        assert_eq!(measured.len(), 9 * 8 * PROBES.len());
        assert!(wrong.is_empty(), "{case}:\n{}", wrong.join("\n"));
        // Every case but the first denies something: the probes can fail.
        assert_eq!(denied == 0, case == "no policy", "{case}: {denied} denied");
        report.push(format!("{case}: {denied} of {} denied", measured.len()));
    }
    eprintln!("{}", report.join("\n"));

    // What the entries allowed is counted under the entries' own keys (the last case's
    // policy maps): allows only, a packet at least an IP header long.
    let mut counted_packets = 0;
    for ep in 100..109u16 {
        let entries = cilium_bpf::policy::read_endpoint_policy(&env.bpffs, ep)
            .expect("policy map")
            .unwrap_or_default();
        let stats = cilium_bpf::policy::read_policy_stats(&env.bpffs, ep, &entries).expect("stats");
        for (e, s) in entries.iter().zip(&stats) {
            if let Some((packets, bytes)) = s {
                assert!(!e.deny, "a deny entry counted: {e:?}");
                assert!(
                    *bytes >= packets * 20,
                    "{e:?}: {packets} packets, {bytes} bytes"
                );
                counted_packets += packets;
            }
        }
    }
    assert!(counted_packets > 0, "no allowed packet was counted");

    // Denials were dropped with Cilium's reasons and reported as policy verdicts.
    let events: Vec<Event> = reader.drain().into_iter().filter_map(Result::ok).collect();
    let drops = |reason: u8| {
        events
            .iter()
            .filter(|e| e.kind == EventKind::Drop { reason })
            .count()
    };
    assert!(
        drops(drop_reason::POLICY_DENIED) > 0,
        "no policy-denied drops"
    );
    assert!(drops(drop_reason::POLICY_DENY) > 0, "no policy-deny drops");
    assert!(
        events.iter().any(|e| e.kind
            == EventKind::PolicyVerdict {
                allowed: false,
                ingress: true
            }),
        "no policy verdict events"
    );
    let counted = |reason: u8| {
        maps.metrics.count(reason, DIR_EGRESS).expect("metrics")
            + maps.metrics.count(reason, DIR_INGRESS).expect("metrics")
    };
    assert!(
        counted(drop_reason::POLICY_DENIED) > 0,
        "policy drops are counted"
    );
    assert!(
        counted(drop_reason::POLICY_DENY) > 0,
        "deny drops are counted"
    );
}

fn tcp_probe(env: &TestNode, from: usize, to: usize, port: u16) -> bool {
    let addr = SocketAddr::from((env.pods[to].ip, port));
    spawn_in_netns(&env.pods[from].netns, move || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(1500)).is_ok()
    })
    .join()
    .expect("probe")
}

#[test]
fn privileged_policy_follows_identities_and_rules_incrementally() {
    if !is_root_or_skip("privileged_policy_follows_identities_and_rules_incrementally") {
        return;
    }
    let env = TestNode::new(9);
    let _dp = support::start_datapath(&env, NODE_IP);
    let mut writer = PolicyWriter::open(&env.bpffs, true).expect("policy map");
    let _servers = Servers::start(&env);
    let (xa, yb, yc) = (0usize, 4usize, 5usize);
    let id = |i: usize| NumericIdentity::new(256 + i as u32);
    let mut engine = PolicyEngine::new(EnforcementMode::Default);
    // Every pod but y/b has its identity; every pod is an endpoint.
    for i in 0..9 {
        if i != yb {
            engine.upsert_identity(id(i), labels(i));
        }
        let diff = engine.upsert_endpoint(100 + i as u16, labels(i));
        writer.apply(&engine, &diff).expect("apply");
    }
    assert!(tcp_probe(&env, yb, xa, 80), "no policy yet");
    let yaml = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: from-yb, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: y}}\n      podSelector: {matchLabels: {pod: b}}\n";
    let rules = parse(yaml)
        .expect("policy")
        .into_iter()
        .flat_map(|(_, r)| r);
    let diff = engine.add_rules(rules);
    assert_eq!(
        writer.apply(&engine, &diff).expect("apply"),
        1,
        "only x/a changes"
    );
    assert!(
        !tcp_probe(&env, yb, xa, 80),
        "y/b's identity is not known yet"
    );
    assert!(!tcp_probe(&env, yc, xa, 80), "y/c is not selected");
    // The identity appears: one entry for one endpoint.
    let diff = engine.upsert_identity(id(yb), labels(yb));
    assert_eq!(diff.entries.len(), 1);
    writer.apply(&engine, &diff).expect("apply");
    assert!(
        tcp_probe(&env, yb, xa, 80),
        "allowed once the identity is known"
    );
    assert!(!tcp_probe(&env, yc, xa, 81));
    // The rule goes: x/a is no longer enforced.
    let diff = engine.remove_rules("NetworkPolicy/x/from-yb");
    writer.apply(&engine, &diff).expect("apply");
    assert!(tcp_probe(&env, yc, xa, 81), "no policy any more");
}
