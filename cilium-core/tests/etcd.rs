// SPDX-License-Identifier: Apache-2.0

//! The etcd backend against a real etcd this test starts on 127.0.0.1 (free ports, a data
//! dir under the temp dir; killed by pid and removed at the end, even on panic). Without
//! the `etcd` binary the tests print "skipped: etcd not installed" (and fail under CI,
//! which installs it).
#![cfg(feature = "etcd")]

use std::time::{Duration, Instant};

use cilium_core::kvstore::etcd::{EtcdServer, EtcdStore};
use cilium_core::kvstore::{EventKind, KvError, KvStore, KvWatch};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn etcd_operations_match_the_trait() {
    let Some(server) = EtcdServer::start_for_test("etcd_operations_match_the_trait") else {
        return;
    };
    runtime().block_on(async {
        let store = EtcdStore::connect(
            std::slice::from_ref(&server.endpoint),
            Duration::from_secs(30),
        )
        .await
        .expect("connect");
        store.put("cilium/a/1", b"one").await.unwrap();
        assert_eq!(
            store.get("cilium/a/1").await.unwrap(),
            Some(b"one".to_vec())
        );
        assert_eq!(store.get("cilium/a/none").await.unwrap(), None);
        assert!(!store.create_only("cilium/a/1", b"x").await.unwrap());
        assert!(store.create_only("cilium/a/2", b"two").await.unwrap());
        assert!(
            !store
                .compare_and_swap("cilium/a/1", b"zzz", b"x")
                .await
                .unwrap()
        );
        assert!(
            store
                .compare_and_swap("cilium/a/1", b"one", b"uno")
                .await
                .unwrap()
        );
        assert!(!store.delete_if("cilium/a/2", b"nope").await.unwrap());
        assert!(store.delete_if("cilium/a/2", b"two").await.unwrap());
        assert!(!store.delete("cilium/a/2").await.unwrap());
        store.put("cilium/b/1", b"other").await.unwrap();
        let (listed, rev) = store.list_prefix_revision("cilium/a/").await.unwrap();
        assert_eq!(listed, vec![("cilium/a/1".to_owned(), b"uno".to_vec())]);
        assert!(rev > 0);
        assert!(matches!(
            store.put("cilium//bad", b"").await,
            Err(KvError::InvalidKey(_))
        ));

        // Session keys: visible to others, gone when the session ends.
        let other = EtcdStore::connect(
            std::slice::from_ref(&server.endpoint),
            Duration::from_secs(30),
        )
        .await
        .expect("connect");
        store
            .put_ephemeral("cilium/nodes/a", b"node")
            .await
            .unwrap();
        assert!(
            store
                .create_only_ephemeral("cilium/locks/x", b"a")
                .await
                .unwrap()
        );
        assert!(
            !other
                .create_only_ephemeral("cilium/locks/x", b"b")
                .await
                .unwrap()
        );
        assert_eq!(
            other.get("cilium/nodes/a").await.unwrap(),
            Some(b"node".to_vec())
        );
        store.close().await.unwrap();
        assert_eq!(other.get("cilium/nodes/a").await.unwrap(), None);
        assert!(
            other
                .create_only_ephemeral("cilium/locks/x", b"b")
                .await
                .unwrap()
        );
        assert_eq!(
            other.get("cilium/a/1").await.unwrap(),
            Some(b"uno".to_vec()),
            "plain keys stay"
        );
    });
}

#[test]
fn etcd_session_keys_expire_when_the_client_dies() {
    let Some(server) = EtcdServer::start_for_test("etcd_session_keys_expire_when_the_client_dies")
    else {
        return;
    };
    runtime().block_on(async {
        let observer = EtcdStore::connect(
            std::slice::from_ref(&server.endpoint),
            Duration::from_secs(30),
        )
        .await
        .expect("connect");
        {
            // A client with a 2 s lease that stops renewing (dropped without closing, as a
            // killed process would).
            let dying = EtcdStore::connect(
                std::slice::from_ref(&server.endpoint),
                Duration::from_secs(2),
            )
            .await
            .expect("connect");
            dying
                .put_ephemeral("cilium/nodes/dying", b"x")
                .await
                .unwrap();
            // Renewals keep it alive past its TTL while the client lives.
            tokio::time::sleep(Duration::from_secs(3)).await;
            assert!(observer.get("cilium/nodes/dying").await.unwrap().is_some());
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while observer.get("cilium/nodes/dying").await.unwrap().is_some() {
            assert!(Instant::now() < deadline, "the key outlived its lease");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

#[test]
fn etcd_watch_resumes_across_an_etcd_restart_without_losing_changes() {
    let Some(mut server) = EtcdServer::start_for_test(
        "etcd_watch_resumes_across_an_etcd_restart_without_losing_changes",
    ) else {
        return;
    };
    let rt = runtime();
    let endpoint = server.endpoint.clone();
    let (store, mut watch, rev) = rt.block_on(async {
        let store = EtcdStore::connect(std::slice::from_ref(&endpoint), Duration::from_secs(60))
            .await
            .expect("connect");
        store.put("cilium/svc/a", b"1").await.unwrap();
        let (_, rev) = store.list_prefix_revision("cilium/svc/").await.unwrap();
        let watch = store.watch_prefix("cilium/svc/", rev).await.unwrap();
        store.put("cilium/other", b"x").await.unwrap();
        store.put("cilium/svc/b", b"2").await.unwrap();
        store.delete("cilium/svc/a").await.unwrap();
        (store, watch, rev)
    });
    rt.block_on(async {
        let e = watch.next().await.unwrap();
        assert_eq!(
            (e.key.as_str(), e.kind),
            ("cilium/svc/b", EventKind::Put(b"2".to_vec()))
        );
        assert!(e.revision > rev);
        let e = watch.next().await.unwrap();
        assert_eq!(
            (e.key.as_str(), e.kind),
            ("cilium/svc/a", EventKind::Delete)
        );
    });
    // etcd goes away; writes fail clearly meanwhile; it comes back; the watch goes on.
    server.stop();
    rt.block_on(async {
        let err = store.put("cilium/svc/c", b"3").await.unwrap_err();
        assert!(matches!(err, KvError::Unavailable(_)), "{err}");
    });
    server.restart().expect("restart etcd");
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match store.put("cilium/svc/c", b"3").await {
                Ok(()) => break,
                Err(e) => {
                    assert!(Instant::now() < deadline, "etcd never came back: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        store.put("cilium/svc/d", b"4").await.unwrap();
        let next = tokio::time::timeout(Duration::from_secs(20), async {
            let c = watch.next().await.unwrap();
            let d = watch.next().await.unwrap();
            (c, d)
        })
        .await
        .expect("the watch resumed");
        assert_eq!(next.0.key, "cilium/svc/c");
        assert_eq!(next.1.key, "cilium/svc/d");
        assert!(next.1.revision > next.0.revision);
    });
}
