// SPDX-License-Identifier: Apache-2.0

//! The operator binary with `--k8s-kubeconfig-path`: it registers Cilium's CRDs with the
//! upstream apiserver at start (established before it goes on to the cluster store), and
//! leaves them alone with `--skip-crd-creation`. Needs etcd for its store (skipped without
//! it, a failure under CI). In Kubernetes mode (no store): Lease election with take-over,
//! CiliumNode IPAM (restored by a new leader, exhaustion reported, freed CIDRs reused),
//! CiliumIdentity and CiliumEndpoint garbage collection, the Lease released on SIGTERM.

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

/// An operator in Kubernetes mode (no cluster store), killed on drop.
fn k8s_operator(kubeconfig: &std::path::Path, id: &str, log: &std::path::Path) -> Operator {
    let log = std::fs::File::create(log).expect("operator log");
    Operator(
        Command::new(env!("CARGO_BIN_EXE_cilium-operator"))
            .arg(format!("--k8s-kubeconfig-path={}", kubeconfig.display()))
            .arg(format!("--operator-id={id}"))
            // Four /24s: enough for four nodes, not five.
            .arg("--cluster-pool-ipv4-cidr=172.20.0.0/22")
            .arg("--cluster-pool-ipv4-mask-size=24")
            .arg("--identity-gc-interval=1s")
            .arg("--identity-heartbeat-timeout=2s")
            .arg("--cilium-endpoint-gc-interval=1s")
            .arg("--leader-election-lease-duration=3s")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start cilium-operator"),
    )
}

