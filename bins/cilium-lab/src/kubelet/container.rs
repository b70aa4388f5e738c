// SPDX-License-Identifier: Apache-2.0

//! A container's command line and environment as the kubelet makes them from the pod
//! spec: the image's program (the lab's runtime knows a few, [`crate::workload`]), the
//! environment (`value`, and `valueFrom.fieldRef` for the pod's name, namespace, node,
//! host IP and service account), `$(VAR)` references expanded in environment values,
//! `command` and `args` as Kubernetes expands them, and `configMap` volumes.
//!
//! Volumes: the lab's runtime has no mount namespaces (a container sees the machine's
//! files). A `configMap` volume is written to a directory of the kubelet's, and every
//! occurrence of its `mountPath` in the container's command and arguments names that
//! directory instead; `hostPath` volumes are the machine's paths already. Other volume
//! types are refused with a clear error on the pod.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::workload::{self, Workload};

/// What the kubelet knows when it makes a container.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// The node's name.
    pub node: &'a str,
    /// The node's IP.
    pub host_ip: Ipv4Addr,
    /// The pod's IP, once known.
    pub pod_ip: Option<Ipv4Addr>,
    /// Where this project's programs are (Cilium's images run them), also first on PATH.
    pub bin_dir: &'a Path,
    /// The program whose `workload` subcommand runs the built-in workloads.
    pub workload_program: &'a Path,
    /// The host directory of each `configMap` volume, by volume name.
    pub volumes: &'a BTreeMap<String, PathBuf>,
}

/// Expands `$(VAR)` references as Kubernetes does: a defined variable is replaced, an
/// undefined one is left as it is, `$$` is a literal `$`.
pub fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn field_ref(pod: &Pod, path: &str, ctx: &Context<'_>) -> Result<String, String> {
    let m = &pod.metadata;
    Ok(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "spec.nodeName" => ctx.node.to_owned(),
        "spec.serviceAccountName" => pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into()),
        "status.hostIP" => ctx.host_ip.to_string(),
        "status.podIP" => ctx.pod_ip.map(|ip| ip.to_string()).unwrap_or_default(),
        other => {
            if let Some(key) = other
                .strip_prefix("metadata.labels['")
                .and_then(|k| k.strip_suffix("']"))
            {
                return Ok(m
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(key).cloned())
                    .unwrap_or_default());
            }
            return Err(format!(
                "fieldRef {other:?} is not supported by the lab's runtime"
            ));
        }
    })
}

/// The container's environment: HOSTNAME and PATH, then the spec's variables in order.
pub fn environment(
    pod: &Pod,
    c: &Container,
    ctx: &Context<'_>,
) -> Result<Vec<(String, String)>, String> {
    let mut env = vec![
        (
            "HOSTNAME".to_owned(),
            pod.metadata.name.clone().unwrap_or_default(),
        ),
        (
            "PATH".to_owned(),
            format!(
                "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                ctx.bin_dir.display()
            ),
        ),
    ];
    for var in c.env.iter().flatten() {
        let value = if let Some(from) = &var.value_from {
            match &from.field_ref {
                Some(f) => field_ref(pod, &f.field_path, ctx)?,
                None => {
                    return Err(format!(
                        "env {}: only value and valueFrom.fieldRef are supported by the lab's runtime",
                        var.name
                    ));
                }
            }
        } else {
            expand(var.value.as_deref().unwrap_or_default(), &env)
        };
        env.retain(|(k, _)| k != &var.name);
        env.push((var.name.clone(), value));
    }
    Ok(env)
}

