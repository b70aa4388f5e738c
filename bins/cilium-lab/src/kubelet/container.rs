// SPDX-License-Identifier: Apache-2.0

//! A container's command line and environment as the kubelet makes them from the pod
//! spec: the image's program (the lab's runtime knows a few, [`crate::workload`]), the
//! environment (`value`, and `valueFrom.fieldRef` for the pod's name, namespace, node,
//! host IP and service account), `$(VAR)` references expanded in environment values,
//! `command` and `args` as Kubernetes expands them, and `configMap` volumes.
//!
//! Volumes: the lab's runtime has no mount namespaces (a container sees the machine's
//! files). Every volume is a directory: a `configMap`, `emptyDir` or `projected` one is
//! the kubelet's, a `hostPath` one is the path under the node's root directory (the lab's
//! nodes share one machine, so each has a root of its own: `/sys/fs/bpf` of k8s-w1 is
//! `<lab>/k8s-w1/root/sys/fs/bpf`). Every occurrence of a volume's `mountPath` in the
//! container's command, arguments and environment values names that directory instead.
//! Other volume types are refused with a clear error on the pod.
//!
//! The service account: the kubelet sets `KUBERNETES_SERVICE_HOST`/`_PORT` (the
//! `kubernetes` Service) as Kubernetes does, and for a container that mounts the
//! account's token at [`SERVICE_ACCOUNT_DIR`] writes a kubeconfig of the in-cluster
//! account (that server, the token file, the CA) and names it in `KUBECONFIG`: programs
//! cannot find the token at its fixed path without a mount namespace.

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
    /// The host directory of each volume, by volume name.
    pub volumes: &'a BTreeMap<String, PathBuf>,
    /// The `kubernetes` Service's ClusterIP (`KUBERNETES_SERVICE_HOST`), once known.
    pub api_service: Option<&'a str>,
    /// Where the upstream Kubernetes programs are (kube-proxy's image runs them).
    pub kube_dir: Option<&'a Path>,
}

/// Where Kubernetes mounts a pod's service account token, CA and namespace.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

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

pub(crate) fn field_ref(pod: &Pod, path: &str, ctx: &Context<'_>) -> Result<String, String> {
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

/// The container's environment: HOSTNAME, PATH and the `kubernetes` Service's address,
/// then the spec's variables in order; mount paths in values name the volumes' directories.
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
    if let Some(ip) = ctx.api_service {
        env.push(("KUBERNETES_SERVICE_HOST".into(), ip.to_owned()));
        env.push(("KUBERNETES_SERVICE_PORT".into(), "443".into()));
    }
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
    let mounts = mounts(c, ctx);
    for (_, value) in &mut env {
        for (path, dir) in &mounts {
            *value = replace_path(value, path, dir);
        }
    }
    Ok(env)
}

/// The container's mounts: (mount path, the volume's directory), the longest path first
/// (a mount inside another one's path is replaced before it).
fn mounts(c: &Container, ctx: &Context<'_>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = c
        .volume_mounts
        .iter()
        .flatten()
        .filter_map(|m| {
            let dir = ctx.volumes.get(&m.name)?;
            Some((m.mount_path.clone(), dir.display().to_string()))
        })
        .collect();
    out.sort_by_key(|(path, _)| std::cmp::Reverse(path.trim_end_matches('/').len()));
    out
}

/// The directory of the container's service account volume, when it mounts one.
pub fn service_account_dir(c: &Container, ctx: &Context<'_>) -> Option<PathBuf> {
    c.volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path.trim_end_matches('/') == SERVICE_ACCOUNT_DIR)
        .and_then(|m| ctx.volumes.get(&m.name).cloned())
}

/// A kubeconfig of the in-cluster account whose token, CA and namespace are the files of
/// `dir`, for the API server at the container's `KUBERNETES_SERVICE_HOST`/`_PORT`; None
/// when the environment does not name a server.
pub fn in_cluster_kubeconfig(dir: &Path, env: &[(String, String)]) -> Option<String> {
    let get = |k: &str| {
        env.iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    };
    let host = get("KUBERNETES_SERVICE_HOST").filter(|h| !h.is_empty())?;
    let port = get("KUBERNETES_SERVICE_PORT").unwrap_or("443");
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let namespace = std::fs::read_to_string(dir.join("namespace")).unwrap_or_default();
    let config = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "in-cluster", "cluster": {
            "server": format!("https://{host}:{port}"),
            "certificate-authority": dir.join("ca.crt").display().to_string()}}],
        "users": [{"name": "service-account", "user": {
            "tokenFile": dir.join("token").display().to_string()}}],
        "contexts": [{"name": "in-cluster", "context": {
            "cluster": "in-cluster", "user": "service-account", "namespace": namespace.trim()}}],
        "current-context": "in-cluster",
    });
    Some(config.to_string())
}

