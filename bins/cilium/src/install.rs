// SPDX-License-Identifier: Apache-2.0

//! The Kubernetes objects `cilium install` makes from resolved Helm values, as Cilium's
//! chart renders them (names, labels, namespaces): the ServiceAccounts and RBAC of the
//! agent, the operator and hubble-relay, the `cilium-config` ConfigMap, the DaemonSet
//! `cilium`, the Deployments `cilium-operator` and `hubble-relay` and the Service
//! `hubble-relay`. Cilium's CRDs are not objects of the install: the operator registers
//! them when it starts, as upstream's does.
//!
//! The containers run this project's binaries under Cilium's image names. The agent's
//! paths are Cilium's (`/sys/fs/bpf`, `/var/run/cilium`) through `hostPath` volumes, so a
//! runtime without mount namespaces (cilium-lab's kubelet) can give each node its own.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use cilium_k8s::pki::{CertificateAuthority, Usage};

use crate::values::Settings;

/// The namespace Cilium is installed in.
pub const NAMESPACE: &str = "kube-system";

/// The image tag of this project's release (`cilium install --version` overrides it).
pub const DEFAULT_VERSION: &str = concat!("v", env!("CARGO_PKG_VERSION"));

/// The labels of the agent's pods (`k8s-app=cilium`).
pub const AGENT_SELECTOR: &str = "k8s-app=cilium";
/// The labels of the operator's pods.
pub const OPERATOR_SELECTOR: &str = "io.cilium/app=operator";
/// The labels of hubble-relay's pods.
pub const RELAY_SELECTOR: &str = "k8s-app=hubble-relay";

/// Where hubble-relay also serves its Observer API on the node's file system (the
/// `hostPath` `/var/run/hubble-relay`), and the UI's socket there.
pub const RELAY_SOCKET: &str = "/var/run/hubble-relay/hubble-relay.sock";
/// The Hubble UI's socket (with `hubble.ui.enabled`).
pub const UI_SOCKET: &str = "/var/run/hubble-relay/hubble-ui.sock";
/// The Hubble UI's port in the relay's pods (the chart's hubble-ui frontend port), behind
/// Service `hubble-ui` port 80.
pub const UI_PORT: u16 = 8081;

