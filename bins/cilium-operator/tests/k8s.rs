// SPDX-License-Identifier: Apache-2.0

//! The operator binary with `--k8s-kubeconfig-path`: it registers Cilium's CRDs with the
//! upstream apiserver at start (established before it goes on to the cluster store), and
//! leaves them alone with `--skip-crd-creation`. Needs etcd for its store (skipped without
//! it, a failure under CI).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cilium_core::kvstore::etcd::EtcdServer;
use cilium_k8s::testing::ControlPlane;

/// The operator process, killed on drop.
struct Operator(Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn operator(etcd: &EtcdServer, kubeconfig: &std::path::Path, extra: &[&str]) -> Operator {
    Operator(
        Command::new(env!("CARGO_BIN_EXE_cilium-operator"))
            .arg(format!("--kvstore-opt=etcd.address={}", etcd.endpoint))
            .arg(format!("--k8s-kubeconfig-path={}", kubeconfig.display()))
            .arg("--cluster-pool-ipv4-cidr=172.20.0.0/16")
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start cilium-operator"),
    )
}

#[test]
fn operator_registers_ciliums_crds() {
    let Some(etcd) = EtcdServer::start_for_test("operator_registers_ciliums_crds") else {
        return;
    };
    let cp = ControlPlane::start_for_test("operator_registers_ciliums_crds");
    let crds = || {
        cp.kubectl(&["get", "crd", "-o", "name"])
            .unwrap_or_default()
    };

    let skipping = operator(&etcd, &cp.kubeconfig(), &["--skip-crd-creation"]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(!crds().contains("cilium.io"), "{}", crds());
    drop(skipping);

    let _op = operator(&etcd, &cp.kubeconfig(), &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let names = crds();
        if names.matches(".cilium.io").count() == 5 {
            break;
        }
        assert!(Instant::now() < deadline, "CRDs: {names}");
        std::thread::sleep(Duration::from_millis(250));
    }
    // Established: the seed's `kubectl get ciliumendpoints -o wide` works.
    let table = cp
        .kubectl(&["get", "ciliumendpoints", "-A", "-o", "wide"])
        .unwrap();
    assert!(
        table.is_empty() || table.contains("SECURITY IDENTITY"),
        "{table}"
    );
}