/// The container's command line (program first), its `$(VAR)`s expanded with `env` and
/// its volumes' mount paths replaced by their directories.
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
            // The image's entrypoint, or another program of the image the command names.
            let named = command
                .first()
                .and_then(|c| c.rsplit('/').next())
                .and_then(|n| workload::image_programs(binary).iter().find(|p| **p == n));
            let name = named.copied().unwrap_or(binary);
            let dir = match ctx.kube_dir {
                Some(k) if workload::KUBERNETES_PROGRAMS.contains(&name) => k,
                _ => ctx.bin_dir,
            };
            let program = dir.join(name).display().to_string();
            std::iter::once(program)
                .chain(command.into_iter().skip(1))
                .chain(args)
                .collect()
        }
    };
    let mounts = mounts(c, ctx);
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

/// Checks that the lab's runtime has every volume type of the pod (configMap, secret,
/// hostPath, emptyDir, projected with serviceAccountToken, configMap, secret and
/// downwardAPI).
pub fn check_volumes(pod: &Pod) -> Result<(), String> {
    for v in pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
    {
        if v.name.is_empty() || v.name.contains('/') || v.name == "." || v.name == ".." {
            return Err(format!("volume name {:?} is not a DNS label", v.name));
        }
        let supported = v.config_map.is_some()
            || v.secret.is_some()
            || v.host_path.is_some()
            || v.empty_dir.is_some()
            || v.projected.as_ref().is_some_and(|p| {
                p.sources.iter().flatten().all(|s| {
                    s.service_account_token.is_some()
                        || s.config_map.is_some()
                        || s.secret.is_some()
                        || s.downward_api.is_some()
                })
            });
        if !supported {
            return Err(format!(
                "volume {}: only configMap, secret, hostPath, emptyDir and projected (serviceAccountToken, configMap, secret, downwardAPI) volumes are supported by the lab's runtime",
                v.name
            ));
        }
    }
    Ok(())
}

/// The host directory of a `hostPath` volume's path on a node whose root is `root`.
pub fn host_path(root: &Path, path: &str) -> PathBuf {
    let mut dir = root.to_path_buf();
    for part in path
        .split('/')
        .filter(|p| !p.is_empty() && *p != "." && *p != "..")
    {
        dir.push(part);
    }
    dir
}

/// Writes a volume's files (relative paths, as a ConfigMap's keys or a projected
/// volume's items name them) into `dir`, made anew.
pub fn write_volume(dir: &Path, files: &[(String, Vec<u8>)]) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (path, content) in files {
        let parts: Vec<&str> = path.split('/').collect();
        if path.starts_with('/')
            || parts
                .iter()
                .any(|p| p.is_empty() || *p == "." || *p == ".." || p.starts_with(".."))
        {
            return Err(format!("volume file {path:?} is not a relative path"));
        }
        let file = dir.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::write(&file, content).map_err(|e| format!("{}: {e}", file.display()))?;
    }
    Ok(())
}

