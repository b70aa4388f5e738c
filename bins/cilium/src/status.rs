// SPDX-License-Identifier: Apache-2.0

//! `cilium status`: upstream cilium-cli's summary of an install. The health of the agent
//! DaemonSet and the operator and hubble-relay Deployments (desired / ready / available),
//! their containers by phase, the cluster's pods managed by Cilium (those with a
//! CiliumEndpoint), the images in use, and the errors and warnings of every agent's own
//! status (`cilium-dbg status -o json` run in each agent pod, as upstream does).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, ListParams};
use serde::Serialize;

use crate::install::{AGENT_SELECTOR, NAMESPACE, OPERATOR_SELECTOR, RELAY_SELECTOR};

/// The counts of a DaemonSet or Deployment.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Workload {
    /// `DaemonSet` or `Deployment`.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Pods wanted.
    pub desired: i32,
    /// Pods ready.
    pub ready: i32,
    /// Pods available.
    pub available: i32,
    /// Pods not available.
    pub unavailable: i32,
    /// Pods by phase (`Running`, `Pending`...).
    pub phases: BTreeMap<String, i32>,
    /// Images in use and how many pods run each.
    pub images: BTreeMap<String, i32>,
}

/// The whole status.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    /// The agents, the operator and hubble-relay (absent when not installed).
    pub workloads: Vec<Workload>,
    /// `OK`, `error` or `disabled` per component (`cilium`, `operator`, `hubble-relay`).
    pub summary: BTreeMap<String, String>,
    /// Pods that are not on the host network, and how many of them have a CiliumEndpoint.
    pub cluster_pods: (usize, usize),
    /// The version the install recorded.
    pub version: Option<String>,
    /// Errors, by the pod or object they come from.
    pub errors: BTreeMap<String, Vec<String>>,
    /// Warnings, likewise.
    pub warnings: BTreeMap<String, Vec<String>>,
}

impl Status {
    /// Whether every installed component is healthy and no error was seen.
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
            && !self.workloads.is_empty()
            && self.summary.values().all(|s| s == "OK" || s == "disabled")
    }
}

fn pod_counts(pods: &[Pod], w: &mut Workload, container: &str) {
    for p in pods {
        let phase = p
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Pending".into());
        *w.phases.entry(phase).or_default() += 1;
        for c in p.spec.iter().flat_map(|s| s.containers.iter()) {
            if c.name == container
                && let Some(image) = &c.image
            {
                *w.images.entry(image.clone()).or_default() += 1;
            }
        }
    }
}

async fn pods(client: &kube::Client, selector: &str) -> Result<Vec<Pod>, String> {
    Api::<Pod>::namespaced(client.clone(), NAMESPACE)
        .list(&ListParams::default().labels(selector))
        .await
        .map(|l| l.items)
        .map_err(|e| format!("listing pods {selector}: {e}"))
}

/// Collects the status (`agent_checks`: also run `cilium-dbg status` in every agent).
pub async fn collect(client: &kube::Client, agent_checks: bool) -> Result<Status, String> {
    let mut st = Status::default();
    if let Some(cm) = crate::cluster::config_map(client).await? {
        st.version = crate::cluster::recorded(&cm).1;
    }
    let ds_api: Api<DaemonSet> = Api::namespaced(client.clone(), NAMESPACE);
    let deploy_api: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    // The agents.
    match ds_api.get_opt("cilium").await.map_err(|e| e.to_string())? {
        None => {
            st.summary.insert("cilium".into(), "error".into());
            st.errors
                .entry("cilium".into())
                .or_default()
                .push("daemonsets.apps \"cilium\" not found".into());
        }
        Some(ds) => {
            let s = ds.status.unwrap_or_default();
            let mut w = Workload {
                kind: "DaemonSet".into(),
                name: "cilium".into(),
                desired: s.desired_number_scheduled,
                ready: s.number_ready,
                available: s.number_available.unwrap_or(0),
                unavailable: s.number_unavailable.unwrap_or(0),
                ..Workload::default()
            };
            let agents = pods(client, AGENT_SELECTOR).await?;
            pod_counts(&agents, &mut w, "cilium-agent");
            let healthy = w.desired > 0 && w.ready == w.desired && w.unavailable == 0;
            if !healthy {
                st.errors.entry("cilium".into()).or_default().push(format!(
                    "{} pods of DaemonSet cilium are not ready",
                    (w.desired - w.ready).max(w.unavailable).max(1)
                ));
            }
            if agent_checks {
                for p in &agents {
                    agent_findings(client, p, &mut st).await;
                }
            }
            st.summary
                .insert("cilium".into(), if healthy { "OK" } else { "error" }.into());
            st.workloads.push(w);
        }
    }
    for (name, selector, container) in [
        ("cilium-operator", OPERATOR_SELECTOR, "cilium-operator"),
        ("hubble-relay", RELAY_SELECTOR, "hubble-relay"),
    ] {
        let key = if name == "cilium-operator" {
            "operator"
        } else {
            name
        };
        match deploy_api.get_opt(name).await.map_err(|e| e.to_string())? {
            None if name == "hubble-relay" => {
                st.summary.insert(key.into(), "disabled".into());
            }
            None => {
                st.summary.insert(key.into(), "error".into());
                st.errors
                    .entry(name.into())
                    .or_default()
                    .push(format!("deployments.apps \"{name}\" not found"));
            }
            Some(d) => {
                let s = d.status.unwrap_or_default();
                let mut w = Workload {
                    kind: "Deployment".into(),
                    name: name.into(),
                    desired: d.spec.replicas.unwrap_or(1),
                    ready: s.ready_replicas.unwrap_or(0),
                    available: s.available_replicas.unwrap_or(0),
                    unavailable: s.unavailable_replicas.unwrap_or(0),
                    ..Workload::default()
                };
                pod_counts(&pods(client, selector).await?, &mut w, container);
                let healthy = w.ready >= w.desired && w.unavailable == 0;
                if !healthy {
                    st.errors.entry(name.into()).or_default().push(format!(
                        "{} pods of Deployment {name} are not ready",
                        (w.desired - w.ready).max(1)
                    ));
                }
                st.summary
                    .insert(key.into(), if healthy { "OK" } else { "error" }.into());
                st.workloads.push(w);
            }
        }
    }
    st.cluster_pods = managed_pods(client).await?;
    Ok(st)
}

