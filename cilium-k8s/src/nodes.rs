// SPDX-License-Identifier: Apache-2.0

//! CiliumNode objects through the Kubernetes API, in cilium-core's
//! [`CiliumNode`] terms: the agent registers its node
//! ([`register`]) and waits for a pod CIDR; the operator watches them ([`informer`]) and
//! writes pod CIDRs ([`set_pod_cidr`]) or why there is none ([`set_operator_error`]).
//!
//! Writes are conditional on the resourceVersion read just before (optimistic
//! concurrency, retried on a conflict), so a concurrent change is never overwritten: the
//! agent never loses a CIDR the operator wrote, the operator never writes a second one.

use std::net::Ipv4Addr;

use cilium_core::cluster::{Change, CiliumNode, CiliumNodeAddress};
use ipnet::Ipv4Net;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use serde_json::json;

use crate::Error;
use crate::watch::Informer;

/// The CiliumNode API (cluster-scoped).
pub fn api(client: kube::Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(crate::crds::GROUP, crate::crds::VERSION, "CiliumNode");
    Api::all_with(client, &ApiResource::from_gvk(&gvk))
}

/// Decodes a CiliumNode object into cilium-core's type (the fields it knows).
pub fn decode(object: &DynamicObject) -> Result<CiliumNode, String> {
    serde_json::to_value(object)
        .and_then(serde_json::from_value::<CiliumNode>)
        .map_err(|e| e.to_string())
}

/// The watch of every CiliumNode, and the list it starts from.
pub async fn informer(
    client: kube::Client,
) -> Result<(Informer<DynamicObject, CiliumNode>, Vec<Change<CiliumNode>>), Error> {
    Informer::start_with(api(client), Default::default(), decode).await
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

fn api_error(what: &str, name: &str) -> impl FnOnce(kube::Error) -> Error {
    let what = format!("{what} CiliumNode {name}");
    move |e| Error::Api(format!("{what}: {e}"))
}

/// Creates this node's CiliumNode with its InternalIP, or (it exists: a restart, or the
/// IP changed) sets its addresses, keeping the pod CIDRs the operator wrote. Returns the
/// object as it is now.
pub async fn register(
    client: kube::Client,
    name: &str,
    internal_ip: Ipv4Addr,
) -> Result<CiliumNode, Error> {
    let api = api(client);
    let mine = CiliumNode::new(name, internal_ip);
    loop {
        let Some(current) = api
            .get_opt(name)
            .await
            .map_err(api_error("reading", name))?
        else {
            let object: DynamicObject = serde_json::from_value(
                serde_json::to_value(&mine).map_err(|e| Error::Api(e.to_string()))?,
            )
            .map_err(|e| Error::Api(e.to_string()))?;
            match api.create(&PostParams::default(), &object).await {
                Ok(created) => return decode(&created).map_err(Error::Api),
                Err(e) if is_conflict(&e) => continue, // Created meanwhile: read it.
                Err(e) => return Err(api_error("creating", name)(e)),
            }
        };
        let decoded = decode(&current).unwrap_or_else(|_| mine.clone());
        let wanted: Vec<CiliumNodeAddress> = mine.spec.addresses.clone();
        if decoded.spec.addresses == wanted {
            return Ok(decoded);
        }
        let patch = json!({
            "metadata": {"resourceVersion": current.metadata.resource_version},
            "spec": {"addresses": wanted},
        });
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(updated) => return decode(&updated).map_err(Error::Api),
            Err(e) if is_conflict(&e) => continue,
            Err(e) => return Err(api_error("updating", name)(e)),
        }
    }
}

/// What [`set_pod_cidr`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CidrWrite {
    /// The CIDR is now in `spec.ipam.podCIDRs`.
    Written,
    /// The node already had pod CIDRs (left alone).
    AlreadySet,
    /// The CiliumNode is gone.
    Gone,
}

/// Writes `cidr` into a CiliumNode that has no pod CIDR yet, and clears the operator's
/// error in its status.
pub async fn set_pod_cidr(
    api: &Api<DynamicObject>,
    name: &str,
    cidr: Ipv4Net,
) -> Result<CidrWrite, Error> {
    loop {
        let Some(current) = api
            .get_opt(name)
            .await
            .map_err(api_error("reading", name))?
        else {
            return Ok(CidrWrite::Gone);
        };
        let pod_cidrs = &current.data["spec"]["ipam"]["podCIDRs"];
        if pod_cidrs.as_array().is_some_and(|a| !a.is_empty()) {
            return Ok(CidrWrite::AlreadySet);
        }
        let patch = json!({
            "metadata": {"resourceVersion": current.metadata.resource_version},
            "spec": {"ipam": {"podCIDRs": [cidr.to_string()]}},
        });
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => break,
            Err(e) if is_conflict(&e) => continue,
            Err(e) if matches!(&e, kube::Error::Api(s) if s.code == 404) => {
                return Ok(CidrWrite::Gone);
            }
            Err(e) => return Err(api_error("updating", name)(e)),
        }
    }
    if !current_error(api, name).await?.is_empty() {
        set_operator_error(api, name, "").await?;
    }
    Ok(CidrWrite::Written)
}

async fn current_error(api: &Api<DynamicObject>, name: &str) -> Result<String, Error> {
    Ok(api
        .get_opt(name)
        .await
        .map_err(api_error("reading", name))?
        .and_then(|o| {
            o.data["status"]["ipam"]["operator-status"]["error"]
                .as_str()
                .map(str::to_owned)
        })
        .unwrap_or_default())
}

/// Records in `status.ipam.operator-status.error` why the operator gives a node no pod
/// CIDR (an empty `error` clears it). A node that is gone is not an error.
pub async fn set_operator_error(
    api: &Api<DynamicObject>,
    name: &str,
    error: &str,
) -> Result<(), Error> {
    let patch = json!({"status": {"ipam": {"operator-status": {"error": error}}}});
    match api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(api_error("updating the status of", name)(e)),
    }
}
