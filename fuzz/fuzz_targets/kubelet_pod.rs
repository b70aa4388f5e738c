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
    let volumes: BTreeMap<String, PathBuf> = container::config_map_volumes(&pod)
        .unwrap_or_default()
        .into_iter()
        .map(|(v, _, _)| (v.clone(), PathBuf::from("/v").join(v)))
        .collect();
    let ctx = Context {
        node: "k8s-w1",
        host_ip: Ipv4Addr::new(192, 168, 10, 101),
        pod_ip: Some(Ipv4Addr::new(172, 20, 1, 2)),
        bin_dir: Path::new("/bin"),
        workload_program: Path::new("/bin/cilium-lab"),
        volumes: &volumes,
    };
    for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
        if let Ok(env) = container::environment(&pod, c, &ctx) {
            let _ = container::command_line(&pod, c, &env, &ctx);
        }
    }
    let _ = cilium_lab::kubelet::pod_status(&pod, None, None, Ipv4Addr::LOCALHOST);
});