/// The container's command line (program first), its `$(VAR)`s expanded with `env` and
/// its configMap volumes' mount paths replaced by their directories.
pub fn command_line(
    pod: &Pod,
    c: &Container,
    env: &[(String, String)],
    ctx: &Context<'_>,
) -> Result<Vec<String>, String> {
    let image = c.image.clone().unwrap_or_default();
    let ports: Vec<u16> = c
        .ports
        .iter()
        .flatten()
        .filter_map(|p| u16::try_from(p.container_port).ok())
        .collect();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let command = c.command.clone().unwrap_or_default();
    let args = c.args.clone().unwrap_or_default();
    let argv: Vec<String> = match workload::for_image(&image, &ports)? {
        Workload::Whoami { port } => vec![
            ctx.workload_program.display().to_string(),
            "workload".into(),
            "whoami".into(),
            format!("--name={name}"),
            format!("--port={port}"),
        ],
        Workload::Sleep if command.is_empty() && args.is_empty() => {
            vec!["sleep".into(), "infinity".into()]
        }
        Workload::Sleep if command.is_empty() => {
            return Err(format!(
                "container {}: args without a command: the lab's {image} has no entrypoint",
                c.name
            ));
        }
        Workload::Sleep => command.into_iter().chain(args).collect(),
        Workload::Program { binary } => {
            // The image's entrypoint is the program, whatever its name in the command.
            let program = ctx.bin_dir.join(binary).display().to_string();
            std::iter::once(program)
                .chain(command.into_iter().skip(1))
                .chain(args)
                .collect()
        }
    };
    let mounts: Vec<(String, String)> = c
        .volume_mounts
        .iter()
        .flatten()
        .filter_map(|m| {
            let dir = ctx.volumes.get(&m.name)?;
            Some((m.mount_path.clone(), dir.display().to_string()))
        })
        .collect();
    Ok(argv
        .iter()
        .map(|a| {
            let mut a = expand(a, env);
            for (path, dir) in &mounts {
                a = replace_path(&a, path, dir);
            }
            a
        })
        .collect())
}

