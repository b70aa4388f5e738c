// SPDX-License-Identifier: Apache-2.0

//! Identities allocated cluster-wide on a real etcd, by allocators in separate processes
//! racing for the same label sets: every node must get the same number for the same
//! labels, and different label sets different numbers. The processes are this test binary
//! run again as workers (`CRS_ID_WORKER`). etcd runs on 127.0.0.1 (free ports, temp data
//! dir, killed by pid at the end). Without `etcd`: "skipped: etcd not installed" (a failure
//! under CI).

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use cilium_core::LabelSet;
use cilium_core::kvstore::KvStore;
use cilium_core::kvstore::etcd::{EtcdServer, EtcdStore};
use cilium_identity::{IdentityBackend, KvBackend};

const WORKERS: usize = 4;
const LABEL_SETS: usize = 24;

fn label_set(i: usize) -> LabelSet {
    let items = [
        format!("k8s:app=app-{i}"),
        "k8s:io.kubernetes.pod.namespace=default".to_owned(),
    ];
    LabelSet::parse_list(&items).expect("labels")
}

/// The worker: allocates every label set (in an order of its own) and prints the numbers.
#[test]
fn worker_entry() {
    let (Ok(endpoint), Ok(node)) = (std::env::var("CRS_ID_WORKER"), std::env::var("CRS_ID_NODE"))
    else {
        return; // Not a worker run.
    };
    let seed: usize = node.trim_start_matches("node-").parse().unwrap_or(0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = EtcdStore::connect(&[endpoint], Duration::from_secs(30))
            .await
            .expect("connect");
        let backend = KvBackend::new(store, node.clone(), 256, 65535);
        let mut order: Vec<usize> = (0..LABEL_SETS).collect();
        order.rotate_left(seed * 5 % LABEL_SETS);
        if seed % 2 == 1 {
            order.reverse();
        }
        let mut out = BTreeMap::new();
        for i in order {
            let id = backend.allocate(&label_set(i)).await.expect("allocate");
            out.insert(i, id.get());
        }
        println!("RESULT {}", serde_json::to_string(&out).expect("json"));
    });
}

#[test]
fn identities_agree_across_racing_processes() {
    if std::env::var_os("CRS_ID_WORKER").is_some() {
        return;
    }
    let Some(server) = EtcdServer::start_for_test("identities_agree_across_racing_processes")
    else {
        return;
    };
    let exe = std::env::current_exe().expect("test binary");
    let children: Vec<_> = (0..WORKERS)
        .map(|n| {
            Command::new(&exe)
                .args(["--exact", "worker_entry", "--nocapture", "--test-threads=1"])
                .env("CRS_ID_WORKER", &server.endpoint)
                .env("CRS_ID_NODE", format!("node-{n}"))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn a worker")
        })
        .collect();
    let mut results: Vec<BTreeMap<usize, u32>> = Vec::new();
    for child in children {
        let out = child.wait_with_output().expect("worker");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "worker failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = stdout
            .lines()
            .find_map(|l| l.split_once("RESULT ").map(|(_, r)| r))
            .unwrap_or_else(|| panic!("no result in {stdout}"));
        results.push(serde_json::from_str(line).expect("result json"));
    }
    // Every node has the same number for each label set...
    for r in &results[1..] {
        assert_eq!(r, &results[0], "two nodes disagree");
    }
    // ...and no two label sets share one.
    let mut ids: Vec<u32> = results[0].values().copied().collect();
    assert_eq!(ids.len(), LABEL_SETS);
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), LABEL_SETS, "a number given to two label sets");
    assert!(ids.iter().all(|id| (256..=65535).contains(id)));
    // The store agrees: one id key per label set, and no lock left behind.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = EtcdStore::connect(
            std::slice::from_ref(&server.endpoint),
            Duration::from_secs(30),
        )
        .await
        .expect("connect");
        let ids = store
            .list_prefix("cilium/state/identities/v1/id/")
            .await
            .expect("list");
        assert_eq!(ids.len(), LABEL_SETS);
        let locks = store
            .list_prefix("cilium/state/identities/v1/locks/")
            .await
            .expect("list");
        assert!(locks.is_empty(), "locks left: {locks:?}");
    });
}
