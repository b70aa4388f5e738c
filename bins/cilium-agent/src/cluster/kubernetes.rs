// SPDX-License-Identifier: Apache-2.0

//! The sources of [`run_k8s`](super::run_k8s): one Kubernetes watcher per consumer, giving
//! it the objects it takes on the cluster store (through `cilium_k8s::convert`), keyed
//! `<namespace>/<name>` (or `<name>` for cluster-scoped objects). Each returns the watcher
//! and its first changes (the list), or the API's error (the caller retries).
//!
//! | consumer | objects | watcher |
//! |---|---|---|
//! | nodes | `NodeRegistration` | [`nodes`]: CiliumNodes |
//! | ipcache | `IpIdentityPair` | [`endpoints`]: CiliumEndpoints, all namespaces |
//! | identities | `(u32, LabelSet)` | [`identities`]: CiliumIdentities |
//! | services | `Service` JSON | [`services`]: Services |
//! | services | `Endpoints` JSON | [`service_endpoints`]: EndpointSlices, per Service |
//! | policies | policy documents | [`cilium_policies`] (two kinds), [`network_policies`] |
//! | relabelling | labels, service account, ports | [`local_pods`]: this node's Pods |
//! | relabelling | labels | [`namespaces`]: Namespaces |

use cilium_core::LabelSet;
use cilium_core::cluster::{
    CiliumNode, Grouped, IpIdentityPair, Mapped, NodeRegistration, Watcher,
};
use cilium_k8s::Error;
use cilium_k8s::convert;
use cilium_k8s::types::CiliumIdentity;
use cilium_k8s::watch::Informer;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use serde_json::Value;

use super::Started;

/// The API of every object of a `cilium.io/v2` kind.
fn cilium_api(client: kube::Client, kind: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(cilium_k8s::crds::GROUP, cilium_k8s::crds::VERSION, kind);
    Api::all_with(client, &ApiResource::from_gvk(&gvk))
}

/// Every CiliumNode as the registration of its node in `cluster`
/// ([`convert::node_registration`]); a CiliumNode that does not decode is `Invalid`.
pub async fn nodes(
    client: kube::Client,
    cluster: String,
) -> Result<Started<impl Watcher<NodeRegistration, Error = Error> + Send, NodeRegistration>, Error>
{
    let (informer, initial) = cilium_k8s::nodes::informer(client).await?;
    Ok(Mapped::new(informer, initial, move |n: &CiliumNode| {
        Ok(convert::node_registration(n, &cluster))
    }))
}

/// Every CiliumEndpoint as its pod's ipcache entry ([`convert::ip_identity_pair`]); one
/// without an IPv4 address, node IP or identity is `Invalid`.
pub async fn endpoints(
    client: kube::Client,
) -> Result<Started<Informer<DynamicObject, IpIdentityPair>, IpIdentityPair>, Error> {
    let api = cilium_api(client, "CiliumEndpoint");
    Informer::start_with(api, Default::default(), convert::ip_identity_pair).await
}

/// What a pod's identity and named ports are made of: its labels, service account and
/// container ports (a change of anything else is no change here).
#[derive(Debug, Clone, PartialEq)]
pub struct PodInputs {
    /// `metadata.labels`.
    pub labels: std::collections::BTreeMap<String, String>,
    /// `spec.serviceAccountName`.
    pub service_account: Option<String>,
    /// `spec.containers[].ports`.
    pub ports: Value,
}

/// The pods scheduled to `node`, as what their endpoints' identities are made of.
pub async fn local_pods(
    client: kube::Client,
    node: &str,
) -> Result<Started<Informer<Pod, PodInputs>, PodInputs>, Error> {
    let config = kube::runtime::watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    Informer::start_with(Api::<Pod>::all(client), config, |p: &Pod| {
        let spec = p.spec.as_ref();
        Ok(PodInputs {
            labels: p.metadata.labels.clone().unwrap_or_default(),
            service_account: spec.and_then(|s| s.service_account_name.clone()),
            ports: spec
                .map(|s| {
                    s.containers
                        .iter()
                        .map(|c| serde_json::to_value(&c.ports).unwrap_or_default())
                        .collect()
                })
                .unwrap_or_default(),
        })
    })
    .await
}

/// Every namespace, as its labels.
pub async fn namespaces(
    client: kube::Client,
) -> Result<
    Started<
        Informer<Namespace, std::collections::BTreeMap<String, String>>,
        std::collections::BTreeMap<String, String>,
    >,
    Error,
> {
    Informer::start_with(Api::<Namespace>::all(client), Default::default(), |n| {
        Ok(n.metadata.labels.clone().unwrap_or_default())
    })
    .await
}

