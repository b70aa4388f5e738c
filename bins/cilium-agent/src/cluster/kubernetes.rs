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

use cilium_core::LabelSet;
use cilium_core::cluster::{
    CiliumNode, Grouped, IpIdentityPair, Mapped, NodeRegistration, Watcher,
};
use cilium_k8s::Error;
use cilium_k8s::convert;
use cilium_k8s::types::CiliumIdentity;
use cilium_k8s::watch::Informer;
use k8s_openapi::api::core::v1::Service;
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