/// Replaces `path` in `text` where it stands as a path: followed by `/`, or at the end
/// (`/config` in `--x=/config/a` and `--x=/config`, not in `--x=/configuration`).
fn replace_path(text: &str, path: &str, dir: &str) -> String {
    let path = path.trim_end_matches('/');
    if path.is_empty() {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(path) {
        let after = &rest[i + path.len()..];
        out.push_str(&rest[..i]);
        if after.is_empty() || after.starts_with('/') {
            out.push_str(dir);
        } else {
            out.push_str(path);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// The pod's volumes that need the API: `configMap` ones, as (volume, ConfigMap name,
/// optional); an error names a type the lab's runtime does not have.
pub fn config_map_volumes(pod: &Pod) -> Result<Vec<(String, String, bool)>, String> {
    let mut out = Vec::new();
    for v in pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
    {
        if let Some(cm) = &v.config_map {
            out.push((v.name.clone(), cm.name.clone(), cm.optional == Some(true)));
        } else if v.host_path.is_none() && v.empty_dir.is_none() && v.projected.is_none() {
            return Err(format!(
                "volume {}: only configMap, hostPath, emptyDir and projected volumes are supported by the lab's runtime",
                v.name
            ));
        }
    }
    Ok(out)
}

/// Writes a ConfigMap's keys as files of `dir` (made anew).
pub fn write_config_map(dir: &Path, data: &BTreeMap<String, String>) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (key, value) in data {
        if key.contains('/') || key.starts_with('.') {
            return Err(format!("ConfigMap key {key:?} is not a file name"));
        }
        let file = dir.join(key);
        std::fs::write(&file, value).map_err(|e| format!("{}: {e}", file.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn mount_paths_are_replaced_only_as_paths() {
        assert_eq!(replace_path("--x=/config", "/config", "/d"), "--x=/d");
        assert_eq!(
            replace_path("--x=/config/a.yaml", "/config/", "/d"),
            "--x=/d/a.yaml"
        );
        assert_eq!(
            replace_path("--x=/configuration", "/config", "/d"),
            "--x=/configuration"
        );
        assert_eq!(
            replace_path("/config:/config/b", "/config", "/d"),
            "/config:/d/b"
        );
    }

    #[test]
    fn expansion_is_kubernetes() {
        let e = env(&[("NODE", "k8s-w1"), ("IP", "192.168.10.101")]);
        assert_eq!(expand("--node=$(NODE)", &e), "--node=k8s-w1");
        assert_eq!(expand("$(NODE)/$(IP)", &e), "k8s-w1/192.168.10.101");
        assert_eq!(expand("$(MISSING)", &e), "$(MISSING)");
        assert_eq!(expand("$$(NODE)", &e), "$(NODE)");
        assert_eq!(expand("cost $5 and $", &e), "cost $5 and $");
        assert_eq!(expand("$(unclosed", &e), "$(unclosed");
    }

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "cilium-abcde", "namespace": "kube-system", "labels": {"k8s-app": "cilium"}},
            "spec": {
                "volumes": [{"name": "cilium-config-path", "configMap": {"name": "cilium-config"}},
                            {"name": "bpf", "hostPath": {"path": "/sys/fs/bpf"}}],
                "containers": [{
                    "name": "cilium-agent", "image": "quay.io/cilium/cilium:v1.18.0",
                    "command": ["cilium-agent"],
                    "args": ["--config-dir=/tmp/cilium/config-map", "--k8s-node-name=$(K8S_NODE_NAME)"],
                    "env": [{"name": "K8S_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                            {"name": "SOCK", "value": "/lab/$(K8S_NODE_NAME)/cilium.sock"},
                            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['k8s-app']"}}}],
                    "volumeMounts": [{"name": "cilium-config-path", "mountPath": "/tmp/cilium/config-map"}],
                }],
            },
        }))
        .expect("pod")
    }

    #[test]
    fn the_agents_daemonset_pod_becomes_its_command_line() {
        let volumes = BTreeMap::from([(
            "cilium-config-path".to_owned(),
            PathBuf::from("/lab/k8s-w1/kubelet/volumes/u/cilium-config-path"),
        )]);
        let ctx = Context {
            node: "k8s-w1",
            host_ip: Ipv4Addr::new(192, 168, 10, 101),
            pod_ip: None,
            bin_dir: Path::new("/build"),
            workload_program: Path::new("/build/cilium-lab"),
            volumes: &volumes,
        };
        let p = pod();
        let c = &p.spec.as_ref().expect("spec").containers[0];
        let e = environment(&p, c, &ctx).expect("env");
        let get = |k: &str| e.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("K8S_NODE_NAME"), Some("k8s-w1"));
        assert_eq!(get("SOCK"), Some("/lab/k8s-w1/cilium.sock"));
        assert_eq!(get("APP"), Some("cilium"));
        assert!(get("PATH").expect("PATH").starts_with("/build:"));
        let argv = command_line(&p, c, &e, &ctx).expect("argv");
        assert_eq!(
            argv,
            [
                "/build/cilium-agent",
                "--config-dir=/lab/k8s-w1/kubelet/volumes/u/cilium-config-path",
                "--k8s-node-name=k8s-w1"
            ]
        );
        assert_eq!(
            config_map_volumes(&p).expect("volumes"),
            [(
                "cilium-config-path".to_owned(),
                "cilium-config".to_owned(),
                false
            )]
        );
    }

    #[test]
    fn unsupported_sources_are_errors() {
        let mut p = pod();
        let spec = p.spec.as_mut().expect("spec");
        spec.containers[0].env = Some(vec![
            serde_json::from_value(json!(
                {"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
            ))
            .expect("var"),
        ]);
        spec.volumes = Some(vec![
            serde_json::from_value(json!(
                {"name": "data", "persistentVolumeClaim": {"claimName": "c"}}
            ))
            .expect("volume"),
        ]);
        let volumes = BTreeMap::new();
        let ctx = Context {
            node: "n",
            host_ip: Ipv4Addr::LOCALHOST,
            pod_ip: None,
            bin_dir: Path::new("/b"),
            workload_program: Path::new("/b/cilium-lab"),
            volumes: &volumes,
        };
        let c = &p.spec.as_ref().expect("spec").containers[0];
        assert!(
            environment(&p, c, &ctx)
                .expect_err("secret")
                .contains("valueFrom.fieldRef")
        );
        assert!(config_map_volumes(&p).expect_err("pvc").contains("data"));
        let dir = std::env::temp_dir().join(format!("crs-cm-{}", std::process::id()));
        let bad = BTreeMap::from([("../x".to_owned(), "v".to_owned())]);
        assert!(write_config_map(&dir, &bad).is_err());
        let good = BTreeMap::from([("debug".to_owned(), "true".to_owned())]);
        write_config_map(&dir, &good).expect("write");
        assert_eq!(
            std::fs::read_to_string(dir.join("debug")).expect("read"),
            "true"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
