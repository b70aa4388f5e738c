// SPDX-License-Identifier: Apache-2.0

//! `cilium sysdump`: what a bug report needs, collected from the cluster into one
//! `cilium-sysdump-<time>.tar.gz`: Cilium's objects and the Kubernetes objects around them
//! (as YAML), the logs of every agent, operator and relay pod (the current and the previous
//! run), and per agent the output of `cilium-dbg` commands run in its pod (status, the
//! endpoints, identities, services, policy, and the BPF maps: load balancer, ipcache,
//! conntrack, NAT). Whatever cannot be collected is listed in `sysdump-errors.txt`; the
//! dump is written anyway.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, LogParams};

use crate::install::{AGENT_SELECTOR, NAMESPACE, OPERATOR_SELECTOR, RELAY_SELECTOR};

/// The `cilium-dbg` commands run in every agent pod, with the file each one goes to.
pub const AGENT_COMMANDS: &[(&str, &[&str])] = &[
    ("cilium-dbg-status-verbose", &["status", "--verbose"]),
    ("cilium-dbg-endpoint-list", &["endpoint", "list"]),
    ("cilium-dbg-identity-list", &["identity", "list"]),
    ("cilium-dbg-service-list", &["service", "list"]),
    ("cilium-dbg-policy-get", &["policy", "get"]),
    ("cilium-dbg-map-list", &["map", "list"]),
    ("cilium-dbg-config", &["config"]),
    ("cilium-dbg-bpf-lb-list", &["bpf", "lb", "list"]),
    ("cilium-dbg-bpf-ipcache-list", &["bpf", "ipcache", "list"]),
    (
        "cilium-dbg-bpf-ct-list-global",
        &["bpf", "ct", "list", "global"],
    ),
    ("cilium-dbg-bpf-nat-list", &["bpf", "nat", "list"]),
];

/// The objects collected: (file name, API version, kind, plural, namespaced).
const OBJECTS: &[(&str, &str, &str, &str, bool)] = &[
    (
        "ciliumnodes",
        "cilium.io/v2",
        "CiliumNode",
        "ciliumnodes",
        false,
    ),
    (
        "ciliumendpoints",
        "cilium.io/v2",
        "CiliumEndpoint",
        "ciliumendpoints",
        true,
    ),
    (
        "ciliumidentities",
        "cilium.io/v2",
        "CiliumIdentity",
        "ciliumidentities",
        false,
    ),
    (
        "ciliumnetworkpolicies",
        "cilium.io/v2",
        "CiliumNetworkPolicy",
        "ciliumnetworkpolicies",
        true,
    ),
    (
        "ciliumclusterwidenetworkpolicies",
        "cilium.io/v2",
        "CiliumClusterwideNetworkPolicy",
        "ciliumclusterwidenetworkpolicies",
        false,
    ),
    ("k8s-nodes", "v1", "Node", "nodes", false),
    ("k8s-pods", "v1", "Pod", "pods", true),
    ("k8s-services", "v1", "Service", "services", true),
    ("k8s-namespaces", "v1", "Namespace", "namespaces", false),
    (
        "k8s-endpointslices",
        "discovery.k8s.io/v1",
        "EndpointSlice",
        "endpointslices",
        true,
    ),
    (
        "k8s-networkpolicies",
        "networking.k8s.io/v1",
        "NetworkPolicy",
        "networkpolicies",
        true,
    ),
    (
        "cilium-daemonset",
        "apps/v1",
        "DaemonSet",
        "daemonsets",
        true,
    ),
    (
        "cilium-deployments",
        "apps/v1",
        "Deployment",
        "deployments",
        true,
    ),
    ("cilium-configmaps", "v1", "ConfigMap", "configmaps", true),
];

/// A dump being collected: its files (name, content) and what failed.
#[derive(Debug, Default)]
pub struct Dump {
    /// The files, by name inside the archive.
    pub files: Vec<(String, Vec<u8>)>,
    /// What could not be collected.
    pub errors: Vec<String>,
}

impl Dump {
    fn add(&mut self, name: String, content: impl Into<Vec<u8>>) {
        self.files.push((name, content.into()));
    }

    /// Writes the archive `<dir>/<base>.tar.gz` with the files under `<base>/`, and
    /// `sysdump-errors.txt` when something failed; its path.
    pub fn write(&self, dir: &Path, base: &str) -> Result<PathBuf, String> {
        let path = dir.join(format!("{base}.tar.gz"));
        let file = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        let mut entries: Vec<(String, &[u8])> = self
            .files
            .iter()
            .map(|(n, c)| (n.clone(), c.as_slice()))
            .collect();
        let errors = self.errors.join("\n");
        if !self.errors.is_empty() {
            entries.push(("sysdump-errors.txt".into(), errors.as_bytes()));
        }
        let mtime = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        for (name, content) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(mtime);
            header.set_cksum();
            tar.append_data(&mut header, format!("{base}/{name}"), content)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        let gz = tar
            .into_inner()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let mut file = gz
            .finish()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        file.flush()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path)
    }
}