/// Polls `f` every 200 ms until it returns `Some`, for at most `secs` seconds.
fn until<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn operator_on_the_kubernetes_api() {
    let cp = ControlPlane::start_for_test("operator_on_the_kubernetes_api");
    let kubeconfig = cp.kubeconfig();
    let logs = cp.dir().to_path_buf();
    let op_a = k8s_operator(&kubeconfig, "op-a", &logs.join("op-a.log"));
    let holder = || {
        cp.kubectl(&[
            "get",
            "lease",
            "-n",
            "kube-system",
            "cilium-operator-resource-lock",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])
        .ok()
    };
    until(60, "op-a to lead", || {
        (holder().as_deref() == Some("op-a")).then_some(())
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = rt.block_on(cilium_k8s::client(&kubeconfig)).unwrap();
    let register = |name: &str, ip: [u8; 4]| {
        rt.block_on(cilium_k8s::nodes::register(
            client.clone(),
            name,
            std::net::Ipv4Addr::from(ip),
        ))
        .unwrap();
    };
    let pod_cidr = |name: &str| {
        cp.kubectl(&[
            "get",
            "ciliumnode",
            name,
            "-o",
            "jsonpath={.spec.ipam.podCIDRs[0]}",
        ])
        .ok()
        .filter(|c| !c.is_empty())
    };
    register("k8s-ctr", [192, 168, 10, 100]);
    register("k8s-w1", [192, 168, 10, 101]);
    let ctr = until(30, "k8s-ctr's CIDR", || pod_cidr("k8s-ctr"));
    let w1 = until(30, "k8s-w1's CIDR", || pod_cidr("k8s-w1"));
    assert!(
        ctr.starts_with("172.20.") && ctr.ends_with(".0/24"),
        "{ctr}"
    );
    assert_ne!(ctr, w1);
    // The agent's re-registration (a restart) keeps the CIDR.
    register("k8s-ctr", [192, 168, 10, 100]);
    assert_eq!(pod_cidr("k8s-ctr").as_deref(), Some(ctr.as_str()));

    // A standby takes over when the leader dies, and takes back what was handed out.
    let op_b = k8s_operator(&kubeconfig, "op-b", &logs.join("op-b.log"));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(holder().as_deref(), Some("op-a"));
    drop(op_a); // SIGKILL: no release, the lease runs out.
    until(30, "op-b to take over", || {
        (holder().as_deref() == Some("op-b")).then_some(())
    });
    register("k8s-w2", [192, 168, 10, 102]);
    register("k8s-w3", [192, 168, 10, 103]);
    let w2 = until(30, "k8s-w2's CIDR", || pod_cidr("k8s-w2"));
    let w3 = until(30, "k8s-w3's CIDR", || pod_cidr("k8s-w3"));
    let all: std::collections::BTreeSet<&str> =
        [&ctr, &w1, &w2, &w3].iter().map(|s| s.as_str()).collect();
    assert_eq!(all.len(), 4, "a CIDR handed out twice: {all:?}");

    // The pool is exhausted: the fifth node is told why in its status; deleting a node
    // frees its CIDR for it.
    register("k8s-w4", [192, 168, 10, 104]);
    let error = until(30, "the exhaustion error", || {
        cp.kubectl(&[
            "get",
            "ciliumnode",
            "k8s-w4",
            "-o",
            "jsonpath={.status.ipam.operator-status.error}",
        ])
        .ok()
        .filter(|e| !e.is_empty())
    });
    assert!(error.contains("exhausted"), "{error}");
    cp.kubectl(&["delete", "ciliumnode", "k8s-w1"]).unwrap();
    let w4 = until(30, "k8s-w4's CIDR", || pod_cidr("k8s-w4"));
    assert_eq!(w4, w1);
    let cleared = cp
        .kubectl(&[
            "get",
            "ciliumnode",
            "k8s-w4",
            "-o",
            "jsonpath={.status.ipam.operator-status.error}",
        ])
        .unwrap();
    assert_eq!(cleared, "", "the error stays after the allocation");

    // Garbage collection: a CiliumEndpoint of a pod that exists keeps its identity; one
    // whose pod is gone goes, and so does its identity afterwards; an identity nobody
    // references goes.
    until(60, "the pod web", || {
        cp.kubectl_input(
            &["apply", "-f", "-"],
            Some(
                "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: default}\n\
                 spec: {containers: [{name: web, image: traefik/whoami}]}\n",
            ),
        )
        .ok()
    });
    let identity = |id: u32| {
        format!(
            "apiVersion: cilium.io/v2\nkind: CiliumIdentity\nmetadata: {{name: \"{id}\"}}\n\
             security-labels: {{\"k8s:app\": \"app-{id}\"}}\n"
        )
    };
    let cep = |name: &str, id: u32| {
        format!(
            "apiVersion: cilium.io/v2\nkind: CiliumEndpoint\nmetadata: {{name: {name}, namespace: default}}\n\
             status: {{id: 7, identity: {{id: {id}}}, state: ready}}\n"
        )
    };
    let yaml = [
        identity(1000),
        identity(1001),
        identity(1002),
        cep("web", 1000),
        cep("orphan", 1002),
    ]
    .join("---\n");
    cp.kubectl_input(&["apply", "-f", "-"], Some(&yaml))
        .unwrap();
    let names = |kind: &str| {
        cp.kubectl(&["get", kind, "-A", "-o", "name"])
            .unwrap_or_default()
    };
    until(30, "identity 1001 and the orphan endpoint to go", || {
        let ids = names("ciliumidentities");
        let ceps = names("ciliumendpoints");
        (!ids.contains("/1001") && !ceps.contains("/orphan")).then_some(())
    });
    until(30, "identity 1002 to go after its endpoint", || {
        (!names("ciliumidentities").contains("/1002")).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert!(names("ciliumidentities").contains("/1000"));
    assert!(names("ciliumendpoints").contains("/web"));

    // SIGTERM: the leader gives the Lease up (no holder) instead of letting it run out.
    let status = Command::new("kill")
        .args(["-TERM", &op_b.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    until(20, "op-b to release the lease", || {
        (holder().as_deref() == Some("")).then_some(())
    });
    drop(op_b);
}
