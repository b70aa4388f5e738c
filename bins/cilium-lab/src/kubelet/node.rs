// SPDX-License-Identifier: Apache-2.0

//! The kubelet's Node: registered as kubeadm's kubelets register theirs (hostname, OS and
//! architecture labels; on the control plane its role label and `NoSchedule` taint),
//! its status (addresses, capacity, conditions, versions, the kubelet's port and the
//! features it declares) and its Lease in `kube-node-lease`, renewed every 10 s: the node
//! lifecycle controller reads the Lease as the heartbeat.

use std::net::Ipv4Addr;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// The version the Node reports for its kubelet (the control plane's release).
pub const KUBELET_VERSION: &str = "v1.37.2";
/// How long a node's Lease lasts (as upstream's kubelet: 40 s, renewed every 10 s).
pub const LEASE_DURATION_SECONDS: i32 = 40;
/// The feature that makes the apiserver pass exec and logs WebSockets to the kubelet as
/// they are (instead of translating them to SPDY, which this kubelet does not serve).
pub const WEBSOCKETS_FEATURE: &str = "ExtendWebSocketsToKubelet";
/// The control plane's role label and taint key.
pub const CONTROL_PLANE_ROLE: &str = "node-role.kubernetes.io/control-plane";

/// What the Node says about itself.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// Its name.
    pub name: String,
    /// Its InternalIP.
    pub ip: Ipv4Addr,
    /// The control-plane node (role label and taint).
    pub control_plane: bool,
    /// The kubelet API's port.
    pub port: u16,
    /// Pods the node takes (capacity).
    pub max_pods: u32,
    /// Whether the node has a network configuration (`NetworkReady`): a node without is
    /// not Ready.
    pub network_ready: bool,
}

/// The current time as Kubernetes writes it (`2026-12-05T01:02:03Z`).
pub fn now_rfc3339() -> String {
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{}Z", &cilium_core::rfc3339(ns)[..19])
}

/// The current time with microseconds (a Lease's `renewTime`).
pub fn now_micro() -> String {
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!(
        "{}.{:06}Z",
        &cilium_core::rfc3339(ns)[..19],
        (ns % 1_000_000_000) / 1000
    )
}

fn api_err(what: &str) -> impl FnOnce(kube::Error) -> String {
    let what = what.to_owned();
    move |e| format!("{what}: {e}")
}

/// The Node object's metadata and spec as this kubelet registers it.
pub fn node_object(info: &NodeInfo) -> Value {
    let mut labels = json!({
        "kubernetes.io/hostname": info.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
        "beta.kubernetes.io/os": "linux",
    });
    let mut spec = json!({});
    if info.control_plane {
        labels[CONTROL_PLANE_ROLE] = json!("");
        labels["node.kubernetes.io/exclude-from-external-load-balancers"] = json!("");
        spec["taints"] = json!([{"key": CONTROL_PLANE_ROLE, "effect": "NoSchedule"}]);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": info.name, "labels": labels},
        "spec": spec,
    })
}

