// SPDX-License-Identifier: Apache-2.0

//! The operator binary with `--k8s-kubeconfig-path`: it registers Cilium's CRDs with the
//! upstream apiserver at start (established before it goes on to the cluster store), and
//! leaves them alone with `--skip-crd-creation`. Needs etcd for its store (skipped without
//! it, a failure under CI). In Kubernetes mode (no store): Lease election with take-over,
//! CiliumNode IPAM (restored by a new leader, exhaustion reported, freed CIDRs reused),
//! CiliumIdentity and CiliumEndpoint garbage collection, the Lease released on SIGTERM;
//! CiliumNodes whose Node is gone collected (two rounds) and their CIDRs reused.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
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

/// An operator in Kubernetes mode (no cluster store) with a pool of four /24s, 1 s identity
/// and CiliumEndpoint GC rounds (CiliumNode GC keeps its default unless `extra` sets it)
/// and `extra` flags, killed on drop.
fn k8s_operator(
    kubeconfig: &std::path::Path,
    id: &str,
    log: &std::path::Path,
    extra: &[&str],
) -> Operator {
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
            .args(extra)
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

/// A test's view of the control plane: the operators' Lease and the CiliumNodes (read with
/// kubectl), and CiliumNodes registered as agents do.
struct Cluster<'a> {
    cp: &'a ControlPlane,
    rt: tokio::runtime::Runtime,
    client: kube::Client,
}

impl<'a> Cluster<'a> {
    fn new(cp: &'a ControlPlane) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt.block_on(cilium_k8s::client(&cp.kubeconfig())).unwrap();
        Cluster { cp, rt, client }
    }

    /// The holder of the Lease `cilium-operator-resource-lock` ("" when released).
    fn lease_holder(&self) -> Option<String> {
        self.cp
            .kubectl(&[
                "get",
                "lease",
                "-n",
                "kube-system",
                "cilium-operator-resource-lock",
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ])
            .ok()
    }

    /// Waits (up to `secs`) until `id` holds the Lease.
    fn wait_for_holder(&self, secs: u64, id: &str) {
        until(secs, &format!("the lease held by {id:?}"), || {
            (self.lease_holder().as_deref() == Some(id)).then_some(())
        });
    }

    /// Registers CiliumNode `name` with InternalIP `ip`, as its agent does.
    fn register(&self, name: &str, ip: [u8; 4]) {
        self.rt
            .block_on(cilium_k8s::nodes::register(
                self.client.clone(),
                name,
                Ipv4Addr::from(ip),
            ))
            .unwrap();
    }

    /// A field of CiliumNode `name` (a jsonpath), if it exists and the field is not empty.
    fn ciliumnode_field(&self, name: &str, path: &str) -> Option<String> {
        self.cp
            .kubectl(&["get", "ciliumnode", name, "-o", &format!("jsonpath={path}")])
            .ok()
            .filter(|v| !v.is_empty())
    }

    fn pod_cidr(&self, name: &str) -> Option<String> {
        self.ciliumnode_field(name, "{.spec.ipam.podCIDRs[0]}")
    }

    /// Why the operator gave CiliumNode `name` no CIDR (`status.ipam.operator-status.error`).
    fn operator_error(&self, name: &str) -> Option<String> {
        self.ciliumnode_field(name, "{.status.ipam.operator-status.error}")
    }

    /// The names of the CiliumNodes there are.
    fn ciliumnodes(&self) -> Option<BTreeSet<String>> {
        let names = self
            .cp
            .kubectl(&[
                "get",
                "ciliumnodes",
                "-o",
                "jsonpath={.items[*].metadata.name}",
            ])
            .ok()?;
        Some(names.split_whitespace().map(str::to_owned).collect())
    }

    /// Waits (up to `secs`) until CiliumNode `name` is gone.
    fn wait_for_ciliumnode_gone(&self, secs: u64, name: &str) {
        until(secs, &format!("CiliumNode {name} to go"), || {
            self.ciliumnodes()
                .filter(|names| !names.contains(name))
                .map(drop)
        });
    }
}