/// The files of a ConfigMap (or Secret) volume: every key, or the `items` it names
/// (key to path); a missing item key is an error unless the volume is optional.
pub fn key_files(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[k8s_openapi::api::core::v1::KeyToPath]>,
    what: &str,
) -> Result<Vec<(String, Vec<u8>)>, String> {
    match items {
        None => Ok(data.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        Some(items) => items
            .iter()
            .map(|i| {
                data.get(&i.key)
                    .map(|v| (i.path.clone(), v.clone()))
                    .ok_or_else(|| format!("{what} has no key {:?}", i.key))
            })
            .collect(),
    }
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
            api_service: Some("10.96.0.1"),
            kube_dir: None,
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
        check_volumes(&p).expect("volumes");
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
    }

    #[test]
    fn host_paths_are_under_the_node_root_and_mounts_name_them_in_env_and_args() {
        let root = Path::new("/lab/k8s-w1/root");
        assert_eq!(
            host_path(root, "/sys/fs/bpf"),
            Path::new("/lab/k8s-w1/root/sys/fs/bpf")
        );
        assert_eq!(
            host_path(root, "/var/../../etc"),
            Path::new("/lab/k8s-w1/root/var/etc")
        );
        let volumes = BTreeMap::from([
            ("run".to_owned(), host_path(root, "/var/run/cilium")),
            ("sock".to_owned(), PathBuf::from("/k/volumes/u/sock")),
            ("sa".to_owned(), PathBuf::from("/k/volumes/u/sa")),
        ]);
        let ctx = Context {
            node: "k8s-w1",
            host_ip: Ipv4Addr::new(192, 168, 10, 101),
            pod_ip: None,
            bin_dir: Path::new("/build"),
            workload_program: Path::new("/build/cilium-lab"),
            volumes: &volumes,
            api_service: Some("10.96.0.1"),
            kube_dir: None,
        };
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "cilium-x", "namespace": "kube-system"},
            "spec": {"containers": [{
                "name": "cilium-agent", "image": "quay.io/cilium/cilium:v1",
                "args": ["--socket-path=/var/run/cilium/cilium.sock", "--x=/var/run/cilium/sock/a"],
                "env": [{"name": "CILIUM_SOCK", "value": "unix:///var/run/cilium/cilium.sock"},
                        {"name": "KUBERNETES_SERVICE_HOST", "value": "192.168.10.100"},
                        {"name": "KUBERNETES_SERVICE_PORT", "value": "6443"}],
                "volumeMounts": [{"name": "run", "mountPath": "/var/run/cilium"},
                                 {"name": "sock", "mountPath": "/var/run/cilium/sock"},
                                 {"name": "sa", "mountPath": SERVICE_ACCOUNT_DIR}]}]}
        }))
        .expect("pod");
        let c = &p.spec.as_ref().expect("spec").containers[0];
        let env = environment(&p, c, &ctx).expect("env");
        let get = |k: &str| {
            env.iter()
                .rev()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(
            get("CILIUM_SOCK"),
            Some("unix:///lab/k8s-w1/root/var/run/cilium/cilium.sock")
        );
        assert_eq!(
            get("KUBERNETES_SERVICE_HOST"),
            Some("192.168.10.100"),
            "the spec wins"
        );
        let argv = command_line(&p, c, &env, &ctx).expect("argv");
        assert_eq!(
            argv[1..],
            [
                "--socket-path=/lab/k8s-w1/root/var/run/cilium/cilium.sock",
                "--x=/k/volumes/u/sock/a"
            ]
        );
        let sa = service_account_dir(c, &ctx).expect("sa");
        let kubeconfig = in_cluster_kubeconfig(&sa, &env).expect("kubeconfig");
        let v: serde_json::Value = serde_json::from_str(&kubeconfig).expect("json");
        assert_eq!(
            v["clusters"][0]["cluster"]["server"],
            "https://192.168.10.100:6443"
        );
        assert_eq!(v["users"][0]["user"]["tokenFile"], "/k/volumes/u/sa/token");
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
            api_service: Some("10.96.0.1"),
            kube_dir: None,
        };
        let c = &p.spec.as_ref().expect("spec").containers[0];
        assert!(
            environment(&p, c, &ctx)
                .expect_err("secret")
                .contains("valueFrom.fieldRef")
        );
        assert!(check_volumes(&p).expect_err("pvc").contains("data"));
        let dir = std::env::temp_dir().join(format!("crs-cm-{}", std::process::id()));
        for bad in ["../x", "/etc/x", "a/../../x", "a//b"] {
            assert!(
                write_volume(&dir, &[(bad.to_owned(), b"v".to_vec())]).is_err(),
                "{bad}"
            );
        }
        write_volume(
            &dir,
            &[
                ("debug".to_owned(), b"true".to_vec()),
                ("sub/token".to_owned(), b"t".to_vec()),
            ],
        )
        .expect("write");
        assert_eq!(
            std::fs::read_to_string(dir.join("debug")).expect("read"),
            "true"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("sub/token")).expect("read"),
            "t"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
