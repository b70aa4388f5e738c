// SPDX-License-Identifier: Apache-2.0

//! Upstream's `hubble` CLI (Cilium's, built from the module pinned in `upstream/go.mod` by
//! `cargo xtask upstream-build`) against this project's Observer API: it decodes the
//! protobufs with Cilium's own code, so a wrong field number or enum shared by this
//! project's server and its own CLI shows here. The flows it prints must be the ones this
//! project's `hubble` prints, field by field. No root.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use cilium_bpf::events::{EventKind, ObservationPoint};
use cilium_hubble::flow::{Flow, Names, Service};
use cilium_hubble::observer::{Listen, ObserverService, RingSource, serve};
use serde_json::Value;

/// A node's flows as its agent would make them: a TCP SYN to a pod on another node
/// through a Service, its reply, a policy drop, an ICMP echo, an IPv6 frame dropped.
fn flows() -> Vec<Flow> {
    let mut names = Names::default();
    let curl = Ipv4Addr::new(172, 20, 0, 10);
    let web = Ipv4Addr::new(172, 20, 1, 10);
    names
        .pods
        .insert(curl, (12, "default".into(), "curl-pod".into()));
    names
        .pods
        .insert(web, (0, "default".into(), "webpod-697b545f57-9j6bs".into()));
    names.labels.insert(
        257,
        vec![
            "k8s:app=curl".to_owned(),
            "k8s:io.kubernetes.pod.namespace=default".to_owned(),
        ]
        .into(),
    );
    names.labels.insert(
        256,
        vec![
            "k8s:app=webpod".to_owned(),
            "k8s:io.kubernetes.pod.namespace=default".to_owned(),
        ]
        .into(),
    );
    names.services.insert(
        (Ipv4Addr::new(10, 96, 33, 7), 80),
        Service {
            name: "webpod".into(),
            namespace: "default".into(),
        },
    );
    let base = cilium_hubble::example_event();
    let mut events = Vec::new();
    let mut syn = base;
    syn.kind = EventKind::Trace {
        point: ObservationPoint::ToStack,
    };
    syn.src_endpoint = 12;
    syn.dst_endpoint = 0;
    syn.saddr = curl;
    syn.daddr = web;
    events.push(syn);
    let mut reply = syn;
    reply.kind = EventKind::Trace {
        point: ObservationPoint::ToEndpoint,
    };
    (reply.saddr, reply.daddr, reply.sport, reply.dport) = (web, curl, 80, 43210);
    (reply.src_identity, reply.dst_identity) = (256, 257);
    (reply.src_endpoint, reply.dst_endpoint) = (0, 12);
    reply.tcp_flags = 0x12;
    reply.is_reply = true;
    events.push(reply);
    let mut drop = syn;
    drop.kind = EventKind::Drop { reason: 133 };
    drop.dport = 8080;
    events.push(drop);
    let mut icmp = syn;
    icmp.proto = 1;
    icmp.icmp_type = 8;
    (icmp.sport, icmp.dport) = (0, 0);
    events.push(icmp);
    let mut v6 = base;
    v6.kind = EventKind::Drop { reason: 139 };
    v6.ethertype = Some(0x86dd);
    v6.src_endpoint = 12;
    events.push(v6);
    events
        .iter()
        .enumerate()
        .map(|(i, ev)| {
            Flow::from_event(
                ev,
                1_795_749_000_000_000_000 + i as u128 * 1_000_123,
                "k8s-w1",
                &names,
            )
        })
        .collect()
}

/// The JSON lines `hubble` printed, parsed.
fn observe(binary: &std::path::Path, server: &str, args: &[&str]) -> Vec<Value> {
    let out = Command::new(binary)
        .args(["observe", "--server", server])
        .args(args)
        .args(["-o", "json"])
        .output()
        .expect("run hubble");
    assert!(
        out.status.success(),
        "{} {args:?}: {}",
        binary.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_hubble_reads_the_same_flows() {
    let Some(theirs) = cilium_k8s::testing::upstream_client("hubble") else {
        return;
    };
    let ours = PathBuf::from(env!("CARGO_BIN_EXE_hubble"));
    let dir = std::env::temp_dir().join(format!("crs-hubble-upstream-{}", std::process::id()));
    let socket = dir.join("hubble.sock");
    let source = Arc::new(RingSource::new("k8s-w1", 63).unwrap());
    for f in flows() {
        source.push(f);
    }
    let listener = Listen::Unix(socket.clone()).bind().await.unwrap();
    tokio::spawn(serve(ObserverService::new(source), listener, None));
    let server = format!("unix://{}", socket.display());
    // Every flow, then Hubble's filter flags (the server evaluates them: upstream's CLI
    // builds the FlowFilters, this project's server must read them as upstream's does).
    let cases: [(&[&str], usize); 12] = [
        (&[], 5),
        (&["--verdict", "DROPPED"], 2),
        (&["--from-pod", "default/curl-pod"], 4),
        (&["--to-pod", "default/curl-pod"], 1),
        (&["--protocol", "icmp"], 1),
        (&["--port", "8080"], 1),
        // `--not` puts only the next filter into the denylist.
        (&["--protocol", "tcp", "--not", "--verdict", "DROPPED"], 2),
        (
            &[
                "--not",
                "--protocol",
                "tcp",
                "--from-pod",
                "default/curl-pod",
            ],
            2,
        ),
        // The denied flags make one filter: a flow is left out when it matches them all.
        (
            &[
                "--not",
                "--from-pod",
                "default/curl-pod",
                "--not",
                "--verdict",
                "DROPPED",
            ],
            3,
        ),
        (
            &[
                "--not",
                "--to-pod",
                "default/curl-pod",
                "--not",
                "--verdict",
                "DROPPED",
            ],
            5,
        ),
        (&["--label", "k8s:app=webpod"], 5),
        (
            &[
                "--since",
                "2026-11-27T03:10:00.002Z",
                "--until",
                "2026-11-27T03:10:00.004Z",
            ],
            2,
        ),
    ];
    let (theirs2, ours2, server2) = (theirs.clone(), ours.clone(), server.clone());
    let outputs = tokio::task::spawn_blocking(move || {
        cases
            .iter()
            .map(|(args, n)| {
                let mut all = vec!["--last", "100"];
                all.extend(*args);
                (
                    *args,
                    *n,
                    observe(&theirs, &server, &all),
                    observe(&ours, &server, &all),
                )
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    // Upstream's compact lines, in UTC, are this project's.
    let (theirs, ours, server) = (theirs2, ours2, server2);
    let compact = tokio::task::spawn_blocking(move || {
        let run = |binary: &std::path::Path| {
            let out = Command::new(binary)
                .args([
                    "observe", "--server", &server, "--last", "100", "-o", "compact",
                ])
                .env("TZ", "UTC")
                .output()
                .expect("run hubble");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        };
        (run(&theirs), run(&ours))
    })
    .await
    .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(compact.0.lines().count(), 5, "{}", compact.0);
    assert_eq!(
        compact.0, compact.1,
        "upstream (left) and ours (right) differ"
    );
    for (args, n, theirs_out, ours_out) in outputs {
        assert_eq!(theirs_out.len(), n, "{args:?}: {theirs_out:#?}");
        assert_eq!(
            ours_out.len(),
            n,
            "{args:?}: {ours_out:#?} theirs {theirs_out:#?}"
        );
        for (t, o) in theirs_out.iter().zip(&ours_out) {
            assert_eq!(t, o, "{args:?}: upstream (left) and ours (right) differ");
        }
    }
}
