// SPDX-License-Identifier: Apache-2.0

//! `crds::register` against the upstream apiserver, as Cilium's operator registers its
//! CRDs at start: created and established, left alone when current or newer, upgraded when
//! older. No root.

use std::time::Duration;

use cilium_k8s::crds::{self, Registered, SCHEMA_VERSION, SCHEMA_VERSION_LABEL};
use cilium_k8s::testing::ControlPlane;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_creates_keeps_and_upgrades_the_crds() {
    let cp = tokio::task::spawn_blocking(|| {
        ControlPlane::start_for_test("register_creates_keeps_and_upgrades_the_crds")
    })
    .await
    .unwrap();
    let client = cilium_k8s::client(&cp.kubeconfig()).await.unwrap();
    let timeout = Duration::from_secs(60);
    let first = crds::register(&client, timeout).await.unwrap();
    assert_eq!(first.len(), 5);
    assert!(
        first.iter().all(|(_, r)| *r == Registered::Created),
        "{first:?}"
    );
    // Established: objects of each kind are accepted right away.
    cp.kubectl(&["get", "cep,cn,ciliumid,cnp,ccnp", "-A"])
        .unwrap();
    let label = |crd: &str| {
        cp.kubectl(&[
            "get",
            "crd",
            crd,
            "-o",
            &format!(
                "jsonpath={{.metadata.labels.{}}}",
                SCHEMA_VERSION_LABEL.replace('.', "\\.")
            ),
        ])
        .unwrap()
    };
    assert_eq!(label("ciliumnodes.cilium.io"), SCHEMA_VERSION);

    let again = crds::register(&client, timeout).await.unwrap();
    assert!(
        again.iter().all(|(_, r)| *r == Registered::UpToDate),
        "{again:?}"
    );

    // An older definition is upgraded, a newer one is not downgraded.
    let set = |crd: &str, v: &str| {
        cp.kubectl(&[
            "label",
            "--overwrite",
            "crd",
            crd,
            &format!("{SCHEMA_VERSION_LABEL}={v}"),
        ])
        .unwrap();
    };
    set("ciliumendpoints.cilium.io", "1.0.0");
    set("ciliumnodes.cilium.io", "99.0.0");
    let third = crds::register(&client, timeout).await.unwrap();
    let of = |name: &str| third.iter().find(|(n, _)| *n == name).unwrap().1;
    assert_eq!(of("ciliumendpoints.cilium.io"), Registered::Upgraded);
    assert_eq!(of("ciliumnodes.cilium.io"), Registered::UpToDate);
    assert_eq!(of("ciliumidentities.cilium.io"), Registered::UpToDate);
    assert_eq!(label("ciliumendpoints.cilium.io"), SCHEMA_VERSION);
    assert_eq!(label("ciliumnodes.cilium.io"), "99.0.0");
    drop(cp);
}