/// The non-components of an agent's status that are not OK, as errors (`Failure`) or
/// warnings (anything else but `Ok` and `Disabled`).
pub fn findings(status: &serde_json::Value) -> (Vec<String>, Vec<String>) {
    let (mut errors, mut warnings) = (Vec::new(), Vec::new());
    if let Some(components) = status.as_object() {
        for (name, c) in components {
            let Some(state) = c.get("state").and_then(|s| s.as_str()) else {
                continue;
            };
            let msg = c.get("msg").and_then(|m| m.as_str()).unwrap_or_default();
            match state {
                "Ok" | "Disabled" => {}
                "Failure" => errors.push(format!("{name}: {msg}")),
                other => warnings.push(format!("{name}: {other} {msg}")),
            }
        }
    }
    (errors, warnings)
}

async fn agent_findings(client: &kube::Client, pod: &Pod, st: &mut Status) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let key = format!("cilium/{name}");
    let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    if !running {
        st.errors
            .entry(key)
            .or_default()
            .push("the pod is not running".into());
        return;
    }
    let out = crate::cluster::exec(
        client,
        NAMESPACE,
        &name,
        "cilium-agent",
        &["cilium-dbg", "status", "-o", "json"],
        Duration::from_secs(10),
    )
    .await;
    match out.and_then(|o| {
        serde_json::from_str::<serde_json::Value>(&o)
            .map_err(|e| format!("cilium-dbg status: not JSON: {e}"))
    }) {
        Ok(v) => {
            let (errors, warnings) = findings(&v);
            if !errors.is_empty() {
                st.errors.entry(key.clone()).or_default().extend(errors);
            }
            if !warnings.is_empty() {
                st.warnings.entry(key).or_default().extend(warnings);
            }
        }
        Err(e) => st.errors.entry(key).or_default().push(e),
    }
}

async fn managed_pods(client: &kube::Client) -> Result<(usize, usize), String> {
    let all = Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("listing pods: {e}"))?;
    let candidates: Vec<(String, String)> = all
        .items
        .iter()
        .filter(|p| {
            p.spec.as_ref().and_then(|s| s.host_network) != Some(true)
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
        .map(|p| {
            (
                p.metadata.namespace.clone().unwrap_or_default(),
                p.metadata.name.clone().unwrap_or_default(),
            )
        })
        .collect();
    let ceps = cilium_k8s::crds::find("CiliumEndpoint").map(|crd| {
        let resource = kube::api::ApiResource {
            group: "cilium.io".into(),
            version: "v2".into(),
            api_version: "cilium.io/v2".into(),
            kind: crd.kind.into(),
            plural: crd.plural.into(),
        };
        Api::<DynamicObject>::all_with(client.clone(), &resource)
    });
    let mut managed = 0;
    if let Some(api) = ceps {
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("listing CiliumEndpoints: {e}"))?;
        let names: std::collections::HashSet<(String, String)> = list
            .items
            .iter()
            .map(|c| {
                (
                    c.metadata.namespace.clone().unwrap_or_default(),
                    c.metadata.name.clone().unwrap_or_default(),
                )
            })
            .collect();
        managed = candidates.iter().filter(|c| names.contains(c)).count();
    }
    Ok((candidates.len(), managed))
}