/// What an install names: the kinds and names of its objects, for `uninstall` and
/// `status`, in the order they are applied.
pub fn object_refs(objects: &[Value]) -> Vec<(String, String, Option<String>)> {
    objects
        .iter()
        .map(|o| {
            (
                o["kind"].as_str().unwrap_or_default().to_owned(),
                o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                o["metadata"]["namespace"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

fn labels(name: &str) -> Value {
    json!({"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "cilium"})
}

fn merged(a: &Value, b: &Value) -> Value {
    let mut out = a.clone();
    if let (Some(o), Some(extra)) = (out.as_object_mut(), b.as_object()) {
        for (k, v) in extra {
            o.insert(k.clone(), v.clone());
        }
    }
    out
}

fn service_account(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ServiceAccount",
           "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels(name)}})
}

fn cluster_role(name: &str, rules: &Value) -> [Value; 2] {
    [
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": name, "labels": labels(name)}, "rules": rules}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": name, "labels": labels(name)},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
               "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": NAMESPACE}]}),
    ]
}

const READ: [&str; 3] = ["get", "list", "watch"];

/// The resources of Cilium's CRDs, with their status subresources.
const CILIUM_RESOURCES: [&str; 9] = [
    "ciliumnodes",
    "ciliumnodes/status",
    "ciliumendpoints",
    "ciliumendpoints/status",
    "ciliumidentities",
    "ciliumnetworkpolicies",
    "ciliumnetworkpolicies/status",
    "ciliumclusterwidenetworkpolicies",
    "ciliumclusterwidenetworkpolicies/status",
];

fn agent_rules() -> Value {
    json!([
        {"apiGroups": [""], "resources": ["pods", "namespaces", "nodes", "services", "endpoints"], "verbs": READ},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": READ},
        {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": READ},
        {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": READ},
        {"apiGroups": ["cilium.io"], "resources": CILIUM_RESOURCES,
         "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
    ])
}

fn operator_rules() -> Value {
    json!([
        {"apiGroups": [""], "resources": ["pods", "namespaces", "nodes", "services", "endpoints"], "verbs": READ},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": READ},
        {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
         "verbs": ["get", "list", "watch", "create", "update", "patch"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
         "verbs": ["get", "list", "watch", "create", "update", "patch"]},
        {"apiGroups": ["cilium.io"], "resources": CILIUM_RESOURCES,
         "verbs": ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]},
    ])
}

fn relay_rules() -> Value {
    json!([{"apiGroups": ["cilium.io"], "resources": ["ciliumnodes"], "verbs": READ}])
}

fn field(path: &str) -> Value {
    json!({"fieldRef": {"apiVersion": "v1", "fieldPath": path}})
}

fn host_path(name: &str, path: &str) -> Value {
    json!({"name": name, "hostPath": {"path": path, "type": "DirectoryOrCreate"}})
}

/// The API server the chart's `k8sServiceHost`/`k8sServicePort` name, as environment.
fn api_env(s: &Settings) -> Vec<Value> {
    let mut env = Vec::new();
    if let Some(host) = &s.k8s_service_host {
        env.push(json!({"name": "KUBERNETES_SERVICE_HOST", "value": host}));
        if let Some(port) = s.k8s_service_port {
            env.push(json!({"name": "KUBERNETES_SERVICE_PORT", "value": port.to_string()}));
        }
    }
    env
}

fn image(s: &Settings, repository: &str, version: &str) -> String {
    let tag = s.image_tag.as_deref().unwrap_or(version);
    format!("quay.io/cilium/{repository}:{tag}")
}

/// Every object of an install of `version` (an image tag such as `v1.17.5`), in the order
/// they are applied.
pub fn objects(s: &Settings, version: &str) -> Vec<Value> {
    let mut out = vec![
        service_account("cilium"),
        service_account("cilium-operator"),
    ];
    if s.hubble_relay_enabled {
        out.push(service_account("hubble-relay"));
    }
    out.extend(cluster_role("cilium", &agent_rules()));
    out.extend(cluster_role("cilium-operator", &operator_rules()));
    if s.hubble_relay_enabled {
        out.extend(cluster_role("hubble-relay", &relay_rules()));
    }
    out.push(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cilium-config", "namespace": NAMESPACE},
        "data": s.config_map(),
    }));
    out.push(agent(s, version));
    out.push(operator(s, version));
    if s.hubble_relay_enabled {
        out.extend(relay(s, version));
    }
    out
}

fn agent(s: &Settings, version: &str) -> Value {
    let pod_labels = merged(&json!({"k8s-app": "cilium"}), &labels("cilium-agent"));
    let mut env = vec![
        json!({"name": "K8S_NODE_NAME", "valueFrom": field("spec.nodeName")}),
        json!({"name": "CILIUM_K8S_NAMESPACE", "valueFrom": field("metadata.namespace")}),
        json!({"name": "HOST_IP", "valueFrom": field("status.hostIP")}),
        // What `kubectl exec ds/cilium -- cilium-dbg ...` reaches.
        json!({"name": "CILIUM_SOCK", "value": "unix:///var/run/cilium/cilium.sock"}),
        json!({"name": "CILIUM_BPF_ROOT", "value": "/sys/fs/bpf"}),
    ];
    env.extend(api_env(s));
    let mut args: Vec<String> = [
        "--config-dir=/tmp/cilium/config-map",
        "--bpf-root=/sys/fs/bpf",
        "--state-dir=/var/run/cilium",
        "--socket-path=/var/run/cilium/cilium.sock",
        "--hubble-socket-path=/var/run/cilium/hubble.sock",
        // The chart has this in cilium-config; an argument here, so that a runtime
        // without mount namespaces can name the node's directory in its place.
        "--write-cni-conf-when-ready=/host/etc/cni/net.d/05-cilium.conflist",
        // cilium-config's `cgroup-root` in the chart, an argument for the same reason.
        "--cgroup-root=/run/cilium/cgroupv2",
        "--ipv4-node=$(HOST_IP)",
    ]
    .map(str::to_owned)
    .into();
    let mut mounts = vec![
        json!({"name": "cilium-config-path", "mountPath": "/tmp/cilium/config-map", "readOnly": true}),
        json!({"name": "bpf-maps", "mountPath": "/sys/fs/bpf", "mountPropagation": "HostToContainer"}),
        json!({"name": "cilium-run", "mountPath": "/var/run/cilium"}),
        json!({"name": "etc-cni-netd", "mountPath": "/host/etc/cni/net.d"}),
        json!({"name": "cilium-cgroup", "mountPath": "/run/cilium/cgroupv2"}),
    ];
    let mut volumes = vec![
        json!({"name": "cilium-config-path", "configMap": {"name": "cilium-config"}}),
        host_path("bpf-maps", "/sys/fs/bpf"),
        host_path("cilium-run", "/var/run/cilium"),
        host_path("etc-cni-netd", "/etc/cni/net.d"),
        host_path("cilium-cgroup", "/run/cilium/cgroupv2"),
    ];
    if hubble_tls_on(s) {
        // The chart's `hubble-tls` volume. The files' keys are in cilium-config as the
        // chart has them, and repeated as arguments so that a runtime without mount
        // namespaces can name the volume's directory in their place.
        mounts.push(json!({"name": "hubble-tls", "mountPath": HUBBLE_TLS_DIR, "readOnly": true}));
        volumes.push(projected_secret(
            "hubble-tls",
            HUBBLE_SERVER_SECRET,
            &[
                ("tls.crt", "server.crt"),
                ("tls.key", "server.key"),
                ("ca.crt", "client-ca.crt"),
            ],
        ));
        for (key, path) in crate::values::HUBBLE_TLS_FILES {
            args.push(format!("--{key}={path}"));
        }
    }
    args.extend(s.extra_args.iter().cloned());
    json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "cilium", "namespace": NAMESPACE, "labels": pod_labels},
        "spec": {
            "selector": {"matchLabels": {"k8s-app": "cilium"}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 2}},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "serviceAccountName": "cilium",
                    "automountServiceAccountToken": true,
                    "hostNetwork": true,
                    "priorityClassName": "system-node-critical",
                    "restartPolicy": "Always",
                    "terminationGracePeriodSeconds": 1,
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [{
                        "name": "cilium-agent",
                        "image": image(s, "cilium", version),
                        "command": ["cilium-agent"],
                        "args": args,
                        "env": env,
                        // Ready once the agent's API says OK (upstream probes its health
                        // port; this agent has its API socket).
                        "readinessProbe": {
                            "exec": {"command": ["cilium-dbg", "status", "--brief"]},
                            "periodSeconds": 3,
                            "timeoutSeconds": 5,
                        },
                        "volumeMounts": mounts,
                    }],
                    "volumes": volumes,
                },
            },
        },
    })
}

