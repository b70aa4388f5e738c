// SPDX-License-Identifier: Apache-2.0

//! Manifests as `kubectl apply -f` takes them (YAML, several documents), what this lab
//! makes of them (pods from Deployments and Pods, Services, network policies), and where a
//! pod goes (the scheduler: `nodeName`, else the least loaded worker that
//! `podAntiAffinity` allows).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::workload::{self, Workload};

/// One object of a manifest.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    /// A pod to create (from a Pod, or one replica of a Deployment).
    Pod(PodSpec),
    /// A Service.
    Service(Value),
    /// A policy document (CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy,
    /// NetworkPolicy).
    Policy(Value),
}

/// A pod to create.
#[derive(Debug, Clone, PartialEq)]
pub struct PodSpec {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// `spec.nodeName`, when fixed.
    pub node_name: Option<String>,
    /// The Deployment it belongs to.
    pub owner: Option<String>,
    /// `podAntiAffinity` (required) label selectors, with hostname topology.
    pub anti_affinity: Vec<Value>,
    /// What it runs.
    pub workload: Workload,
    /// The Kubernetes Pod object (metadata, spec) as stored.
    pub object: Value,
}

fn kind_error(doc: usize, what: &str) -> String {
    format!("document {doc}: {what}")
}

/// Characters Kubernetes uses in generated names.
const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn safe_suffix(seed: u64, len: usize) -> String {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            SAFE[(x % SAFE.len() as u64) as usize] as char
        })
        .collect()
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ u64::from(std::process::id()).rotate_left(32)
}

fn labels_of(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A pod from a pod template (`metadata`, `spec`).
fn pod_from(
    namespace: &str,
    name: &str,
    template: &Value,
    owner: Option<&str>,
) -> Result<PodSpec, String> {
    let spec = &template["spec"];
    let containers = spec["containers"]
        .as_array()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| format!("pod {namespace}/{name}: spec.containers is empty"))?;
    let image = containers[0]["image"]
        .as_str()
        .ok_or_else(|| format!("pod {namespace}/{name}: the container has no image"))?;
    let ports: Vec<u16> = containers[0]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            p["containerPort"]
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())
        })
        .collect();
    let workload =
        workload::for_image(image, &ports).map_err(|e| format!("pod {namespace}/{name}: {e}"))?;
    let labels = labels_of(&template["metadata"]["labels"]);
    let anti_affinity =
        spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t["topologyKey"] == "kubernetes.io/hostname")
            .map(|t| t["labelSelector"].clone())
            .collect();
    let mut meta = serde_json::json!({"name": name, "namespace": namespace, "labels": labels});
    if let Some(o) = owner {
        meta["ownerReferences"] = serde_json::json!([{"kind": "ReplicaSet", "name": o}]);
    }
    Ok(PodSpec {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        labels,
        node_name: spec["nodeName"].as_str().map(str::to_owned),
        owner: owner.map(str::to_owned),
        anti_affinity,
        workload,
        object: serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta,
            "spec": spec,
            "status": {"phase": "Pending"},
        }),
    })
}

