// SPDX-License-Identifier: Apache-2.0

//! CiliumEndpoints (Kubernetes mode): one object per local endpoint of a pod, named and
//! namespaced as the pod, owned by it (so Kubernetes' garbage collector removes it with the
//! pod), with the endpoint's id, identity, state, addresses and node IP in `status`, as
//! Cilium's agent writes them. Other nodes learn this node's pods (ipcache) from them, and
//! `kubectl get ciliumendpoints` shows them.
//!
//! A loop keeps them in line with the endpoints: woken by each endpoint change, it writes
//! what differs from what it last wrote (server-side apply, field manager `cilium-agent`)
//! and deletes the objects of endpoints that are gone; every [`RESYNC`] it writes them all
//! again, so one deleted by someone else comes back. At start it
//! adopts the objects an earlier run of this node wrote (their `status.networking.node` is
//! this node's IP): the ones of restored endpoints are rewritten, the others deleted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use serde_json::{Value, json};

use super::Node;
use crate::endpoint::EndpointRecord;

/// How often every object is written again without an endpoint change (one deleted behind
/// the agent's back comes back; a server-side apply that changes nothing costs one request).
pub(crate) const RESYNC: Duration = Duration::from_secs(10);

/// The field manager of the agent's writes.
const MANAGER: &str = "cilium-agent";

fn resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        cilium_k8s::crds::GROUP,
        cilium_k8s::crds::VERSION,
        "CiliumEndpoint",
    ))
}

fn log(level: &str, msg: &str, fields: &str) {
    eprintln!("level={level} subsys=ciliumendpoint-sync msg=\"{msg}\" {fields}");
}

/// The `status` of an endpoint's CiliumEndpoint (upstream's field names; no `policy`,
/// as Cilium without `endpoint-status=policy`).
pub(crate) fn status(ep: &EndpointRecord, node_ip: std::net::Ipv4Addr) -> Value {
    let mut status = json!({
        "id": ep.id,
        "identity": {"id": ep.identity, "labels": ep.labels},
        "state": ep.state,
        "networking": {"addressing": [{"ipv4": ep.ipv4.to_string()}], "node": node_ip.to_string()},
        "encryption": {},
        "external-identifiers": {
            "container-id": ep.container_id,
            "k8s-namespace": ep.k8s_namespace,
            "k8s-pod-name": ep.k8s_pod_name,
            "pod-name": format!("{}/{}", ep.k8s_namespace, ep.k8s_pod_name),
        },
    });
    // The pod's named ports, as Cilium writes them (left out when there are none).
    if !ep.named_ports.is_empty() {
        status["named-ports"] = ep
            .named_ports
            .iter()
            .map(|p| json!({"name": p.name, "port": p.port, "protocol": p.protocol}))
            .collect();
    }
    status
}

/// What the loop wrote: the status of each object (`Null`: to be written again).
type Written = BTreeMap<(String, String), Value>;

impl Node {
    /// Keeps this node's CiliumEndpoints in line with its endpoints until the process
    /// ends (Kubernetes mode only; returns at once without the Kubernetes API).
    pub async fn sync_cilium_endpoints(self: Arc<Self>) {
        let Some(k8s) = self.k8s.clone() else {
            return;
        };
        let client = k8s.0;
        let mut written: Written = BTreeMap::new();
        let mut adopted = false;
        let mut failing = false;
        loop {
            let result = async {
                if !adopted {
                    self.adopt(&client, &mut written).await?;
                    adopted = true;
                }
                self.reconcile(&client, &mut written).await
            }
            .await;
            match result {
                Ok(()) if failing => {
                    log("info", "CiliumEndpoints in sync again", "");
                    failing = false;
                }
                Err(e) if !failing => {
                    log(
                        "warning",
                        "cannot write CiliumEndpoints; retrying",
                        &format!("error=\"{e}\""),
                    );
                    failing = true;
                }
                _ => {}
            }
            let wait = if failing {
                Duration::from_secs(1)
            } else {
                RESYNC
            };
            let woken = tokio::time::timeout(wait, self.endpoints_changed.notified())
                .await
                .is_ok();
            if !woken {
                for status in written.values_mut() {
                    *status = Value::Null;
                }
            }
        }
    }

    /// Takes over the objects an earlier run of this node wrote (by their node IP): kept
    /// in `written` as unknown (so they are rewritten or deleted).
    async fn adopt(&self, client: &kube::Client, written: &mut Written) -> Result<(), kube::Error> {
        let all: Api<DynamicObject> = Api::all_with(client.clone(), &resource());
        let mine = self.ipv4.to_string();
        for cep in all.list(&ListParams::default()).await?.items {
            if cep.data["status"]["networking"]["node"].as_str() != Some(mine.as_str()) {
                continue;
            }
            let (Some(ns), Some(name)) = (cep.metadata.namespace, cep.metadata.name) else {
                continue;
            };
            written.insert((ns, name), Value::Null);
        }
        Ok(())
    }

    async fn reconcile(
        &self,
        client: &kube::Client,
        written: &mut Written,
    ) -> Result<(), kube::Error> {
        let mut wanted: BTreeMap<(String, String), Value> = BTreeMap::new();
        for ep in self.endpoints().await {
            if ep.k8s_namespace.is_empty() || ep.k8s_pod_name.is_empty() {
                continue;
            }
            wanted.insert(
                (ep.k8s_namespace.clone(), ep.k8s_pod_name.clone()),
                status(&ep, self.ipv4),
            );
        }
        for ((ns, name), status) in &wanted {
            let key = (ns.clone(), name.clone());
            if written.get(&key) == Some(status) {
                continue;
            }
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource());
            let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), ns);
            // The pod's uid, for the owner reference (read at each write: a pod re-created
            // under the same name has another).
            let uid = match pods.get_opt(name).await? {
                Some(pod) => pod.metadata.uid.unwrap_or_default(),
                None => String::new(),
            };
            let mut object = json!({
                "apiVersion": format!("{}/{}", cilium_k8s::crds::GROUP, cilium_k8s::crds::VERSION),
                "kind": "CiliumEndpoint",
                "metadata": {"name": name, "namespace": ns},
                "status": status,
            });
            if !uid.is_empty() {
                object["metadata"]["ownerReferences"] = json!([{
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": name,
                    "uid": uid,
                    "blockOwnerDeletion": true,
                }]);
            }
            api.patch(
                name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&object),
            )
            .await?;
            written.insert(key, status.clone());
        }
        let mine = self.ipv4.to_string();
        let gone: Vec<(String, String)> = written
            .keys()
            .filter(|k| !wanted.contains_key(*k))
            .cloned()
            .collect();
        for (ns, name) in gone {
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource());
            // Only if it is still this node's (a pod of the same name may live elsewhere
            // now), and exactly the object read.
            if let Some(cep) = api.get_opt(&name).await?
                && cep.data["status"]["networking"]["node"].as_str() == Some(mine.as_str())
            {
                let exactly = DeleteParams {
                    preconditions: Some(kube::api::Preconditions {
                        uid: cep.metadata.uid.clone(),
                        resource_version: cep.metadata.resource_version.clone(),
                    }),
                    ..DeleteParams::default()
                };
                match api.delete(&name, &exactly).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                    Err(e) => return Err(e),
                }
            }
            written.remove(&(ns, name));
        }
        Ok(())
    }
}
