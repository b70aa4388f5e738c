// SPDX-License-Identifier: Apache-2.0

//! Cilium's components as Kubernetes shows them in the seed, made by `cilium-lab up`: the
//! `cilium-config` ConfigMap (the agents' settings, read through a configMap volume as
//! `--config-dir`), the DaemonSet `cilium` (label `k8s-app=cilium`, hostNetwork, container
//! `cilium-agent`), and the Deployments `cilium-operator` and `hubble-relay` on the
//! control-plane node, all in kube-system. The kubelets run them (Cilium's images are this
//! project's binaries in the lab's runtime).
//!
//! The lab's nodes share one machine, so each agent's paths (BPF file system, state
//! directory, sockets) are per node under the lab directory: the DaemonSet's arguments
//! name them with `$(K8S_NODE_NAME)`, which the kubelet expands as Kubernetes does.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use serde_json::{Value, json};

/// The tag of the images (the project's version).
pub const IMAGE_TAG: &str = concat!("v", env!("CARGO_PKG_VERSION"));

/// What the components need to know about the lab.
#[derive(Debug, Clone)]
pub struct Settings<'a> {
    /// The lab directory.
    pub lab_dir: &'a Path,
    /// The kubeconfig the components use.
    pub kubeconfig: &'a Path,
    /// The pod CIDR pool.
    pub pod_pool: &'a str,
    /// Tunnel (VXLAN) routing instead of native.
    pub tunnel: bool,
    /// Extra agent settings (`up --config`).
    pub agent_config: &'a BTreeMap<String, String>,
    /// The nodes' names and IPs (hubble-relay's peers).
    pub nodes: &'a [(String, Ipv4Addr)],
    /// hubble-relay's Observer socket and the UI's.
    pub relay_sockets: (&'a Path, &'a Path),
}