fn operator(s: &Settings, version: &str) -> Value {
    let pod_labels = merged(
        &json!({"io.cilium/app": "operator", "name": "cilium-operator"}),
        &labels("cilium-operator"),
    );
    let mut env = vec![
        json!({"name": "K8S_NODE_NAME", "valueFrom": field("spec.nodeName")}),
        json!({"name": "POD_NAME", "valueFrom": field("metadata.name")}),
        json!({"name": "CILIUM_K8S_NAMESPACE", "valueFrom": field("metadata.namespace")}),
    ];
    env.extend(api_env(s));
    let pools: Vec<String> = s.pod_cidrs.iter().map(ToString::to_string).collect();
    let mut args = vec![
        format!("--cluster-pool-ipv4-cidr={}", pools.join(",")),
        format!("--cluster-pool-ipv4-mask-size={}", s.mask_size),
        "--operator-id=$(POD_NAME)".to_owned(),
    ];
    if let Some(path) = &s.kube_config_path {
        args.push(format!("--k8s-kubeconfig-path={path}"));
    }
    args.extend(s.operator_extra_args.iter().cloned());
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "cilium-operator", "namespace": NAMESPACE, "labels": pod_labels},
        "spec": {
            "replicas": s.operator_replicas,
            "selector": {"matchLabels": {"io.cilium/app": "operator", "name": "cilium-operator"}},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "serviceAccountName": "cilium-operator",
                    "automountServiceAccountToken": true,
                    "hostNetwork": true,
                    "priorityClassName": "system-cluster-critical",
                    "restartPolicy": "Always",
                    "terminationGracePeriodSeconds": 1,
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [{
                        "name": "cilium-operator",
                        "image": image(s, "operator-generic", version),
                        "command": ["cilium-operator-generic"],
                        "args": args,
                        "env": env,
                    }],
                },
            },
        },
    })
}

