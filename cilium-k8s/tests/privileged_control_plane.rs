// SPDX-License-Identifier: Apache-2.0

//! The control plane inside a network namespace, as the lab runs it on k8s-ctr: etcd and
//! the apiserver on the node's address (6443, 2379), the `kubernetes` Service's endpoints
//! reconciled to that address. Needs root (a namespace of its own, removed on drop).

use cilium_bpf::testing::{is_root_or_skip, run};
use cilium_k8s::testing::{ControlPlane, Options};

/// The test's namespace, deleted on drop (after the control plane in it is gone).
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

#[test]
fn privileged_control_plane_runs_in_a_namespace() {
    if !is_root_or_skip("privileged_control_plane_runs_in_a_namespace") {
        return;
    }
    let ns = Netns(format!("crs-k8s-{}", std::process::id()));
    run(&["ip", "netns", "add", &ns.0]);
    run(&["ip", "-n", &ns.0, "link", "set", "lo", "up"]);
    // A veth pair with both ends in the namespace (no dummy module on every kernel).
    run(&[
        "ip",
        "-n",
        &ns.0,
        "link",
        "add",
        "crs-ctr",
        "type",
        "veth",
        "peer",
        "name",
        "crs-ctr-p",
    ]);
    run(&[
        "ip",
        "-n",
        &ns.0,
        "addr",
        "add",
        "192.168.10.100/24",
        "dev",
        "crs-ctr",
    ]);
    run(&["ip", "-n", &ns.0, "link", "set", "crs-ctr", "up"]);
    run(&["ip", "-n", &ns.0, "link", "set", "crs-ctr-p", "up"]);

    let cp = ControlPlane::start(&Options {
        netns: Some(ns.0.clone()),
        address: "192.168.10.100".parse().unwrap(),
        ..Options::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cp.server(), "https://192.168.10.100:6443");
    // The kubernetes Service points at the apiserver's address (lease reconciler).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let eps = cp
            .kubectl(&[
                "get",
                "endpointslice",
                "kubernetes",
                "-n",
                "default",
                "-o",
                "jsonpath={.endpoints[*].addresses[*]}:{.ports[*].port}",
            ])
            .unwrap_or_default();
        if eps == "192.168.10.100:6443" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "kubernetes endpoints: {eps:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    drop(cp);
}
