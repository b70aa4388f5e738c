// SPDX-License-Identifier: Apache-2.0

//! `identity::CrdBackend` against the upstream control plane: identities as CiliumIdentity
//! objects (upstream's shape, `kubectl get ciliumid` columns), two agents racing for the
//! same label sets getting the same numbers, a number already taken by other labels
//! skipped by both, a late agent finding what exists, and malformed objects ignored. No
//! root.

use std::collections::BTreeSet;
use std::sync::Arc;

use cilium_core::LabelSet;
use cilium_identity::IdentityBackend;
use cilium_k8s::identity::{CrdBackend, first_candidate, security_labels};
use cilium_k8s::testing::ControlPlane;
use cilium_k8s::types::CiliumIdentity;
use kube::api::{Api, PostParams};

fn pod_labels(app: &str) -> LabelSet {
    LabelSet::parse_list(&[
        format!("k8s:app={app}"),
        "k8s:io.kubernetes.pod.namespace=default".into(),
        "k8s:io.cilium.k8s.policy.cluster=default".into(),
        "k8s:io.cilium.k8s.policy.serviceaccount=default".into(),
    ])
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_racing_for_label_sets_get_one_number_each() {
    let cp = tokio::task::spawn_blocking(|| {
        ControlPlane::start_for_test("agents_racing_for_label_sets_get_one_number_each")
    })
    .await
    .unwrap();
    cp.apply_crds().unwrap();
    let client = cilium_k8s::client(&cp.kubeconfig()).await.unwrap();
    let api: Api<CiliumIdentity> = Api::all(client.clone());

    // A small range so that numbers collide: 20 label sets in 64 numbers.
    let (min, max) = (1000, 1063);
    // Another allocator's object already holds the first number the web label set tries:
    // both agents must skip it the same way.
    let web = pod_labels("webpod");
    let taken = first_candidate(&web, min, max);
    api.create(
        &PostParams::default(),
        &CiliumIdentity::new(taken, security_labels(&pod_labels("squatter"))),
    )
    .await
    .unwrap();

    let a = Arc::new(
        CrdBackend::with_range(client.clone(), min, max)
            .await
            .unwrap(),
    );
    let b = Arc::new(
        CrdBackend::with_range(client.clone(), min, max)
            .await
            .unwrap(),
    );
    let sets: Vec<LabelSet> = (0..20)
        .map(|n| pod_labels(&format!("app-{n}")))
        .chain([web.clone()])
        .collect();
    let mut tasks = Vec::new();
    for backend in [a.clone(), b.clone()] {
        for set in sets.clone() {
            let backend = backend.clone();
            tasks.push(tokio::spawn(async move {
                let id = backend.allocate(&set).await.unwrap();
                (set, id.get())
            }));
        }
    }
    let mut by_set = std::collections::BTreeMap::<String, BTreeSet<u32>>::new();
    for t in tasks {
        let (set, id) = t.await.unwrap();
        assert!((min..=max).contains(&id), "{id} outside [{min}, {max}]");
        by_set.entry(set.kvstore_key()).or_default().insert(id);
    }
    for (set, ids) in &by_set {
        assert_eq!(ids.len(), 1, "{set} got {ids:?}");
    }
    let numbers: BTreeSet<u32> = by_set.values().flatten().copied().collect();
    assert_eq!(numbers.len(), sets.len(), "two label sets share a number");
    let web_id = *by_set[&web.kvstore_key()].first().unwrap();
    assert_ne!(web_id, taken, "the squatter's number was reused");

    // What the API holds: one object per label set plus the squatter, upstream's shape.
    let objects = api.list(&Default::default()).await.unwrap();
    assert_eq!(objects.items.len(), sets.len() + 1);
    let object = api.get(&web_id.to_string()).await.unwrap();
    assert_eq!(object.security_labels["k8s:app"], "webpod");
    let meta = object.metadata.labels.unwrap();
    assert_eq!(meta["app"], "webpod");
    assert_eq!(meta["io.kubernetes.pod.namespace"], "default");
    let table = cp
        .kubectl(&["get", "ciliumid", &web_id.to_string()])
        .unwrap();
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "NAMESPACE", "AGE"]);
    assert!(table.contains(&format!("{web_id}   default")), "{table}");

    // A malformed object (a number that is no identity, labels without a source) and an
    // agent started after everything: it ignores the former and finds the rest.
    cp.kubectl_input(
        &["apply", "-f", "-"],
        Some(
            "apiVersion: cilium.io/v2\nkind: CiliumIdentity\nmetadata: {name: not-a-number}\n\
             security-labels: {app: x}\n",
        ),
    )
    .unwrap();
    let late = CrdBackend::with_range(client.clone(), min, max)
        .await
        .unwrap();
    assert_eq!(late.list().await.unwrap().len(), sets.len() + 1);
    assert_eq!(
        late.lookup(&web).await.unwrap().map(|i| i.get()),
        Some(web_id)
    );
    assert_eq!(
        late.lookup_by_id(cilium_core::NumericIdentity::new(web_id))
            .await
            .unwrap(),
        Some(web.clone())
    );
    assert_eq!(late.allocate(&web).await.unwrap().get(), web_id);
    // The watch brings other agents' new identities.
    let new = pod_labels("late-comer");
    let id = a.allocate(&new).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while late.lookup(&new).await.unwrap() != Some(id) {
        assert!(
            std::time::Instant::now() < deadline,
            "the watch never saw {id}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Releasing leaves the object to the operator's GC.
    late.release(&new, id).await.unwrap();
    assert!(api.get_opt(&id.get().to_string()).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_range_is_reported_as_exhausted() {
    let cp = tokio::task::spawn_blocking(|| {
        ControlPlane::start_for_test("a_full_range_is_reported_as_exhausted")
    })
    .await
    .unwrap();
    cp.apply_crds().unwrap();
    let client = cilium_k8s::client(&cp.kubeconfig()).await.unwrap();
    let backend = CrdBackend::with_range(client, 5000, 5002).await.unwrap();
    for n in 0..3 {
        backend
            .allocate(&pod_labels(&format!("a{n}")))
            .await
            .unwrap();
    }
    let err = backend
        .allocate(&pod_labels("one-too-many"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            cilium_identity::IdentityError::Exhausted {
                min: 5000,
                max: 5002
            }
        ),
        "{err}"
    );
}
