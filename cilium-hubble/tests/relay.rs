// SPDX-License-Identifier: Apache-2.0

//! Hubble Relay over real sockets: three nodes' servers on loopback TCP and one peer that
//! is down. The relay merges the nodes' flows in time order, cuts `number` cluster-wide,
//! follows new flows from every node, reports the down node everywhere, and picks up a
//! change of its peer list.

mod support;

use std::time::Duration;

use cilium_hubble::observer::{Listen, connect, from_proto, serve};
use cilium_hubble::proto::observer::get_flows_response::ResponseTypes;
use cilium_hubble::proto::observer::{GetFlowsRequest, GetNodesRequest, ServerStatusRequest};
use cilium_hubble::proto::relay::NodeState;
use cilium_hubble::relay::{Peer, Relay, RelayOptions};
use support::flow_at;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_merges_nodes_and_reports_the_down_one() {
    // Flows interleaved in time across the three nodes: node i has seconds i, i+3, i+6.
    let mut peers = Vec::new();
    let mut servers = Vec::new();
    let mut sources = Vec::new();
    let mut cuts = Vec::new();
    for (i, name) in ["k8s-ctr", "k8s-w1", "k8s-w2"].into_iter().enumerate() {
        let source = support::source(name, 63);
        for k in 0..3u64 {
            let second = i as u64 + 3 * k;
            source.push(flow_at(name, 8000 + second as u16, second, false));
        }
        let (task, address) = support::serve_on(&source, "127.0.0.1:0").await;
        // k8s-w1 is reached through a forwarder the test can cut (ending a tonic server
        // task would leave its open connections running).
        let (address, cut) = if name == "k8s-w1" {
            let (a, c) = forwarder(address).await;
            (a, Some(c))
        } else {
            (address, None)
        };
        cuts.extend(cut);
        peers.push(Peer {
            name: name.into(),
            address,
        });
        servers.push(task);
        sources.push(source);
    }
    // A node whose agent is down: nothing listens on its address.
    let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down_address = down.local_addr().unwrap().to_string();
    drop(down);
    peers.push(Peer {
        name: "k8s-w3".into(),
        address: down_address,
    });
    let (peers_tx, peers_rx) = tokio::sync::watch::channel(peers.clone());
    let options = RelayOptions {
        dial_timeout: Duration::from_secs(2),
        sort_buffer_drain_timeout: Duration::from_millis(300),
        sort_buffer_len_max: 100,
    };
    let relay = std::sync::Arc::new(Relay::new(peers_rx, options));
    let listener = "127.0.0.1:0"
        .parse::<Listen>()
        .unwrap()
        .bind()
        .await
        .unwrap();
    let relay_address = listener.address().unwrap().to_string();
    let served = tokio::spawn(serve(relay.clone(), listener, None));
    let mut client = connect(&relay_address, Duration::from_secs(2))
        .await
        .unwrap();

    // The newest 5 flows of the cluster, oldest first, after a note on the down node.
    let mut stream = client
        .get_flows(GetFlowsRequest {
            number: 5,
            ..GetFlowsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut seconds = Vec::new();
    let mut notes = Vec::new();
    while let Some(item) = stream.message().await.unwrap() {
        match item.response_types {
            Some(ResponseTypes::Flow(f)) => {
                let f = from_proto(f);
                let port = f.l4.unwrap().ports().unwrap().1;
                seconds.push(port - 8000);
                assert_eq!(item.node_name, f.node_name);
            }
            Some(ResponseTypes::NodeStatus(n)) => {
                assert!(seconds.is_empty(), "the note comes first");
                notes.push(n);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(seconds, [4, 5, 6, 7, 8]);
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].state_change(), NodeState::NodeUnavailable);
    assert_eq!(notes[0].node_names, ["k8s-w3"]);
    // `first`: the oldest 2; no number: all 9.
    for (req, want) in [
        (
            GetFlowsRequest {
                number: 2,
                first: true,
                ..GetFlowsRequest::default()
            },
            vec![0, 1],
        ),
        (GetFlowsRequest::default(), (0..9).collect()),
    ] {
        let mut stream = client.get_flows(req).await.unwrap().into_inner();
        let mut got = Vec::new();
        while let Some(item) = stream.message().await.unwrap() {
            if let Some(ResponseTypes::Flow(f)) = item.response_types {
                got.push(from_proto(f).l4.unwrap().ports().unwrap().1 - 8000);
            }
        }
        assert_eq!(got, want);
    }
    // Filters go to every node; a bad one is refused once, by the relay.
    let bad = cilium_hubble::proto::flow::FlowFilter {
        source_ip: vec!["not-an-ip".into()],
        ..Default::default()
    };
    let err = client
        .get_flows(GetFlowsRequest {
            whitelist: vec![bad],
            ..GetFlowsRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // Status and nodes: three connected, the down one named.
    let status = client
        .server_status(ServerStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.num_connected_nodes, Some(3));
    assert_eq!(status.num_unavailable_nodes, Some(1));
    assert_eq!(status.unavailable_nodes, ["k8s-w3"]);
    assert_eq!((status.num_flows, status.max_flows), (9, 3 * 63));
    let nodes = client
        .get_nodes(GetNodesRequest {})
        .await
        .unwrap()
        .into_inner()
        .nodes;
    let states: Vec<(String, NodeState)> =
        nodes.iter().map(|n| (n.name.clone(), n.state())).collect();
    assert_eq!(
        states,
        [
            ("k8s-ctr".to_owned(), NodeState::NodeConnected),
            ("k8s-w1".to_owned(), NodeState::NodeConnected),
            ("k8s-w2".to_owned(), NodeState::NodeConnected),
            ("k8s-w3".to_owned(), NodeState::NodeUnavailable),
        ]
    );
    assert_eq!(nodes[1].address, peers[1].address);

    // Follow: new flows on two nodes, written out of time order, come out in time order
    // (`since` second 100: the flows written before each node's stream opens count too).
    let mut stream = client
        .get_flows(GetFlowsRequest {
            follow: true,
            since: Some(cilium_hubble::observer::timestamp(
                flow_at("x", 0, 100, false).time.unix_ns(),
            )),
            ..GetFlowsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    sources[2].push(flow_at("k8s-w2", 9102, 102, false));
    sources[0].push(flow_at("k8s-ctr", 9101, 101, false));
    sources[2].push(flow_at("k8s-w2", 9103, 103, true));
    let mut followed = Vec::new();
    while followed.len() < 3 {
        let item = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("followed flows arrive")
            .unwrap()
            .unwrap();
        if let Some(ResponseTypes::Flow(f)) = item.response_types {
            followed.push((item.node_name, from_proto(f).l4.unwrap().ports().unwrap().1));
        }
    }
    assert_eq!(
        followed,
        [
            ("k8s-ctr".to_owned(), 9101),
            ("k8s-w2".to_owned(), 9102),
            ("k8s-w2".to_owned(), 9103)
        ]
    );
    // A node going down mid-stream does not end the stream.
    cuts[0].abort();
    sources[1].push(flow_at("k8s-w1", 9105, 105, false));
    sources[0].push(flow_at("k8s-ctr", 9104, 104, false));
    let next = loop {
        let item = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("the stream goes on")
            .unwrap()
            .unwrap();
        if let Some(ResponseTypes::Flow(f)) = item.response_types {
            break from_proto(f).l4.unwrap().ports().unwrap().1;
        }
    };
    assert_eq!(next, 9104);
    drop(stream);
    let status = client
        .server_status(ServerStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.unavailable_nodes, ["k8s-w1", "k8s-w3"]);

    // The peer list changes (the down node left the cluster): nothing is unavailable.
    peers_tx.send_modify(|p| p.retain(|p| p.name != "k8s-w3" && p.name != "k8s-w1"));
    let status = client
        .server_status(ServerStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.num_connected_nodes, Some(2));
    assert_eq!(status.num_unavailable_nodes, Some(0));
    served.abort();
    for s in servers {
        s.abort();
    }
}

/// Forwards a loopback TCP port to `target`; aborting the returned task closes the
/// listener and every connection through it.
async fn forwarder(target: String) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((mut inbound, _)) = listener.accept().await {
            let target = target.clone();
            conns.spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (address, task)
}
