// SPDX-License-Identifier: Apache-2.0

//! `cilium-lab get`: the lab's objects with kubectl's columns, or as JSON.

use std::io::Write;

use cilium_core::cluster::{CILIUM_NODES_PREFIX, PODS_PREFIX, SERVICES_PREFIX};
use serde_json::Value;

use crate::lab::{Lab, LabState};

/// The kinds `get` knows, with their short names.
pub fn kind_of(text: &str) -> Option<&'static str> {
    Some(match text {
        "nodes" | "node" | "no" => "nodes",
        "pods" | "pod" | "po" => "pods",
        "svc" | "services" | "service" => "svc",
        "ciliumnodes" | "ciliumnode" | "cn" => "ciliumnodes",
        "ciliumendpoints" | "ciliumendpoint" | "cep" => "ciliumendpoints",
        "ciliumidentities" | "ciliumidentity" | "ciliumid" => "ciliumidentities",
        _ => return None,
    })
}

fn age(since: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let s = now.saturating_sub(since);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        _ => format!("{}h", s / 3600),
    }
}

fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut tw = tabwriter::TabWriter::new(Vec::new()).padding(3);
    let _ = writeln!(tw, "{}", header.join("\t"));
    for r in rows {
        let _ = writeln!(tw, "{}", r.join("\t"));
    }
    let _ = tw.flush();
    String::from_utf8(tw.into_inner().unwrap_or_default()).unwrap_or_default()
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "<none>".into(),
        other => other.to_string(),
    }
}

/// The objects of a kind (JSON, Kubernetes-shaped) in `namespace` (all when `None`).
pub fn objects(
    state: &LabState,
    kind: &str,
    namespace: Option<&str>,
) -> Result<Vec<Value>, String> {
    let in_ns = |v: &Value| namespace.is_none_or(|ns| v["metadata"]["namespace"] == ns);
    Ok(match kind {
        "nodes" => state
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let ready = n.client().call("GET", "/healthz", None).is_ok();
                let mut labels = serde_json::json!({"kubernetes.io/hostname": n.name});
                if i == 0 {
                    labels["node-role.kubernetes.io/control-plane"] = Value::from("");
                }
                serde_json::json!({
                    "apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": n.name, "labels": labels, "creationTimestamp": state.created},
                    "status": {
                        "addresses": [{"type": "InternalIP", "address": n.ip.to_string()}],
                        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
                        "nodeInfo": {"kubeletVersion": concat!("cilium-rs-", env!("CARGO_PKG_VERSION"))},
                    },
                })
            })
            .collect(),
        "pods" => Lab::list(state, PODS_PREFIX)?
            .into_iter()
            .map(|(_, v)| v)
            .filter(|v| in_ns(v))
            .collect(),
        "svc" => Lab::list(state, SERVICES_PREFIX)?
            .into_iter()
            .map(|(_, v)| v)
            .filter(|v| in_ns(v))
            .collect(),
        "ciliumnodes" => Lab::list(state, CILIUM_NODES_PREFIX)?
            .into_iter()
            .map(|(_, mut v)| {
                // CILIUMINTERNALIP: the node's router address (cilium_host).
                let name = v["metadata"]["name"].as_str().unwrap_or_default().to_owned();
                if let Some(n) = state.nodes.iter().find(|n| n.name == name)
                    && let Ok(h) = n.client().call("GET", "/healthz", None)
                    && let Some(r) = h["node-state"]["node"]["router"].as_str()
                    && let Some(addrs) = v["spec"]["addresses"].as_array_mut()
                {
                    addrs.push(serde_json::json!({"type": "CiliumInternalIP", "ip": r}));
                }
                v
            })
            .collect(),
        "ciliumendpoints" => {
            let mut out = Vec::new();
            for n in &state.nodes {
                let Ok(list) = n.client().call("GET", "/endpoint", None) else { continue };
                for ep in list.as_array().into_iter().flatten() {
                    let net = &ep["status"]["networking"];
                    let ns = ep["status"]["external-identifiers"]["k8s-namespace"].as_str().unwrap_or("default");
                    let pod = ep["status"]["external-identifiers"]["k8s-pod-name"].as_str().unwrap_or_default();
                    let object = serde_json::json!({
                        "apiVersion": "cilium.io/v2", "kind": "CiliumEndpoint",
                        "metadata": {"name": pod, "namespace": ns},
                        "status": {
                            "id": ep["id"],
                            "identity": {"id": ep["status"]["identity"]["id"], "labels": ep["status"]["identity"]["labels"]},
                            "networking": {"addressing": net["addressing"], "node": n.ip.to_string()},
                            "state": ep["status"]["state"],
                            "policy": ep["status"]["policy"],
                        },
                    });
                    if in_ns(&object) {
                        out.push(object);
                    }
                }
            }
            out
        }
        "ciliumidentities" => Lab::with_store(state, |store| {
            Box::pin(async move {
                use cilium_core::kvstore::KvStore;
                let ids = store
                    .list_prefix("cilium/state/identities/v1/id/")
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(ids
                    .into_iter()
                    .filter_map(|(k, v)| {
                        let id = k.rsplit('/').next()?.to_owned();
                        let labels = String::from_utf8_lossy(&v).into_owned();
                        let ns = labels
                            .split(';')
                            .find_map(|l| l.strip_prefix("k8s:io.kubernetes.pod.namespace="))
                            .unwrap_or_default()
                            .to_owned();
                        let security_labels: serde_json::Map<String, Value> = labels
                            .split(';')
                            .filter(|l| !l.is_empty())
                            .filter_map(|l| l.split_once('=').map(|(a, b)| (a.to_owned(), Value::from(b))))
                            .collect();
                        Some(serde_json::json!({
                            "apiVersion": "cilium.io/v2", "kind": "CiliumIdentity",
                            "metadata": {"name": id, "labels": {"io.kubernetes.pod.namespace": ns}},
                            "security-labels": security_labels,
                        }))
                    })
                    .collect())
            })
        })?,
        other => return Err(format!("unknown kind {other:?}")),
    })
}

