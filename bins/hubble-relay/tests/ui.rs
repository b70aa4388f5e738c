// SPDX-License-Identifier: Apache-2.0

//! The Hubble UI in a real headless browser: three nodes' flows through the relay, the
//! JSON API with its errors, the map's DOM (workloads by identity with their pods, a red
//! edge for drops, other namespaces left out) and a screenshot whose pixels show the
//! boxes where the DOM says they are; an empty namespace paints no box.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use cilium_hubble::flow::{Endpoint, Flow, NoNames};
use cilium_hubble::observer::{Listen, ObserverService, RingSource, serve};
use cilium_hubble::relay::{Peer, Relay, RelayOptions};
use hubble_relay::browser::{self, Image, Render, elements};
use hubble_relay::ui::{DROPPED_EDGE, WORKLOAD_FILL};

fn pod(ns: &str, name: &str, app: &str, identity: u32) -> Endpoint {
    Endpoint {
        id: 0,
        identity,
        namespace: ns.into(),
        labels: vec![
            format!("k8s:app={app}"),
            format!("k8s:io.kubernetes.pod.namespace={ns}"),
        ]
        .into(),
        pod_name: name.into(),
    }
}

fn flow(node: &str, second: u64, from: Endpoint, to: Endpoint, dropped: bool) -> Flow {
    let mut ev = cilium_hubble::example_event();
    if dropped {
        ev.kind = cilium_bpf::events::EventKind::Drop { reason: 133 };
    }
    let mut f = Flow::from_event(
        &ev,
        1_795_749_000_000_000_000 + u128::from(second) * 1_000_000_000,
        node,
        &NoNames,
    );
    f.source = from;
    f.destination = to;
    f
}

fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: ui\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap();
    (code, body)
}

#[test]
fn the_ui_draws_the_namespace_map_and_flows() {
    if browser::chromium().is_none() {
        panic!("chromium is not installed: scripts/deps.sh installs it");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let curl = pod("default", "curl-pod", "curl", 20001);
    let web1 = pod("default", "webpod-7b9c6d5f4d-abcde", "webpod", 20002);
    let web2 = pod("default", "webpod-7b9c6d5f4d-fghij", "webpod", 20002);
    let dns = pod("kube-system", "coredns-5d78c9869d-xyzab", "kube-dns", 20003);
    let nodes = [
        (
            "k8s-ctr",
            vec![flow("k8s-ctr", 1, curl.clone(), web1.clone(), false)],
        ),
        (
            "k8s-w1",
            vec![flow("k8s-w1", 2, curl.clone(), web1.clone(), false)],
        ),
        (
            "k8s-w2",
            vec![
                flow("k8s-w2", 3, curl.clone(), web2.clone(), true),
                flow("k8s-w2", 4, dns.clone(), dns.clone(), false),
            ],
        ),
    ];
    let (ui_addr, _guard) = rt.block_on(async {
        let mut peers = Vec::new();
        for (name, flows) in nodes {
            let node = Arc::new(RingSource::new(name, 63).unwrap());
            node.push_all(flows);
            let listener = "127.0.0.1:0"
                .parse::<Listen>()
                .unwrap()
                .bind()
                .await
                .unwrap();
            let address = listener.address().unwrap().to_string();
            tokio::spawn(serve(ObserverService::new(node), listener, None));
            peers.push(Peer {
                name: name.into(),
                address,
            });
        }
        let (tx, rx) = tokio::sync::watch::channel(peers);
        let relay = Arc::new(Relay::new(rx, RelayOptions::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(listener, hubble_relay::ui::router(relay)).await });
        (addr, tx)
    });

    // The JSON API: the namespace's flows from all three nodes; bad queries are 400s.
    let (code, body) = http_get(&ui_addr, "/api/flows?namespace=default");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let flows = v["flows"].as_array().unwrap();
    let nodes: Vec<&str> = flows
        .iter()
        .map(|f| f["node_name"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, ["k8s-ctr", "k8s-w1", "k8s-w2"]);
    for (path, want) in [
        ("/api/flows?last=0", "last=0"),
        ("/api/flows?last=many", "last"),
        ("/api/flows?namespace=a/b", "no '/'"),
        ("/api/flows?color=red", "color"),
    ] {
        let (code, body) = http_get(&ui_addr, path);
        assert_eq!(code, 400, "{path}: {body}");
        assert!(body.contains(want), "{path}: {body}");
    }
    let (code, body) = http_get(&ui_addr, "/api/status");
    assert_eq!(code, 200);
    assert!(body.contains("\"num_connected_nodes\":3"), "{body}");

    // The map as the browser built it.
    let render = Render::default();
    let url = format!("http://{ui_addr}/?namespace=default");
    let dom = browser::dump_dom(&url, render).expect("chromium renders the page");
    let workloads = elements(&dom, "<g class=\"workload\"");
    let names: Vec<&str> = workloads.iter().map(|w| w["data-name"].as_str()).collect();
    assert_eq!(names, ["curl", "webpod"], "{dom}");
    assert_eq!(workloads[0]["data-pods"], "curl-pod");
    assert_eq!(
        workloads[1]["data-pods"],
        "webpod-7b9c6d5f4d-abcde webpod-7b9c6d5f4d-fghij"
    );
    assert_eq!(workloads[1]["data-identity"], "20002");
    let edges = elements(&dom, "<line class=\"edge");
    assert_eq!(edges.len(), 1, "{dom}");
    assert_eq!(
        (edges[0]["data-from"].as_str(), edges[0]["data-to"].as_str()),
        ("curl", "webpod")
    );
    assert_eq!(edges[0]["data-dropped"], "true");
    assert_eq!(edges[0]["data-flows"], "3");
    assert!(
        dom.contains("Policy denied") || dom.contains("POLICY_DENIED"),
        "the table shows the drop"
    );

    // The screenshot: each box painted where the DOM says it is, and a red edge.
    let dir = std::env::temp_dir().join(format!("crs-ui-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let shot = dir.join("map.png");
    browser::screenshot(&url, render, &shot).expect("screenshot");
    if let Some(keep) = std::env::var_os("CRS_KEEP_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
    let image = Image::open(&shot).unwrap();
    assert_eq!((image.width, image.height), render.size);
    for wl in &workloads {
        let share = image.share_in_box(&wl["data-page-box"], WORKLOAD_FILL);
        assert!(
            share > 0.5,
            "{}: {share} of the pixels in its box have the box colour",
            wl["data-name"]
        );
    }
    let red = image.count(DROPPED_EDGE);
    assert!(red > 100, "the dropped edge is red ({red} pixels)");

    // An empty namespace: no box anywhere.
    browser::screenshot(
        &format!("http://{ui_addr}/?namespace=nothing-here"),
        render,
        &shot,
    )
    .unwrap();
    let fill = Image::open(&shot).unwrap().count(WORKLOAD_FILL);
    assert_eq!(fill, 0, "no workload, no box");
    let _ = std::fs::remove_dir_all(&dir);
}