/// The archive's base name: `template` with `<ts>` replaced by the time
/// (`cilium-sysdump-<ts>` gives `cilium-sysdump-20261205-041502`).
pub fn base_name(template: &str, now: k8s_openapi::jiff::Timestamp) -> String {
    template.replace("<ts>", &now.strftime("%Y%m%d-%H%M%S").to_string())
}

async fn objects(client: &kube::Client, dump: &mut Dump) {
    for (file, api_version, kind, plural, namespaced) in OBJECTS {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let resource = ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: (*api_version).into(),
            kind: (*kind).into(),
            plural: (*plural).into(),
        };
        // Cilium's own workloads and ConfigMaps only, from kube-system.
        let api: Api<DynamicObject> = if *namespaced && file.starts_with("cilium-") {
            Api::namespaced_with(client.clone(), NAMESPACE, &resource)
        } else {
            Api::all_with(client.clone(), &resource)
        };
        match api.list(&ListParams::default()).await {
            Ok(list) => {
                let items: Vec<serde_json::Value> = list
                    .items
                    .iter()
                    .filter_map(|o| {
                        let mut v = serde_json::to_value(o).ok()?;
                        v["apiVersion"] = (*api_version).into();
                        v["kind"] = (*kind).into();
                        Some(v)
                    })
                    .collect();
                let doc = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
                match serde_norway::to_string(&doc) {
                    Ok(yaml) => dump.add(format!("{file}.yaml"), yaml),
                    Err(e) => dump.errors.push(format!("{file}: {e}")),
                }
            }
            Err(e) => dump.errors.push(format!("listing {plural}: {e}")),
        }
    }
}

async fn logs(client: &kube::Client, pods: &[Pod], dump: &mut Dump) {
    let api: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    for p in pods {
        let name = p.metadata.name.clone().unwrap_or_default();
        for c in p.spec.iter().flat_map(|s| s.containers.iter()) {
            for previous in [false, true] {
                let params = LogParams {
                    container: Some(c.name.clone()),
                    previous,
                    ..LogParams::default()
                };
                let suffix = if previous { "-previous" } else { "" };
                match api.logs(&name, &params).await {
                    Ok(text) => dump.add(format!("logs-{name}-{}{suffix}.log", c.name), text),
                    // There is no previous run unless the container restarted.
                    Err(_) if previous => {}
                    Err(e) => dump.errors.push(format!("logs of {name}/{}: {e}", c.name)),
                }
            }
        }
    }
}

/// Collects the dump (`cilium-dbg` output from at most `max_agents` agents).
pub async fn collect(client: &kube::Client, max_agents: usize) -> Dump {
    let mut dump = Dump::default();
    objects(client, &mut dump).await;
    let api: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let mut all = Vec::new();
    for selector in [AGENT_SELECTOR, OPERATOR_SELECTOR, RELAY_SELECTOR] {
        match api.list(&ListParams::default().labels(selector)).await {
            Ok(l) => all.extend(l.items),
            Err(e) => dump.errors.push(format!("listing pods {selector}: {e}")),
        }
    }
    logs(client, &all, &mut dump).await;
    let agents: Vec<&Pod> = all
        .iter()
        .filter(|p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("k8s-app"))
                .is_some_and(|v| v == "cilium")
        })
        .take(max_agents)
        .collect();
    for p in agents {
        let name = p.metadata.name.clone().unwrap_or_default();
        for (file, args) in AGENT_COMMANDS {
            let command: Vec<&str> = std::iter::once("cilium-dbg")
                .chain(args.iter().copied())
                .collect();
            match crate::cluster::exec(
                client,
                NAMESPACE,
                &name,
                "cilium-agent",
                &command,
                Duration::from_secs(20),
            )
            .await
            {
                Ok(out) => dump.add(format!("{file}-{name}.txt"), out),
                Err(e) => dump.errors.push(format!("{name}: {e}")),
            }
        }
    }
    dump
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_archive_holds_the_files_and_the_errors() {
        let dir = std::env::temp_dir().join(format!("crs-sysdump-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut dump = Dump::default();
        dump.add(
            "cilium-dbg-status-verbose-cilium-x.txt".into(),
            "KVStore: Ok\n",
        );
        dump.errors.push("cilium-y: not running".into());
        let base = base_name(
            "cilium-sysdump-<ts>",
            "2026-12-05T04:15:02Z".parse().unwrap(),
        );
        assert_eq!(base, "cilium-sysdump-20261205-041502");
        let path = dump.write(&dir, &base).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
        let mut names: Vec<String> = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().display().to_string();
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
            if name.ends_with("errors.txt") {
                assert_eq!(text, "cilium-y: not running");
            }
            names.push(name);
        }
        assert_eq!(
            names,
            [
                "cilium-sysdump-20261205-041502/cilium-dbg-status-verbose-cilium-x.txt",
                "cilium-sysdump-20261205-041502/sysdump-errors.txt"
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
