// SPDX-License-Identifier: Apache-2.0

//! Two nodes on one underlay, with native routing between their pod CIDRs: pods reach pods
//! of the other node, a ClusterIP is answered by backends on the other node, and a NodePort
//! reached from outside is served by a backend on the other node (SNAT to the first node so
//! replies come back through it). Needs root; everything is the test's own and removed on
//! drop.

mod support;

use std::collections::HashMap;
use std::net::Ipv4Addr;

use cilium_bpf::lb::ServiceWriter;
use cilium_bpf::{Datapath, DatapathConfig};
use cilium_lb::maglev::L4Proto;
use cilium_lb::manager::{LbConfig, LbManager};
use cilium_lb::service::{Backend, L3n4Addr, Service, ServiceType};
use support::{
    HttpServer, OUTSIDE_IP, TestCluster, curl, is_root_or_skip, node_ip, router_of,
    start_datapath_with,
};

fn field<'a>(body: &'a str, name: &str) -> &'a str {
    body.lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or("")
}

/// Starts each node's datapath, and fills its ipcache as the agent will: every node's
/// address is a remote node (identity 6).
fn start(cluster: &TestCluster) -> Vec<Datapath> {
    let count = cluster.nodes.len();
    cluster
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let mut config = DatapathConfig::new(&node.bpffs, node_ip(i), router_of(i as u8));
            config.native_routing_cidr = Some((Ipv4Addr::new(172, 20, 0, 0), 16));
            let dp = start_datapath_with(node, config, Some("eth0"));
            let mut maps = cilium_bpf::maps::Maps::open(&node.bpffs).expect("maps");
            for j in (0..count).filter(|j| *j != i) {
                let info = cilium_bpf::types::RemoteEndpointInfo {
                    sec_identity: 6,
                    ..Default::default()
                };
                maps.ipcache
                    .upsert_ipv4(node_ip(j), 32, &info)
                    .expect("ipcache");
            }
            dp
        })
        .collect()
}

#[test]
fn privileged_services_with_backends_on_another_node() {
    if !is_root_or_skip("privileged_services_with_backends_on_another_node") {
        return;
    }
    let cluster = TestCluster::new(2, 2);
    let _dps = start(&cluster);
    let (n0, n1) = (&cluster.nodes[0], &cluster.nodes[1]);
    let _servers: Vec<HttpServer> = n1
        .pods
        .iter()
        .enumerate()
        .map(|(i, p)| HttpServer::start(&p.netns, p.ip, 8080, &format!("webpod-{}", i + 1)))
        .collect();

    // Pod to pod across nodes.
    assert!(
        n0.exec_ok(
            &n0.pods[0].netns,
            &[
                "ping",
                "-c",
                "2",
                "-i",
                "0.2",
                "-W",
                "2",
                &n1.pods[0].ip.to_string()
            ]
        ),
        "pod on node 0 -> pod on node 1"
    );

    // A ClusterIP on node 0 whose backends are all on node 1.
    let vip = Ipv4Addr::new(10, 96, 0, 10);
    let backends = || {
        n1.pods
            .iter()
            .map(|p| Backend::new(L3n4Addr::new(p.ip.into(), 8080, L4Proto::Tcp)))
            .collect::<Vec<_>>()
    };
    let mut cip = Service::new(
        "default/webpod",
        L3n4Addr::new(vip.into(), 80, L4Proto::Tcp),
        ServiceType::ClusterIP,
    );
    cip.backends = backends();
    let mut np = Service::new(
        "default/webpod",
        L3n4Addr::new(node_ip(0).into(), 30080, L4Proto::Tcp),
        ServiceType::NodePort,
    );
    np.backends = backends();
    let mut lb = LbManager::new(LbConfig::default());
    let mut writer = ServiceWriter::open(&n0.bpffs).expect("writer");
    writer
        .apply(&lb.apply(&[cip, np]).expect("apply"))
        .expect("write");

    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..20 {
        let body = curl(&n0.pods[0].netns, &[&format!("http://{vip}/")])
            .expect("ClusterIP answers across nodes");
        *seen
            .entry(field(&body, "Hostname: ").to_owned())
            .or_default() += 1;
        // The backend sees the client pod's own address (no SNAT east-west).
        assert_eq!(
            field(&body, "RemoteAddr: ").split(':').next(),
            Some("172.20.0.10")
        );
    }
    assert_eq!(seen.len(), 2, "{seen:?}");

    // NodePort on node 0 from outside, served from node 1: SNAT to node 0.
    for _ in 0..5 {
        let body = curl(
            &cluster.outside,
            &[&format!("http://{}:30080/", node_ip(0))],
        )
        .expect("NodePort answers");
        assert!(field(&body, "Hostname: ").starts_with("webpod-"), "{body}");
        let from = field(&body, "RemoteAddr: ")
            .split(':')
            .next()
            .unwrap_or("")
            .to_owned();
        assert_eq!(
            from,
            node_ip(0).to_string(),
            "the backend sees node 0 (SNAT)"
        );
    }
    let _ = OUTSIDE_IP;
}