fn relay(s: &Settings, version: &str) -> Vec<Value> {
    let pod_labels = merged(&json!({"k8s-app": "hubble-relay"}), &labels("hubble-relay"));
    let mut args = vec![
        "--listen-address=:4245".to_owned(),
        format!("--listen-address=unix://{RELAY_SOCKET}"),
        "--dial-timeout=2s".to_owned(),
        format!("--cluster-name={}", s.cluster_name),
        // hubble.relay.tls.server.enabled=false, the chart's default.
        "--disable-server-tls".to_owned(),
    ];
    let mut mounts =
        vec![json!({"name": "hubble-relay-sockets", "mountPath": "/var/run/hubble-relay"})];
    let mut volumes = vec![host_path("hubble-relay-sockets", "/var/run/hubble-relay")];
    if hubble_tls_on(s) {
        mounts.push(json!({"name": "tls", "mountPath": RELAY_TLS_DIR, "readOnly": true}));
        volumes.push(projected_secret(
            "tls",
            RELAY_CLIENT_SECRET,
            &[
                ("ca.crt", "hubble-server-ca.crt"),
                ("tls.crt", "client.crt"),
                ("tls.key", "client.key"),
            ],
        ));
        args.extend([
            format!("--tls-hubble-server-ca-files={RELAY_TLS_DIR}/hubble-server-ca.crt"),
            format!("--tls-client-cert-file={RELAY_TLS_DIR}/client.crt"),
            format!("--tls-client-key-file={RELAY_TLS_DIR}/client.key"),
        ]);
    } else {
        args.push("--disable-client-tls".to_owned());
    }
    if s.hubble_ui_enabled {
        args.push(format!("--ui-listen-address=unix://{UI_SOCKET}"));
        args.push(format!("--ui-listen-address=:{UI_PORT}"));
    }
    if let Some(path) = &s.kube_config_path {
        args.push(format!("--k8s-kubeconfig-path={path}"));
    }
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "hubble-relay", "namespace": NAMESPACE, "labels": pod_labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"k8s-app": "hubble-relay"}},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "serviceAccountName": "hubble-relay",
                    "automountServiceAccountToken": true,
                    "hostNetwork": true,
                    "restartPolicy": "Always",
                    "terminationGracePeriodSeconds": 1,
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [{
                        "name": "hubble-relay",
                        "image": image(s, "hubble-relay", version),
                        "command": ["hubble-relay"],
                        "args": args,
                        "env": api_env(s),
                        "ports": [{"name": "grpc", "containerPort": 4245}],
                        "volumeMounts": mounts,
                    }],
                    "volumes": volumes,
                },
            },
        },
    });
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "hubble-relay", "namespace": NAMESPACE, "labels": labels("hubble-relay")},
        "spec": {"type": "ClusterIP", "selector": {"k8s-app": "hubble-relay"},
                 "ports": [{"name": "grpc", "protocol": "TCP", "port": 80, "targetPort": 4245}]},
    });
    let mut objects = vec![deployment, service];
    if s.hubble_ui_enabled {
        // The chart's hubble-ui Service; the UI is served by the relay's pods here.
        objects.push(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "hubble-ui", "namespace": NAMESPACE, "labels": labels("hubble-ui")},
            "spec": {"type": "ClusterIP", "selector": {"k8s-app": "hubble-relay"},
                     "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": UI_PORT}]},
        }));
    }
    objects
}

/// Where the agent's Hubble TLS files are mounted (the chart's path).
pub const HUBBLE_TLS_DIR: &str = "/var/lib/cilium/tls/hubble";
/// Where the relay's TLS files are mounted (the chart's path).
pub const RELAY_TLS_DIR: &str = "/var/lib/hubble-relay/tls";
/// The Secret of the CA that signs Hubble's certificates (`ca.crt`, `ca.key`).
pub const CA_SECRET: &str = "cilium-ca";
/// The Secret of the agents' Hubble server certificate (`ca.crt`, `tls.crt`, `tls.key`).
pub const HUBBLE_SERVER_SECRET: &str = "hubble-server-certs";
/// The Secret of the relay's client certificate.
pub const RELAY_CLIENT_SECRET: &str = "hubble-relay-client-certs";
/// The CA's common name, as the chart's.
pub const CA_NAME: &str = "Cilium CA";

