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
        "--ipv4-node=$(HOST_IP)",
    ]
    .map(str::to_owned)
    .into();
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
                        "volumeMounts": [
                            {"name": "cilium-config-path", "mountPath": "/tmp/cilium/config-map", "readOnly": true},
                            {"name": "bpf-maps", "mountPath": "/sys/fs/bpf", "mountPropagation": "HostToContainer"},
                            {"name": "cilium-run", "mountPath": "/var/run/cilium"},
                            {"name": "etc-cni-netd", "mountPath": "/host/etc/cni/net.d"},
                        ],
                    }],
                    "volumes": [
                        {"name": "cilium-config-path", "configMap": {"name": "cilium-config"}},
                        host_path("bpf-maps", "/sys/fs/bpf"),
                        host_path("cilium-run", "/var/run/cilium"),
                        host_path("etc-cni-netd", "/etc/cni/net.d"),
                    ],
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
    ];
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
                        "volumeMounts": [{"name": "hubble-relay-sockets", "mountPath": "/var/run/hubble-relay"}],
                    }],
                    "volumes": [host_path("hubble-relay-sockets", "/var/run/hubble-relay")],
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
