// SPDX-License-Identifier: Apache-2.0

//! `watch::Informer` against the upstream control plane: the list, changes as they come,
//! an apiserver restart without a lost or repeated change, and Cilium's CRD objects
//! decoded into the project's types (a malformed one reported, not cached). No root.

use std::time::Duration;

use cilium_core::cluster::{Change, CiliumNode, Watcher};
use cilium_k8s::testing::ControlPlane;
use cilium_k8s::watch::Informer;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::watcher;

fn cm(name: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: default, \
         labels: {{app: crs}}}}\ndata: {{v: \"{value}\"}}\n"
    )
}

fn value(c: &ConfigMap) -> Result<String, String> {
    Ok(c.data
        .as_ref()
        .and_then(|d| d.get("v"))
        .cloned()
        .unwrap_or_default())
}

fn api_of(client: &kube::Client) -> Api<ConfigMap> {
    Api::namespaced(client.clone(), "default")
}

/// The next change through the watcher interface the consumers use; errors while the
/// apiserver is away are expected (the informer goes on).
async fn next<T, W: Watcher<T>>(inf: &mut W) -> Option<Change<T>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match tokio::time::timeout_at(deadline, inf.next_change()).await {
            Err(_) => return None,
            Ok(Ok(c)) => return Some(c),
            Ok(Err(_)) => {}
        }
    }
}

/// No change for 2 s.
async fn quiet<T: std::fmt::Debug, W: Watcher<T>>(inf: &mut W) {
    if let Ok(Ok(c)) = tokio::time::timeout(Duration::from_secs(2), inf.next_change()).await {
        panic!("unexpected change {c:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn informer_follows_the_api_across_an_apiserver_restart() {
    let mut cp = tokio::task::spawn_blocking(|| {
        ControlPlane::start_for_test("informer_follows_the_api_across_an_apiserver_restart")
    })
    .await
    .unwrap();
    let kubectl = |cp: &ControlPlane, yaml: String| {
        cp.kubectl_input(&["apply", "-f", "-"], Some(&yaml))
            .unwrap();
    };
    kubectl(&cp, cm("a", "1"));
    kubectl(&cp, cm("b", "2"));
    let client = cilium_k8s::client(&cp.kubeconfig()).await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let (mut inf, initial) =
        Informer::start_with(api, watcher::Config::default().labels("app=crs"), value)
            .await
            .unwrap();
    assert_eq!(
        initial,
        [
            Change::Upsert {
                key: "default/a".into(),
                object: "1".into()
            },
            Change::Upsert {
                key: "default/b".into(),
                object: "2".into()
            },
        ]
    );

    // Whole objects are kept without the apiserver's managed fields (which it does write).
    let (whole, _) = Informer::start(api_of(&client)).await.unwrap();
    let a = &whole.cache()["default/a"];
    assert!(a.metadata.managed_fields.is_none(), "{a:?}");
    let raw = api_of(&client).get("a").await.unwrap();
    assert!(raw.metadata.managed_fields.is_some_and(|m| !m.is_empty()));

    kubectl(&cp, cm("a", "3"));
    assert_eq!(
        next(&mut inf).await,
        Some(Change::Upsert {
            key: "default/a".into(),
            object: "3".into()
        })
    );
    cp.kubectl(&["delete", "configmap", "b"]).unwrap();
    assert_eq!(
        next(&mut inf).await,
        Some(Change::Delete {
            key: "default/b".into(),
            last: "2".into()
        })
    );

    // The apiserver away and back: the next change is the new one, nothing repeated.
    cp.stop_apiserver();
    quiet(&mut inf).await;
    let cp = tokio::task::spawn_blocking(move || {
        cp.start_apiserver().unwrap();
        cp
    })
    .await
    .unwrap();
    kubectl(&cp, cm("c", "4"));
    assert_eq!(
        next(&mut inf).await,
        Some(Change::Upsert {
            key: "default/c".into(),
            object: "4".into()
        })
    );
    quiet(&mut inf).await;
    assert_eq!(inf.objects().len(), 2);

    // CiliumNodes decoded into the project's type; a malformed one is reported as such.
    cp.kubectl_input(&["apply", "-f", "-"], Some(&cilium_k8s::crds::all_yaml()))
        .unwrap();
    cp.kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/ciliumnodes.cilium.io",
    ])
    .unwrap();
    let cn = |name: &str, ip: &str| {
        format!(
            "apiVersion: cilium.io/v2\nkind: CiliumNode\nmetadata: {{name: {name}}}\nspec:\n  \
             addresses: [{{type: InternalIP, ip: \"{ip}\"}}]\n"
        )
    };
    kubectl(&cp, cn("k8s-w1", "192.168.10.101"));
    let gvk = GroupVersionKind::gvk("cilium.io", "v2", "CiliumNode");
    let nodes: Api<DynamicObject> = Api::all_with(client, &ApiResource::from_gvk(&gvk));
    let (mut cns, initial) = Informer::start_with(nodes, watcher::Config::default(), |o| {
        serde_json::to_value(o)
            .and_then(serde_json::from_value::<CiliumNode>)
            .map_err(|e| e.to_string())
    })
    .await
    .unwrap();
    assert!(
        matches!(&initial[..], [Change::Upsert { object, .. }]
            if object.spec.addresses[0].ip.to_string() == "192.168.10.101"),
        "{initial:?}"
    );
    kubectl(&cp, cn("k8s-w2", "not-an-address"));
    match next(&mut cns).await {
        Some(Change::Invalid { key, error }) => {
            assert_eq!(key, "k8s-w2");
            assert!(error.contains("address"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(cns.cache().len(), 1);
    drop(cp);
}