#[test]
fn operator_on_the_kubernetes_api() {
    let cp = ControlPlane::start_for_test("operator_on_the_kubernetes_api");
    let kubeconfig = cp.kubeconfig();
    let logs = cp.dir().to_path_buf();
    // No --nodes-gc-interval: these CiliumNodes have no Node objects, and the default
    // (5 minutes) outlasts the test.
    let op_a = k8s_operator(&kubeconfig, "op-a", &logs.join("op-a.log"), &[]);
    let cluster = Cluster::new(&cp);
    cluster.wait_for_holder(60, "op-a");
    cluster.register("k8s-ctr", [192, 168, 10, 100]);
    cluster.register("k8s-w1", [192, 168, 10, 101]);
    let ctr = until(30, "k8s-ctr's CIDR", || cluster.pod_cidr("k8s-ctr"));
    let w1 = until(30, "k8s-w1's CIDR", || cluster.pod_cidr("k8s-w1"));
    assert!(
        ctr.starts_with("172.20.") && ctr.ends_with(".0/24"),
        "{ctr}"
    );
    assert_ne!(ctr, w1);
    // The agent's re-registration (a restart) keeps the CIDR.
    cluster.register("k8s-ctr", [192, 168, 10, 100]);
    assert_eq!(cluster.pod_cidr("k8s-ctr").as_deref(), Some(ctr.as_str()));

    // A standby takes over when the leader dies, and takes back what was handed out.
    let op_b = k8s_operator(&kubeconfig, "op-b", &logs.join("op-b.log"), &[]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(cluster.lease_holder().as_deref(), Some("op-a"));
    drop(op_a); // SIGKILL: no release, the lease runs out.
    cluster.wait_for_holder(30, "op-b");
    cluster.register("k8s-w2", [192, 168, 10, 102]);
    cluster.register("k8s-w3", [192, 168, 10, 103]);
    let w2 = until(30, "k8s-w2's CIDR", || cluster.pod_cidr("k8s-w2"));
    let w3 = until(30, "k8s-w3's CIDR", || cluster.pod_cidr("k8s-w3"));
    let all: BTreeSet<&str> = [&ctr, &w1, &w2, &w3].iter().map(|s| s.as_str()).collect();
    assert_eq!(all.len(), 4, "a CIDR handed out twice: {all:?}");

    // The pool is exhausted: the fifth node is told why in its status; deleting a node
    // frees its CIDR for it.
    cluster.register("k8s-w4", [192, 168, 10, 104]);
    let error = until(30, "the exhaustion error", || {
        cluster.operator_error("k8s-w4")
    });
    assert!(error.contains("exhausted"), "{error}");
    cp.kubectl(&["delete", "ciliumnode", "k8s-w1"]).unwrap();
    let w4 = until(30, "k8s-w4's CIDR", || cluster.pod_cidr("k8s-w4"));
    assert_eq!(w4, w1);
    assert_eq!(
        cluster.operator_error("k8s-w4"),
        None,
        "the error stays after the allocation"
    );

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
    cluster.wait_for_holder(20, "");
    drop(op_b);
}

#[test]
fn ciliumnodes_of_deleted_nodes_are_collected() {
    let cp = ControlPlane::start_for_test("ciliumnodes_of_deleted_nodes_are_collected");
    let log = cp.dir().join("op.log");
    let _op = k8s_operator(&cp.kubeconfig(), "op", &log, &["--nodes-gc-interval=1s"]);
    let cluster = Cluster::new(&cp);
    cluster.wait_for_holder(60, "op");
    let logged = |line: &str| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(line)
    };
    // A node as its kubelet and its agent make it: the Node object, then the CiliumNode.
    let node = |name: &str, ip: [u8; 4]| {
        cp.add_ready_node(name, Ipv4Addr::from(ip)).unwrap();
        cluster.register(name, ip);
    };
    node("node-a", [192, 168, 20, 1]);
    node("node-b", [192, 168, 20, 2]);
    let a = until(30, "node-a's CIDR", || cluster.pod_cidr("node-a"));
    let b = until(30, "node-b's CIDR", || cluster.pod_cidr("node-b"));

    // A CiliumNode without a Node goes after two rounds (not at the first one it is seen
    // in), and its CIDR with it.
    let registered = Instant::now();
    cluster.register("node-c", [192, 168, 20, 3]);
    cluster.wait_for_ciliumnode_gone(30, "node-c");
    assert!(
        registered.elapsed() >= Duration::from_secs(1),
        "taken in the first round that saw it"
    );
    assert!(logged(
        "msg=\"garbage-collected a CiliumNode whose node is gone\" ciliumnode=node-c"
    ));
    until(10, "node-c's CIDR to be released", || {
        logged("msg=\"released a pod CIDR\" ciliumnode=node-c").then_some(())
    });

    // The pool (four /24s) fills up again: node-d and node-e take what is free, node-f
    // waits.
    node("node-d", [192, 168, 20, 4]);
    node("node-e", [192, 168, 20, 5]);
    let d = until(30, "node-d's CIDR", || cluster.pod_cidr("node-d"));
    let e = until(30, "node-e's CIDR", || cluster.pod_cidr("node-e"));
    let all: BTreeSet<&str> = [&a, &b, &d, &e].iter().map(|s| s.as_str()).collect();
    assert_eq!(all.len(), 4, "a CIDR handed out twice: {all:?}");
    node("node-f", [192, 168, 20, 6]);
    let error = until(30, "node-f's exhaustion error", || {
        cluster.operator_error("node-f")
    });
    assert!(error.contains("exhausted"), "{error}");

    // node-b's Node goes: its CiliumNode follows, and node-f gets its CIDR.
    cp.kubectl(&["delete", "node", "node-b"]).unwrap();
    cluster.wait_for_ciliumnode_gone(30, "node-b");
    let f = until(30, "node-f's CIDR", || cluster.pod_cidr("node-f"));
    assert_eq!(f, b);

    // CiliumNodes whose Node is there stay, with their CIDRs.
    std::thread::sleep(Duration::from_secs(3));
    let left: Vec<String> = cluster.ciliumnodes().unwrap().into_iter().collect();
    assert_eq!(left, ["node-a", "node-d", "node-e", "node-f"]);
    for (name, cidr) in [
        ("node-a", &a),
        ("node-d", &d),
        ("node-e", &e),
        ("node-f", &f),
    ] {
        assert_eq!(cluster.pod_cidr(name).as_ref(), Some(cidr), "{name}");
    }
}
