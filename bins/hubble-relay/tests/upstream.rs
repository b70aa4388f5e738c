// SPDX-License-Identifier: Apache-2.0

//! Upstream's `hubble` CLI (Cilium's, built by `cargo xtask upstream-build`) against the
//! hubble-relay binary in front of two nodes' Observer servers (in process, on loopback):
//! `status`, `list nodes`, `observe` over both nodes and `observe --follow` seeing a flow
//! that arrives after it started. No root.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cilium_hubble::flow::{Flow, Names};
use cilium_hubble::observer::{Listen, ObserverService, RingSource, serve};
use serde_json::Value;

/// A child process killed (by its pid) when dropped, even when the test panics.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A flow of `node` to `port`, at millisecond `ms` of a fixed minute.
fn flow(node: &str, port: u16, ms: u64) -> Flow {
    let mut ev = cilium_hubble::example_event();
    ev.dport = port;
    Flow::from_event(
        &ev,
        1_795_749_000_000_000_000 + u128::from(ms) * 1_000_000,
        node,
        &Names::default(),
    )
}

/// Upstream's `hubble ARGS --server SERVER`: its stdout (a failure fails the test).
fn hubble(binary: &Path, server: &str, args: &[&str]) -> String {
    let out = Command::new(binary)
        .args(args)
        .args(["--server", server])
        .output()
        .expect("run hubble");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "hubble {args:?}: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn upstream_hubble_through_the_relay() {
    let Some(upstream) = cilium_k8s::testing::upstream_client("hubble") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("crs-relay-upstream-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("relay.sock");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Two nodes with three and two flows.
    let mut sources = Vec::new();
    let mut peers = Vec::new();
    for (node, n) in [("k8s-w1", 3u64), ("k8s-w2", 2)] {
        let source = Arc::new(RingSource::new(node, 63).unwrap());
        for i in 0..n {
            source.push(flow(
                node,
                8000 + i as u16,
                i * 10 + u64::from(node == "k8s-w2"),
            ));
        }
        let listener = rt
            .block_on(Listen::Tcp(SocketAddr::from(([127, 0, 0, 1], 0))).bind())
            .unwrap();
        let Listen::Tcp(address) = listener.address().unwrap() else {
            unreachable!()
        };
        rt.spawn(serve(ObserverService::new(source.clone()), listener, None));
        sources.push(source);
        peers.push(format!("{node}={address}"));
    }
    let child = Command::new(env!("CARGO_BIN_EXE_hubble-relay"))
        .args(["--peer", &peers[0], "--peer", &peers[1]])
        .args(["--listen-address", &format!("unix://{}", socket.display())])
        .args(["--disable-client-tls", "--dial-timeout", "2s"])
        .stderr(Stdio::null())
        .spawn()
        .expect("start hubble-relay");
    let _relay = KillOnDrop(child);
    let server = format!("unix://{}", socket.display());

    // status: both nodes connected, their flows counted.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let out = Command::new(&upstream)
            .args(["status", "--server", &server])
            .output()
            .expect("run hubble");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && text.contains("Connected Nodes: 2/2") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "the relay never had both nodes: {text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(status.contains("Healthcheck (via "), "{status}");
    assert!(status.contains("Current/Max Flows: 5/"), "{status}");

    // list nodes: both, connected, with their flow counts.
    let nodes = hubble(&upstream, &server, &["list", "nodes", "-o", "json"]);
    let nodes: Value = serde_json::from_str(&nodes).unwrap();
    let mut listed: Vec<(String, String, u64)> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap_or_default().to_owned(),
                n["state"].as_str().unwrap_or_default().to_owned(),
                // protojson writes 64-bit integers as strings.
                n["num_flows"]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_default(),
            )
        })
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            ("k8s-w1".to_owned(), "NODE_CONNECTED".to_owned(), 3),
            ("k8s-w2".to_owned(), "NODE_CONNECTED".to_owned(), 2)
        ]
    );

    // observe: the five flows of both nodes, in time order, named by their node.
    let flows = hubble(
        &upstream,
        &server,
        &["observe", "--last", "100", "-o", "json"],
    );
    let names: Vec<String> = flows
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["flow"]["node_name"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(names, ["k8s-w1", "k8s-w2", "k8s-w1", "k8s-w2", "k8s-w1"]);

    // observe --follow: a flow pushed after it started arrives, through the relay.
    let mut follow = KillOnDrop(
        Command::new(&upstream)
            .args(["observe", "--follow", "--port", "9999", "-o", "json"])
            .args(["--server", &server])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run hubble --follow"),
    );
    let stdout = follow.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Pushed until it is seen: the follower subscribes some time after it starts.
    let deadline = Instant::now() + Duration::from_secs(30);
    let line = loop {
        sources[1].push(flow("k8s-w2", 9999, 500));
        if let Ok(Ok(line)) = rx.recv_timeout(Duration::from_millis(300)) {
            break line;
        }
        assert!(Instant::now() < deadline, "--follow printed nothing");
    };
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["flow"]["node_name"], "k8s-w2");
    assert_eq!(v["flow"]["l4"]["TCP"]["destination_port"], 9999);
    drop(follow);
    drop(rt);
    let _ = std::fs::remove_dir_all(&dir);
}
