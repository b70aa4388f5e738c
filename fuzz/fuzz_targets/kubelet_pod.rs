// SPDX-License-Identifier: Apache-2.0

//! The lab kubelet's view of a Pod from the API: any Pod object gives its containers'
//! environment and command lines, its volumes, and a status, or a clear error; never a
//! panic.
#![no_main]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use cilium_lab::kubelet::container::{self, Context};
use k8s_openapi::api::core::v1::Pod;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(pod) = serde_json::from_slice::<Pod>(data) else {
        return;
    };
    let checked = container::check_volumes(&pod).is_ok();
    let root = Path::new("/lab/k8s-w1/root");
    let volumes: BTreeMap<String, PathBuf> = pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .map(|v| {
            let dir = match &v.host_path {
                Some(hp) => container::host_path(root, &hp.path),
                None => PathBuf::from("/v").join(&v.name),
            };
            assert!(
                !checked || dir.starts_with(root) || dir.starts_with("/v/"),
                "{dir:?}"
            );
            (v.name.clone(), dir)
        })
        .collect();
    let ctx = Context {
        node: "k8s-w1",
        host_ip: Ipv4Addr::new(192, 168, 10, 101),
        pod_ip: Some(Ipv4Addr::new(172, 20, 1, 2)),
        bin_dir: Path::new("/bin"),
        workload_program: Path::new("/bin/cilium-lab"),
        volumes: &volumes,
        api_service: Some("10.96.0.1"),
        kube_dir: Some(Path::new("/kube")),
    };
    for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
        if let Ok(env) = container::environment(&pod, c, &ctx) {
            let _ = container::command_line(&pod, c, &env, &ctx);
            if let Some(dir) = container::service_account_dir(c, &ctx) {
                let _ = container::in_cluster_kubeconfig(&dir, &env);
            }
        }
    }
    let _ = cilium_lab::kubelet::pod_status(&pod, None, None, Ipv4Addr::LOCALHOST);
});
