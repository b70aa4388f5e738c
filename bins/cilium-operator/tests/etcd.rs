// SPDX-License-Identifier: Apache-2.0

//! The operator on a real etcd (started by the test on 127.0.0.1): pod CIDRs for
//! CiliumNodes, exhaustion reported and resolved when a node goes, a standby operator
//! taking over (and handing out nothing twice) when the leader dies, and identity GC.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cilium_core::LabelSet;
use cilium_core::cluster::{CILIUM_NODES_PREFIX, CiliumNode};
use cilium_core::kvstore::etcd::{EtcdServer, EtcdStore};
use cilium_core::kvstore::{AnyStore, KvStore};
use cilium_identity::{IdentityBackend, KvBackend};
use cilium_operator::{LEADER_KEY, OperatorConfig};

async fn connect(server: &EtcdServer, ttl: u64) -> Arc<AnyStore> {
    Arc::new(AnyStore::Etcd(Box::new(
        EtcdStore::connect(
            std::slice::from_ref(&server.endpoint),
            Duration::from_secs(ttl),
        )
        .await
        .expect("connect"),
    )))
}

async fn add_node(store: &AnyStore, name: &str, n: u8) {
    let node = CiliumNode::new(name, std::net::Ipv4Addr::new(192, 168, 10, n));
    store
        .put(&node.key(), &serde_json::to_vec(&node).unwrap())
        .await
        .unwrap();
}

async fn node(store: &AnyStore, name: &str) -> Option<CiliumNode> {
    store
        .get(&format!("{CILIUM_NODES_PREFIX}/{name}"))
        .await
        .unwrap()
        .map(|v| serde_json::from_slice(&v).unwrap())
}

/// Waits until `check` holds for the node, up to 15 s.
async fn wait_node(
    store: &AnyStore,
    name: &str,
    check: impl Fn(&CiliumNode) -> bool,
) -> CiliumNode {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(n) = node(store, name).await
            && check(&n)
        {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never got there: {:?}",
            node(store, name).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn operator_allocates_pod_cidrs_fails_over_and_collects_identities() {
    let Some(server) = EtcdServer::start_for_test(
        "operator_allocates_pod_cidrs_fails_over_and_collects_identities",
    ) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let admin = connect(&server, 60).await;
        // A /22 pool of /24s: four node CIDRs.
        let mut config_a = OperatorConfig::new("op-a", "172.20.0.0/22", 24).unwrap();
        config_a.identity_gc_interval = Duration::from_millis(300);
        config_a.identity_heartbeat_timeout = Duration::from_secs(1);
        let mut config_b = config_a.clone();
        config_b.id = "op-b".into();
        let store_a = connect(&server, 2).await;
        let op_a = tokio::spawn(cilium_operator::run(store_a.clone(), config_a));
        // Make sure a leads before b starts.
        let deadline = Instant::now() + Duration::from_secs(10);
        while admin.get(LEADER_KEY).await.unwrap().as_deref() != Some(b"op-a".as_slice()) {
            assert!(Instant::now() < deadline, "op-a never led");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let store_b = connect(&server, 2).await;
        let op_b = tokio::spawn(cilium_operator::run(store_b, config_b));

        let mut cidrs = std::collections::BTreeSet::new();
        for (i, name) in ["k8s-ctr", "k8s-w1", "k8s-w2"].iter().enumerate() {
            add_node(&admin, name, 100 + i as u8).await;
            let n = wait_node(&admin, name, |n| !n.spec.ipam.pod_cidrs.is_empty()).await;
            assert_eq!(n.spec.ipam.pod_cidrs.len(), 1);
            assert!(
                cidrs.insert(n.spec.ipam.pod_cidrs[0]),
                "a CIDR handed out twice"
            );
        }
        assert_eq!(
            admin.get(LEADER_KEY).await.unwrap().as_deref(),
            Some(b"op-a".as_slice())
        );

        // The leader dies (its session is not renewed): b takes over and restores what
        // was handed out before allocating.
        op_a.abort();
        let _ = op_a.await;
        drop(store_a);
        let deadline = Instant::now() + Duration::from_secs(15);
        while admin.get(LEADER_KEY).await.unwrap().as_deref() != Some(b"op-b".as_slice()) {
            assert!(Instant::now() < deadline, "op-b never took over");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        add_node(&admin, "k8s-w3", 103).await;
        let n = wait_node(&admin, "k8s-w3", |n| !n.spec.ipam.pod_cidrs.is_empty()).await;
        assert!(
            cidrs.insert(n.spec.ipam.pod_cidrs[0]),
            "the new leader reused a CIDR"
        );
        assert_eq!(cidrs.len(), 4);

        // The pool is empty: the next node is told so.
        add_node(&admin, "k8s-w4", 104).await;
        let n = wait_node(&admin, "k8s-w4", |n| {
            !n.status.ipam.operator_status.error.is_empty()
        })
        .await;
        assert!(n.spec.ipam.pod_cidrs.is_empty());
        assert!(
            n.status.ipam.operator_status.error.contains("exhausted"),
            "{:?}",
            n.status
        );
        // A node leaves: its CIDR goes to the waiting node.
        let freed = node(&admin, "k8s-w1").await.unwrap().spec.ipam.pod_cidrs[0];
        admin
            .delete(&format!("{CILIUM_NODES_PREFIX}/k8s-w1"))
            .await
            .unwrap();
        let n = wait_node(&admin, "k8s-w4", |n| !n.spec.ipam.pod_cidrs.is_empty()).await;
        assert_eq!(n.spec.ipam.pod_cidrs, vec![freed]);
        assert!(n.status.ipam.operator_status.error.is_empty());

        // Identity GC: an identity whose only user's session ended goes after the timeout;
        // one still in use stays.
        let labels = |app: &str| LabelSet::parse_list(&[format!("k8s:app={app}")]).unwrap();
        let used = KvBackend::new(admin.clone(), "k8s-ctr", 256, 65535);
        let kept = used.allocate(&labels("kept")).await.unwrap();
        {
            let session = connect(&server, 60).await;
            let gone_user = KvBackend::new(session.clone(), "k8s-w2", 256, 65535);
            gone_user.allocate(&labels("gone")).await.unwrap();
            drop(gone_user);
            if let AnyStore::Etcd(s) = Arc::try_unwrap(session).expect("the only handle") {
                (*s).close().await.unwrap();
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while used.lookup(&labels("gone")).await.unwrap().is_some() {
            assert!(
                Instant::now() < deadline,
                "the unused identity was never collected"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(used.lookup(&labels("kept")).await.unwrap(), Some(kept));
        op_b.abort();
    });
}
