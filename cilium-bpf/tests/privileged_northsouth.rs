// SPDX-License-Identifier: Apache-2.0

//! North-south: a client in an "outside" namespace reaches a NodePort through the node's
//! address (from_netdev), and a pod reaches a server outside the native-routing CIDR with
//! the node's address as its source (to_netdev's BPF masquerade), replies translated back.
//! Needs root; the namespaces and bpffs are the test's own and removed on drop.

mod support;

use std::net::Ipv4Addr;

use cilium_bpf::DatapathConfig;
use cilium_bpf::lb::ServiceWriter;
use cilium_lb::maglev::L4Proto;
use cilium_lb::manager::{LbConfig, LbManager};
use cilium_lb::service::{Backend, L3n4Addr, Service, ServiceType};
use support::{HttpServer, ROUTER, TestNode, curl, is_root_or_skip, start_datapath_with};

const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 10, 100);
const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 10, 200);

fn field<'a>(body: &'a str, name: &str) -> &'a str {
    body.lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or("")
}

#[test]
fn privileged_nodeport_and_masquerade() {
    if !is_root_or_skip("privileged_nodeport_and_masquerade") {
        return;
    }
    let mut env = TestNode::new(2);
    let outside = env.add_outside(NODE_IP, OUTSIDE_IP);
    let mut config = DatapathConfig::new(&env.bpffs, NODE_IP, ROUTER);
    config.native_routing_cidr = Some((Ipv4Addr::new(172, 20, 0, 0), 16));
    let _dp = start_datapath_with(&env, config, Some("eth0"));
    let backend = &env.pods[0];
    let _web = HttpServer::start(&backend.netns, backend.ip, 8080, "webpod-1");
    let _ext = HttpServer::start(&outside, OUTSIDE_IP, 8000, "outside");

    // NodePort: outside -> node:30080 -> webpod-1, with the client's address preserved
    // (the backend is local, so no SNAT).
    let mut svc = Service::new(
        "default/webpod",
        L3n4Addr::new(NODE_IP.into(), 30080, L4Proto::Tcp),
        ServiceType::NodePort,
    );
    svc.backends.push(Backend::new(L3n4Addr::new(
        backend.ip.into(),
        8080,
        L4Proto::Tcp,
    )));
    let mut lb = LbManager::new(LbConfig::default());
    let mut writer = ServiceWriter::open(&env.bpffs).expect("writer");
    writer
        .apply(&lb.upsert(&svc).expect("upsert"))
        .expect("apply");
    for _ in 0..5 {
        let body =
            curl(&outside, &[&format!("http://{NODE_IP}:30080/")]).expect("NodePort answers");
        assert_eq!(field(&body, "Hostname: "), "webpod-1");
        assert!(
            field(&body, "RemoteAddr: ").starts_with(&format!("{OUTSIDE_IP}:")),
            "{body}"
        );
    }

    // HostPort: the pod's hostPort 8081 on the node's address, as Cilium implements it (a
    // HostPort service from the node's address to the pod's containerPort).
    let mut hp = Service::new(
        "default/webpod-1",
        L3n4Addr::new(NODE_IP.into(), 8081, L4Proto::Tcp),
        ServiceType::HostPort,
    );
    hp.backends.push(Backend::new(L3n4Addr::new(
        backend.ip.into(),
        8080,
        L4Proto::Tcp,
    )));
    writer
        .apply(&lb.upsert(&hp).expect("upsert"))
        .expect("apply");
    let body = curl(&outside, &[&format!("http://{NODE_IP}:8081/")]).expect("HostPort answers");
    assert_eq!(field(&body, "Hostname: "), "webpod-1");

    // A LoadBalancer address and an external IP, routed to the node by the outside (as a
    // router or an L2 announcement would), reach the same backend.
    for (addr, kind) in [
        (Ipv4Addr::new(192, 168, 10, 250), ServiceType::LoadBalancer),
        (Ipv4Addr::new(192, 168, 10, 251), ServiceType::ExternalIPs),
    ] {
        support::run(&[
            "ip",
            "-n",
            &outside,
            "route",
            "add",
            &format!("{addr}/32"),
            "via",
            &NODE_IP.to_string(),
        ]);
        let mut ext = Service::new(
            "default/webpod",
            L3n4Addr::new(addr.into(), 80, L4Proto::Tcp),
            kind,
        );
        ext.backends.push(Backend::new(L3n4Addr::new(
            backend.ip.into(),
            8080,
            L4Proto::Tcp,
        )));
        writer
            .apply(&lb.upsert(&ext).expect("upsert"))
            .expect("apply");
        let body = curl(&outside, &[&format!("http://{addr}/")]).expect("external address answers");
        assert_eq!(field(&body, "Hostname: "), "webpod-1", "{kind}");
    }

    // Masquerade: pod -> outside server, seen as coming from the node.
    let pod = &env.pods[1];
    for _ in 0..5 {
        let body = curl(&pod.netns, &[&format!("http://{OUTSIDE_IP}:8000/")])
            .expect("reply reaches the pod");
        assert_eq!(field(&body, "Hostname: "), "outside");
        let seen = field(&body, "RemoteAddr: ");
        assert!(
            seen.starts_with(&format!("{NODE_IP}:")),
            "the server saw {seen}"
        );
        let port: u16 = seen
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        // Cilium's NODEPORT_PORT_MIN_NAT..NODEPORT_PORT_MAX_NAT, above the NodePort range.
        assert!(port >= 32768, "NAT port {port} in Cilium's range");
    }
    let maps = cilium_bpf::maps::Maps::open(&env.bpffs).expect("maps");
    let nat = maps.snat4.entries().expect("snat entries");
    assert!(
        nat.len() >= 10,
        "egress and ingress entries for each flow: {}",
        nat.len()
    );
    // Traffic between pods inside the native-routing CIDR is not masqueraded.
    assert!(
        nat.iter()
            .all(|(k, _)| k.saddr != [172, 20, 0, 10] || k.daddr != [172, 20, 0, 11])
    );
}