/// Whether the agents serve Hubble over TLS (the relay then dials with its certificate).
pub fn hubble_tls_on(s: &Settings) -> bool {
    s.hubble_enabled && s.hubble_tls && !s.hubble_listen_address.is_empty()
}

/// A projected volume of some keys of a Secret, as the chart mounts certificates (the
/// Secret optional: a pod starts before it exists, and the agent says which file is
/// missing).
fn projected_secret(volume: &str, secret: &str, items: &[(&str, &str)]) -> Value {
    let items: Vec<Value> = items
        .iter()
        .map(|(key, path)| json!({"key": key, "path": path}))
        .collect();
    json!({"name": volume, "projected": {"defaultMode": 0o400, "sources": [
        {"secret": {"name": secret, "optional": true, "items": items}}
    ]}})
}

/// The Secrets of Hubble's TLS as the chart's `hubble.tls.auto.method=helm` makes them:
/// `cilium-ca` (the CA, kept across upgrades), `hubble-server-certs` (the agents'
/// certificate for `*.<cluster>.hubble-grpc.cilium.io`, server and client usage) and
/// `hubble-relay-client-certs` (`*.hubble-relay.cilium.io`, client usage), the leaf
/// certificates valid `hubble.tls.auto.certValidityDuration` days from now.
pub fn tls_secrets(s: &Settings, ca: &CertificateAuthority) -> Result<Vec<Value>, String> {
    let now = std::time::SystemTime::now();
    let until =
        now + std::time::Duration::from_secs(u64::from(s.hubble_tls_validity_days) * 86_400);
    // Every node's name as Cilium's peers announce it (cilium_hubble::tls::server_name).
    let wildcard = format!("*.{}.hubble-grpc.cilium.io", s.cluster_name);
    let both = Usage {
        server: true,
        client: true,
    };
    let server = ca
        .certificate(&wildcard, &[&wildcard], both, now, until)
        .map_err(|e| e.to_string())?;
    let relay_name = "*.hubble-relay.cilium.io";
    let relay = ca
        .certificate(
            relay_name,
            &[relay_name],
            Usage {
                server: false,
                client: true,
            },
            now,
            until,
        )
        .map_err(|e| e.to_string())?;
    let b64 = |text: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(text)
    };
    let secret = |name: &str, kind: &str, data: Value| {
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": name, "namespace": NAMESPACE},
               "type": kind, "data": data})
    };
    let leaf = |name: &str, ck: &cilium_k8s::pki::CertifiedKey| {
        secret(
            name,
            "kubernetes.io/tls",
            json!({"ca.crt": b64(ca.cert_pem()), "tls.crt": b64(&ck.cert_pem), "tls.key": b64(&ck.key_pem)}),
        )
    };
    Ok(vec![
        secret(
            CA_SECRET,
            "Opaque",
            json!({"ca.crt": b64(ca.cert_pem()), "ca.key": b64(&ca.key_pem())}),
        ),
        leaf(HUBBLE_SERVER_SECRET, &server),
        leaf(RELAY_CLIENT_SECRET, &relay),
    ])
}

/// The TLS Secrets by name (what `cilium uninstall` deletes).
pub fn tls_secret_refs() -> Vec<Value> {
    [CA_SECRET, HUBBLE_SERVER_SECRET, RELAY_CLIENT_SECRET]
        .iter()
        .map(|name| {
            json!({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": name, "namespace": NAMESPACE}})
        })
        .collect()
}

/// The objects as YAML documents (`cilium install --dry-run`).
pub fn to_yaml(objects: &[Value]) -> Result<String, String> {
    let mut out = String::new();
    for o in objects {
        out.push_str("---\n");
        out.push_str(&serde_norway::to_string(o).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// The ConfigMap data of an install (for tests and `config view`).
pub fn config_of(objects: &[Value]) -> BTreeMap<String, String> {
    objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == "cilium-config")
        .and_then(|o| serde_json::from_value(o["data"].clone()).ok())
        .unwrap_or_default()
}