/// The Node's status as this kubelet reports it (Ready).
pub fn node_status(info: &NodeInfo) -> Value {
    let now = now_rfc3339();
    let condition = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({"type": kind, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    let resources = json!({"cpu": "2", "memory": "4Gi", "pods": info.max_pods.to_string(),
                           "ephemeral-storage": "20Gi"});
    json!({"status": {
        "addresses": [
            {"type": "InternalIP", "address": info.ip.to_string()},
            {"type": "Hostname", "address": info.name},
        ],
        "capacity": resources,
        "allocatable": resources,
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            if info.network_ready {
                condition("Ready", "True", "KubeletReady", "kubelet is posting ready status")
            } else {
                condition("Ready", "False", "KubeletNotReady", crate::kubelet::cni::NOT_READY)
            },
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": info.port}},
        "declaredFeatures": [WEBSOCKETS_FEATURE],
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": "",
            "kernelVersion": kernel_version(),
            "osImage": "cilium-rs lab node", "operatingSystem": "linux",
            "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
            "containerRuntimeVersion": "cilium-lab://0.1.0",
            "kubeletVersion": KUBELET_VERSION, "kubeProxyVersion": "",
        },
    }})
}

fn kernel_version() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Registers the Node (creates it with its labels and taints, or sets this kubelet's
/// labels on the one there is, as a kubelet that restarts does) and reports its status.
pub async fn register(client: &kube::Client, info: &NodeInfo) -> Result<(), String> {
    let api: Api<Node> = Api::all(client.clone());
    let object = node_object(info);
    if api
        .get_opt(&info.name)
        .await
        .map_err(api_err("reading the Node"))?
        .is_none()
    {
        let node: Node = serde_json::from_value(object.clone()).map_err(|e| e.to_string())?;
        match api.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(format!("creating the Node: {e}")),
        }
    }
    // Labels only: the taints were set at creation, and since then others (the node
    // lifecycle controller's, an administrator's) may have joined them.
    api.patch(
        &info.name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": object["metadata"]})),
    )
    .await
    .map_err(api_err("labelling the Node"))?;
    report_status(client, info).await
}

/// Reports the Node's status (addresses, conditions with a fresh heartbeat, ...).
pub async fn report_status(client: &kube::Client, info: &NodeInfo) -> Result<(), String> {
    let api: Api<Node> = Api::all(client.clone());
    api.patch_status(
        &info.name,
        &PatchParams::default(),
        &Patch::Merge(node_status(info)),
    )
    .await
    .map(|_| ())
    .map_err(api_err("reporting the Node's status"))
}

/// Creates or renews the node's Lease in `kube-node-lease` (owned by the Node, so it goes
/// with it).
pub async fn renew_lease(client: &kube::Client, node: &str) -> Result<(), String> {
    let api: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let spec = json!({"holderIdentity": node, "leaseDurationSeconds": LEASE_DURATION_SECONDS,
                      "renewTime": now_micro()});
    match api
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": spec})),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => {
            let uid = Api::<Node>::all(client.clone())
                .get(node)
                .await
                .map_err(api_err("reading the Node"))?
                .metadata
                .uid
                .unwrap_or_default();
            let lease: Lease = serde_json::from_value(json!({
                "metadata": {"name": node, "namespace": "kube-node-lease",
                    "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": uid}]},
                "spec": spec,
            }))
            .map_err(|e| e.to_string())?;
            api.create(&PostParams::default(), &lease)
                .await
                .map(|_| ())
                .map_err(api_err("creating the node's Lease"))
        }
        Err(e) => Err(format!("renewing the node's Lease: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(control_plane: bool) -> NodeInfo {
        NodeInfo {
            name: "k8s-ctr".into(),
            ip: Ipv4Addr::new(192, 168, 10, 100),
            control_plane,
            port: 10250,
            max_pods: 110,
            network_ready: true,
        }
    }

    #[test]
    fn the_control_plane_is_labelled_and_tainted_as_kubeadm_does() {
        let ctr = node_object(&info(true));
        assert_eq!(ctr["metadata"]["labels"][CONTROL_PLANE_ROLE], "");
        assert_eq!(ctr["spec"]["taints"][0]["effect"], "NoSchedule");
        let w = node_object(&info(false));
        assert!(w["metadata"]["labels"].get(CONTROL_PLANE_ROLE).is_none());
        assert!(w["spec"].get("taints").is_none());
        assert_eq!(w["metadata"]["labels"]["kubernetes.io/hostname"], "k8s-ctr");
        // The objects decode as Kubernetes' types.
        serde_json::from_value::<Node>(ctr).expect("a Node");
    }

    #[test]
    fn status_declares_the_websocket_feature_and_the_port() {
        let s = node_status(&info(false));
        assert_eq!(
            s["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"],
            10250
        );
        assert_eq!(s["status"]["declaredFeatures"][0], WEBSOCKETS_FEATURE);
        assert_eq!(s["status"]["addresses"][0]["address"], "192.168.10.100");
        let ready = &s["status"]["conditions"][3];
        assert_eq!(
            (ready["type"].as_str(), ready["status"].as_str()),
            (Some("Ready"), Some("True"))
        );
        // Without a network plugin: NotReady, as a kubelet says it.
        let mut no_cni = info(false);
        no_cni.network_ready = false;
        let s = node_status(&no_cni);
        let ready = &s["status"]["conditions"][3];
        assert_eq!(ready["status"], "False");
        assert!(
            ready["message"]
                .as_str()
                .unwrap()
                .contains("NetworkReady=false")
        );
    }

    #[test]
    fn times_are_as_kubernetes_writes_them() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.ends_with('Z'));
        let m = now_micro();
        assert_eq!(m.len(), 27, "{m}");
    }
}
