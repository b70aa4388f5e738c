// SPDX-License-Identifier: Apache-2.0

//! The Observer API over a real unix socket: the last flows with filters, the server's
//! status, following new flows, and lost events when a follower falls behind the ring.

use std::time::Duration;

use cilium_hubble::flow::{Flow, Verdict};
use cilium_hubble::observer::{connect, from_proto};
use cilium_hubble::proto::flow::{FlowFilter, LostEventSource};
use cilium_hubble::proto::observer::GetFlowsRequest;
use cilium_hubble::proto::observer::get_flows_response::ResponseTypes;

mod support;

fn flow(port: u16, dropped: bool) -> Flow {
    support::flow_at("k8s-w1", port, 14, dropped)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observer_serves_filters_follows_and_reports_loss() {
    let dir = std::env::temp_dir().join(format!("crs-hubble-{}", std::process::id()));
    let socket = dir.join("hubble.sock");
    let source = support::source("k8s-w1", 7);
    for port in [80, 81, 82] {
        source.push(flow(port, port == 81));
    }
    let (server, _) = support::serve_on(&source, &format!("unix://{}", socket.display())).await;
    let mut client = None;
    for _ in 0..50 {
        let server = format!("unix://{}", socket.display());
        if let Ok(c) = connect(&server, Duration::from_secs(1)).await {
            client = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut client = client.expect("the server answers");
    // The standard health service says the Observer is serving (Hubble's CLI asks it).
    cilium_hubble::observer::check_health(
        &format!("unix://{}", socket.display()),
        Duration::from_secs(2),
        None,
    )
    .await
    .expect("healthy");
    // A filter field this server does not evaluate is refused by name, even one the
    // decoder would otherwise have dropped.
    let err = client
        .get_flows(GetFlowsRequest {
            whitelist: vec![FlowFilter {
                tcp_flags: vec![Default::default()],
                ..FlowFilter::default()
            }],
            ..GetFlowsRequest::default()
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("tcp_flags"), "{err}");

    // The last two flows, then only the dropped one.
    let mut stream = client
        .get_flows(GetFlowsRequest {
            number: 2,
            ..GetFlowsRequest::default()
        })
        .await
        .expect("get flows")
        .into_inner();
    let mut ports = Vec::new();
    while let Some(item) = stream.message().await.expect("stream") {
        assert_eq!(item.node_name, "k8s-w1");
        if let Some(ResponseTypes::Flow(f)) = item.response_types {
            let f = from_proto(f);
            ports.push(f.l4.as_ref().and_then(|l| l.ports()).unwrap().1);
        }
    }
    assert_eq!(ports, [81, 82]);
    let dropped = FlowFilter {
        verdict: vec![2],
        ..FlowFilter::default()
    };
    let mut stream = client
        .get_flows(GetFlowsRequest {
            number: 10,
            whitelist: vec![dropped],
            ..GetFlowsRequest::default()
        })
        .await
        .expect("get flows")
        .into_inner();
    let mut got = Vec::new();
    while let Some(item) = stream.message().await.expect("stream") {
        if let Some(ResponseTypes::Flow(f)) = item.response_types {
            got.push(from_proto(f));
        }
    }
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].verdict, Verdict::Dropped);
    let by_reason = |reason: i32| {
        let mut client = client.clone();
        async move {
            let mut stream = client
                .get_flows(GetFlowsRequest {
                    whitelist: vec![FlowFilter {
                        drop_reason_desc: vec![reason],
                        ..FlowFilter::default()
                    }],
                    ..GetFlowsRequest::default()
                })
                .await
                .expect("get flows")
                .into_inner();
            let mut n = 0;
            while let Some(item) = stream.message().await.expect("stream") {
                n += usize::from(matches!(item.response_types, Some(ResponseTypes::Flow(_))));
            }
            n
        }
    };
    assert_eq!(by_reason(133).await, 1, "POLICY_DENIED");
    assert_eq!(by_reason(181).await, 0, "POLICY_DENY");
    assert_eq!(got[0].drop_reason_desc.as_deref(), Some("POLICY_DENIED"));
    assert_eq!(
        got[0],
        flow(81, true),
        "a flow survives the trip through protobuf"
    );
    // A filter field this server cannot evaluate is refused by name.
    let dns = FlowFilter {
        dns_query: vec!["x".into()],
        ..FlowFilter::default()
    };
    let err = client
        .get_flows(GetFlowsRequest {
            whitelist: vec![dns],
            ..GetFlowsRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    assert!(err.message().contains("dns_query"), "{err}");

    let status = client
        .server_status(cilium_hubble::proto::observer::ServerStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (status.num_flows, status.max_flows, status.seen_flows),
        (3, 7, 3)
    );

    // Follow: a new flow arrives; then 20 more than the ring holds between two polls.
    let mut stream = client
        .get_flows(GetFlowsRequest {
            follow: true,
            ..GetFlowsRequest::default()
        })
        .await
        .expect("follow")
        .into_inner();
    source.push(flow(90, false));
    let item = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match item.response_types {
        Some(ResponseTypes::Flow(f)) => {
            assert_eq!(from_proto(f).l4.unwrap().ports().unwrap().1, 90);
        }
        other => panic!("{other:?}"),
    }
    source.push_all((100..127).map(|p| flow(p, false)));
    let item = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match item.response_types {
        Some(ResponseTypes::LostEvents(l)) => {
            assert_eq!(l.source(), LostEventSource::HubbleRingBuffer);
            assert_eq!(l.num_events_lost, 20);
        }
        other => panic!("expected lost events, got {other:?}"),
    }
    // The datapath could not queue 7 events: followers are told where they were lost.
    source
        .datapath_lost
        .store(7, std::sync::atomic::Ordering::Relaxed);
    let lost = loop {
        let item = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Some(ResponseTypes::LostEvents(l)) = item.response_types {
            break l;
        }
    };
    assert_eq!(lost.source(), LostEventSource::PerfEventRingBuffer);
    assert_eq!(lost.num_events_lost, 7);
    server.abort();
    let _ = std::fs::remove_dir_all(&dir);
}
