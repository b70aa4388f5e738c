// SPDX-License-Identifier: Apache-2.0

//! The endpoint programs' verdicts, checked with BPF_PROG_TEST_RUN on crafted packets
//! (nothing is sent anywhere). Needs root; uses a private bpffs removed on drop.

mod support;

use std::net::Ipv4Addr;

use cilium_bpf::maps::Maps;
use cilium_bpf::testing::{arp_request, ipv4_tcp_packet};
use cilium_bpf::{Datapath, DatapathConfig};
use support::{BpfFs, is_root_or_skip};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;

/// The conntrack key of TCP flow `src:sport -> dst:dport`, as conntrack stores it (Cilium's
/// order: the addresses reversed, the ports not).
fn tcp_flow_key(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
) -> cilium_bpf::types::Ipv4CtTuple {
    cilium_bpf::types::Ipv4CtTuple {
        daddr: src.octets(),
        saddr: dst.octets(),
        dport: dport.to_be(),
        sport: sport.to_be(),
        nexthdr: 6,
        flags: 0,
    }
}

#[test]
fn privileged_from_container_verdicts() {
    if !is_root_or_skip("privileged_from_container_verdicts") {
        return;
    }
    let fs = BpfFs::new();
    let mut config = DatapathConfig::new(
        &fs.path,
        Ipv4Addr::new(192, 168, 10, 100),
        Ipv4Addr::new(10, 0, 0, 254),
    );
    // Packet counts in conntrack entries (bpf-conntrack-accounting).
    config.conntrack_accounting = true;
    let mut dp = Datapath::load(config).expect("load");
    let mut maps = Maps::open(&fs.path).expect("maps");
    for name in cilium_bpf::maps::names::ALL {
        let pin = cilium_bpf::maps::globals_dir(&fs.path).join(name);
        assert!(pin.exists(), "{name} is not pinned at {}", pin.display());
    }
    let (a, b) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    // Test runs see skb->ifindex 1 (loopback): pretend both endpoints sit behind it.
    cilium_bpf::testing::loopback_endpoints(&mut maps, &[a, b]).expect("endpoints");
    let run = |dp: &mut Datapath, pkt: &[u8]| {
        dp.test_run("from_container", pkt, 1)
            .expect("test run")
            .verdict
    };
    // Local delivery: redirected into the peer.
    assert_eq!(
        run(&mut dp, &ipv4_tcp_packet(a, b, 40000, 80, 0x02)),
        TC_ACT_REDIRECT
    );
    // Spoofed source: dropped.
    let spoofed = Ipv4Addr::new(10, 0, 0, 9);
    assert_eq!(
        run(&mut dp, &ipv4_tcp_packet(spoofed, b, 40000, 80, 0x02)),
        TC_ACT_SHOT
    );
    // Not a local endpoint: handed to the stack.
    let outside = Ipv4Addr::new(192, 0, 2, 1);
    assert_eq!(
        run(&mut dp, &ipv4_tcp_packet(a, outside, 40000, 80, 0x02)),
        TC_ACT_OK
    );
    // ARP for the router: answered back out of the same interface.
    assert_eq!(
        run(
            &mut dp,
            &arp_request([2, 0, 0, 0, 0, 10], a, Ipv4Addr::new(10, 0, 0, 254))
        ),
        TC_ACT_REDIRECT
    );
    // An IPv6 frame (a router solicitation's Ethernet and IPv6 headers): dropped as an
    // unsupported L3 protocol, reported with its EtherType and no invented addresses.
    let mut reader = cilium_bpf::maps::EventReader::open(&fs.path).expect("events");
    reader.drain();
    let mut v6 = vec![0x33, 0x33, 0, 0, 0, 2, 2, 0, 0, 0, 0, 10, 0x86, 0xdd];
    v6.extend([0x60, 0, 0, 0, 0, 8, 58, 255]);
    v6.extend([0xfe, 0x80].iter().chain([0u8; 14].iter()));
    v6.extend(
        [0xff, 0x02]
            .iter()
            .chain([0u8; 13].iter())
            .chain([2u8].iter()),
    );
    v6.extend([133, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(run(&mut dp, &v6), TC_ACT_SHOT);
    let events: Vec<cilium_bpf::events::Event> =
        reader.drain().into_iter().filter_map(Result::ok).collect();
    let drop = events
        .iter()
        .find(|e| {
            e.kind
                == cilium_bpf::events::EventKind::Drop {
                    reason: cilium_bpf::events::drop_reason::UNKNOWN_L3,
                }
        })
        .unwrap_or_else(|| panic!("no unsupported-L3 drop in {events:?}"));
    assert_eq!(drop.ethertype, Some(0x86dd), "{drop:?}");
    assert!(
        drop.to_string().contains("ethertype 0x86dd (IPv6)"),
        "{drop}"
    );
    // IPv4 packets' events carry no EtherType.
    assert!(
        events
            .iter()
            .all(|e| e.ethertype.is_some() == (e.proto == 0)),
        "{events:?}"
    );
    // Garbage: a truncated IPv4 packet is dropped as invalid.
    let mut short = ipv4_tcp_packet(a, b, 1, 2, 0x02);
    short.truncate(40);
    assert_eq!(run(&mut dp, &short), TC_ACT_SHOT);
    // Conntrack: the SYN to a service created entries; GC keeps them now and removes them
    // once their lifetime has passed.
    let mut lb = cilium_lb::manager::LbManager::new(cilium_lb::manager::LbConfig::default());
    let vip = Ipv4Addr::new(10, 96, 0, 10);
    let svc = cilium_lb::service::Service::new(
        "x",
        cilium_lb::service::L3n4Addr::new(vip.into(), 80, cilium_lb::maglev::L4Proto::Tcp),
        cilium_lb::service::ServiceType::ClusterIP,
    )
    .with_backend(cilium_lb::service::Backend::new(
        cilium_lb::service::L3n4Addr::new(b.into(), 8080, cilium_lb::maglev::L4Proto::Tcp),
    ));
    // The flows above are tracked too (conntrack serves policy): count them first.
    let tracked = cilium_bpf::conntrack::gc(
        &mut maps.ct4_tcp,
        cilium_bpf::conntrack::monotonic_seconds(),
    )
    .expect("gc")
    .alive;
    let mut writer = cilium_bpf::lb::ServiceWriter::open(&fs.path).expect("writer");
    writer
        .apply(&lb.upsert(&svc).expect("upsert"))
        .expect("apply");
    assert_eq!(
        run(&mut dp, &ipv4_tcp_packet(a, vip, 40001, 80, 0x02)),
        TC_ACT_REDIRECT
    );
    // The translated flow's entry counted the packet once (policy reuses the translation's
    // conntrack state instead of looking the flow up again).
    // a:40001 -> b:8080, as conntrack stores it (Cilium's order: the addresses reversed).
    let translated = tcp_flow_key(a, 40001, b, 8080);
    let entry = maps
        .ct4_tcp
        .get(&translated)
        .expect("lookup")
        .expect("the translated flow is tracked");
    assert_eq!(entry.packets, 1);
    let now = cilium_bpf::conntrack::monotonic_seconds();
    let kept = cilium_bpf::conntrack::gc(&mut maps.ct4_tcp, now).expect("gc");
    assert_eq!(
        (kept.deleted, kept.alive),
        (0, tracked + 2),
        "service and translated-flow entries"
    );
    let later = cilium_bpf::conntrack::gc(&mut maps.ct4_tcp, now + 61).expect("gc");
    assert_eq!(
        (later.deleted, later.alive),
        (tracked + 2, 0),
        "a SYN-only flow expires after 60 s"
    );
    // Two scopes: a NodePort with externalTrafficPolicy=Local whose only backend runs on
    // another node. Pods (internal scope) reach it; traffic from outside (external scope,
    // no local backend) is dropped.
    let mut lb2 = cilium_lb::manager::LbManager::new(cilium_lb::manager::LbConfig {
        node_name: "this-node".into(),
        ..cilium_lb::manager::LbConfig::default()
    });
    let node_ip = Ipv4Addr::new(192, 168, 10, 100);
    let mut np = cilium_lb::service::Service::new(
        "np",
        cilium_lb::service::L3n4Addr::new(node_ip.into(), 30080, cilium_lb::maglev::L4Proto::Tcp),
        cilium_lb::service::ServiceType::NodePort,
    );
    np.external_traffic_policy = cilium_lb::service::TrafficPolicy::Local;
    let mut remote = cilium_lb::service::Backend::new(cilium_lb::service::L3n4Addr::new(
        b.into(),
        8080,
        cilium_lb::maglev::L4Proto::Tcp,
    ));
    remote.node_name = Some("other-node".into());
    np.backends.push(remote);
    // Reuse the writer: the ids of this second manager start at 1 too, so give it its own
    // frontend and let it overwrite nothing the first one wrote.
    let ops = lb2.upsert(&np).expect("upsert");
    let ops: Vec<_> = ops
        .into_iter()
        .filter(|op| !matches!(op, cilium_lb::manager::MapOp::UpsertRevNat { .. }))
        .collect();
    writer.apply(&ops).expect("apply");
    let to_np = ipv4_tcp_packet(a, node_ip, 40002, 30080, 0x02);
    assert_eq!(
        run(&mut dp, &to_np),
        TC_ACT_REDIRECT,
        "a pod uses the internal scope"
    );
    // A new flow from outside (the pod's flow above now sits in conntrack).
    let from_outside = ipv4_tcp_packet(Ipv4Addr::new(192, 0, 2, 7), node_ip, 40003, 30080, 0x02);
    let netdev = dp
        .test_run("from_netdev", &from_outside, 1)
        .expect("test run")
        .verdict;
    assert_eq!(
        netdev, TC_ACT_SHOT,
        "outside traffic finds no local backend"
    );

    // Counted per reason.
    assert!(
        maps.metrics
            .count(cilium_bpf::events::drop_reason::INVALID_SOURCE_IP, 2)
            .expect("metrics")
            >= 1
    );
    assert!(
        maps.metrics
            .count(cilium_bpf::events::drop_reason::INVALID_PACKET, 2)
            .expect("metrics")
            >= 1
    );
}

/// Monitor aggregation (Cilium's `monitor-aggregation`): at `medium`, an established TCP
/// flow is reported when it starts, when a TCP flag of `monitor-aggregation-flags` shows up
/// for the first time in its direction, and once per interval; other packets are forwarded
/// (and counted) without a trace. Drops and policy verdicts are always reported. At
/// `none`, every packet is. The policy revision: an established flow skips the policy
/// lookups until a policy map changes, and is checked (here: dropped) right after.
#[test]
fn privileged_monitor_aggregation_and_policy_revision() {
    use cilium_bpf::events::{Event, EventKind, ObservationPoint};
    if !is_root_or_skip("privileged_monitor_aggregation_and_policy_revision") {
        return;
    }
    let traces = |events: &[Event]| {
        events
            .iter()
            .filter(|e| {
                e.kind
                    == EventKind::Trace {
                        point: ObservationPoint::ToEndpoint,
                    }
            })
            .count()
    };
    let (a, b) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    // SYN, then ACKs, PSH|ACKs, and a FIN|ACK, all of one flow.
    let packets: Vec<(u8, usize)> = vec![(0x02, 1), (0x10, 3), (0x18, 3), (0x11, 1)];
    for (level, want) in [(0u8, 8usize), (3, 2)] {
        let fs = BpfFs::new();
        let mut config = DatapathConfig::new(
            &fs.path,
            Ipv4Addr::new(192, 168, 10, 100),
            Ipv4Addr::new(10, 0, 0, 254),
        );
        config.monitor_aggregation = level;
        config.monitor_aggregation_interval = 1;
        let mut dp = Datapath::load(config).expect("load");
        let mut maps = Maps::open(&fs.path).expect("maps");
        cilium_bpf::testing::loopback_endpoints(&mut maps, &[a, b]).expect("endpoints");
        // A ClusterIP vip:80 -> b:8080 beside the local flow a -> b:80.
        let vip = Ipv4Addr::new(10, 96, 0, 10);
        let mut lb = cilium_lb::manager::LbManager::new(cilium_lb::manager::LbConfig::default());
        let svc = cilium_lb::service::Service::new(
            "x",
            cilium_lb::service::L3n4Addr::new(vip.into(), 80, cilium_lb::maglev::L4Proto::Tcp),
            cilium_lb::service::ServiceType::ClusterIP,
        )
        .with_backend(cilium_lb::service::Backend::new(
            cilium_lb::service::L3n4Addr::new(b.into(), 8080, cilium_lb::maglev::L4Proto::Tcp),
        ));
        cilium_bpf::lb::ServiceWriter::open(&fs.path)
            .expect("writer")
            .apply(&lb.upsert(&svc).expect("upsert"))
            .expect("apply");
        let mut reader = cilium_bpf::maps::EventReader::open(&fs.path).expect("events");
        // (local flow?, flags) -> verdict
        let mut run = |local: bool, flags: u8| {
            let packet = if local {
                ipv4_tcp_packet(a, b, 40000, 80, flags)
            } else {
                ipv4_tcp_packet(a, vip, 40001, 80, flags)
            };
            dp.test_run("from_container", &packet, 1)
                .expect("test run")
                .verdict
        };
        // Traces of the local flow (to port 80) and of the service flow (to 8080 once
        // translated).
        let mut drained = || {
            let events: Vec<Event> = reader.drain().into_iter().filter_map(Result::ok).collect();
            let of = |port: u16| {
                let mine: Vec<Event> = events.iter().filter(|e| e.dport == port).copied().collect();
                traces(&mine)
            };
            (of(80), of(8080), events)
        };
        for local in [true, false] {
            for (flags, n) in &packets {
                for _ in 0..*n {
                    assert_eq!(run(local, *flags), TC_ACT_REDIRECT, "flags {flags:#x}");
                }
            }
        }
        // 8 packets a flow: at `none` each is reported; at `medium` the SYN (a new flow)
        // and the FIN (a flag not seen before); the ACK and PSH are not in the default
        // flags.
        let (local, service, events) = drained();
        assert_eq!((local, service), (want, want), "level {level}: {events:?}");
        assert_eq!(
            maps.metrics
                .count(cilium_bpf::maps::REASON_FORWARDED, 2)
                .expect("metrics"),
            16,
            "every packet is counted whatever is reported"
        );
        if level == 3 {
            // Once the interval has passed, each flow is reported again, once.
            std::thread::sleep(std::time::Duration::from_millis(2100));
            for local in [true, false] {
                run(local, 0x10);
                run(local, 0x10);
            }
            let (local, service, events) = drained();
            assert_eq!((local, service), (1, 1), "{events:?}");

            // Policy: b's ingress denies everything now (an empty allow list). The
            // established flows passed at the old revision; the new one checks them again.
            let mut writer =
                cilium_bpf::policy::PolicyWriter::open(&fs.path, true).expect("policy map");
            let before = writer.revision().expect("revision");
            let mut engine =
                cilium_policy::PolicyEngine::new(cilium_policy::EnforcementMode::Always);
            engine.upsert_endpoint(
                11,
                cilium_core::LabelSet::parse_list(&["k8s:app=b".to_owned()]).expect("labels"),
            );
            writer
                .install(11, &engine.policy(11).expect("policy"))
                .expect("install");
            assert_eq!(writer.revision().expect("revision"), before + 1);
            for local in [true, false] {
                assert_eq!(
                    run(local, 0x10),
                    TC_ACT_SHOT,
                    "the established flow is checked again (local: {local})"
                );
            }
            let (_, _, events) = drained();
            assert!(
                events
                    .iter()
                    .any(|e| matches!(e.kind, EventKind::Drop { .. })),
                "drops are reported at every level: {events:?}"
            );
        }
    }
}

/// Endpoints by interface (`cilium_lxc_ifindex`): each endpoint behind an interface of
/// a namespace of the test's, the programs run on packets of those interfaces. The slots
/// follow `cilium_lxc` (written, moved, cleared, pruned); a packet is still checked
/// against its own interface (anti-spoofing); conntrack remembers where a flow's packets
/// and its replies go, and a remembered interface that now holds another endpoint is not
/// trusted.
#[test]
fn privileged_endpoints_by_interface() {
    use cilium_bpf::events::{Event, EventKind, ObservationPoint};
    if !is_root_or_skip("privileged_endpoints_by_interface") {
        return;
    }
    let fs = BpfFs::new();
    let config = DatapathConfig::new(
        &fs.path,
        Ipv4Addr::new(192, 168, 10, 100),
        Ipv4Addr::new(10, 0, 0, 254),
    );
    // monitor-aggregation none: every delivered packet is reported, with its endpoint.
    assert_eq!(config.monitor_aggregation, 0);
    let mut dp = Datapath::load(config).expect("load");
    let mut maps = Maps::open(&fs.path).expect("maps");
    let links = cilium_bpf::testing::TestLinks::new(&format!("crs{}-tr", std::process::id()), 3);
    let [if0, if1, if2] = [links.ifindexes[0], links.ifindexes[1], links.ifindexes[2]];
    let (a, b, c) = (
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(10, 0, 0, 2),
        Ipv4Addr::new(10, 0, 0, 3),
    );
    cilium_bpf::testing::endpoints_at(&mut maps, &[(a, if0), (b, if1)]).expect("endpoints");
    let slot = |maps: &Maps, i| maps.endpoints.by_ifindex(i).expect("slot");
    assert_eq!(
        slot(&maps, if0).map(|(ip, e)| (ip, e.lxc_id)),
        Some((a, 10))
    );
    assert_eq!(
        slot(&maps, if1).map(|(ip, e)| (ip, e.lxc_id)),
        Some((b, 11))
    );
    assert_eq!(slot(&maps, if2), None);

    let mut reader = cilium_bpf::maps::EventReader::open(&fs.path).expect("events");
    let _inside = links.enter();
    let mut run = |pkt: &[u8], ifindex: u32| {
        dp.test_run_on("from_container", pkt, 1, ifindex)
            .expect("test run")
            .verdict
    };
    // The endpoint a that was delivered to (the trace's destination endpoint id).
    let mut delivered_to = || {
        let events: Vec<Event> = reader.drain().into_iter().filter_map(Result::ok).collect();
        let to: Vec<u16> = events
            .iter()
            .filter(|e| {
                e.kind
                    == EventKind::Trace {
                        point: ObservationPoint::ToEndpoint,
                    }
            })
            .map(|e| e.dst_endpoint)
            .collect();
        to
    };
    delivered_to();
    assert_eq!(
        run(&ipv4_tcp_packet(a, b, 40000, 80, 0x02), if0),
        TC_ACT_REDIRECT
    );
    assert_eq!(delivered_to(), vec![11]);
    // a's address from b's interface: spoofed, dropped.
    assert_eq!(
        run(&ipv4_tcp_packet(a, b, 40001, 80, 0x02), if1),
        TC_ACT_SHOT
    );
    // The flow's entry remembers both interfaces (a -> b:80, stored as Cilium stores it).
    let key = tcp_flow_key(a, 40000, b, 80);
    let entry = maps.ct4_tcp.get(&key).expect("lookup").expect("tracked");
    assert_eq!((u32::from(entry.ifindex), entry.reply_ifindex), (if1, if0));
    // The reply goes back to a, and the flow's next packet to b.
    assert_eq!(
        run(&ipv4_tcp_packet(b, a, 80, 40000, 0x12), if1),
        TC_ACT_REDIRECT
    );
    assert_eq!(
        run(&ipv4_tcp_packet(a, b, 40000, 80, 0x10), if0),
        TC_ACT_REDIRECT
    );
    assert_eq!(delivered_to(), vec![10, 11]);

    // b comes back behind another interface as endpoint 99, and c takes b's old one: the
    // flow's remembered interface now holds c, and the packet still goes to b.
    let b_again = cilium_bpf::types::EndpointInfo {
        ifindex: if2,
        lxc_id: 99,
        sec_id: 399,
        ..cilium_bpf::types::EndpointInfo::default()
    };
    maps.endpoints.upsert_ipv4(b, &b_again).expect("move b");
    assert_eq!(slot(&maps, if1), None, "b's old slot is cleared");
    assert_eq!(
        slot(&maps, if2).map(|(ip, e)| (ip, e.lxc_id)),
        Some((b, 99))
    );
    let c_info = cilium_bpf::types::EndpointInfo {
        ifindex: if1,
        lxc_id: 12,
        sec_id: 302,
        ..cilium_bpf::types::EndpointInfo::default()
    };
    maps.endpoints.upsert_ipv4(c, &c_info).expect("c");
    assert_eq!(
        run(&ipv4_tcp_packet(a, b, 40000, 80, 0x10), if0),
        TC_ACT_REDIRECT
    );
    assert_eq!(delivered_to(), vec![99]);
    // c's address from c's interface works; b's old address there does not.
    assert_eq!(
        run(&ipv4_tcp_packet(c, a, 40002, 80, 0x02), if1),
        TC_ACT_REDIRECT
    );
    assert_eq!(
        run(&ipv4_tcp_packet(b, a, 40003, 80, 0x02), if1),
        TC_ACT_SHOT
    );

    // Removing an endpoint clears its slot; a slot whose endpoint left cilium_lxc without
    // it (a writer that stopped halfway) is pruned.
    assert!(maps.endpoints.remove_ipv4(a).expect("remove"));
    assert_eq!(slot(&maps, if0), None);
    let mut raw = cilium_bpf::maps::BpfHashMap::<
        cilium_bpf::types::EndpointKey,
        cilium_bpf::types::EndpointInfo,
    >::open(&fs.path, cilium_bpf::maps::names::LXC)
    .expect("cilium_lxc");
    raw.remove(&cilium_bpf::types::EndpointKey::ipv4(c))
        .expect("remove c behind the writer's back");
    assert_eq!(maps.endpoints.prune_slots().expect("prune"), 1);
    assert_eq!(slot(&maps, if1), None);
    assert_eq!(
        slot(&maps, if2).map(|(ip, _)| ip),
        Some(b),
        "b's slot stays"
    );
}

/// What is reported from the node's side at each monitor aggregation level, and with which
/// source identity. `to_container` (traffic from the stack) and `from_netdev` resolve the
/// source's identity only when policy or a report needs it: every report still carries
/// it. `to_netdev` masquerading tracks no connection, so at `medium` it counts its packets
/// and reports none (as Cilium's to-netdev); at `none` it reports each.
#[test]
fn privileged_node_side_reports() {
    use cilium_bpf::events::{Event, EventKind, ObservationPoint};
    if !is_root_or_skip("privileged_node_side_reports") {
        return;
    }
    let (a, b) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    let peer = Ipv4Addr::new(172, 16, 5, 5);
    let world = Ipv4Addr::new(198, 51, 100, 1);
    for (level, reports) in [(0u8, 5usize), (3, 2)] {
        let fs = BpfFs::new();
        let mut config = DatapathConfig::new(
            &fs.path,
            Ipv4Addr::new(192, 168, 10, 100),
            Ipv4Addr::new(10, 0, 0, 254),
        );
        config.monitor_aggregation = level;
        let mut dp = Datapath::load(config).expect("load");
        let mut maps = Maps::open(&fs.path).expect("maps");
        cilium_bpf::testing::loopback_endpoints(&mut maps, &[a, b]).expect("endpoints");
        // The peer outside the node has an identity of its own in the ipcache.
        let info = cilium_bpf::types::RemoteEndpointInfo {
            sec_identity: 777,
            ..cilium_bpf::types::RemoteEndpointInfo::default()
        };
        maps.ipcache.upsert_ipv4(peer, 32, &info).expect("ipcache");
        let mut reader = cilium_bpf::maps::EventReader::open(&fs.path).expect("events");
        let mut run = |program: &'static str, pkt: &[u8]| {
            dp.test_run(program, pkt, 1).expect("test run").verdict
        };
        let mut traces = |point: ObservationPoint| -> Vec<Event> {
            reader
                .drain()
                .into_iter()
                .filter_map(Result::ok)
                .filter(|e| e.kind == EventKind::Trace { point })
                .collect()
        };
        traces(ObservationPoint::ToEndpoint);

        // peer -> b:80 from the stack: SYN, three ACKs, FIN.
        for flags in [0x02, 0x10, 0x10, 0x10, 0x11] {
            assert_eq!(
                run("to_container", &ipv4_tcp_packet(peer, b, 45000, 80, flags)),
                TC_ACT_OK
            );
        }
        let seen = traces(ObservationPoint::ToEndpoint);
        assert_eq!(seen.len(), reports, "level {level}: {seen:?}");
        assert!(
            seen.iter().all(|e| e.src_identity == 777),
            "level {level}: every report names the source's identity: {seen:?}"
        );

        // The same from another node straight into b (from_netdev's local delivery).
        for flags in [0x02, 0x10, 0x10, 0x10, 0x11] {
            assert_eq!(
                run("from_netdev", &ipv4_tcp_packet(peer, b, 45001, 80, flags)),
                TC_ACT_REDIRECT
            );
        }
        let seen = traces(ObservationPoint::ToEndpoint);
        assert_eq!(seen.len(), reports, "level {level}: {seen:?}");
        assert!(seen.iter().all(|e| e.src_identity == 777), "{seen:?}");

        // a -> the world, masqueraded on the way out: counted always, reported at `none`.
        let before = maps
            .metrics
            .count(cilium_bpf::maps::REASON_FORWARDED, 2)
            .expect("metrics");
        for flags in [0x02, 0x10, 0x10] {
            assert_eq!(
                run("to_netdev", &ipv4_tcp_packet(a, world, 40000, 443, flags)),
                TC_ACT_OK
            );
        }
        let seen = traces(ObservationPoint::ToNetwork);
        assert_eq!(seen.len(), if level == 0 { 3 } else { 0 }, "{seen:?}");
        assert_eq!(
            maps.metrics
                .count(cilium_bpf::maps::REASON_FORWARDED, 2)
                .expect("metrics"),
            before + 3
        );
    }
}