/// Upstream's text layout.
pub fn render(st: &Status) -> String {
    let get = |k: &str| st.summary.get(k).map(String::as_str).unwrap_or("disabled");
    let mut out = String::new();
    let logo = [
        "    /¯¯\\",
        " /¯¯\\__/¯¯\\",
        " \\__/¯¯\\__/",
        " /¯¯\\__/¯¯\\",
        " \\__/¯¯\\__/",
        "    \\__/",
    ];
    let lines = [
        format!("Cilium:             {}", get("cilium")),
        format!("Operator:           {}", get("operator")),
        "Envoy DaemonSet:    disabled (using embedded mode)".to_owned(),
        format!("Hubble Relay:       {}", get("hubble-relay")),
        "ClusterMesh:        disabled".to_owned(),
    ];
    for (i, l) in logo.iter().enumerate() {
        let text = if i == 0 {
            ""
        } else {
            lines.get(i - 1).map_or("", String::as_str)
        };
        out.push_str(format!("{l:<15}{text}").trim_end());
        out.push('\n');
    }
    out.push('\n');
    for w in &st.workloads {
        out.push_str(&format!(
            "{:<23}{:<25}Desired: {}, Ready: {}/{}, Available: {}/{}{}\n",
            w.kind,
            w.name,
            w.desired,
            w.ready,
            w.desired,
            w.available,
            w.desired,
            if w.unavailable > 0 {
                format!(", Unavailable: {}/{}", w.unavailable, w.desired)
            } else {
                String::new()
            }
        ));
    }
    let mut first = true;
    for w in &st.workloads {
        let phases: Vec<String> = w.phases.iter().map(|(p, n)| format!("{p}: {n}")).collect();
        out.push_str(&format!(
            "{:<23}{:<25}{}\n",
            if first { "Containers:" } else { "" },
            container_name(&w.name),
            phases.join(", ")
        ));
        first = false;
    }
    out.push_str(&format!(
        "{:<23}{}/{} managed by Cilium\n",
        "Cluster Pods:", st.cluster_pods.1, st.cluster_pods.0
    ));
    if let Some(v) = &st.version {
        out.push_str(&format!(
            "{:<23}{}\n",
            "Helm chart version:",
            v.trim_start_matches('v')
        ));
    }
    let mut first = true;
    for w in &st.workloads {
        for (image, n) in &w.images {
            out.push_str(&format!(
                "{:<23}{:<19}{image}: {n}\n",
                if first { "Image versions" } else { "" },
                container_name(&w.name)
            ));
            first = false;
        }
    }
    for (title, map) in [("Errors:", &st.errors), ("Warnings:", &st.warnings)] {
        let mut first = true;
        for (source, items) in map {
            for item in items {
                out.push_str(&format!(
                    "{:<23}{:<25}{item}\n",
                    if first { title } else { "" },
                    source
                ));
                first = false;
            }
        }
    }
    out
}

fn container_name(workload: &str) -> &str {
    workload
}

/// The status as JSON (`-o json`).
pub fn to_json(st: &Status) -> serde_json::Value {
    serde_json::json!({
        "cilium": st.summary.get("cilium"),
        "operator": st.summary.get("operator"),
        "hubble_relay": st.summary.get("hubble-relay"),
        "workloads": st.workloads,
        "cluster_pods": {"total": st.cluster_pods.0, "managed": st.cluster_pods.1},
        "version": st.version,
        "errors": st.errors,
        "warnings": st.warnings,
        "ok": st.ok(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agents_failures_are_errors_and_its_other_states_warnings() {
        let v = serde_json::json!({
            "cilium": {"state": "Ok", "msg": "cilium-rs"},
            "kubernetes": {"state": "Failure", "msg": "apiserver unreachable"},
            "kvstore": {"state": "Disabled"},
            "hubble": {"state": "Warning", "msg": "ring full"},
            "nodeMonitor": 3,
        });
        let (errors, warnings) = findings(&v);
        assert_eq!(errors, ["kubernetes: apiserver unreachable"]);
        assert_eq!(warnings, ["hubble: Warning ring full"]);
    }

    #[test]
    fn the_text_has_upstreams_lines() {
        let mut st = Status::default();
        st.summary.insert("cilium".into(), "OK".into());
        st.summary.insert("operator".into(), "OK".into());
        st.summary.insert("hubble-relay".into(), "disabled".into());
        st.workloads.push(Workload {
            kind: "DaemonSet".into(),
            name: "cilium".into(),
            desired: 3,
            ready: 3,
            available: 3,
            phases: BTreeMap::from([("Running".into(), 3)]),
            images: BTreeMap::from([("quay.io/cilium/cilium:v1.17.5".into(), 3)]),
            ..Workload::default()
        });
        st.cluster_pods = (5, 5);
        let text = render(&st);
        assert!(
            text.contains(" /¯¯\\__/¯¯\\    Cilium:             OK"),
            "{text}"
        );
        assert!(text.contains("Hubble Relay:       disabled"), "{text}");
        assert!(
            text.contains("DaemonSet              cilium                   Desired: 3, Ready: 3/3, Available: 3/3"),
            "{text}"
        );
        assert!(
            text.contains("Containers:            cilium                   Running: 3"),
            "{text}"
        );
        assert!(
            text.contains("Cluster Pods:          5/5 managed by Cilium"),
            "{text}"
        );
        assert!(st.ok());
    }
}