/// The table (or JSON) `get` prints.
pub fn render(state: &LabState, kind: &str, items: &[Value], wide: bool, json: bool) -> String {
    if json {
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
        return format!("{list:#}\n");
    }
    let pod_created = |ns: &str, name: &str| {
        state
            .pods
            .iter()
            .find(|p| p.namespace == ns && p.name == name)
            .map_or_else(|| "-".to_owned(), |p| age(p.created))
    };
    let (header, rows): (Vec<&str>, Vec<Vec<String>>) = match kind {
        "nodes" => {
            let mut h = vec!["NAME", "STATUS", "ROLES", "AGE", "VERSION"];
            if wide {
                h.push("INTERNAL-IP");
            }
            let rows = items
                .iter()
                .map(|n| {
                    let ready = n["status"]["conditions"][0]["status"] == "True";
                    let role = if n["metadata"]["labels"]["node-role.kubernetes.io/control-plane"]
                        .is_string()
                    {
                        "control-plane"
                    } else {
                        "<none>"
                    };
                    let mut r = vec![
                        text(&n["metadata"]["name"]),
                        if ready { "Ready" } else { "NotReady" }.into(),
                        role.into(),
                        age(state.created),
                        text(&n["status"]["nodeInfo"]["kubeletVersion"]),
                    ];
                    if wide {
                        r.push(text(&n["status"]["addresses"][0]["address"]));
                    }
                    r
                })
                .collect();
            (h, rows)
        }
        "pods" => {
            let mut h = vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"];
            if wide {
                h.extend(["IP", "NODE"]);
            }
            let rows = items
                .iter()
                .map(|p| {
                    let running = p["status"]["phase"] == "Running";
                    let mut r = vec![
                        text(&p["metadata"]["name"]),
                        if running { "1/1" } else { "0/1" }.into(),
                        text(&p["status"]["phase"]),
                        "0".into(),
                        pod_created(
                            p["metadata"]["namespace"].as_str().unwrap_or_default(),
                            p["metadata"]["name"].as_str().unwrap_or_default(),
                        ),
                    ];
                    if wide {
                        r.push(text(&p["status"]["podIP"]));
                        r.push(text(&p["spec"]["nodeName"]));
                    }
                    r
                })
                .collect();
            (h, rows)
        }
        "svc" => (
            vec![
                "NAME",
                "TYPE",
                "CLUSTER-IP",
                "EXTERNAL-IP",
                "PORT(S)",
                "AGE",
            ],
            items
                .iter()
                .map(|s| {
                    let ports: Vec<String> = s["spec"]["ports"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|p| {
                            format!(
                                "{}/{}",
                                text(&p["port"]),
                                p["protocol"].as_str().unwrap_or("TCP")
                            )
                        })
                        .collect();
                    vec![
                        text(&s["metadata"]["name"]),
                        text(&s["spec"]["type"]),
                        text(&s["spec"]["clusterIP"]),
                        "<none>".into(),
                        ports.join(","),
                        age(state.created),
                    ]
                })
                .collect(),
        ),
        "ciliumnodes" => (
            vec!["NAME", "CILIUMINTERNALIP", "INTERNALIP", "AGE"],
            items
                .iter()
                .map(|n| {
                    let addr = |kind: &str| {
                        n["spec"]["addresses"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .find(|a| a["type"] == kind)
                            .map_or_else(|| "<none>".to_owned(), |a| text(&a["ip"]))
                    };
                    vec![
                        text(&n["metadata"]["name"]),
                        addr("CiliumInternalIP"),
                        addr("InternalIP"),
                        age(state.created),
                    ]
                })
                .collect(),
        ),
        "ciliumendpoints" => {
            let mut h = vec![
                "NAME",
                "SECURITY IDENTITY",
                "ENDPOINT STATE",
                "IPV4",
                "IPV6",
            ];
            if wide {
                h = vec![
                    "NAME",
                    "SECURITY IDENTITY",
                    "INGRESS ENFORCEMENT",
                    "EGRESS ENFORCEMENT",
                    "ENDPOINT STATE",
                    "IPV4",
                    "IPV6",
                ];
            }
            let rows = items
                .iter()
                .map(|e| {
                    let st = &e["status"];
                    let ipv4 = st["networking"]["addressing"][0]["ipv4"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    let enabled = st["policy"]["realized"]["policy-enabled"]
                        .as_str()
                        .unwrap_or("none");
                    let on = |d: &str| {
                        if enabled == "both" || enabled == d {
                            "true".to_owned()
                        } else {
                            String::new()
                        }
                    };
                    let mut r = vec![text(&e["metadata"]["name"]), text(&st["identity"]["id"])];
                    if wide {
                        r.push(on("ingress"));
                        r.push(on("egress"));
                    }
                    r.extend([text(&st["state"]), ipv4, String::new()]);
                    r
                })
                .collect();
            (h, rows)
        }
        _ => (
            vec!["NAME", "NAMESPACE", "AGE"],
            items
                .iter()
                .map(|i| {
                    vec![
                        text(&i["metadata"]["name"]),
                        text(&i["metadata"]["labels"]["io.kubernetes.pod.namespace"]),
                        age(state.created),
                    ]
                })
                .collect(),
        ),
    };
    if rows.is_empty() {
        return "No resources found.\n".into();
    }
    table(&header, &rows)
}