/// Reads a manifest (YAML documents) into the objects to create, in order. Any error names
/// the document; nothing is created from a manifest with an error.
pub fn parse(text: &str, default_namespace: &str) -> Result<Vec<Object>, String> {
    let mut out = Vec::new();
    for (i, de) in serde_norway::Deserializer::from_str(text).enumerate() {
        let doc_no = i + 1;
        let doc = Value::deserialize(de).map_err(|e| kind_error(doc_no, &e.to_string()))?;
        if doc.is_null() {
            continue;
        }
        let kind = doc["kind"].as_str().unwrap_or_default();
        let name = doc["metadata"]["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| kind_error(doc_no, "metadata.name is missing"))?;
        let namespace = doc["metadata"]["namespace"]
            .as_str()
            .unwrap_or(default_namespace)
            .to_owned();
        match kind {
            "Pod" => out.push(Object::Pod(pod_from(&namespace, name, &doc, None)?)),
            "Deployment" => {
                let replicas = doc["spec"]["replicas"].as_u64().unwrap_or(1);
                let template = &doc["spec"]["template"];
                let hash = {
                    use sha2::Digest;
                    let digest = sha2::Sha256::digest(template.to_string().as_bytes());
                    let mut seed = [0u8; 8];
                    seed.copy_from_slice(&digest[..8]);
                    safe_suffix(u64::from_le_bytes(seed), 10)
                };
                let rs = format!("{name}-{hash}");
                let base = seed();
                for r in 0..replicas {
                    let pod_name = format!("{rs}-{}", safe_suffix(base.wrapping_add(r * 7919), 5));
                    out.push(Object::Pod(pod_from(
                        &namespace,
                        &pod_name,
                        template,
                        Some(&rs),
                    )?));
                }
            }
            "Service" => {
                let mut svc = doc.clone();
                svc["metadata"]["namespace"] = Value::from(namespace);
                if svc["spec"]["ports"].as_array().is_none_or(Vec::is_empty) {
                    return Err(kind_error(doc_no, "a Service needs spec.ports"));
                }
                out.push(Object::Service(svc));
            }
            "CiliumNetworkPolicy" | "CiliumClusterwideNetworkPolicy" | "NetworkPolicy" => {
                let mut p = doc.clone();
                if kind != "CiliumClusterwideNetworkPolicy" {
                    p["metadata"]["namespace"] = Value::from(namespace);
                }
                cilium_policy::parse(&p.to_string())
                    .map_err(|e| kind_error(doc_no, &e.to_string()))?;
                out.push(Object::Policy(p));
            }
            other => {
                return Err(kind_error(
                    doc_no,
                    &format!(
                        "kind {other:?} is not supported (Deployment, Pod, Service, CiliumNetworkPolicy, NetworkPolicy)"
                    ),
                ));
            }
        }
    }
    Ok(out)
}

/// Whether labels satisfy a Kubernetes label selector (`matchLabels`, `matchExpressions`
/// with In, NotIn, Exists, DoesNotExist).
pub fn selector_matches(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = selector["matchLabels"].as_object().is_none_or(|m| {
        m.iter()
            .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
    });
    let by_exprs = selector["matchExpressions"].as_array().is_none_or(|exprs| {
        exprs.iter().all(|e| {
            let key = e["key"].as_str().unwrap_or_default();
            let values: Vec<&str> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let have = labels.get(key).map(String::as_str);
            match e["operator"].as_str().unwrap_or_default() {
                "In" => have.is_some_and(|v| values.contains(&v)),
                "NotIn" => have.is_none_or(|v| !values.contains(&v)),
                "Exists" => have.is_some(),
                "DoesNotExist" => have.is_none(),
                _ => false,
            }
        })
    });
    by_labels && by_exprs
}

/// A pod already placed: its namespace, labels and node.
#[derive(Debug, Clone)]
pub struct Placed {
    /// Namespace.
    pub namespace: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Node.
    pub node: String,
}

/// Where a pod goes: its `nodeName`, else the worker (every node but the first, the
/// control plane, unless it is alone) with the fewest pods that its anti-affinity allows.
pub fn schedule(pod: &PodSpec, nodes: &[String], placed: &[Placed]) -> Result<String, String> {
    if let Some(n) = &pod.node_name {
        return if nodes.contains(n) {
            Ok(n.clone())
        } else {
            Err(format!(
                "pod {}/{}: nodeName {n:?} is not a node of this lab",
                pod.namespace, pod.name
            ))
        };
    }
    let workers: Vec<&String> = if nodes.len() > 1 {
        nodes[1..].iter().collect()
    } else {
        nodes.iter().collect()
    };
    let allowed = |node: &String| {
        pod.anti_affinity.iter().all(|sel| {
            !placed.iter().any(|p| {
                &p.node == node && p.namespace == pod.namespace && selector_matches(sel, &p.labels)
            })
        })
    };
    workers
        .into_iter()
        .filter(|n| allowed(n))
        .min_by_key(|n| placed.iter().filter(|p| &p.node == *n).count())
        .cloned()
        .ok_or_else(|| {
            format!(
                "pod {}/{}: 0/{} nodes are available: didn't match pod anti-affinity rules",
                pod.namespace,
                pod.name,
                nodes.len()
            )
        })
}

/// The seed's manifest: the `webpod` Deployment (2 whoami replicas) and Service, and
/// `curl-pod` on k8s-ctr.
pub const SEED: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: webpod
spec:
  replicas: 2
  selector:
    matchLabels:
      app: webpod
  template:
    metadata:
      labels:
        app: webpod
    spec:
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - labelSelector:
              matchExpressions:
              - key: app
                operator: In
                values:
                - sample-app
            topologyKey: "kubernetes.io/hostname"
      containers:
      - name: webpod
        image: traefik/whoami
        ports:
        - containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: webpod
  labels:
    app: webpod
spec:
  selector:
    app: webpod
  ports:
  - protocol: TCP
    port: 80
    targetPort: 80
  type: ClusterIP
---
apiVersion: v1
kind: Pod
metadata:
  name: curl-pod
  labels:
    app: curl
spec:
  nodeName: k8s-ctr
  containers:
  - name: curl
    image: nicolaka/netshoot
    command: ["tail"]
    args: ["-f", "/dev/null"]
  terminationGracePeriodSeconds: 0
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_manifest_parses_into_three_pods_and_a_service() {
        let objects = parse(SEED, "default").unwrap();
        let pods: Vec<&PodSpec> = objects
            .iter()
            .filter_map(|o| {
                if let Object::Pod(p) = o {
                    Some(p)
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(pods.len(), 3);
        assert!(
            pods[0].name.starts_with("webpod-")
                && pods[0].name.len() == "webpod-".len() + 10 + 1 + 5
        );
        assert_ne!(pods[0].name, pods[1].name);
        assert_eq!(pods[0].workload, Workload::Whoami { port: 80 });
        assert_eq!(pods[2].name, "curl-pod");
        assert_eq!(pods[2].node_name.as_deref(), Some("k8s-ctr"));
        assert!(
            objects.iter().any(
                |o| matches!(o, Object::Service(s) if s["metadata"]["namespace"] == "default")
            )
        );
        // Scheduling: curl-pod on k8s-ctr, the replicas spread over the workers.
        let nodes: Vec<String> = ["k8s-ctr", "k8s-w1", "k8s-w2"].map(String::from).to_vec();
        let mut placed = Vec::new();
        for p in &pods {
            let node = schedule(p, &nodes, &placed).unwrap();
            placed.push(Placed {
                namespace: p.namespace.clone(),
                labels: p.labels.clone(),
                node,
            });
        }
        assert_eq!(placed[0].node, "k8s-w1");
        assert_eq!(placed[1].node, "k8s-w2");
        assert_eq!(placed[2].node, "k8s-ctr");
    }

    #[test]
    fn anti_affinity_and_bad_manifests() {
        let text = "kind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 3\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      affinity:\n        podAntiAffinity:\n          requiredDuringSchedulingIgnoredDuringExecution:\n          - labelSelector: {matchLabels: {app: web}}\n            topologyKey: kubernetes.io/hostname\n      containers: [{name: w, image: traefik/whoami}]\n";
        let pods: Vec<PodSpec> = parse(text, "default")
            .unwrap()
            .into_iter()
            .filter_map(|o| {
                if let Object::Pod(p) = o {
                    Some(p)
                } else {
                    None
                }
            })
            .collect();
        let nodes: Vec<String> = ["k8s-ctr", "k8s-w1", "k8s-w2"].map(String::from).to_vec();
        let mut placed = Vec::new();
        for p in &pods[..2] {
            let node = schedule(p, &nodes, &placed).unwrap();
            placed.push(Placed {
                namespace: p.namespace.clone(),
                labels: p.labels.clone(),
                node,
            });
        }
        let err = schedule(&pods[2], &nodes, &placed).unwrap_err();
        assert!(err.contains("anti-affinity"), "{err}");
        for (bad, want) in [
            (
                "kind: Pod\nmetadata: {name: x}\nspec: {containers: [{name: a, image: nginx}]}\n",
                "nginx",
            ),
            ("kind: ConfigMap\nmetadata: {name: x}\n", "ConfigMap"),
            ("kind: Pod\nmetadata: {}\n", "metadata.name"),
            (
                "kind: Service\nmetadata: {name: s}\nspec: {}\n",
                "spec.ports",
            ),
            ("kind: [\n", "document 1"),
        ] {
            let err = parse(bad, "default").unwrap_err();
            assert!(err.contains(want), "{bad}: {err}");
        }
    }
}