/// Every CiliumIdentity as its number and labels (`cilium_k8s::identity::decode`).
pub async fn identities(
    client: kube::Client,
) -> Result<Started<Informer<CiliumIdentity, (u32, LabelSet)>, (u32, LabelSet)>, Error> {
    Informer::start_with(
        Api::all(client),
        Default::default(),
        cilium_k8s::identity::decode,
    )
    .await
}

/// Every Service as the JSON `Service` object the cluster store holds
/// ([`convert::service_object`]).
pub async fn services(
    client: kube::Client,
) -> Result<Started<Informer<Service, Value>, Value>, Error> {
    Informer::start_with(Api::all(client), Default::default(), |s| {
        Ok(convert::service_object(s))
    })
    .await
}

/// The `Endpoints` of a Service (`<namespace>/<name>`) from its slices.
fn merged_endpoints(service: &str, slices: &[&EndpointSlice]) -> Option<Value> {
    let (namespace, name) = service.split_once('/')?;
    convert::endpoints_from_slices(namespace, name, slices.iter().copied())
}

/// The EndpointSlices of every Service, merged per Service into the JSON `Endpoints` object
/// the cluster store holds ([`convert::endpoints_from_slices`]), keyed as the Service.
pub async fn service_endpoints(
    client: kube::Client,
) -> Result<
    Started<Grouped<Informer<EndpointSlice, EndpointSlice>, EndpointSlice, Value>, Value>,
    Error,
> {
    let (informer, initial) = Informer::start(Api::all(client)).await?;
    Ok(Grouped::new(
        informer,
        initial,
        convert::slice_service,
        merged_endpoints,
    ))
}

/// Every Cilium policy of `kind`, `CiliumNetworkPolicy` (all namespaces) or
/// `CiliumClusterwideNetworkPolicy`, as a policy document
/// ([`convert::cilium_policy_document`]).
pub async fn cilium_policies(
    client: kube::Client,
    kind: &str,
) -> Result<Started<Informer<DynamicObject, Value>, Value>, Error> {
    let api = cilium_api(client, kind);
    Informer::start_with(api, Default::default(), convert::cilium_policy_document).await
}

/// Every Kubernetes NetworkPolicy (all namespaces) as a policy document
/// ([`convert::network_policy_document`]).
pub async fn network_policies(
    client: kube::Client,
) -> Result<Started<Informer<NetworkPolicy, Value>, Value>, Error> {
    Informer::start_with(Api::all(client), Default::default(), |p| {
        Ok(convert::network_policy_document(p))
    })
    .await
}

/// Where the policies of one kind record their validity.
pub struct Validity {
    /// The API.
    pub client: kube::Client,
    /// `CiliumNetworkPolicy`, ...
    pub kind: &'static str,
}

impl std::fmt::Debug for Validity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validity")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Validity {
    /// Records whether a Cilium policy applies in its `Valid` condition
    /// (`status.conditions`, the `VALID` column of `kubectl get cnp`), with the parse error
    /// as the message; written only when it changes. Kubernetes NetworkPolicies have no
    /// such condition. Best effort: a failure is logged.
    pub async fn record(&self, key: &str, result: Result<(), &str>) {
        report_validity(&self.client, self.kind, key, result).await;
    }
}

async fn report_validity(client: &kube::Client, kind: &str, key: &str, result: Result<(), &str>) {
    if kind == "NetworkPolicy" {
        return;
    }
    let gvk = GroupVersionKind::gvk(cilium_k8s::crds::GROUP, cilium_k8s::crds::VERSION, kind);
    let resource = ApiResource::from_gvk(&gvk);
    let (api, name): (Api<DynamicObject>, &str) = match key.split_once('/') {
        Some((ns, name)) => (Api::namespaced_with(client.clone(), ns, &resource), name),
        None => (Api::all_with(client.clone(), &resource), key),
    };
    let (status, message) = match result {
        Ok(()) => ("True", "Policy validation succeeded"),
        Err(e) => ("False", e),
    };
    let Ok(Some(current)) = api.get_opt(name).await else {
        return;
    };
    let conditions = current.data["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let valid = conditions.iter().find(|c| c["type"] == "Valid");
    if valid.is_some_and(|c| c["status"] == status && c["message"] == message) {
        return;
    }
    let now = format!(
        "{}Z",
        &cilium_core::rfc3339(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        )[..19]
    );
    let mut others: Vec<Value> = conditions
        .into_iter()
        .filter(|c| c["type"] != "Valid")
        .collect();
    others.push(serde_json::json!({
        "type": "Valid",
        "status": status,
        "lastTransitionTime": now,
        "reason": if result.is_ok() { "PolicyValid" } else { "PolicyInvalid" },
        "message": message,
    }));
    let patch = serde_json::json!({"status": {"conditions": others}});
    if let Err(e) = api
        .patch_status(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
    {
        eprintln!(
            "level=warning subsys=cluster msg=\"cannot record a policy's validity\" kind={kind} policy={key} error=\"{e}\""
        );
    }
}