/// The `cilium-config` data.
pub fn config(s: &Settings<'_>) -> BTreeMap<String, String> {
    let mut data: BTreeMap<String, String> = [
        ("identity-allocation-mode", "crd".to_owned()),
        ("k8s-kubeconfig-path", s.kubeconfig.display().to_string()),
        (
            "routing-mode",
            if s.tunnel { "tunnel" } else { "native" }.to_owned(),
        ),
        ("tunnel-protocol", "vxlan".to_owned()),
        ("auto-direct-node-routes", (!s.tunnel).to_string()),
        ("ipv4-native-routing-cidr", s.pod_pool.to_owned()),
        ("enable-endpoint-routes", "true".to_owned()),
        ("kube-proxy-replacement", "true".to_owned()),
        ("enable-bpf-masquerade", "true".to_owned()),
        ("enable-ipv4", "true".to_owned()),
        ("enable-ipv6", "false".to_owned()),
        ("enable-hubble", "true".to_owned()),
        ("ipam", "cluster-pool".to_owned()),
        ("cluster-pool-ipv4-cidr", s.pod_pool.to_owned()),
        ("cluster-pool-ipv4-mask-size", "24".to_owned()),
        ("debug", "false".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (k, v) in s.agent_config {
        data.insert(k.clone(), v.clone());
    }
    data
}

/// The objects, in the order they are applied (a `List`).
pub fn objects(s: &Settings<'_>) -> Value {
    let lab = s.lab_dir.display().to_string();
    let node_dir = format!("{lab}/$(K8S_NODE_NAME)");
    let field = |path: &str| json!({"fieldRef": {"apiVersion": "v1", "fieldPath": path}});
    let tolerate_all = json!([{"operator": "Exists"}]);
    let on_control_plane = json!({"node-role.kubernetes.io/control-plane": ""});
    let config_map = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cilium-config", "namespace": "kube-system"},
        "data": config(s),
    });
    let agent = json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "cilium", "namespace": "kube-system",
                     "labels": {"k8s-app": "cilium", "app.kubernetes.io/name": "cilium-agent",
                                "app.kubernetes.io/part-of": "cilium"}},
        "spec": {
            "selector": {"matchLabels": {"k8s-app": "cilium"}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 2}},
            "template": {
                "metadata": {"labels": {"k8s-app": "cilium", "app.kubernetes.io/name": "cilium-agent",
                                        "app.kubernetes.io/part-of": "cilium"}},
                "spec": {
                    "hostNetwork": true,
                    "priorityClassName": "system-node-critical",
                    "restartPolicy": "Always",
                    "terminationGracePeriodSeconds": 1,
                    "tolerations": tolerate_all,
                    "containers": [{
                        "name": "cilium-agent",
                        "image": format!("quay.io/cilium/cilium:{IMAGE_TAG}"),
                        "command": ["cilium-agent"],
                        "args": [
                            "--config-dir=/tmp/cilium/config-map",
                            format!("--bpf-root={node_dir}/bpffs"),
                            format!("--state-dir={node_dir}/state"),
                            format!("--socket-path={node_dir}/state/cilium.sock"),
                            format!("--hubble-socket-path={node_dir}/state/hubble.sock"),
                            "--k8s-node-name=$(K8S_NODE_NAME)",
                            "--ipv4-node=$(HOST_IP)",
                        ],
                        "env": [
                            {"name": "K8S_NODE_NAME", "valueFrom": field("spec.nodeName")},
                            {"name": "CILIUM_K8S_NAMESPACE", "valueFrom": field("metadata.namespace")},
                            {"name": "HOST_IP", "valueFrom": field("status.hostIP")},
                            // What `kubectl exec ds/cilium -- cilium-dbg ...` reaches.
                            {"name": "CILIUM_SOCK", "value": format!("unix://{node_dir}/state/cilium.sock")},
                            {"name": "CILIUM_BPF_ROOT", "value": format!("{node_dir}/bpffs")},
                        ],
                        "volumeMounts": [{"name": "cilium-config-path", "mountPath": "/tmp/cilium/config-map", "readOnly": true}],
                    }],
                    "volumes": [{"name": "cilium-config-path", "configMap": {"name": "cilium-config"}}],
                },
            },
        },
    });
    let operator_labels = json!({"io.cilium/app": "operator", "name": "cilium-operator",
                                 "app.kubernetes.io/name": "cilium-operator", "app.kubernetes.io/part-of": "cilium"});
    let operator = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "cilium-operator", "namespace": "kube-system", "labels": operator_labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"io.cilium/app": "operator", "name": "cilium-operator"}},
            "template": {
                "metadata": {"labels": operator_labels},
                "spec": {
                    "hostNetwork": true,
                    "priorityClassName": "system-cluster-critical",
                    "nodeSelector": on_control_plane,
                    "tolerations": tolerate_all,
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{
                        "name": "cilium-operator",
                        "image": format!("quay.io/cilium/operator-generic:{IMAGE_TAG}"),
                        "command": ["cilium-operator-generic"],
                        "args": [
                            format!("--k8s-kubeconfig-path={}", s.kubeconfig.display()),
                            format!("--cluster-pool-ipv4-cidr={}", s.pod_pool),
                            "--cluster-pool-ipv4-mask-size=24",
                            "--operator-id=$(K8S_NODE_NAME)-$(POD_NAME)",
                            "--leader-election-lease-duration=10s",
                            "--nodes-gc-interval=10s",
                            "--cilium-endpoint-gc-interval=10s",
                        ],
                        "env": [
                            {"name": "K8S_NODE_NAME", "valueFrom": field("spec.nodeName")},
                            {"name": "POD_NAME", "valueFrom": field("metadata.name")},
                            {"name": "CILIUM_K8S_NAMESPACE", "valueFrom": field("metadata.namespace")},
                        ],
                    }],
                },
            },
        },
    });
    let mut relay_args = vec![
        format!("--listen-address=unix://{}", s.relay_sockets.0.display()),
        "--listen-address=:4245".to_owned(),
        format!("--ui-listen-address=unix://{}", s.relay_sockets.1.display()),
        "--dial-timeout=2s".to_owned(),
    ];
    relay_args.extend(
        s.nodes
            .iter()
            .map(|(name, ip)| format!("--peer={name}={ip}:4244")),
    );
    let relay_labels = json!({"k8s-app": "hubble-relay", "app.kubernetes.io/name": "hubble-relay",
                              "app.kubernetes.io/part-of": "cilium"});
    let relay = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "hubble-relay", "namespace": "kube-system", "labels": relay_labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"k8s-app": "hubble-relay"}},
            "template": {
                "metadata": {"labels": relay_labels},
                "spec": {
                    "hostNetwork": true,
                    "nodeSelector": on_control_plane,
                    "tolerations": tolerate_all,
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{
                        "name": "hubble-relay",
                        "image": format!("quay.io/cilium/hubble-relay:{IMAGE_TAG}"),
                        "command": ["hubble-relay"],
                        "args": relay_args,
                    }],
                },
            },
        },
    });
    json!({"apiVersion": "v1", "kind": "List", "items": [config_map, agent, operator, relay]})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_objects_decode_as_kubernetes_types_and_carry_the_settings() {
        let extra = BTreeMap::from([("debug".to_owned(), "true".to_owned())]);
        let nodes = vec![
            ("k8s-ctr".to_owned(), Ipv4Addr::new(192, 168, 10, 100)),
            ("k8s-w1".to_owned(), Ipv4Addr::new(192, 168, 10, 101)),
        ];
        let s = Settings {
            lab_dir: Path::new("/tmp/lab"),
            kubeconfig: Path::new("/tmp/lab/admin.kubeconfig"),
            pod_pool: "172.20.0.0/16",
            tunnel: false,
            agent_config: &extra,
            nodes: &nodes,
            relay_sockets: (
                Path::new("/tmp/lab/relay.sock"),
                Path::new("/tmp/lab/ui.sock"),
            ),
        };
        let list = objects(&s);
        let items = list["items"].as_array().expect("items");
        let kinds: Vec<&str> = items.iter().filter_map(|i| i["kind"].as_str()).collect();
        assert_eq!(
            kinds,
            ["ConfigMap", "DaemonSet", "Deployment", "Deployment"]
        );
        let cm: k8s_openapi::api::core::v1::ConfigMap =
            serde_json::from_value(items[0].clone()).expect("ConfigMap");
        let data = cm.data.expect("data");
        assert_eq!(data["debug"], "true", "--config wins");
        assert_eq!(data["routing-mode"], "native");
        serde_json::from_value::<k8s_openapi::api::apps::v1::DaemonSet>(items[1].clone())
            .expect("DaemonSet");
        let c = &items[1]["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["name"], "cilium-agent");
        assert!(
            c["args"]
                .as_array()
                .expect("args")
                .iter()
                .any(|a| a == "--state-dir=/tmp/lab/$(K8S_NODE_NAME)/state")
        );
        for d in &items[2..] {
            serde_json::from_value::<k8s_openapi::api::apps::v1::Deployment>(d.clone())
                .expect("Deployment");
        }
        assert!(
            items[3]
                .to_string()
                .contains("--peer=k8s-w1=192.168.10.101:4244")
        );
    }
}
