// SPDX-License-Identifier: Apache-2.0

//! The datapath on one node, with real programs, veths and traffic: pods talk through
//! from_container (counted and reported), spoofed sources are dropped with a reason, and a
//! loader restart keeps a TCP stream flowing. Needs root; each test builds its own
//! namespaces and private bpffs and removes them on drop.

mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use cilium_bpf::events::{Event, EventKind, ObservationPoint, drop_reason};
use cilium_bpf::maps::{DIR_EGRESS, EventReader, Maps, REASON_FORWARDED};
use cilium_bpf::{Attached, Datapath, DatapathConfig};
use support::{Pod, ROUTER, TestNode, in_netns, is_root_or_skip, spawn_in_netns};

const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 10, 100);
const FIRST_IDENTITY: u32 = 256;
const FIRST_ENDPOINT: u16 = 100;

fn start(env: &TestNode) -> Datapath {
    support::start_datapath(env, NODE_IP)
}

fn events(reader: &mut EventReader) -> Vec<Event> {
    reader
        .drain()
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .expect("every event decodes")
}

/// Sends `bytes` from `from` to `to` over TCP; returns what the server received.
fn tcp_transfer(from: &Pod, to: &Pod, port: u16, bytes: usize) -> usize {
    let addr = SocketAddr::from((to.ip, port));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = spawn_in_netns(&to.netns, move || {
        let listener = TcpListener::bind(addr).expect("bind");
        ready_tx.send(()).expect("signal");
        let (mut conn, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 65536];
        let mut total = 0;
        loop {
            match conn.read(&mut buf).expect("read") {
                0 => break total,
                n => total += n,
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("server ready");
    let client = spawn_in_netns(&from.netns, move || {
        let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        conn.set_write_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let chunk = vec![0x5au8; 65536];
        let mut sent = 0;
        while sent < bytes {
            let n = chunk.len().min(bytes - sent);
            conn.write_all(&chunk[..n]).expect("write");
            sent += n;
        }
    });
    client.join().expect("client");
    server.join().expect("server")
}

#[test]
fn privileged_pods_talk_through_the_datapath() {
    if !is_root_or_skip("privileged_pods_talk_through_the_datapath") {
        return;
    }
    let env = TestNode::new(3);
    let dp = start(&env);
    let maps = Maps::open(&env.bpffs).expect("maps");
    let mut reader = EventReader::open(&env.bpffs).expect("events");
    let (p0, p1, p2) = (&env.pods[0], &env.pods[1], &env.pods[2]);

    // ICMP: pod0 -> pod1, three echoes.
    assert!(
        env.exec_ok(
            &p0.netns,
            &[
                "ping",
                "-c",
                "3",
                "-i",
                "0.2",
                "-W",
                "2",
                &p1.ip.to_string()
            ]
        ),
        "ping pod0 -> pod1"
    );
    let evs = events(&mut reader);
    let to_endpoint = |e: &&Event| {
        e.kind
            == EventKind::Trace {
                point: ObservationPoint::ToEndpoint,
            }
    };
    let echo = evs
        .iter()
        .filter(to_endpoint)
        .filter(|e| e.proto == 1 && e.saddr == p0.ip && e.daddr == p1.ip && e.icmp_type == 8)
        .count();
    let replies = evs
        .iter()
        .filter(to_endpoint)
        .filter(|e| e.proto == 1 && e.saddr == p1.ip && e.daddr == p0.ip && e.icmp_type == 0)
        .count();
    assert_eq!((echo, replies), (3, 3), "events: {evs:#?}");
    let first = evs.iter().find(to_endpoint).expect("a trace");
    assert_eq!(
        (first.src_identity, first.dst_identity),
        (FIRST_IDENTITY, FIRST_IDENTITY + 1)
    );
    assert_eq!(
        (first.src_endpoint, first.dst_endpoint),
        (FIRST_ENDPOINT, FIRST_ENDPOINT + 1)
    );
    let forwarded_after_ping = maps
        .metrics
        .count(REASON_FORWARDED, DIR_EGRESS)
        .expect("metrics");
    assert!(
        forwarded_after_ping >= 6,
        "forwarded {forwarded_after_ping}"
    );

    // TCP: pod0 -> pod2, 4 MiB.
    let sent = 4 << 20;
    assert_eq!(tcp_transfer(p0, p2, 5001, sent), sent);
    let evs = events(&mut reader);
    let syn = evs
        .iter()
        .filter(to_endpoint)
        .find(|e| {
            e.proto == 6 && e.saddr == p0.ip && e.daddr == p2.ip && e.tcp_flags & 0x12 == 0x02
        })
        .expect("the SYN went through from_container");
    assert_eq!((syn.dport, syn.dst_identity), (5001, FIRST_IDENTITY + 2));
    // Forwarded packets: trace events (new flows also get a policy-verdict event).
    let tcp_packets = evs
        .iter()
        .filter(|e| e.proto == 6 && matches!(e.kind, EventKind::Trace { .. }))
        .count();
    let forwarded = maps
        .metrics
        .count(REASON_FORWARDED, DIR_EGRESS)
        .expect("metrics");
    assert!(
        forwarded >= forwarded_after_ping + tcp_packets as u64,
        "forwarded {forwarded}"
    );

    // Spoofing: pod0 sends from an address that is not its own.
    let spoofed = "172.20.0.99";
    support::run(&[
        "ip",
        "-n",
        &p0.netns,
        "addr",
        "add",
        &format!("{spoofed}/32"),
        "dev",
        "eth0",
    ]);
    assert!(
        !env.exec_ok(
            &p0.netns,
            &[
                "ping",
                "-c",
                "2",
                "-i",
                "0.2",
                "-W",
                "1",
                "-I",
                spoofed,
                &p1.ip.to_string()
            ]
        ),
        "spoofed ping must not get through"
    );
    let evs = events(&mut reader);
    let drops: Vec<_> = evs
        .iter()
        .filter(|e| {
            e.kind
                == EventKind::Drop {
                    reason: drop_reason::INVALID_SOURCE_IP,
                }
        })
        .collect();
    assert!(!drops.is_empty(), "no drop event: {evs:#?}");
    assert!(drops.iter().any(|e| e.saddr.to_string() == spoofed));
    assert!(
        maps.metrics
            .count(drop_reason::INVALID_SOURCE_IP, DIR_EGRESS)
            .expect("metrics")
            >= 1
    );
    assert!(
        !evs.iter().any(|e| e.kind
            == EventKind::Trace {
                point: ObservationPoint::ToEndpoint
            }
            && e.saddr.to_string() == spoofed),
        "a spoofed packet was delivered"
    );
    drop(dp);
}

#[test]
fn privileged_restart_keeps_a_tcp_stream_flowing() {
    if !is_root_or_skip("privileged_restart_keeps_a_tcp_stream_flowing") {
        return;
    }
    let env = TestNode::new(2);
    let dp = start(&env);
    let (p0, p1) = (env.pods[0].clone(), env.pods[1].clone());
    let addr = SocketAddr::from((p1.ip, 5002));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    // Server: reads and remembers the longest pause between two reads.
    let server = spawn_in_netns(&p1.netns, move || {
        let listener = TcpListener::bind(addr).expect("bind");
        ready_tx.send(()).expect("signal");
        let (mut conn, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 65536];
        let (mut total, mut longest) = (0usize, Duration::ZERO);
        let mut last = Instant::now();
        loop {
            let n = conn.read(&mut buf).expect("the stream must not break");
            if n == 0 {
                break (total, longest);
            }
            total += n;
            longest = longest.max(last.elapsed());
            last = Instant::now();
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("server ready");
    // Client: 16 KiB every 5 ms for 3 s.
    let client = spawn_in_netns(&p0.netns, move || {
        let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        let chunk = vec![7u8; 16384];
        let start = Instant::now();
        let mut sent = 0;
        while start.elapsed() < Duration::from_secs(3) {
            conn.write_all(&chunk).expect("the stream must not break");
            sent += chunk.len();
            std::thread::sleep(Duration::from_millis(5));
        }
        sent
    });
    std::thread::sleep(Duration::from_millis(1000));
    let maps = Maps::open(&env.bpffs).expect("maps");
    let before = maps
        .metrics
        .count(REASON_FORWARDED, DIR_EGRESS)
        .expect("metrics");
    // Restart: the old loader goes away, a new one loads on the same pins and takes over
    // the pinned links.
    let root = env.bpffs.clone();
    let pods = env.pods.clone();
    let dp2 = in_netns(&env.node, move || {
        drop(dp);
        let mut dp = Datapath::load(DatapathConfig::new(&root, NODE_IP, ROUTER)).expect("reload");
        for p in &pods {
            assert_eq!(
                dp.attach_endpoint(&p.lxc).expect("re-attach"),
                Attached::Replaced
            );
        }
        dp
    });
    let sent = client.join().expect("client");
    let (received, longest) = server.join().expect("server");
    assert_eq!(received, sent);
    assert!(
        longest < Duration::from_millis(500),
        "the stream paused {longest:?}"
    );
    // The maps kept their contents, and the counters kept counting.
    let maps = Maps::open(&env.bpffs).expect("maps");
    assert_eq!(maps.endpoints.entries().expect("entries").len(), 2);
    assert!(
        maps.metrics
            .count(REASON_FORWARDED, DIR_EGRESS)
            .expect("metrics")
            > before
    );
    // Detaching removes the pins.
    let root = env.bpffs.clone();
    let lxc = p0.lxc.clone();
    let mut dp2 = dp2;
    let detached = in_netns(&env.node, move || {
        let r = dp2.detach_endpoint(&lxc).expect("detach");
        (r, dp2)
    });
    assert!(detached.0);
    assert!(!root.join("cilium/endpoints").join(&p0.lxc).exists());
    assert!(!env.exec_ok(
        &p0.netns,
        &["ping", "-c", "1", "-W", "1", &p1.ip.to_string()]
    ));
}
